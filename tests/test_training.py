import os

import pytest
import torch

from minidiff import loss, schedules, training
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
    ema = training.EMA(model, 0.9)
    full_hist = training.train(model, lf, nb, 12, lr=1e-3, ema=ema, generator=g, progress=False)

    ck = tmp_path / "run.pt"
    model2, g2, nb2, lf2 = setup()
    ema2 = training.EMA(model2, 0.9)
    training.train(model2, lf2, nb2, 5, lr=1e-3, ema=ema2, generator=g2, checkpoint=ck, progress=False)
    # a fresh process: new objects, different RNG state, same checkpoint
    model3, g3, nb3, lf3 = setup(seed=123)
    ema3 = training.EMA(model3, 0.9)
    torch.manual_seed(999)
    hist3 = training.train(model3, lf3, nb3, 12, lr=1e-3, ema=ema3, generator=g3, checkpoint=ck, progress=False)

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


def test_ema_warmup_and_average():
    lin = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(lin.weight)
    ema = training.EMA(lin, decay=0.99)
    with torch.no_grad():
        lin.weight.fill_(1.0)
    ema.update(lin)               # d_0 = min(0.99, 1/10) = 0.1  -> 0.9
    assert ema.model.weight.item() == pytest.approx(0.9)
    ema.update(lin)               # d_1 = 2/11
    assert ema.model.weight.item() == pytest.approx(0.9 * 2 / 11 + 9 / 11)
    assert not any(p.requires_grad for p in ema.model.parameters())


def test_nan_loss_stops_with_advice():
    model, g, nb, _ = setup()
    with pytest.raises(FloatingPointError, match="lower lr"):
        training.train(model, lambda m, b: m(b, torch.zeros(len(b), dtype=torch.long)).sum() * float("nan"),
                       nb, 3, progress=False)


def test_bad_training_arguments():
    model, g, nb, lf = setup()
    with pytest.raises(ValueError, match="lr"):
        training.train(model, lf, nb, 1, lr=0.0)
    with pytest.raises(TypeError, match="callables"):
        training.train(model, None, nb, 1)
    with pytest.raises(ValueError, match="steps"):
        training.train(model, lf, nb, -1)
