"""The U-Net: the network that predicts noise in images.

Ronneberger et al. 2015 introduced the U shape: a down path that halves the resolution and
widens the channels, an up path that undoes it, and **skip connections** that hand each up
level the down level's features at the same resolution. Ho et al. 2020 (§4, Appendix B) made
it the diffusion backbone with three additions, all here:

* the timestep enters every residual block as a learned projection of its sinusoidal
  embedding (``nets.timestep_embedding``), added to the feature maps channel by channel;
* residual blocks use GroupNorm (Wu & He 2018) and SiLU;
* self-attention (Vaswani et al. 2017, eq. 1: softmax(Q K^T / sqrt(d)) V) at low resolution,
  where every pixel can look at every other.

Conditioning joins the time embedding: a class label through an embedding table (one extra
"no label" row for classifier-free guidance), and a text sequence through cross-attention
(Rombach et al. 2022, §3.3: queries from pixels, keys and values from the text tokens).

Pass ``trace=[]`` to ``forward`` to record the shape after every block, down and up.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_float, check_int
from .nets import timestep_embedding

__all__ = ["ResBlock", "Attention", "UNet", "record_cross_attention"]


def _zero(module: nn.Module) -> nn.Module:
    """Start a residual branch's last layer at zero, so each block begins as the identity."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """GroupNorm -> SiLU -> conv, add the embedding, GroupNorm -> SiLU -> dropout -> conv, plus a skip."""

    def __init__(self, cin: int, cout: int, emb_dim: int, dropout: float = 0.0, groups: int = 8):
        super().__init__()
        dropout = check_float("dropout", dropout, low=0, high=1, high_open=True)
        groups = check_int("groups", groups, low=1)
        self.norm1 = nn.GroupNorm(min(groups, cin), cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, cout)
        self.norm2 = nn.GroupNorm(min(groups, cout), cout)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _zero(nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class Attention(nn.Module):
    """Multi-head self-attention over the pixels; with ``context_dim``, then cross-attention
    from the pixels (queries) to a context sequence (keys and values)."""

    def __init__(self, channels: int, heads: int = 4, context_dim: int | None = None, groups: int = 8):
        super().__init__()
        heads = check_int("heads", heads, low=1)
        groups = check_int("groups", groups, low=1)
        if channels % heads:
            raise ValueError(f"channels ({channels}) must be divisible by heads ({heads})")
        self.heads = heads
        self.norm = nn.GroupNorm(min(groups, channels), channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.out = _zero(nn.Linear(channels, channels))
        self.cross = None
        self.recorded = None        # a list while ``record_cross_attention`` is on
        if context_dim is not None:
            self.cross = nn.ModuleDict({"norm": nn.LayerNorm(channels), "q": nn.Linear(channels, channels),
                                        "kv": nn.Linear(context_dim, 2 * channels),
                                        "out": _zero(nn.Linear(channels, channels))})

    def _heads(self, x: torch.Tensor) -> torch.Tensor:      # (B, L, C) -> (B, heads, L, C / heads)
        b, n, c = x.shape
        return x.reshape(b, n, self.heads, c // self.heads).transpose(1, 2)

    def _attend(self, q, k, v) -> torch.Tensor:             # softmax(Q K^T / sqrt(d)) V, merged heads
        out = F.scaled_dot_product_attention(self._heads(q), self._heads(k), self._heads(v))
        return out.transpose(1, 2).reshape(q.shape)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)    # (B, H*W, C)
        q, k, v = self.qkv(tokens).chunk(3, dim=-1)
        y = x.flatten(2).transpose(1, 2) + self.out(self._attend(q, k, v))
        if self.cross is not None:
            if context is None:
                raise ValueError("this U-Net was built with context_dim: pass context=(B, L, context_dim)")
            k, v = self.cross["kv"](context).chunk(2, dim=-1)
            q = self.cross["q"](self.cross["norm"](y))
            if self.recorded is not None:                   # softmax(Q K^T / sqrt(d)), heads averaged
                d = c // self.heads
                weights = torch.softmax(self._heads(q) @ self._heads(k).transpose(-1, -2) / d ** 0.5, dim=-1)
                self.recorded.append((h, w, weights.mean(1).detach().float().cpu()))   # (B, H*W, L)
            y = y + self.cross["out"](self._attend(q, k, v))
        return y.transpose(1, 2).reshape(b, c, h, w)


@contextlib.contextmanager
def record_cross_attention(model: nn.Module):
    """While on, every cross-attention layer of ``model`` appends ``(H, W, weights)`` to the list
    this yields, one entry per call: ``weights`` (B, H*W, L) is softmax(Q K^T / sqrt(d)) averaged
    over heads, how much each pixel attends to each of the L context tokens (each row sums to 1)."""
    layers = [m for m in model.modules() if isinstance(m, Attention) and m.cross is not None]
    if not layers:
        raise ValueError("model has no cross-attention layer (build the U-Net with context_dim)")
    maps: list = []
    for m in layers:
        m.recorded = maps
    try:
        yield maps
    finally:
        for m in layers:
            m.recorded = None


class UNet(nn.Module):
    """A diffusion U-Net: ``unet(x_t, t, y=None, context=None) -> prediction shaped like x_t``.

    :param in_channels: image channels (1 for Fashion-MNIST).
    :param base_channels: channels at full resolution; level i has base * channel_mults[i].
    :param channel_mults: one entry per resolution level; every level but the last halves H, W.
    :param num_res_blocks: residual blocks per level on the way down (one more on the way up).
    :param attention_levels: which levels (0 = full resolution) get self-attention; the middle always does.
    :param num_classes: enables class conditioning with labels 0..num_classes-1 (num_classes = "no label").
    :param context_dim: enables cross-attention to a sequence (B, L, context_dim), e.g. text tokens.
    :param skip_connections: False drops the U's skips (for the ablation in lesson 05).
    """

    def __init__(self, in_channels: int = 1, out_channels: int | None = None, base_channels: int = 32,
                 channel_mults=(1, 2, 2), num_res_blocks: int = 1, attention_levels=(2,),
                 num_classes: int | None = None, context_dim: int | None = None, dropout: float = 0.0,
                 heads: int = 4, skip_connections: bool = True):
        super().__init__()
        in_channels = check_int("in_channels", in_channels, low=1)
        base = check_int("base_channels", base_channels, low=1)
        num_res_blocks = check_int("num_res_blocks", num_res_blocks, low=1)
        channel_mults = tuple(channel_mults)
        if not channel_mults:
            raise ValueError("channel_mults must have at least one level")
        if any(lvl < 0 or lvl >= len(channel_mults) for lvl in attention_levels):
            raise ValueError(f"attention_levels must be in [0, {len(channel_mults) - 1}], got {tuple(attention_levels)}")
        self.config = dict(in_channels=in_channels, out_channels=out_channels, base_channels=base,
                           channel_mults=channel_mults, num_res_blocks=num_res_blocks,
                           attention_levels=tuple(attention_levels), num_classes=num_classes,
                           context_dim=context_dim, dropout=dropout, heads=heads,
                           skip_connections=skip_connections)
        self.num_classes = num_classes
        self.skip_connections = skip_connections
        emb_dim = 4 * base
        self.base = base
        self.time_mlp = nn.Sequential(nn.Linear(base, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.class_emb = nn.Embedding(num_classes + 1, emb_dim) if num_classes else None
        self.conv_in = nn.Conv2d(in_channels, base, 3, padding=1)

        def attn(ch):
            return Attention(ch, heads, context_dim)

        self.down = nn.ModuleList()
        skips, ch = [base], base
        for lvl, mult in enumerate(channel_mults):
            for _ in range(num_res_blocks):
                block = nn.ModuleList([ResBlock(ch, base * mult, emb_dim, dropout)])
                ch = base * mult
                if lvl in attention_levels:
                    block.append(attn(ch))
                self.down.append(block)
                skips.append(ch)
            if lvl < len(channel_mults) - 1:
                self.down.append(nn.ModuleList([nn.Conv2d(ch, ch, 3, stride=2, padding=1)]))
                skips.append(ch)
        self.mid = nn.ModuleList([ResBlock(ch, ch, emb_dim, dropout), attn(ch), ResBlock(ch, ch, emb_dim, dropout)])
        self.up = nn.ModuleList()
        for lvl, mult in reversed(list(enumerate(channel_mults))):
            for _ in range(num_res_blocks + 1):
                skip_ch = skips.pop() if skip_connections else 0
                block = nn.ModuleList([ResBlock(ch + skip_ch, base * mult, emb_dim, dropout)])
                ch = base * mult
                if lvl in attention_levels:
                    block.append(attn(ch))
                self.up.append(block)
            if lvl > 0:
                self.up.append(nn.ModuleList([nn.Conv2d(ch, ch, 3, padding=1)]))    # after a 2x upsample
        self.norm_out = nn.GroupNorm(min(8, ch), ch)
        self.conv_out = _zero(nn.Conv2d(ch, out_channels or in_channels, 3, padding=1))

    def embed(self, t: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """Time embedding, plus the class embedding when the model is class-conditional."""
        emb = self.time_mlp(timestep_embedding(t, self.base, dtype=self.conv_in.weight.dtype))
        if self.class_emb is not None:
            if y is None:
                y = torch.full_like(t, self.num_classes)          # "no label"
            emb = emb + self.class_emb(y)
        elif y is not None:
            raise ValueError("y was given but this U-Net has no class conditioning (num_classes=None)")
        return emb

    @staticmethod
    def _run(block: nn.ModuleList, h, emb, context):
        for layer in block:
            if isinstance(layer, ResBlock):
                h = layer(h, emb)
            elif isinstance(layer, Attention):
                h = layer(h, context)
            else:
                h = layer(h)
        return h

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None,
                context: torch.Tensor | None = None, trace: list | None = None) -> torch.Tensor:
        def record(name, h):
            if trace is not None:
                trace.append((name, tuple(h.shape)))

        emb = self.embed(t, y)
        h = self.conv_in(x)
        record("conv_in", h)
        skips = [h]
        for k, block in enumerate(self.down):
            h = self._run(block, h, emb, context)
            skips.append(h)
            record(f"down[{k}] " + "+".join(type(m).__name__ for m in block), h)
        h = self._run(self.mid, h, emb, context)
        record("middle ResBlock+Attention+ResBlock", h)
        for k, block in enumerate(self.up):
            if isinstance(block[0], ResBlock):
                if self.skip_connections:
                    h = torch.cat([h, skips.pop()], dim=1)
                h = self._run(block, h, emb, context)
            else:   # upsample to the size of the next skip (handles odd sizes such as 7 -> 14)
                size = skips[-1].shape[-2:] if self.skip_connections else (h.shape[-2] * 2, h.shape[-1] * 2)
                h = self._run(block, F.interpolate(h, size=size, mode="nearest"), emb, context)
            record(f"up[{k}] " + "+".join(type(m).__name__ for m in block), h)
        out = self.conv_out(F.silu(self.norm_out(h)))
        record("conv_out", out)
        return out
