"""What the chapters' recipes share: the DDPM trainer and the runs it returns.

The trainer is Ho et al. 2020's Algorithm 1 through ``training.train``; beside it, Fashion-MNIST on
the device and the file a trained classifier is kept in."""
from __future__ import annotations

from typing import NamedTuple

import torch

from .. import data, loss, schedules
from .._files import atomic_write
from ..cache import identity
from ..evaluation import FashionClassifier
from ..forward import randn_like
from ..training import EMA, load_checkpoint, train
from ..unet import UNet

__all__ = ["DDPMRun", "ConditionalDDPMRun", "unet_kwargs", "train_ddpm", "fashion_images", "fashion_labels",
           "random_batch", "training_seconds", "load_classifier", "save_classifier", "seeded"]


class DDPMRun(NamedTuple):
    """A trained DDPM: the raw ``model``, its ``ema`` (sample with ``ema.model``), the ``schedule``,
    the loss ``history``, the ``config`` it was trained with and the wall-clock ``seconds`` its
    training took when it was trained (also when it now came from the cache)."""
    model: torch.nn.Module
    ema: object
    schedule: object
    history: list
    config: dict
    seconds: float


# A trained conditional DDPM: a DDPMRun's fields, plus ``uncond`` (the "no condition" keywords for
# ``guidance.cfg``) and the ``tokenizer`` its prompts go through (None without text).
ConditionalDDPMRun = NamedTuple("ConditionalDDPMRun",
                                [*DDPMRun.__annotations__.items(), ("uncond", dict), ("tokenizer", object)])


def unet_kwargs(cfg: dict) -> dict:
    """The ``UNet`` keyword arguments a config's "unet" names (its lists as tuples)."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in cfg["unet"].items()}


def training_seconds(state: dict) -> float:
    """The training seconds a checkpoint recorded (nan if it recorded none)."""
    return float(state.get("seconds", "nan"))


def seeded(device, seed: int) -> torch.Generator:
    """A generator on ``device`` seeded with ``seed``."""
    return torch.Generator(device).manual_seed(seed)


def train_ddpm(cfg, path, device, progress, compile, checkpoint_every, in_channels, draw_batch, desc,
               make_model=None, noise=None):
    """DDPM Algorithm 1 with ``training.train`` on whatever ``draw_batch(g, batch_size)`` returns
    (images or latents on ``device``, or ``(x0, cond)`` with ``cond`` the model's condition keywords);
    returns the model, its EMA, the schedule, the history and the finished checkpoint's contents.
    The model is ``UNet(in_channels, **cfg["unet"])``, or ``make_model()`` for any other; ``noise(x0, g)``
    draws the noise when N(0, I) is not the one (molecules centre it). On a CPU every draw (batch, t,
    noise) comes from one CPU generator seeded with the config's seed, so a run is reproducible bit for
    bit; on an accelerator the generator lives on that device, so nothing is drawn on the CPU and copied over."""
    torch.manual_seed(cfg["seed"])
    g = seeded(device, cfg["seed"])
    s = schedules.make(cfg["schedule"], T=cfg["T"])
    model = (make_model() if make_model else UNet(in_channels=in_channels, **unet_kwargs(cfg))).to(device)
    ema = EMA(model, cfg["ema_decay"], warmup=cfg["ema_warmup"])

    def next_batch(step):
        """The global batch with its t and noise, drawn on g in the order diffusion_loss draws them (so
        a run is what it was when the loss drew them), for ``distributed.shard`` to split under torchrun."""
        batch = draw_batch(g, cfg["batch_size"])
        x0, cond = batch if isinstance(batch, tuple) else (batch, {})
        if noise is not None:
            eps = noise(x0, g)
            t = loss.draw_timesteps(s.T, len(x0), g, x0.device)
        else:
            t = loss.draw_timesteps(s.T, len(x0), g, x0.device)
            eps = randn_like(x0, g)
        return x0, cond, t, eps

    def loss_fn(m, batch):
        x0, cond, t, eps = batch
        return loss.diffusion_loss(m, s, x0, t, eps, prediction=cfg["prediction"],
                                   min_snr_gamma=cfg.get("min_snr_gamma"), **cond)

    history = train(model, loss_fn, next_batch, cfg["steps"], lr=cfg["lr"],
                    ema=ema, generator=g, checkpoint=path, checkpoint_every=checkpoint_every, config=identity(cfg),
                    progress=progress, compile=compile, desc=desc)
    return model, ema, s, history, load_checkpoint(path)


def fashion_images(cfg, device):
    """The config's Fashion-MNIST training images on ``device``: its ``subset``, upsampled (bilinear)
    to its ``image_size`` when that is not 28."""
    import torch.nn.functional as F

    images = data.fashion_mnist("train")[0]
    images = images[:cfg["subset"]] if cfg.get("subset") else images
    size = cfg.get("image_size", 28)
    if size != 28:
        images = torch.cat([F.interpolate(b, size=(size, size), mode="bilinear", align_corners=False)
                            for b in images.split(5000)])
    return images.to(device)


def fashion_labels(cfg, device):
    """The labels of ``fashion_images(cfg, device)``, on ``device``."""
    labels = data.fashion_mnist("train")[1]
    return (labels[:cfg["subset"]] if cfg.get("subset") else labels).to(device)


def random_batch(images, g, bs):
    """``bs`` images drawn with replacement on ``g``, indexed where the images live."""
    return images[torch.randint(0, len(images), (bs,), generator=g, device=images.device)]


def load_classifier(cfg, path, device):
    """A finished classifier run of ``cfg`` from ``path`` (trained in minutes, so never resumed)."""
    state = load_checkpoint(path, map_location=device)
    if state.get("config") != cfg:
        raise ValueError(f"{path} holds a classifier of another config; delete it or pass another path")
    model = FashionClassifier(**state["shape"]).to(device)
    model.load_state_dict(state["model"])
    return model.eval()


def save_classifier(model, cfg, path):
    """Write a finished classifier run of ``cfg`` to ``path`` (atomically); returns the model."""
    with atomic_write(path) as f:
        torch.save({"model": model.state_dict(), "config": cfg, "shape": model.shape}, f)
    return model
