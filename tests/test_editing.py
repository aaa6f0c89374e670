import pytest
import torch
from torch import nn

from minidiff import analytic, data, editing, guidance, samplers, schedules


class Counting(nn.Module):
    """A small conditional-or-not conv denoiser that counts its calls."""

    def __init__(self, num_classes=None):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Conv2d(1, 1, 3, padding=1)
        self.embed = nn.Embedding(num_classes + 1, 1) if num_classes else None
        self.calls = 0

    def forward(self, x, t, y=None):
        self.calls += 1
        out = self.net(x) + t.view(-1, 1, 1, 1) / 1000
        return out + self.embed(y).view(-1, 1, 1, 1) if self.embed is not None else out


def hand_count(steps, jump, resample):
    """steps calls down, plus jump more for every jump back: (resample - 1) at each level
    0, jump, 2 jump, ... below steps - jump."""
    return steps + (resample - 1) * jump * len(range(0, steps - jump, jump))


@pytest.mark.parametrize("steps,jump,resample,calls", [(50, 5, 5, 230), (100, 10, 10, 910), (37, 1, 1, 37)])
def test_repaint_network_calls_match_hand_counts(steps, jump, resample, calls):
    moves = editing.repaint_schedule(steps, jump, resample)
    assert editing.network_calls(moves) == calls == hand_count(steps, jump, resample)
    assert moves[0] == (steps - 1, steps - 2) and moves[-1] == (0, -1)
    assert all(abs(a - b) == 1 for a, b in moves)          # one level at a time, up or down
    ups = [b for a, b in moves if b > a]
    assert len(ups) == len(moves) - calls == (resample - 1) * jump * len(range(0, steps - jump, jump))


@pytest.mark.parametrize("args", [(50, 5, 5), (100, 10, 10), (10, 3, 2), (20, 1, 4)])
def test_repaint_path_matches_the_reference_scheduler(args):
    diffusers = pytest.importorskip("diffusers")
    sched = diffusers.RePaintScheduler(num_train_timesteps=1000)
    sched.set_timesteps(*args)
    # the reference lists the levels x passes through (RePaint's published schedule), without the final -1
    levels = [int(t) // (1000 // args[0]) for t in sched.timesteps] + [-1]
    moves = editing.repaint_schedule(*args)
    assert moves == list(zip(levels[:-1], levels[1:]))
    assert all(a >= 0 for a, _ in moves)                    # the finished image (-1) is never re-noised


@pytest.mark.parametrize("jump,resample", [(1, 1), (3, 3)])
def test_inpaint_keeps_the_known_pixels_exactly_and_counts_calls(jump, resample):
    s, model = schedules.linear(1000), Counting()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 1, 8, 8, generator=g) * 2 - 1
    keep = torch.zeros(1, 1, 8, 8)
    keep[..., :, :4] = 1                                    # keep the left half, repaint the right
    out = editing.inpaint(model, s, x, keep, steps=12, jump_length=jump, resample=resample, generator=g)
    assert torch.equal(out[..., :4], x[..., :4])            # pasted at the very last step too
    assert not torch.allclose(out[..., 4:], x[..., 4:])
    assert model.calls == editing.network_calls(editing.repaint_schedule(12, jump, resample))
    boolean = editing.inpaint(model, s, x, keep.bool(), steps=12, generator=torch.Generator().manual_seed(1))
    assert torch.equal(boolean[..., :4], x[..., :4])


def test_outpaint_keeps_the_centre():
    s, model = schedules.linear(1000), Counting()
    x = torch.rand(2, 1, 10, 10) * 2 - 1
    keep = editing.border_mask(x.shape, 2)
    assert keep.sum() == 6 * 6 and not keep[..., 0, :].any() and keep[..., 2:8, 2:8].all()
    out = editing.outpaint(model, s, x, 2, steps=5)
    assert torch.equal(out[..., 2:8, 2:8], x[..., 2:8, 2:8]) and not torch.allclose(out[..., 0, :], x[..., 0, :])


@pytest.mark.parametrize("strength,calls", [(0.2, 10), (0.5, 25), (0.71, 35), (0.58, 29), (1.0, 50)])
def test_sdedit_makes_strength_times_steps_calls(strength, calls):
    s, model = schedules.linear(1000), Counting()
    x = torch.rand(2, 1, 8, 8) * 2 - 1
    out = editing.sdedit(model, s, x, strength, steps=50)
    assert model.calls == calls and out.shape == x.shape      # 0.58 * 50 = 28.999...: still 29 calls
    assert editing.sdedit_start(50, strength) == 50 - calls


def test_ddim_inversion_of_the_exact_mixture_denoiser_reconstructs():
    s = schedules.linear(1000)
    model = analytic.MixtureDenoiser(s, data.default_mixture())
    x = data.default_mixture().sample(256, generator=torch.Generator().manual_seed(0)).double()
    errors = {}
    for steps in (10, 50, 200):
        x_T = editing.ddim_invert(model, s, x, steps=steps)
        back = samplers.sample(model, s, x.shape, "ddim", steps, x_T=x_T, progress=False)
        errors[steps] = (back - x).pow(2).mean().sqrt().item()
    # the inverted noise looks like noise: mean 0 and variance 1 to within sampling error
    assert abs(x_T.mean().item()) < 0.15 and abs(x_T.std().item() - 1) < 0.15
    assert errors[200] < 0.02 and errors[200] < errors[10]          # stated tolerance: RMS 0.02 at 200 steps
    half = editing.ddim_invert(model, s, x, steps=50, strength=0.5)
    back = samplers.sample(model, s, x.shape, "ddim", 50, x_T=half, start=editing.sdedit_start(50, 0.5),
                           progress=False)
    assert (back - x).pow(2).mean().sqrt().item() < 0.05


def test_style_transfer_asks_for_the_target_class():
    s, model = schedules.linear(1000), Counting(num_classes=10)
    x = torch.rand(4, 1, 8, 8) * 2 - 1
    source, target = torch.tensor([0, 1, 2, 3]), torch.tensor([5, 5, 5, 5])
    uncond = {"y": torch.tensor([10])}
    for method in ("sdedit", "inversion"):
        out = editing.style_transfer(model, s, x, source, target, uncond=uncond, scale=2.0, strength=0.6, steps=10,
                                     method=method, generator=torch.Generator().manual_seed(0))
        assert out.shape == x.shape and torch.isfinite(out).all()
    # inversion is deterministic: the inverted x with the source label, then guided DDIM with the target
    by_hand = samplers.sample(guidance.cfg(model, 2.0, uncond), s, x.shape, "ddim", 10,
                              x_T=editing.ddim_invert(model, s, x, steps=10, strength=0.6, y=source),
                              start=editing.sdedit_start(10, 0.6), clip_x0=1.0, progress=False, y=target)
    torch.testing.assert_close(editing.style_transfer(model, s, x, source, target, uncond=uncond, scale=2.0,
                                                      strength=0.6, steps=10, method="inversion"), by_hand)
    with pytest.raises(ValueError, match="method"):
        editing.style_transfer(model, s, x, source, target, uncond=uncond, scale=2.0, strength=0.6, steps=10,
                               method="paint")
    with pytest.raises(ValueError, match="target"):
        editing.style_transfer(model, s, x, source, target[:2], uncond=uncond, scale=2.0, strength=0.6, steps=10)


def test_bad_inputs_name_the_argument():
    s, model = schedules.linear(1000), Counting()
    x = torch.rand(2, 1, 8, 8)
    with pytest.raises(ValueError, match="keep must hold only 0 and 1"):
        editing.inpaint(model, s, x, torch.full((1, 1, 8, 8), 0.5), steps=5)
    with pytest.raises(ValueError, match="keep of shape"):
        editing.inpaint(model, s, x, torch.ones(1, 1, 4, 4), steps=5)
    with pytest.raises(TypeError, match="keep"):
        editing.inpaint(model, s, x, [[1, 0]], steps=5)
    for kwargs, name in (({"jump_length": 0}, "jump_length"), ({"resample": 0}, "resample")):
        with pytest.raises(ValueError, match=name):
            editing.inpaint(model, s, x, torch.ones(1, 1, 8, 8), steps=5, **kwargs)
    for strength in (0.0, 1.5, -0.2):
        with pytest.raises(ValueError, match="strength"):
            editing.sdedit(model, s, x, strength, steps=10)
    with pytest.raises(ValueError, match="no step"):
        editing.sdedit(model, s, x, 0.05, steps=10)
    with pytest.raises(ValueError, match="jump_length"):
        editing.repaint_schedule(5, jump_length=10, resample=3)
    with pytest.raises(ValueError, match="border"):
        editing.border_mask((8, 8), 4)
    with pytest.raises(ValueError, match="steps"):
        editing.ddim_invert(model, s, x, steps=0)


def test_the_lesson_masks_repaint_what_they_say():
    g = torch.Generator().manual_seed(0)
    unknown = {name: (~editing.make_mask(name, 28, 4, generator=g)).float().mean((1, 2, 3)) for name in editing.MASKS}
    assert (unknown["free-form"] >= 0.3).all() and (unknown["free-form"] < 0.6).all()
    assert torch.allclose(unknown["half"], torch.tensor(0.5)) and torch.allclose(unknown["lines"], torch.tensor(0.5))
    assert torch.allclose(unknown["super-resolution"], torch.tensor(0.75))         # keep one pixel in four
    keep = editing.make_mask("half", 28)
    assert keep[..., :14].all() and not keep[..., 14:].any()                      # 1 = keep: the left half
    strokes = editing.make_mask("free-form", 28, 2, generator=torch.Generator().manual_seed(3))
    assert not torch.equal(strokes[0], strokes[1])                                 # one stroke pattern per image


def test_rough_sketch_is_three_flat_greys_of_the_block_means():
    x = torch.rand(2, 1, 8, 8) * 2 - 1
    sketch = editing.rough_sketch(x, block=4)
    assert set(sketch.unique().tolist()) <= {-1.0, 0.0, 1.0}
    means = x.unfold(2, 4, 4).unfold(3, 4, 4).mean((-1, -2))                      # (2, 1, 2, 2) block means
    expected = (means > -0.5).float() + (means > 0.3).float() - 1
    assert torch.equal(sketch[..., ::4, ::4], expected) and torch.equal(sketch[..., 3::4, 3::4], expected)
