"""Lesson 10: the GAN baselines, the class-conditional DDPM, and how stable each is to train.

The DCGAN and its class-conditional form, the class-conditional DDPM they are compared with, the
stability grid (learning rates x seeds), the runs at the library's default optimiser settings, and
which settings needed tuning."""
from __future__ import annotations

import copy
import math
import statistics
from typing import NamedTuple

import torch

from .._checks import check_choice, check_float
from .._files import atomic_write
from ..cache import Recipe, config, identity, load_or_train
from ..data import fashion_mnist
from ..evaluation import features
from ..gan import GAN, collapse_stats, gan_step
from ..guidance import drop_condition
from ..metrics import frechet_distance
from ..training import load_checkpoint, train
from ..unet import UNet
from .common import (ConditionalDDPMRun, fashion_images, fashion_labels, train_ddpm, training_seconds,
                     unet_kwargs)
from .generating_images import FASHION_CLASSIFIER, FASHION_DDPM

__all__ = ["FASHION_GAN", "FASHION_COND_GAN", "FASHION_COND_DDPM", "GANRun", "STABILITY", "LIBRARY_DEFAULTS",
           "stability_grid", "default_runs", "settings_tuned"]


class GANRun(NamedTuple):
    """A trained GAN: the ``model`` (``gan.GAN``; sample with ``model.sample``), the loss ``history``
    (dicts per step: d, g, d_real, d_fake), the collapse ``tracking`` (one dict per check: step,
    entropy, distance, distance_ratio, collapsed, the FID of the checked samples against as many
    test images, the training seconds so far, and a ``snapshot`` of 16 images from fixed noise),
    the ``config`` and the ``seconds`` its training took."""
    model: torch.nn.Module
    history: list
    tracking: list
    config: dict
    seconds: float


def _train_fashion_gan(cfg, path, device, progress, compile=False, checkpoint_every=500) -> GANRun:
    """DCGAN on Fashion-MNIST with ``gan.gan_step``, trained in chunks of ``track_every`` steps: after
    each, ``track_samples`` images from fixed noise (labels cycling through the classes for the
    conditional GAN) are scored by the scale's feature classifier (``gan.collapse_stats`` and FID). The
    checks live next to the checkpoint (``*.tracking.pt``), so a resumed run keeps the earlier ones."""
    torch.manual_seed(cfg["seed"])
    g = torch.Generator(device).manual_seed(cfg["seed"])
    k = cfg.get("num_classes")
    model = GAN(cfg["z_dim"], cfg["width"], 1, k).to(device)
    side = path.with_name(path.stem + ".tracking.pt")
    own = identity(cfg)                 # a run may be resumed to more steps
    tracking = []
    if side.exists():
        saved = torch.load(side, map_location="cpu", weights_only=True)
        tracking = saved["tracking"] if saved.get("config") == own else []
    ends = list(range(cfg["track_every"], cfg["steps"], cfg["track_every"])) + [cfg["steps"]]
    if path.exists() and {t["step"] for t in tracking} >= set(ends):      # finished and checked: just load it
        state = load_checkpoint(path, map_location=device)
        if state.get("config") == own and int(state["step"]) == cfg["steps"]:
            model.load_state_dict(state["model"])
            return GANRun(model.eval(), list(state["history"]), tracking, cfg, training_seconds(state))
    images = fashion_images(cfg, device)
    labels = fashion_labels(cfg, device) if k else None

    def optimizers(m):          # fused on CUDA, as training.train's AdamW: one kernel for all parameters
        return {part: torch.optim.Adam(getattr(m, net).parameters(), cfg["lr"], betas=(cfg["beta1"], 0.999),
                                       fused=device.type == "cuda")
                for part, net in (("g", "generator"), ("d", "discriminator"))}

    def draw(step):
        idx = torch.randint(0, len(images), (cfg["batch_size"],), generator=g, device=device)
        return (images[idx], labels[idx]) if k else images[idx]

    judge = load_or_train(FASHION_CLASSIFIER, cfg["scale"], device=device, progress=progress)
    real = features(judge, fashion_mnist("test")[0][:cfg["track_samples"]])     # fashion_mnist_evaluator's "real"
    fixed = torch.Generator().manual_seed(cfg["seed"] + 1)
    z_track = torch.randn(cfg["track_samples"], cfg["z_dim"], generator=fixed).to(device)
    y_track = (torch.arange(cfg["track_samples"]) % k).to(device) if k else None
    reference = images[:cfg["track_samples"]].cpu()
    if k:   # real images with the tracked labels, in the same order: collapse_stats pairs like with like
        by_class = [torch.nonzero(labels == c).flatten() for c in range(k)]
        reference = images[torch.stack([by_class[c][i // k] for i, c in enumerate(y_track.tolist())])].cpu()
    step_fn = gan_step(cfg["loss"], generator=g)
    for end in ends:
        history = train(model, None, draw, end, optimizer=optimizers, step_fn=step_fn, generator=g,
                        checkpoint=path, checkpoint_every=checkpoint_every, config=own, progress=progress,
                        compile=compile, desc=f"{'conditional ' if k else ''}GAN on Fashion-MNIST ({cfg['scale']})")
        if any(t["step"] == end for t in tracking) or len(history) > end:   # done, or the weights are past it
            continue
        with torch.no_grad():
            samples = torch.cat([model.generator(z, None if y_track is None else y_track[i:i + 500])
                                 for i, z in zip(range(0, len(z_track), 500), z_track.split(500))]).cpu()
        tracking.append({"step": end, **collapse_stats(samples, judge, 10, reference=reference),
                         "fid": frechet_distance(features(judge, samples.clamp(-1, 1)), real),
                         "seconds": training_seconds(load_checkpoint(path)), "snapshot": samples[:16]})
        with atomic_write(side) as f:
            torch.save({"config": own, "tracking": tracking}, f)
    return GANRun(model.eval(), history, tracking, cfg, training_seconds(load_checkpoint(path)))


# Radford et al. 2016's Adam (lr 2e-4, beta1 0.5), the non-saturating loss, z of 100 dimensions. At small,
# 9,000 steps: 10 minutes on a 2-core CPU against the DDPM's 13, past where the tracked FID stopped
# falling (about step 7,500; 3,000 steps left it still falling). Every ``track_every`` steps
# ``track_samples`` images from fixed noise (as many as lessons 06-10 score per FID) are scored for mode
# collapse (gan.collapse_stats) and FID (the scale's FASHION_CLASSIFIER, at its own config), and a few kept
# as snapshots.
FASHION_GAN = Recipe(
    "fashion-gan", train=_train_fashion_gan, fixed={"dataset": "fashion-mnist"},
    settings={
        "tiny": {"z_dim": 100, "width": 16, "batch_size": 32, "lr": 2e-4, "beta1": 0.5, "loss": "nonsaturating",
                 "steps": 150, "subset": 2000, "track_every": 75, "track_samples": 64},
        "small": {"z_dim": 100, "width": 32, "batch_size": 64, "lr": 2e-4, "beta1": 0.5, "loss": "nonsaturating",
                  "steps": 9000, "subset": None, "track_every": 500, "track_samples": 200},
        "full": {"z_dim": 100, "width": 64, "batch_size": 128, "lr": 2e-4, "beta1": 0.5, "loss": "nonsaturating",
                 "steps": 20000, "subset": None, "track_every": 2000, "track_samples": 5000},
    })
# The class-conditional DCGAN: "fashion-gan"'s settings, labels into G (concatenated to z) and D (one-hot
# label planes concatenated to the image).
FASHION_COND_GAN = Recipe("fashion-cond-gan", train=_train_fashion_gan,
                          fixed={"dataset": "fashion-mnist", "num_classes": 10},
                          settings=copy.deepcopy(FASHION_GAN.settings))


def _train_fashion_cond_ddpm(cfg, path, device, progress, compile=False, checkpoint_every=500):
    """The class-conditional pixel DDPM: each batch's labels, each replaced by "no label" (id
    ``num_classes``) with probability ``cond_dropout`` (``guidance.drop_condition``)."""
    images = fashion_images(cfg, device)
    labels = fashion_labels(cfg, device)
    k = cfg["num_classes"]

    def draw_batch(g, bs):
        idx = torch.randint(0, len(images), (bs,), generator=g, device=device)
        return images[idx], {"y": drop_condition(labels[idx], cfg["cond_dropout"], g, null=k)}

    model, ema, s, history, state = train_ddpm(
        cfg, path, device, progress, compile, checkpoint_every, 1, draw_batch,
        f"class-conditional DDPM on Fashion-MNIST ({cfg['scale']})",
        make_model=lambda: UNet(in_channels=1, num_classes=k, **unet_kwargs(cfg)))
    return ConditionalDDPMRun(model, ema, s, history, cfg, training_seconds(state), {"y": torch.tensor([k], device=device)},
                              None)


# "fashion-ddpm"'s settings and U-Net plus a label embedding (10 classes + "no label"), the label dropped to
# "no label" 10% of the time (classifier-free guidance, Ho & Salimans 2022, p_uncond = 0.1).
FASHION_COND_DDPM = Recipe(
    "fashion-cond-ddpm", train=_train_fashion_cond_ddpm,
    fixed={**FASHION_DDPM.fixed, "num_classes": 10},
    settings={scale: {**copy.deepcopy(settings), "cond_dropout": 0.1} for scale, settings in FASHION_DDPM.settings.items()})

# The stability grid: each model at its recipe's learning rate times 1/4, 1 and 4, with three seeds, for a
# short training budget per scale (about the same wall-clock for both models on a CPU).
STABILITY = {"seeds": (0, 1, 2), "lr_factors": (0.25, 1.0, 4.0),
             "steps": {"fashion-gan": {"tiny": 10, "small": 1000, "full": 5000},
                       "fashion-ddpm": {"tiny": 10, "small": 300, "full": 5000}}}
_GRID = {"fashion-gan": FASHION_GAN, "fashion-ddpm": FASHION_DDPM}
# The optimiser settings a recipe would have with no tuning at all: torch.optim.Adam's and AdamW's
# defaults (lr 1e-3, betas (0.9, 0.999)). Lesson 10 trains each model with one of them at a time put
# back, for the stability grid's budget and seeds, to measure which of its recipe's changes were needed.
LIBRARY_DEFAULTS = {"lr": 1e-3, "beta1": 0.9}


def stability_grid(name: str, scale: str | None = None) -> list[dict]:
    """The overrides of every run in ``STABILITY``'s grid for recipe ``name`` ("fashion-gan" or
    "fashion-ddpm"): ``recipes.load_or_train(name, scale, **overrides)`` trains or loads each."""
    cfg = config(_GRID[check_choice("name", name, _GRID)], scale)
    steps = STABILITY["steps"][name][cfg["scale"]]
    extra = {"track_every": steps} if name == "fashion-gan" else {}
    return [{"lr": cfg["lr"] * f, "seed": seed, "steps": steps, **extra}
            for f in STABILITY["lr_factors"] for seed in STABILITY["seeds"]]


def default_runs(name: str, scale: str | None = None) -> dict:
    """For each setting of ``LIBRARY_DEFAULTS`` that recipe ``name`` moves away from its default:
    the grid's seeds and budget (``stability_grid``) with that one setting put back to its default
    and the others as the recipe has them. {setting: [overrides, ...]}; empty when the recipe moves
    none (then nothing was tuned that these runs could test)."""
    cfg = config(_GRID[check_choice("name", name, _GRID)], scale)
    base = [o for o in stability_grid(name, scale) if o["lr"] == cfg["lr"]]       # the recipe's own lr
    return {k: [{**o, k: v} for o in base] for k, v in LIBRARY_DEFAULTS.items() if k in cfg and cfg[k] != v}


def settings_tuned(config: dict, defaults: dict, runs: list[dict], noise: float = 0.0) -> dict:
    """Which optimiser settings a recipe needed to tune (lesson 10): of those its ``config`` moves away
    from ``defaults`` (``LIBRARY_DEFAULTS``), each counts as needed when the runs with that
    one setting put back to its default (``default_runs``) did worse than the runs of the
    recipe itself: more of them failed, or their median FID (of the runs that did not fail) is
    higher by more than the fraction ``noise``.

    :param config: the recipe's config (``recipes.config(name, scale)``); its "lr" picks its own runs.
    :param runs: rows of this recipe's runs, each with "setting" ("recipe" for ``stability_grid``
        runs, "default <name>" for ``default_runs``), "lr", "failed" (bool) and "fid".
    :returns: ``moved`` {setting: (recipe's value, default)}; ``recipe`` and, per moved setting,
        ``defaults[setting]``: the ``failed`` count, the ``runs`` and the ``median_fid`` (None when
        every run failed), the latter also ``needed`` (bool); ``needed``: how many were needed.
    """
    noise = check_float("noise", noise, low=0.0)
    for arg, value in (("config", config), ("defaults", defaults)):
        if not isinstance(value, dict):
            raise TypeError(f"{arg} must be a dict, got {type(value).__name__}")
    moved = {k: (config[k], v) for k, v in defaults.items() if k in config and config[k] != v}

    def summary(rows, what):
        if not rows:
            raise ValueError(f"runs holds no {what} runs of {config.get('recipe', 'this recipe')!r}: give the rows "
                             f"of stability_grid and default_runs")
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

