"""Measuring samples: how close is a generated set to the real one?

* **Sliced Wasserstein** for point clouds (Rabin et al. 2011; Bonneel et al. 2015): project
  both sets on a random unit direction theta, sort, compare; average over directions:
  SW_2^2(X, Y) = E_theta[ mean_i (sort(theta . X)_i - sort(theta . Y)_i)^2 ].
* **Fréchet distance** between Gaussians fitted to features (Dowson & Landau 1982; used as
  FID by Heusel et al. 2017, eq. 6):
  d^2 = |mu_1 - mu_2|^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^{1/2}).
  (``evaluation`` supplies the features: a small Fashion-MNIST classifier trained on the spot,
  not Inception, so its FIDs are comparable within minidiff only.)
* **Precision and recall** with k-NN manifolds (Kynkäänniemi et al. 2019, eqs. 1–3): a sample
  is "inside" a set if it lies within some member's distance to that member's k-th neighbour.
  Precision = generated samples inside the real manifold; recall = real samples inside the
  generated manifold.
* **Kernel distance** (KID, Bińkowski et al. 2018, §3 and Appendix D): the squared maximum mean
  discrepancy between the two feature sets under the cubic kernel k(x, y) = (x . y / d + 1)^3,
  estimated without bias (Gretton et al. 2012, Lemma 6): for X of m and Y of n points,
  MMD_u^2 = sum_{i != j} k(x_i, x_j) / (m (m - 1)) + sum_{i != j} k(y_i, y_j) / (n (n - 1))
            - 2 sum_{i, j} k(x_i, y_j) / (m n).
  Unbiased, so two sets from one distribution score 0 on average at any n (FID's floor grows
  as n shrinks); the paper's code averages it over random subsets and reports their spread.
* **Class coverage**: a classifier's labels for generated samples — are all classes there,
  and in fair shares?
* **PSNR** of a reconstruction: 10 log10(R^2 / MSE), R the data range (2 for images in
  [-1, 1]), per image, then averaged.

This module is pure maths on tensors (any device); ``evaluation`` trains the feature classifier
and runs the comparisons. Always read a distance next to its floor: two independent real sets
are not at distance 0.
"""
from __future__ import annotations

import torch

from ._checks import check_float, check_int, check_tensor

__all__ = ["sliced_wasserstein", "frechet_distance", "polynomial_kernel", "mmd2_unbiased", "kid",
           "precision_recall", "class_coverage", "psnr"]


def sliced_wasserstein(x: torch.Tensor, y: torch.Tensor, n_projections: int = 256,
                       generator=None) -> float:
    """Sliced 2-Wasserstein distance between two equally sized point sets (N, d)."""
    check_tensor("x", x)
    check_tensor("y", y)
    if x.dim() != 2 or x.shape != y.shape:
        raise ValueError(f"x and y must both have shape (N, d), got {tuple(x.shape)} and {tuple(y.shape)}")
    n_projections = check_int("n_projections", n_projections, low=1)
    dev = generator.device if generator is not None else x.device
    theta = torch.randn(x.shape[1], n_projections, generator=generator, dtype=torch.float64, device=dev)
    theta = (theta / theta.norm(dim=0, keepdim=True)).to(x.device)
    if x.device.type == "mps":                 # MPS has no float64: project in float32 there
        theta = theta.float()
        return (torch.sort(x.float() @ theta, dim=0).values - torch.sort(y.float() @ theta, dim=0).values
                ).pow(2).mean().sqrt().item()
    px = torch.sort(x.double() @ theta, dim=0).values
    py = torch.sort(y.double() @ theta, dim=0).values
    return (px - py).pow(2).mean().sqrt().item()


def _check_features(name_a: str, a, name_b: str, b) -> None:
    for name, f in ((name_a, a), (name_b, b)):
        check_tensor(name, f)
        if f.dim() != 2 or len(f) < 2:
            raise ValueError(f"{name} must have shape (N, d) with N >= 2, got {tuple(f.shape)}")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"{name_a} and {name_b} must have the same feature size, got {a.shape[1]} and {b.shape[1]}")


def frechet_distance(f1: torch.Tensor, f2: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N1, d), (N2, d).

    Tr((S1 S2)^{1/2}) is computed as the sum of square roots of the eigenvalues of the symmetric
    matrix S1^{1/2} S2 S1^{1/2}, which has the same spectrum as S1 S2. The result is clamped at 0.
    """
    _check_features("f1", f1, "f2", f2)
    f1, f2 = f1.double(), f2.double()
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = torch.cov(f1.T), torch.cov(f2.T)
    evals, evecs = torch.linalg.eigh(s1)
    root1 = evecs @ torch.diag(evals.clamp_min(0).sqrt()) @ evecs.T
    middle = torch.linalg.eigvalsh(root1 @ s2 @ root1).clamp_min(0).sqrt().sum()
    d2 = ((mu1 - mu2).pow(2).sum() + s1.trace() + s2.trace() - 2 * middle).item()
    return max(d2, 0.0)          # a distance: rounding can leave -1e-6 when the covariances are rank-deficient


def polynomial_kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """KID's kernel, k(x, y) = (x . y / d + 1)^3 for every pair of rows of x (M, d) and y (N, d)."""
    return (x @ y.T / x.shape[1] + 1) ** 3


def mmd2_unbiased(x: torch.Tensor, y: torch.Tensor) -> float:
    """The unbiased estimate of MMD^2 between feature sets x (M, d) and y (N, d) with
    ``polynomial_kernel`` (Gretton et al. 2012, Lemma 6; the module docstring)."""
    m, n = len(x), len(y)
    kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    return ((kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1)) + (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
            - 2 * kxy.mean()).item()


def kid(real: torch.Tensor, fake: torch.Tensor, subsets: int = 100, subset_size: int = 1000,
        generator: torch.Generator | None = None) -> dict:
    """Kernel inception distance, as Bińkowski et al.'s code reports it: ``mmd2_unbiased`` on
    ``subsets`` random subsets of ``min(subset_size, len(real), len(fake))`` rows of each set (drawn
    without replacement, on ``generator``), their mean ``kid`` and standard deviation ``std``.
    The features play Inception's part; here they are minidiff's classifier's (``evaluation``)."""
    _check_features("real", real, "fake", fake)
    subsets = check_int("subsets", subsets, low=1)
    size = min(check_int("subset_size", subset_size, low=2), len(real), len(fake))
    real, fake = real.double().cpu(), fake.double().cpu()
    values = torch.tensor([mmd2_unbiased(real[torch.randperm(len(real), generator=generator)[:size]],
                                         fake[torch.randperm(len(fake), generator=generator)[:size]])
                           for _ in range(subsets)], dtype=torch.float64)
    return {"kid": values.mean().item(), "std": values.std().item() if subsets > 1 else 0.0,
            "subsets": subsets, "subset_size": size}


def _knn_radius(f: torch.Tensor, k: int) -> torch.Tensor:
    d = torch.cdist(f, f)
    return d.kthvalue(k + 1, dim=1).values            # +1: each point is its own nearest neighbour


def _inside(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
    hits = [(torch.cdist(points[i:i + chunk], centres) <= radii[None]).any(1) for i in range(0, len(points), chunk)]
    return torch.cat(hits)


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) of ``fake`` against ``real`` features."""
    k = check_int("k", k, low=1)
    real, fake = real.double(), fake.double()
    precision = _inside(fake, real, _knn_radius(real, k)).double().mean().item()
    recall = _inside(real, fake, _knn_radius(fake, k)).double().mean().item()
    return precision, recall


def class_coverage(predicted: torch.Tensor, num_classes: int = 10) -> dict:
    """Counts and shares of predicted classes; ``covered`` is the fraction of classes present and
    ``max_share_ratio`` the largest share divided by the fair share 1 / num_classes."""
    num_classes = check_int("num_classes", num_classes, low=1)
    counts = torch.bincount(predicted.long(), minlength=num_classes)
    shares = counts.double() / counts.sum()
    return {"counts": counts.tolist(), "shares": shares.tolist(),
            "covered": (counts > 0).double().mean().item(),
            "max_share_ratio": (shares.max() * num_classes).item()}


def psnr(x: torch.Tensor, reference: torch.Tensor, data_range: float = 2.0) -> float:
    """Peak signal-to-noise ratio in dB, 10 log10(data_range^2 / MSE), of each image of ``x``
    (N, ...) against the same image of ``reference``, averaged over the N images (a perfect
    reconstruction gives +inf). ``data_range``: max - min of the data, 2 for [-1, 1]."""
    check_tensor("x", x)
    check_tensor("reference", reference)
    if x.shape != reference.shape or x.dim() < 2:
        raise ValueError(f"x and reference must both have shape (N, ...), got {tuple(x.shape)} and {tuple(reference.shape)}")
    data_range = check_float("data_range", data_range, low=0, low_open=True)
    mse = (x.double() - reference.double()).pow(2).flatten(1).mean(1)
    return (10 * torch.log10(data_range ** 2 / mse)).mean().item()
