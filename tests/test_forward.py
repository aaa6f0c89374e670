import pytest
from hypothesis import given, settings, strategies as st
import torch

from minidiff import forward, schedules


def test_q_sample_is_the_closed_form():
    s = schedules.linear(T=100)
    x0 = torch.randn(4, 3, 5, 5)
    eps = torch.randn_like(x0)
    t = torch.tensor([0, 10, 50, 99])
    xt = forward.q_sample(s, x0, t, eps)
    for k in range(4):
        ab = s.alpha_bars[t[k]].item()
        torch.testing.assert_close(xt[k], ab ** 0.5 * x0[k] + (1 - ab) ** 0.5 * eps[k])


def test_q_sample_mean_and_variance_over_many_draws(g):
    s = schedules.cosine(T=50)
    n = 200_000
    x0 = torch.full((n, 1), 0.7, dtype=torch.float64)
    t = torch.full((n,), 20)
    xt = forward.q_sample(s, x0, t, generator=g)
    ab = s.alpha_bars[20].item()
    se = (1 / n) ** 0.5
    assert xt.mean().item() == pytest.approx(ab ** 0.5 * 0.7, abs=5 * se)
    assert xt.var().item() == pytest.approx(1 - ab, abs=5 * se * 2 ** 0.5)


def test_many_single_steps_match_the_closed_form_in_distribution(g):
    """Chaining q(x_t | x_{t-1}) gives the variance of q(x_t | x_0): DDPM eq. 4 from eq. 2."""
    s = schedules.linear(T=30, beta_end=0.1)
    n = 100_000
    x0 = torch.full((n, 1), 1.5, dtype=torch.float64)
    traj = forward.q_trajectory(s, x0, generator=g)
    assert traj.shape == (31, n, 1)
    last = traj[-1]
    ab = s.alpha_bars[-1].item()
    assert last.mean().item() == pytest.approx(ab ** 0.5 * 1.5, abs=0.02)
    assert last.var().item() == pytest.approx(1 - ab, abs=0.02)
    mean, var = forward.q_mean_variance(s, x0[:2], torch.tensor([29, 29]))
    assert mean[0, 0].item() == pytest.approx(ab ** 0.5 * 1.5)
    assert var[0, 0].item() == pytest.approx(1 - ab)


def test_q_step_is_one_step():
    s = schedules.linear(T=10)
    x = torch.randn(3, 2)
    z = torch.randn(3, 2)
    t = torch.tensor([0, 4, 9])
    out = forward.q_step(s, x, t, z)
    b = s.betas[t].float()[:, None]
    torch.testing.assert_close(out, (1 - b).sqrt() * x + b.sqrt() * z)
    # at t = 0 one step and the closed form agree exactly
    torch.testing.assert_close(forward.q_step(s, x, torch.zeros(3, dtype=torch.long), z),
                               forward.q_sample(s, x, torch.zeros(3, dtype=torch.long), z))


def test_same_generator_same_noise():
    s = schedules.linear(T=10)
    x0 = torch.zeros(2, 3)
    t = torch.tensor([5, 5])
    a = forward.q_sample(s, x0, t, generator=torch.Generator().manual_seed(1))
    b = forward.q_sample(s, x0, t, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


@pytest.mark.parametrize("t,err,match", [
    (torch.tensor([0, 10]), ValueError, r"t must be in \[0, 9\]"),
    (torch.tensor([-1, 0]), ValueError, r"t must be in \[0, 9\]"),
    (torch.tensor([0.0, 1.0]), TypeError, "integer tensor"),
    (torch.tensor([1, 2, 3]), ValueError, "one timestep per sample"),
    (torch.tensor([[1, 2]]), ValueError, r"shape \(N,\)"),
    ([1, 2], TypeError, "an int or an integer tensor"),
    (10, ValueError, r"t must be in \[0, 9\]"),
    (-1, ValueError, r"t must be in \[0, 9\]"),
    (True, TypeError, "an int or an integer tensor"),
    (2.0, TypeError, "an int or an integer tensor"),
])
def test_bad_t(t, err, match):
    s = schedules.linear(T=10)
    with pytest.raises(err, match=match):
        forward.q_sample(s, torch.zeros(2, 3), t)


def test_bad_noise_and_schedule():
    s = schedules.linear(T=10)
    with pytest.raises(ValueError, match="noise must have the same shape as x0"):
        forward.q_sample(s, torch.zeros(2, 3), torch.tensor([1, 2]), torch.zeros(2, 4))
    with pytest.raises(TypeError, match="s must be a NoiseSchedule"):
        forward.q_sample("linear", torch.zeros(2, 3), torch.tensor([1, 2]))


def test_an_int_t_is_the_same_timestep_for_the_whole_batch():
    s = schedules.cosine(T=100)
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    tt = torch.full((4,), 37)
    torch.testing.assert_close(forward.q_sample(s, x0, 37, eps), forward.q_sample(s, x0, tt, eps))
    xt = forward.q_sample(s, x0, tt, eps)
    for name in ("x0_from_eps", "eps_from_x0", "x0_from_v", "eps_from_v", "v_from_x0_eps"):
        f = getattr(forward, name)
        torch.testing.assert_close(f(s, xt, 37, eps), f(s, xt, tt, eps))
    mean_i, var_i = forward.q_mean_variance(s, x0, 37)
    mean_t, var_t = forward.q_mean_variance(s, x0, tt)
    torch.testing.assert_close(mean_i, mean_t)
    torch.testing.assert_close(var_i, var_t)


def test_schedule_tables_are_cast_then_moved_once():
    """``s.at`` hands out each table in the caller's dtype, computed from float64, moved once."""
    s = schedules.linear(T=1000)
    like = torch.zeros(3, 2, dtype=torch.float32)
    t = torch.tensor([0, 500, 999])
    out = s.at("sqrt_alpha_bars", t, like)
    assert out.dtype == torch.float32 and out.shape == (3, 1)
    torch.testing.assert_close(out[:, 0], s.sqrt_alpha_bars[t].float(), rtol=0, atol=0)
    s.at("sqrt_alpha_bars", t, like)
    assert len(s._moved) == 1                                   # the second call reused the cast table
    assert s.at("alpha_bars", 7, like) == s.alpha_bars[7].item()   # an int t reads the float64 table


@settings(max_examples=30, deadline=None)
@given(t=st.integers(0, 999), seed=st.integers(0, 10_000))
def test_eps_x0_v_round_trips(t, seed):
    g = torch.Generator().manual_seed(seed)
    s = schedules.cosine(T=1000, max_beta=0.99)
    x0 = torch.randn(3, 4, generator=g, dtype=torch.float64)
    eps = torch.randn(3, 4, generator=g, dtype=torch.float64)
    tt = torch.full((3,), t)
    xt = forward.q_sample(s, x0, tt, eps)
    tol = dict(rtol=1e-6, atol=1e-6 / max(s.sqrt_alpha_bars[t].item(), 1e-3))
    torch.testing.assert_close(forward.eps_from_x0(s, xt, tt, x0), eps, **tol)
    torch.testing.assert_close(forward.x0_from_eps(s, xt, tt, eps), x0, **tol)
    v = forward.v_from_x0_eps(s, x0, tt, eps)
    torch.testing.assert_close(forward.x0_from_v(s, xt, tt, v), x0, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(forward.eps_from_v(s, xt, tt, v), eps, rtol=1e-9, atol=1e-9)
    for kind, out in (("eps", eps), ("x0", x0), ("v", v)):
        x0_hat, eps_hat = forward.to_x0_eps(s, xt, tt, out, kind)
        torch.testing.assert_close(x0_hat, x0, **tol)
        torch.testing.assert_close(eps_hat, eps, **tol)


def test_v_is_a_rotation_of_eps_and_x0():
    """v = cos(phi) eps - sin(phi) x0 with cos(phi) = sqrt(abar): |v|^2 + |x_t|^2 = |eps|^2 + |x0|^2."""
    s = schedules.linear(T=100)
    x0, eps = torch.randn(5, 8, dtype=torch.float64), torch.randn(5, 8, dtype=torch.float64)
    t = torch.arange(0, 100, 20)
    xt = forward.q_sample(s, x0, t, eps)
    v = forward.v_from_x0_eps(s, x0, t, eps)
    torch.testing.assert_close(v.pow(2).sum(1) + xt.pow(2).sum(1), eps.pow(2).sum(1) + x0.pow(2).sum(1))


def test_bad_conversion_input():
    s = schedules.linear(T=10)
    with pytest.raises(ValueError, match="eps must have the same shape as x_t"):
        forward.x0_from_eps(s, torch.zeros(2, 2), torch.tensor([0, 1]), torch.zeros(2, 3))
    z = schedules.linear(T=10).rescale_zero_terminal_snr()
    with pytest.raises(ValueError, match="zero terminal"):
        forward.x0_from_eps(z, torch.zeros(1, 2), torch.tensor([9]), torch.zeros(1, 2))
    with pytest.raises(ValueError, match="zero terminal"):
        forward.x0_from_eps(z, torch.zeros(1, 2), 9, torch.zeros(1, 2))
    with pytest.raises(ValueError, match="unknown prediction 'score'"):
        forward.to_x0_eps(s, torch.zeros(1, 2), 3, torch.zeros(1, 2), "score")
