"""Training under torchrun: two gloo processes on the CPU train what one process trains at the same
global batch (a DDPM, and CLIP, whose loss is over the whole batch), resume exactly, and refuse a global
batch that does not divide and a custom step (the GAN's)."""
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest
import torch

import minidiff
from minidiff import recipes, training

ROOT = pathlib.Path(minidiff.__file__).resolve().parents[1]       # the package under test, in the child processes too

SCRIPT = textwrap.dedent("""
    import sys
    from minidiff import recipes, training
    rank, world = training.init_distributed()
    steps, path, batch = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    name = sys.argv[4] if len(sys.argv) > 4 else "molecules-ddpm"
    run = recipes.load_or_train(name, "tiny", device="cpu", steps=steps, batch_size=batch,
                                progress=False, checkpoint=path, checkpoint_every=2)
    print(f"rank {rank} of {world}: {len(run.history)} steps")
""")


def torchrun(tmp_path, *args, timeout=240):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MINIDIFF_CACHE": str(tmp_path / "cache"),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(script), *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env)


def weights(path):
    state = training.load_checkpoint(path)
    return state["model"], state["history"]


def assert_same_weights(two: dict, one, atol: float):
    """The 2-process weights against the 1-process run's. Softmax ignores a constant added to every
    logit, so an attention's key bias (and the molecules' distance bias's own bias) gets a gradient
    that is zero in exact arithmetic: Adam turns its rounding noise (which depends on the order of the
    sums) into steps of up to lr. Every other weight agrees closely."""
    lr = one.config["lr"]
    for name, p in one.model.state_dict().items():
        shift_invariant = name.endswith(("qkv.bias", "bias.bias"))
        assert torch.allclose(two[name], p, atol=4 * lr if shift_invariant else atol, rtol=0), name


def test_shard_splits_every_tensor_and_refuses_an_uneven_batch():
    batch = (torch.arange(8), {"y": torch.arange(8) * 10}, torch.arange(16).reshape(8, 2))
    parts = [training.shard(batch, r, 2) for r in range(2)]
    assert torch.equal(torch.cat([p[0] for p in parts]), batch[0])
    assert parts[1][1]["y"].tolist() == [40, 50, 60, 70] and parts[1][2].shape == (4, 2)
    assert training.shard(batch, 0, 1) is batch
    with pytest.raises(ValueError, match=r"global batch \(8\) must divide by the number of processes \(3\)"):
        training.shard(batch, 0, 3)
    assert training.world() == (0, 1)                        # no process group here


def test_two_processes_equal_one_at_the_same_global_batch_and_resume(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIDIFF_CACHE", str(tmp_path / "cache"))
    one = recipes.load_or_train("molecules-ddpm", "tiny", device="cpu", steps=4, batch_size=16, progress=False,
                                checkpoint=tmp_path / "one.pt")
    done = torchrun(tmp_path, 4, tmp_path / "two.pt", 16)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rank 0 of 2: 4 steps" in done.stdout and "rank 1 of 2: 4 steps" in done.stdout
    two, history = weights(tmp_path / "two.pt")
    assert_same_weights(two, one, atol=1e-6)                 # the raw weights after 4 AdamW steps
    x, t = torch.randn(8, 6, 6, generator=torch.Generator().manual_seed(0)), torch.arange(8) * 100
    twin = type(one.model)(**one.config["net"], skip=one.model.skip)
    twin.load_state_dict(two)
    with torch.no_grad():                                    # and the two denoisers compute the same function
        assert torch.allclose(twin(x, t), one.model(x, t), atol=1e-5)
    assert history == pytest.approx(one.history, rel=1e-5)   # losses averaged over the ranks: the global batch's
    # interrupted after 2 steps, resumed under torchrun to 4: the uninterrupted 2-process run
    assert torchrun(tmp_path, 2, tmp_path / "resumed.pt", 16).returncode == 0
    assert torchrun(tmp_path, 4, tmp_path / "resumed.pt", 16).returncode == 0
    resumed, resumed_history = weights(tmp_path / "resumed.pt")
    assert resumed_history == history
    for name, p in two.items():
        assert torch.equal(resumed[name], p), name


def test_a_global_batch_that_does_not_divide_is_refused(tmp_path):
    done = torchrun(tmp_path, 2, tmp_path / "odd.pt", 15)
    assert done.returncode != 0
    assert "global batch (15) must divide by the number of processes (2)" in done.stderr


@pytest.mark.parametrize("name", ["shapes-clip", "fashion-autoencoder"])
def test_clip_and_the_autoencoder_under_two_processes_equal_one(tmp_path, monkeypatch, name):
    """CLIP's contrastive loss sets every image against every caption of the *global* batch
    (training.gather), and the autoencoder's z noise is drawn with the global batch: two processes
    train what one does, where a per-rank loss would see half the negatives."""
    monkeypatch.setenv("MINIDIFF_CACHE", str(tmp_path / "cache"))
    one = recipes.load_or_train(name, "tiny", device="cpu", steps=3, batch_size=16, progress=False,
                                checkpoint=tmp_path / "one.pt")
    done = torchrun(tmp_path, 3, tmp_path / "two.pt", 16, name)
    assert done.returncode == 0, done.stderr[-3000:]
    two, history = weights(tmp_path / "two.pt")
    assert [h["loss"] for h in history] == pytest.approx([h["loss"] for h in one.history], rel=1e-5)
    # After 3 steps every weight has moved by 3 lr = 6e-3. The order of the sums leaves at most 4e-5 (Adam's
    # first steps are about lr times the gradient's sign, so where a gradient is near 0 its rounding shows);
    # CLIP's loss over each rank's half alone leaves 1.2e-2.
    assert_same_weights(two, one, atol=1e-4)


def test_gather_and_unwrap_in_one_process_and_a_custom_step_refused_under_torchrun(monkeypatch):
    x = torch.randn(4, 3, requires_grad=True)
    assert training.gather(x) is x                           # one process: the batch is the global batch
    net = torch.nn.Linear(3, 2)
    assert training.unwrap(torch.compile(net)) is net and training.unwrap(net) is net
    monkeypatch.setattr(training, "world", lambda: (0, 2))
    with pytest.raises(ValueError, match="step_fn: a custom step cannot train under torchrun"):
        training.train(net, None, lambda step: x, 1, step_fn=lambda m, b, o: b.sum(), progress=False)
