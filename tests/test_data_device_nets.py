import pytest
import torch

from minidiff import data, device, nets, training
from minidiff import loss as L
from minidiff import schedules


@pytest.mark.parametrize("name", data.TOY_SETS)
def test_toy_sets_shape_scale_and_determinism(name):
    a = data.toy_2d(name, 1000, generator=torch.Generator().manual_seed(0))
    b = data.toy_2d(name, 1000, generator=torch.Generator().manual_seed(0))
    assert a.shape == (1000, 2) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert 0.2 < a.std().item() < 2.0 and a.abs().max() < 4


def test_mixture_sampling_matches_its_parameters(g):
    mix = data.default_mixture()
    x, k = mix.sample(60_000, generator=g, return_labels=True)
    freq = torch.bincount(k, minlength=3).double() / 60_000
    torch.testing.assert_close(freq, mix.weights, atol=0.01, rtol=0)
    for j in range(3):
        torch.testing.assert_close(x[k == j].double().mean(0), mix.means[j], atol=0.01, rtol=0)
    # log_prob integrates to ~1 on a grid
    c = torch.linspace(-4, 4, 401, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(c, c, indexing="ij"), -1).reshape(-1, 2)
    mass = mix.log_prob(grid).exp().sum() * (c[1] - c[0]) ** 2
    assert mass.item() == pytest.approx(1.0, abs=1e-3)


def test_bad_data_arguments():
    with pytest.raises(ValueError, match="unknown name 'circles'"):
        data.toy_2d("circles", 10)
    with pytest.raises(ValueError, match=r"n must be in \[1, inf\]"):
        data.swiss_roll(0)
    with pytest.raises(ValueError, match="stds must be positive"):
        data.GaussianMixture([[0.0, 0.0]], [0.0], [1.0])
    with pytest.raises(ValueError, match="means must have shape"):
        data.GaussianMixture([0.0, 0.0], [1.0], [1.0])


def test_sample_image():
    img = data.sample_image(32)
    assert img.shape == (3, 32, 32) and img.min() >= -1 and img.max() <= 1
    assert torch.equal(img, data.sample_image(32))
    assert len(torch.unique(img.reshape(3, -1), dim=1).T) >= 4    # background and three colours


def test_scale_and_device(monkeypatch):
    monkeypatch.setenv("MINIDIFF_SCALE", "small")
    assert device.get_scale() == "small"
    assert device.by_scale(1, 2, 3) == 2
    monkeypatch.setenv("MINIDIFF_SCALE", "huge")
    with pytest.raises(ValueError, match="unknown MINIDIFF_SCALE 'huge'"):
        device.get_scale()
    monkeypatch.delenv("MINIDIFF_SCALE")
    assert device.get_scale() == ("full" if torch.cuda.is_available() else "small")
    assert device.get_device("cpu").type == "cpu"
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        device.get_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="cuda"):
            device.get_device("cuda")
    assert "scale: tiny" in device.describe(scale="tiny")


def test_seed_everything_is_reproducible():
    a = device.seed_everything(3)
    x = torch.randn(3), torch.randn(3, generator=a)
    b = device.seed_everything(3)
    y = torch.randn(3), torch.randn(3, generator=b)
    assert torch.equal(x[0], y[0]) and torch.equal(x[1], y[1])


def test_timestep_embedding():
    t = torch.tensor([0, 1, 500])
    e = nets.timestep_embedding(t, 8)
    assert e.shape == (3, 8)
    torch.testing.assert_close(e[0], torch.tensor([0.0] * 4 + [1.0] * 4))
    k = torch.arange(4)
    torch.testing.assert_close(e[2, :4], torch.sin(500 * torch.exp(-torch.log(torch.tensor(1e4)) * k / 4)))
    assert nets.timestep_embedding(t, 7).shape == (3, 7)


def test_time_mlp_learns_the_noise_of_a_point_mass(g):
    """A network trained on data that is a single point c must learn eps = (x_t - sqrt(abar) c) / sqrt(1-abar)."""
    torch.manual_seed(0)
    s = schedules.linear(T=50, beta_end=0.3)
    c = torch.tensor([[0.5, -0.5]])
    model = nets.TimeMLP(dim=2, hidden=64, blocks=2)
    hist = training.train(model, lambda m, x0: L.diffusion_loss(m, s, x0, generator=g),
                          lambda step: c.expand(256, 2), steps=300, lr=3e-3, progress=False)
    assert len(hist) == 300 and sum(hist[-20:]) / 20 < 0.2 * sum(hist[:20]) / 20
    t = torch.full((256,), 25)
    x0 = c.expand(256, 2)
    eps = torch.randn(256, 2, generator=g)
    xt = s.sqrt_alpha_bars[25].float() * x0 + s.sqrt_one_minus_alpha_bars[25].float() * eps
    with torch.no_grad():
        err = (model(xt, t) - eps).pow(2).mean().item()
    assert err < 0.1


def test_sampling_batch_size_by_device():
    assert device.sampling_batch_size("cpu") == 100
    assert device.sampling_batch_size(torch.device("cuda")) == 1000
    assert device.sampling_batch_size("meta") == 1000
