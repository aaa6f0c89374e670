"""What the network is taught: the regression target, and the loss.

A network can predict eps, x_0 or v (``forward.PREDICTIONS``); ``forward`` holds the identities
that turn one into the others. The training loss is the mean squared error to the chosen target
at a uniformly drawn t (Ho et al. 2020, "DDPM", Algorithm 1 and eq. 14, the "simple" loss):

    L = E_{t, x_0, eps} || target - model(x_t, t) ||^2,   x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps

Min-SNR-gamma weighting (Hang et al. 2023, "Efficient Diffusion Training via Min-SNR Weighting
Strategy", eq. 9 and Table 1) weights each timestep's error *measured on x_0* by
min(SNR(t), gamma). An error on eps or v is a scaled error on x_0,

    ||eps - eps_hat||^2 = SNR ||x_0 - x0_hat||^2,    ||v - v_hat||^2 = (SNR + 1) ||x_0 - x0_hat||^2,

so the same weighting reads, per target:

    x0:  min(SNR, gamma)
    eps: min(SNR, gamma) / SNR = min(1, gamma / SNR)      (1 at SNR = 0: the limit, not 0/0)
    v:   min(SNR, gamma) / (SNR + 1)                     (0 at SNR = 0)

On a zero-terminal-SNR schedule the last step has SNR = 0: there x_t is pure noise and the x_0
error cannot be reduced by any model, and min-SNR gives it weight 0 for x0 and v (the v-model
is then taught its last step only through its neighbours) and weight 1 for eps.
"""
from __future__ import annotations

import torch

from ._checks import check_choice, check_float, check_tensor, check_timesteps
from .forward import PREDICTIONS, q_sample, randn_like, v_from_x0_eps
from .schedules import NoiseSchedule, check_schedule

__all__ = ["PREDICTIONS", "target", "snr_weight", "draw_timesteps", "diffusion_loss"]


def target(s: NoiseSchedule, x0: torch.Tensor, t, noise: torch.Tensor, prediction: str = "eps") -> torch.Tensor:
    """The regression target for ``prediction`` in ("eps", "x0", "v")."""
    check_choice("prediction", prediction, PREDICTIONS)
    if prediction == "eps":
        return noise
    if prediction == "x0":
        return x0
    return v_from_x0_eps(s, x0, t, noise)


def snr_weight(s: NoiseSchedule, t: torch.Tensor, prediction: str, gamma: float) -> torch.Tensor:
    """Min-SNR-gamma weight per sample for ``prediction`` (Hang et al. 2023, eq. 9 and Table 1;
    see the module docstring): x0: min(SNR, gamma); eps: min(1, gamma / SNR);
    v: min(SNR, gamma) / (SNR + 1). Finite everywhere, also at SNR = 0."""
    check_schedule(s)
    check_choice("prediction", prediction, PREDICTIONS)
    gamma = check_float("gamma", gamma, low=0, low_open=True)
    snr = s.at("snr", t, torch.empty(0, device=t.device))            # float32 on t's device, (N,)
    if prediction == "x0":
        w = snr.clamp(max=gamma)
    elif prediction == "eps":
        w = (gamma / snr).clamp(max=1.0)                  # gamma / 0 = inf -> 1, the limit
    else:
        w = snr.clamp(max=gamma) / (snr + 1)
    return w


def draw_timesteps(T: int, n: int, generator=None, device=None) -> torch.Tensor:
    """t ~ Uniform{0..T-1}, n of them (DDPM Algorithm 1, line 3), drawn on ``generator``'s device
    (else on ``device``) and moved to ``device``: no copy, no wait for a GPU."""
    dev = generator.device if generator is not None else device
    return torch.randint(0, T, (n,), generator=generator, device=dev).to(device)


def diffusion_loss(model, s: NoiseSchedule, x0: torch.Tensor, t=None, noise=None, *,
                   prediction: str = "eps", min_snr_gamma: float | None = None,
                   generator=None, **cond) -> torch.Tensor:
    """The training loss of DDPM Algorithm 1, lines 2–5:

    draw t ~ Uniform{0..T-1} and eps ~ N(0, I), make x_t with q_sample, predict with
    ``model(x_t, t, **cond)``, and return the mean squared error to the target.

    ``t`` and ``noise`` are drawn on ``generator``'s device when it is given (a CPU generator
    makes a run reproducible bit for bit on any device), else on ``x0``'s device: no copy, no
    wait for the GPU.
    """
    check_schedule(s)
    check_tensor("x0", x0)
    check_choice("prediction", prediction, PREDICTIONS)
    if min_snr_gamma is not None:
        min_snr_gamma = check_float("min_snr_gamma", min_snr_gamma, low=0, low_open=True)
    n = x0.shape[0]
    if t is None:
        t = draw_timesteps(s.T, n, generator, x0.device)
    else:
        check_timesteps(t, s.T, batch=n)
    if noise is None:
        noise = randn_like(x0, generator)
    xt = q_sample(s, x0, t, noise)
    out = model(xt, t, **cond)
    if not isinstance(out, torch.Tensor) or out.shape != x0.shape:
        raise ValueError(f"model output must have the shape of x_t {tuple(x0.shape)}, got "
                         f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}")
    per_sample = (out.float() - target(s, x0, t, noise, prediction).float()).pow(2)
    per_sample = per_sample.reshape(n, -1).mean(dim=1)
    if min_snr_gamma is not None:
        per_sample = per_sample * snr_weight(s, t, prediction, min_snr_gamma)
    return per_sample.mean()
