"""What the network predicts, and the loss that teaches it.

With x_t = sqrt(abar) x_0 + sqrt(1 - abar) eps (DDPM eq. 4), any one of three targets fixes
the other two given x_t:

    eps-prediction  (Ho et al. 2020, "DDPM", eq. 14; the "simple" loss)
        x_0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar)                    (DDPM eq. 15)
    x_0-prediction
        eps = (x_t - sqrt(abar) x_0) / sqrt(1 - abar)
    v-prediction    (Salimans & Ho 2022, "Progressive Distillation", §4 and Appendix D)
        v   = sqrt(abar) eps - sqrt(1 - abar) x_0
        x_0 = sqrt(abar) x_t - sqrt(1 - abar) v
        eps = sqrt(1 - abar) x_t + sqrt(abar) v

The training loss is the mean squared error to the chosen target at a uniformly drawn t
(DDPM Algorithm 1), optionally weighted by min-SNR (Hang et al. 2023, eq. 9 and Table 1).
"""
from __future__ import annotations

import torch

from ._checks import check_choice, check_float, check_same_shape, check_tensor, check_timesteps
from .forward import q_sample, randn_like
from .schedules import NoiseSchedule, at

__all__ = ["PREDICTIONS", "predict_x0", "predict_eps", "v_target", "x0_from_v", "eps_from_v",
           "target", "to_x0_eps", "diffusion_loss"]

PREDICTIONS = ("eps", "x0", "v")


def _check(s, xt, t, name_b, b):
    if not isinstance(s, NoiseSchedule):
        raise TypeError(f"s must be a NoiseSchedule, got {type(s).__name__}")
    check_same_shape("x_t", xt, name_b, b)
    check_timesteps(t, s.T, batch=xt.shape[0])


def predict_x0(s: NoiseSchedule, xt: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """x_0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)  (DDPM eq. 15)."""
    _check(s, xt, t, "eps", eps)
    if (s.alpha_bars[t.cpu()] == 0).any():
        raise ValueError("eps-prediction cannot recover x0 where alpha_bar_t = 0 (zero terminal "
                         "SNR); train with prediction='v' or 'x0' for such schedules")
    return (xt - at(s.sqrt_one_minus_alpha_bars, t, xt) * eps) / at(s.sqrt_alpha_bars, t, xt)


def predict_eps(s: NoiseSchedule, xt: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """eps = (x_t - sqrt(abar_t) x_0) / sqrt(1 - abar_t), inverting DDPM eq. 4."""
    _check(s, xt, t, "x0", x0)
    return (xt - at(s.sqrt_alpha_bars, t, xt) * x0) / at(s.sqrt_one_minus_alpha_bars, t, xt)


def v_target(s: NoiseSchedule, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0  (Salimans & Ho 2022, §4)."""
    _check(s, x0, t, "eps", eps)
    return at(s.sqrt_alpha_bars, t, x0) * eps - at(s.sqrt_one_minus_alpha_bars, t, x0) * x0


def x0_from_v(s: NoiseSchedule, xt: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """x_0 = sqrt(abar_t) x_t - sqrt(1 - abar_t) v  (Salimans & Ho 2022, Appendix D)."""
    _check(s, xt, t, "v", v)
    return at(s.sqrt_alpha_bars, t, xt) * xt - at(s.sqrt_one_minus_alpha_bars, t, xt) * v


def eps_from_v(s: NoiseSchedule, xt: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """eps = sqrt(1 - abar_t) x_t + sqrt(abar_t) v  (Salimans & Ho 2022, Appendix D)."""
    _check(s, xt, t, "v", v)
    return at(s.sqrt_one_minus_alpha_bars, t, xt) * xt + at(s.sqrt_alpha_bars, t, xt) * v


def target(s: NoiseSchedule, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
           prediction: str = "eps") -> torch.Tensor:
    """The regression target for ``prediction`` in ("eps", "x0", "v")."""
    check_choice("prediction", prediction, PREDICTIONS)
    if prediction == "eps":
        return noise
    if prediction == "x0":
        return x0
    return v_target(s, x0, t, noise)


def to_x0_eps(s: NoiseSchedule, xt: torch.Tensor, t: torch.Tensor, output: torch.Tensor,
              prediction: str = "eps"):
    """Turn a network output of kind ``prediction`` into the pair (x0_hat, eps_hat)."""
    check_choice("prediction", prediction, PREDICTIONS)
    if prediction == "eps":
        return predict_x0(s, xt, t, output), output
    if prediction == "x0":
        return output, predict_eps(s, xt, t, output)
    return x0_from_v(s, xt, t, output), eps_from_v(s, xt, t, output)


def snr_weight(s: NoiseSchedule, t: torch.Tensor, prediction: str, gamma: float) -> torch.Tensor:
    """Min-SNR-gamma weight per sample, expressed for each target (Hang et al. 2023, Table 1):
    x0: min(SNR, gamma); eps: min(SNR, gamma) / SNR; v: min(SNR, gamma) / (SNR + 1)."""
    snr = s.snr.to(t.device)[t]
    w = snr.clamp(max=gamma)
    if prediction == "eps":
        w = w / snr
    elif prediction == "v":
        w = w / (snr + 1)
    return w.float()


def diffusion_loss(model, s: NoiseSchedule, x0: torch.Tensor, t=None, noise=None, *,
                   prediction: str = "eps", min_snr_gamma: float | None = None,
                   generator=None, **cond) -> torch.Tensor:
    """The training loss of DDPM Algorithm 1, lines 2–5:

    draw t ~ Uniform{0..T-1} and eps ~ N(0, I), make x_t with q_sample, predict with
    ``model(x_t, t, **cond)``, and return the mean squared error to the target.
    """
    if not isinstance(s, NoiseSchedule):
        raise TypeError(f"s must be a NoiseSchedule, got {type(s).__name__}")
    check_tensor("x0", x0)
    check_choice("prediction", prediction, PREDICTIONS)
    n = x0.shape[0]
    if t is None:
        dev = generator.device if generator is not None else x0.device
        t = torch.randint(0, s.T, (n,), generator=generator, device=dev).to(x0.device)
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
        gamma = check_float("min_snr_gamma", min_snr_gamma, low=0, low_open=True)
        per_sample = per_sample * snr_weight(s, t, prediction, gamma)
    return per_sample.mean()
