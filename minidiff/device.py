"""Run set-up: which device, which scale, which seed.

``MINIDIFF_SCALE`` picks the size of every model, data subset and step count:
``tiny`` (CI and tests: seconds on two CPU cores), ``small`` (a laptop CPU: minutes) or
``full`` (one GPU: the results the lessons talk about). The default is ``full`` where CUDA is
present, else ``small``. ``MINIDIFF_DEVICE`` overrides the device (cuda, mps, cpu).
"""
from __future__ import annotations

import os
import platform
import random

import numpy as np
import torch

from ._checks import check_choice, check_int

__all__ = ["SCALES", "get_device", "get_scale", "by_scale", "sampling_batch_size", "synchronize", "seed_everything",
           "describe"]

SCALES = ("tiny", "small", "full")


def get_device(prefer: str | None = None) -> torch.device:
    """The best device available: ``prefer`` or $MINIDIFF_DEVICE if set, else cuda, mps, cpu."""
    choice = prefer or os.environ.get("MINIDIFF_DEVICE") or None
    if choice is not None:
        check_choice("device", choice, ("cuda", "mps", "cpu"))
        if choice == "cuda" and not torch.cuda.is_available():
            raise ValueError("device 'cuda' was asked for but torch.cuda.is_available() is False")
        if choice == "mps" and not torch.backends.mps.is_available():
            raise ValueError("device 'mps' was asked for but torch.backends.mps.is_available() is False")
        return torch.device(choice)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def get_scale(scale: str | None = None) -> str:
    """``scale`` or $MINIDIFF_SCALE, else "full" with CUDA and "small" without."""
    scale = scale or os.environ.get("MINIDIFF_SCALE") or ("full" if torch.cuda.is_available() else "small")
    return check_choice("MINIDIFF_SCALE", scale, SCALES)


def by_scale(tiny, small, full, scale: str | None = None):
    """Pick the value for the current scale: ``steps = by_scale(200, 3000, 20000)``."""
    return {"tiny": tiny, "small": small, "full": full}[get_scale(scale)]


def sampling_batch_size(device) -> int:
    """Images per network call when sampling 28×28 images: 100 on a CPU, 1000 on an accelerator.

    On two CPU cores the small U-Net's forward pass ran at 255 images/s in batches of 100 and
    213 in batches of 200 (cache-bound); a GPU wants large batches.
    """
    return 100 if torch.device(device).type == "cpu" else 1000


def synchronize(device) -> None:
    """Wait until ``device`` has finished the work queued on it (CUDA and MPS run asynchronously),
    so that a clock read afterwards times the work; nothing to wait for on a CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python, NumPy and PyTorch; return a CPU ``torch.Generator`` seeded the same way."""
    seed = check_int("seed", seed, low=0)
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def describe(scale: str | None = None, device: torch.device | None = None) -> str:
    """One line saying what this run uses: minidiff version, device, scale, torch, CPU threads."""
    from . import __version__
    device = device or get_device()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    return (f"minidiff {__version__} | device: {device.type} ({name}) | scale: {get_scale(scale)} | "
            f"torch {torch.__version__} | {torch.get_num_threads()} CPU threads")
