"""What the lessons train, per scale, in one table, and the cache that trains each thing once.

``RECIPES`` names every trained model a lesson uses and its settings at each run scale. A lesson
asks ``load_or_train(name)`` for one: the *full* config (the scale's settings, the seed and any
override) is hashed into a file name in the user cache (``$MINIDIFF_CACHE``, else
``~/.cache/minidiff``, folder ``models``). If that file holds a finished run, it is loaded; if it
holds an interrupted one, training resumes from it exactly; otherwise the model is trained and
the file written (atomically, every few hundred steps). A file is never served for another
config: the name is the config's hash, and ``training.train`` checks the config inside it too.

So no lesson reads a file another lesson wrote, yet a model two lessons share is trained once;
deleting the cache changes how long a lesson takes, never what it shows. ``load_or_sample`` does
the same for the slow 1000-step samples of such a model (folder ``samples``), keyed by the model's
config and every sampling setting, so two lessons that score the same model score the same images.
"""
from __future__ import annotations

import copy
import hashlib
import json
import pathlib
from typing import NamedTuple

import torch

from ._checks import check_choice, check_int
from ._files import atomic_write
from .device import get_device, get_scale
from .samplers import SAMPLERS

__all__ = ["RECIPES", "at_batch", "config", "cache_path", "load_or_train", "DDPMRun", "unet_kwargs",
           "model_from_checkpoint", "Samples", "load_or_sample", "AutoencoderRun", "LatentDDPMRun",
           "latent_space_from_checkpoint",
           "ConditionalDDPMRun", "CLIPRun", "HELD_OUT", "shapes_tokenizer", "shapes_train_set", "GANRun",
           "STABILITY", "LIBRARY_DEFAULTS", "stability_grid", "default_runs"]

RECIPES = {
    # The Fashion-MNIST DDPM of lessons 06-07 (and the CLI): a U-Net predicting eps on DDPM's
    # linear schedule (T = 1000). small: 16 channels at 28x28 and most parameters at 7x7 and 4x4,
    # where a convolution costs 16-49x less per parameter. ema_warmup is 5% of the steps (7% at
    # tiny); after it the EMA averages over ~1 / (1 - ema_decay) steps: 100, 1,000, 10,000.
    "fashion-ddpm": {
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
    },
    # The autoencoder of latent diffusion (lesson 08): 28x28 images -> 4x7x7 latents (f = 4), L1
    # reconstruction plus kl_weight times the per-pixel KL (autoencoder.vae_loss).
    "fashion-autoencoder": {
        "tiny": {"ae": {"latent_channels": 4, "base_channels": 16, "channel_mults": [1, 2, 2]}, "kl_weight": 1e-3,
                 "batch_size": 32, "lr": 2e-3, "steps": 150, "subset": 2000},
        "small": {"ae": {"latent_channels": 4, "base_channels": 32, "channel_mults": [1, 2, 2]}, "kl_weight": 1e-3,
                  "batch_size": 64, "lr": 1e-3, "steps": 2000, "subset": None},
        "full": {"ae": {"latent_channels": 4, "base_channels": 64, "channel_mults": [1, 2, 2], "num_res_blocks": 2},
                 "kl_weight": 1e-3, "batch_size": 128, "lr": 5e-4, "steps": 20000, "subset": None},
    },
    # The latent DDPM: the same U-Net (per scale, the very layout of "fashion-ddpm", so the two
    # differ only in the space they denoise), loss, EMA and trainer, on the scaled latents of the
    # scale's "fashion-autoencoder" (whose config is part of this one's). scale_latents=False trains
    # on the unscaled latents instead: lesson 08's "forgot the scale" ablation.
    "fashion-latent-ddpm": {
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
    },
    # CLIP on captioned shapes (lesson 09): a CNN image encoder and a causal Transformer text encoder
    # trained with clip.contrastive_loss; targets "groups" makes equal captions positives of each
    # other, "naive" is the plain diagonal target (the floor lesson 09 measures).
    "shapes-clip": {
        "tiny": {"size": 16, "text": {"width": 32, "layers": 1, "heads": 2}, "image": {"width": 16}, "embed_dim": 32,
                 "batch_size": 64, "lr": 2e-3, "steps": 150, "targets": "groups"},
        "small": {"size": 24, "text": {"width": 64, "layers": 2, "heads": 4}, "image": {"width": 32}, "embed_dim": 64,
                  "batch_size": 128, "lr": 1e-3, "steps": 1500, "targets": "groups"},
        "full": {"size": 32, "text": {"width": 128, "layers": 4, "heads": 4}, "image": {"width": 64},
                 "embed_dim": 128, "batch_size": 256, "lr": 5e-4, "steps": 6000, "targets": "groups"},
    },
    # The text-to-image DDPM on shapes: a U-Net with cross-attention to a prompt, condition dropped
    # (to the empty prompt) 10% of the time. condition "clip": the frozen text encoder of the scale's
    # "shapes-clip" (whose config is part of this one's); "learned": the same encoder, freshly
    # initialised and trained by the diffusion loss alone; "onehot": no text, 4 one-hot attribute tokens.
    "shapes-text-ddpm": {
        "tiny": {"size": 16, "unet": {"base_channels": 16, "channel_mults": [1, 2], "attention_levels": [1]},
                 "condition": "clip", "cond_dropout": 0.1, "batch_size": 32, "lr": 2e-3, "steps": 150,
                 "ema_decay": 0.99, "ema_warmup": 10, "prediction": "eps"},
        "small": {"size": 24, "unet": {"base_channels": 32, "channel_mults": [1, 2, 2], "attention_levels": [2]},
                  "condition": "clip", "cond_dropout": 0.1, "batch_size": 32, "lr": 1e-3, "steps": 1500,
                  "ema_decay": 0.995, "ema_warmup": 75, "prediction": "eps"},
        "full": {"size": 32, "unet": {"base_channels": 64, "channel_mults": [1, 2, 2], "num_res_blocks": 2,
                                      "attention_levels": [1, 2]},
                 "condition": "clip", "cond_dropout": 0.1, "batch_size": 128, "lr": 2e-4, "steps": 20000,
                 "ema_decay": 0.9995, "ema_warmup": 1000, "prediction": "eps"},
    },
    # The judge of lesson 09: one FashionClassifier on the 150 (colour, shape, size, position)
    # combinations of real shapes (all of them, held-out pairs included), with pixel noise added so
    # that slightly noisy samples are still read; its features give the shapes' FID.
    "shapes-classifier": {
        "tiny": {"size": 16, "steps": 150, "batch_size": 128, "lr": 2e-3, "noise": 0.2},
        "small": {"size": 24, "steps": 600, "batch_size": 128, "lr": 2e-3, "noise": 0.2},
        "full": {"size": 32, "steps": 1500, "batch_size": 128, "lr": 2e-3, "noise": 0.2},
    },
    # The DCGAN baseline of lesson 10 (gan.py): Radford et al. 2016's Adam (lr 2e-4, beta1 0.5), the
    # non-saturating loss, z of 100 dimensions. At small, 9,000 steps: 10 minutes on a 2-core CPU against
    # the DDPM's 13, past where the tracked FID stopped falling (about step 7,500; 3,000 steps left it
    # still falling). Every ``track_every`` steps ``track_samples`` images from
    # fixed noise (as many as lessons 06-10 score per FID) are scored for mode collapse
    # (gan.collapse_stats) and FID, and a few kept as snapshots.
    "fashion-gan": {
        "tiny": {"z_dim": 100, "width": 16, "batch_size": 32, "lr": 2e-4, "beta1": 0.5, "loss": "nonsaturating",
                 "steps": 150, "subset": 2000, "track_every": 75, "track_samples": 64},
        "small": {"z_dim": 100, "width": 32, "batch_size": 64, "lr": 2e-4, "beta1": 0.5, "loss": "nonsaturating",
                  "steps": 9000, "subset": None, "track_every": 500, "track_samples": 200},
        "full": {"z_dim": 100, "width": 64, "batch_size": 128, "lr": 2e-4, "beta1": 0.5, "loss": "nonsaturating",
                 "steps": 20000, "subset": None, "track_every": 2000, "track_samples": 5000},
    },
    # The feature classifier behind every FID (evaluation.FashionClassifier), trained on the
    # Fashion-MNIST train split with Adam, one-cycle learning rate and random flips.
    "fashion-classifier": {
        "tiny": {"steps": 100, "batch_size": 128, "lr": 2e-3},
        "small": {"steps": 1500, "batch_size": 128, "lr": 2e-3},
        "full": {"steps": 3000, "batch_size": 128, "lr": 2e-3},
    },
}
# Lesson 12's molecule-like point clouds (molecules.py): a Transformer over the 6 atoms that refines their
# positions (x0 prediction, Min-SNR-5 weighting) on DDPM's linear schedule, the one-hot atom types scaled by
# type_scale against the coordinates (in Å; EDM's 0.25; lesson 12 retrains it at 1 and 4 for the ablation).
# Trained on a fixed set of train_set molecules made once from the seed. The EMA is short on purpose: at
# small, with decay 0.999 over 1,500 steps the average still held the first half of training, and 18% of
# samples were valid against 97% from the weights themselves (measured on one run).
RECIPES["molecules-ddpm"] = {
    "tiny": {"net": {"width": 32, "layers": 2, "heads": 4}, "type_scale": 0.25, "batch_size": 64, "lr": 2e-3,
             "steps": 150, "ema_decay": 0.9, "ema_warmup": 10, "prediction": "x0", "min_snr_gamma": 5.0},
    "small": {"net": {"width": 64, "layers": 3, "heads": 4}, "type_scale": 0.25, "batch_size": 128, "lr": 1e-3,
              "steps": 2000, "ema_decay": 0.99, "ema_warmup": 100, "prediction": "x0", "min_snr_gamma": 5.0},
    "full": {"net": {"width": 128, "layers": 6, "heads": 8}, "type_scale": 0.25, "batch_size": 512, "lr": 5e-4,
             "steps": 20000, "ema_decay": 0.999, "ema_warmup": 1000, "prediction": "x0", "min_snr_gamma": 5.0},
}
# Lesson 12's clips of a moving shape (video.py): 8 frames of 16x16, a convolutional stem per frame and a
# Transformer over 4x4 patches with factorised space-time attention; time_attention=False is the
# frames-independently baseline.
RECIPES["video-ddpm"] = {
    "tiny": {"net": {"patch": 4, "width": 32, "layers": 2, "heads": 4, "conv_width": 8}, "time_attention": True,
             "batch_size": 16, "lr": 2e-3, "steps": 100, "ema_decay": 0.9, "ema_warmup": 10, "prediction": "eps",
             "train_set": 1000},
    "small": {"net": {"patch": 4, "width": 64, "layers": 3, "heads": 4, "conv_width": 16}, "time_attention": True,
              "batch_size": 32, "lr": 1e-3, "steps": 3000, "ema_decay": 0.995, "ema_warmup": 150, "prediction": "eps",
              "train_set": 10000},
    "full": {"net": {"patch": 2, "width": 128, "layers": 6, "heads": 8, "conv_width": 64}, "time_attention": True,
             "batch_size": 128, "lr": 5e-4, "steps": 20000, "ema_decay": 0.999, "ema_warmup": 1000,
             "prediction": "eps", "train_set": 50000},
}
# The class-conditional Fashion-MNIST DDPM of lesson 10: "fashion-ddpm"'s settings and U-Net plus a label
# embedding (10 classes + "no label"), the label dropped to "no label" 10% of the time (classifier-free
# guidance, Ho & Salimans 2022, p_uncond = 0.1).
RECIPES["fashion-cond-ddpm"] = {scale: {**copy.deepcopy(settings), "cond_dropout": 0.1}
                                for scale, settings in RECIPES["fashion-ddpm"].items()}
# The class-conditional DCGAN of lesson 10: "fashion-gan"'s settings, labels into G (concatenated to z)
# and D (one-hot label planes concatenated to the image).
RECIPES["fashion-cond-gan"] = copy.deepcopy(RECIPES["fashion-gan"])
# Lesson 10's stability grid: each model at its recipe's learning rate times 1/4, 1 and 4, with three
# seeds, for a short training budget per scale (about the same wall-clock for both models on a CPU).
STABILITY = {"seeds": (0, 1, 2), "lr_factors": (0.25, 1.0, 4.0),
             "steps": {"fashion-gan": {"tiny": 10, "small": 1000, "full": 5000},
                       "fashion-ddpm": {"tiny": 10, "small": 300, "full": 5000}}}
# The optimiser settings a recipe would have with no tuning at all: torch.optim.Adam's and AdamW's
# defaults (lr 1e-3, betas (0.9, 0.999)). Lesson 10 trains each model with one of them at a time put
# back, for the stability grid's budget and seeds, to measure which of its recipe's changes were needed.
LIBRARY_DEFAULTS = {"lr": 1e-3, "beta1": 0.9}
IMAGE_SHAPE = {"fashion-ddpm": (1, 28, 28)}        # what a DDPM recipe's model generates
FIXED = {"fashion-ddpm": {"dataset": "fashion-mnist", "T": 1000, "schedule": "linear"},
         "fashion-autoencoder": {"dataset": "fashion-mnist"},
         "fashion-latent-ddpm": {"dataset": "fashion-mnist", "T": 1000, "schedule": "linear"},
         "fashion-classifier": {"dataset": "fashion-mnist"},
         "fashion-cond-ddpm": {"dataset": "fashion-mnist", "T": 1000, "schedule": "linear", "num_classes": 10},
         "shapes-clip": {"dataset": "shapes", "hold_out": [["red", "triangle"], ["green", "square"], ["blue", "circle"]],
                         "context_length": 12, "train_set": 4096},
         "shapes-text-ddpm": {"dataset": "shapes", "T": 1000, "schedule": "linear",
                              "hold_out": [["red", "triangle"], ["green", "square"], ["blue", "circle"]],
                              "context_length": 12, "train_set": 4096},
         "shapes-classifier": {"dataset": "shapes", "train_set": 6000},
         "fashion-gan": {"dataset": "fashion-mnist"},
         "molecules-ddpm": {"dataset": "molecules", "atoms": 6, "train_set": 20000, "T": 1000, "schedule": "linear"},
         "video-ddpm": {"dataset": "moving-shapes", "frames": 8, "size": 16, "T": 1000, "schedule": "linear"},
         "fashion-cond-gan": {"dataset": "fashion-mnist", "num_classes": 10}}
# The (colour, shape) pairs no shapes model ever sees in training: lesson 09 tests on them.
HELD_OUT = [tuple(p) for p in FIXED["shapes-clip"]["hold_out"]]
# Settings a recipe takes as an override but leaves out of its default config (so the configs,
# and the cache files, of the default runs stay what they were): the image size of the latent
# pipeline (Fashion-MNIST upsampled; lesson 08 trains a 56x56 latent model at full scale).
OPTIONAL = {"fashion-autoencoder": {"image_size": 28}, "fashion-latent-ddpm": {"image_size": 28}}


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


def config(name: str, scale: str | None = None, **overrides) -> dict:
    """The full config of recipe ``name`` at ``scale`` with ``overrides`` (any of the scale's keys,
    or ``seed``, default 0): everything that decides what training produces."""
    check_choice("recipe", name, RECIPES)
    scale = get_scale(scale)
    cfg = {"recipe": name, "scale": scale, "seed": 0, **FIXED[name], **copy.deepcopy(RECIPES[name][scale])}
    if name == "fashion-latent-ddpm":               # the latents it learns are part of what it is
        cfg["autoencoder"] = config("fashion-autoencoder", scale)
    if name == "shapes-text-ddpm":                  # so is the text encoder it reads prompts with
        cfg["clip"] = config("shapes-clip", scale)
    known = set(cfg) | set(OPTIONAL.get(name, {}))
    unknown = sorted((set(overrides) - known) | ({"recipe", "scale"} & set(overrides)))
    if unknown:
        allowed = sorted(known - {"recipe", "scale"})
        raise ValueError(f"recipe {name!r} has no setting {', '.join(unknown)}; allowed: {', '.join(allowed)}")
    if "image_size" in overrides:
        check_int("image_size", overrides["image_size"], low=4)
        if name == "fashion-latent-ddpm" and "autoencoder" not in overrides:     # its autoencoder at that size too
            cfg["autoencoder"] = config("fashion-autoencoder", scale, image_size=overrides["image_size"])
    cfg.update(copy.deepcopy(overrides))
    if name == "shapes-text-ddpm":
        check_choice("condition", cfg["condition"], ("clip", "learned", "onehot"))
        if cfg["condition"] == "onehot":
            cfg.pop("clip")                         # no text encoder at all
    return cfg


def stability_grid(name: str, scale: str | None = None) -> list[dict]:
    """The overrides of every run in ``STABILITY``'s grid for recipe ``name`` ("fashion-gan" or
    "fashion-ddpm"): ``load_or_train(name, scale, **overrides)`` trains or loads each."""
    check_choice("name", name, STABILITY["steps"])
    cfg = config(name, scale)
    steps = STABILITY["steps"][name][cfg["scale"]]
    extra = {"track_every": steps} if name == "fashion-gan" else {}
    return [{"lr": cfg["lr"] * f, "seed": seed, "steps": steps, **extra}
            for f in STABILITY["lr_factors"] for seed in STABILITY["seeds"]]


def default_runs(name: str, scale: str | None = None) -> dict:
    """For each setting of ``LIBRARY_DEFAULTS`` that recipe ``name`` moves away from its default:
    the grid's seeds and budget (``stability_grid``) with that one setting put back to its default
    and the others as the recipe has them. {setting: [overrides, ...]}; empty when the recipe moves
    none (then nothing was tuned that these runs could test)."""
    cfg = config(name, scale)
    base = [o for o in stability_grid(name, scale) if o["lr"] == cfg["lr"]]       # the recipe's own lr
    return {k: [{**o, k: v} for o in base] for k, v in LIBRARY_DEFAULTS.items() if k in cfg and cfg[k] != v}


def cache_path(cfg: dict) -> pathlib.Path:
    """Where the run of ``cfg`` lives in the user cache: its name carries a hash of the whole config."""
    from .data import cache_dir

    digest = hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir() / "models" / f"{cfg['recipe']}-{cfg['scale']}-{digest}.pt"


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


def unet_kwargs(cfg: dict) -> dict:
    """The ``UNet`` keyword arguments a "fashion-ddpm" config names (its lists as tuples)."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in cfg["unet"].items()}


def _train_ddpm(cfg, path, device, progress, compile, checkpoint_every, in_channels, draw_batch, desc,
                make_model=None, noise=None):
    """DDPM Algorithm 1 with ``training.train`` on whatever ``draw_batch(g, batch_size)`` returns
    (images or latents on ``device``, or ``(x0, cond)`` with ``cond`` the model's condition keywords);
    returns the model, its EMA, the schedule, the history and the finished checkpoint's contents.
    The model is ``UNet(in_channels, **cfg["unet"])``, or ``make_model()`` for any other; ``noise(x0, g)``
    draws the noise when N(0, I) is not the one (molecules centre it). On a CPU every draw (batch, t, noise) comes from one CPU
    generator seeded with the config's seed, so a run is reproducible bit for bit; on an
    accelerator the generator lives on that device, so nothing is drawn on the CPU and copied over."""
    from . import loss, schedules
    from .forward import randn_like
    from .training import EMA, load_checkpoint, train
    from .unet import UNet

    torch.manual_seed(cfg["seed"])
    g = torch.Generator(device).manual_seed(cfg["seed"])
    s = schedules.make(cfg["schedule"], T=cfg["T"])
    model = (make_model() if make_model else UNet(in_channels=in_channels, **unet_kwargs(cfg))).to(device)
    ema = EMA(model, cfg["ema_decay"], warmup=cfg["ema_warmup"])

    def next_batch(step):
        """The global batch with its t and noise, drawn on g in the order diffusion_loss draws them (so
        a run is what it was when the loss drew them), for ``training.shard`` to split under torchrun."""
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

    identity = {k: v for k, v in cfg.items() if k != "steps"}      # a run may be resumed to more steps
    history = train(model, loss_fn, next_batch, cfg["steps"], lr=cfg["lr"],
                    ema=ema, generator=g, checkpoint=path, checkpoint_every=checkpoint_every, config=identity,
                    progress=progress, compile=compile, desc=desc)
    return model, ema, s, history, load_checkpoint(path)


def _fashion_images(cfg, device):
    """The config's Fashion-MNIST training images on ``device``: its ``subset``, upsampled (bilinear)
    to its ``image_size`` when that is not 28."""
    import torch.nn.functional as F

    from . import data

    images = data.fashion_mnist("train")[0]
    images = images[:cfg["subset"]] if cfg.get("subset") else images
    size = cfg.get("image_size", 28)
    if size != 28:
        images = torch.cat([F.interpolate(b, size=(size, size), mode="bilinear", align_corners=False)
                            for b in images.split(5000)])
    return images.to(device)


def _random_batch(images, g, bs):
    """``bs`` images drawn with replacement on ``g``, indexed where the images live."""
    return images[torch.randint(0, len(images), (bs,), generator=g, device=images.device)]


def _train_fashion_ddpm(cfg, path, device, progress, compile=False, checkpoint_every=500) -> DDPMRun:
    """The pixel DDPM: the data set lives on the training device and batches are indexed there."""
    images = _fashion_images(cfg, device)
    model, ema, s, history, state = _train_ddpm(cfg, path, device, progress, compile, checkpoint_every, 1,
                                                lambda g, bs: _random_batch(images, g, bs),
                                                f"DDPM on Fashion-MNIST ({cfg['scale']})")
    seconds = float(state.get("seconds", "nan"))
    return DDPMRun(model, ema, s, history, cfg, seconds)


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
        from .autoencoder import LatentSpace
        return LatentSpace(self.model, self.latent_scale)


SCALE_BATCH = 1000      # the latent scale is measured on this many training images, the first ones


def _train_fashion_autoencoder(cfg, path, device, progress, compile=False, checkpoint_every=500) -> AutoencoderRun:
    """The KL autoencoder trained with ``training.train`` on ``autoencoder.vae_loss``; after
    training, ``latent_scale`` is measured on the first ``SCALE_BATCH`` images and stored in the
    checkpoint, so every later load uses the same number."""
    from .autoencoder import AutoEncoder, latent_scale, vae_loss
    from .training import load_checkpoint, train

    torch.manual_seed(cfg["seed"])
    g = torch.Generator(device).manual_seed(cfg["seed"])
    images = _fashion_images(cfg, device)
    model = AutoEncoder(in_channels=1, **unet_kwargs({"unet": cfg["ae"]})).to(device)

    latent = model.latent_shape(images.shape[1:])

    def next_batch(step):       # the global batch's images and z's noise (drawn in the order the loss drew it)
        x = _random_batch(images, g, cfg["batch_size"])
        return x, torch.randn((len(x), *latent), generator=g, device=g.device, dtype=x.dtype).to(device)

    identity = {k: v for k, v in cfg.items() if k != "steps"}
    history = train(model, lambda m, b: vae_loss(m, b[0], cfg["kl_weight"], noise=b[1]), next_batch,
                    cfg["steps"], lr=cfg["lr"], generator=g, checkpoint=path,
                    checkpoint_every=checkpoint_every, config=identity, progress=progress, compile=compile,
                    desc=f"autoencoder on Fashion-MNIST ({cfg['scale']})")
    state = load_checkpoint(path)
    if "latent_scale" not in state:
        first = _fashion_images({"subset": SCALE_BATCH, "image_size": cfg.get("image_size", 28)}, device)
        state["latent_scale"] = latent_scale(model, first,
                                             generator=torch.Generator(device).manual_seed(cfg["seed"]))
        with atomic_write(path) as f:
            torch.save(state, f)
    return AutoencoderRun(model.eval(), float(state["latent_scale"]), history, cfg, float(state.get("seconds", "nan")))


# A trained latent DDPM: a DDPMRun's fields, plus the ``space`` (``autoencoder.LatentSpace``) its
# U-Net denoises in; sample ``space.latent_shape((1, 28, 28))`` latents, then ``space.decode`` them.
LatentDDPMRun = NamedTuple("LatentDDPMRun", [*DDPMRun.__annotations__.items(), ("space", object)])


def _train_fashion_latent_ddpm(cfg, path, device, progress, compile=False, checkpoint_every=500) -> LatentDDPMRun:
    """DDPM on the autoencoder's scaled latents (Rombach et al. 2022, eq. 2). The whole data set is
    encoded once into q(z | x) (means and standard deviations, on the device); each batch draws
    fresh z ~ q(z | x) for its images, as LDM samples its latents, and multiplies by the scale.
    The finished checkpoint also holds the autoencoder and its scale, so it can be sampled alone."""
    from .autoencoder import LatentSpace

    ae_cfg = cfg["autoencoder"]
    ae_run = _train_fashion_autoencoder(ae_cfg, cache_path(ae_cfg), device, progress)
    images = _fashion_images(cfg, device)
    with torch.no_grad():
        q = [ae_run.model.encode(b) for b in images.split(500)]
    mean, std = torch.cat([p.mean for p in q]), torch.cat([p.std for p in q])
    scale = ae_run.latent_scale if cfg["scale_latents"] else 1.0

    def draw_batch(g, bs):
        idx = torch.randint(0, len(mean), (bs,), generator=g, device=device)
        eps = torch.randn(mean[idx].shape, generator=g, device=device)
        return scale * (mean[idx] + std[idx] * eps)

    model, ema, s, history, state = _train_ddpm(cfg, path, device, progress, compile, checkpoint_every,
                                                ae_cfg["ae"]["latent_channels"], draw_batch,
                                                f"latent DDPM on Fashion-MNIST ({cfg['scale']})")
    if "autoencoder" not in state:
        state["autoencoder"] = {"model": ae_run.model.state_dict(), "latent_scale": scale}
        with atomic_write(path) as f:
            torch.save(state, f)
    return LatentDDPMRun(model, ema, s, history, cfg, float(state.get("seconds", "nan")),
                         LatentSpace(ae_run.model, scale))


def _load_classifier(cfg, path, device):
    """A finished classifier run of ``cfg`` from ``path`` (trained in minutes, so never resumed)."""
    from .evaluation import FashionClassifier
    from .training import load_checkpoint

    state = load_checkpoint(path, map_location=device)
    if state.get("config") != cfg:
        raise ValueError(f"{path} holds a classifier of another config; delete it or pass another path")
    model = FashionClassifier(**state["shape"]).to(device)
    model.load_state_dict(state["model"])
    return model.eval()


def _save_classifier(model, cfg, path):
    with atomic_write(path) as f:
        torch.save({"model": model.state_dict(), "config": cfg, "shape": model.shape}, f)
    return model


def _train_fashion_classifier(cfg, path, device, progress, compile=False, checkpoint_every=None):
    """The feature classifier: loaded from ``path`` if a finished run of this config is there, else
    trained (a few minutes at most, so an interrupted run starts again) and saved."""
    from . import data
    from .evaluation import train_classifier

    if path.exists():
        return _load_classifier(cfg, path, device)
    torch.manual_seed(cfg["seed"])
    x, y = data.fashion_mnist("train")
    model = train_classifier(x, y, cfg["steps"], batch_size=cfg["batch_size"], lr=cfg["lr"],
                             generator=torch.Generator().manual_seed(cfg["seed"]), device=device, progress=progress)
    return _save_classifier(model, cfg, path)


# A trained conditional DDPM: a DDPMRun's fields, plus ``uncond`` (the "no condition" keywords for
# ``guidance.cfg``) and the ``tokenizer`` its prompts go through (None without text).
ConditionalDDPMRun = NamedTuple("ConditionalDDPMRun",
                                [*DDPMRun.__annotations__.items(), ("uncond", dict), ("tokenizer", object)])


def _train_fashion_cond_ddpm(cfg, path, device, progress, compile=False, checkpoint_every=500):
    """The class-conditional pixel DDPM: each batch's labels, each replaced by "no label" (id
    ``num_classes``) with probability ``cond_dropout`` (``guidance.drop_condition``)."""
    from .guidance import drop_condition
    from .unet import UNet

    images = _fashion_images(cfg, device)
    labels = _fashion_labels(cfg, device)
    k = cfg["num_classes"]

    def draw_batch(g, bs):
        idx = torch.randint(0, len(images), (bs,), generator=g, device=device)
        return images[idx], {"y": drop_condition(labels[idx], cfg["cond_dropout"], g, null=k)}

    model, ema, s, history, state = _train_ddpm(
        cfg, path, device, progress, compile, checkpoint_every, 1, draw_batch,
        f"class-conditional DDPM on Fashion-MNIST ({cfg['scale']})",
        make_model=lambda: UNet(in_channels=1, num_classes=k, **unet_kwargs(cfg)))
    return ConditionalDDPMRun(model, ema, s, history, cfg, float(state.get("seconds", "nan")),
                              {"y": torch.tensor([k], device=device)}, None)


def shapes_tokenizer(context_length: int):
    """The tokenizer of every shapes model: the words of all 150 captions (``data.shape_captions``)."""
    from . import data
    from .clip import Tokenizer

    return Tokenizer.from_captions(data.shape_captions(), context_length)


def shapes_train_set(cfg, device):
    """The config's shapes training set: ``train_set`` pictures drawn once (seeded) without the
    held-out pairs, with their captions' tokens and caption ids (``data.shape_label``), on ``device``."""
    from . import data

    g = torch.Generator().manual_seed(cfg["seed"])
    images, captions, attrs = data.shapes(cfg["train_set"], cfg["size"], generator=g, exclude=cfg.get("hold_out"))
    out = {"images": images, "labels": data.shape_label(attrs), "one_hot": data.shape_one_hot(attrs)}
    if "context_length" in cfg:
        out["tokens"] = shapes_tokenizer(cfg["context_length"]).encode(captions)
    return {k: v.to(device) for k, v in out.items()}


class CLIPRun(NamedTuple):
    """A trained ``clip.CLIP`` with its ``tokenizer``, the loss ``history`` (dicts: the loss trained
    on, the naive loss and the naive loss's floor for each batch), ``config`` and ``seconds``."""
    model: torch.nn.Module
    tokenizer: object
    history: list
    config: dict
    seconds: float


def _train_shapes_clip(cfg, path, device, progress, compile=False, checkpoint_every=500) -> CLIPRun:
    """CLIP on captioned shapes with ``clip.contrastive_loss`` (groups = caption ids when
    ``targets`` is "groups"); every step also logs the naive loss and its floor for the batch."""
    from .clip import CLIP, contrastive_loss
    from .training import gather, load_checkpoint, train, unwrap

    check_choice("targets", cfg["targets"], ("groups", "naive"))
    torch.manual_seed(cfg["seed"])
    g = torch.Generator(device).manual_seed(cfg["seed"])
    data_set = shapes_train_set(cfg, device)
    tok = shapes_tokenizer(cfg["context_length"])
    model = CLIP(len(tok), cfg["context_length"], cfg["embed_dim"], cfg["text"], cfg["image"]).to(device)

    def loss_fn(m, batch):      # over the global batch under torchrun too: every image against every caption
        images, tokens, labels = batch
        img, txt = map(gather, m(images, tokens))
        labels, scale = gather(labels), unwrap(m).logit_scale
        naive = contrastive_loss(img, txt, scale)
        grouped = contrastive_loss(img, txt, scale, groups=labels)
        copies = (labels[:, None] == labels[None, :]).sum(1).double()       # contrastive_floor, on the device
        return {"loss": grouped if cfg["targets"] == "groups" else naive, "naive": naive, "grouped": grouped,
                "floor": copies.log().mean()}

    def draw(step):
        idx = torch.randint(0, len(data_set["images"]), (cfg["batch_size"],), generator=g, device=device)
        return data_set["images"][idx], data_set["tokens"][idx], data_set["labels"][idx]

    identity = {k: v for k, v in cfg.items() if k != "steps"}
    history = train(model, loss_fn, draw, cfg["steps"], lr=cfg["lr"], generator=g, checkpoint=path,
                    checkpoint_every=checkpoint_every, config=identity, progress=progress, compile=compile,
                    desc=f"CLIP on shapes ({cfg['scale']})")
    return CLIPRun(model.eval(), tok, history, cfg, float(load_checkpoint(path).get("seconds", "nan")))


def _train_shapes_text_ddpm(cfg, path, device, progress, compile=False, checkpoint_every=500) -> ConditionalDDPMRun:
    """The text-to-image DDPM: ``clip.TextConditionedUNet`` on the shapes training set, its
    prompt replaced by the empty prompt (or, for one-hot attributes, by zeros) with probability
    ``cond_dropout``."""
    from .clip import TextConditionedUNet, TextEncoder
    from .guidance import drop_condition
    from .unet import UNet

    data_set = shapes_train_set(cfg, device)
    if cfg["condition"] == "onehot":
        context, null = data_set["one_hot"], torch.zeros_like(data_set["one_hot"][:1])
        context_dim, tok = context.shape[-1], None
    else:
        tok = shapes_tokenizer(cfg["context_length"])
        context, null = data_set["tokens"], tok.encode([""]).to(device)
        context_dim = cfg["clip"]["text"]["width"]
        if cfg["condition"] == "clip":
            clip_cfg = cfg["clip"]
            frozen = _train_shapes_clip(clip_cfg, cache_path(clip_cfg), device, progress).model.text

    def make_model():
        unet = UNet(in_channels=3, context_dim=context_dim, **unet_kwargs(cfg))
        if cfg["condition"] == "onehot":
            return TextConditionedUNet(unet)
        if cfg["condition"] == "clip":
            return TextConditionedUNet(unet, frozen)
        return TextConditionedUNet(unet, TextEncoder(len(tok), cfg["context_length"], **cfg["clip"]["text"]),
                                   train_text_encoder=True)

    def draw_batch(g, bs):
        idx = torch.randint(0, len(context), (bs,), generator=g, device=device)
        return data_set["images"][idx], {"context": drop_condition(context[idx], cfg["cond_dropout"], g, null=null[0])}

    model, ema, s, history, state = _train_ddpm(cfg, path, device, progress, compile, checkpoint_every, 3,
                                                draw_batch, f"text-to-image DDPM on shapes, {cfg['condition']} "
                                                            f"({cfg['scale']})", make_model=make_model)
    return ConditionalDDPMRun(model, ema, s, history, cfg, float(state.get("seconds", "nan")),
                              {"context": null}, tok)


def _train_shapes_classifier(cfg, path, device, progress, compile=False, checkpoint_every=None):
    """The judge of shapes samples: a ``FashionClassifier`` over the 150 combinations
    (``data.shape_label``) of ``train_set`` real pictures (no pair held out), each with Gaussian
    pixel noise of a random standard deviation in [0, ``noise``]; no flips (left/right is a label)."""
    from . import data
    from .evaluation import train_classifier

    if path.exists():
        return _load_classifier(cfg, path, device)
    torch.manual_seed(cfg["seed"])
    g = torch.Generator().manual_seed(cfg["seed"])
    x, _, attrs = data.shapes(cfg["train_set"], cfg["size"], generator=g)
    x = x + cfg["noise"] * torch.rand(len(x), 1, 1, 1, generator=g) * torch.randn(x.shape, generator=g)
    model = train_classifier(x, data.shape_label(attrs), cfg["steps"], batch_size=cfg["batch_size"], lr=cfg["lr"],
                             generator=g, device=device, progress=progress, flip=False)
    return _save_classifier(model, cfg, path)


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


def _fashion_labels(cfg, device):
    from . import data

    labels = data.fashion_mnist("train")[1]
    return (labels[:cfg["subset"]] if cfg.get("subset") else labels).to(device)


def _train_fashion_gan(cfg, path, device, progress, compile=False, checkpoint_every=500) -> GANRun:
    """DCGAN on Fashion-MNIST with ``gan.gan_step``, trained in chunks of ``track_every`` steps: after
    each, ``track_samples`` images from fixed noise (labels cycling through the classes for the
    conditional GAN) are scored by the scale's feature classifier (``gan.collapse_stats`` and FID). The
    checks live next to the checkpoint (``*.tracking.pt``), so a resumed run keeps the earlier ones."""
    from .gan import GAN, collapse_stats, gan_step
    from .training import load_checkpoint, train

    torch.manual_seed(cfg["seed"])
    g = torch.Generator(device).manual_seed(cfg["seed"])
    k = cfg.get("num_classes")
    model = GAN(cfg["z_dim"], cfg["width"], 1, k).to(device)
    side = path.with_name(path.stem + ".tracking.pt")
    identity = {key: v for key, v in cfg.items() if key != "steps"}     # a run may be resumed to more steps
    tracking = []
    if side.exists():
        saved = torch.load(side, map_location="cpu", weights_only=True)
        tracking = saved["tracking"] if saved.get("config") == identity else []
    ends = list(range(cfg["track_every"], cfg["steps"], cfg["track_every"])) + [cfg["steps"]]
    if path.exists() and {t["step"] for t in tracking} >= set(ends):      # finished and checked: just load it
        state = load_checkpoint(path, map_location=device)
        if state.get("config") == identity and int(state["step"]) == cfg["steps"]:
            model.load_state_dict(state["model"])
            return GANRun(model.eval(), list(state["history"]), tracking, cfg, float(state.get("seconds", "nan")))
    images = _fashion_images(cfg, device)
    labels = _fashion_labels(cfg, device) if k else None

    def optimizers(m):          # fused on CUDA, as training.train's AdamW: one kernel for all parameters
        return {part: torch.optim.Adam(getattr(m, net).parameters(), cfg["lr"], betas=(cfg["beta1"], 0.999),
                                       fused=device.type == "cuda")
                for part, net in (("g", "generator"), ("d", "discriminator"))}

    def draw(step):
        idx = torch.randint(0, len(images), (cfg["batch_size"],), generator=g, device=device)
        return (images[idx], labels[idx]) if k else images[idx]

    from .data import fashion_mnist
    from .evaluation import features
    from .metrics import frechet_distance

    judge = load_or_train("fashion-classifier", cfg["scale"], device=device, progress=progress)
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
                        checkpoint=path, checkpoint_every=checkpoint_every, config=identity, progress=progress,
                        compile=compile, desc=f"{'conditional ' if k else ''}GAN on Fashion-MNIST ({cfg['scale']})")
        if any(t["step"] == end for t in tracking) or len(history) > end:   # done, or the weights are past it
            continue
        with torch.no_grad():
            samples = torch.cat([model.generator(z, None if y_track is None else y_track[i:i + 500])
                                 for i, z in zip(range(0, len(z_track), 500), z_track.split(500))]).cpu()
        tracking.append({"step": end, **collapse_stats(samples, judge, 10, reference=reference),
                         "fid": frechet_distance(features(judge, samples.clamp(-1, 1)), real),
                         "seconds": float(load_checkpoint(path).get("seconds", "nan")), "snapshot": samples[:16]})
        with atomic_write(side) as f:
            torch.save({"config": identity, "tracking": tracking}, f)
    return GANRun(model.eval(), history, tracking, cfg, float(load_checkpoint(path).get("seconds", "nan")))


def _train_molecules_ddpm(cfg, path, device, progress, compile=False, checkpoint_every=500) -> DDPMRun:
    """The point-cloud DDPM: ``molecules.AtomTransformer`` on ``train_set`` molecules made from the
    seed (on the CPU, so every device trains on the same ones), with centred coordinate noise."""
    from . import molecules

    coords, types = molecules.make_molecules(cfg["train_set"], torch.Generator().manual_seed(cfg["seed"]))
    x = molecules.to_features(coords, types, cfg["type_scale"]).to(device)
    model, ema, s, history, state = _train_ddpm(
        cfg, path, device, progress, compile, checkpoint_every, None, lambda g, bs: _random_batch(x, g, bs),
        f"DDPM on molecules ({cfg['scale']})", make_model=lambda: molecules.AtomTransformer(**cfg["net"], skip=cfg["prediction"] == "x0"),
        noise=lambda x0, g: molecules.centred_noise(x0.shape, g, x0.device))
    return DDPMRun(model, ema, s, history, cfg, float(state.get("seconds", "nan")))


def _train_video_ddpm(cfg, path, device, progress, compile=False, checkpoint_every=500) -> DDPMRun:
    """The clip DDPM: ``video.SpaceTimeTransformer`` on ``train_set`` clips made from the seed."""
    from . import video

    clips = video.moving_shapes(cfg["train_set"], cfg["frames"], cfg["size"],
                                torch.Generator().manual_seed(cfg["seed"])).to(device)
    model, ema, s, history, state = _train_ddpm(
        cfg, path, device, progress, compile, checkpoint_every, None, lambda g, bs: _random_batch(clips, g, bs),
        f"DDPM on moving shapes ({cfg['scale']})",
        make_model=lambda: video.SpaceTimeTransformer(cfg["frames"], cfg["size"], time_attention=cfg["time_attention"],
                                                      **cfg["net"]))
    return DDPMRun(model, ema, s, history, cfg, float(state.get("seconds", "nan")))


TRAINERS = {"fashion-ddpm": _train_fashion_ddpm, "fashion-autoencoder": _train_fashion_autoencoder,
            "fashion-latent-ddpm": _train_fashion_latent_ddpm, "fashion-classifier": _train_fashion_classifier,
            "fashion-cond-ddpm": _train_fashion_cond_ddpm, "shapes-clip": _train_shapes_clip,
            "shapes-text-ddpm": _train_shapes_text_ddpm, "shapes-classifier": _train_shapes_classifier,
            "fashion-gan": _train_fashion_gan, "fashion-cond-gan": _train_fashion_gan,
            "molecules-ddpm": _train_molecules_ddpm, "video-ddpm": _train_video_ddpm}


def load_or_train(name: str, scale: str | None = None, *, device=None, progress: bool = True, checkpoint=None,
                  compile: bool | None = None, checkpoint_every: int = 500, **overrides):
    """The trained model(s) of recipe ``name`` at ``scale`` (default: ``$MINIDIFF_SCALE``), from the
    cache when a run of the same full config finished before, resumed when one was interrupted,
    else trained now.

    :param device: where to train and return the model (default ``device.get_device()``).
    :param checkpoint: a file to use instead of the cache (the CLI's ``--checkpoint``).
    :param compile: train a ``torch.compile``d model (not part of the config); default: at ``full``
        scale on CUDA, where the full recipes run long enough to repay the compile.
    :param checkpoint_every: steps between the files an interrupted run resumes from.
    :param overrides: settings of the recipe to change (``steps=4500``, ``prediction="v"``, ``seed=1``).
    :returns: "fashion-ddpm": a ``DDPMRun``; "fashion-autoencoder": an ``AutoencoderRun``;
        "fashion-latent-ddpm": a ``LatentDDPMRun`` (training its autoencoder first if the cache
        lacks it); "fashion-classifier": an ``evaluation.FashionClassifier``.
    """
    cfg = config(name, scale, **overrides)
    device = torch.device(device) if device is not None else get_device()
    path = pathlib.Path(checkpoint) if checkpoint is not None else cache_path(cfg)
    checkpoint_every = check_int("checkpoint_every", checkpoint_every, low=1)
    if compile is None:
        compile = cfg["scale"] == "full" and device.type == "cuda"
    return TRAINERS[name](cfg, path, device, progress, compile=compile, checkpoint_every=checkpoint_every)


class Samples(NamedTuple):
    """Images drawn from a cached model: ``images`` (on the CPU), the ``seconds_per_image`` the
    sampling took when it ran (also when they now came from the cache) and the ``config`` (the
    model's and the sampling's settings) they are keyed by."""
    images: torch.Tensor
    seconds_per_image: float
    config: dict


def load_or_sample(name: str = "fashion-ddpm", scale: str | None = None, *, n: int, weights: str = "ema",
                   sampler: str = "ddpm", steps: int = 1000, eta: float = 0.0, batch_size: int = 100, seed: int = 0,
                   clip_x0: float | None = 1.0, device=None, progress: bool = True, overrides: dict | None = None) -> Samples:
    """``n`` samples of recipe ``name``'s trained model, drawn once and then served from the cache.

    The images are ``evaluation.draw_samples`` of the model ``load_or_train(name, scale, **overrides)``
    returns (``overrides``: a dict of recipe settings, such as ``{"steps": 4500}``) (its ``weights``: "ema" or "raw"), so they are exactly what ``evaluation.compare_samplers``
    draws with the same ``sampler``, ``steps``, ``eta``, ``n``, ``batch_size`` and ``seed``. The key is
    the model's full config, these settings and the device type (a GPU samples in bfloat16, so its
    images differ from a CPU's): two lessons asking for the same samples get the same images, and
    the second one pays nothing for the 1000-step sampler.
    """
    from .data import cache_dir
    from .evaluation import draw_samples

    check_choice("name", name, [k for k in RECIPES if k.endswith("-ddpm")])
    check_choice("weights", weights, ("ema", "raw"))
    check_choice("sampler", sampler, SAMPLERS)
    device = torch.device(device) if device is not None else get_device()
    overrides = overrides or {}
    cfg = {"model": config(name, scale, **overrides), "weights": weights, "sampler": sampler, "steps": steps,
           "eta": float(eta), "n": check_int("n", n, low=1), "batch_size": check_int("batch_size", batch_size, low=1),
           "seed": check_int("seed", seed, low=0), "clip_x0": clip_x0, "device": device.type}
    digest = hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir() / "samples" / f"{name}-{cfg['model']['scale']}-{digest}.pt"
    if path.exists():
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state["config"] != cfg:
            raise ValueError(f"{path} holds samples of another config; delete it")
        return Samples(state["images"], state["seconds_per_image"], cfg)
    run = load_or_train(name, scale, device=device, progress=progress, **overrides)
    model = run.ema.model if weights == "ema" else run.model
    images, seconds = draw_samples(model, run.schedule, IMAGE_SHAPE[name], n, sampler, steps, eta, batch_size=batch_size,
                                   seed=seed, prediction=run.config["prediction"], device=device, progress=progress,
                                   clip_x0=clip_x0)
    with atomic_write(path) as f:
        torch.save({"images": images, "seconds_per_image": seconds, "config": cfg}, f)
    return Samples(images, seconds, cfg)


def model_from_checkpoint(path, use_ema: bool = True, device="cpu"):
    """Rebuild the U-Net and schedule a "fashion-ddpm" or "fashion-latent-ddpm" checkpoint
    describes: ``(model, schedule, config)``. A latent model denoises latents: decode its samples
    with ``latent_space_from_checkpoint``."""
    from . import schedules
    from .training import load_checkpoint
    from .unet import UNet

    state = load_checkpoint(path, map_location=device)
    cfg = state["config"]
    in_channels = cfg["autoencoder"]["ae"]["latent_channels"] if "autoencoder" in cfg else 1
    model = UNet(in_channels=in_channels, **unet_kwargs(cfg))
    weights = state["ema"]["model"] if use_ema and state.get("ema") else state["model"]
    model.load_state_dict(weights)
    return model.to(device).eval(), schedules.make(cfg["schedule"], T=cfg["T"]), cfg


def latent_space_from_checkpoint(path, device="cpu"):
    """The ``autoencoder.LatentSpace`` (autoencoder and latent scale) a finished "fashion-latent-ddpm"
    checkpoint carries, or None for a pixel model's checkpoint."""
    from .autoencoder import AutoEncoder, LatentSpace
    from .training import load_checkpoint

    state = load_checkpoint(path, map_location=device)
    if "autoencoder" not in state["config"]:
        return None
    if "autoencoder" not in state:
        raise ValueError(f"{path} is a latent model whose training has not finished (no autoencoder stored yet)")
    ae = AutoEncoder(in_channels=1, **unet_kwargs({"unet": state["config"]["autoencoder"]["ae"]}))
    ae.load_state_dict(state["autoencoder"]["model"])
    return LatentSpace(ae.to(device).eval(), float(state["autoencoder"]["latent_scale"]))
