"""Lessons 06-07: the Fashion-MNIST DDPM and the feature classifier behind every FID.

The DDPM is also the CLI's ``train``; ``model_from_checkpoint`` rebuilds it for the CLI's ``sample``."""
from __future__ import annotations

import torch

from .. import data, schedules
from ..cache import Recipe
from ..evaluation import train_classifier
from ..training import load_checkpoint
from ..unet import UNet
from .common import (DDPMRun, fashion_images, load_classifier, random_batch, save_classifier, train_ddpm,
                     training_seconds, unet_kwargs)

__all__ = ["FASHION_DDPM", "FASHION_CLASSIFIER", "model_from_checkpoint"]


def _train_fashion_ddpm(cfg, path, device, progress, compile=False, checkpoint_every=500) -> DDPMRun:
    """The pixel DDPM: the data set lives on the training device and batches are indexed there."""
    images = fashion_images(cfg, device)
    model, ema, s, history, state = train_ddpm(cfg, path, device, progress, compile, checkpoint_every, 1,
                                               lambda g, bs: random_batch(images, g, bs),
                                               f"DDPM on Fashion-MNIST ({cfg['scale']})")
    return DDPMRun(model, ema, s, history, cfg, training_seconds(state))


# A U-Net predicting eps on DDPM's linear schedule (T = 1000). small: 16 channels at 28x28 and most
# parameters at 7x7 and 4x4, where a convolution costs 16-49x less per parameter. ema_warmup is 5% of
# the steps (7% at tiny); after it the EMA averages over ~1 / (1 - ema_decay) steps: 100, 1,000, 10,000.
FASHION_DDPM = Recipe(
    "fashion-ddpm", train=_train_fashion_ddpm, image_shape=(1, 28, 28),
    fixed={"dataset": "fashion-mnist", "T": 1000, "schedule": "linear"},
    settings={
        "tiny": {"unet": {"base_channels": 16, "channel_mults": [1, 2], "attention_levels": [1]},
                 "batch_size": 32, "lr": 2e-3, "steps": 150, "ema_decay": 0.99, "ema_warmup": 10, "subset": 2000,
                 "prediction": "eps"},
        "small": {"unet": {"base_channels": 16, "channel_mults": [1, 2, 4, 4], "attention_levels": [2, 3]},
                  "batch_size": 64, "lr": 1e-3, "steps": 3000, "ema_decay": 0.999, "ema_warmup": 150, "subset": None,
                  "prediction": "eps"},
        "full": {"unet": {"base_channels": 64, "channel_mults": [1, 2, 2], "num_res_blocks": 2,
                          "attention_levels": [1, 2], "dropout": 0.1},
                 "batch_size": 128, "lr": 2e-4, "steps": 40000, "ema_decay": 0.9999, "ema_warmup": 2000,
                 "subset": None, "prediction": "eps"},
    })


def _train_fashion_classifier(cfg, path, device, progress, compile=False, checkpoint_every=None):
    """The feature classifier: loaded from ``path`` if a finished run of this config is there, else
    trained (a few minutes at most, so an interrupted run starts again) and saved."""
    if path.exists():
        return load_classifier(cfg, path, device)
    torch.manual_seed(cfg["seed"])
    x, y = data.fashion_mnist("train")
    model = train_classifier(x, y, cfg["steps"], batch_size=cfg["batch_size"], lr=cfg["lr"],
                             generator=torch.Generator().manual_seed(cfg["seed"]), device=device, progress=progress)
    return save_classifier(model, cfg, path)


# The feature classifier behind every FID (evaluation.FashionClassifier), trained on the Fashion-MNIST
# train split with Adam, one-cycle learning rate and random flips.
FASHION_CLASSIFIER = Recipe(
    "fashion-classifier", train=_train_fashion_classifier, fixed={"dataset": "fashion-mnist"},
    settings={"tiny": {"steps": 100, "batch_size": 128, "lr": 2e-3},
              "small": {"steps": 1500, "batch_size": 128, "lr": 2e-3},
              "full": {"steps": 3000, "batch_size": 128, "lr": 2e-3}})


def model_from_checkpoint(path, use_ema: bool = True, device="cpu"):
    """Rebuild the U-Net and schedule a "fashion-ddpm" or "fashion-latent-ddpm" checkpoint
    describes: ``(model, schedule, config)``. A latent model denoises latents: decode its samples
    with ``latent_diffusion.latent_space_from_checkpoint``."""
    state = load_checkpoint(path, map_location=device)
    cfg = state["config"]
    in_channels = cfg["autoencoder"]["ae"]["latent_channels"] if "autoencoder" in cfg else 1
    model = UNet(in_channels=in_channels, **unet_kwargs(cfg))
    weights = state["ema"]["model"] if use_ema and state.get("ema") else state["model"]
    model.load_state_dict(weights)
    return model.to(device).eval(), schedules.make(cfg["schedule"], T=cfg["T"]), cfg
