"""Argument checks shared by every module: one place that says what is allowed.

Each check raises ``TypeError`` for the wrong kind of thing and ``ValueError`` for the right
kind with a bad value, and names the argument and the allowed range in its message.
"""
from __future__ import annotations

import math
import numbers

import torch


def check_int(name: str, value, *, low: int | None = None, high: int | None = None) -> int:
    """Return ``value`` as an int after checking it is an integer in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        lo = "-inf" if low is None else low
        hi = "inf" if high is None else high
        raise ValueError(f"{name} must be in [{lo}, {hi}], got {value}")
    return value


def check_float(name: str, value, *, low: float | None = None, high: float | None = None,
                low_open: bool = False, high_open: bool = False) -> float:
    """Return ``value`` as a float after checking it is a finite number in the given range."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} ({value!r})")
    value = float(value)
    lo_bad = low is not None and (value <= low if low_open else value < low)
    hi_bad = high is not None and (value >= high if high_open else value > high)
    if not math.isfinite(value) or lo_bad or hi_bad:
        lb = "(" if low_open else "["
        hb = ")" if high_open else "]"
        lo = "-inf" if low is None else low
        hi = "inf" if high is None else high
        raise ValueError(f"{name} must be in {lb}{lo}, {hi}{hb}, got {value}")
    return value


def check_choice(name: str, value, choices) -> str:
    """Check ``value`` is one of ``choices`` (strings)."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, one of {sorted(choices)}, got {type(value).__name__}")
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; allowed: {', '.join(sorted(choices))}")
    return value


def check_tensor(name: str, value) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return value


def check_timesteps(t, T: int, batch: int | None = None, name: str = "t"):
    """Check ``t`` is an int in [0, T-1] (one timestep for a whole batch) or an integer tensor of
    shape (batch,) with values in [0, T-1].

    The range of a tensor is read on the CPU; on CUDA it is asserted on the device
    (``torch._assert_async``) so that the check never waits for the GPU.
    """
    if isinstance(t, numbers.Integral) and not isinstance(t, bool):
        return check_int(name, t, low=0, high=T - 1)
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be an int or an integer tensor of shape (N,), got {type(t).__name__}")
    if t.dtype in (torch.bool,) or t.is_floating_point() or t.is_complex():
        raise TypeError(f"{name} must be an integer tensor (torch.long), got dtype {t.dtype}")
    if t.dim() != 1:
        raise ValueError(f"{name} must have shape (N,), got shape {tuple(t.shape)}")
    if batch is not None and t.shape[0] != batch:
        raise ValueError(f"{name} must have one timestep per sample: shape ({batch},), "
                         f"got {tuple(t.shape)}")
    if not t.numel():
        return t
    if t.device.type == "cuda":
        torch._assert_async(((t >= 0) & (t <= T - 1)).all(), f"{name} must be in [0, {T - 1}] (T={T})")
        return t
    lo, hi = torch.aminmax(t)
    if int(lo) < 0 or int(hi) > T - 1:
        raise ValueError(f"{name} must be in [0, {T - 1}] (T={T}), got values in [{int(lo)}, {int(hi)}]")
    return t


def check_same_shape(name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor) -> None:
    check_tensor(name_a, a)
    check_tensor(name_b, b)
    if a.shape != b.shape:
        raise ValueError(f"{name_b} must have the same shape as {name_a}: "
                         f"{tuple(a.shape)}, got {tuple(b.shape)}")

