"""What training costs: activation memory, training speed, and the gradient noise scale.

Measured the same way on every device: ``activation_bytes`` counts what autograd keeps for the
backward pass, ``training_speed`` times whole optimiser steps (the device synchronised around each
timing), and ``gradient_noise_scale`` estimates the batch size past which more images per step
stop paying (McCandlish et al. 2018).
"""
from __future__ import annotations

import time

import torch
from torch import nn

from ._checks import check_int
from .device import synchronize
from .distributed import shard

__all__ = ["activation_bytes", "training_speed", "gradient_noise_scale"]


def gradient_noise_scale(model: nn.Module, loss_fn, batches, small: int) -> dict:
    """The simple noise scale B_simple = tr(Sigma) / |G|^2 (McCandlish et al. 2018, eq. 2.8), with G the
    mean of the per-example gradients and Sigma their covariance: the batch size at which a batch
    gradient's noise, tr(Sigma) / B, equals its signal |G|^2. Well below it, a B times larger batch
    does about the work of B steps; well above it, the extra images mostly average away noise a step
    no longer has, so on the same images the larger batch falls behind.

    Estimated without per-example gradients (their Appendix A.1): a batch of B gives
    E|G_B|^2 = |G|^2 + tr(Sigma) / B, so the squared norms of the gradients of each big batch and of its
    chunks of ``small`` rows, each averaged over ``batches``, give both unknowns.

    :param loss_fn: ``loss_fn(model, batch)`` returning the batch's *mean* loss.
    :param batches: big batches (tensors, or tuples/dicts of them split along dim 0 as ``distributed.shard``
        splits), all of one size, a multiple of ``small`` and at least twice it. The model is used in
        the mode it is in (train mode adds dropout's noise to Sigma).
    :returns: ``b_simple``, ``trace_sigma`` and ``grad_norm_sq`` (the estimates of tr(Sigma) and |G|^2).
    """
    small = check_int("small", small, low=1)
    params = [p for p in model.parameters() if p.requires_grad]
    big_sq, small_sq, size = [], [], None
    for batch in batches:
        first = batch if isinstance(batch, torch.Tensor) else next(iter(
            batch.values() if isinstance(batch, dict) else batch))
        n = len(first)
        if n % small or n < 2 * small or (size is not None and n != size):
            raise ValueError(f"batches must all hold one multiple of small ({small}) rows, at least {2 * small}; "
                             f"got {n}" + (f" after {size}" if size is not None and n != size else ""))
        size, k, total, chunks = n, n // small, 0.0, 0.0
        for i in range(k):
            grads = torch.autograd.grad(loss_fn(model, shard(batch, i, k)), params, allow_unused=True)
            flat = torch.cat([(g if g is not None else torch.zeros_like(q)).reshape(-1).double()
                              for g, q in zip(grads, params)])
            chunks += float(flat.pow(2).sum())
            total = total + flat
        big_sq.append(float((total / k).pow(2).sum()))
        small_sq.append(chunks / k)
    if not big_sq:
        raise ValueError("batches must hold at least one batch")
    b, B = small, size
    g_big, g_small = sum(big_sq) / len(big_sq), sum(small_sq) / len(small_sq)
    grad_norm_sq = (B * g_big - b * g_small) / (B - b)
    trace_sigma = (g_small - g_big) / (1 / b - 1 / B)
    return {"b_simple": trace_sigma / grad_norm_sq, "trace_sigma": trace_sigma, "grad_norm_sq": grad_norm_sq}


def activation_bytes(net: nn.Module, *inputs) -> int:
    """Bytes of every leaf module's output in one forward pass of ``net(*inputs)``: the tensors
    autograd keeps for the backward pass, a measure of training memory that is the same on every
    device (counted with forward hooks; the pass itself runs without gradients)."""
    total = 0

    def count(module, args, out):
        nonlocal total
        if isinstance(out, torch.Tensor) and not list(module.children()):
            total += out.numel() * out.element_size()

    hooks = [m.register_forward_hook(count) for m in net.modules()]
    try:
        with torch.no_grad():
            net(*inputs)
    finally:
        for h in hooks:
            h.remove()
    return total


def training_speed(net: nn.Module, loss_fn, batch: torch.Tensor, steps: int = 3, tries: int = 2,
                   lr: float = 1e-4) -> tuple[float, float | None]:
    """Training examples per second of ``net`` on ``batch``: one AdamW warm-up step, then the best of
    ``tries`` timings of ``steps`` steps of ``loss_fn(net, batch)`` (the device is synchronised before
    each clock read). Also the CUDA allocator's peak over a timing in MB (None elsewhere). It
    trains ``net``: pass a copy of a model you want to keep."""
    steps = check_int("steps", steps, low=1)
    tries = check_int("tries", tries, low=1)
    dev = batch.device
    opt = torch.optim.AdamW(net.parameters(), lr=lr)

    def step():
        value = loss_fn(net, batch)
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()

    step()
    best, peak = 0.0, None
    for _ in range(tries):
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        synchronize(dev)
        start = time.perf_counter()
        for _ in range(steps):
            step()
        synchronize(dev)
        best = max(best, steps * len(batch) / (time.perf_counter() - start))
        if dev.type == "cuda":
            peak = torch.cuda.max_memory_allocated(dev) / 2**20
    return best, peak
