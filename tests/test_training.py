import os

import pytest
import torch

from minidiff import loss, recipes, schedules, training
from minidiff.unet import UNet


def setup(seed=0):
    torch.manual_seed(seed)
    model = UNet(in_channels=1, base_channels=8, channel_mults=(1, 2), attention_levels=(1,), dropout=0.1)
    s = schedules.linear(T=50)
    g = torch.Generator().manual_seed(seed)
    data = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(42)) * 2 - 1   # the fixed data set

    def next_batch(step):
        return data[torch.randint(0, 64, (8,), generator=g)]

    def loss_fn(m, x0):
        return loss.diffusion_loss(m, s, x0, generator=g)

    return model, g, next_batch, loss_fn


def test_resumed_run_equals_uninterrupted_run_bit_for_bit(tmp_path):
    model, g, nb, lf = setup()
    ema = training.EMA(model, 0.9, warmup=3)
    full_hist = training.train(model, lf, nb, 12, lr=1e-3, ema=ema, generator=g, log_every=4, progress=False)

    ck = tmp_path / "run.pt"
    model2, g2, nb2, lf2 = setup()
    ema2 = training.EMA(model2, 0.9, warmup=3)
    training.train(model2, lf2, nb2, 5, lr=1e-3, ema=ema2, generator=g2, checkpoint=ck, log_every=4, progress=False)
    # a fresh process: new objects, different RNG state, same checkpoint
    model3, g3, nb3, lf3 = setup(seed=123)
    ema3 = training.EMA(model3, 0.9, warmup=3)
    torch.manual_seed(999)
    hist3 = training.train(model3, lf3, nb3, 12, lr=1e-3, ema=ema3, generator=g3, checkpoint=ck, log_every=4,
                           progress=False)

    assert hist3 == full_hist
    for a, b in zip(model.state_dict().values(), model3.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(ema.model.state_dict().values(), ema3.model.state_dict().values()):
        assert torch.equal(a, b)


def test_checkpoint_is_one_weights_only_file(tmp_path):
    model, g, nb, lf = setup()
    ck = tmp_path / "c.pt"
    training.train(model, lf, nb, 4, ema=training.EMA(model), generator=g, checkpoint=ck, checkpoint_every=2,
                   config={"dataset": "toy", "T": 50}, progress=False)
    state = torch.load(ck, weights_only=True)
    assert {"model", "ema", "optimizer", "step", "config", "rng", "history"} <= set(state)
    assert state["step"] == 4 and state["config"]["T"] == 50 and len(state["history"]) == 4
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]          # no temporary files left
    assert state["ema"]["warmup"] == 0 and state["ema"]["updates"] == 4


def test_resuming_with_another_config_is_refused(tmp_path):
    """A checkpoint of an eps-model must not silently go on training as a v-model."""
    model, g, nb, lf = setup()
    ck = tmp_path / "c.pt"
    training.train(model, lf, nb, 2, generator=g, checkpoint=ck, config={"T": 50, "prediction": "eps"},
                   progress=False)
    before = ck.read_bytes()
    with pytest.raises(ValueError, match=r"prediction: 'eps' there, 'v' here"):
        training.train(model, lf, nb, 4, generator=g, checkpoint=ck, config={"T": 50, "prediction": "v"},
                       progress=False)
    assert ck.read_bytes() == before                                 # nothing overwritten
    # the same config (or a key the checkpoint does not name) resumes
    hist = training.train(model, lf, nb, 3, generator=g, checkpoint=ck, config={"T": 50, "note": "x"},
                          progress=False)
    assert len(hist) == 3


def test_atomic_write_keeps_the_old_file_when_saving_fails(tmp_path, monkeypatch):
    ck = tmp_path / "c.pt"
    training.save_checkpoint(ck, {"step": 1})

    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        training.save_checkpoint(ck, {"step": 2})
    monkeypatch.undo()
    assert torch.load(ck, weights_only=True) == {"step": 1}
    assert os.listdir(tmp_path) == ["c.pt"]


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    ck = tmp_path / "c.pt"
    training.save_checkpoint(ck, {"step": 1, "w": torch.randn(100)})
    ck.write_bytes(ck.read_bytes()[:50])
    with pytest.raises(ValueError, match="could not be read"):
        training.load_checkpoint(ck)


def test_ema_follows_the_weights_during_warmup_then_uses_its_decay():
    lin = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(lin.weight)
    ema = training.EMA(lin, decay=0.99, warmup=2)
    for w in (1.0, 2.0):                          # warm-up: the average is a copy of the weights
        with torch.no_grad():
            lin.weight.fill_(w)
        ema.update(lin)
        assert ema.model.weight.item() == w
    with torch.no_grad():
        lin.weight.fill_(3.0)
    ema.update(lin)                               # now theta_ema <- 0.99 theta_ema + 0.01 theta
    assert ema.model.weight.item() == pytest.approx(0.99 * 2.0 + 0.01 * 3.0, rel=1e-6)
    ema.update(lin)
    assert ema.model.weight.item() == pytest.approx(0.99 * (0.99 * 2.0 + 0.01 * 3.0) + 0.01 * 3.0, rel=1e-6)
    assert [ema.decay_at(k) for k in (0, 1, 2, 10**6)] == [0.0, 0.0, 0.99, 0.99]
    assert not any(p.requires_grad for p in ema.model.parameters())


@pytest.mark.parametrize("scale", ["tiny", "small", "full"])
def test_each_recipe_ends_with_its_configured_decay(scale):
    """The decay in force at the last step is the recipe's, after a warm-up of at most 10% of it."""
    recipe = recipes.config("fashion-ddpm", scale)
    model = torch.nn.Linear(1, 1)
    ema = training.EMA(model, recipe["ema_decay"], warmup=recipe["ema_warmup"])
    assert ema.decay_at(recipe["steps"] - 1) == recipe["ema_decay"]
    assert 0 < recipe["ema_warmup"] <= 0.1 * recipe["steps"]
    # and the average really forgets: the window 1 / (1 - decay) fits in what is left after warm-up
    assert 1 / (1 - recipe["ema_decay"]) <= recipe["steps"] - recipe["ema_warmup"]


def test_nan_loss_stops_with_advice_and_names_the_step():
    """Losses are read every log_every steps; a NaN at step 7 stops the run at the next read
    (step 9 with log_every=5), and the message names step 7."""
    model, g, nb, lf = setup()
    calls = []

    def loss_fn(m, b):
        calls.append(len(calls))
        value = lf(m, b)
        return value * float("nan") if len(calls) == 8 else value

    with pytest.raises(FloatingPointError, match=r"loss became nan at step 7: try a lower lr"):
        training.train(model, loss_fn, nb, 20, generator=g, log_every=5, progress=False)
    assert len(calls) == 10


def test_two_optimizers_and_a_step_function_resume_exactly(tmp_path):
    """A GAN-like loop: two parameter groups, two optimizers, a step that alternates them and
    returns a dict of losses. Interrupted and resumed, it equals an uninterrupted run."""
    def run(steps, ck=None, seed=0):
        torch.manual_seed(seed)
        model = torch.nn.ModuleDict({"g": torch.nn.Linear(2, 2), "d": torch.nn.Linear(2, 1)})
        g = torch.Generator().manual_seed(0)

        def optimizers(m):
            return {"g": torch.optim.Adam(m["g"].parameters(), lr=1e-2), "d": torch.optim.SGD(m["d"].parameters(), lr=1e-2)}

        def step_fn(m, batch, opt):
            d_loss = m["d"](m["g"](batch).detach()).pow(2).mean() + (m["d"](batch) - 1).pow(2).mean()
            opt["d"].zero_grad()
            d_loss.backward()
            opt["d"].step()
            g_loss = (m["d"](m["g"](batch)) - 1).pow(2).mean()
            opt["g"].zero_grad()
            g_loss.backward()
            opt["g"].step()
            return {"d": d_loss.detach(), "g": g_loss.detach()}

        hist = training.train(model, None, lambda step: torch.randn(8, 2, generator=g), steps, optimizer=optimizers,
                              step_fn=step_fn, generator=g, checkpoint=ck, log_every=3, progress=False)
        return model, hist

    model, hist = run(9)
    ck = tmp_path / "gan.pt"
    run(4, ck)
    model2, hist2 = run(9, ck, seed=5)
    assert hist2 == hist and len(hist) == 9 and set(hist[0]) == {"d", "g"}
    for a, b in zip(model.state_dict().values(), model2.state_dict().values()):
        assert torch.equal(a, b)
    state = torch.load(ck, weights_only=True)
    assert set(state["optimizer"]) == {"g", "d"}


def test_train_leaves_the_model_in_eval_mode_as_documented():
    model, g, nb, lf = setup()
    model.train()
    training.train(model, lf, nb, 2, generator=g, progress=False)
    assert not model.training


def test_checkpoint_has_a_normal_files_mode(tmp_path):
    ck = tmp_path / "c.pt"
    training.save_checkpoint(ck, {"step": 1})
    mask = os.umask(0)
    os.umask(mask)
    assert (ck.stat().st_mode & 0o777) == (0o666 & ~mask)


def test_bad_training_arguments():
    model, g, nb, lf = setup()
    with pytest.raises(ValueError, match="lr"):
        training.train(model, lf, nb, 1, lr=0.0)
    with pytest.raises(TypeError, match="callables"):
        training.train(model, None, nb, 1)
    with pytest.raises(ValueError, match="steps"):
        training.train(model, lf, nb, -1)
