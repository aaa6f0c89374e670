"""The ideal denoiser, written down: E[eps | x_t] for Gaussian-mixture data.

If x_0 ~ sum_k w_k N(mu_k, s_k^2 I), then x_t = sqrt(abar) x_0 + sqrt(1 - abar) eps is again a
mixture, with components N(sqrt(abar) mu_k, v_k I), v_k = abar s_k^2 + 1 - abar. Its score is

    grad log p_t(x) = sum_k r_k(x) (sqrt(abar) mu_k - x) / v_k,
    r_k(x) = w_k N(x; sqrt(abar) mu_k, v_k I) / p_t(x)       (the responsibilities)

and Tweedie's formula (Efron 2011; Vincent 2011; DDPM eq. 11 read backwards) turns the score
into the best possible noise prediction in mean squared error:

    E[eps | x_t] = -sqrt(1 - abar) grad log p_t(x_t).

A trained network tries to learn exactly this function; here it needs no training, so the
reverse process can be run and checked before any learning happens (lesson 03).
"""
from __future__ import annotations

import torch

from ._checks import check_timesteps
from .data import GaussianMixture
from .schedules import NoiseSchedule, check_schedule

__all__ = ["MixtureDenoiser"]


class MixtureDenoiser:
    """A model ``denoiser(x_t, t) -> E[eps | x_t]`` for ``mixture`` noised by schedule ``s``."""

    def __init__(self, s: NoiseSchedule, mixture: GaussianMixture):
        check_schedule(s)
        if not isinstance(mixture, GaussianMixture):
            raise TypeError(f"mixture must be a GaussianMixture, got {type(mixture).__name__}")
        self.s, self.mixture = s, mixture

    def score(self, xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """grad_x log p_t(x) at x_t (N, d), t (N,)."""
        check_timesteps(t, self.s.T, batch=xt.shape[0])
        if xt.dim() != 2 or xt.shape[1] != self.mixture.dim:
            raise ValueError(f"x_t must have shape (N, {self.mixture.dim}), got {tuple(xt.shape)}")
        m = self.mixture
        abar = self.s.at("alpha_bars", t, xt.double())                                # (N, 1)
        x = xt.to(torch.float64)
        means = abar.sqrt()[:, :, None] * m.means.to(xt.device)[None]               # (N, K, d)
        var = abar * m.stds.to(xt.device)[None] ** 2 + (1 - abar)                   # (N, K)
        diff = means - x[:, None, :]                                                # (N, K, d)
        log_r = (torch.log(m.weights.to(xt.device))[None] - 0.5 * m.dim * torch.log(var)
                 - 0.5 * (diff ** 2).sum(-1) / var)
        r = torch.softmax(log_r, dim=1)                                             # (N, K)
        return (r[:, :, None] * diff / var[:, :, None]).sum(1).to(xt.dtype)

    def __call__(self, xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """E[eps | x_t] = -sqrt(1 - abar_t) score (Tweedie)."""
        root = self.s.at("sqrt_one_minus_alpha_bars", t, xt)
        return -root * self.score(xt, t)
