import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from minidiff import schedules
from minidiff.schedules import NoiseSchedule


def test_linear_matches_ddpm_paper_values():
    s = schedules.linear(T=1000)
    assert s.T == 1000
    assert s.betas.dtype == torch.float64
    np.testing.assert_allclose(s.betas[[0, -1]].numpy(), [1e-4, 0.02])
    # alpha_bar as an explicit product, computed independently in numpy
    abar = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))
    np.testing.assert_allclose(s.alpha_bars.numpy(), abar, rtol=1e-12)
    assert 4e-5 < s.alpha_bars[-1] < 5e-5   # DDPM's linear schedule leaves ~4e-5 of the signal


@pytest.mark.parametrize("name", ["betas", "alphas", "alpha_bars", "alpha_bars_prev", "snr",
                                  "posterior_variance",
                                  "posterior_mean_coef1", "posterior_mean_coef2"])
@pytest.mark.parametrize("make", [schedules.linear, schedules.cosine, schedules.sigmoid])
def test_every_quantity_is_float64_and_length_T(make, name):
    s = make(T=50)
    v = getattr(s, name)
    assert v.dtype == torch.float64 and v.shape == (50,)
    assert torch.isfinite(v).all()


def test_derived_quantities_follow_their_definitions():
    s = schedules.cosine(T=100)
    b = s.betas.numpy()
    abar = np.cumprod(1 - b)
    abar_prev = np.concatenate([[1.0], abar[:-1]])
    np.testing.assert_allclose(s.snr.numpy(), abar / (1 - abar), rtol=1e-10)
    np.testing.assert_allclose(s.posterior_variance.numpy(), b * (1 - abar_prev) / (1 - abar), rtol=1e-10)
    np.testing.assert_allclose(s.posterior_mean_coef1.numpy(), np.sqrt(abar_prev) * b / (1 - abar), rtol=1e-10)
    np.testing.assert_allclose(s.posterior_mean_coef2.numpy(), np.sqrt(1 - b) * (1 - abar_prev) / (1 - abar),
                               rtol=1e-10)
    assert s.posterior_variance[0] == 0


def test_cosine_follows_its_alpha_bar_and_respects_max_beta():
    T, sv = 1000, 0.008
    s = schedules.cosine(T=T, s=sv, max_beta=0.999)
    f = lambda u: math.cos((u + sv) / (1 + sv) * math.pi / 2) ** 2  # noqa: E731
    for t in (0, 10, 500, 900):  # away from the clipped end, alpha_bar follows f(t/T)/f(0)
        assert s.alpha_bars[t].item() == pytest.approx(f((t + 1) / T) / f(0), rel=1e-9)
    assert (s.betas <= 0.999).all()
    assert s.betas[-1] == pytest.approx(0.999)       # the last beta is clipped
    capped = schedules.cosine(T=T, max_beta=0.02)
    assert capped.betas.max() <= 0.02 + 1e-15


def test_sigmoid_is_monotone_between_its_ends():
    s = schedules.sigmoid(T=200, beta_start=1e-4, beta_end=0.02)
    assert (s.betas[1:] > s.betas[:-1]).all()
    assert 1e-4 < s.betas[0] < 2e-4 and 0.0199 < s.betas[-1] < 0.02


def test_zero_terminal_snr_rescale():
    for s in (schedules.linear(T=1000), schedules.cosine(T=1000, max_beta=0.99), schedules.sigmoid(T=300)):
        z = s.rescale_zero_terminal_snr()
        assert z.alpha_bars[-1] == 0
        assert z.snr[-1] == 0
        assert z.betas[-1] == pytest.approx(1.0)
        # the first step is untouched and sqrt(alpha_bar) stays monotone
        assert z.alpha_bars[0].item() == pytest.approx(s.alpha_bars[0].item(), rel=1e-12)
        assert (z.sqrt_alpha_bars[1:] < z.sqrt_alpha_bars[:-1]).all()
        for name in ("betas", "alphas", "alpha_bars", "snr", "posterior_variance",
                     "posterior_mean_coef1", "posterior_mean_coef2",
                     "sqrt_alpha_bars", "sqrt_one_minus_alpha_bars"):
            assert torch.isfinite(getattr(z, name)).all(), name
        # Lin et al. 2023 Algorithm 1: sqrt(alpha_bar) is an affine map of the original
        a, b = s.sqrt_alpha_bars.numpy(), z.sqrt_alpha_bars.numpy()
        slope = (b[0] - b[-1]) / (a[0] - a[-1])
        np.testing.assert_allclose(b, slope * (a - a[-1]), atol=1e-12)


def test_respace_keeps_the_marginals():
    s = schedules.linear(T=1000)
    use = [999, 0, 499, 249, 749]
    r = s.respace(use)
    assert r.T == 5
    assert r.timestep_map.tolist() == [0, 249, 499, 749, 999]
    np.testing.assert_allclose(r.alpha_bars.numpy(), s.alpha_bars[[0, 249, 499, 749, 999]].numpy(), rtol=1e-12)
    full = s.respace(range(1000))
    np.testing.assert_allclose(full.betas.numpy(), s.betas.numpy(), rtol=1e-9)
    with pytest.raises(ValueError, match="repeat"):
        s.respace([1, 1])
    with pytest.raises(ValueError, match="use_timesteps"):
        s.respace([1000])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(min_value=1e-6, max_value=1.0), min_size=1, max_size=60))
def test_any_valid_betas_give_a_consistent_schedule(betas):
    s = NoiseSchedule(betas)
    assert (s.alpha_bars[1:] <= s.alpha_bars[:-1]).all()
    assert torch.isfinite(s.posterior_variance).all()
    assert (s.posterior_variance <= s.betas + 1e-12).all()   # beta~_t <= beta_t (DDPM §3.2)


@pytest.mark.parametrize("betas,err,match", [
    ([0.1, 0.0], ValueError, r"betas must be in \(0, 1\]"),
    ([0.1, 1.5], ValueError, r"betas must be in \(0, 1\]"),
    ([-0.1], ValueError, r"betas must be in \(0, 1\]"),
    ([0.1, float("nan")], ValueError, "NaN"),
    ([], ValueError, "empty"),
    ([[0.1, 0.2]], ValueError, "1-D"),
    ("abc", TypeError, "betas"),
    (0.1, TypeError, "betas"),
])
def test_bad_betas(betas, err, match):
    with pytest.raises(err, match=match):
        NoiseSchedule(betas)


@pytest.mark.parametrize("make", [schedules.linear, schedules.cosine, schedules.sigmoid])
def test_bad_T(make):
    with pytest.raises(ValueError, match=r"T must be in \[1, inf\]"):
        make(T=0)
    with pytest.raises(TypeError, match="T must be an int"):
        make(T=10.5)
    with pytest.raises(TypeError, match="T must be an int"):
        make(T=True)


def test_bad_schedule_arguments():
    with pytest.raises(ValueError, match="beta_end"):
        schedules.linear(T=10, beta_end=2.0)
    with pytest.raises(ValueError, match="max_beta"):
        schedules.cosine(T=10, max_beta=0.0)
    with pytest.raises(ValueError, match="unknown schedule kind 'quadratic'"):
        schedules.make("quadratic")
    assert schedules.make("cosine", T=10).T == 10
