"""The forward process: how data is turned into noise, one step or all at once.

One step (Ho et al. 2020, "DDPM", eq. 2):

    q(x_t | x_{t-1}) = N(x_t; sqrt(1 - beta_t) x_{t-1}, beta_t I)

and, because a chain of Gaussians is Gaussian, any step in closed form (DDPM eq. 4):

    q(x_t | x_0) = N(x_t; sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I)
    x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps,   eps ~ N(0, I)

Index convention (see ``schedules``): ``t`` runs over 0..T-1 and t = 0 is one noising step.
"""
from __future__ import annotations

import torch

from ._checks import check_same_shape, check_tensor, check_timesteps
from .schedules import NoiseSchedule, at

__all__ = ["randn_like", "q_step", "q_sample", "q_mean_variance", "q_trajectory"]


def _check_schedule(s) -> NoiseSchedule:
    if not isinstance(s, NoiseSchedule):
        raise TypeError(f"s must be a NoiseSchedule, got {type(s).__name__}")
    return s


def randn_like(x: torch.Tensor, generator=None) -> torch.Tensor:
    """Standard normal noise shaped like ``x``, drawn on ``generator``'s device (so a CPU
    generator gives the same numbers whatever device ``x`` lives on) and moved to ``x``."""
    dev = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=dev).to(x.device)


def _noise_like(x: torch.Tensor, noise, generator, name: str = "x0") -> torch.Tensor:
    if noise is None:
        return randn_like(x, generator)
    check_same_shape(name, x, "noise", noise)
    return noise


def q_step(s: NoiseSchedule, x_prev: torch.Tensor, t: torch.Tensor, noise=None, generator=None):
    """One forward step: x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) eps (DDPM eq. 2).

    :param x_prev: the state before step ``t`` (x_0 when t = 0), shape (N, ...).
    :param t: LongTensor (N,) in [0, T-1]: which beta to apply.
    """
    _check_schedule(s)
    check_tensor("x_prev", x_prev)
    check_timesteps(t, s.T, batch=x_prev.shape[0])
    noise = _noise_like(x_prev, noise, generator, "x_prev")
    return at(s.alphas.sqrt(), t, x_prev) * x_prev + at(s.betas.sqrt(), t, x_prev) * noise


def q_mean_variance(s: NoiseSchedule, x0: torch.Tensor, t: torch.Tensor):
    """Mean sqrt(alpha_bar_t) x_0 and variance (1 - alpha_bar_t) of q(x_t | x_0) (DDPM eq. 4)."""
    _check_schedule(s)
    check_tensor("x0", x0)
    check_timesteps(t, s.T, batch=x0.shape[0])
    mean = at(s.sqrt_alpha_bars, t, x0) * x0
    var = at(1.0 - s.alpha_bars, t, x0).expand_as(x0)
    return mean, var


def q_sample(s: NoiseSchedule, x0: torch.Tensor, t: torch.Tensor, noise=None, generator=None):
    """Jump straight to x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps (DDPM eq. 4).

    :param x0: clean data, shape (N, ...).
    :param t: LongTensor (N,) in [0, T-1], one timestep per sample.
    :param noise: eps of the same shape as x0; drawn from ``generator`` when omitted.
    """
    _check_schedule(s)
    check_tensor("x0", x0)
    check_timesteps(t, s.T, batch=x0.shape[0])
    noise = _noise_like(x0, noise, generator)
    return at(s.sqrt_alpha_bars, t, x0) * x0 + at(s.sqrt_one_minus_alpha_bars, t, x0) * noise


def q_trajectory(s: NoiseSchedule, x0: torch.Tensor, generator=None) -> torch.Tensor:
    """Run the chain step by step: returns (T + 1, N, ...) with x_0 first."""
    xs = [x0]
    for i in range(s.T):
        t = torch.full((x0.shape[0],), i, dtype=torch.long, device=x0.device)
        xs.append(q_step(s, xs[-1], t, generator=generator))
    return torch.stack(xs)
