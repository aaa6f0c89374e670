import math

import pytest
import torch

from minidiff import metrics


def test_sliced_wasserstein_identities(g):
    x = torch.randn(2000, 2, generator=g)
    assert metrics.sliced_wasserstein(x, x, generator=g) == 0
    # shifting every point by c moves each 1-D projection by c.theta: SW^2 = E[(c.theta)^2] = |c|^2 / 2 in 2-D
    c = torch.tensor([3.0, -4.0])
    sw = metrics.sliced_wasserstein(x, x + c, n_projections=20_000, generator=g)
    assert sw == pytest.approx(5 / math.sqrt(2), rel=0.02)
    # order of points does not matter
    perm = torch.randperm(2000, generator=g)
    assert metrics.sliced_wasserstein(x, x[perm], generator=g) == pytest.approx(0, abs=1e-12)


def test_sliced_wasserstein_bad_input():
    with pytest.raises(ValueError, match="same|shape"):
        metrics.sliced_wasserstein(torch.zeros(3, 2), torch.zeros(4, 2))
    with pytest.raises(TypeError, match="torch.Tensor"):
        metrics.sliced_wasserstein([[0.0]], torch.zeros(1, 1))


def test_frechet_distance_matches_scipy(g):
    scipy_linalg = pytest.importorskip("scipy.linalg")
    import numpy as np
    a = torch.randn(500, 6, generator=g, dtype=torch.float64)
    b = torch.randn(400, 6, generator=g, dtype=torch.float64) @ torch.randn(6, 6, generator=g, dtype=torch.float64) + 0.5
    mu1, mu2 = a.mean(0).numpy(), b.mean(0).numpy()
    s1, s2 = np.cov(a.numpy(), rowvar=False), np.cov(b.numpy(), rowvar=False)
    covmean = scipy_linalg.sqrtm(s1 @ s2).real
    want = ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
    assert metrics.frechet_distance(a, b) == pytest.approx(want, rel=1e-6)
    assert metrics.frechet_distance(a, a) == pytest.approx(0, abs=1e-8)
    # shifting by c adds |c|^2 exactly
    assert metrics.frechet_distance(a, a + 2.0) == pytest.approx(6 * 4.0, rel=1e-9)


def test_precision_recall_detects_collapse(g):
    real = torch.randn(1000, 2, generator=g)
    same = torch.randn(1000, 2, generator=g)
    p, r = metrics.precision_recall(real, same)
    assert p > 0.9 and r > 0.9
    collapsed = 0.1 * torch.randn(1000, 2, generator=g)           # all samples near the centre
    p, r = metrics.precision_recall(real, collapsed)
    assert p > 0.9 and r < 0.5                                  # realistic but not diverse
    off = torch.randn(1000, 2, generator=g) + 10                 # diverse but unrealistic
    p, r = metrics.precision_recall(real, off)
    assert p < 0.05 and r < 0.05


def test_class_coverage():
    cov = metrics.class_coverage(torch.tensor([0, 0, 1, 2, 2, 2]), num_classes=4)
    assert cov["counts"] == [2, 1, 3, 0]
    assert cov["covered"] == 0.75
    assert cov["max_share_ratio"] == pytest.approx(0.5 * 4)


def test_frechet_bad_input():
    with pytest.raises(ValueError, match="same feature size"):
        metrics.frechet_distance(torch.zeros(3, 2), torch.zeros(3, 4))
    with pytest.raises(ValueError, match="N >= 2"):
        metrics.frechet_distance(torch.zeros(1, 2), torch.zeros(3, 2))


def test_frechet_distance_is_never_negative():
    """Identical, rank-deficient feature sets (rank 3 in 64-d) left -4e-5 before the clamp at 0."""
    for seed in range(20):
        g = torch.Generator().manual_seed(seed)
        f = torch.randn(50, 3, generator=g, dtype=torch.float64) @ torch.randn(3, 64, generator=g, dtype=torch.float64)
        d = metrics.frechet_distance(f, f)
        assert 0.0 <= d < 1e-3, (seed, d)


def brute_force_precision_recall(real, fake, k):
    """Kynkäänniemi et al. 2019, eqs. 1-3, with plain loops: phi is inside a set's manifold if it
    is within the distance from some member to that member's k-th nearest *other* member."""
    def radii(points):
        out = []
        for i, p in enumerate(points):
            others = sorted(float((p - q).norm()) for j, q in enumerate(points) if j != i)
            out.append(others[k - 1])
        return out

    def inside(x, members, r):
        return any(float((x - m).norm()) <= rad for m, rad in zip(members, r))

    r_real, r_fake = radii(real), radii(fake)
    precision = sum(inside(f, real, r_real) for f in fake) / len(fake)
    recall = sum(inside(r, fake, r_fake) for r in real) / len(real)
    return precision, recall


@pytest.mark.parametrize("k", [1, 3, 5])
def test_precision_recall_matches_the_definition(g, k):
    real = torch.randn(40, 3, generator=g, dtype=torch.float64)
    fake = 0.7 * torch.randn(35, 3, generator=g, dtype=torch.float64) + 0.4
    assert metrics.precision_recall(real, fake, k=k) == pytest.approx(brute_force_precision_recall(real, fake, k))


def test_psnr_by_hand():
    from minidiff import metrics
    ref = torch.zeros(2, 1, 4, 4)
    x = ref.clone()
    x[0] += 0.1                                       # MSE 0.01 -> 10 log10(4 / 0.01) = 26.02 dB
    x[1, 0, 0, 0] = 1.6                               # MSE 2.56 / 16 = 0.16 -> 10 log10(25) = 13.98 dB
    expected = (10 * math.log10(4 / 0.01) + 10 * math.log10(4 / 0.16)) / 2
    assert metrics.psnr(x, ref) == pytest.approx(expected, rel=1e-6)
    assert metrics.psnr(x / 2, ref, data_range=1.0) == pytest.approx(expected, rel=1e-6)   # the ratio is scale-free
    with pytest.raises(ValueError, match="same shape|both have shape"):
        metrics.psnr(x, ref[:1])
