"""Intervals and verdicts (``verdicts``), KID (``metrics``) and the sample comparison
(``evaluation.compare_samples``), each checked against an independent computation."""
import math

import pytest
import torch
from scipy import stats

from minidiff import evaluation, metrics, verdicts


@pytest.mark.parametrize("nu", [1, 2, 3, 5, 30, 1000])
@pytest.mark.parametrize("p", [0.6, 0.9, 0.975, 0.995, 0.025])
def test_the_t_quantile_matches_scipy(nu, p):
    assert verdicts.t_quantile(p, nu) == pytest.approx(stats.t.ppf(p, nu), abs=1e-6, rel=1e-7)


def test_the_t_quantile_at_infinite_degrees_is_the_normals():
    assert verdicts.t_quantile(0.975, math.inf) == pytest.approx(stats.norm.ppf(0.975), abs=1e-9)
    with pytest.raises(ValueError, match="p must be in"):
        verdicts.t_quantile(1.0, 3)
    with pytest.raises(ValueError, match="nu must be in"):
        verdicts.t_quantile(0.9, 0)


def test_the_mean_interval_by_hand():
    mean, low, high = verdicts.mean_interval([1.0, 2.0, 3.0, 4.0])
    half = 3.182446305284263 * math.sqrt(5 / 3) / 2           # t_{0.975, 3} s / sqrt(n), s^2 = 5/3
    assert mean == 2.5 and low == pytest.approx(2.5 - half, abs=1e-6) and high == pytest.approx(2.5 + half, abs=1e-6)


def test_paired_and_welch_intervals_against_their_formulas():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(12, generator=g) + 1.0, torch.randn(12, generator=g)
    d, low, high = verdicts.difference_interval(a, b, paired=True)
    assert (d, low, high) == pytest.approx(verdicts.mean_interval(a - b))
    c = torch.randn(7, generator=g) * 3
    d, low, high = verdicts.difference_interval(a, c, paired=False, level=0.9)
    va, vc = a.double().var().item() / 12, c.double().var().item() / 7
    nu = (va + vc) ** 2 / (va ** 2 / 11 + vc ** 2 / 6)
    half = stats.t.ppf(0.95, nu) * math.sqrt(va + vc)
    assert d == pytest.approx(a.double().mean().item() - c.double().mean().item())
    assert (low, high) == pytest.approx((d - half, d + half), abs=1e-6)
    ref = stats.ttest_ind(a.numpy(), c.numpy(), equal_var=False).confidence_interval(0.9)
    assert (low, high) == pytest.approx((ref.low, ref.high), abs=1e-5)


def test_the_three_verdicts():
    assert verdicts.verdict(-3.0, -1.0, "a < b", 5) == "holds"
    assert verdicts.verdict(1.0, 3.0, "a < b", 5) == "does not hold"
    assert verdicts.verdict(-1.0, 3.0, "a < b", 5) == "cannot tell at n = 5"
    assert verdicts.verdict(1.0, 3.0, "a > b", 5) == "holds"
    assert verdicts.verdict(-3.0, -1.0, "a > b", 5) == "does not hold"
    with pytest.raises(ValueError, match="unknown claim 'a << b'"):
        verdicts.verdict(0.0, 1.0, "a << b", 5)


def test_compare_says_holds_only_outside_the_noise():
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(3, generator=g)
    close = verdicts.compare([10.0, 12.0, 11.0], [10.5, 12.2, 11.6], claim="a < b", paired=False)
    assert close["verdict"] == "cannot tell at n = 3 and 3" and close["low"] < 0 < close["high"]
    paired = verdicts.compare(torch.tensor([10.0, 12.0, 11.0]) - 0.5 + 0.01 * noise, [10.0, 12.0, 11.0],
                              claim="a < b", paired=True)
    assert paired["verdict"] == "holds" and paired["n"] == 3        # pairing removes the seeds' spread
    assert verdicts.compare([5.0, 5.1, 4.9, 5.2], [1.0, 1.1, 0.9, 1.0], claim="a < b", paired=False)["verdict"] \
        == "does not hold"
    with pytest.raises(ValueError, match="at least 2"):
        verdicts.compare([1.0], [2.0], claim="a < b", paired=False)
    with pytest.raises(ValueError, match="as many of a as of b"):
        verdicts.compare([1.0, 2.0], [2.0, 3.0, 4.0], claim="a < b", paired=True)


def test_with_no_true_difference_a_verdict_is_rare():
    """The interval is honest: two equal settings are called different in about 5% of experiments."""
    g = torch.Generator().manual_seed(2)
    calls = [verdicts.compare(torch.randn(8, generator=g), torch.randn(8, generator=g), claim="a < b",
                              paired=False)["verdict"] for _ in range(400)]
    wrong = sum(not v.startswith("cannot tell") for v in calls) / len(calls)
    assert 0.01 < wrong < 0.10


def test_the_bootstrap_interval_of_a_mean_matches_the_normal_one():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(400, generator=g, dtype=torch.float64)
    low, high = verdicts.bootstrap_interval(lambda rows: x[rows].mean().item(), len(x), resamples=2000,
                                            generator=torch.Generator().manual_seed(4))
    _, nlow, nhigh = verdicts.mean_interval(x)
    assert (high - low) == pytest.approx(nhigh - nlow, rel=0.1) and low < x.mean() < high


def test_mmd_and_kid_against_a_double_loop():
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(6, 3, generator=g, dtype=torch.float64), torch.randn(5, 3, generator=g, dtype=torch.float64) + 0.5
    k = lambda u, v: (float(u @ v) / 3 + 1) ** 3                                         # noqa: E731
    xx = sum(k(x[i], x[j]) for i in range(6) for j in range(6) if i != j) / 30
    yy = sum(k(y[i], y[j]) for i in range(5) for j in range(5) if i != j) / 20
    xy = sum(k(x[i], y[j]) for i in range(6) for j in range(5)) / 30
    assert metrics.mmd2_unbiased(x, y) == pytest.approx(xx + yy - 2 * xy, rel=1e-12)
    whole = metrics.kid(x[:5], y, subsets=4, subset_size=100, generator=g)   # subsets of every row: all equal
    assert whole["subset_size"] == 5 and whole["std"] == pytest.approx(0.0, abs=1e-12)
    assert whole["kid"] == pytest.approx(metrics.mmd2_unbiased(x[:5], y), rel=1e-12)


def test_kid_is_unbiased_where_fid_is_not():
    g = torch.Generator().manual_seed(6)
    kids, fids = [], []
    for _ in range(300):
        a, b = torch.randn(2, 10, 4, generator=g, dtype=torch.float64)
        kids.append(metrics.mmd2_unbiased(a, b))
        fids.append(metrics.frechet_distance(a, b))
    kids = torch.tensor(kids)
    assert abs(kids.mean()) < 3 * kids.std() / math.sqrt(len(kids))           # 0 on average
    assert sum(fids) / len(fids) > 1.0                                         # FID's floor at n = 10
    with pytest.raises(ValueError, match="same feature size"):
        metrics.kid(torch.zeros(4, 2), torch.zeros(4, 3))


class _Mean(torch.nn.Module):
    """A stand-in feature classifier: the features are the pixels."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def features(self, x):
        return x.flatten(1)


def test_compare_samples_pairs_and_judges():
    g = torch.Generator().manual_seed(7)
    real = torch.rand(300, 1, 2, 2, generator=g) * 2 - 1
    ev = {"classifier": _Mean(), "real": evaluation.features(_Mean(), real)}
    like = torch.rand(300, 1, 2, 2, generator=g) * 2 - 1
    shifted = (like + 0.5).clamp(-1, 1)
    same = evaluation.compare_samples(ev, like, like.clone(), claim="a < b", paired=True, resamples=50)
    assert same["difference"] == 0 and same["low"] == same["high"] == 0 and same["verdict"] == "cannot tell at n = 300"
    for metric in ("fid", "kid"):
        r = evaluation.compare_samples(ev, like, shifted, claim="a < b", paired=True, metric=metric, resamples=50)
        assert r["verdict"] == "holds" and r["a"] < r["b"] and r["low"] <= r["difference"] <= r["high"]
    with pytest.raises(ValueError, match="equally large"):
        evaluation.compare_samples(ev, like, like[:10], claim="a < b", paired=True)
    with pytest.raises(ValueError, match="unknown metric"):
        evaluation.compare_samples(ev, like, like, claim="a < b", paired=True, metric="is")


def test_a_score_interval_covers_its_score_and_narrows_with_n():
    g = torch.Generator().manual_seed(8)
    real = torch.rand(400, 1, 2, 2, generator=g) * 2 - 1
    ev = {"classifier": _Mean(), "real": evaluation.features(_Mean(), real)}
    widths = []
    for n in (50, 400):
        fake = (torch.rand(n, 1, 2, 2, generator=g) * 2 - 1) * 0.8
        r = evaluation.score_interval(ev, fake, metric="kid", resamples=100)
        assert r["n"] == n and r["low"] <= r["score"] <= r["high"]
        widths.append(r["high"] - r["low"])
    assert widths[1] < widths[0] / 1.5                         # about 1/sqrt(n): more samples, a tighter interval
    fid = evaluation.score_interval(ev, real[:100], resamples=50)
    assert fid["metric"] == "fid" and fid["low"] <= fid["high"]
