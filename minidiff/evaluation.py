"""Evaluating generated images: a feature classifier, FID with its floor, sampler races.

The yardstick every chapter shares; what only one lesson measures lives in that chapter's
module in ``minidiff/experiments``. ``metrics`` holds the maths; this module supplies what it
measures. The features are the
penultimate layer of a small CNN trained on the spot on the real images (no pretrained network
can be downloaded here), so every FID is comparable within minidiff only, and always read next
to its *floor*: the Fréchet distance between two independent sets of real images of the same
size (``image_evaluator``).
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ._checks import check_choice, check_float, check_int, check_tensor
from .device import synchronize
from .forward import randn_like
from .loss import diffusion_loss, draw_timesteps
from .metrics import class_coverage, frechet_distance, kid, mmd2_unbiased, precision_recall
from .samplers import sample
from .verdicts import bootstrap_interval, compare, verdict

__all__ = ["FashionClassifier", "train_classifier", "model_device", "batched", "accuracy", "probabilities", "features",
           "image_evaluator", "fashion_mnist_evaluator", "evaluate_samples", "score_interval", "compare", "compare_samples",
           "draw_samples", "compare_samplers", "draw_guided", "sampler_name", "held_out_loss"]


class FashionClassifier(nn.Module):
    """A small CNN for images of ``in_channels`` x ``size`` x ``size`` (default 1 x 28 x 28, grey
    Fashion-MNIST); ``features`` is its 128-d penultimate layer."""

    def __init__(self, num_classes: int = 10, width: int = 32, in_channels: int = 1, size: int = 28):
        super().__init__()
        self.shape = {"num_classes": num_classes, "width": width, "in_channels": in_channels, "size": size}
        w = check_int("width", width, low=1)
        num_classes = check_int("num_classes", num_classes, low=1)
        in_channels = check_int("in_channels", in_channels, low=1)
        size = check_int("size", size, low=4)
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, w, 3, padding=1), nn.ReLU(), nn.Conv2d(w, w, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2), nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(), nn.Conv2d(2 * w, 2 * w, 3, padding=1),
            nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(2 * w * (size // 4) ** 2, 128), nn.ReLU())
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(128, num_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def train_classifier(images: torch.Tensor, labels: torch.Tensor, steps: int, batch_size: int = 128,
                     lr: float = 2e-3, generator=None, device=None, progress: bool = True,
                     flip: bool = True) -> FashionClassifier:
    """Train a ``FashionClassifier`` on ``images`` (N, C, H, H) with Adam, a one-cycle learning rate
    and random horizontal flips (``flip=False`` where left and right are part of the label), on
    ``device`` (default: the images'); returns it in eval mode.
    Batches are drawn on ``generator``'s device and indexed where the images live."""
    steps = check_int("steps", steps, low=1)
    batch_size = check_int("batch_size", batch_size, low=1)
    lr = check_float("lr", lr, low=0, low_open=True)
    check_tensor("images", images)
    if images.dim() != 4 or images.shape[-1] != images.shape[-2]:
        raise ValueError(f"images must have shape (N, C, H, H), got {tuple(images.shape)}")
    device = torch.device(device) if device is not None else images.device
    images, labels = images.to(device), labels.to(device)
    gen_device = generator.device if generator is not None else device
    flips = torch.tensor(bool(flip), device=device)
    model = FashionClassifier(num_classes=int(labels.max()) + 1, in_channels=images.shape[1],
                              size=images.shape[-1]).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr, fused=device.type == "cuda")   # one kernel on CUDA
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    model.train()
    for _ in tqdm(range(steps), desc="classifier", disable=not progress, leave=False):
        idx = torch.randint(0, len(images), (batch_size,), generator=generator, device=gen_device).to(device)
        x, y = images[idx], labels[idx]
        flip = (torch.rand(batch_size, generator=generator, device=gen_device) < 0.5).to(device)
        x = torch.where(flip[:, None, None, None] & flips, x.flip(-1), x)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()


def model_device(model) -> torch.device:
    """Where ``model``'s parameters live (the CPU for a model without any)."""
    return next(iter(model.parameters()), torch.empty(0)).device


@torch.no_grad()
def batched(fn, x: torch.Tensor, device, batch_size: int = 1000) -> torch.Tensor:
    """``fn`` over ``x`` in chunks on ``device``; the result comes back to the CPU."""
    return torch.cat([fn(x[i:i + batch_size].to(device)).cpu() for i in range(0, len(x), batch_size)])


def accuracy(model: FashionClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    """The fraction of ``images`` the classifier labels correctly."""
    return (batched(model, images, model_device(model)).argmax(1) == labels.cpu()).float().mean().item()


def probabilities(model: FashionClassifier, images: torch.Tensor) -> torch.Tensor:
    """The classifier's class probabilities (softmax) for ``images`` clamped to [-1, 1]: (N, K) on the CPU."""
    return batched(model, images.clamp(-1, 1), model_device(model)).softmax(1)


def features(model: FashionClassifier, images: torch.Tensor) -> torch.Tensor:
    """Penultimate-layer features (N, 128) in float64 on the CPU, computed on the model's device."""
    return batched(model.features, images, model_device(model)).double()


def image_evaluator(classifier, train_images: torch.Tensor, test_images: torch.Tensor,
                    test_labels: torch.Tensor, n_real: int, seed: int = 0) -> dict:
    """Prepare the real side of every comparison with a trained feature ``classifier``.

    Returns a dict with the ``classifier``, its test ``accuracy``, ``real`` features of the first
    ``n_real`` test images, the ``image_shape`` (C, H, W) and ``num_classes``, and the real-vs-real
    ``floor``: the Fréchet distance between ``n_real`` random train images and those ``n_real``
    test images — the best any generator can score at that sample count — and ``kid_floor``, the
    same sets' KID (``metrics.kid``; about 0 at any n, KID being unbiased).
    """
    n_real = check_int("n_real", n_real, low=2, high=min(len(train_images), len(test_images)))
    seed = check_int("seed", seed, low=0)
    pick = torch.randperm(len(train_images), generator=torch.Generator().manual_seed(seed))[:n_real]
    real, other = features(classifier, test_images[:n_real]), features(classifier, train_images[pick])
    num_classes = int(test_labels.max()) + 1
    return {"classifier": classifier, "accuracy": accuracy(classifier, test_images, test_labels), "real": real,
            "n_real": n_real, "image_shape": tuple(test_images.shape[1:]), "num_classes": num_classes,
            "floor": frechet_distance(other, real),
            "kid_floor": kid(real, other, generator=torch.Generator().manual_seed(seed))["kid"]}


def fashion_mnist_evaluator(classifier, n_real: int, seed: int = 0) -> dict:
    """``image_evaluator`` on Fashion-MNIST: the floor from the train split, the real side from the
    test split. The classifier comes from ``recipes.load_or_train("fashion-classifier")``."""
    from . import data

    x, _ = data.fashion_mnist("train")
    xt, yt = data.fashion_mnist("test")
    return image_evaluator(classifier, x, xt, yt, n_real, seed=seed)


def evaluate_samples(evaluator: dict, samples: torch.Tensor) -> dict:
    """FID (with its sample count and floor), KID (``metrics.kid``: its mean over subsets, their
    spread ``kid_std`` and its floor), precision, recall and class coverage of ``samples``."""
    clf = evaluator["classifier"]
    samples = samples.clamp(-1, 1)
    fake = features(clf, samples)
    precision, recall = precision_recall(evaluator["real"], fake)
    coverage = class_coverage(batched(clf, samples, model_device(clf)).argmax(1), evaluator["num_classes"])
    k = kid(evaluator["real"], fake, generator=torch.Generator().manual_seed(0))
    return {"fid": frechet_distance(fake, evaluator["real"]), "samples": len(samples),
            "floor": evaluator["floor"], "kid": k["kid"], "kid_std": k["std"], "kid_floor": evaluator.get("kid_floor"),
            "precision": precision, "recall": recall,
            "covered": coverage["covered"], "max_share_ratio": coverage["max_share_ratio"],
            "shares": coverage["shares"]}


def _scoring(evaluator: dict, metric: str, seed: int):
    """FID's or KID's function, the real features, a generator seeded with ``seed``, and a draw of
    real rows with replacement on it (a bootstrap's)."""
    check_choice("metric", metric, ("fid", "kid"))
    real, g = evaluator["real"], torch.Generator().manual_seed(check_int("seed", seed, low=0))
    return (frechet_distance if metric == "fid" else mmd2_unbiased), real, g, \
        lambda: torch.randint(0, len(real), (len(real),), generator=g)


def score_interval(evaluator: dict, samples: torch.Tensor, *, metric: str = "fid", resamples: int = 200,
                   level: float = 0.95, seed: int = 0) -> dict:
    """FID or KID (``metrics.mmd2_unbiased`` on all rows) of ``samples`` against the evaluator's real
    images, with its percentile-bootstrap interval (``verdicts``; generated and real rows resampled):
    ``score``, ``low``, ``high``, ``n``. Small sets bias a bootstrapped FID upwards: read it as spread."""
    score, real, g, real_rows = _scoring(evaluator, metric, seed)
    fake = features(evaluator["classifier"], samples.clamp(-1, 1))
    low, high = bootstrap_interval(lambda rows: score(fake[rows], real[real_rows()]), len(fake), resamples=resamples,
                                   level=level, generator=g)
    return {"metric": metric, "score": score(fake, real), "low": low, "high": high, "level": level, "n": len(fake)}


def compare_samples(evaluator: dict, a: torch.Tensor, b: torch.Tensor, *, claim: str, paired: bool,
                    metric: str = "fid", resamples: int = 200, level: float = 0.95, seed: int = 0) -> dict:
    """Score two sample sets against the evaluator's real images, FID or KID (``metrics.mmd2_unbiased``
    on all rows), and judge ``claim`` ("a < b": a scores lower) by the percentile bootstrap of the
    difference (``verdicts``): every resample draws the real rows anew, and the generated rows of
    ``a`` and ``b`` alike when they are ``paired`` (image i of each from the same starting noise).
    Returns ``a``, ``b``, ``difference``, ``low``, ``high``, ``n`` and ``verdict``."""
    score, real, g, real_rows = _scoring(evaluator, metric, seed)
    fa, fb = (features(evaluator["classifier"], x.clamp(-1, 1)) for x in (a, b))
    if paired and len(fa) != len(fb):
        raise ValueError(f"paired sample sets must be equally large, got {len(fa)} and {len(fb)}")

    def difference(rows):
        r = real[real_rows()]
        rows_b = rows if paired else torch.randint(0, len(fb), (len(fb),), generator=g)
        return score(fa[rows], r) - score(fb[rows_b], r)

    sa, sb = score(fa, real), score(fb, real)
    low, high = bootstrap_interval(difference, len(fa), resamples=resamples, level=level, generator=g)
    n = len(fa) if paired else f"{len(fa)} and {len(fb)}"
    return {"metric": metric, "a": sa, "b": sb, "difference": sa - sb, "low": low, "high": high, "level": level,
            "n": n, "paired": paired, "claim": claim, "verdict": verdict(low, high, claim, n)}


def draw_samples(model, s, shape, n: int, sampler: str = "ddpm", steps: int | None = None, eta: float = 0.0,
                 batch_size: int = 100, seed: int = 0, prediction: str = "eps", device=None, progress: bool = True,
                 clip_x0: float | None = 1.0, cond: dict | None = None) -> tuple[torch.Tensor, float]:
    """``n`` images of ``shape`` (C, H, W) from ``samplers.sample``, ``batch_size`` at a time, and the
    wall-clock seconds the sampling took per image. One CPU generator seeded with ``seed`` draws each
    batch's starting noise and then its per-step noise, so the same ``seed``, ``n`` and
    ``batch_size`` give the same x_T to every sampler, and the same images on the same device.
    ``cond``: the model's condition keywords, each a tensor with n rows (image i gets row i)."""
    n = check_int("n", n, low=1)
    cond = cond or {}
    for k, v in cond.items():
        if check_tensor(k, v).shape[0] != n:
            raise ValueError(f"cond[{k!r}] must have n={n} rows, got {v.shape[0]}")
    batch_size = check_int("batch_size", batch_size, low=1)
    seed = check_int("seed", seed, low=0)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    g = torch.Generator().manual_seed(seed)
    out, seconds = [], 0.0
    for i in range(0, n, batch_size):
        full = (min(batch_size, n - i), *shape)
        x_T = torch.randn(full, generator=g).to(device)
        synchronize(device)
        start = time.perf_counter()
        x = sample(model, s, full, sampler=sampler, steps=steps, eta=eta, x_T=x_T, generator=g,
                   prediction=prediction, clip_x0=clip_x0, progress=progress,
                   **{k: v[i:i + batch_size].to(device) for k, v in cond.items()})
        synchronize(device)
        seconds += time.perf_counter() - start
        out.append(x.cpu())
    return torch.cat(out), seconds / n


def compare_samplers(model, s, evaluator: dict, runs, n: int, batch_size: int = 100, seed: int = 0,
                     prediction: str = "eps", device=None, progress: bool = True, clip_x0: float | None = 1.0,
                     keep_images: bool = False) -> list[dict]:
    """Sample ``n`` images with each (sampler, steps) or (sampler, steps, eta) in ``runs`` from the
    same starting noise (``draw_samples``) and measure FID and wall-clock seconds per image.
    ``prediction`` is what the model outputs ("eps", "x0" or "v"). Returns one row per run; its
    "name" reads like "ddim 50" or "ddim 50, eta=1". Images have the evaluator's ``image_shape``.
    Every x0_hat is clamped to [-clip_x0, clip_x0] (None: no clamp). With ``keep_images`` each row
    also holds its ``images`` (on the CPU). The same ``seed``, ``n`` and ``batch_size`` give the same
    starting noise and the same per-step noise in every call, so two lessons that sample the same
    model this way get the same images and the same FID."""
    n = check_int("n", n, low=2)
    rows = []
    for sampler, steps, *eta in runs:
        eta = eta[0] if eta else 0.0
        images, seconds_per_image = draw_samples(model, s, evaluator["image_shape"], n, sampler, steps, eta,
                                                 batch_size=batch_size, seed=seed, prediction=prediction,
                                                 device=device, progress=progress, clip_x0=clip_x0)
        row = {"name": sampler_name(sampler, steps, eta), "sampler": sampler, "steps": steps, "eta": eta,
               "seconds_per_image": seconds_per_image}
        row.update(evaluate_samples(evaluator, images))
        if keep_images:
            row["images"] = images
        rows.append(row)
    return rows


def draw_guided(run, cond: torch.Tensor, scale: float, shape, *, sampler: str = "ddim", steps: int = 50,
                batch_size: int = 100, seed: int = 0, device=None, progress: bool = False):
    """``draw_samples`` of a conditional run's EMA model under classifier-free guidance at ``scale``
    (``guidance.cfg`` with the run's ``uncond``), one image per row of ``cond`` (the model's context
    or labels). The same ``seed`` gives every scale the same starting noise."""
    from .guidance import cfg

    device = torch.device(device) if device is not None else model_device(run.ema.model)
    key = next(iter(run.uncond))
    return draw_samples(cfg(run.ema.model, scale, run.uncond), run.schedule, shape, len(cond), sampler, steps,
                        batch_size=batch_size, seed=seed, prediction=run.config["prediction"], device=device,
                        progress=progress, cond={key: cond})


@torch.no_grad()
def held_out_loss(model, s, images: torch.Tensor, *, prediction: str = "eps", seed: int = 0,
                  batch_size: int = 500) -> float:
    """DDPM's training loss (``loss.diffusion_loss``, Ho et al. 2020 Algorithm 1) on ``images`` the
    model never trained on, with t and eps drawn once from ``seed`` on the CPU: two models are scored
    on the very same (x0, t, eps), so the difference is theirs, not the draws'. A sweep of training
    settings reads this (a last training loss mixes the draws and the weights' drift over its window)."""
    check_tensor("images", images)
    batch_size = check_int("batch_size", batch_size, low=1)
    g = torch.Generator().manual_seed(check_int("seed", seed, low=0))
    images = images.float().cpu()
    t, eps = draw_timesteps(s.T, len(images), g, torch.device("cpu")), randn_like(images, g)
    dev, total = model_device(model), 0.0
    for i in range(0, len(images), batch_size):
        part = slice(i, i + batch_size)
        mean = diffusion_loss(model, s, images[part].to(dev), t[part].to(dev), eps[part].to(dev), prediction=prediction)
        total += float(mean) * len(images[part])
    return total / len(images)


def sampler_name(sampler: str, steps: int, eta: float = 0.0) -> str:
    """How a run is named in tables: "ddim 50", "ddim 50, eta=1"."""
    return f"{sampler} {steps}" + (f", eta={eta:g}" if eta else "")


