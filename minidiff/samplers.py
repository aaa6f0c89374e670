"""Fast samplers: the same trained model, fewer and smarter steps.

DDIM (Song, Meng & Ermon 2021, "Denoising Diffusion Implicit Models"), eq. 12:

    x_{t-1} = sqrt(abar_{t-1}) x0_hat                       "predicted x_0"
            + sqrt(1 - abar_{t-1} - sigma_t^2) eps_hat        "direction pointing to x_t"
            + sigma_t z                                       "random noise"

    sigma_t(eta) = eta sqrt((1 - abar_{t-1}) / (1 - abar_t)) sqrt(1 - abar_t / abar_{t-1})   (eq. 16)

eta = 0 is deterministic; eta = 1 makes sigma_t^2 the DDPM posterior variance beta~_t, so
DDIM(eta=1) is ancestral DDPM sampling. Every sampler here works on a respaced schedule
``s`` (``reverse.sample`` builds it), where index i's "previous" step is simply i - 1.

DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Algorithm 2) solves the probability-flow
ODE in the half-log-SNR lambda_t = log(alpha_t / sigma_t), alpha_t = sqrt(abar_t),
sigma_t = sqrt(1 - abar_t), with h = lambda_{t-1} - lambda_t:

    first step (and the last):  x_{t-1} = (sigma_{t-1} / sigma_t) x_t - alpha_{t-1} (e^{-h} - 1) x0_hat_t
    later steps, r = h_prev / h: D = (1 + 1 / (2r)) x0_hat_t - (1 / (2r)) x0_hat_prev,
                                x_{t-1} = (sigma_{t-1} / sigma_t) x_t - alpha_{t-1} (e^{-h} - 1) D

The first-order step is DDIM(eta=0); the second order reuses the previous step's x0_hat as a
finite-difference derivative, so it costs one model call per step like the others.

SDE-DPM-Solver++(2M) ("sde-dpm++2m") applies the same expansion to the reverse SDE instead of the
ODE (Lu et al. 2022, DPM-Solver++, its SDE variant; diffusers' ``sde-dpmsolver++``). Holding
x0_hat (or D) fixed over the step, the linear part integrates exactly and fresh noise enters:

    x_{t-1} = (sigma_{t-1} / sigma_t) e^{-h} x_t + alpha_{t-1} (1 - e^{-2h}) D
              + sigma_{t-1} sqrt(1 - e^{-2h}) z,        z ~ N(0, I),

with D as above. Its first-order step (D = x0_hat) is exactly DDPM's posterior step: since
1 - e^{-2h} = (alpha_{t-1}^2 - alpha_t^2) / (alpha_{t-1}^2 sigma_t^2), its mean and variance are
those of q(x_{t-1} | x_t, x0_hat) (DDPM eq. 7), i.e. DDIM(eta=1). The second order only sharpens D.

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

__all__ = ["SAMPLERS", "ddim_sigma", "ddim_step", "DPMSolverPP2M", "make_step"]


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


class DPMSolverPP2M:
    """DPM-Solver++(2M) on schedule ``s``; call it with the steps in order i = T-1, ..., 0.

    ``stochastic=True`` makes it SDE-DPM-Solver++(2M), drawing its noise on ``generator``.
    """

    def __init__(self, s: NoiseSchedule, stochastic: bool = False, generator=None):
        self.s = s
        self.stochastic = stochastic
        self.generator = generator
        self.prev_x0 = None       # x0_hat of the previous step
        self.prev_h = None        # the previous step's h

    def _alpha_sigma(self, abar: float):
        return math.sqrt(abar), math.sqrt(1.0 - abar)

    def __call__(self, i: int, x: torch.Tensor, x0_hat: torch.Tensor, eps_hat=None) -> torch.Tensor:
        alpha_s, sigma_s = self._alpha_sigma(float(self.s.alpha_bars[i]))
        alpha_t, sigma_t = self._alpha_sigma(float(self.s.alpha_bars_prev[i]))
        # e^{-h} = (sigma_t / alpha_t) / (sigma_s / alpha_s), written without logs so that the
        # clean end (sigma_t = 0) and a zero-SNR start (alpha_s = 0) stay finite
        exp_neg_h = (sigma_t * alpha_s) / (alpha_t * sigma_s)
        finite = 0.0 < exp_neg_h < math.inf
        h = -math.log(exp_neg_h) if finite else None
        D = x0_hat
        last = i == 0
        if self.prev_x0 is not None and not last and finite and self.prev_h is not None:
            r = self.prev_h / h
            D = (1 + 1 / (2 * r)) * x0_hat - (1 / (2 * r)) * self.prev_x0
        self.prev_x0, self.prev_h = x0_hat, h
        if not self.stochastic:
            return (sigma_t / sigma_s) * x - alpha_t * (exp_neg_h - 1.0) * D
        z = randn_like(x, self.generator)
        return ((sigma_t / sigma_s) * exp_neg_h * x + alpha_t * (1.0 - exp_neg_h ** 2) * D
                + sigma_t * math.sqrt(1.0 - exp_neg_h ** 2) * z)


SAMPLERS = ("ddpm", "ddim", "dpm++2m", "sde-dpm++2m")


def make_step(name: str, s: NoiseSchedule, *, eta: float = 0.0, generator=None, variance: str = "small"):
    """Return ``step(i, x, x0_hat, eps_hat) -> x_prev`` for sampler ``name`` on schedule ``s``."""
    check_choice("sampler", name, SAMPLERS)
    if name == "ddpm":
        return lambda i, x, x0_hat, eps_hat: ddpm_step(s, i, x, x0_hat, eps_hat,
                                                       generator=generator, variance=variance)
    if name in ("dpm++2m", "sde-dpm++2m"):
        return DPMSolverPP2M(s, stochastic=name == "sde-dpm++2m", generator=generator)
    return lambda i, x, x0_hat, eps_hat: ddim_step(s, i, x, x0_hat, eps_hat, eta=eta, generator=generator)
