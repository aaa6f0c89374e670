import pytest
import torch

from minidiff import forward, loss, schedules


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
    assert got_v.item() == pytest.approx(forward.v_from_x0_eps(s, x0, t, noise).pow(2).mean().item(), rel=1e-6)
    perfect = lambda x, tt: noise  # noqa: E731
    assert loss.diffusion_loss(perfect, s, x0, t, noise).item() == 0


def test_min_snr_weights():
    s = schedules.linear(T=1000)
    t = torch.tensor([0, 500, 999])
    snr = s.snr[t]
    w_eps = loss.snr_weight(s, t, "eps", 5.0).double()
    torch.testing.assert_close(w_eps, snr.clamp(max=5) / snr, rtol=1e-6, atol=0)
    assert w_eps[0] < 1 and w_eps[2] == pytest.approx(1.0)   # only high-SNR steps are down-weighted


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
@pytest.mark.parametrize("gamma", [0.5, 5.0])
def test_min_snr_loss_is_the_x0_error_weighted_by_min_snr(prediction, gamma):
    """Hang et al. 2023 eq. 9 weights the error measured on x0 by min(SNR, gamma). Whatever the
    network predicts, its min-SNR loss must equal that, computed here through x0_hat."""
    s = schedules.cosine(T=1000)
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(64, 3, generator=g, dtype=torch.float64)
    noise = torch.randn(64, 3, generator=g, dtype=torch.float64)
    t = torch.randint(0, 1000, (64,), generator=g)
    wrong = torch.randn(64, 3, generator=g, dtype=torch.float64)          # a model that is off
    model = lambda xt, tt: wrong  # noqa: E731
    got = loss.diffusion_loss(model, s, x0, t, noise, prediction=prediction, min_snr_gamma=gamma)
    xt = forward.q_sample(s, x0, t, noise)
    x0_hat, _ = forward.to_x0_eps(s, xt, t, wrong, prediction)
    want = ((x0_hat - x0).pow(2).mean(1) * s.snr[t].clamp(max=gamma)).mean()
    assert got.item() == pytest.approx(want.item(), rel=1e-4)


def test_min_snr_at_zero_terminal_snr_is_finite():
    """At SNR = 0 the eps weight min(SNR, gamma) / SNR is 0/0; its limit is 1. v's weight is 0."""
    s = schedules.linear(T=100, beta_end=0.2).rescale_zero_terminal_snr()
    t = torch.tensor([0, 50, 99])
    w = {p: loss.snr_weight(s, t, p, 5.0) for p in ("eps", "x0", "v")}
    assert torch.isfinite(torch.stack(list(w.values()))).all()
    assert w["eps"][2] == 1.0 and w["x0"][2] == 0.0 and w["v"][2] == 0.0
    x0, noise = torch.randn(3, 2), torch.randn(3, 2)
    zero = lambda x, tt: torch.zeros_like(x)  # noqa: E731
    got = loss.diffusion_loss(zero, s, x0, t, noise, prediction="eps", min_snr_gamma=5.0)
    assert torch.isfinite(got)
    want = (noise.pow(2).mean(1) * w["eps"]).mean()
    assert got.item() == pytest.approx(want.item(), rel=1e-5)


def test_bad_loss_input():
    s = schedules.linear(T=10)
    with pytest.raises(ValueError, match="unknown prediction 'score'"):
        loss.target(s, torch.zeros(1, 2), torch.tensor([0]), torch.zeros(1, 2), "score")
    with pytest.raises(ValueError, match="model output must have the shape"):
        loss.diffusion_loss(lambda x, t: x[:, :1], s, torch.zeros(2, 2))
    with pytest.raises(ValueError, match="min_snr_gamma"):
        loss.diffusion_loss(lambda x, t: x, s, torch.zeros(2, 2), min_snr_gamma=-1.0)
    with pytest.raises(TypeError, match="min_snr_gamma must be a number"):
        loss.diffusion_loss(lambda x, t: x, s, torch.zeros(2, 2), min_snr_gamma=True)
    with pytest.raises(ValueError, match=r"t must be in \[0, 9\]"):
        loss.diffusion_loss(lambda x, t: x, s, torch.zeros(2, 2), t=torch.tensor([0, 10]))
