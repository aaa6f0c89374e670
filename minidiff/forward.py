"""The forward process: how data is turned into noise, one step or all at once.

One step (Ho et al. 2020, "DDPM", eq. 2):

    q(x_t | x_{t-1}) = N(x_t; sqrt(1 - beta_t) x_{t-1}, beta_t I)

and, because a chain of Gaussians is Gaussian, any step in closed form (DDPM eq. 4):

    q(x_t | x_0) = N(x_t; sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I)
    x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps,   eps ~ N(0, I)

Because x_t is this one line, any one of three quantities fixes the other two given x_t; a
network may be trained to predict any of them (``PREDICTIONS``), and these facts about q are
what every later chapter uses to turn a prediction into the others (abar = alpha_bar_t):

    x0_from_eps:  x_0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar)                 (DDPM eq. 15)
    eps_from_x0:  eps = (x_t - sqrt(abar) x_0) / sqrt(1 - abar)                 (DDPM eq. 4 inverted)
    v_from_x0_eps: v  = sqrt(abar) eps - sqrt(1 - abar) x_0           (Salimans & Ho 2022, §4)
    x0_from_v:    x_0 = sqrt(abar) x_t - sqrt(1 - abar) v             (Salimans & Ho 2022, App. D)
    eps_from_v:   eps = sqrt(1 - abar) x_t + sqrt(abar) v             (Salimans & Ho 2022, App. D)

Index convention (see ``schedules``): ``t`` runs over 0..T-1 and t = 0 is one noising step.
Every function takes ``t`` as a LongTensor (N,), one timestep per sample, or as a Python int,
one timestep for the whole batch (what a sampling loop has, at no cost on a GPU).
"""
from __future__ import annotations

import torch

from ._checks import check_choice, check_same_shape, check_tensor, check_timesteps
from .schedules import NoiseSchedule, check_schedule

__all__ = ["PREDICTIONS", "randn_like", "q_step", "q_sample", "q_mean_variance", "q_trajectory",
           "x0_from_eps", "eps_from_x0", "v_from_x0_eps", "x0_from_v", "eps_from_v", "to_x0_eps"]

PREDICTIONS = ("eps", "x0", "v")


def randn_like(x: torch.Tensor, generator=None) -> torch.Tensor:
    """Standard normal noise shaped like ``x``, drawn on ``generator``'s device (so a CPU
    generator gives the same numbers whatever device ``x`` lives on) and moved to ``x``."""
    dev = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=dev).to(x.device, non_blocking=True)


def _noise_like(x: torch.Tensor, noise, generator, name: str = "x0") -> torch.Tensor:
    if noise is None:
        return randn_like(x, generator)
    check_same_shape(name, x, "noise", noise)
    return noise


def _check(s, name_a: str, a: torch.Tensor, t, name_b: str | None = None, b=None):
    check_schedule(s)
    check_tensor(name_a, a)
    if b is not None:
        check_same_shape(name_a, a, name_b, b)
    check_timesteps(t, s.T, batch=a.shape[0])


def q_step(s: NoiseSchedule, x_prev: torch.Tensor, t, noise=None, generator=None):
    """One forward step: x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) eps (DDPM eq. 2).

    :param x_prev: the state before step ``t`` (x_0 when t = 0), shape (N, ...).
    :param t: LongTensor (N,) or int in [0, T-1]: which beta to apply.
    """
    _check(s, "x_prev", x_prev, t)
    noise = _noise_like(x_prev, noise, generator, "x_prev")
    a = s.at("alphas", t, x_prev)
    return a ** 0.5 * x_prev + (1 - a) ** 0.5 * noise


def q_mean_variance(s: NoiseSchedule, x0: torch.Tensor, t):
    """Mean sqrt(alpha_bar_t) x_0 and variance (1 - alpha_bar_t) of q(x_t | x_0) (DDPM eq. 4)."""
    _check(s, "x0", x0, t)
    mean = s.at("sqrt_alpha_bars", t, x0) * x0
    var = (1.0 - s.at("alpha_bars", t, x0)) * torch.ones_like(x0)
    return mean, var


def q_sample(s: NoiseSchedule, x0: torch.Tensor, t, noise=None, generator=None):
    """Jump straight to x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps (DDPM eq. 4).

    :param x0: clean data, shape (N, ...).
    :param t: LongTensor (N,) in [0, T-1], one timestep per sample (or one int for all).
    :param noise: eps of the same shape as x0; drawn from ``generator`` when omitted.
    """
    _check(s, "x0", x0, t)
    noise = _noise_like(x0, noise, generator)
    return s.at("sqrt_alpha_bars", t, x0) * x0 + s.at("sqrt_one_minus_alpha_bars", t, x0) * noise


def q_trajectory(s: NoiseSchedule, x0: torch.Tensor, generator=None) -> torch.Tensor:
    """Run the chain step by step: returns (T + 1, N, ...) with x_0 first."""
    xs = [x0]
    for i in range(s.T):
        xs.append(q_step(s, xs[-1], i, generator=generator))
    return torch.stack(xs)


# ---------------------------------------------------------------------------------------------
# eps, x0 and v: three names for one point x_t (see the module docstring)

def x0_from_eps(s: NoiseSchedule, xt: torch.Tensor, t, eps: torch.Tensor) -> torch.Tensor:
    """x_0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)  (DDPM eq. 15).

    Undefined where abar_t = 0 (a zero-terminal-SNR schedule's last step): there x_t is pure
    noise and says nothing about x_0, so this raises; predict v or x0 on such schedules.
    """
    _check(s, "x_t", xt, t, "eps", eps)
    if s.alpha_bars[-1] == 0 and (s.alpha_bars[t.cpu() if isinstance(t, torch.Tensor) else t] == 0).any():
        raise ValueError("eps-prediction cannot recover x0 where alpha_bar_t = 0 (zero terminal "
                         "SNR); train with prediction='v' or 'x0' for such schedules")
    return (xt - s.at("sqrt_one_minus_alpha_bars", t, xt) * eps) / s.at("sqrt_alpha_bars", t, xt)


def eps_from_x0(s: NoiseSchedule, xt: torch.Tensor, t, x0: torch.Tensor) -> torch.Tensor:
    """eps = (x_t - sqrt(abar_t) x_0) / sqrt(1 - abar_t), inverting DDPM eq. 4."""
    _check(s, "x_t", xt, t, "x0", x0)
    return (xt - s.at("sqrt_alpha_bars", t, xt) * x0) / s.at("sqrt_one_minus_alpha_bars", t, xt)


def v_from_x0_eps(s: NoiseSchedule, x0: torch.Tensor, t, eps: torch.Tensor) -> torch.Tensor:
    """v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0  (Salimans & Ho 2022, §4): the v-target."""
    _check(s, "x0", x0, t, "eps", eps)
    return s.at("sqrt_alpha_bars", t, x0) * eps - s.at("sqrt_one_minus_alpha_bars", t, x0) * x0


def x0_from_v(s: NoiseSchedule, xt: torch.Tensor, t, v: torch.Tensor) -> torch.Tensor:
    """x_0 = sqrt(abar_t) x_t - sqrt(1 - abar_t) v  (Salimans & Ho 2022, Appendix D)."""
    _check(s, "x_t", xt, t, "v", v)
    return s.at("sqrt_alpha_bars", t, xt) * xt - s.at("sqrt_one_minus_alpha_bars", t, xt) * v


def eps_from_v(s: NoiseSchedule, xt: torch.Tensor, t, v: torch.Tensor) -> torch.Tensor:
    """eps = sqrt(1 - abar_t) x_t + sqrt(abar_t) v  (Salimans & Ho 2022, Appendix D)."""
    _check(s, "x_t", xt, t, "v", v)
    return s.at("sqrt_one_minus_alpha_bars", t, xt) * xt + s.at("sqrt_alpha_bars", t, xt) * v


def to_x0_eps(s: NoiseSchedule, xt: torch.Tensor, t, output: torch.Tensor, prediction: str = "eps"):
    """Turn a network output of kind ``prediction`` ("eps", "x0" or "v") into (x0_hat, eps_hat)."""
    check_choice("prediction", prediction, PREDICTIONS)
    if prediction == "eps":
        return x0_from_eps(s, xt, t, output), output
    if prediction == "x0":
        return output, eps_from_x0(s, xt, t, output)
    return x0_from_v(s, xt, t, output), eps_from_v(s, xt, t, output)
