"""Evaluating generated images: a feature classifier, FID with its floor, sampler races.

``metrics`` holds the maths; this module supplies what it measures. The features are the
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
from .metrics import class_coverage, frechet_distance, precision_recall
from .samplers import sample
from .training import shard

__all__ = ["FashionClassifier", "train_classifier", "accuracy", "probabilities", "features", "image_evaluator",
           "fashion_mnist_evaluator", "evaluate_samples", "draw_samples", "compare_samplers", "sampler_name",
           "activation_bytes", "training_speed", "shapes_eval_set", "condition_accuracy", "score_conditional",
           "conditional_context", "draw_guided", "guidance_sweep", "shapes_zero_shot", "ZERO_SHOT_TEMPLATES",
           "settings_tuned", "masked_error", "feature_distance", "low_frequency_distance", "inpainting_comparison",
           "sdedit_sweep", "inversion_errors", "style_sweep", "class_balanced", "synthetic_data_comparison",
           "reconstruction_scores", "choose_zeta", "score_molecules", "score_clips", "held_out_loss",
           "gradient_noise_scale"]


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


def _device(model) -> torch.device:
    return next(iter(model.parameters()), torch.empty(0)).device


@torch.no_grad()
def _batched(fn, x: torch.Tensor, device, batch_size: int = 1000) -> torch.Tensor:
    """``fn`` over ``x`` in chunks on ``device``; the result comes back to the CPU."""
    return torch.cat([fn(x[i:i + batch_size].to(device)).cpu() for i in range(0, len(x), batch_size)])


def accuracy(model: FashionClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    """The fraction of ``images`` the classifier labels correctly."""
    return (_batched(model, images, _device(model)).argmax(1) == labels.cpu()).float().mean().item()


def probabilities(model: FashionClassifier, images: torch.Tensor) -> torch.Tensor:
    """The classifier's class probabilities (softmax) for ``images`` clamped to [-1, 1]: (N, K) on the CPU."""
    return _batched(model, images.clamp(-1, 1), _device(model)).softmax(1)


def features(model: FashionClassifier, images: torch.Tensor) -> torch.Tensor:
    """Penultimate-layer features (N, 128) in float64 on the CPU, computed on the model's device."""
    return _batched(model.features, images, _device(model)).double()


def image_evaluator(classifier, train_images: torch.Tensor, test_images: torch.Tensor,
                    test_labels: torch.Tensor, n_real: int, seed: int = 0) -> dict:
    """Prepare the real side of every comparison with a trained feature ``classifier``.

    Returns a dict with the ``classifier``, its test ``accuracy``, ``real`` features of the first
    ``n_real`` test images, the ``image_shape`` (C, H, W) and ``num_classes``, and the real-vs-real
    ``floor``: the Fréchet distance between ``n_real`` random train images and those ``n_real``
    test images — the best any generator can score at that sample count.
    """
    n_real = check_int("n_real", n_real, low=2, high=min(len(train_images), len(test_images)))
    seed = check_int("seed", seed, low=0)
    pick = torch.randperm(len(train_images), generator=torch.Generator().manual_seed(seed))[:n_real]
    real = features(classifier, test_images[:n_real])
    num_classes = int(test_labels.max()) + 1
    return {"classifier": classifier, "accuracy": accuracy(classifier, test_images, test_labels), "real": real,
            "n_real": n_real, "image_shape": tuple(test_images.shape[1:]), "num_classes": num_classes,
            "floor": frechet_distance(features(classifier, train_images[pick]), real)}


def fashion_mnist_evaluator(classifier, n_real: int, seed: int = 0) -> dict:
    """``image_evaluator`` on Fashion-MNIST: the floor from the train split, the real side from the
    test split. The classifier comes from ``recipes.load_or_train("fashion-classifier")``."""
    from . import data

    x, _ = data.fashion_mnist("train")
    xt, yt = data.fashion_mnist("test")
    return image_evaluator(classifier, x, xt, yt, n_real, seed=seed)


def evaluate_samples(evaluator: dict, samples: torch.Tensor) -> dict:
    """FID (with its sample count and floor), precision, recall and class coverage of ``samples``."""
    clf = evaluator["classifier"]
    samples = samples.clamp(-1, 1)
    fake = features(clf, samples)
    precision, recall = precision_recall(evaluator["real"], fake)
    coverage = class_coverage(_batched(clf, samples, _device(clf)).argmax(1), evaluator["num_classes"])
    return {"fid": frechet_distance(fake, evaluator["real"]), "samples": len(samples),
            "floor": evaluator["floor"], "precision": precision, "recall": recall,
            "covered": coverage["covered"], "max_share_ratio": coverage["max_share_ratio"],
            "shares": coverage["shares"]}


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
    dev, total = _device(model), 0.0
    for i in range(0, len(images), batch_size):
        part = slice(i, i + batch_size)
        mean = diffusion_loss(model, s, images[part].to(dev), t[part].to(dev), eps[part].to(dev), prediction=prediction)
        total += float(mean) * len(images[part])
    return total / len(images)


def gradient_noise_scale(model: nn.Module, loss_fn, batches, small: int) -> dict:
    """The simple noise scale B_simple = tr(Sigma) / |G|^2 (McCandlish et al. 2018, eq. 2.8), with G the
    mean of the per-example gradients and Sigma their covariance: the batch size at which a batch
    gradient's noise, tr(Sigma) / B, equals its signal |G|^2. Well below it, a B times larger batch
    does about the work of B steps; well above it, the extra images mostly average away noise a step
    no longer has, so on the same images the larger batch falls behind.

    Estimated without per-example gradients (their Appendix A.1): a batch of B gives
    E|G_B|^2 = |G|^2 + tr(Sigma) / B, so the squared norms of the gradients of each big batch and of its
    chunks of ``small`` rows, each averaged over ``batches``, give both unknowns.

    :param loss_fn: ``loss_fn(model, batch)`` returning the batch's *mean* loss.
    :param batches: big batches (tensors, or tuples/dicts of them split along dim 0 as ``training.shard``
        splits), all of one size, a multiple of ``small`` and at least twice it. The model is used in
        the mode it is in (train mode adds dropout's noise to Sigma).
    :returns: ``b_simple``, ``trace_sigma`` and ``grad_norm_sq`` (the estimates of tr(Sigma) and |G|^2).
    """
    small = check_int("small", small, low=1)
    params = [p for p in model.parameters() if p.requires_grad]
    big_sq, small_sq, size = [], [], None
    for batch in batches:
        first = batch if isinstance(batch, torch.Tensor) else next(iter(
            batch.values() if isinstance(batch, dict) else batch))
        n = len(first)
        if n % small or n < 2 * small or (size is not None and n != size):
            raise ValueError(f"batches must all hold one multiple of small ({small}) rows, at least {2 * small}; "
                             f"got {n}" + (f" after {size}" if size is not None and n != size else ""))
        size, k, total, chunks = n, n // small, 0.0, 0.0
        for i in range(k):
            grads = torch.autograd.grad(loss_fn(model, shard(batch, i, k)), params, allow_unused=True)
            flat = torch.cat([(g if g is not None else torch.zeros_like(q)).reshape(-1).double()
                              for g, q in zip(grads, params)])
            chunks += float(flat.pow(2).sum())
            total = total + flat
        big_sq.append(float((total / k).pow(2).sum()))
        small_sq.append(chunks / k)
    if not big_sq:
        raise ValueError("batches must hold at least one batch")
    b, B = small, size
    g_big, g_small = sum(big_sq) / len(big_sq), sum(small_sq) / len(small_sq)
    grad_norm_sq = (B * g_big - b * g_small) / (B - b)
    trace_sigma = (g_small - g_big) / (1 / b - 1 / B)
    return {"b_simple": trace_sigma / grad_norm_sq, "trace_sigma": trace_sigma, "grad_norm_sq": grad_norm_sq}


def sampler_name(sampler: str, steps: int, eta: float = 0.0) -> str:
    """How a run is named in tables: "ddim 50", "ddim 50, eta=1"."""
    return f"{sampler} {steps}" + (f", eta={eta:g}" if eta else "")


def masked_error(images: torch.Tensor, truth: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Per image, the mean squared error to ``truth`` over the repainted pixels (``keep`` 0): (N,)."""
    check_tensor("images", images)
    if images.shape != truth.shape:
        raise ValueError(f"images {tuple(images.shape)} and truth {tuple(truth.shape)} must have one shape")
    unknown = (~torch.broadcast_to(keep.bool(), images.shape)).flatten(1).float().cpu()
    if (unknown.sum(1) == 0).any():
        raise ValueError("keep repaints no pixel of some image: there is no error to measure")
    sq = (images.float().cpu() - truth.float().cpu()).pow(2).flatten(1)
    return (sq * unknown).sum(1) / unknown.sum(1)


def feature_distance(classifier, images: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Per image, the Euclidean distance between the feature classifier's features (``features``)
    of ``images`` and of ``truth``, pairwise: (N,). Small when an edit keeps what the image is."""
    if images.shape != truth.shape:
        raise ValueError(f"images {tuple(images.shape)} and truth {tuple(truth.shape)} must have one shape")
    return (features(classifier, images.clamp(-1, 1)) - features(classifier, truth.clamp(-1, 1))).norm(dim=1).float()


def low_frequency_distance(images: torch.Tensor, reference: torch.Tensor, factor: int = 4) -> torch.Tensor:
    """Per image, the RMS difference of the two images averaged over ``factor`` x ``factor`` blocks:
    how much of the coarse structure (layout, silhouette) an edit kept, ignoring detail. (N,)."""
    factor = check_int("factor", factor, low=1)
    if images.shape != reference.shape:
        raise ValueError(f"images {tuple(images.shape)} and reference {tuple(reference.shape)} must have one shape")
    pool = torch.nn.functional.avg_pool2d
    d = pool(images.float().cpu(), factor, ceil_mode=True) - pool(reference.float().cpu(), factor, ceil_mode=True)
    return d.pow(2).flatten(1).mean(1).sqrt()


def settings_tuned(config: dict, defaults: dict, runs: list[dict], noise: float = 0.0) -> dict:
    """Which optimiser settings a recipe needed to tune (lesson 10): of those its ``config`` moves away
    from ``defaults`` (``recipes.LIBRARY_DEFAULTS``), each counts as needed when the runs with that
    one setting put back to its default (``recipes.default_runs``) did worse than the runs of the
    recipe itself: more of them failed, or their median FID (of the runs that did not fail) is
    higher by more than the fraction ``noise``.

    :param config: the recipe's config (``recipes.config(name, scale)``); its "lr" picks its own runs.
    :param runs: rows of this recipe's runs, each with "setting" ("recipe" for ``stability_grid``
        runs, "default <name>" for ``default_runs``), "lr", "failed" (bool) and "fid".
    :returns: ``moved`` {setting: (recipe's value, default)}; ``recipe`` and, per moved setting,
        ``defaults[setting]``: the ``failed`` count, the ``runs`` and the ``median_fid`` (None when
        every run failed), the latter also ``needed`` (bool); ``needed``: how many were needed.
    """
    import math
    import statistics

    noise = check_float("noise", noise, low=0.0)
    for arg, value in (("config", config), ("defaults", defaults)):
        if not isinstance(value, dict):
            raise TypeError(f"{arg} must be a dict, got {type(value).__name__}")
    moved = {k: (config[k], v) for k, v in defaults.items() if k in config and config[k] != v}

    def summary(rows, what):
        if not rows:
            raise ValueError(f"runs holds no {what} runs of {config.get('recipe', 'this recipe')!r}: give the rows "
                             f"of recipes.stability_grid and recipes.default_runs")
        fids = [r["fid"] for r in rows if not r["failed"]]
        return {"failed": sum(bool(r["failed"]) for r in rows), "runs": len(rows),
                "median_fid": statistics.median(fids) if fids else None}

    def worse(a, b):
        fa, fb = (math.inf if x["median_fid"] is None else x["median_fid"] for x in (a, b))
        return a["failed"] > b["failed"] or fa > fb * (1 + noise)

    out = {"moved": moved, "recipe": summary([r for r in runs if r["setting"] == "recipe"
                                              and math.isclose(r["lr"], config["lr"])], "recipe"), "defaults": {}}
    for k in moved:
        d = summary([r for r in runs if r["setting"] == f"default {k}"], f"'default {k}'")
        out["defaults"][k] = {**d, "needed": worse(d, out["recipe"])}
    out["needed"] = sum(d["needed"] for d in out["defaults"].values())
    return out


def activation_bytes(net: nn.Module, *inputs) -> int:
    """Bytes of every leaf module's output in one forward pass of ``net(*inputs)``: the tensors
    autograd keeps for the backward pass, a measure of training memory that is the same on every
    device (counted with forward hooks; the pass itself runs without gradients)."""
    total = 0

    def count(module, args, out):
        nonlocal total
        if isinstance(out, torch.Tensor) and not list(module.children()):
            total += out.numel() * out.element_size()

    hooks = [m.register_forward_hook(count) for m in net.modules()]
    try:
        with torch.no_grad():
            net(*inputs)
    finally:
        for h in hooks:
            h.remove()
    return total


def training_speed(net: nn.Module, loss_fn, batch: torch.Tensor, steps: int = 3, tries: int = 2,
                   lr: float = 1e-4) -> tuple[float, float | None]:
    """Training examples per second of ``net`` on ``batch``: one AdamW warm-up step, then the best of
    ``tries`` timings of ``steps`` steps of ``loss_fn(net, batch)`` (the device is synchronised before
    each clock read). Also the CUDA allocator's peak over a timing in MB (None elsewhere). It
    trains ``net``: pass a copy of a model you want to keep."""
    steps = check_int("steps", steps, low=1)
    tries = check_int("tries", tries, low=1)
    dev = batch.device
    opt = torch.optim.AdamW(net.parameters(), lr=lr)

    def step():
        value = loss_fn(net, batch)
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()

    step()
    best, peak = 0.0, None
    for _ in range(tries):
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        synchronize(dev)
        start = time.perf_counter()
        for _ in range(steps):
            step()
        synchronize(dev)
        best = max(best, steps * len(batch) / (time.perf_counter() - start))
        if dev.type == "cuda":
            peak = torch.cuda.max_memory_allocated(dev) / 2**20
    return best, peak


# ---------------------------------------------------------------------------------------------
# Conditional models on captioned shapes (lesson 09): does the picture show what the prompt asked?

def shapes_eval_set(size: int, n: int, held_out: bool, pairs, seed: int = 0) -> dict:
    """``n`` real shapes pictures with their ``captions`` and ``attributes``: only the held-out
    (colour, shape) ``pairs`` when ``held_out``, else every pair but those (the training ones)."""
    from . import data

    g = torch.Generator().manual_seed(check_int("seed", seed, low=0))
    kw = {"only": pairs} if held_out else {"exclude": pairs}
    images, captions, attributes = data.shapes(check_int("n", n, low=1), size, generator=g, **kw)
    return {"images": images, "captions": captions, "attributes": attributes}


def condition_accuracy(classifier, images: torch.Tensor, attributes: dict) -> dict:
    """The share of ``images`` that the shapes classifier (a ``FashionClassifier`` over the 150
    ``data.shape_label`` combinations) reads with the asked-for value, per attribute, and "all"
    (every attribute right)."""
    from . import data

    read = data.shape_attributes(_batched(classifier, images.clamp(-1, 1), _device(classifier)).argmax(1))
    right = {k: read[k] == attributes[k].cpu() for k in attributes}
    out = {k: v.float().mean().item() for k, v in right.items()}
    out["all"] = torch.stack(list(right.values())).all(0).float().mean().item()
    return out


def score_conditional(classifier, images: torch.Tensor, attributes: dict, real_images: torch.Tensor) -> dict:
    """FID, precision and recall of ``images`` against ``real_images`` (the classifier's features)
    and their ``condition_accuracy`` ("accuracy": per attribute and "all").

    Precision and recall compare against the *distinct* real pictures: a procedural set repeats
    pictures, and a repeated point has a k-nearest-neighbour radius of 0, which would count only
    exact copies as "inside the real manifold"."""
    fake, real = features(classifier, images.clamp(-1, 1)), features(classifier, real_images)
    precision, recall = precision_recall(torch.unique(real, dim=0), fake)
    return {"fid": frechet_distance(fake, real), "precision": precision, "recall": recall, "samples": len(images),
            "accuracy": condition_accuracy(classifier, images, attributes)}


def conditional_context(run, captions, attributes) -> torch.Tensor:
    """What a conditional shapes model takes as ``context``: its tokenizer's tokens for the
    ``captions``, or one-hot attribute tokens for a model without text."""
    from . import data

    return run.tokenizer.encode(captions) if run.tokenizer is not None else data.shape_one_hot(attributes)


def draw_guided(run, cond: torch.Tensor, scale: float, shape, *, sampler: str = "ddim", steps: int = 50,
                batch_size: int = 100, seed: int = 0, device=None, progress: bool = False):
    """``draw_samples`` of a conditional run's EMA model under classifier-free guidance at ``scale``
    (``guidance.cfg`` with the run's ``uncond``), one image per row of ``cond`` (the model's context
    or labels). The same ``seed`` gives every scale the same starting noise."""
    from .guidance import cfg

    device = torch.device(device) if device is not None else _device(run.ema.model)
    key = next(iter(run.uncond))
    return draw_samples(cfg(run.ema.model, scale, run.uncond), run.schedule, shape, len(cond), sampler, steps,
                        batch_size=batch_size, seed=seed, prediction=run.config["prediction"], device=device,
                        progress=progress, cond={key: cond})


def guidance_sweep(run, classifier, scales, eval_sets: dict, *, steps: int = 50, sampler: str = "ddim",
                   batch_size: int = 100, seed: int = 0, device=None, progress: bool = False,
                   keep_images: bool = False) -> list[dict]:
    """For every guidance scale and every named eval set (``shapes_eval_set``), sample one image
    per caption from the same starting noise and score it (``score_conditional``). One row per
    (scale, set), with the seconds per image; ``keep_images`` keeps the images too."""
    rows = []
    for scale in scales:
        for name, ev in eval_sets.items():
            cond = conditional_context(run, ev["captions"], ev["attributes"])
            images, seconds = draw_guided(run, cond, scale, tuple(ev["images"].shape[1:]), sampler=sampler,
                                          steps=steps, batch_size=batch_size, seed=seed, device=device,
                                          progress=progress)
            row = {"scale": float(scale), "set": name, "seconds_per_image": seconds,
                   **score_conditional(classifier, images, ev["attributes"], ev["images"])}
            if keep_images:
                row["images"] = images
            rows.append(row)
    return rows


ZERO_SHOT_TEMPLATES = ("caption", "ensemble", "word")


@torch.no_grad()
def shapes_zero_shot(clip_model, tokenizer, images: torch.Tensor, attributes: dict, template: str = "ensemble") -> dict:
    """CLIP's zero-shot accuracy on shapes, per attribute, for three ways of writing the classes:

    * "caption": the picture's own caption with only that attribute changed (oracle knowledge of
      the other attributes; not an upper bound: on held-out pairs that caption was never trained on);
    * "ensemble": every caption with that value, embeddings averaged (Radford et al. 2021, §3.1.4);
    * "word": the value alone ("red", "circle", "small", "top left").
    """
    from . import data
    from .clip import zero_shot_classify

    check_choice("template", template, ZERO_SHOT_TEMPLATES)
    A, dev = data.SHAPE_ATTRIBUTES, _device(clip_model)
    captions = data.shape_captions()
    every = data.shape_attributes(torch.arange(len(captions)))
    img = torch.cat([clip_model.embed_image(x.to(dev)) for x in images.split(500)])
    if template == "caption":
        sims = img @ clip_model.embed_text(tokenizer.encode(captions).to(dev)).T            # (N, 150)
    out = {}
    for key, values in A.items():
        if template == "caption":
            cand = torch.stack([data.shape_label({**attributes, key: torch.full_like(attributes[key], v)})
                                for v in range(len(values))], 1).to(dev)                    # (N, V)
            pred = sims.gather(1, cand).argmax(1)
        elif template == "ensemble":
            prompts = [[c for c, k in zip(captions, every[key].tolist()) if k == v] for v in range(len(values))]
            pred = zero_shot_classify(clip_model, images, [tokenizer.encode(p) for p in prompts])
        else:
            pred = zero_shot_classify(clip_model, images, [tokenizer.encode([w]) for w in values])
        out[key] = (pred.cpu() == attributes[key]).float().mean().item()
    return out



def _rms_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """The per-image root mean square difference of two batches, averaged over the images."""
    return (a.cpu() - b.cpu()).pow(2).flatten(1).mean(1).sqrt().mean().item()


def _seeded(device, seed):
    return torch.Generator(device).manual_seed(seed)


def inpainting_comparison(model, s, truth: torch.Tensor, masks: dict, evaluator: dict, *, steps: int,
                          jump_length: int, resample: int, seed: int = 0, prediction: str = "eps", device=None,
                          progress: bool = False) -> dict:
    """RePaint against plain replacement at an equal number of network calls (lesson 11).

    For each named ``keep`` mask in ``masks``: ``editing.inpaint`` with RePaint's ``steps``,
    ``jump_length`` and ``resample``, and with plain replacement on as many levels as RePaint makes
    calls (at most T), from the same starting noise. Each result holds the ``images``, its
    ``network_calls``, and per image the ``mse`` on the repainted pixels (``masked_error``) and the
    ``feature`` distance to the truth (``feature_distance``), plus the ``fid`` of the whole set.
    """
    from .editing import inpaint, network_calls, repaint_schedule

    device = torch.device(device) if device is not None else _device(evaluator["classifier"])
    calls = network_calls(repaint_schedule(steps, jump_length, resample))
    plans = {"plain": {"steps": min(calls, s.T)},
             "RePaint": {"steps": steps, "jump_length": jump_length, "resample": resample}}
    out = {}
    for name, keep in tqdm(masks.items(), desc="masks", disable=not progress):
        out[name] = {}
        for method, plan in plans.items():
            images = inpaint(model, s, truth.to(device), keep.to(device), generator=_seeded(device, seed),
                             prediction=prediction, **plan).cpu()
            out[name][method] = {"images": images, "network_calls": calls if method == "RePaint" else plan["steps"],
                                 "mse": masked_error(images, truth, keep),
                                 "feature": feature_distance(evaluator["classifier"], images, truth),
                                 "fid": evaluate_samples(evaluator, images)["fid"]}
    return out


def sdedit_sweep(model, s, inputs: torch.Tensor, strengths, evaluator: dict, *, steps: int, sampler: str = "ddim",
                 eta: float = 1.0, labels: torch.Tensor | None = None, seed: int = 0, prediction: str = "eps",
                 device=None) -> list[dict]:
    """SDEdit of ``inputs`` at each strength (``editing.sdedit`` with ``sampler``, by default DDIM with
    eta = 1, i.e. ancestral steps: the stochastic reverse process SDEdit runs): per strength the
    ``images``, the network ``calls``, **faithfulness** (``distance``: mean RMS distance to the input)
    and **realism** (the classifier's mean top-class ``confidence`` and the ``fid``), and with
    ``labels`` the share still read as that class (``accuracy``)."""
    from .editing import sdedit, sdedit_start

    device = torch.device(device) if device is not None else _device(evaluator["classifier"])
    rows = []
    for strength in strengths:
        images = sdedit(model, s, inputs.to(device), strength, steps=steps, sampler=sampler, eta=eta,
                        generator=_seeded(device, seed), prediction=prediction).cpu()
        probs = probabilities(evaluator["classifier"], images)
        row = {"strength": strength, "calls": steps - sdedit_start(steps, strength), "images": images,
               "distance": _rms_distance(images, inputs),
               "confidence": probs.max(1).values.mean().item(), "fid": evaluate_samples(evaluator, images)["fid"]}
        if labels is not None:
            row["accuracy"] = (probs.argmax(1) == labels.cpu()).float().mean().item()
        rows.append(row)
    return rows


def inversion_errors(model, s, images: torch.Tensor, step_counts, *, prediction: str = "eps", device=None) -> dict:
    """DDIM inversion (``editing.ddim_invert``) then DDIM (eta = 0) back, for each number of steps:
    {steps: {"noise", "back", "rms" (mean per-image RMS error to ``images``), "noise_std"}}."""
    from .editing import ddim_invert

    device = torch.device(device) if device is not None else _device(model)
    out = {}
    for steps in step_counts:
        noise = ddim_invert(model, s, images.to(device), steps=steps, prediction=prediction)
        back = sample(model, s, noise.shape, "ddim", steps, x_T=noise, prediction=prediction, amp=False,
                      progress=False).cpu()
        out[steps] = {"noise": noise.cpu(), "back": back, "noise_std": noise.std().item(),
                      "rms": _rms_distance(back, images)}
    return out


def style_sweep(run, images: torch.Tensor, source: int, target: int, scales, evaluator: dict, *, strength: float,
                steps: int, reference: torch.Tensor, batch_size: int = 100, seed: int = 0, device=None) -> list[dict]:
    """Style transfer by class (``editing.style_transfer``) with a class-conditional run's EMA model,
    class ``source`` -> ``target``, by "sdedit" and by "inversion", at each guidance scale, beside
    target-class samples "from scratch" at that scale (``draw_guided``, DDIM, ``steps``). Per row:
    ``scale``, ``method``, ``images``, ``accuracy`` (share read as ``target``), ``structure``
    (mean ``low_frequency_distance`` to the input, 4x4 blocks: lower keeps more of it) and ``fid``
    against ``reference``, real images of the target class (realism as that class)."""
    from .editing import style_transfer

    device = torch.device(device) if device is not None else _device(run.ema.model)
    key = next(iter(run.uncond))
    n = len(images)
    src, tgt = torch.full((n,), source, device=device), torch.full((n,), target)
    real = features(evaluator["classifier"], reference)
    rows = []
    for scale in scales:
        outs = {"from scratch": draw_guided(run, tgt, scale, tuple(images.shape[1:]), sampler="ddim", steps=steps,
                                            batch_size=batch_size, seed=seed, device=device)[0].cpu()}
        for method in ("sdedit", "inversion"):
            outs[method] = style_transfer(run.ema.model, run.schedule, images.to(device), src, tgt.to(device),
                                          uncond=run.uncond, scale=scale, strength=strength, steps=steps, method=method,
                                          key=key, generator=_seeded(device, seed),
                                          prediction=run.config["prediction"]).cpu()
        for method, out in outs.items():
            rows.append({"scale": scale, "method": method, "images": out,
                         "accuracy": accuracy(evaluator["classifier"], out.clamp(-1, 1), tgt),
                         "structure": low_frequency_distance(out, images).mean().item(),
                         "fid": frechet_distance(features(evaluator["classifier"], out.clamp(-1, 1)), real)})
    return rows


def class_balanced(labels: torch.Tensor, per_class: int) -> torch.Tensor:
    """Indices of the first ``per_class`` items of every class in ``labels`` (classes in order)."""
    per_class = check_int("per_class", per_class, low=1)
    check_tensor("labels", labels)
    picks = []
    for k in range(int(labels.max()) + 1):
        idx = (labels == k).nonzero().flatten()[:per_class]
        if len(idx) < per_class:
            raise ValueError(f"class {k} has {len(idx)} items, fewer than per_class={per_class}")
        picks.append(idx)
    return torch.cat(picks)


def synthetic_data_comparison(real: tuple, synthetic: tuple, test: tuple, *, steps: int, batch_size: int = 128,
                              seed: int = 0, device=None, progress: bool = False) -> dict:
    """Train on generated images, test on real ones (lesson 12): one ``train_classifier`` run per
    training set, each with the same ``steps``, batch and seed, scored by ``accuracy`` on ``test``.

    ``real``, ``synthetic`` and ``test`` are (images, labels) pairs; ``real`` and ``synthetic`` hold
    as many images each. The training sets: "real", "synthetic", "mixed" (every other image of
    each, as many images as either alone) and "real + synthetic" (both whole, twice as many). Returns
    ``{name: accuracy}``.
    """
    (xr, yr), (xs, ys), (xt, yt) = real, synthetic, test
    if len(xr) != len(xs):
        raise ValueError(f"real and synthetic must hold as many images, got {len(xr)} and {len(xs)}")
    sets = {"real": (xr, yr), "synthetic": (xs, ys),      # mixed: every other image of each, so no class is left out
            "mixed": (torch.cat([xr[0::2], xs[1::2]]), torch.cat([yr[0::2], ys[1::2]])),
            "real + synthetic": (torch.cat([xr, xs]), torch.cat([yr, ys]))}
    device = torch.device(device) if device is not None else xr.device
    out = {}
    for name, (x, y) in tqdm(sets.items(), desc="classifiers", disable=not progress):
        model = train_classifier(x.clamp(-1, 1), y, steps, batch_size=batch_size, generator=_seeded(device, seed),
                                 device=device, progress=False)
        out[name] = accuracy(model, xt, yt)
    return out


def reconstruction_scores(model, s, truth: torch.Tensor, problem, method: str, *, zeta: float = 1.0, steps: int = 100,
                          seed: int = 0, data_range: float = 2.0, prediction: str = "eps") -> dict:
    """``inverse.solve`` one ``inverse.Problem`` made from ``truth`` and score it (lesson 12): the
    ``images`` (clamped to [-1, 1], on the CPU), their mean ``psnr`` and ``ssim`` with the stated
    ``data_range``, the mean per-image ``residual`` ||y - A x|| on the measurement (before the
    clamp) and the ``seconds_per_image``."""
    from .inverse import psnr, solve, ssim

    start = time.perf_counter()
    out = solve(model, s, problem, method, zeta=zeta, steps=steps, prediction=prediction,
                generator=_seeded(truth.device, seed))
    synchronize(out.device)
    seconds = (time.perf_counter() - start) / len(truth)
    residual = torch.linalg.vector_norm((problem.y - problem.operator(out)).flatten(1), dim=1).mean().item()
    images = out.clamp(-1, 1).cpu()
    return {"images": images, "psnr": psnr(images, truth.cpu(), data_range).mean().item(),
            "ssim": ssim(images, truth.cpu(), data_range).mean().item(), "residual": residual,
            "seconds_per_image": seconds}


def choose_zeta(model, s, truth: torch.Tensor, problem, zetas, *, steps: int = 100, seed: int = 0,
                data_range: float = 2.0, prediction: str = "eps") -> tuple[float, dict]:
    """DPS's step chosen by mean PSNR on validation images ``truth`` (never on the test images):
    returns the best zeta and ``{zeta: psnr}`` for every one tried."""
    sweep = {z: reconstruction_scores(model, s, truth, problem, "dps", zeta=z, steps=steps, seed=seed,
                                      data_range=data_range, prediction=prediction)["psnr"] for z in zetas}
    return max(sweep, key=sweep.get), sweep


def score_molecules(run, n: int, *, seed: int = 0, device=None) -> dict:
    """``n`` molecules from a trained molecules run (``molecules.sample_molecules`` with its EMA
    model, 1000 DDPM steps), read back as chemistry: the share ``validity`` passing every check, the
    share with sound ``geometry`` (a ring or a chain with every length and angle in tolerance) and
    with sound ``types``, the ``ring_share`` among the valid ones, the ``coords`` and ``types``
    drawn (on the CPU) and the ``seconds`` it took."""
    from .molecules import molecule_checks, sample_molecules

    device = torch.device(device) if device is not None else _device(run.ema.model)
    start = time.perf_counter()
    coords, types = sample_molecules(run.ema.model, run.schedule, n, generator=_seeded(device, seed), device=device,
                                     prediction=run.config["prediction"])
    seconds = time.perf_counter() - start
    c = molecule_checks(coords, types)
    geometry = (c["ring"] | c["chain"]) & c["lengths"] & c["angles"]
    valid = geometry & c["types"]
    return {"validity": valid.float().mean().item(), "geometry": geometry.float().mean().item(),
            "types_ok": c["types"].float().mean().item(),
            "ring_share": c["ring"][valid].float().mean().item() if valid.any() else float("nan"),
            "valid": valid, "checks": c, "coords": coords, "types": types, "seconds": seconds}


def score_clips(run, n: int, *, steps: int, batch_size: int = 100, seed: int = 0, device=None) -> dict:
    """``n`` clips from a trained video run (``draw_samples`` of its EMA model, DDIM with eta = 1 and
    ``steps`` steps, x0_hat clamped to [-1, 1]) and their mean ``motion_error`` (``video.motion_error``,
    pixels); also the ``clips`` (on the CPU) and ``seconds_per_clip``."""
    from .video import motion_error

    device = torch.device(device) if device is not None else _device(run.ema.model)
    shape = (run.ema.model.channels, run.ema.model.frames, run.ema.model.size, run.ema.model.size)
    clips, seconds = draw_samples(run.ema.model, run.schedule, shape, n, "ddim", steps, eta=1.0, batch_size=batch_size,
                                  seed=seed, prediction=run.config["prediction"], device=device, progress=False,
                                  clip_x0=1.0)
    return {"motion_error": motion_error(clips).mean().item(), "clips": clips, "seconds_per_clip": seconds}
