"""The latent autoencoder: its Gaussian posterior against torch.distributions, latent shapes, the
latent scale, the LatentSpace round trip, a short training that learns, and clear errors."""
import pytest
import torch

from minidiff import autoencoder
from minidiff.autoencoder import AutoEncoder, DiagonalGaussian, LatentSpace


@pytest.fixture
def ae():
    torch.manual_seed(0)
    return AutoEncoder(in_channels=1, latent_channels=4, base_channels=8, channel_mults=(1, 2, 2))


def test_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mean = torch.randn(3, 4, 7, 7, generator=g, dtype=torch.float64)
    logvar = torch.randn(3, 4, 7, 7, generator=g, dtype=torch.float64)
    q = torch.distributions.Normal(mean, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros_like(mean), torch.ones_like(mean))
    expected = torch.distributions.kl_divergence(q, p).flatten(1).sum(1)
    torch.testing.assert_close(DiagonalGaussian(mean, logvar).kl(), expected)
    assert (DiagonalGaussian(torch.zeros(2, 4, 1, 1), torch.zeros(2, 4, 1, 1)).kl() == 0).all()   # q = prior


def test_sample_is_mean_plus_std_times_noise_and_logvar_is_clamped():
    mean, logvar = torch.full((2, 4, 3, 3), 1.5), torch.full((2, 4, 3, 3), 2 * torch.log(torch.tensor(0.5)))
    q = DiagonalGaussian(mean, logvar)
    eps = torch.randn(mean.shape, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(q.sample(torch.Generator().manual_seed(3)), 1.5 + 0.5 * eps)
    assert torch.equal(q.mode(), mean)
    wild = DiagonalGaussian(torch.zeros(1, 1, 1, 1), torch.full((1, 1, 1, 1), 500.0))
    assert wild.logvar.item() == autoencoder.LOGVAR_RANGE[1] and torch.isfinite(wild.kl()).all()
    with pytest.raises(ValueError, match="one shape"):
        DiagonalGaussian(torch.zeros(1, 4, 2, 2), torch.zeros(1, 4, 2, 3))


def test_latent_shapes(ae):
    x = torch.rand(2, 1, 28, 28) * 2 - 1
    q = ae.encode(x)
    assert ae.f == 4 and q.mean.shape == (2, 4, 7, 7) and ae.latent_shape((1, 28, 28)) == (4, 7, 7)
    assert ae.decode(q.sample()).shape == x.shape
    deep = AutoEncoder(in_channels=3, latent_channels=2, base_channels=8, channel_mults=(1, 1, 2, 2))
    assert deep.f == 8 and deep.latent_shape((3, 32, 16)) == (2, 4, 2)


def test_latent_scale_gives_unit_spread_and_the_round_trip_is_exact(ae):
    images = torch.rand(16, 1, 28, 28, generator=torch.Generator().manual_seed(1)) * 2 - 1
    scale = autoencoder.latent_scale(ae, images, generator=torch.Generator().manual_seed(2))
    space = LatentSpace(ae, scale)
    z = space.encode(images, generator=torch.Generator().manual_seed(2))
    assert z.std().item() == pytest.approx(1.0, rel=1e-5)           # the same draw the scale was measured on
    with torch.no_grad():
        plain = ae.decode(ae.encode(images).mode())
        scaled = space.decode(space.encode(images, sample=False))
    torch.testing.assert_close(scaled, plain, rtol=1e-5, atol=1e-5)  # scale in, scale out: nothing changes
    with pytest.raises(ValueError, match="scale must be"):
        LatentSpace(ae, 0.0)


def test_a_short_training_lowers_reconstruction_error(ae):
    g = torch.Generator().manual_seed(0)
    # a small set of blurry blobs the autoencoder can learn in a few dozen steps
    xy = torch.stack(torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij"))
    centres = torch.rand(32, 2, 1, 1, generator=g) * 16 + 6
    images = (torch.exp(-((xy - centres) ** 2).sum(1, keepdim=True) / 20) * 2 - 1)
    opt = torch.optim.Adam(ae.parameters(), lr=2e-3)
    with torch.no_grad():
        before = autoencoder.vae_loss(ae, images, generator=torch.Generator().manual_seed(5))["recon"].item()
    for _ in range(60):
        out = autoencoder.vae_loss(ae, images, kl_weight=1e-3, generator=g)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    with torch.no_grad():
        after = autoencoder.vae_loss(ae, images, generator=torch.Generator().manual_seed(5))
    assert after["recon"].item() < 0.5 * before and after["kl"].item() > 0
    assert after["loss"].item() == pytest.approx(after["recon"].item() + 1e-3 * after["kl"].item(), rel=1e-6)


def test_bad_inputs_name_what_is_expected(ae):
    with pytest.raises(ValueError, match=r"x must be \(N, 1, H, W\) with H and W divisible by f = 4, got channels 3"):
        ae.encode(torch.zeros(1, 3, 28, 28))
    with pytest.raises(ValueError, match="divisible by f = 4, got channels 1 and size 30x28"):
        ae.encode(torch.zeros(1, 1, 30, 28))
    with pytest.raises(ValueError, match=r"z must be \(N, 4, h, w\), got \(1, 3, 7, 7\)"):
        ae.decode(torch.zeros(1, 3, 7, 7))
    with pytest.raises(ValueError, match=r"x must be a batch \(N, C, H, W\)"):
        ae.encode(torch.zeros(1, 28, 28))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        ae.encode([[0.0]])
    with pytest.raises(ValueError, match="kl_weight"):
        autoencoder.vae_loss(ae, torch.zeros(1, 1, 28, 28), kl_weight=-1.0)
    with pytest.raises(ValueError, match="at least 2 images"):
        autoencoder.latent_scale(ae, torch.zeros(1, 1, 28, 28))
    with pytest.raises(ValueError, match="channel_mults must name at least one level"):
        AutoEncoder(channel_mults=())
