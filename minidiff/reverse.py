"""The reverse process: from noise back to data, one denoising step at a time.

Given the clean x_0, the step back is a known Gaussian (Ho et al. 2020, "DDPM", eqs. 6–7):

    q(x_{t-1} | x_t, x_0) = N(mu~_t, beta~_t I)
    mu~_t   = sqrt(abar_{t-1}) beta_t / (1 - abar_t) x_0 + sqrt(alpha_t) (1 - abar_{t-1}) / (1 - abar_t) x_t
    beta~_t = (1 - abar_{t-1}) / (1 - abar_t) beta_t

We do not know x_0 while sampling, so the model's guess x0_hat stands in for it:
p_theta(x_{t-1} | x_t) = q(x_{t-1} | x_t, x0_hat) with variance beta~_t ("small") or
beta_t ("large") (DDPM §3.2). With eps-prediction the mean is the familiar

    mu_theta = (x_t - beta_t / sqrt(1 - abar_t) eps_theta) / sqrt(alpha_t)           (DDPM eq. 11)

and one ancestral step is x_{t-1} = mu_theta + sqrt(var) z (DDPM Algorithm 2, line 4).

Sampling with fewer steps than training runs the same step on a respaced schedule
(``NoiseSchedule.respace``, Nichol & Dhariwal 2021 §4); ``timesteps`` picks which steps.
The loop that runs these steps (and the faster samplers) is ``samplers.sample``.
"""
from __future__ import annotations

import torch

from ._checks import check_choice, check_float, check_int, check_same_shape, check_timesteps
from .forward import eps_from_x0, randn_like, to_x0_eps
from .schedules import NoiseSchedule, check_schedule

__all__ = ["q_posterior", "p_mean_variance", "ddpm_step", "timesteps", "SPACINGS", "VARIANCES"]

SPACINGS = ("leading", "trailing", "linspace")
VARIANCES = ("small", "large")


def q_posterior(s: NoiseSchedule, x0: torch.Tensor, xt: torch.Tensor, t):
    """Mean and variance of q(x_{t-1} | x_t, x_0) (DDPM eqs. 6–7). Returns (mean, var),
    both shaped like x_t. At t = 0 the "previous" state is x_0 itself and var = 0.
    ``t`` is a LongTensor (N,) or one int for the whole batch."""
    check_schedule(s)
    check_same_shape("x0", x0, "xt", xt)
    check_timesteps(t, s.T, batch=xt.shape[0])
    mean = s.at("posterior_mean_coef1", t, xt) * x0 + s.at("posterior_mean_coef2", t, xt) * xt
    var = s.at("posterior_variance", t, xt) * torch.ones_like(xt)
    return mean, var


def clip_x0_hat(s: NoiseSchedule, xt: torch.Tensor, t, x0_hat: torch.Tensor, eps_hat: torch.Tensor,
                clip_x0: float | None):
    """Clamp x0_hat to [-clip_x0, clip_x0] and recompute eps_hat from it (so the two stay one
    point x_t); ``clip_x0=None`` returns them unchanged."""
    if clip_x0 is None:
        return x0_hat, eps_hat
    x0_hat = x0_hat.clamp(-clip_x0, clip_x0)
    return x0_hat, eps_from_x0(s, xt, t, x0_hat)


def p_mean_variance(s: NoiseSchedule, model_output: torch.Tensor, xt: torch.Tensor, t,
                    prediction: str = "eps", clip_x0: float | None = None, variance: str = "small"):
    """p_theta(x_{t-1} | x_t) from a network output: q's posterior with x0_hat for x_0.

    :param prediction: what ``model_output`` is: "eps", "x0" or "v" (see ``forward``).
    :param clip_x0: clamp x0_hat to [-clip_x0, clip_x0] (1.0 for images in [-1, 1]); None keeps it.
    :param variance: "small" = beta~_t (the posterior's) or "large" = beta_t (DDPM §3.2).
    :returns: dict with ``mean``, ``var``, ``x0_hat``, ``eps_hat``.
    """
    check_choice("variance", variance, VARIANCES)
    if clip_x0 is not None:
        clip_x0 = check_float("clip_x0", clip_x0, low=0, low_open=True)
    x0_hat, eps_hat = to_x0_eps(s, xt, t, model_output, prediction)
    x0_hat, eps_hat = clip_x0_hat(s, xt, t, x0_hat, eps_hat, clip_x0)
    mean, var = q_posterior(s, x0_hat, xt, t)
    if variance == "large":
        var = s.at("betas", t, xt) * torch.ones_like(xt)
    return {"mean": mean, "var": var, "x0_hat": x0_hat, "eps_hat": eps_hat}


def ddpm_step(s: NoiseSchedule, i: int, x: torch.Tensor, x0_hat: torch.Tensor, *,
              generator=None, variance: str = "small") -> torch.Tensor:
    """One ancestral step from index ``i`` of ``s`` (DDPM Algorithm 2, line 4):
    x_{i-1} = mu~_i(x0_hat, x_i) + sqrt(var_i) z with var_i = beta~_i ("small") or beta_i
    ("large"), and no noise on the last step (i = 0: Algorithm 2 returns the mean)."""
    check_choice("variance", variance, VARIANCES)
    mean, var = q_posterior(s, x0_hat, x, i)
    if i == 0:
        return mean
    if variance == "large":
        var = s.at("betas", i, x)
    return mean + var ** 0.5 * randn_like(x, generator)


def timesteps(T: int, n: int, spacing: str = "trailing") -> torch.Tensor:
    """Which ``n`` of the ``T`` training timesteps a sampler visits, in descending order.

    The three spacings of Lin et al. 2023 (Table 2), with k = 0..n-1:
      "linspace": round(k (T-1) / (n-1)), reversed — first and last step both included;
      "leading":  k * (T // n), reversed — starts below T-1 when T/n isn't whole and, for small
                  n, never visits the noisiest steps;
      "trailing": round(T (n - k) / n) - 1 — always starts at T-1, ends at round(T / n) - 1.

    "trailing" is computed in exact integer arithmetic, rounding halves up:
    t_k = floor((2 T (n - k) + n) / (2 n)) - 1, so the n steps are always distinct. The diffusers
    library computes the same formula with a floating-point arange and differs from this
    definition for 97 of the 1000 step counts at T = 1000 (its arange returns n + 1 values for
    62 of them, and drifts off exact ties for the rest); for the usual counts (those dividing
    T, e.g. 10, 20, 50, 100) the two agree exactly (the tests say which).
    "linspace" rounds halves to even, like numpy.
    """
    T = check_int("T", T, low=1)
    n = check_int("n", n, low=1, high=T)
    check_choice("spacing", spacing, SPACINGS)
    k = torch.arange(n, dtype=torch.long)
    if spacing == "linspace":
        return torch.linspace(0, T - 1, n, dtype=torch.float64).round().long().flip(0)
    if spacing == "leading":
        return (k * (T // n)).flip(0)
    return (2 * T * (n - k) + n) // (2 * n) - 1
