"""Lesson 08: the KL autoencoder and the DDPM on its scaled latents (Rombach et al. 2022).

Also the latent space a latent checkpoint carries, for the CLI's ``sample``."""
from __future__ import annotations

from typing import NamedTuple

import torch

from .._checks import check_int
from .._files import atomic_write
from ..autoencoder import AutoEncoder, LatentSpace, latent_scale, vae_loss
from ..cache import Recipe, config, identity, train_config
from ..training import load_checkpoint, train
from .common import DDPMRun, fashion_images, random_batch, train_ddpm, training_seconds, unet_kwargs

__all__ = ["FASHION_AUTOENCODER", "FASHION_LATENT_DDPM", "AutoencoderRun", "LatentDDPMRun", "SCALE_BATCH",
           "latent_space_from_checkpoint"]


class AutoencoderRun(NamedTuple):
    """A trained autoencoder: the ``model``, its measured ``latent_scale``, the loss ``history``
    (dicts of loss, recon, kl per step), the ``config`` and the ``seconds`` its training took."""
    model: torch.nn.Module
    latent_scale: float
    history: list
    config: dict
    seconds: float

    @property
    def space(self):
        """The ``autoencoder.LatentSpace`` diffusion runs in: scale on the way in, unscale on the way out."""
        return LatentSpace(self.model, self.latent_scale)


SCALE_BATCH = 1000      # the latent scale is measured on this many training images, the first ones


def _train_fashion_autoencoder(cfg, path, device, progress, compile=False, checkpoint_every=500) -> AutoencoderRun:
    """The KL autoencoder trained with ``training.train`` on ``autoencoder.vae_loss``; after
    training, ``latent_scale`` is measured on the first ``SCALE_BATCH`` images and stored in the
    checkpoint, so every later load uses the same number."""
    torch.manual_seed(cfg["seed"])
    g = torch.Generator(device).manual_seed(cfg["seed"])
    images = fashion_images(cfg, device)
    model = AutoEncoder(in_channels=1, **unet_kwargs({"unet": cfg["ae"]})).to(device)

    latent = model.latent_shape(images.shape[1:])

    def next_batch(step):       # the global batch's images and z's noise (drawn in the order the loss drew it)
        x = random_batch(images, g, cfg["batch_size"])
        return x, torch.randn((len(x), *latent), generator=g, device=g.device, dtype=x.dtype).to(device)

    history = train(model, lambda m, b: vae_loss(m, b[0], cfg["kl_weight"], noise=b[1]), next_batch,
                    cfg["steps"], lr=cfg["lr"], generator=g, checkpoint=path,
                    checkpoint_every=checkpoint_every, config=identity(cfg), progress=progress, compile=compile,
                    desc=f"autoencoder on Fashion-MNIST ({cfg['scale']})")
    state = load_checkpoint(path)
    if "latent_scale" not in state:
        first = fashion_images({"subset": SCALE_BATCH, "image_size": cfg.get("image_size", 28)}, device)
        state["latent_scale"] = latent_scale(model, first,
                                             generator=torch.Generator(device).manual_seed(cfg["seed"]))
        with atomic_write(path) as f:
            torch.save(state, f)
    return AutoencoderRun(model.eval(), float(state["latent_scale"]), history, cfg, training_seconds(state))


def _check_image_size(cfg, overrides):
    if "image_size" in overrides:
        check_int("image_size", overrides["image_size"], low=4)
    return cfg


# 28x28 images -> 4x7x7 latents (f = 4), L1 reconstruction plus kl_weight times the per-pixel KL
# (autoencoder.vae_loss). image_size (optional, left out of the default config so its cache files stay
# what they were) trains on Fashion-MNIST upsampled to that size: lesson 08's 56x56 model at full scale.
FASHION_AUTOENCODER = Recipe(
    "fashion-autoencoder", train=_train_fashion_autoencoder, fixed={"dataset": "fashion-mnist"},
    optional={"image_size": 28}, configure=_check_image_size,
    settings={
        "tiny": {"ae": {"latent_channels": 4, "base_channels": 16, "channel_mults": [1, 2, 2]}, "kl_weight": 1e-3,
                 "batch_size": 32, "lr": 2e-3, "steps": 150, "subset": 2000},
        "small": {"ae": {"latent_channels": 4, "base_channels": 32, "channel_mults": [1, 2, 2]}, "kl_weight": 1e-3,
                  "batch_size": 64, "lr": 1e-3, "steps": 2000, "subset": None},
        "full": {"ae": {"latent_channels": 4, "base_channels": 64, "channel_mults": [1, 2, 2], "num_res_blocks": 2},
                 "kl_weight": 1e-3, "batch_size": 128, "lr": 5e-4, "steps": 20000, "subset": None},
    })


# A trained latent DDPM: a DDPMRun's fields, plus the ``space`` (``autoencoder.LatentSpace``) its
# U-Net denoises in; sample ``space.latent_shape((1, 28, 28))`` latents, then ``space.decode`` them.
LatentDDPMRun = NamedTuple("LatentDDPMRun", [*DDPMRun.__annotations__.items(), ("space", object)])


def _train_fashion_latent_ddpm(cfg, path, device, progress, compile=False, checkpoint_every=500) -> LatentDDPMRun:
    """DDPM on the autoencoder's scaled latents (Rombach et al. 2022, eq. 2). The whole data set is
    encoded once into q(z | x) (means and standard deviations, on the device); each batch draws
    fresh z ~ q(z | x) for its images, as LDM samples its latents, and multiplies by the scale.
    The finished checkpoint also holds the autoencoder and its scale, so it can be sampled alone."""
    ae_cfg = cfg["autoencoder"]
    ae_run = train_config(FASHION_AUTOENCODER, ae_cfg, device=device, progress=progress, compile=compile)
    images = fashion_images(cfg, device)
    with torch.no_grad():
        q = [ae_run.model.encode(b) for b in images.split(500)]
    mean, std = torch.cat([p.mean for p in q]), torch.cat([p.std for p in q])
    scale = ae_run.latent_scale if cfg["scale_latents"] else 1.0

    def draw_batch(g, bs):
        idx = torch.randint(0, len(mean), (bs,), generator=g, device=device)
        eps = torch.randn(mean[idx].shape, generator=g, device=device)
        return scale * (mean[idx] + std[idx] * eps)

    model, ema, s, history, state = train_ddpm(cfg, path, device, progress, compile, checkpoint_every,
                                               ae_cfg["ae"]["latent_channels"], draw_batch,
                                               f"latent DDPM on Fashion-MNIST ({cfg['scale']})")
    if "autoencoder" not in state:
        state["autoencoder"] = {"model": ae_run.model.state_dict(), "latent_scale": scale}
        with atomic_write(path) as f:
            torch.save(state, f)
    return LatentDDPMRun(model, ema, s, history, cfg, training_seconds(state), LatentSpace(ae_run.model, scale))


def _configure_latent_ddpm(cfg, overrides):
    """An image size given to the latent DDPM is its autoencoder's too, unless the override names one."""
    _check_image_size(cfg, overrides)
    if "image_size" in overrides and "autoencoder" not in overrides:
        cfg["autoencoder"] = config(FASHION_AUTOENCODER, cfg["scale"], image_size=overrides["image_size"])
    return cfg


# The same U-Net (per scale, the very layout of "fashion-ddpm", so the two differ only in the space
# they denoise), loss, EMA and trainer, on the scaled latents of the scale's "fashion-autoencoder"
# (whose config is part of this one's). scale_latents=False trains on the unscaled latents instead:
# lesson 08's "forgot the scale" ablation.
FASHION_LATENT_DDPM = Recipe(
    "fashion-latent-ddpm", train=_train_fashion_latent_ddpm, needs={"autoencoder": FASHION_AUTOENCODER},
    fixed={"dataset": "fashion-mnist", "T": 1000, "schedule": "linear"},
    optional={"image_size": 28}, configure=_configure_latent_ddpm,
    settings={
        "tiny": {"unet": {"base_channels": 16, "channel_mults": [1, 2], "attention_levels": [1]},
                 "batch_size": 32, "lr": 2e-3, "steps": 150, "ema_decay": 0.99, "ema_warmup": 10, "subset": 2000,
                 "prediction": "eps", "scale_latents": True},
        "small": {"unet": {"base_channels": 16, "channel_mults": [1, 2, 4, 4], "attention_levels": [2, 3]},
                  "batch_size": 64, "lr": 1e-3, "steps": 3000, "ema_decay": 0.999, "ema_warmup": 150, "subset": None,
                  "prediction": "eps", "scale_latents": True},
        "full": {"unet": {"base_channels": 64, "channel_mults": [1, 2, 2], "num_res_blocks": 2,
                          "attention_levels": [1, 2], "dropout": 0.1},
                 "batch_size": 128, "lr": 2e-4, "steps": 40000, "ema_decay": 0.9999, "ema_warmup": 2000,
                 "subset": None, "prediction": "eps", "scale_latents": True},
    })


def latent_space_from_checkpoint(path, device="cpu"):
    """The ``autoencoder.LatentSpace`` (autoencoder and latent scale) a finished "fashion-latent-ddpm"
    checkpoint carries, or None for a pixel model's checkpoint."""
    state = load_checkpoint(path, map_location=device)
    if "autoencoder" not in state["config"]:
        return None
    if "autoencoder" not in state:
        raise ValueError(f"{path} is a latent model whose training has not finished (no autoencoder stored yet)")
    ae = AutoEncoder(in_channels=1, **unet_kwargs({"unet": state["config"]["autoencoder"]["ae"]}))
    ae.load_state_dict(state["autoencoder"]["model"])
    return LatentSpace(ae.to(device).eval(), float(state["autoencoder"]["latent_scale"]))
