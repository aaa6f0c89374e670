"""Noise schedules: how much noise each forward step adds, and everything derived from it.

A schedule is a list of variances beta_1..beta_T (Ho et al. 2020, "DDPM", eq. 2). From it:

    alpha_t     = 1 - beta_t                                       (DDPM §2, above eq. 4)
    alpha_bar_t = prod_{s<=t} alpha_s                              (DDPM eq. 4)
    SNR(t)      = alpha_bar_t / (1 - alpha_bar_t)                  (Kingma et al. 2021, eq. 2)
    posterior variance  beta~_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) * beta_t    (DDPM eq. 7)
    posterior mean = c1_t x_0 + c2_t x_t with
        c1_t = sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t),
        c2_t = sqrt(alpha_t) (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t)                  (DDPM eq. 7)

Index convention: arrays are indexed 0..T-1 and index t means "after t+1 noising steps",
so ``alpha_bars[0] = alphas[0]`` and ``alpha_bars_prev[0] = 1`` (the clean data).

All quantities are float64 tensors; cast them where they are used.
"""
from __future__ import annotations

import math

import torch

from ._checks import check_choice, check_float, check_int

__all__ = ["NoiseSchedule", "check_schedule", "linear", "cosine", "sigmoid", "make", "KINDS"]


class NoiseSchedule:
    """Every quantity a diffusion model derives from its betas, precomputed in float64.

    :param betas: 1-D sequence of forward-step variances, each in (0, 1].
    :param timestep_map: for a respaced schedule, the original timestep each step stands for
        (a model trained on the original schedule is called with these); defaults to 0..T-1.
    """

    def __init__(self, betas, timestep_map=None):
        if isinstance(betas, (str, bytes)) or not hasattr(betas, "__len__"):
            raise TypeError(f"betas must be a 1-D sequence or tensor of floats, got {type(betas).__name__}")
        betas = torch.as_tensor(betas, dtype=torch.float64).detach().clone()
        if betas.dim() != 1:
            raise ValueError(f"betas must be 1-D, got shape {tuple(betas.shape)}")
        if betas.numel() == 0:
            raise ValueError("betas must not be empty (T >= 1)")
        if torch.isnan(betas).any():
            raise ValueError("betas contains NaN; every beta must be in (0, 1]")
        if (betas <= 0).any() or (betas > 1).any():
            raise ValueError(f"betas must be in (0, 1], got values in [{betas.min().item():.6g}, "
                             f"{betas.max().item():.6g}]")
        self.betas = betas
        self.T = int(betas.numel())
        if timestep_map is None:
            timestep_map = torch.arange(self.T)
        self.timestep_map = torch.as_tensor(timestep_map, dtype=torch.long)
        if self.timestep_map.shape != (self.T,):
            raise ValueError(f"timestep_map must have shape ({self.T},), got {tuple(self.timestep_map.shape)}")

        one = torch.ones(1, dtype=torch.float64)
        self.alphas = 1.0 - betas
        self.alpha_bars = torch.cumprod(self.alphas, dim=0)
        self.alpha_bars_prev = torch.cat([one, self.alpha_bars[:-1]])
        self.sqrt_alpha_bars = self.alpha_bars.sqrt()
        self.sqrt_one_minus_alpha_bars = (1.0 - self.alpha_bars).sqrt()
        self.snr = self.alpha_bars / (1.0 - self.alpha_bars)
        one_minus_abar = 1.0 - self.alpha_bars
        self.posterior_variance = betas * (1.0 - self.alpha_bars_prev) / one_minus_abar
        self.posterior_mean_coef1 = betas * self.alpha_bars_prev.sqrt() / one_minus_abar
        self.posterior_mean_coef2 = (1.0 - self.alpha_bars_prev) * self.alphas.sqrt() / one_minus_abar
        self._moved = {}        # (name, device, dtype) -> that table cast, then moved (see ``at``)

    def __repr__(self) -> str:
        return (f"NoiseSchedule(T={self.T}, beta[0]={self.betas[0].item():.3g}, "
                f"beta[-1]={self.betas[-1].item():.3g}, alpha_bar[-1]={self.alpha_bars[-1].item():.3g})")

    def __len__(self) -> int:
        return self.T

    def at(self, name: str, t, like: torch.Tensor):
        """The table ``name`` (e.g. "alpha_bars") at timestep ``t``, ready to multiply ``like``.

        ``t`` is a Python int (one timestep for the whole batch: returns a float taken from the
        float64 table) or a LongTensor (N,) (returns the entries shaped (N, 1, 1, ...) in
        ``like``'s dtype and device). A table is cast before it moves (MPS has no float64) and
        moved once per device and dtype, so a loop that calls this every step copies nothing.
        """
        values = getattr(self, name)
        if not isinstance(t, torch.Tensor):
            return float(values[t])
        key = (name, like.device, like.dtype)
        if key not in self._moved:
            self._moved[key] = values.to(like.dtype).to(like.device)
        out = self._moved[key][t.to(like.device)]
        return out.reshape(-1, *([1] * (like.dim() - 1)))

    def rescale_zero_terminal_snr(self) -> "NoiseSchedule":
        """Shift and scale sqrt(alpha_bar) so the last step is pure noise (SNR = 0).

        Lin et al. 2023, "Common Diffusion Noise Schedules and Sample Steps are Flawed",
        Algorithm 1: keep sqrt(alpha_bar_0), move sqrt(alpha_bar_T) to 0, linearly in between,
        then recover betas from alpha_t = alpha_bar_t / alpha_bar_{t-1}. Returns a new schedule.
        """
        if self.T < 2:
            raise ValueError("rescale_zero_terminal_snr needs T >= 2")
        s = self.sqrt_alpha_bars.clone()
        s0, sT = s[0].clone(), s[-1].clone()
        s = (s - sT) * s0 / (s0 - sT)
        abar = s ** 2
        alphas = torch.cat([abar[:1], abar[1:] / abar[:-1]])
        return NoiseSchedule(1.0 - alphas, timestep_map=self.timestep_map)

    def respace(self, use_timesteps) -> "NoiseSchedule":
        """A shorter schedule that visits only ``use_timesteps`` (any order, no repeats).

        Nichol & Dhariwal 2021, §4: keep alpha_bar at the chosen steps S_1 < ... < S_K and set
        beta'_i = 1 - alpha_bar_{S_i} / alpha_bar_{S_{i-1}} (alpha_bar_{S_0} = 1), so the
        forward marginals q(x_{S_i} | x_0) are unchanged. ``timestep_map`` records S.
        """
        ts = torch.as_tensor(use_timesteps)
        if ts.is_floating_point() or ts.dim() != 1 or ts.numel() == 0:
            raise ValueError("use_timesteps must be a non-empty 1-D sequence of integer timesteps")
        ts = torch.sort(ts.long()).values
        if int(ts[0]) < 0 or int(ts[-1]) > self.T - 1:
            raise ValueError(f"use_timesteps must be in [0, {self.T - 1}]")
        if (ts[1:] == ts[:-1]).any():
            raise ValueError("use_timesteps must not repeat a timestep")
        abar = self.alpha_bars[ts]
        abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
        return NoiseSchedule(1.0 - abar / abar_prev, timestep_map=self.timestep_map[ts])


def check_schedule(s, name: str = "s") -> NoiseSchedule:
    """Check ``s`` is a ``NoiseSchedule`` (the one check every module uses)."""
    if not isinstance(s, NoiseSchedule):
        raise TypeError(f"{name} must be a NoiseSchedule (e.g. schedules.linear(T=1000)), "
                        f"got {type(s).__name__}")
    return s


def linear(T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> NoiseSchedule:
    """Betas evenly spaced from beta_start to beta_end (DDPM §4: 1e-4 to 0.02 for T = 1000)."""
    T = check_int("T", T, low=1)
    beta_start = check_float("beta_start", beta_start, low=0, high=1, low_open=True)
    beta_end = check_float("beta_end", beta_end, low=0, high=1, low_open=True)
    return NoiseSchedule(torch.linspace(beta_start, beta_end, T, dtype=torch.float64))


def cosine_alpha_bar(u: torch.Tensor, s: float = 0.008) -> torch.Tensor:
    """f(u) / f(0) with f(u) = cos(((u + s) / (1 + s)) * pi / 2)^2, u = t / T in [0, 1]
    (Nichol & Dhariwal 2021, "Improved DDPM", eq. 17)."""
    s = check_float("s", s, low=0)
    f = lambda v: torch.cos((v + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    return f(u) / f(torch.zeros_like(u))


def cosine(T: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> NoiseSchedule:
    """Betas from the cosine alpha_bar: beta_t = min(1 - alpha_bar(t/T) / alpha_bar((t-1)/T),
    max_beta) (Improved DDPM eq. 17 and the clipping below it)."""
    T = check_int("T", T, low=1)
    s = check_float("s", s, low=0)
    max_beta = check_float("max_beta", max_beta, low=0, high=1, low_open=True)
    u = torch.arange(T + 1, dtype=torch.float64) / T
    abar = cosine_alpha_bar(u, s)
    betas = (1.0 - abar[1:] / abar[:-1]).clamp(max=max_beta)
    return NoiseSchedule(betas)


def sigmoid(T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02,
            start: float = -6.0, end: float = 6.0) -> NoiseSchedule:
    """Betas following a logistic curve: beta = beta_start + (beta_end - beta_start) *
    sigmoid(linspace(start, end, T)) (Xu et al. 2022, "GeoDiff", §5; the "sigmoid" betas of the
    diffusers library). Slow at both ends, fast in the middle."""
    T = check_int("T", T, low=1)
    beta_start = check_float("beta_start", beta_start, low=0, high=1, low_open=True)
    beta_end = check_float("beta_end", beta_end, low=0, high=1, low_open=True)
    start = check_float("start", start)
    end = check_float("end", end)
    x = torch.linspace(start, end, T, dtype=torch.float64)
    return NoiseSchedule(beta_start + (beta_end - beta_start) * torch.sigmoid(x))


KINDS = {"linear": linear, "cosine": cosine, "sigmoid": sigmoid}


def make(kind: str, T: int = 1000, **kwargs) -> NoiseSchedule:
    """Build a schedule by name: ``make("cosine", T=1000)``."""
    return KINDS[check_choice("schedule kind", kind, KINDS)](T=T, **kwargs)

