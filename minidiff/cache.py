"""The model and sample cache: every trained model is trained once, whoever asks for it.

A ``Recipe`` says how to make one trained model: its settings at each run scale, the function
that trains it, and the recipes whose runs are part of it. Whoever wants the model passes the
recipe to ``load_or_train``: the *full* config (the scale's settings, the seed and any override)
is hashed into a file name in the user cache (``$MINIDIFF_CACHE``, else ``~/.cache/minidiff``,
folder ``models``). If that file holds a finished run, it is loaded; if it holds an interrupted
one, training resumes from it exactly; otherwise the model is trained and the file written
(atomically, every few hundred steps). A file is never served for another config: the name is
the config's hash, and ``training.train`` checks the config inside it too.

So no lesson reads a file another lesson wrote, yet a model two lessons share is trained once;
deleting the cache changes how long a lesson takes, never what it shows. ``load_or_sample`` does
the same for the slow 1000-step samples of such a model (folder ``samples``), keyed by the model's
config and every sampling setting, so two lessons that score the same model score the same images.

This module knows no recipe by name: the recipes live with their chapters
(``minidiff/experiments``), and ``recipes.RECIPES`` names them all.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import pathlib
from typing import Callable, NamedTuple

import torch

from ._checks import check_choice, check_int
from ._files import atomic_write
from .data import cache_dir
from .device import SCALES, get_device, get_scale
from .evaluation import draw_samples
from .samplers import SAMPLERS

__all__ = ["Recipe", "config", "cache_path", "load_or_train", "train_config", "Samples", "load_or_sample", "identity"]


@dataclasses.dataclass(frozen=True, eq=False)
class Recipe:
    """How to make one trained model.

    :param name: the cache files' prefix (``fashion-ddpm``); part of the config.
    :param settings: ``{scale: {setting: value}}`` for every run scale (tiny, small, full).
    :param train: ``train(cfg, path, device, progress, compile=False, checkpoint_every=500)``: trains
        (or resumes, or loads) the run of config ``cfg`` in the file ``path`` and returns it.
    :param fixed: settings equal at every scale (the data set, T, the schedule).
    :param needs: ``{key: recipe}``: recipes whose run is part of this one (the autoencoder of a
        latent DDPM); the needed recipe's config, at the same scale, is this config's ``key``.
    :param optional: ``{setting: default}``: settings an override may give that the default config
        leaves out, so the default configs (and their cache files) stay what they were.
    :param configure: ``configure(cfg, overrides) -> cfg``, the last word on a config after the
        overrides: checks that span settings, or a setting passed on to a needed recipe.
    :param image_shape: (C, H, W) of what the model generates unconditionally, for ``load_or_sample``.
    """
    name: str
    settings: dict
    train: Callable
    fixed: dict = dataclasses.field(default_factory=dict)
    needs: dict = dataclasses.field(default_factory=dict)
    optional: dict = dataclasses.field(default_factory=dict)
    configure: Callable | None = None
    image_shape: tuple | None = None

    def __post_init__(self):
        if set(self.settings) != set(SCALES):
            raise ValueError(f"recipe {self.name!r} must give settings for every scale {SCALES}, "
                             f"got {sorted(self.settings)}")

    def __repr__(self):
        return f"Recipe({self.name!r})"


def _check_recipe(recipe) -> Recipe:
    if not isinstance(recipe, Recipe):
        raise TypeError(f"recipe must be a cache.Recipe (recipes.RECIPES names them all), got {type(recipe).__name__}")
    return recipe


def config(recipe: Recipe, scale: str | None = None, **overrides) -> dict:
    """The full config of ``recipe`` at ``scale`` (default: ``$MINIDIFF_SCALE``) with ``overrides``
    (any of the scale's keys, or ``seed``, default 0): everything that decides what training produces,
    the configs of the recipes it needs included."""
    recipe = _check_recipe(recipe)
    scale = get_scale(scale)
    cfg = {"recipe": recipe.name, "scale": scale, "seed": 0, **recipe.fixed, **copy.deepcopy(recipe.settings[scale])}
    for key, needed in recipe.needs.items():
        cfg[key] = config(needed, scale)
    known = set(cfg) | set(recipe.optional)
    unknown = sorted((set(overrides) - known) | ({"recipe", "scale"} & set(overrides)))
    if unknown:
        allowed = sorted(known - {"recipe", "scale"})
        raise ValueError(f"recipe {recipe.name!r} has no setting {', '.join(unknown)}; allowed: {', '.join(allowed)}")
    cfg.update(copy.deepcopy(overrides))
    return recipe.configure(cfg, overrides) if recipe.configure else cfg


def identity(cfg: dict) -> dict:
    """What a checkpoint of ``cfg`` must match to be resumed: all of it but ``steps``, so a finished
    run can be trained on to more steps."""
    return {k: v for k, v in cfg.items() if k != "steps"}


def cache_path(cfg: dict) -> pathlib.Path:
    """Where the run of ``cfg`` lives in the user cache: its name carries a hash of the whole config."""
    return cache_dir() / "models" / f"{cfg['recipe']}-{cfg['scale']}-{_digest(cfg)}.pt"


def _digest(cfg: dict) -> str:
    return hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:16]


def load_or_train(recipe: Recipe, scale: str | None = None, *, device=None, progress: bool = True, checkpoint=None,
                  compile: bool | None = None, checkpoint_every: int = 500, **overrides):
    """The trained run of ``recipe`` at ``scale`` (default: ``$MINIDIFF_SCALE``), from the cache when
    a run of the same full config finished before, resumed when one was interrupted, else trained now.

    :param device: where to train and return the model (default ``device.get_device()``).
    :param checkpoint: a file to use instead of the cache (the CLI's ``--checkpoint``).
    :param compile: train a ``torch.compile``d model (not part of the config); default: at ``full``
        scale on CUDA, where the full recipes run long enough to repay the compile.
    :param checkpoint_every: steps between the files an interrupted run resumes from.
    :param overrides: settings of the recipe to change (``steps=4500``, ``prediction="v"``, ``seed=1``).
    :returns: what the recipe's trainer returns: a ``DDPMRun`` or a kin of it for a diffusion model,
        an ``AutoencoderRun``, a ``CLIPRun``, a ``GANRun``, or a classifier.
    """
    return train_config(recipe, config(recipe, scale, **overrides), device=device, progress=progress,
                        checkpoint=checkpoint, compile=compile, checkpoint_every=checkpoint_every)


def train_config(recipe: Recipe, cfg: dict, *, device=None, progress: bool = True, checkpoint=None,
                 compile: bool | None = None, checkpoint_every: int = 500):
    """``load_or_train`` for a full config made already: a trainer uses it for the run of a recipe
    it needs, whose config is part of its own (``Recipe.needs``)."""
    device = torch.device(device) if device is not None else get_device()
    path = pathlib.Path(checkpoint) if checkpoint is not None else cache_path(cfg)
    checkpoint_every = check_int("checkpoint_every", checkpoint_every, low=1)
    if compile is None:
        compile = cfg["scale"] == "full" and device.type == "cuda"
    return recipe.train(cfg, path, device, progress, compile=compile, checkpoint_every=checkpoint_every)


class Samples(NamedTuple):
    """Images drawn from a cached model: ``images`` (on the CPU), the ``seconds_per_image`` the
    sampling took when it ran (also when they now came from the cache) and the ``config`` (the
    model's and the sampling's settings) they are keyed by."""
    images: torch.Tensor
    seconds_per_image: float
    config: dict


def load_or_sample(recipe: Recipe, scale: str | None = None, *, n: int, weights: str = "ema", sampler: str = "ddpm",
                   steps: int = 1000, eta: float = 0.0, batch_size: int = 100, seed: int = 0,
                   clip_x0: float | None = 1.0, device=None, progress: bool = True,
                   overrides: dict | None = None) -> Samples:
    """``n`` samples of ``recipe``'s trained model, drawn once and then served from the cache.

    The images are ``evaluation.draw_samples`` of the model ``load_or_train(recipe, scale, **overrides)``
    returns (``overrides``: a dict of recipe settings, such as ``{"steps": 4500}``; its ``weights``:
    "ema" or "raw"), so they are exactly what ``evaluation.compare_samplers`` draws with the same
    ``sampler``, ``steps``, ``eta``, ``n``, ``batch_size`` and ``seed``. The key is the model's full
    config, these settings and the device type (a GPU samples in bfloat16, so its images differ from
    a CPU's): two lessons asking for the same samples get the same images, and the second one pays
    nothing for the 1000-step sampler.
    """
    recipe = _check_recipe(recipe)
    if recipe.image_shape is None:
        raise ValueError(f"recipe {recipe.name!r} gives no image_shape: load_or_sample draws unconditional "
                         f"images, so it takes a recipe of an unconditional image model (such as fashion-ddpm)")
    check_choice("weights", weights, ("ema", "raw"))
    check_choice("sampler", sampler, SAMPLERS)
    device = torch.device(device) if device is not None else get_device()
    overrides = overrides or {}
    cfg = {"model": config(recipe, scale, **overrides), "weights": weights, "sampler": sampler, "steps": steps,
           "eta": float(eta), "n": check_int("n", n, low=1), "batch_size": check_int("batch_size", batch_size, low=1),
           "seed": check_int("seed", seed, low=0), "clip_x0": clip_x0, "device": device.type}
    path = cache_dir() / "samples" / f"{recipe.name}-{cfg['model']['scale']}-{_digest(cfg)}.pt"
    if path.exists():
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state["config"] != cfg:
            raise ValueError(f"{path} holds samples of another config; delete it")
        return Samples(state["images"], state["seconds_per_image"], cfg)
    run = load_or_train(recipe, scale, device=device, progress=progress, **overrides)
    model = run.ema.model if weights == "ema" else run.model
    images, seconds = draw_samples(model, run.schedule, recipe.image_shape, n, sampler, steps, eta,
                                   batch_size=batch_size, seed=seed, prediction=run.config["prediction"],
                                   device=device, progress=progress, clip_x0=clip_x0)
    with atomic_write(path) as f:
        torch.save({"images": images, "seconds_per_image": seconds, "config": cfg}, f)
    return Samples(images, seconds, cfg)
