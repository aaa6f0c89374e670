"""Measuring samples: how close is a generated set to the real one?

* **Sliced Wasserstein** for point clouds (Rabin et al. 2011; Bonneel et al. 2015): project
  both sets on a random unit direction theta, sort, compare; average over directions:
  SW_2^2(X, Y) = E_theta[ mean_i (sort(theta . X)_i - sort(theta . Y)_i)^2 ].
* **Fréchet distance** between Gaussians fitted to features (Dowson & Landau 1982; used as
  FID by Heusel et al. 2017, eq. 6):
  d^2 = |mu_1 - mu_2|^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^{1/2}).
  Here the features come from a small Fashion-MNIST classifier trained on the spot, not from
  Inception, so the numbers are comparable within minidiff only.
* **Precision and recall** with k-NN manifolds (Kynkäänniemi et al. 2019, eqs. 1–3): a sample
  is "inside" a set if it lies within some member's distance to that member's k-th neighbour.
  Precision = generated samples inside the real manifold; recall = real samples inside the
  generated manifold.
* **Class coverage**: the classifier's labels for generated samples — are all classes there,
  and in fair shares?

Always read a distance next to its floor: two independent real sets are not at distance 0.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ._checks import check_int, check_tensor

__all__ = ["sliced_wasserstein", "FashionClassifier", "train_classifier", "accuracy", "features",
           "frechet_distance", "precision_recall", "class_coverage"]


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


class FashionClassifier(nn.Module):
    """A small CNN for 28x28 grey images; ``features`` is its 128-d penultimate layer."""

    def __init__(self, num_classes: int = 10, width: int = 32):
        super().__init__()
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(1, w, 3, padding=1), nn.ReLU(), nn.Conv2d(w, w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(), nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2), nn.Flatten(), nn.Linear(2 * w * 49, 128), nn.ReLU())
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(128, num_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def train_classifier(images: torch.Tensor, labels: torch.Tensor, steps: int, batch_size: int = 128,
                     lr: float = 2e-3, generator=None, progress: bool = True) -> FashionClassifier:
    """Train a ``FashionClassifier`` with Adam and random horizontal flips; returns it in eval mode."""
    steps = check_int("steps", steps, low=1)
    model = FashionClassifier(num_classes=int(labels.max()) + 1)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    model.train()
    for _ in tqdm(range(steps), desc="classifier", disable=not progress, leave=False):
        idx = torch.randint(0, len(images), (batch_size,), generator=generator)
        x, y = images[idx], labels[idx]
        flip = torch.rand(batch_size, generator=generator) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()


@torch.no_grad()
def _batched(fn, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    return torch.cat([fn(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])


def accuracy(model: FashionClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    return (_batched(model, images).argmax(1) == labels).float().mean().item()


def features(model: FashionClassifier, images: torch.Tensor) -> torch.Tensor:
    """Penultimate-layer features (N, 128) in float64."""
    return _batched(model.features, images).double()


def frechet_distance(f1: torch.Tensor, f2: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N1, d), (N2, d).

    Tr((S1 S2)^{1/2}) is computed as the sum of square roots of the eigenvalues of the symmetric
    matrix S1^{1/2} S2 S1^{1/2}, which has the same spectrum as S1 S2.
    """
    for name, f in (("f1", f1), ("f2", f2)):
        check_tensor(name, f)
        if f.dim() != 2 or len(f) < 2:
            raise ValueError(f"{name} must have shape (N, d) with N >= 2, got {tuple(f.shape)}")
    if f1.shape[1] != f2.shape[1]:
        raise ValueError(f"f1 and f2 must have the same feature size, got {f1.shape[1]} and {f2.shape[1]}")
    f1, f2 = f1.double(), f2.double()
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = torch.cov(f1.T), torch.cov(f2.T)
    evals, evecs = torch.linalg.eigh(s1)
    root1 = evecs @ torch.diag(evals.clamp_min(0).sqrt()) @ evecs.T
    middle = torch.linalg.eigvalsh(root1 @ s2 @ root1).clamp_min(0).sqrt().sum()
    return ((mu1 - mu2).pow(2).sum() + s1.trace() + s2.trace() - 2 * middle).item()


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
    counts = torch.bincount(predicted.long(), minlength=num_classes)
    shares = counts.double() / counts.sum()
    return {"counts": counts.tolist(), "shares": shares.tolist(),
            "covered": (counts > 0).double().mean().item(),
            "max_share_ratio": (shares.max() * num_classes).item()}


# ---------------------------------------------------------------------------------------------
# The evaluation used by lessons 06–07 and benchmarks/sampling_quality.py

def fashion_mnist_evaluator(classifier_steps: int, n_real: int, seed: int = 0, progress: bool = True) -> dict:
    """Train the feature classifier and prepare the real side of every comparison.

    Returns a dict with the ``classifier``, its test ``accuracy``, ``real`` features of
    ``n_real`` test images, and the real-vs-real ``floor``: the Fréchet distance between
    ``n_real`` train and ``n_real`` test images — the best any generator can score at that
    sample count.
    """
    from . import data

    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x, y = data.fashion_mnist("train")
    xt, yt = data.fashion_mnist("test")
    clf = train_classifier(x, y, classifier_steps, generator=g, progress=progress)
    pick = torch.randperm(len(x), generator=g)[:n_real]
    real = features(clf, xt[:n_real])
    return {"classifier": clf, "accuracy": accuracy(clf, xt, yt), "real": real, "n_real": n_real,
            "floor": frechet_distance(features(clf, x[pick]), real)}


def evaluate_samples(evaluator: dict, samples: torch.Tensor) -> dict:
    """FID (with its sample count and floor), precision, recall and class coverage of ``samples``."""
    clf = evaluator["classifier"]
    fake = features(clf, samples.cpu().clamp(-1, 1))
    precision, recall = precision_recall(evaluator["real"], fake)
    coverage = class_coverage(_batched(clf, samples.cpu().clamp(-1, 1)).argmax(1), 10)
    return {"fid": frechet_distance(fake, evaluator["real"]), "samples": len(samples),
            "floor": evaluator["floor"], "precision": precision, "recall": recall,
            "covered": coverage["covered"], "max_share_ratio": coverage["max_share_ratio"],
            "shares": coverage["shares"]}


def compare_samplers(model, s, evaluator: dict, runs, n: int, batch_size: int = 100, seed: int = 0,
                     prediction: str = "eps", device=None, progress: bool = True) -> list[dict]:
    """Sample ``n`` images with each (sampler, steps) or (sampler, steps, eta) in ``runs`` from the
    same starting noise and measure FID and wall-clock seconds per image. ``prediction`` is what
    the model outputs ("eps", "x0" or "v"). Returns one row per run; its "name" reads like
    "ddim 50" or "ddim 50, eta=1"."""
    import time

    from .reverse import sample

    device = torch.device(device) if device is not None else next(model.parameters()).device
    rows = []
    for sampler, steps, *eta in runs:
        eta = eta[0] if eta else 0.0
        g = torch.Generator().manual_seed(seed)           # the same x_T for every sampler
        out, seconds = [], 0.0
        for i in range(0, n, batch_size):
            m = min(batch_size, n - i)
            x_T = torch.randn(m, 1, 28, 28, generator=g).to(device)
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            x = sample(model, s, (m, 1, 28, 28), sampler=sampler, steps=steps, eta=eta, x_T=x_T, generator=g,
                       prediction=prediction, clip_x0=1.0, progress=progress)
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds += time.perf_counter() - start
            out.append(x.cpu())
        row = {"name": f"{sampler} {steps}" + (f", eta={eta:g}" if eta else ""), "sampler": sampler,
               "steps": steps, "eta": eta, "seconds_per_image": seconds / n}
        row.update({k: v for k, v in evaluate_samples(evaluator, torch.cat(out)).items() if k != "shares"})
        rows.append(row)
    return rows
