import pytest
import torch
from hypothesis import given, settings, strategies as st

from minidiff import loss, schedules
from minidiff.forward import q_sample


@settings(max_examples=30, deadline=None)
@given(t=st.integers(0, 999), seed=st.integers(0, 10_000))
def test_eps_x0_v_round_trips(t, seed):
    g = torch.Generator().manual_seed(seed)
    s = schedules.cosine(T=1000, max_beta=0.99)
    x0 = torch.randn(3, 4, generator=g, dtype=torch.float64)
    eps = torch.randn(3, 4, generator=g, dtype=torch.float64)
    tt = torch.full((3,), t)
    xt = q_sample(s, x0, tt, eps)
    tol = dict(rtol=1e-6, atol=1e-6 / max(s.sqrt_alpha_bars[t].item(), 1e-3))
    torch.testing.assert_close(loss.predict_eps(s, xt, tt, x0), eps, **tol)
    torch.testing.assert_close(loss.predict_x0(s, xt, tt, eps), x0, **tol)
    v = loss.v_target(s, x0, tt, eps)
    torch.testing.assert_close(loss.x0_from_v(s, xt, tt, v), x0, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(loss.eps_from_v(s, xt, tt, v), eps, rtol=1e-9, atol=1e-9)
    for kind, out in (("eps", eps), ("x0", x0), ("v", v)):
        x0_hat, eps_hat = loss.to_x0_eps(s, xt, tt, out, kind)
        torch.testing.assert_close(x0_hat, x0, **tol)
        torch.testing.assert_close(eps_hat, eps, **tol)


def test_v_is_a_rotation_of_eps_and_x0():
    """v = cos(phi) eps - sin(phi) x0 with cos(phi) = sqrt(abar): |v|^2 + |x_t|^2 = |eps|^2 + |x0|^2."""
    s = schedules.linear(T=100)
    x0, eps = torch.randn(5, 8, dtype=torch.float64), torch.randn(5, 8, dtype=torch.float64)
    t = torch.arange(0, 100, 20)
    xt = q_sample(s, x0, t, eps)
    v = loss.v_target(s, x0, t, eps)
    torch.testing.assert_close(v.pow(2).sum(1) + xt.pow(2).sum(1), eps.pow(2).sum(1) + x0.pow(2).sum(1))


def test_targets_and_loss_value():
    s = schedules.linear(T=10)
    x0 = torch.randn(4, 2)
    noise = torch.randn(4, 2)
    t = torch.tensor([0, 3, 6, 9])
    assert torch.equal(loss.target(s, x0, t, noise, "eps"), noise)
    assert torch.equal(loss.target(s, x0, t, noise, "x0"), x0)
    zero = lambda x, t: torch.zeros_like(x)  # noqa: E731
    # a model that predicts 0 has loss mean(target^2)
    got = loss.diffusion_loss(zero, s, x0, t, noise, prediction="eps")
    assert got.item() == pytest.approx(noise.pow(2).mean().item(), rel=1e-6)
    got_v = loss.diffusion_loss(zero, s, x0, t, noise, prediction="v")
    assert got_v.item() == pytest.approx(loss.v_target(s, x0, t, noise).pow(2).mean().item(), rel=1e-6)
    perfect = lambda x, tt: noise  # noqa: E731
    assert loss.diffusion_loss(perfect, s, x0, t, noise).item() == 0


def test_min_snr_weights():
    s = schedules.linear(T=1000)
    t = torch.tensor([0, 500, 999])
    snr = s.snr[t]
    w_eps = loss.snr_weight(s, t, "eps", 5.0).double()
    torch.testing.assert_close(w_eps, snr.clamp(max=5) / snr, rtol=1e-6, atol=0)
    assert w_eps[0] < 1 and w_eps[2] == pytest.approx(1.0)   # only high-SNR steps are down-weighted
    x0, noise = torch.randn(3, 2), torch.randn(3, 2)
    zero = lambda x, tt: torch.zeros_like(x)  # noqa: E731
    got = loss.diffusion_loss(zero, s, x0, t, noise, min_snr_gamma=5.0)
    want = (noise.pow(2).mean(1) * w_eps.float()).mean()
    assert got.item() == pytest.approx(want.item(), rel=1e-5)


def test_bad_loss_input():
    s = schedules.linear(T=10)
    with pytest.raises(ValueError, match="unknown prediction 'score'"):
        loss.target(s, torch.zeros(1, 2), torch.tensor([0]), torch.zeros(1, 2), "score")
    with pytest.raises(ValueError, match="model output must have the shape"):
        loss.diffusion_loss(lambda x, t: x[:, :1], s, torch.zeros(2, 2))
    with pytest.raises(ValueError, match="eps must have the same shape as x_t"):
        loss.predict_x0(s, torch.zeros(2, 2), torch.tensor([0, 1]), torch.zeros(2, 3))
    z = schedules.linear(T=10).rescale_zero_terminal_snr()
    with pytest.raises(ValueError, match="zero terminal"):
        loss.predict_x0(z, torch.zeros(1, 2), torch.tensor([9]), torch.zeros(1, 2))
    with pytest.raises(ValueError, match="min_snr_gamma"):
        loss.diffusion_loss(lambda x, t: x, s, torch.zeros(2, 2), min_snr_gamma=-1.0)
