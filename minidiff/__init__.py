"""minidiff: diffusion models explained by building them.

One small module per idea; read the chapters in this order (each imports only earlier ones):
``physics`` (ink in water) → ``schedules`` → ``forward`` → ``reverse`` → ``loss`` →
``samplers`` → ``unet`` → ``autoencoder`` → ``clip`` → ``guidance`` → ``gan`` → ``editing`` →
``inverse`` → ``molecules`` → ``video``. Around them: ``analytic`` holds an exact denoiser for
Gaussian mixtures, ``data`` the data sets, ``nets`` the small networks, ``training`` the one loop
(``distributed`` under torchrun), ``costs`` what training costs, ``metrics`` the maths of comparing
sets, ``verdicts`` intervals and what they allow one to say, ``evaluation`` the shared yardstick
(the feature classifier, FID and KID, sampler races), ``cache`` the model and sample cache,
``experiments`` one module per lesson chapter (its recipes and measurements), ``recipes`` the table
that names every recipe, ``plots`` and ``widgets`` the pictures, ``device`` the run set-up (device,
scale, seeds).
"""
from . import (analytic, data, device, evaluation, forward, loss, metrics, physics, reverse,  # noqa: F401
               samplers, schedules)

__version__ = "0.1.0"
