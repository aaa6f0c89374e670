"""GANs: the models diffusion replaced, built here to be measured against it (lesson 10).

A generator G maps noise z ~ N(0, I) to an image in one forward pass; a discriminator D scores
images as real or generated. Goodfellow et al. 2014 (eq. 1) train them against each other:

    min_G max_D  E_x[log D(x)] + E_z[log(1 - D(G(z)))].

With D's output a logit l (D = sigmoid(l)), D's loss is softplus(-l_real) + softplus(l_fake).
G's loss in the minimax form, log(1 - D(G(z))), has no gradient early on, when D rejects every
fake; the **non-saturating** loss of §3 maximises log D(G(z)) instead: softplus(-l_fake).
The **hinge** loss (Lim & Ye 2017; Miyato et al. 2018) is an alternative: D minimises
relu(1 - l_real) + relu(1 + l_fake), G minimises -l_fake.

The networks follow DCGAN (Radford et al. 2016, §3): strided convolutions in D and fractionally
strided (transposed) convolutions in G instead of pooling, batch norm in both except G's output
layer and D's input layer, ReLU in G with tanh at the output, LeakyReLU(0.2) in D, Adam with
lr 2e-4 and beta1 = 0.5. The class-conditional form concatenates the label to the input of both
(Mirza & Osindero 2014): a label embedding to z in G, one-hot label planes to the image in D. (A
projection discriminator, Miyato & Koyama 2018, was tried first: without spectral normalisation
its FID at the small recipe stayed around 300, twice the unconditional GAN's.)

GANs fail in ways diffusion training does not: **mode collapse** (G produces a few kinds of image)
and divergence. ``collapse_stats`` measures the first from samples: the entropy of the class
histogram a classifier reads from them, and their mean pairwise distance.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_choice, check_int, check_tensor

__all__ = ["Generator", "Discriminator", "GAN", "discriminator_loss", "generator_loss", "gan_step", "LOSSES",
           "collapse_stats"]

LOSSES = ("nonsaturating", "hinge")


class Generator(nn.Module):
    """z (N, z_dim) [+ label y (N,)] -> image (N, channels, 28, 28) in [-1, 1].

    A linear layer to 4w x 7 x 7, then two transposed convolutions (7 -> 14 -> 28), batch norm and
    ReLU after each hidden layer, and a 3x3 convolution with tanh to the image."""

    def __init__(self, z_dim: int = 100, width: int = 32, channels: int = 1, num_classes: int | None = None):
        super().__init__()
        self.z_dim = check_int("z_dim", z_dim, low=1)
        w = check_int("width", width, low=1)
        self.num_classes = None if num_classes is None else check_int("num_classes", num_classes, low=2)
        self.label = nn.Embedding(num_classes, z_dim) if num_classes else None
        self.project = nn.Sequential(nn.Linear(z_dim * (2 if num_classes else 1), 4 * w * 49, bias=False),
                                     nn.BatchNorm1d(4 * w * 49), nn.ReLU())
        self.body = nn.Sequential(
            nn.ConvTranspose2d(4 * w, 2 * w, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(2 * w), nn.ReLU(),
            nn.ConvTranspose2d(2 * w, w, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(),
            nn.Conv2d(w, channels, 3, padding=1), nn.Tanh())
        self.width = w

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        check_tensor("z", z)
        if z.dim() != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must have shape (N, {self.z_dim}), got {tuple(z.shape)}")
        if self.label is not None:
            if y is None:
                raise ValueError("this generator is class-conditional: pass labels y (N,)")
            z = torch.cat([z, self.label(y)], dim=1)
        elif y is not None:
            raise ValueError("y was given but this generator has no classes (num_classes=None)")
        return self.body(self.project(z).view(len(z), 4 * self.width, 7, 7))


class Discriminator(nn.Module):
    """image (N, channels, 28, 28) [+ y] -> one logit per image. Strided convolutions 28 -> 14 -> 7
    -> 4, LeakyReLU(0.2), batch norm on all but the first layer. The class-conditional form reads
    the label as ``num_classes`` one-hot planes concatenated to the image (Mirza & Osindero 2014)."""

    def __init__(self, width: int = 32, channels: int = 1, num_classes: int | None = None):
        super().__init__()
        w = check_int("width", width, low=1)
        self.num_classes = num_classes
        self.body = nn.Sequential(
            nn.Conv2d(channels + (num_classes or 0), w, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(w, 2 * w, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(2 * w), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(4 * w), nn.LeakyReLU(0.2),
            nn.Flatten())
        self.out = nn.Linear(4 * w * 16, 1)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.num_classes:
            if y is None:
                raise ValueError("this discriminator is class-conditional: pass labels y (N,)")
            planes = F.one_hot(y, self.num_classes).to(x.dtype)[:, :, None, None].expand(-1, -1, *x.shape[-2:])
            x = torch.cat([x, planes], dim=1)
        elif y is not None:
            raise ValueError("this discriminator is unconditional (num_classes=None): it takes no labels y")
        return self.out(self.body(x)).squeeze(1)


class GAN(nn.Module):
    """The pair, as one module for ``training.train``: ``gan(z, y)`` generates."""

    def __init__(self, z_dim: int = 100, width: int = 32, channels: int = 1, num_classes: int | None = None):
        super().__init__()
        self.generator = Generator(z_dim, width, channels, num_classes)
        self.discriminator = Discriminator(width, channels, num_classes)
        self.z_dim, self.num_classes = z_dim, num_classes

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.generator(z, y)

    @torch.no_grad()
    def sample(self, n: int, y: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """n images from z ~ N(0, I) drawn on ``generator`` (CPU unless it lives elsewhere), in eval
        mode (BatchNorm reads its running statistics and leaves them as they were); the mode the
        generator was in is restored."""
        n = check_int("n", n, low=1)
        dev = next(self.parameters()).device
        z = torch.randn(n, self.z_dim, generator=generator,
                        device=generator.device if generator is not None else dev).to(dev)
        was_training = self.generator.training
        try:
            return self.generator.eval()(z, None if y is None else y.to(dev))
        finally:
            self.generator.train(was_training)


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, loss: str = "nonsaturating") -> torch.Tensor:
    """D's loss. "nonsaturating" (Goodfellow et al. 2014, eq. 1, as a minimisation):
    -log sigmoid(l_real) - log(1 - sigmoid(l_fake)) = softplus(-l_real) + softplus(l_fake);
    "hinge": relu(1 - l_real) + relu(1 + l_fake). Means over the batch."""
    check_choice("loss", loss, LOSSES)
    if loss == "hinge":
        return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def generator_loss(fake_logits: torch.Tensor, loss: str = "nonsaturating") -> torch.Tensor:
    """G's loss. "nonsaturating" (ibid. §3): -log sigmoid(l_fake) = softplus(-l_fake); "hinge": -l_fake."""
    check_choice("loss", loss, LOSSES)
    return -fake_logits.mean() if loss == "hinge" else F.softplus(-fake_logits).mean()


def gan_step(loss: str = "nonsaturating", generator: torch.Generator | None = None):
    """The step function for ``training.train(gan, None, next_batch, steps, optimizer={"g": ..., "d": ...},
    step_fn=gan_step())``: one discriminator update on a real batch (images, or (images, labels)) and
    a fresh fake batch, then one generator update with new noise (drawn on ``generator``). Fake
    labels are the real batch's labels. Returns the detached losses and D's mean output on each side."""
    check_choice("loss", loss, LOSSES)

    def noise(n, z_dim, dev):
        return torch.randn(n, z_dim, generator=generator,
                           device=generator.device if generator is not None else dev).to(dev)

    def step(model, batch, optimizer):
        real, y = batch if isinstance(batch, (tuple, list)) else (batch, None)
        n, dev = len(real), real.device
        fake = model.generator(noise(n, model.z_dim, dev), y)
        d_real, d_fake = model.discriminator(real, y), model.discriminator(fake.detach(), y)
        d_loss = discriminator_loss(d_real, d_fake, loss)
        optimizer["d"].zero_grad(set_to_none=True)
        d_loss.backward()
        optimizer["d"].step()
        g_fake = model.discriminator(model.generator(noise(n, model.z_dim, dev), y), y)
        g_loss = generator_loss(g_fake, loss)
        optimizer["g"].zero_grad(set_to_none=True)
        g_loss.backward()
        optimizer["g"].step()
        return {"loss": (d_loss + g_loss).detach(), "d": d_loss.detach(), "g": g_loss.detach(),
                "d_real": torch.sigmoid(d_real).mean().detach(), "d_fake": torch.sigmoid(d_fake).mean().detach()}

    return step


@torch.no_grad()
def collapse_stats(images: torch.Tensor, classifier, num_classes: int, reference: torch.Tensor | None = None,
                   entropy_floor: float = 0.5, distance_floor: float = 0.5) -> dict:
    """Mode-collapse signs in a set of samples:

    * ``entropy``: the entropy of the class histogram ``classifier`` reads from them, divided by
      ln(num_classes) (1: every class equally often; 0: a single class);
    * ``distance``: the mean Euclidean distance between pairs of samples (i, i + n/2), per pixel
      RMS; with ``reference`` (real images) also ``distance_ratio`` to the same for them.

    For class-conditional samples, pass a ``reference`` with the same labels in the same order: pairs
    of one class lie closer together than pairs of any two images.

    ``collapsed`` is True when the entropy is below ``entropy_floor`` or the distance ratio below
    ``distance_floor`` (the distance alone when no reference is given is not judged).
    """
    check_tensor("images", images)
    num_classes = check_int("num_classes", num_classes, low=2)
    if len(images) < 4:
        raise ValueError(f"images must hold at least 4 samples to measure collapse, got {len(images)}")
    dev = next(classifier.parameters()).device
    pred = torch.cat([classifier(b.to(dev)).argmax(1).cpu() for b in images.clamp(-1, 1).split(500)])
    p = torch.bincount(pred, minlength=num_classes).double() / len(pred)
    entropy = max(0.0, float(-(p[p > 0] * p[p > 0].log()).sum() / math.log(num_classes)))    # not -0.0

    def spread(x):
        h = len(x) // 2
        return (x[:h] - x[h:2 * h]).flatten(1).pow(2).mean(1).sqrt().mean().item()

    out = {"entropy": entropy, "distance": spread(images.float().cpu())}
    collapsed = entropy < entropy_floor
    if reference is not None:
        out["distance_ratio"] = out["distance"] / spread(reference.float().cpu())
        collapsed = collapsed or out["distance_ratio"] < distance_floor
    out["collapsed"] = bool(collapsed)
    return out
