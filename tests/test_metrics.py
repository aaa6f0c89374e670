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
