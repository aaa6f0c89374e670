"""Lesson 09: CLIP on captioned shapes, a text-to-image DDPM, and whether its pictures obey.

The DDPM reads its prompts through frozen CLIP, a diffusion-trained encoder or one-hot attributes; a
judge classifier reads the samples. Measured here: zero-shot accuracy, condition accuracy and the
guidance sweep."""
from __future__ import annotations

from typing import NamedTuple

import torch

from .. import data
from .._checks import check_choice, check_int
from ..cache import Recipe, identity, train_config
from ..clip import CLIP, TextConditionedUNet, TextEncoder, Tokenizer, contrastive_loss, zero_shot_classify
from ..evaluation import batched, draw_guided, features, model_device, train_classifier
from ..guidance import drop_condition
from ..metrics import frechet_distance, precision_recall
from ..distributed import gather, unwrap
from ..training import load_checkpoint, train
from ..unet import UNet
from .common import (ConditionalDDPMRun, load_classifier, save_classifier, train_ddpm, training_seconds,
                     unet_kwargs)

__all__ = ["SHAPES_CLIP", "SHAPES_TEXT_DDPM", "SHAPES_CLASSIFIER", "HELD_OUT", "CLIPRun", "shapes_tokenizer",
           "shapes_train_set", "shapes_eval_set", "condition_accuracy", "score_conditional", "conditional_context",
           "guidance_sweep", "ZERO_SHOT_TEMPLATES", "shapes_zero_shot"]

# The (colour, shape) pairs no shapes model ever sees in training: lesson 09 tests on them.
HELD_OUT = [("red", "triangle"), ("green", "square"), ("blue", "circle")]
# What every shapes model is trained on (fixed at every scale; the pairs as lists, as a config stores them).
_SHAPES = {"dataset": "shapes", "hold_out": [list(p) for p in HELD_OUT], "context_length": 12, "train_set": 4096}


def shapes_tokenizer(context_length: int):
    """The tokenizer of every shapes model: the words of all 150 captions (``data.shape_captions``)."""
    return Tokenizer.from_captions(data.shape_captions(), context_length)


def shapes_train_set(cfg, device):
    """The config's shapes training set: ``train_set`` pictures drawn once (seeded) without the
    held-out pairs, with their captions' tokens and caption ids (``data.shape_label``), on ``device``."""
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

    history = train(model, loss_fn, draw, cfg["steps"], lr=cfg["lr"], generator=g, checkpoint=path,
                    checkpoint_every=checkpoint_every, config=identity(cfg), progress=progress, compile=compile,
                    desc=f"CLIP on shapes ({cfg['scale']})")
    return CLIPRun(model.eval(), tok, history, cfg, training_seconds(load_checkpoint(path)))


# A CNN image encoder and a causal Transformer text encoder trained with clip.contrastive_loss; targets
# "groups" makes equal captions positives of each other, "naive" is the plain diagonal target (the floor
# lesson 09 measures).
SHAPES_CLIP = Recipe(
    "shapes-clip", train=_train_shapes_clip, fixed=_SHAPES,
    settings={
        "tiny": {"size": 16, "text": {"width": 32, "layers": 1, "heads": 2}, "image": {"width": 16}, "embed_dim": 32,
                 "batch_size": 64, "lr": 2e-3, "steps": 150, "targets": "groups"},
        "small": {"size": 24, "text": {"width": 64, "layers": 2, "heads": 4}, "image": {"width": 32}, "embed_dim": 64,
                  "batch_size": 128, "lr": 1e-3, "steps": 1500, "targets": "groups"},
        "full": {"size": 32, "text": {"width": 128, "layers": 4, "heads": 4}, "image": {"width": 64},
                 "embed_dim": 128, "batch_size": 256, "lr": 5e-4, "steps": 6000, "targets": "groups"},
    })


def _train_shapes_text_ddpm(cfg, path, device, progress, compile=False, checkpoint_every=500) -> ConditionalDDPMRun:
    """The text-to-image DDPM: ``clip.TextConditionedUNet`` on the shapes training set, its
    prompt replaced by the empty prompt (or, for one-hot attributes, by zeros) with probability
    ``cond_dropout``."""
    data_set = shapes_train_set(cfg, device)
    if cfg["condition"] == "onehot":
        context, null = data_set["one_hot"], torch.zeros_like(data_set["one_hot"][:1])
        context_dim, tok = context.shape[-1], None
    else:
        tok = shapes_tokenizer(cfg["context_length"])
        context, null = data_set["tokens"], tok.encode([""]).to(device)
        context_dim = cfg["clip"]["text"]["width"]
        if cfg["condition"] == "clip":
            frozen = train_config(SHAPES_CLIP, cfg["clip"], device=device, progress=progress, compile=compile).model.text

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

    model, ema, s, history, state = train_ddpm(cfg, path, device, progress, compile, checkpoint_every, 3,
                                               draw_batch, f"text-to-image DDPM on shapes, {cfg['condition']} "
                                                           f"({cfg['scale']})", make_model=make_model)
    return ConditionalDDPMRun(model, ema, s, history, cfg, training_seconds(state), {"context": null}, tok)


def _configure_text_ddpm(cfg, overrides):
    """One of three conditions; with one-hot attributes there is no text encoder at all."""
    check_choice("condition", cfg["condition"], ("clip", "learned", "onehot"))
    if cfg["condition"] == "onehot":
        cfg.pop("clip")
    return cfg


# A U-Net with cross-attention to a prompt, condition dropped (to the empty prompt) 10% of the time.
# condition "clip": the frozen text encoder of the scale's "shapes-clip" (whose config is part of this
# one's); "learned": the same encoder, freshly initialised and trained by the diffusion loss alone;
# "onehot": no text, 4 one-hot attribute tokens.
SHAPES_TEXT_DDPM = Recipe(
    "shapes-text-ddpm", train=_train_shapes_text_ddpm, needs={"clip": SHAPES_CLIP}, configure=_configure_text_ddpm,
    fixed={**_SHAPES, "T": 1000, "schedule": "linear"},
    settings={
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
    })


def _train_shapes_classifier(cfg, path, device, progress, compile=False, checkpoint_every=None):
    """The judge of shapes samples: a ``FashionClassifier`` over the 150 combinations
    (``data.shape_label``) of ``train_set`` real pictures (no pair held out), each with Gaussian
    pixel noise of a random standard deviation in [0, ``noise``]; no flips (left/right is a label)."""
    if path.exists():
        return load_classifier(cfg, path, device)
    torch.manual_seed(cfg["seed"])
    g = torch.Generator().manual_seed(cfg["seed"])
    x, _, attrs = data.shapes(cfg["train_set"], cfg["size"], generator=g)
    x = x + cfg["noise"] * torch.rand(len(x), 1, 1, 1, generator=g) * torch.randn(x.shape, generator=g)
    model = train_classifier(x, data.shape_label(attrs), cfg["steps"], batch_size=cfg["batch_size"], lr=cfg["lr"],
                             generator=g, device=device, progress=progress, flip=False)
    return save_classifier(model, cfg, path)


# The judge of lesson 09: one FashionClassifier on the 150 (colour, shape, size, position) combinations
# of real shapes (all of them, held-out pairs included), with pixel noise added so that slightly noisy
# samples are still read; its features give the shapes' FID.
SHAPES_CLASSIFIER = Recipe(
    "shapes-classifier", train=_train_shapes_classifier, fixed={"dataset": "shapes", "train_set": 6000},
    settings={"tiny": {"size": 16, "steps": 150, "batch_size": 128, "lr": 2e-3, "noise": 0.2},
              "small": {"size": 24, "steps": 600, "batch_size": 128, "lr": 2e-3, "noise": 0.2},
              "full": {"size": 32, "steps": 1500, "batch_size": 128, "lr": 2e-3, "noise": 0.2}})


# ---------------------------------------------------------------------------------------------
# Does the picture show what the prompt asked?

def shapes_eval_set(size: int, n: int, held_out: bool, pairs, seed: int = 0) -> dict:
    """``n`` real shapes pictures with their ``captions`` and ``attributes``: only the held-out
    (colour, shape) ``pairs`` when ``held_out``, else every pair but those (the training ones)."""
    g = torch.Generator().manual_seed(check_int("seed", seed, low=0))
    kw = {"only": pairs} if held_out else {"exclude": pairs}
    images, captions, attributes = data.shapes(check_int("n", n, low=1), size, generator=g, **kw)
    return {"images": images, "captions": captions, "attributes": attributes}


def condition_accuracy(classifier, images: torch.Tensor, attributes: dict) -> dict:
    """The share of ``images`` that the shapes classifier (a ``FashionClassifier`` over the 150
    ``data.shape_label`` combinations) reads with the asked-for value, per attribute, and "all"
    (every attribute right)."""
    read = data.shape_attributes(batched(classifier, images.clamp(-1, 1), model_device(classifier)).argmax(1))
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
    return run.tokenizer.encode(captions) if run.tokenizer is not None else data.shape_one_hot(attributes)


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
    check_choice("template", template, ZERO_SHOT_TEMPLATES)
    A, dev = data.SHAPE_ATTRIBUTES, model_device(clip_model)
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

