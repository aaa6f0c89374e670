"""minidiff: diffusion models explained by building them.

One small module per idea; read them in this order:
``physics`` (ink in water) → ``schedules`` → ``forward`` → ``reverse`` → ``loss`` →
``samplers``; ``analytic`` holds an exact denoiser for Gaussian mixtures, ``data`` the data
sets, ``nets`` the small networks, ``plots`` and ``widgets`` the pictures, ``device`` the
run set-up (device, scale, seeds).
"""
from . import analytic, data, device, forward, loss, metrics, physics, reverse, samplers, schedules  # noqa: F401

__version__ = "0.1.0"
