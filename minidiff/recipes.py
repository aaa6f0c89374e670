"""Every model the lessons train, by name: the one table at the top of the house.

Each recipe lives with its chapter (``minidiff/experiments``: its settings per scale and its
trainer) and is served by the cache (``cache.load_or_train``), which knows no recipe by name. This
module names them all, so that a lesson, a benchmark or the CLI can say
``recipes.load_or_train("fashion-ddpm")``; nothing in the package imports it but the CLI.

``at_batch`` moves a recipe's settings to another batch size on the same training images.
"""
from __future__ import annotations

import copy

from . import cache
from ._checks import check_choice, check_int
from .experiments import beyond_images, gans_vs_diffusion, generating_images, latent_diffusion, text_conditioning

__all__ = ["RECIPES", "recipe", "config", "load_or_train", "load_or_sample", "at_batch"]

RECIPES = {r.name: r for r in (
    generating_images.FASHION_DDPM, generating_images.FASHION_CLASSIFIER,            # lessons 06-07
    latent_diffusion.FASHION_AUTOENCODER, latent_diffusion.FASHION_LATENT_DDPM,      # lesson 08
    text_conditioning.SHAPES_CLIP, text_conditioning.SHAPES_TEXT_DDPM,               # lesson 09
    text_conditioning.SHAPES_CLASSIFIER,
    gans_vs_diffusion.FASHION_GAN, gans_vs_diffusion.FASHION_COND_GAN,               # lesson 10
    gans_vs_diffusion.FASHION_COND_DDPM,
    beyond_images.MOLECULES_DDPM, beyond_images.VIDEO_DDPM,                          # lesson 12
)}


def recipe(name: str) -> cache.Recipe:
    """The recipe called ``name``."""
    return RECIPES[check_choice("recipe", name, RECIPES)]


def config(name: str, scale: str | None = None, **overrides) -> dict:
    """``cache.config`` of recipe ``name``: its full config at ``scale`` with ``overrides``."""
    return cache.config(recipe(name), scale, **overrides)


def load_or_train(name: str, scale: str | None = None, **kwargs):
    """``cache.load_or_train`` of recipe ``name``: its trained run, from the cache or trained now."""
    return cache.load_or_train(recipe(name), scale, **kwargs)


def load_or_sample(name: str = "fashion-ddpm", scale: str | None = None, **kwargs) -> cache.Samples:
    """``cache.load_or_sample`` of recipe ``name``: its samples, from the cache or drawn now."""
    return cache.load_or_sample(recipe(name), scale, **kwargs)


def at_batch(settings: dict, batch_size: int, lr: float | None = None, lr_power: float = 0.5) -> dict:
    """``settings`` (a recipe's, at one scale) moved to another global batch on the same training
    images: steps x b0 / b; the EMA's horizon kept in images (decay ** (b / b0), the warm-up x b0 / b);
    the learning rate x (b / b0) ** lr_power (the square-root rule for Adam, Malladi et al. 2022), or
    ``lr`` when given.
    ``benchmarks/full_scale.py --sweep`` trains such moves to compare them (measured so far on a CPU
    at small: 4x the batch on the same images lost, whatever the learning rate; see the README)."""
    batch_size = check_int("batch_size", batch_size, low=1)
    ratio = batch_size / settings["batch_size"]
    out = {**copy.deepcopy(settings), "batch_size": batch_size,
           "lr": lr if lr is not None else settings["lr"] * ratio ** lr_power,
           "steps": max(1, round(settings["steps"] / ratio))}
    if "ema_decay" in settings:
        out["ema_decay"] = settings["ema_decay"] ** ratio
        out["ema_warmup"] = round(settings["ema_warmup"] / ratio)
    return out
