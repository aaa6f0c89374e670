"""One plain training loop: draw a batch, compute a loss, step the optimiser, record it.

It serves any model and any loss: ``loss_fn(model, batch) -> scalar tensor``.
"""
from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm

from ._checks import check_float, check_int

__all__ = ["train"]


def train(model: torch.nn.Module, loss_fn, next_batch, steps: int, *, lr: float = 1e-3,
          weight_decay: float = 0.0, grad_clip: float | None = 1.0, progress: bool = True,
          desc: str = "training") -> list[float]:
    """Train ``model`` for ``steps`` AdamW steps and return the loss of every step.

    :param loss_fn: ``loss_fn(model, batch)`` returning a scalar loss.
    :param next_batch: ``next_batch(step)`` returning the batch for that step.
    :param grad_clip: clip the gradient's global norm to this (None: no clipping).
    """
    steps = check_int("steps", steps, low=0)
    lr = check_float("lr", lr, low=0, low_open=True)
    if not callable(loss_fn) or not callable(next_batch):
        raise TypeError("loss_fn and next_batch must be callables")
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    history = []
    model.train()
    bar = tqdm(range(steps), desc=desc, disable=not progress)
    for step in bar:
        loss = loss_fn(model, next_batch(step))
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"loss became {value} at step {step}: try a lower lr, "
                                     f"gradient clipping (grad_clip), or check the data for NaN")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        history.append(value)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{value:.4f}")
    model.eval()
    return history
