"""One plain training loop for any model and any loss.

Each step: draw a batch, compute ``loss_fn(model, batch)``, step AdamW (Loshchilov & Hutter
2019), clip the gradient norm, and update an exponential moving average of the weights.
The EMA copy (Polyak averaging; used for sampling since DDPM, Appendix B) is

    theta_ema <- d_k theta_ema + (1 - d_k) theta,   d_k = min(decay, (1 + k) / (10 + k)),

where the warm-up d_k lets the average forget the random initial weights quickly.

On CUDA the loop uses bf16 autocast and channels_last memory; ``compile=True`` wraps the model
in ``torch.compile``. A checkpoint is one file written atomically (a temporary file, then a
rename), readable with ``torch.load(path, weights_only=True)``, holding the model, EMA,
optimizer, step, loss history, config and every random state the loop uses, so a resumed run
continues exactly where it stopped (bit for bit on CPU).
"""
from __future__ import annotations

import copy
import math
import os
import tempfile

import torch
from tqdm.auto import tqdm

from ._checks import check_choice, check_float, check_int

__all__ = ["EMA", "train", "save_checkpoint", "load_checkpoint"]


class EMA:
    """An exponential moving average of a model's weights, with warm-up."""

    def __init__(self, model: torch.nn.Module, decay: float = 0.999):
        self.decay = check_float("decay", decay, low=0.0, high=1.0)
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.updates = 0

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for ema_p, p in zip(self.model.parameters(), model.parameters()):
            ema_p.lerp_(p.detach(), 1 - d)
        for ema_b, b in zip(self.model.buffers(), model.buffers()):
            ema_b.copy_(b)
        self.updates += 1

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.updates = int(state["updates"])
        self.decay = float(state["decay"])


def save_checkpoint(path, state: dict) -> None:
    """Write ``state`` to ``path`` atomically: a crash leaves the old file or the new one, never half."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".pt")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_checkpoint(path, map_location="cpu") -> dict:
    """Read a checkpoint written by ``train`` (tensors and plain Python values only)."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:  # a truncated or foreign file
        raise ValueError(f"checkpoint {path} could not be read ({type(e).__name__}: {e})") from e


def _to(batch, device, channels_last: bool):
    if isinstance(batch, torch.Tensor):
        batch = batch.to(device, non_blocking=True)
        return batch.contiguous(memory_format=torch.channels_last) if channels_last and batch.dim() == 4 else batch
    if isinstance(batch, (tuple, list)):
        return type(batch)(_to(b, device, channels_last) for b in batch)
    if isinstance(batch, dict):
        return {k: _to(v, device, channels_last) for k, v in batch.items()}
    return batch


def train(model: torch.nn.Module, loss_fn, next_batch, steps: int, *, lr: float = 1e-3,
          weight_decay: float = 0.0, grad_clip: float | None = 1.0, ema: EMA | None = None,
          generator: torch.Generator | None = None, checkpoint=None, checkpoint_every: int | None = None,
          config: dict | None = None, amp: bool | None = None, channels_last: bool | None = None,
          compile: bool = False, progress: bool = True, desc: str = "training") -> list[float]:
    """Train ``model`` until ``steps`` AdamW steps are done; return the loss of every step.

    :param loss_fn: ``loss_fn(model, batch)`` returning a scalar loss.
    :param next_batch: ``next_batch(step)`` returning the batch for that step (tensors, or a
        tuple/dict of tensors; they are moved to the model's device).
    :param grad_clip: clip the gradient's global norm to this (None: no clipping).
    :param ema: an ``EMA`` of the model, updated after every step (and checkpointed).
    :param generator: the generator that ``next_batch`` and ``loss_fn`` draw from; its state
        is checkpointed so a resumed run draws the same batches and noise.
    :param checkpoint: a file path. If it exists, training resumes from it; it is (re)written
        every ``checkpoint_every`` steps and at the end.
    :param amp, channels_last: bf16 autocast and channels_last memory; default on for CUDA.
    """
    steps = check_int("steps", steps, low=0)
    lr = check_float("lr", lr, low=0, low_open=True)
    if grad_clip is not None:
        grad_clip = check_float("grad_clip", grad_clip, low=0, low_open=True)
    if checkpoint_every is not None:
        checkpoint_every = check_int("checkpoint_every", checkpoint_every, low=1)
    if not callable(loss_fn) or not callable(next_batch):
        raise TypeError("loss_fn and next_batch must be callables: loss_fn(model, batch), next_batch(step)")
    device = next(model.parameters()).device
    cuda = device.type == "cuda"
    amp = cuda if amp is None else amp
    channels_last = cuda if channels_last is None else channels_last
    if channels_last:
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    history: list[float] = []
    start = 0
    if checkpoint is not None and os.path.exists(checkpoint):
        state = load_checkpoint(checkpoint, map_location=device)
        saved = state.get("config") or {}
        clash = {k: (saved[k], v) for k, v in (config or {}).items() if k in saved and saved[k] != v}
        if clash:
            raise ValueError(f"checkpoint {checkpoint} was written by a run with another config ("
                             + ", ".join(f"{k}: {a!r} there, {b!r} here" for k, (a, b) in clash.items())
                             + "); resume it with its own settings or pass a new checkpoint path")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        if ema is not None and state.get("ema") is not None:
            ema.load_state_dict(state["ema"])
        start, history = int(state["step"]), list(state["history"])
        torch.set_rng_state(state["rng"]["torch"].cpu())
        if cuda and state["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(state["rng"]["cuda"].cpu())
        if generator is not None and state["rng"].get("generator") is not None:
            generator.set_state(state["rng"]["generator"].cpu())

    def save(step):
        rng = {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state() if cuda else None,
               "generator": generator.get_state() if generator is not None else None}
        save_checkpoint(checkpoint, {"model": model.state_dict(), "ema": ema.state_dict() if ema else None,
                                     "optimizer": opt.state_dict(), "step": step, "history": history,
                                     "config": dict(config or {}), "rng": rng})

    forward_model = torch.compile(model) if compile else model
    model.train()
    bar = tqdm(range(start, steps), desc=desc, disable=not progress, initial=start, total=steps)
    for step in bar:
        batch = _to(next_batch(step), device, channels_last)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
            loss = loss_fn(forward_model, batch)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(
                f"loss became {value} at step {step}: try a lower lr (now {lr}), keep gradient clipping on "
                f"(grad_clip={grad_clip}), turn off amp, or check the data for NaN/inf")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        if ema is not None:
            ema.update(model)
        history.append(value)
        if step % 25 == 0 or step == steps - 1:
            bar.set_postfix(loss=f"{value:.4f}")
        if checkpoint is not None and checkpoint_every and (step + 1) % checkpoint_every == 0:
            save(step + 1)
    if checkpoint is not None and (start < steps or not os.path.exists(checkpoint)):
        save(max(start, steps))
    model.eval()
    return history


# ---------------------------------------------------------------------------------------------
# The image recipe shared by the CLI and lessons 06–07: a DDPM on Fashion-MNIST at each scale.

FASHION_RECIPES = {
    "tiny": {"unet": dict(base_channels=16, channel_mults=(1, 2), attention_levels=(1,)),
             "batch_size": 32, "lr": 2e-3, "steps": 150, "ema_decay": 0.99, "subset": 2000, "prediction": "eps"},
    # small: 16 channels at 28x28 and most parameters at 7x7 and 4x4, where a convolution costs
    # 16-49x less per parameter; 1.6x faster to train than (32, 64, 64) at the same size.
    "small": {"unet": dict(base_channels=16, channel_mults=(1, 2, 4, 4), attention_levels=(2, 3)),
              "batch_size": 64, "lr": 1e-3, "steps": 3000, "ema_decay": 0.999, "subset": None, "prediction": "eps"},
    "full": {"unet": dict(base_channels=64, channel_mults=(1, 2, 2), num_res_blocks=2,
                          attention_levels=(1, 2), dropout=0.1),
             "batch_size": 128, "lr": 2e-4, "steps": 40000, "ema_decay": 0.9999, "subset": None, "prediction": "eps"},
}


def train_fashion_mnist(scale: str | None = None, steps: int | None = None, checkpoint=None, seed: int = 0,
                        device=None, progress: bool = True, checkpoint_every: int = 500,
                        prediction: str | None = None):
    """Train (or resume) the Fashion-MNIST DDPM of ``scale``; returns ``(model, ema, schedule, history)``.

    The schedule is DDPM's linear one (T = 1000). The model predicts ``prediction``: "eps", "x0"
    or "v" (default: the recipe's, "eps"; lesson 07 measures what "v" changes). Sample with the
    same ``prediction``. The config stored in the checkpoint is enough to rebuild the model
    (``model_from_checkpoint``) and names the prediction; resuming with another config is refused.
    """
    from . import data, loss, schedules
    from .device import get_device, get_scale
    from .unet import UNet

    scale = get_scale(scale)
    recipe = FASHION_RECIPES[scale]
    steps = recipe["steps"] if steps is None else check_int("steps", steps, low=1)
    prediction = check_choice("prediction", recipe["prediction"] if prediction is None else prediction,
                              loss.PREDICTIONS)
    device = torch.device(device) if device is not None else get_device()
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    images, _ = data.fashion_mnist("train")
    if recipe["subset"]:
        images = images[:recipe["subset"]]
    s = schedules.linear(T=1000)
    model = UNet(in_channels=1, **recipe["unet"]).to(device)
    ema = EMA(model, recipe["ema_decay"])
    config = {"dataset": "fashion-mnist", "scale": scale, "seed": seed, "T": 1000, "schedule": "linear",
              "prediction": prediction,
              "unet": {k: list(v) if isinstance(v, tuple) else v for k, v in recipe["unet"].items()},
              "batch_size": recipe["batch_size"], "lr": recipe["lr"]}

    def next_batch(step):
        return images[torch.randint(0, len(images), (recipe["batch_size"],), generator=g)]

    def loss_fn(m, x0):
        return loss.diffusion_loss(m, s, x0, prediction=prediction, generator=g)   # t and noise drawn on g

    history = train(model, loss_fn, next_batch, steps, lr=recipe["lr"], ema=ema, generator=g,
                    checkpoint=checkpoint, checkpoint_every=checkpoint_every if checkpoint else None,
                    config=config, progress=progress, desc=f"DDPM on Fashion-MNIST ({scale})")
    return model, ema, s, history


def model_from_checkpoint(path, use_ema: bool = True, device="cpu"):
    """Rebuild the U-Net and schedule a ``train_fashion_mnist`` checkpoint describes."""
    from . import schedules
    from .unet import UNet

    state = load_checkpoint(path, map_location=device)
    cfg = state["config"]
    model = UNet(in_channels=1, **{k: tuple(v) if isinstance(v, list) else v for k, v in cfg["unet"].items()})
    weights = state["ema"]["model"] if use_ema and state.get("ema") else state["model"]
    model.load_state_dict(weights)
    return model.to(device).eval(), schedules.make(cfg["schedule"], T=cfg["T"]), cfg
