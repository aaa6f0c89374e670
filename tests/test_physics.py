import math

import pytest
import torch

from minidiff import physics


def test_brownian_variance_grows_linearly(g):
    dt, D = 0.01, 0.5
    x = physics.brownian_motion(20_000, 100, dt=dt, D=D, generator=g)
    assert x.shape == (101, 20_000, 2)
    var = x.var(dim=1).mean(dim=1)             # per-axis variance at each step
    t = torch.arange(101, dtype=torch.float64) * dt
    assert var[0] == 0
    torch.testing.assert_close(var[1:], 2 * D * t[1:], rtol=0.05, atol=0)   # Einstein: <x^2> = 2 D t


def test_heat_equation_conserves_ink_and_spreads_like_a_random_walk():
    u0 = torch.zeros(61, 61)
    u0[30, 30] = 1.0
    dt, D = 0.2, 1.0
    u = physics.heat_equation(u0, 40, dt=dt, D=D)
    torch.testing.assert_close(u.sum(dim=(1, 2)), torch.ones(41, dtype=torch.float64))   # mass kept
    var = physics.grid_variance(u)
    # FTCS adds exactly 2 D dt of variance per step per axis while the ink is far from the walls
    torch.testing.assert_close(var[:, 0], 2 * D * dt * torch.arange(41, dtype=torch.float64))
    ent = physics.grid_entropy(u)
    assert (ent[1:] > ent[:-1]).all()         # mixing only ever increases entropy
    # and the profile approaches the Gaussian heat kernel with variance 2 D t
    v = 2 * D * dt * 40
    y = torch.arange(61, dtype=torch.float64) - 30
    kernel = torch.exp(-(y[:, None] ** 2 + y[None] ** 2) / (2 * v)) / (2 * math.pi * v)
    assert (u[-1] - kernel).abs().max() < 0.02 * kernel.max()


def test_heat_equation_refuses_unstable_steps():
    with pytest.raises(ValueError, match="<= 0.25"):
        physics.heat_equation(torch.zeros(5, 5), 3, dt=0.3, D=1.0)
    with pytest.raises(ValueError, match="u0 must be a 2-D grid"):
        physics.heat_equation(torch.zeros(5), 3)


def test_ou_forgets_its_start(g):
    x0 = torch.full((50_000, 2), 3.0)
    xs = physics.ou_process(x0, 300, dt=0.01, theta=1.0, generator=g)
    for k in (50, 300):
        m, v = physics.ou_marginal(3.0, 0.0, k * 0.01)
        assert xs[k].mean().item() == pytest.approx(m.item(), abs=0.02)
        assert xs[k].var().item() == pytest.approx(v.item(), abs=0.02)
    long = physics.ou_process(x0[:20_000], 800, dt=0.01, generator=g)[-1]
    assert long.mean().item() == pytest.approx(0.0, abs=0.03)      # ends at N(0, I)
    assert long.var().item() == pytest.approx(1.0, abs=0.03)


def test_ou_step_is_the_ddpm_step():
    """exp(-theta dt) = sqrt(1 - beta) with beta = 1 - exp(-2 theta dt)."""
    theta, dt = 0.7, 0.05
    beta = 1 - math.exp(-2 * theta * dt)
    assert math.exp(-theta * dt) == pytest.approx(math.sqrt(1 - beta))


def test_gaussian_entropy_and_score():
    assert physics.gaussian_entropy(1.0, dim=1).item() == pytest.approx(0.5 * math.log(2 * math.pi * math.e))
    x = torch.tensor([[1.0, 2.0]], dtype=torch.float64, requires_grad=True)
    logp = -0.5 * ((x - 0.5) ** 2).sum() / 2.0
    grad = torch.autograd.grad(logp, x)[0]
    torch.testing.assert_close(physics.gaussian_score(x.detach(), 0.5, 2.0), grad)


@pytest.mark.parametrize("ode", [False, True])
def test_unmixing_with_the_exact_score_recovers_the_drop(ode, g):
    mean0 = torch.tensor([1.5, -1.0], dtype=torch.float64)
    var0 = 0.05
    m_T, v_T = physics.ou_marginal(mean0, var0, 4.0)
    x_T = m_T + v_T.sqrt() * torch.randn(20_000, 2, generator=g, dtype=torch.float64)
    xs = physics.unmix(x_T, mean0, var0, t_end=4.0, steps=800, ode=ode, generator=g)
    x0 = xs[-1]
    torch.testing.assert_close(x0.mean(0), mean0, atol=0.02, rtol=0)
    assert x0.var(0).mean().item() == pytest.approx(var0, rel=0.1)
