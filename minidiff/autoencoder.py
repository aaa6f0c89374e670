"""The latent autoencoder: images to a small Gaussian latent and back (Rombach et al. 2022, §3.1).

Latent diffusion runs the whole diffusion process of the earlier chapters on ``z = E(x)``, a
latent f times smaller in height and width, and decodes the result with ``D``. The
autoencoder is a variational one (Kingma & Welling 2014): the encoder outputs a diagonal
Gaussian q(z | x) = N(mean, diag(exp(logvar))), training samples z from it
(the reparameterisation z = mean + std * eps, K&W eq. 10) and adds a small KL divergence to
N(0, I), which keeps the latent space free of holes without letting the decoder ignore z.

* ``DiagonalGaussian``: q(z | x) with ``sample``, ``mode`` and ``kl`` in closed form
  (K&W Appendix B: KL = 1/2 sum(mean^2 + var - 1 - logvar)).
* ``AutoEncoder``: GroupNorm residual blocks as in the U-Net, stride-2 convolutions down and
  nearest-neighbour upsampling up; ``channel_mults`` of length L gives f = 2^(L-1)
  (three levels: 28x28 -> 7x7).
* ``vae_loss``: per-pixel L1 reconstruction plus ``kl_weight`` times the per-pixel KL.
* ``latent_scale`` and ``LatentSpace``: Stable Diffusion multiplies its latents by 0.18215,
  which is 1 / (standard deviation of its VAE's latents) on a batch of its data; here that
  number is measured for *this* autoencoder, and ``LatentSpace`` applies it on the way in and
  removes it on the way out, so it cannot be put on the wrong side.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_float, check_int, check_tensor

__all__ = ["DiagonalGaussian", "AutoEncoder", "vae_loss", "latent_scale", "LatentSpace", "LOGVAR_RANGE"]

LOGVAR_RANGE = (-30.0, 20.0)      # the encoder's log-variance is clamped here (std in [3e-7, 2e4])


def _check_4d(name: str, x) -> torch.Tensor:
    check_tensor(name, x)
    if x.ndim != 4:
        raise ValueError(f"{name} must be a batch (N, C, H, W), got shape {tuple(x.shape)}")
    return x


class DiagonalGaussian:
    """q(z | x) = N(mean, diag(exp(logvar))) for a batch: ``mean`` and ``logvar`` are (N, C, h, w)."""

    def __init__(self, mean: torch.Tensor, logvar: torch.Tensor):
        if mean.shape != logvar.shape:
            raise ValueError(f"mean {tuple(mean.shape)} and logvar {tuple(logvar.shape)} must have one shape")
        self.mean = mean
        self.logvar = logvar.clamp(*LOGVAR_RANGE)
        self.std = torch.exp(0.5 * self.logvar)

    def sample(self, generator: torch.Generator | None = None, noise: torch.Tensor | None = None) -> torch.Tensor:
        """z = mean + std * eps with eps ~ N(0, I) (the reparameterisation, K&W eq. 10), drawn
        on ``generator``'s device and moved to the mean's; or ``noise`` as eps when given (drawn
        with a global batch, so that torchrun's ranks each take their rows of it)."""
        if noise is None:
            dev = generator.device if generator is not None else self.mean.device
            noise = torch.randn(self.mean.shape, generator=generator, device=dev, dtype=self.mean.dtype)
        elif noise.shape != self.mean.shape:
            raise ValueError(f"noise must have the latents' shape {tuple(self.mean.shape)}, got {tuple(noise.shape)}")
        return self.mean + self.std * noise.to(self.mean.device)

    def mode(self) -> torch.Tensor:
        """The most likely z: the mean."""
        return self.mean

    def kl(self) -> torch.Tensor:
        """KL(q(z | x) || N(0, I)) per sample, summed over the latent's dimensions:
        1/2 sum(mean^2 + var - 1 - logvar) (Kingma & Welling 2014, Appendix B)."""
        return 0.5 * (self.mean.pow(2) + self.logvar.exp() - 1.0 - self.logvar).flatten(1).sum(1)


class _Block(nn.Module):
    """GroupNorm -> SiLU -> conv, twice, plus a (1x1 if the width changes) skip: the U-Net's
    residual block without a time embedding."""

    def __init__(self, cin: int, cout: int, groups: int = 8):
        super().__init__()
        self.norm1 = nn.GroupNorm(min(groups, cin), cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = nn.GroupNorm(min(groups, cout), cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        return self.skip(x) + self.conv2(F.silu(self.norm2(h)))


class AutoEncoder(nn.Module):
    """A KL-regularised convolutional autoencoder for (N, in_channels, H, W) images in [-1, 1].

    :param in_channels: image channels.
    :param latent_channels: channels of z (4, as in Stable Diffusion).
    :param base_channels: width at full resolution; level i has base * channel_mults[i].
    :param channel_mults: one entry per level; every level but the last halves H and W, so the
        downsampling factor is ``f = 2 ** (len(channel_mults) - 1)``; H and W must be divisible by f.
    :param num_res_blocks: residual blocks per level.
    """

    def __init__(self, in_channels: int = 1, latent_channels: int = 4, base_channels: int = 32,
                 channel_mults=(1, 2, 2), num_res_blocks: int = 1, groups: int = 8):
        super().__init__()
        self.in_channels = check_int("in_channels", in_channels, low=1)
        self.latent_channels = check_int("latent_channels", latent_channels, low=1)
        base_channels = check_int("base_channels", base_channels, low=1)
        num_res_blocks = check_int("num_res_blocks", num_res_blocks, low=1)
        channel_mults = tuple(check_int("channel_mults entry", m, low=1) for m in channel_mults)
        if not channel_mults:
            raise ValueError("channel_mults must name at least one level")
        self.f = 2 ** (len(channel_mults) - 1)
        widths = [base_channels * m for m in channel_mults]

        down = [nn.Conv2d(in_channels, widths[0], 3, padding=1)]
        c = widths[0]
        for i, w in enumerate(widths):
            for _ in range(num_res_blocks):
                down.append(_Block(c, w, groups))
                c = w
            if i < len(widths) - 1:
                down.append(nn.Conv2d(c, c, 3, stride=2, padding=1))          # halve H, W
        down += [_Block(c, c, groups), nn.GroupNorm(min(groups, c), c), nn.SiLU(),
                 nn.Conv2d(c, 2 * latent_channels, 3, padding=1)]             # mean and logvar
        self.encoder = nn.Sequential(*down)

        up = [nn.Conv2d(latent_channels, c, 3, padding=1), _Block(c, c, groups)]
        for i, w in reversed(list(enumerate(widths))):
            for _ in range(num_res_blocks):
                up.append(_Block(c, w, groups))
                c = w
            if i > 0:
                up += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c, c, 3, padding=1)]
        up += [nn.GroupNorm(min(groups, c), c), nn.SiLU(), nn.Conv2d(c, in_channels, 3, padding=1)]
        self.decoder = nn.Sequential(*up)

    def latent_shape(self, image_shape) -> tuple[int, int, int]:
        """The (C, h, w) of z for images of (C, H, W) ``image_shape``."""
        c, h, w = image_shape
        self._check_image(c, h, w)
        return (self.latent_channels, h // self.f, w // self.f)

    def _check_image(self, c: int, h: int, w: int) -> None:
        if c != self.in_channels or h % self.f or w % self.f:
            raise ValueError(f"x must be (N, {self.in_channels}, H, W) with H and W divisible by f = {self.f}, "
                             f"got channels {c} and size {h}x{w}")

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        """q(z | x) for images ``x`` (N, in_channels, H, W)."""
        _check_4d("x", x)
        self._check_image(*x.shape[1:])
        mean, logvar = self.encoder(x).chunk(2, dim=1)
        return DiagonalGaussian(mean, logvar)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images (N, in_channels, h * f, w * f) from latents ``z`` (N, latent_channels, h, w)."""
        _check_4d("z", z)
        if z.shape[1] != self.latent_channels:
            raise ValueError(f"z must be (N, {self.latent_channels}, h, w), got {tuple(z.shape)}")
        return self.decoder(z)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None, noise: torch.Tensor | None = None):
        """``(reconstruction, posterior)``: decode a sample of q(z | x) (with ``noise`` as its eps if given)."""
        posterior = self.encode(x)
        return self.decode(posterior.sample(generator, noise)), posterior


def vae_loss(ae: AutoEncoder, x: torch.Tensor, kl_weight: float = 1e-3,
             generator: torch.Generator | None = None, noise: torch.Tensor | None = None) -> dict:
    """The autoencoder's training loss on a batch, both terms per pixel of the image:
    ``recon`` = mean |x - D(z)| over pixels (L1, as Rombach et al. use; it blurs less than L2),
    ``kl`` = q(z | x)'s KL to N(0, I) divided by the image's pixel count, and
    ``loss = recon + kl_weight * kl``. Returns all three (the loss keeps its graph). z's eps is
    drawn on ``generator``, or is ``noise`` when given."""
    kl_weight = check_float("kl_weight", kl_weight, low=0)
    recon_x, posterior = ae(x, generator, noise)
    recon = (recon_x - x).abs().mean()
    kl = posterior.kl().mean() / x[0].numel()
    return {"loss": recon + kl_weight * kl, "recon": recon, "kl": kl}


@torch.no_grad()
def latent_scale(ae: AutoEncoder, images: torch.Tensor, generator: torch.Generator | None = None) -> float:
    """1 / (standard deviation of sampled latents z ~ q(z | x) over ``images``): the factor that
    gives the diffusion model latents of unit spread, as N(0, I) noise has (Rombach et al.
    2022, Appendix G; Stable Diffusion's 0.18215 is this number for its own autoencoder)."""
    _check_4d("images", images)
    if len(images) < 2:
        raise ValueError(f"images must hold at least 2 images to measure a spread, got {len(images)}")
    z = ae.encode(images.to(next(ae.parameters()).device)).sample(generator)
    return 1.0 / z.float().std().item()


class LatentSpace:
    """The autoencoder as the diffusion model sees it: ``encode`` returns scaled latents
    ``scale * z``; ``decode`` divides by the scale before the decoder. Diffusion trains and
    samples on the scaled latents only, so the scale can be neither forgotten nor applied twice."""

    def __init__(self, ae: AutoEncoder, scale: float):
        self.ae = ae
        self.scale = check_float("scale", scale, low=0, low_open=True)

    def encode(self, x: torch.Tensor, sample: bool = True, generator: torch.Generator | None = None) -> torch.Tensor:
        """``scale * z`` with z sampled from q(z | x) (``sample=False``: its mean)."""
        posterior = self.ae.encode(x)
        return self.scale * (posterior.sample(generator) if sample else posterior.mode())

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Images from scaled latents: the decoder of ``latents / scale``."""
        return self.ae.decode(latents / self.scale)

    def latent_shape(self, image_shape) -> tuple[int, int, int]:
        return self.ae.latent_shape(image_shape)
