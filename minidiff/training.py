"""One plain training loop for any model, any loss, any number of optimizers.

Each step: draw a batch, run a *step function* on it, then update an exponential moving average
of the weights. The default step is the one every diffusion lesson uses: compute
``loss_fn(model, batch)``, back-propagate, clip the gradient norm, and step AdamW (Loshchilov &
Hutter 2019). A GAN passes its own step (two optimizers, alternating updates) and the loop
stays the same.

The EMA copy (Polyak averaging; used for sampling since DDPM, Appendix B) is

    theta_ema <- d_k theta_ema + (1 - d_k) theta,   d_k = 0 for k < warmup, else decay,

so during the first ``warmup`` updates the average simply follows the weights (it forgets the
random start), and from then on the configured ``decay`` is the one in force: its window is
about 1 / (1 - decay) steps. Each recipe (``minidiff/experiments``) sets a small, stated warmup.

On CUDA the loop uses bf16 autocast and channels_last memory; ``compile=True`` wraps the model
in ``torch.compile``. It never waits for the GPU inside a step: losses stay on the device and are
read every ``log_every`` steps (the NaN stop fires then, naming the step), the EMA is one fused
``torch._foreach_lerp_``. A checkpoint is one file written atomically, readable with
``torch.load(path, weights_only=True)``, holding the model, EMA, optimizer(s), step, loss
history, config, every random state the loop uses and the wall-clock seconds spent training (summed
over resumed parts), so a resumed run continues exactly where it stopped (bit for bit on CPU).
"""
from __future__ import annotations

import copy
import math
import os
import time

import torch
from tqdm.auto import tqdm

from ._checks import check_float, check_int
from ._files import atomic_write
from .distributed import agree, rank_seed, shard, world

__all__ = ["EMA", "train", "loss_step", "save_checkpoint", "load_checkpoint"]


class EMA:
    """An exponential moving average of a model's weights: a copy that follows the weights for
    the first ``warmup`` updates, then averages them with ``decay`` (see the module docstring)."""

    def __init__(self, model: torch.nn.Module, decay: float = 0.999, warmup: int = 0):
        self.decay = check_float("decay", decay, low=0.0, high=1.0)
        self.warmup = check_int("warmup", warmup, low=0)
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.updates = 0

    def decay_at(self, k: int) -> float:
        """d_k, the decay the k-th update (counting from 0) uses."""
        return 0.0 if k < self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        d = self.decay_at(self.updates)
        torch._foreach_lerp_(list(self.model.parameters()), [p.detach() for p in model.parameters()], 1.0 - d)
        for ema_b, b in zip(self.model.buffers(), model.buffers()):
            ema_b.copy_(b)
        self.updates += 1

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "updates": self.updates, "decay": self.decay,
                "warmup": self.warmup}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.updates = int(state["updates"])
        self.decay = float(state["decay"])
        self.warmup = int(state.get("warmup", 0))


def save_checkpoint(path, state: dict) -> None:
    """Write ``state`` to ``path`` atomically: a crash leaves the old file or the new one, never half."""
    with atomic_write(path) as f:
        torch.save(state, f)


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


def loss_step(loss_fn, *, grad_clip: float | None = 1.0, amp: bool = False):
    """The default step function: ``step(model, batch, optimizer) -> loss`` computes
    ``loss_fn(model, batch)`` (under bf16 autocast when ``amp``), back-propagates, clips the
    gradient's global norm to ``grad_clip`` (None: no clipping) and steps the optimizer. A
    ``loss_fn`` may return a dict of scalars: its "loss" is back-propagated and the whole dict,
    detached, is returned (so its parts are logged)."""
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable as loss_fn(model, batch), got {type(loss_fn).__name__}")
    if grad_clip is not None:
        grad_clip = check_float("grad_clip", grad_clip, low=0, low_open=True)

    def step(model, batch, optimizer):
        device = next(model.parameters()).device
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
            loss = loss_fn(model, batch)
        optimizer.zero_grad(set_to_none=True)
        (loss["loss"] if isinstance(loss, dict) else loss).backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        return {k: v.detach() for k, v in loss.items()} if isinstance(loss, dict) else loss.detach()

    return step


def _state(optimizer):
    if isinstance(optimizer, dict):
        return {k: o.state_dict() for k, o in optimizer.items()}
    return optimizer.state_dict()


def _load_state(optimizer, state) -> None:
    if isinstance(optimizer, dict):
        for k, o in optimizer.items():
            o.load_state_dict(state[k])
    else:
        optimizer.load_state_dict(state)


class _LossLog:
    """Losses kept on the device and read in windows: one wait for the GPU per window, not per step."""

    def __init__(self, history: list, lr_hint: str, world_size: int = 1):
        self.history, self.window, self.first_step, self.lr_hint = history, [], None, lr_hint
        self.world_size = world_size

    def _mean_over_ranks(self, stacked: torch.Tensor) -> torch.Tensor:
        """Each rank's losses averaged over the ranks (one collective per window): the global batch's loss."""
        if self.world_size > 1:
            import torch.distributed as dist
            dist.all_reduce(stacked)
            stacked = stacked / self.world_size
        return stacked

    def add(self, step: int, loss) -> None:
        if self.first_step is None:
            self.first_step = step
        self.window.append(loss)

    def flush(self):
        """Append the window to the history; stop with the step's number if a loss is NaN or inf."""
        if not self.window:
            return None
        if isinstance(self.window[0], dict):
            keys = list(self.window[0])
            cols = {k: self._mean_over_ranks(torch.stack([w[k].float() for w in self.window])).tolist() for k in keys}
            values = [{k: cols[k][j] for k in keys} for j in range(len(self.window))]
            finite = [all(math.isfinite(v) for v in row.values()) for row in values]
        else:
            values = self._mean_over_ranks(torch.stack([w.float() for w in self.window])).tolist()
            finite = [math.isfinite(v) for v in values]
        if not all(finite):
            j = finite.index(False)
            raise FloatingPointError(
                f"loss became {values[j]} at step {self.first_step + j}: " + self.lr_hint)
        self.history.extend(values)
        self.window, self.first_step = [], None
        return values[-1]


def train(model: torch.nn.Module, loss_fn, next_batch, steps: int, *, lr: float = 1e-3,
          weight_decay: float = 0.0, grad_clip: float | None = 1.0, optimizer=None, step_fn=None,
          ema: EMA | None = None, generator: torch.Generator | None = None, checkpoint=None,
          checkpoint_every: int | None = None, config: dict | None = None, amp: bool | None = None,
          channels_last: bool | None = None, compile: bool = False, log_every: int = 100,
          progress: bool = True, desc: str = "training") -> list:
    """Train ``model`` until ``steps`` steps are done; return the loss of every step.

    :param loss_fn: ``loss_fn(model, batch)`` returning a scalar loss (used by the default step;
        may be None when ``step_fn`` is given).
    :param next_batch: ``next_batch(step)`` returning the batch for that step (tensors, or a
        tuple/dict of tensors; they are moved to the model's device unless already there).
    :param optimizer: an optimizer, a dict of them (e.g. ``{"g": ..., "d": ...}`` for a GAN), or
        a factory ``optimizer(model)`` returning either; default AdamW(lr, weight_decay), fused on CUDA.
    :param step_fn: ``step_fn(model, batch, optimizer) -> loss`` doing one whole update (zero
        the gradients, backward, step) and returning a detached scalar tensor or a dict of them;
        default ``loss_step(loss_fn, grad_clip=grad_clip, amp=amp)``. A custom step does its own
        autocast and clipping.
    :param ema: an ``EMA`` of the model, updated after every step (and checkpointed).
    :param generator: the generator that ``next_batch`` and ``loss_fn`` draw from; its state
        is checkpointed so a resumed run draws the same batches and noise.
    :param checkpoint: a file path. If it exists, training resumes from it; it is (re)written
        every ``checkpoint_every`` steps and at the end.
    :param amp, channels_last: bf16 autocast and channels_last memory; default on for CUDA.
    :param log_every: read the losses from the device every this many steps (and at the end and
        at checkpoints); a NaN or infinite loss stops the run at the next read, naming its step.
    :returns: the history, one float per step (one dict per step for a step returning dicts).

    Under torchrun (``distributed.init_distributed``), every process runs this same loop: ``next_batch`` draws
    the *global* batch identically on every rank (same seed), ``shard`` gives each rank its rows,
    DistributedDataParallel averages the gradients, the losses are averaged over the ranks, and
    only rank 0 writes checkpoints and shows progress. Whatever the loss draws at random (t, noise)
    must come with the batch, drawn for the global batch (as every recipe does), so that N processes
    train what one process trains at the same global batch, up to the order of floating-point sums
    (and but for dropout: each rank draws its own masks, ``distributed.rank_seed``). The ranks must
    agree on the step they resume from (``distributed.agree``), or every one of them refuses.

    What ``train`` does to ``model``, on purpose: it leaves it in eval mode, ready to sample, and
    with ``channels_last`` (default on CUDA) it converts the model (and the EMA copy) to the
    channels_last memory format in place, which changes no value.
    """
    steps = check_int("steps", steps, low=0)
    lr = check_float("lr", lr, low=0, low_open=True)
    weight_decay = check_float("weight_decay", weight_decay, low=0)
    log_every = check_int("log_every", log_every, low=1)
    if checkpoint_every is not None:
        checkpoint_every = check_int("checkpoint_every", checkpoint_every, low=1)
    if not callable(next_batch) or (step_fn is None and not callable(loss_fn)):
        raise TypeError("loss_fn and next_batch must be callables: loss_fn(model, batch), next_batch(step) "
                        "(loss_fn may be None when step_fn is given)")
    if step_fn is not None and not callable(step_fn):
        raise TypeError(f"step_fn must be callable as step_fn(model, batch, optimizer), got {type(step_fn).__name__}")
    rank, world_size = world()
    if step_fn is not None and world_size > 1:
        raise ValueError(f"step_fn: a custom step cannot train under torchrun (world size {world_size}): what it "
                         "draws at random is not part of the global batch, and it may call the model's parts outside "
                         "DistributedDataParallel; train it in one process (without torchrun)")
    device = next(model.parameters()).device
    cuda = device.type == "cuda"
    amp = cuda if amp is None else amp
    channels_last = cuda if channels_last is None else channels_last
    if channels_last:
        model.to(memory_format=torch.channels_last)
        if ema is not None:
            ema.model.to(memory_format=torch.channels_last)
    if optimizer is None:               # on CUDA the fused kernel: one launch for all parameters
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, **({"fused": True} if cuda else {}))
    elif isinstance(optimizer, (torch.optim.Optimizer, dict)):
        opt = optimizer
    elif callable(optimizer):
        opt = optimizer(model)
    else:
        raise TypeError(f"optimizer must be an optimizer, a dict of them or a factory optimizer(model), "
                        f"got {type(optimizer).__name__}")
    step_fn = step_fn or loss_step(loss_fn, grad_clip=grad_clip, amp=amp)
    history: list = []
    start, seconds_before, seed = 0, 0.0, torch.initial_seed()
    if checkpoint is not None and os.path.exists(checkpoint):
        state = load_checkpoint(checkpoint, map_location=device)
        saved = state.get("config") or {}
        clash = {k: (saved[k], v) for k, v in (config or {}).items() if k in saved and saved[k] != v}
        if clash:
            raise ValueError(f"checkpoint {checkpoint} was written by a run with another config ("
                             + ", ".join(f"{k}: {a!r} there, {b!r} here" for k, (a, b) in clash.items())
                             + "); resume it with its own settings or pass a new checkpoint path")
        model.load_state_dict(state["model"])
        _load_state(opt, state["optimizer"])
        if ema is not None and state.get("ema") is not None:
            ema.load_state_dict(state["ema"])
        start, history = int(state["step"]), list(state["history"])
        seconds_before = float(state.get("seconds", 0.0))
        torch.set_rng_state(state["rng"]["torch"].cpu())
        if cuda and state["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(state["rng"]["cuda"].cpu())
        if generator is not None and state["rng"].get("generator") is not None:
            generator.set_state(state["rng"]["generator"].cpu())
    agree("the step this run resumes from", start)        # under torchrun: every rank, or refuse
    log = _LossLog(history, f"try a lower lr (now {lr}), keep gradient clipping on (grad_clip={grad_clip}), "
                            "turn off amp, or check the data for NaN/inf", world_size)

    def save(step):
        log.flush()                     # on every rank: the losses are averaged over the ranks
        if rank != 0:                   # one writer
            return
        rng = {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state() if cuda else None,
               "generator": generator.get_state() if generator is not None else None}
        save_checkpoint(checkpoint, {"model": model.state_dict(), "ema": ema.state_dict() if ema else None,
                                     "optimizer": _state(opt), "step": step, "history": history,
                                     "config": dict(config or {}), "rng": rng,
                                     "seconds": seconds_before + time.perf_counter() - started})

    forward_model = model
    if world_size > 1:                  # gradients averaged over the ranks in backward
        from torch.nn.parallel import DistributedDataParallel
        forward_model = DistributedDataParallel(model, device_ids=[device.index] if cuda else None)
    forward_model = torch.compile(forward_model) if compile else forward_model
    model.train()
    started = time.perf_counter()
    bar = tqdm(range(start, steps), desc=desc, disable=not progress or rank != 0, initial=start, total=steps)
    for step in bar:
        batch = _to(shard(next_batch(step), rank, world_size), device, channels_last)
        if world_size > 1:              # each rank its own dropout masks, the same again on resume
            torch.manual_seed(rank_seed(seed, step))
        log.add(step, step_fn(forward_model, batch, opt))
        if ema is not None:
            ema.update(model)
        if (step + 1) % log_every == 0 or step == steps - 1:
            last = log.flush()
            bar.set_postfix({k: f"{v:.4f}" for k, v in (last if isinstance(last, dict) else {"loss": last}).items()})
        if checkpoint is not None and checkpoint_every and (step + 1) % checkpoint_every == 0:
            save(step + 1)
    log.flush()
    if checkpoint is not None and (start < steps or not os.path.exists(checkpoint)):
        save(max(start, steps))
    if world_size > 1:                  # no rank reads the file before rank 0 has written it
        import torch.distributed as dist
        dist.barrier()
    model.eval()
    return history
