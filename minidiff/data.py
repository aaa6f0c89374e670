"""Data: small sets you can see, made on the spot with no download.

Toy 2-D sets (swiss roll, two moons, a Gaussian mixture with known parameters) are the
playground of lessons 01–04: every point is visible, and for the mixture the ideal denoiser is
known exactly (see ``analytic``). ``sample_image`` draws a small picture for the widgets.
Each set is scaled to roughly zero mean and unit spread, like the N(0, I) it is noised toward.
"""
from __future__ import annotations

import math

import torch

from ._checks import check_choice, check_float, check_int, check_tensor

__all__ = ["swiss_roll", "two_moons", "GaussianMixture", "default_mixture", "toy_2d", "TOY_SETS",
           "sample_image"]


def swiss_roll(n: int, noise: float = 0.03, generator=None) -> torch.Tensor:
    """A 2-D spiral: angle u ~ U(1.5 pi, 4.5 pi), point (u cos u, u sin u) / 10 plus noise. (n, 2)."""
    n = check_int("n", n, low=1)
    noise = check_float("noise", noise, low=0)
    u = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=generator))
    x = torch.stack([u * torch.cos(u), u * torch.sin(u)], dim=1) / 10.0
    return (x + noise * torch.randn(n, 2, generator=generator)).float()


def two_moons(n: int, noise: float = 0.05, generator=None) -> torch.Tensor:
    """Two interleaved half circles, centred and scaled to unit-ish spread. (n, 2)."""
    n = check_int("n", n, low=1)
    noise = check_float("noise", noise, low=0)
    angle = math.pi * torch.rand(n, generator=generator)
    upper = torch.rand(n, generator=generator) < 0.5
    x = torch.where(upper[:, None],
                    torch.stack([torch.cos(angle), torch.sin(angle)], 1),
                    torch.stack([1 - torch.cos(angle), 0.5 - torch.sin(angle)], 1))
    x = (x - torch.tensor([0.5, 0.25])) / torch.tensor([0.87, 0.5])
    return (x + noise * torch.randn(n, 2, generator=generator)).float()


class GaussianMixture:
    """p(x) = sum_k w_k N(x; mu_k, sigma_k^2 I): a data set whose density we know exactly.

    :param means: (K, d) component means.
    :param stds: (K,) isotropic standard deviations.
    :param weights: (K,) mixing weights (normalised here).
    """

    def __init__(self, means, stds, weights):
        self.means = torch.as_tensor(means, dtype=torch.float64)
        self.stds = torch.as_tensor(stds, dtype=torch.float64)
        w = torch.as_tensor(weights, dtype=torch.float64)
        if self.means.dim() != 2:
            raise ValueError(f"means must have shape (K, d), got {tuple(self.means.shape)}")
        K = self.means.shape[0]
        if self.stds.shape != (K,) or w.shape != (K,):
            raise ValueError(f"stds and weights must have shape ({K},), got {tuple(self.stds.shape)} "
                             f"and {tuple(w.shape)}")
        if (self.stds <= 0).any() or not torch.isfinite(self.stds).all():
            raise ValueError("stds must be positive and finite")
        if (w < 0).any() or w.sum() <= 0 or not torch.isfinite(w).all():
            raise ValueError("weights must be non-negative, finite and not all zero")
        self.weights = w / w.sum()

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def __repr__(self) -> str:
        return f"GaussianMixture(K={len(self.weights)}, dim={self.dim})"

    def sample(self, n: int, generator=None, return_labels: bool = False):
        """Draw n points (float32, (n, d)); optionally also their component labels."""
        n = check_int("n", n, low=1)
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        x = (self.means[k] + self.stds[k, None] * z).float()
        return (x, k) if return_labels else x

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) for x of shape (N, d)."""
        check_tensor("x", x)
        x = x.to(torch.float64)
        d = self.dim
        sq = ((x[:, None, :] - self.means[None]) ** 2).sum(-1)           # (N, K)
        var = self.stds ** 2
        log_comp = -0.5 * sq / var - 0.5 * d * torch.log(2 * math.pi * var)
        return torch.logsumexp(torch.log(self.weights) + log_comp, dim=1)


def default_mixture() -> GaussianMixture:
    """Three well-separated blobs with unequal weights (0.5, 0.3, 0.2): easy to check by eye."""
    return GaussianMixture(means=[[-1.5, -0.8], [1.5, -0.8], [0.0, 1.4]],
                           stds=[0.25, 0.25, 0.25], weights=[0.5, 0.3, 0.2])


TOY_SETS = ("swiss_roll", "moons", "mixture")


def toy_2d(name: str, n: int, generator=None) -> torch.Tensor:
    """A toy 2-D set by name: "swiss_roll", "moons" or "mixture" (``default_mixture``)."""
    check_choice("name", name, TOY_SETS)
    if name == "swiss_roll":
        return swiss_roll(n, generator=generator)
    if name == "moons":
        return two_moons(n, generator=generator)
    return default_mixture().sample(n, generator=generator)


def sample_image(size: int = 32) -> torch.Tensor:
    """A small procedural picture (3, size, size) in [-1, 1]: a red disc, a blue square and a
    yellow triangle on a light background. Deterministic; drawn with masks, no loops over pixels."""
    size = check_int("size", size, low=8)
    c = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    y, x = torch.meshgrid(c, c, indexing="ij")
    img = torch.full((3, size, size), 0.9)
    shapes = [
        (((x - 0.32) ** 2 + (y - 0.32) ** 2) < 0.2 ** 2, (0.85, 0.15, 0.15)),
        (((x - 0.7).abs() < 0.17) & ((y - 0.35).abs() < 0.17), (0.15, 0.3, 0.85)),
        ((y > 0.58) & (y < 0.92) & ((x - 0.5).abs() < (y - 0.58) * 0.75), (0.95, 0.8, 0.1)),
    ]
    for mask, colour in shapes:
        for ch in range(3):
            img[ch][mask] = colour[ch]
    return img * 2 - 1
