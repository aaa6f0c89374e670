"""Measuring samples: how far is a generated set from the real one?

For point clouds the sliced Wasserstein distance (Rabin et al. 2011; Bonneel et al. 2015) is
simple and exact in one dimension: project both sets on a random unit direction theta, sort,
and compare the sorted values; average the squared gaps over many directions:

    SW_2^2(X, Y) = E_theta [ W_2^2(theta . X, theta . Y) ],
    W_2^2 in 1-D = mean_i (sort(theta . X)_i - sort(theta . Y)_i)^2 .

Always read it next to the real-vs-real floor: two independent draws of the same data are
not at distance 0.
"""
from __future__ import annotations

import torch

from ._checks import check_int, check_tensor

__all__ = ["sliced_wasserstein"]


def sliced_wasserstein(x: torch.Tensor, y: torch.Tensor, n_projections: int = 256,
                       generator=None) -> float:
    """Sliced 2-Wasserstein distance between two equally sized point sets (N, d)."""
    check_tensor("x", x)
    check_tensor("y", y)
    if x.dim() != 2 or x.shape != y.shape:
        raise ValueError(f"x and y must both have shape (N, d), got {tuple(x.shape)} and {tuple(y.shape)}")
    n_projections = check_int("n_projections", n_projections, low=1)
    theta = torch.randn(x.shape[1], n_projections, generator=generator, dtype=torch.float64)
    theta = theta / theta.norm(dim=0, keepdim=True)
    px = torch.sort(x.double() @ theta, dim=0).values
    py = torch.sort(y.double() @ theta, dim=0).values
    return (px - py).pow(2).mean().sqrt().item()
