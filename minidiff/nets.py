"""Small networks for the 2-D lessons, and the time embedding every network here shares.

The time step enters the network as a sinusoidal embedding (Vaswani et al. 2017, §3.5; used
for diffusion in DDPM §4): for frequencies f_k = 10000^(-k / half), k = 0..half-1,

    emb(t) = [sin(t f_0), ..., sin(t f_{half-1}), cos(t f_0), ..., cos(t f_{half-1})].
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ._checks import check_float, check_int

__all__ = ["timestep_embedding", "TimeMLP"]


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0,
                       dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Sinusoidal embedding of integer (or real) timesteps t (N,) -> (N, dim), in ``dtype`` (a
    network passes its own, so a float64 copy of it runs in float64)."""
    dim = check_int("dim", dim, low=2)
    max_period = check_float("max_period", max_period, low=1)
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=dtype) / half)
    args = t.to(dtype)[:, None] * freqs[None]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=1)
    return emb


class TimeMLP(nn.Module):
    """A residual MLP for points in R^d: each block adds a projection of the time embedding.

    out = model(x_t, t) has the shape of x_t, so it can predict eps, x0 or v.
    """

    def __init__(self, dim: int = 2, hidden: int = 128, blocks: int = 3, t_dim: int = 64):
        super().__init__()
        self.dim = check_int("dim", dim, low=1)
        hidden = check_int("hidden", hidden, low=1)
        blocks = check_int("blocks", blocks, low=1)
        self.t_dim = check_int("t_dim", t_dim, low=2)
        self.t_mlp = nn.Sequential(nn.Linear(t_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.inp = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList(
            nn.ModuleDict({"norm": nn.LayerNorm(hidden), "fc1": nn.Linear(hidden, hidden),
                           "t": nn.Linear(hidden, hidden), "fc2": nn.Linear(hidden, hidden)})
            for _ in range(blocks))
        self.out = nn.Sequential(nn.LayerNorm(hidden), nn.SiLU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        temb = self.t_mlp(timestep_embedding(t, self.t_dim, dtype=self.inp.weight.dtype))
        h = self.inp(x)
        for b in self.blocks:
            z = torch.nn.functional.silu(b["fc1"](b["norm"](h)) + b["t"](temb))
            h = h + b["fc2"](torch.nn.functional.silu(z))
        return self.out(h)
