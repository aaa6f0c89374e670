"""guidance.py: classifier-free guidance identities, the two conventions, condition dropout."""
import pytest
import torch

from minidiff import guidance, samplers, schedules


class ToyConditional(torch.nn.Module):
    """eps(x, t, y) = 0.1 x + embedding(y) broadcast, and a count of network calls and batch sizes."""

    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(4, 1)
        torch.nn.init.normal_(self.emb.weight, generator=torch.Generator().manual_seed(0))
        self.calls = []

    def forward(self, x, t, y):
        self.calls.append(len(x))
        return 0.1 * x + self.emb(y)[:, :, None, None]


UNCOND = {"y": torch.tensor([3])}


def test_scale_1_is_the_conditional_model_and_0_the_unconditional_one(g):
    model = ToyConditional()
    x, t, y = torch.randn(5, 1, 4, 4, generator=g), torch.zeros(5, dtype=torch.long), torch.tensor([0, 1, 2, 0, 1])
    with torch.no_grad():
        assert torch.equal(guidance.cfg(model, 1.0, UNCOND)(x, t, y=y), model(x, t, y=y))
        assert torch.equal(guidance.cfg(model, 0.0, UNCOND)(x, t, y=y), model(x, t, y=torch.full((5,), 3)))


def test_guidance_is_the_extrapolation_in_one_batched_call(g):
    model = ToyConditional()
    x, t, y = torch.randn(5, 1, 4, 4, generator=g), torch.zeros(5, dtype=torch.long), torch.tensor([0, 1, 2, 0, 1])
    with torch.no_grad():
        eps_c, eps_u = model(x, t, y=y), model(x, t, y=torch.full((5,), 3))
        model.calls.clear()
        for s in (1.5, 3.0, 7.5):
            got = guidance.cfg(model, s, UNCOND)(x, t, y=y)
            torch.testing.assert_close(got, eps_u + s * (eps_c - eps_u))
        assert model.calls == [10, 10, 10]                          # one call on the doubled batch each
        w = 2.0                                                     # Ho & Salimans eq. 6: (1 + w) eps_c - w eps_u
        torch.testing.assert_close(guidance.cfg(model, guidance.scale_from_w(w), UNCOND)(x, t, y=y),
                                   (1 + w) * eps_c - w * eps_u)
    assert guidance.scale_from_w(0.0) == 1.0                         # w = 0 means no guidance


def test_any_sampler_runs_the_guided_model_unchanged(g):
    model = ToyConditional()
    s = schedules.linear(T=50)
    y = torch.tensor([0, 1, 2])
    x_T = torch.randn(3, 1, 4, 4, generator=g)
    for sampler in ("ddpm", "ddim", "dpm++2m"):
        plain = samplers.sample(model, s, x_T.shape, sampler, steps=10, x_T=x_T, generator=torch.Generator().manual_seed(1),
                                progress=False, y=y)
        same = samplers.sample(guidance.cfg(model, 1.0, UNCOND), s, x_T.shape, sampler, steps=10, x_T=x_T,
                               generator=torch.Generator().manual_seed(1), progress=False, y=y)
        guided = samplers.sample(guidance.cfg(model, 4.0, UNCOND), s, x_T.shape, sampler, steps=10, x_T=x_T,
                                 generator=torch.Generator().manual_seed(1), progress=False, y=y)
        assert torch.equal(plain, same) and torch.isfinite(guided).all() and not torch.allclose(plain, guided)


def test_guidance_refuses_bad_input(g):
    model = ToyConditional()
    x, t = torch.randn(2, 1, 4, 4, generator=g), torch.zeros(2, dtype=torch.long)
    with pytest.raises(ValueError, match="scale must be in"):
        guidance.cfg(model, -1.0, UNCOND)
    with pytest.raises(TypeError, match="uncond must be a dict"):
        guidance.cfg(model, 2.0, {})
    with pytest.raises(ValueError, match="keywords"):
        guidance.cfg(model, 2.0, {"context": torch.zeros(1, 3)})(x, t, y=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="one row per image"):
        guidance.cfg(model, 2.0, UNCOND)(x, t, y=torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="batch size 1 or 2"):
        guidance.cfg(model, 2.0, {"y": torch.tensor([3, 3, 3])})(x, t, y=torch.tensor([0, 1]))


def test_condition_dropout_frequency_and_null(g):
    labels = torch.zeros(40000, dtype=torch.long)
    dropped = guidance.drop_condition(labels, 0.1, g, null=10)
    share = (dropped == 10).double().mean().item()
    assert abs(share - 0.1) < 4 * (0.1 * 0.9 / 40000) ** 0.5          # binomial: within 4 standard deviations
    assert set(dropped.unique().tolist()) == {0, 10}
    assert torch.equal(guidance.drop_condition(labels[:50], 0.0, g, null=10), labels[:50])
    assert (guidance.drop_condition(labels[:50], 1.0, g, null=10) == 10).all()
    tokens = torch.arange(12).repeat(1000, 1)
    null = torch.tensor([1, 2] + [0] * 10)
    out = guidance.drop_condition(tokens, 0.5, g, null=null)
    rows_null = (out == null).all(1)
    assert ((out == tokens).all(1) | rows_null).all() and 400 < rows_null.sum() < 600   # whole rows, about half
    with pytest.raises(ValueError, match="shaped like one row"):
        guidance.drop_condition(tokens, 0.5, g, null=torch.zeros(3))
    with pytest.raises(ValueError, match=r"p must be in \[0.0, 1.0\]"):
        guidance.drop_condition(tokens, 1.5, g)
