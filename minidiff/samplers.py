"""Fast samplers: the same trained model, fewer and smarter steps.

DDIM (Song, Meng & Ermon 2021, "Denoising Diffusion Implicit Models"), eq. 12:

    x_{t-1} = sqrt(abar_{t-1}) x0_hat                       "predicted x_0"
            + sqrt(1 - abar_{t-1} - sigma_t^2) eps_hat        "direction pointing to x_t"
            + sigma_t z                                       "random noise"

    sigma_t(eta) = eta sqrt((1 - abar_{t-1}) / (1 - abar_t)) sqrt(1 - abar_t / abar_{t-1})   (eq. 16)

eta = 0 is deterministic; eta = 1 makes sigma_t^2 the DDPM posterior variance beta~_t, so
DDIM(eta=1) is ancestral DDPM sampling. Every sampler here works on a respaced schedule
``s`` (``reverse.sample`` builds it), where index i's "previous" step is simply i - 1.

A sampler is made by ``make_step(name, s, ...)`` and returns ``step(i, x, x0_hat, eps_hat)``:
the one interface ``reverse.sample``'s loop calls.
"""
from __future__ import annotations

import math

import torch

from ._checks import check_choice
from .forward import randn_like
from .reverse import ddpm_step
from .schedules import NoiseSchedule

__all__ = ["SAMPLERS", "ddim_sigma", "ddim_step", "make_step"]


def ddim_sigma(s: NoiseSchedule, i: int, eta: float) -> float:
    """sigma_i(eta) of DDIM eq. 16 at index ``i`` of ``s``."""
    abar, abar_prev = float(s.alpha_bars[i]), float(s.alpha_bars_prev[i])
    return eta * math.sqrt((1 - abar_prev) / (1 - abar)) * math.sqrt(1 - abar / abar_prev)


def ddim_step(s: NoiseSchedule, i: int, x: torch.Tensor, x0_hat: torch.Tensor, eps_hat: torch.Tensor,
              *, eta: float = 0.0, generator=None) -> torch.Tensor:
    """One DDIM update (eq. 12) from index ``i`` of ``s`` to index ``i - 1``."""
    abar_prev = float(s.alpha_bars_prev[i])
    sigma = ddim_sigma(s, i, eta)
    direction = math.sqrt(max(1.0 - abar_prev - sigma ** 2, 0.0)) * eps_hat
    x_prev = math.sqrt(abar_prev) * x0_hat + direction
    if sigma > 0:
        x_prev = x_prev + sigma * randn_like(x, generator)
    return x_prev


SAMPLERS = ("ddpm", "ddim")


def make_step(name: str, s: NoiseSchedule, *, eta: float = 0.0, generator=None, variance: str = "small"):
    """Return ``step(i, x, x0_hat, eps_hat) -> x_prev`` for sampler ``name`` on schedule ``s``."""
    check_choice("sampler", name, SAMPLERS)
    if name == "ddpm":
        return lambda i, x, x0_hat, eps_hat: ddpm_step(s, i, x, x0_hat, eps_hat,
                                                       generator=generator, variance=variance)
    return lambda i, x, x0_hat, eps_hat: ddim_step(s, i, x, x0_hat, eps_hat, eta=eta, generator=generator)
