"""Every helper works where the lessons put their tensors: the CPU always, CUDA and Apple's mps
where present (a GPU machine runs these as they are)."""
import pytest
import torch

from minidiff import evaluation, forward, metrics, samplers, schedules, training
from minidiff.unet import UNet

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else []) + (
    ["mps"] if torch.backends.mps.is_available() else [])


@pytest.fixture(params=DEVICES)
def dev(request):
    return torch.device(request.param)


def test_schedule_tables_move_as_float32(dev):
    s = schedules.linear(T=1000)
    x0 = torch.zeros(3, 2, device=dev)
    t = torch.tensor([0, 500, 999], device=dev)
    xt = forward.q_sample(s, x0, t, noise=torch.ones(3, 2, device=dev))
    assert xt.device.type == dev.type and xt.dtype == torch.float32
    torch.testing.assert_close(xt[:, 0].cpu(), s.sqrt_one_minus_alpha_bars[[0, 500, 999]].float())


def test_sliced_wasserstein_on_the_device(dev):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 2, generator=g)
    c = torch.tensor([3.0, -4.0])
    on_cpu = metrics.sliced_wasserstein(x, x + c, generator=torch.Generator().manual_seed(1))
    here = metrics.sliced_wasserstein(x.to(dev), (x + c).to(dev), generator=torch.Generator().manual_seed(1))
    assert here == pytest.approx(on_cpu, rel=1e-4)


def test_classifier_trains_and_scores_on_the_device(dev):
    from minidiff import data
    g = torch.Generator().manual_seed(0)
    imgs, _, attrs = data.shapes(300, size=16, generator=g)
    clf = evaluation.train_classifier(imgs[:200], attrs["shape"][:200], steps=30, generator=g, device=dev,
                                      progress=False)
    assert next(clf.parameters()).device.type == dev.type
    ev = evaluation.image_evaluator(clf, imgs[:200], imgs[200:], attrs["shape"][200:], n_real=50)
    scored = evaluation.evaluate_samples(ev, imgs[:50].to(dev))
    assert scored["fid"] >= 0 and ev["real"].device.type == "cpu"


def test_train_and_sample_on_the_device(dev):
    torch.manual_seed(0)
    model = UNet(in_channels=1, base_channels=8, channel_mults=(1, 2), attention_levels=(1,)).to(dev)
    s = schedules.linear(T=50)
    g = torch.Generator(dev).manual_seed(0)
    data = torch.rand(32, 1, 8, 8, device=dev) * 2 - 1
    from minidiff import loss
    ema = training.EMA(model, 0.9, warmup=1)
    hist = training.train(model, lambda m, x0: loss.diffusion_loss(m, s, x0, generator=g),
                          lambda k: data[torch.randint(0, 32, (8,), generator=g, device=dev)], 3, ema=ema,
                          generator=g, progress=False)
    assert len(hist) == 3 and all(h == h for h in hist)
    for sampler in samplers.SAMPLERS:
        x = samplers.sample(ema.model, s, (4, 1, 8, 8), sampler, steps=5, generator=g, progress=False)
        assert x.device.type == dev.type and torch.isfinite(x).all()


def test_draw_samples_on_the_device_times_the_work(dev):
    """draw_samples waits for the device (device.synchronize) before it reads the clock, returns
    the images on the CPU, and draws the same starting noise on every device."""
    torch.manual_seed(0)
    model = UNet(in_channels=1, base_channels=8, channel_mults=(1, 2), attention_levels=(1,)).to(dev).eval()
    s = schedules.linear(T=50)
    images, seconds = evaluation.draw_samples(model, s, (1, 8, 8), 5, "ddim", 3, batch_size=2, progress=False)
    assert images.shape == (5, 1, 8, 8) and images.device.type == "cpu" and seconds > 0
    on_cpu, _ = evaluation.draw_samples(model.cpu(), s, (1, 8, 8), 5, "ddim", 3, batch_size=2, progress=False)
    tol = 0.0 if dev.type == "cpu" else 0.1                # a GPU samples in bfloat16
    assert (images - on_cpu).abs().max() <= tol


def test_masks_are_drawn_on_a_generator_of_any_device(dev):
    """make_mask and cartesian_mask draw where their generator lives (a CUDA generator failed on the
    CPU default device before) and give the same CPU mask for the same seed."""
    from minidiff import editing, inverse
    g = torch.Generator(dev).manual_seed(0)
    keep = editing.make_mask("free-form", 16, 2, generator=g)
    lines = inverse.cartesian_mask(28, 4, generator=torch.Generator(dev).manual_seed(0))
    assert keep.device.type == "cpu" and (~keep).float().mean() >= 0.3 and lines.device.type == "cpu"
    again = editing.make_mask("free-form", 16, 2, generator=torch.Generator(dev).manual_seed(0))
    assert torch.equal(keep, again)
