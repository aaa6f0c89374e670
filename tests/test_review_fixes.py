"""Defects a review of the modules found (issue 26), each pinned by a test that failed before its fix."""
import math

import pytest
import torch
from torch import nn

from minidiff import clip, editing, evaluation, gan, guidance, inverse, molecules, samplers, schedules, unet, video
from minidiff.forward import q_sample
from minidiff.reverse import timesteps

S = schedules.linear(T=100)


class _Meta(nn.Module):
    """A model that lives on the meta device: where a sampler draws x_T is visible without a GPU."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1, device="meta"))

    def forward(self, x, t, y=None):
        return x * self.w


def test_a_guided_model_says_where_its_model_lives():
    guided = guidance.cfg(_Meta(), 3.0, {"y": torch.tensor([10])})
    assert samplers._model_device(guided).type == "meta" and evaluation.model_device(guided).type == "meta"
    plain = guidance.cfg(lambda x, t, y: x, 3.0, {"y": torch.tensor([10])})   # a function: no device to carry
    assert samplers._model_device(plain).type == "cpu"


def _eps_zero(x, t, **cond):
    return torch.zeros_like(x)


def test_sdedit_starts_on_the_grid_it_samples_on():
    x, g = torch.rand(2, 1, 8, 8) * 2 - 1, 7
    out = editing.sdedit(_eps_zero, S, x, 0.5, steps=10, spacing="leading", generator=torch.Generator().manual_seed(g))
    start = editing.sdedit_start(10, 0.5)
    gen = torch.Generator().manual_seed(g)
    x_t0 = q_sample(S, x, int(timesteps(S.T, 10, "leading")[start]), generator=gen)
    ref = samplers.sample(_eps_zero, S, x.shape, "ddim", 10, x_T=x_t0, generator=gen, clip_x0=1.0, spacing="leading",
                          start=start, progress=False)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    with pytest.raises(ValueError, match="variance is a setting of samplers.sample"):
        editing.sdedit(_eps_zero, S, x, 0.5, steps=10, variance="large")


def test_clip_keeps_learning_its_temperature_at_the_cap():
    model = clip.CLIP(vocab_size=10, context_length=6, embed_dim=8, text={"width": 8, "layers": 1, "heads": 2},
                      image={"width": 4})
    with torch.no_grad():
        model.logit_scale.fill_(math.log(150.0))          # past the cap, as an optimiser step may leave it
    tokens = torch.tensor([[1, 4, 2, 0, 0, 0], [1, 5, 2, 0, 0, 0]])
    img, txt = model(torch.rand(2, 3, 16, 16), tokens)
    assert model.logit_scale.item() == pytest.approx(math.log(100.0), abs=1e-6)    # clipped on the parameter
    clip.contrastive_loss(img, txt, model.logit_scale).backward()
    assert model.logit_scale.grad.abs().item() > 0           # clipping exp() instead left this at 0
    with pytest.raises(ValueError, match="must hold <eos>"):
        model.text(torch.tensor([[1, 4, 5, 0, 0, 0]]))       # no <eos>: it was pooled at <bos> without a word


@pytest.mark.parametrize("make, x, extra", [
    (lambda: unet.UNet(base_channels=8, channel_mults=(1, 2), attention_levels=(1,)), (2, 1, 8, 8), {}),
    (lambda: molecules.AtomTransformer(width=16, layers=1, heads=2), None, {}),
    (lambda: video.SpaceTimeTransformer(frames=2, size=8, patch=4, width=16, layers=1, heads=2, conv_width=4),
     (2, 1, 2, 8, 8), {}),
])
def test_the_networks_run_in_float64(make, x, extra):
    net = make().double()
    if x is None:
        coords, types = molecules.make_molecules(2, torch.Generator().manual_seed(0))
        x = molecules.to_features(coords, types, 0.25).double()
    else:
        x = torch.randn(x, dtype=torch.float64)
    out = net(x, torch.tensor([3, 50]), **extra)
    assert out.dtype == torch.float64 and out.shape == x.shape


def test_dps_runs_on_a_respaced_schedule():
    sub = S.respace(timesteps(S.T, 20))
    y = torch.zeros(1, 1, 8, 8)
    out = inverse.dps(_eps_zero, sub, y, lambda x: x, (1, 1, 8, 8), zeta=0.5, steps=5,
                      generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 1, 8, 8) and torch.isfinite(out).all()


def test_style_transfer_by_inversion_samples_back_in_float32(monkeypatch):
    seen = []
    real_sample = editing.sample

    def spy(*args, **kw):
        seen.append(kw.get("amp"))
        return real_sample(*args, **kw)

    monkeypatch.setattr(editing, "sample", spy)
    model = lambda x, t, y: torch.zeros_like(x)              # noqa: E731
    editing.style_transfer(model, S, torch.zeros(2, 1, 8, 8), torch.tensor([0, 1]), torch.tensor([1, 0]),
                           uncond={"y": torch.tensor([2])}, scale=2.0, strength=0.5, steps=4, method="inversion")
    assert seen == [False]


def test_small_ones():
    with pytest.raises(ValueError, match="jump_length < steps,"):            # 4 < 5 works: the message said < 4
        editing.repaint_schedule(5, 5, 2)
    assert editing.repaint_schedule(5, 4, 2)
    for size in (16, 28):                                                     # the docstring's centre band
        lines = inverse.cartesian_mask(size, 1e9)[0]
        assert int(lines.sum()) == 3 and lines[[0, 1, size - 1]].all()
    with pytest.raises(ValueError, match="window must be odd"):
        inverse.ssim(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8), 2.0, window=4)
    d = gan.Discriminator(width=8)
    with pytest.raises(ValueError, match="unconditional"):
        d(torch.zeros(2, 1, 28, 28), torch.tensor([0, 1]))                    # y was ignored without a word


def test_sampling_a_gan_leaves_batchnorm_as_it_was():
    model = gan.GAN(z_dim=4, width=8).train()
    before = {k: v.clone() for k, v in model.generator.state_dict().items() if "running" in k}
    model.sample(16, generator=torch.Generator().manual_seed(0))
    after = {k: v for k, v in model.generator.state_dict().items() if "running" in k}
    assert before and all(torch.equal(before[k], after[k]) for k in before)
    assert model.generator.training                                            # its mode restored
