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
"""
from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from ._checks import (check_choice, check_float, check_int, check_same_shape, check_tensor,
                      check_timesteps)
from .forward import randn_like
from .loss import PREDICTIONS, predict_eps, to_x0_eps
from .schedules import NoiseSchedule, at

__all__ = ["q_posterior", "p_mean_variance", "ddpm_step", "timesteps", "SPACINGS", "sample"]

SPACINGS = ("leading", "trailing", "linspace")
VARIANCES = ("small", "large")


def q_posterior(s: NoiseSchedule, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor):
    """Mean and variance of q(x_{t-1} | x_t, x_0) (DDPM eqs. 6–7). Returns (mean, var),
    both shaped like x_t. At t = 0 the "previous" state is x_0 itself and var = 0."""
    if not isinstance(s, NoiseSchedule):
        raise TypeError(f"s must be a NoiseSchedule, got {type(s).__name__}")
    check_same_shape("x0", x0, "xt", xt)
    check_timesteps(t, s.T, batch=xt.shape[0])
    mean = at(s.posterior_mean_coef1, t, xt) * x0 + at(s.posterior_mean_coef2, t, xt) * xt
    var = at(s.posterior_variance, t, xt).expand_as(xt)
    return mean, var


def p_mean_variance(s: NoiseSchedule, model_output: torch.Tensor, xt: torch.Tensor, t: torch.Tensor,
                    prediction: str = "eps", clip_x0: float | None = None, variance: str = "small"):
    """p_theta(x_{t-1} | x_t) from a network output: q's posterior with x0_hat for x_0.

    :param prediction: what ``model_output`` is: "eps", "x0" or "v" (see ``loss``).
    :param clip_x0: clamp x0_hat to [-clip_x0, clip_x0] (1.0 for images in [-1, 1]); None keeps it.
    :param variance: "small" = beta~_t (the posterior's) or "large" = beta_t (DDPM §3.2).
    :returns: dict with ``mean``, ``var``, ``x0_hat``, ``eps_hat``.
    """
    check_choice("variance", variance, VARIANCES)
    x0_hat, eps_hat = to_x0_eps(s, xt, t, model_output, prediction)
    if clip_x0 is not None:
        x0_hat = x0_hat.clamp(-clip_x0, clip_x0)
        eps_hat = predict_eps(s, xt, t, x0_hat)
    mean, var = q_posterior(s, x0_hat, xt, t)
    if variance == "large":
        var = at(s.betas, t, xt).expand_as(xt)
    return {"mean": mean, "var": var, "x0_hat": x0_hat, "eps_hat": eps_hat}


def ddpm_step(s: NoiseSchedule, i: int, x: torch.Tensor, x0_hat: torch.Tensor, eps_hat=None, *,
              generator=None, variance: str = "small") -> torch.Tensor:
    """One ancestral step from index ``i`` of ``s`` (DDPM Algorithm 2, line 4):
    x_{i-1} = mu~_i(x0_hat, x_i) + sqrt(var_i) z, with no noise added on the last step (i = 0)."""
    t = torch.full((x.shape[0],), i, dtype=torch.long, device=x.device)
    mean, var = q_posterior(s, x0_hat, x, t)
    if i == 0:
        return mean
    if variance == "large":
        var = at(s.betas, t, x)
    return mean + var.sqrt() * randn_like(x, generator)


def timesteps(T: int, n: int, spacing: str = "trailing") -> torch.Tensor:
    """Which ``n`` of the ``T`` training timesteps a sampler visits, in descending order.

    The three spacings of the diffusers library (and Lin et al. 2023, Table 2):
      "linspace": round(linspace(0, T-1, n)), reversed — first and last step both included;
      "leading":  (0, 1, ..., n-1) * (T // n), reversed — starts below T-1 when T/n isn't whole
                  and, for small n, never visits the noisiest steps;
      "trailing": round(T - k T/n) - 1 for k = 0..n-1 — always starts at T-1.
    """
    T = check_int("T", T, low=1)
    n = check_int("n", n, low=1, high=T)
    check_choice("spacing", spacing, SPACINGS)
    if spacing == "linspace":
        ts = np.linspace(0, T - 1, n).round()[::-1]
    elif spacing == "leading":
        ts = (np.arange(n) * (T // n)).round()[::-1]
    else:
        ts = np.round(T - np.arange(n) * (T / n)) - 1
    return torch.from_numpy(ts.astype(np.int64).copy())


def _model_device(model):
    params = getattr(model, "parameters", None)
    if callable(params):
        for p in params():
            return p.device
    return torch.device("cpu")


@torch.no_grad()
def sample(model, s: NoiseSchedule, shape, sampler: str = "ddpm", steps: int | None = None,
           eta: float = 0.0, x_T: torch.Tensor | None = None, generator: torch.Generator | None = None, *,
           prediction: str = "eps", spacing: str = "trailing", clip_x0: float | None = None,
           variance: str = "small", trajectory: bool = False, progress: bool = True,
           device=None, **cond):
    """Draw samples by running the reverse process from x_T ~ N(0, I) (DDPM Algorithm 2).

    :param model: any callable ``model(x_t, t, **cond)`` returning a prediction shaped like x_t.
    :param s: the schedule the model was trained with.
    :param shape: output shape (N, ...).
    :param sampler: "ddpm" (ancestral), "ddim" (``samplers.ddim_step``, with ``eta``),
        "dpm++2m" (``samplers.DPMSolverPP2M``) or "sde-dpm++2m" (its stochastic form).
    :param steps: how many steps to take (default T); they are chosen by ``spacing``.
    :param x_T: the starting noise (fixes the start; must have ``shape``).
    :param prediction: what the model predicts: "eps", "x0" or "v".
    :param trajectory: also return every intermediate x, stacked as (steps + 1, *shape) on CPU.
    :returns: x_0 (or ``(x_0, trajectory)``).
    """
    from . import samplers  # samplers builds on this module

    if not isinstance(s, NoiseSchedule):
        raise TypeError(f"s must be a NoiseSchedule, got {type(s).__name__}")
    if not callable(model):
        raise TypeError(f"model must be callable as model(x_t, t), got {type(model).__name__}")
    if isinstance(shape, torch.Size):
        shape = tuple(shape)
    if not isinstance(shape, (tuple, list)) or not shape or not all(
            isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
        raise ValueError(f"shape must be a non-empty tuple of positive ints (N, ...), got {shape!r}")
    shape = tuple(shape)
    check_choice("sampler", sampler, samplers.SAMPLERS)
    check_choice("prediction", prediction, PREDICTIONS)
    check_choice("variance", variance, VARIANCES)
    eta = check_float("eta", eta, low=0.0)
    if eta != 0.0 and sampler != "ddim":
        raise ValueError(f"eta applies only to sampler='ddim', got eta={eta} with sampler={sampler!r}")
    steps = s.T if steps is None else check_int("steps", steps, low=1, high=s.T)
    ts = timesteps(s.T, steps, spacing)
    sub = s.respace(ts)                       # index i of `sub` stands for timestep ts[steps-1-i]

    if x_T is None:
        dev = torch.device(device) if device is not None else _model_device(model)
        x = randn_like(torch.empty(shape, device=dev), generator)
    else:
        check_tensor("x_T", x_T)
        if tuple(x_T.shape) != shape:
            raise ValueError(f"x_T must have shape {shape}, got {tuple(x_T.shape)}")
        x = x_T.clone()
    step = samplers.make_step(sampler, sub, eta=eta, generator=generator, variance=variance)
    path = [x.cpu()] if trajectory else None
    n = shape[0]
    for i in tqdm(range(sub.T - 1, -1, -1), desc=f"{sampler} sampling", disable=not progress,
                  leave=False):
        i_t = torch.full((n,), i, dtype=torch.long, device=x.device)
        t_model = sub.timestep_map[i].to(x.device).expand(n)
        out = model(x, t_model, **cond)
        if not isinstance(out, torch.Tensor) or out.shape != x.shape:
            raise ValueError(f"model output must have shape {tuple(x.shape)}, got "
                             f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}")
        x0_hat, eps_hat = to_x0_eps(sub, x, i_t, out.to(x.dtype), prediction)
        if clip_x0 is not None:
            x0_hat = x0_hat.clamp(-clip_x0, clip_x0)
            eps_hat = predict_eps(sub, x, i_t, x0_hat)
        x = step(i, x, x0_hat, eps_hat)
        if trajectory:
            path.append(x.cpu())
    return (x, torch.stack(path)) if trajectory else x
