import pytest
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
    ([1, 2], TypeError, "torch.Tensor"),
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
