"""gan.py: DCGAN shapes and sizes, the losses against their formulas, one step moves both
networks, and the collapse detector tells a collapsed generator from a diverse one."""
import math

import pytest
import torch

from minidiff import gan


def test_generator_and_discriminator_shapes_and_sizes(g):
    for k in (None, 10):
        model = gan.GAN(z_dim=100, width=16, num_classes=k)
        y = torch.arange(6) % 10 if k else None
        x = model(torch.randn(6, 100, generator=g), y)
        assert x.shape == (6, 1, 28, 28) and x.abs().max() <= 1                 # tanh output
        assert model.discriminator(x, y).shape == (6,)
    plain = gan.GAN(z_dim=100, width=16)
    w = 16                       # the parameters, counted by hand from the layers
    gen = 100 * 4 * w * 49 + 2 * 4 * w * 49 + 4 * w * 2 * w * 16 + 2 * 2 * w + 2 * w * w * 16 + 2 * w + w * 9 + 1
    dis = (16 * w + w) + (w * 2 * w * 16 + 2 * 2 * w) + (2 * w * 4 * w * 9 + 2 * 4 * w) + (4 * w * 16 + 1)
    assert sum(p.numel() for p in plain.generator.parameters()) == gen
    assert sum(p.numel() for p in plain.discriminator.parameters()) == dis
    # batch norm where DCGAN puts it: none on D's input layer, none on G's output layer
    assert not isinstance(plain.discriminator.body[1], torch.nn.BatchNorm2d)
    assert isinstance(plain.generator.body[-1], torch.nn.Tanh) and isinstance(plain.generator.body[-2], torch.nn.Conv2d)


def test_losses_match_their_formulas(g):
    real, fake = torch.randn(50, generator=g, dtype=torch.float64), torch.randn(50, generator=g, dtype=torch.float64)
    sig = torch.sigmoid
    d = -(torch.log(sig(real)) + torch.log(1 - sig(fake))).mean()       # Goodfellow et al. eq. 1, negated
    torch.testing.assert_close(gan.discriminator_loss(real, fake), d)
    torch.testing.assert_close(gan.generator_loss(fake), -torch.log(sig(fake)).mean())   # non-saturating, §3
    torch.testing.assert_close(gan.discriminator_loss(real, fake, "hinge"),
                               torch.clamp(1 - real, min=0).mean() + torch.clamp(1 + fake, min=0).mean())
    torch.testing.assert_close(gan.generator_loss(fake, "hinge"), -fake.mean())
    # at D's optimum for equal distributions (D = 1/2 everywhere) the loss is 2 ln 2
    zero = torch.zeros(4)
    assert gan.discriminator_loss(zero, zero).item() == pytest.approx(2 * math.log(2))
    with pytest.raises(ValueError, match="unknown loss 'wasserstein'"):
        gan.generator_loss(fake, "wasserstein")


def test_one_step_moves_both_networks(g):
    torch.manual_seed(0)
    for k in (None, 10):
        model = gan.GAN(width=8, num_classes=k)
        opt = {"g": torch.optim.Adam(model.generator.parameters(), 2e-4, betas=(0.5, 0.999)),
               "d": torch.optim.Adam(model.discriminator.parameters(), 2e-4, betas=(0.5, 0.999))}
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        x = torch.rand(8, 1, 28, 28, generator=g) * 2 - 1
        batch = (x, torch.arange(8)) if k else x
        out = gan.gan_step(generator=g)(model, batch, opt)
        assert set(out) == {"loss", "d", "g", "d_real", "d_fake"} and all(torch.isfinite(v) for v in out.values())
        moved = {n.split(".")[0] for n, p in model.named_parameters() if not torch.equal(p, before[n])}
        assert moved == {"generator", "discriminator"}


class ByMeanClassifier(torch.nn.Module):
    """Reads an image's class from its mean brightness: ten bins over [-1, 1]."""

    def __init__(self):
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        bins = ((x.mean((1, 2, 3)) + 1) / 2 * 10).clamp(0, 9.999).long()
        return torch.nn.functional.one_hot(bins, 10).float()


def test_collapse_detector_flags_a_generator_that_ignores_its_input(g):
    real = torch.linspace(-0.95, 0.95, 200)[:, None, None, None].expand(200, 1, 28, 28) \
        + 0.05 * torch.randn(200, 1, 28, 28, generator=g)
    diverse = real[torch.randperm(200, generator=g)]
    collapsed = real[:1].expand(200, 1, 28, 28) + 0.01 * torch.randn(200, 1, 28, 28, generator=g)
    ok = gan.collapse_stats(diverse, ByMeanClassifier(), 10, reference=real)
    bad = gan.collapse_stats(collapsed, ByMeanClassifier(), 10, reference=real)
    assert ok["entropy"] > 0.95 and not ok["collapsed"]
    assert bad["entropy"] == 0.0 and bad["distance_ratio"] < 0.1 and bad["collapsed"]
    # two modes out of ten: the class histogram gives it away (entropy ln 2 / ln 10)
    two = torch.cat([real[:1].expand(100, 1, 28, 28), real[-1:].expand(100, 1, 28, 28)])
    stats = gan.collapse_stats(two[torch.randperm(200, generator=g)], ByMeanClassifier(), 10, reference=real)
    assert stats["entropy"] == pytest.approx(math.log(2) / math.log(10)) and stats["collapsed"]


def test_bad_inputs_raise_clear_errors(g):
    model = gan.GAN(width=8, num_classes=10)
    with pytest.raises(ValueError, match=r"z must have shape \(N, 100\)"):
        model(torch.randn(2, 7), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="pass labels y"):
        model(torch.randn(2, 100))
    with pytest.raises(ValueError, match="no classes"):
        gan.GAN(width=8)(torch.randn(2, 100), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="at least 4 samples"):
        gan.collapse_stats(torch.zeros(2, 1, 28, 28), ByMeanClassifier(), 10)
    with pytest.raises(ValueError, match="num_classes must be in"):
        gan.GAN(num_classes=1)
