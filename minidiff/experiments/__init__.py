"""One module per lesson chapter: the models it trains and the measurements it makes.

Each module holds its chapter's recipes (settings per scale and a trainer) and the measurements
its lesson and its benchmark share.

| lessons | module |
|---|---|
| 05-07 | ``generating_images``: the Fashion-MNIST DDPM and the feature classifier behind every FID |
| 08 | ``latent_diffusion``: the autoencoder and the latent DDPM |
| 09 | ``text_conditioning``: CLIP, the text-to-image DDPM, the shapes judge; zero-shot, guidance sweeps |
| 10 | ``gans_vs_diffusion``: the GANs, the class-conditional DDPM; the stability grid |
| 11 | ``editing_images``: inpainting, SDEdit, inversion and style-transfer measurements |
| 12 | ``beyond_images``: the molecule and clip DDPMs; reconstruction, synthetic data, molecule and clip scores |

``common`` holds what their recipes share (the DDPM trainer and the runs it returns). A chapter
module imports no other chapter module except for the recipes it builds on (``Recipe`` objects);
nothing outside this folder imports it but ``recipes`` (the table of every recipe) and the CLI.
"""

# in reading order: what they share, then the chapters from lesson 06 on
__all__ = ["common", "generating_images", "latent_diffusion", "text_conditioning", "gans_vs_diffusion",
           "editing_images", "beyond_images"]
