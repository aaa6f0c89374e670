"""Diffusion on video: short clips of a moving shape, a denoiser that attends across space and time (lesson 12).

A clip is ``frames`` frames of ``size`` x ``size`` pixels, the tensor (C, F, H, W) in [-1, 1]
(channels, frames, height, width, as ``torch.nn.Conv3d`` reads it). ``moving_shapes`` makes them
on the spot: one disc or square, of radius 2-3 pixels, crossing the frame in a straight line at a
steady speed of 0.5-1 pixel per frame, drawn with anti-aliased edges and never touching the border.

The denoiser (``SpaceTimeTransformer``) cuts every frame into ``patch`` x ``patch`` patches (the
tokens of a vision Transformer, after a small convolutional stem) and alternates, in each block,

* **space attention**: every token attends to the tokens of its own frame, and
* **time attention**: every token attends to the tokens at the same place in the other frames,

the *factorised* space-time attention of video diffusion models (Ho, Salimans, Gritsenko, Chan,
Norouzi & Fleet 2022, "Video diffusion models", §3: attention over space within each frame, then
over time, the order used here; Bertasius et al. 2021's TimeSformer "divided" attention takes
time first). It costs
F·P² + P·F² per layer instead of (F·P)² for P patches per frame. ``time_attention=False`` drops
the time step: frames are then denoised independently (each knows only its frame index), the
baseline that shows what the time attention is for.

The **motion-consistency score** (``motion_error``) asks whether a clip moves like the data: the
shape's position in each frame is the brightness-weighted centroid; the positions are fitted by
least squares with a straight line at constant speed, p_f = a + b f; the score is the root mean
square distance, in pixels, of the positions from that line. Real clips score about 0. (A grey
background, as an unsure model may draw, pulls every centroid towards the frame's centre: the
path looks slower but stays straight.)
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ._checks import check_int, check_tensor
from .nets import timestep_embedding

__all__ = ["moving_shapes", "shuffle_frames", "centroids", "motion_error", "SpaceTimeTransformer", "SHAPES"]

SHAPES = ("disc", "square")


def moving_shapes(n: int, frames: int = 8, size: int = 16, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` clips (n, 1, frames, size, size) in [-1, 1] of one shape moving in a straight line at
    constant speed (see the module docstring)."""
    n = check_int("n", n, low=1)
    frames = check_int("frames", frames, low=2)
    size = check_int("size", size, low=8)
    if size - 1 - 2 * 3.5 < frames - 1:          # the widest shape (margin 3.5) at the top speed (1 px / frame)
        raise ValueError(f"size {size} is too small for {frames} frames at up to 1 pixel per frame")
    radius = 2.0 + torch.rand(n, generator=generator)
    speed = 0.5 + 0.5 * torch.rand(n, generator=generator)
    angle = 2 * math.pi * torch.rand(n, generator=generator)
    velocity = speed[:, None] * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)   # (n, 2): x, y
    travel = velocity * (frames - 1)
    margin = radius[:, None] + 0.5
    low = margin - travel.clamp(max=0)
    high = (size - 1) - margin - travel.clamp(min=0)
    start = low + (high - low) * torch.rand(n, 2, generator=generator)
    square = torch.rand(n, generator=generator) < 0.5
    f = torch.arange(frames, dtype=torch.float32)
    centre = start[:, None, :] + f[None, :, None] * velocity[:, None, :]                      # (n, F, 2)
    grid = torch.arange(size, dtype=torch.float32)
    dx = grid[None, None, None, :] - centre[..., 0, None, None]                               # (n, F, 1, W)
    dy = grid[None, None, :, None] - centre[..., 1, None, None]                               # (n, F, H, 1)
    distance = torch.where(square[:, None, None, None], torch.maximum(dx.abs(), dy.abs()), torch.sqrt(dx ** 2 + dy ** 2))
    ink = (radius[:, None, None, None] + 0.5 - distance).clamp(0, 1)       # 1 inside, a one-pixel ramp at the edge
    return (2 * ink - 1)[:, None]


def shuffle_frames(clips: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Clips whose frame f is frame f of a clip drawn by a random permutation of the clips, one
    permutation per frame (a clip may keep its own frame): every frame is real, the motion is
    gone. The baseline of no temporal consistency."""
    _check_clips("clips", clips)
    n, frames = clips.shape[0], clips.shape[2]
    order = torch.stack([torch.randperm(n, generator=generator) for _ in range(frames)], dim=1)   # (n, F)
    return clips[order.to(clips.device), :, torch.arange(frames, device=clips.device)].transpose(1, 2)


def _check_clips(name: str, x: torch.Tensor) -> torch.Tensor:
    check_tensor(name, x)
    if x.dim() != 5:
        raise ValueError(f"{name} must have shape (N, C, F, H, W), got {tuple(x.shape)}")
    return x


def centroids(clips: torch.Tensor) -> torch.Tensor:
    """The shape's position in every frame: the centroid (x, y) in pixels of the brightness
    (x + 1) / 2 clamped to [0, 1], channels averaged: (N, F, 2)."""
    _check_clips("clips", clips)
    w = ((clips.float().mean(1) + 1) / 2).clamp(0, 1)                                          # (N, F, H, W)
    ys = torch.arange(w.shape[-2], dtype=w.dtype, device=w.device)
    xs = torch.arange(w.shape[-1], dtype=w.dtype, device=w.device)
    mass = w.sum(dim=(-2, -1)).clamp(min=1e-6)
    return torch.stack([(w.sum(-2) * xs).sum(-1) / mass, (w.sum(-1) * ys).sum(-1) / mass], dim=-1)


def motion_error(clips: torch.Tensor) -> torch.Tensor:
    """Per clip, the RMS distance (pixels) of the per-frame centroids from their least-squares
    straight line at constant speed p_f = a + b f: (N,)."""
    p = centroids(clips).double()                                                             # (N, F, 2)
    f = torch.arange(p.shape[1], dtype=p.dtype, device=p.device)
    design = torch.stack([torch.ones_like(f), f], dim=1)                                      # (F, 2)
    fit = design @ torch.linalg.lstsq(design.expand(len(p), -1, -1), p).solution              # (N, F, 2)
    return ((p - fit) ** 2).sum(-1).mean(-1).sqrt().float()


class _SpaceTimeBlock(nn.Module):
    """Space attention within each frame, then (optionally) time attention across frames at each
    patch, then an MLP; all pre-norm and residual, the diffusion time added first."""

    def __init__(self, width: int, heads: int, time_attention: bool):
        super().__init__()
        self.t_proj = nn.Linear(width, width)
        self.norm_space, self.norm_mlp = nn.LayerNorm(width), nn.LayerNorm(width)
        self.space = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm_time = nn.LayerNorm(width) if time_attention else None
        self.time = nn.MultiheadAttention(width, heads, batch_first=True) if time_attention else None
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, h: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        n, f, p, w = h.shape                                                  # clips, frames, patches, width
        h = h + self.t_proj(temb)[:, None, None]
        z = self.norm_space(h).reshape(n * f, p, w)                           # one sequence per frame
        h = h + self.space(z, z, z, need_weights=False)[0].reshape(n, f, p, w)
        if self.time is not None:
            z = self.norm_time(h).transpose(1, 2).reshape(n * p, f, w)        # one sequence per patch
            h = h + self.time(z, z, z, need_weights=False)[0].reshape(n, p, f, w).transpose(1, 2)
        return h + self.mlp(self.norm_mlp(h))


class SpaceTimeTransformer(nn.Module):
    """``model(x_t, t) -> prediction`` for clips x_t of shape (N, channels, frames, size, size).

    Each frame goes through a small convolutional stem at full resolution; a strided convolution
    cuts it into ``patch`` x ``patch`` patches, the tokens, with learned space and frame positions;
    ``layers`` factorised space-time blocks (``_SpaceTimeBlock``) work on the tokens; a transposed
    convolution brings them back to pixels, where they join the stem's features (a skip, as in a
    U-Net) for two last convolutions. The diffusion time is added to the tokens in every block and
    to the stem's features. Only the time attention mixes frames: ``time_attention=False``
    denoises every frame on its own."""

    def __init__(self, frames: int = 8, size: int = 16, channels: int = 1, patch: int = 4, width: int = 64,
                 layers: int = 4, heads: int = 4, time_attention: bool = True, conv_width: int = 32):
        super().__init__()
        self.frames = check_int("frames", frames, low=1)
        self.size = check_int("size", size, low=1)
        self.channels = check_int("channels", channels, low=1)
        self.patch = check_int("patch", patch, low=1)
        self.width = check_int("width", width, low=1)
        check_int("layers", layers, low=1)
        heads = check_int("heads", heads, low=1)
        cw = check_int("conv_width", conv_width, low=1)
        if size % patch:
            raise ValueError(f"size ({size}) must be divisible by patch ({patch})")
        if width % heads:
            raise ValueError(f"width ({width}) must be divisible by heads ({heads})")
        if not isinstance(time_attention, bool):
            raise TypeError(f"time_attention must be a bool, got {type(time_attention).__name__}")
        self.time_attention = time_attention
        self.time = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.stem = nn.Sequential(nn.Conv2d(channels, cw, 3, padding=1), nn.SiLU(), nn.Conv2d(cw, cw, 3, padding=1))
        self.stem_time = nn.Linear(width, cw)
        self.embed = nn.Conv2d(cw, width, patch, stride=patch)
        self.space_pos = nn.Parameter(0.02 * torch.randn((size // patch) ** 2, width))
        self.frame_pos = nn.Parameter(0.02 * torch.randn(frames, width))
        self.blocks = nn.ModuleList(_SpaceTimeBlock(width, heads, time_attention) for _ in range(layers))
        self.norm = nn.LayerNorm(width)
        self.unpatch = nn.ConvTranspose2d(width, cw, patch, stride=patch)
        self.head = nn.Sequential(nn.SiLU(), nn.Conv2d(2 * cw, cw, 3, padding=1), nn.SiLU(),
                                  nn.Conv2d(cw, channels, 3, padding=1))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        n, c, f, hgt, wid = x.shape
        if (c, f, hgt, wid) != (self.channels, self.frames, self.size, self.size):
            raise ValueError(f"x must have shape (N, {self.channels}, {self.frames}, {self.size}, {self.size}), "
                             f"got {tuple(x.shape)}")
        temb = self.time(timestep_embedding(t, self.width, dtype=x.dtype))                 # (n, width)
        frames = x.transpose(1, 2).reshape(n * f, c, hgt, wid)                           # every frame on its own
        skip = self.stem(frames) + self.stem_time(temb).repeat_interleave(f, 0)[:, :, None, None]
        tokens = self.embed(skip)                                                         # (n f, width, k, k)
        k = tokens.shape[-1]
        h = tokens.flatten(2).transpose(1, 2).reshape(n, f, k * k, self.width) + self.space_pos + self.frame_pos[:, None]
        for block in self.blocks:
            h = block(h, temb)
        h = self.norm(h).reshape(n * f, k, k, self.width).permute(0, 3, 1, 2)
        out = self.head(torch.cat([self.unpatch(h), skip], dim=1))                       # (n f, c, H, W)
        return out.reshape(n, f, c, hgt, wid).transpose(1, 2)
