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
from minidiff import distributed, recipes, training

ROOT = pathlib.Path(minidiff.__file__).resolve().parents[1]       # the package under test, in the child processes too

SCRIPT = textwrap.dedent("""
    import sys
    from minidiff import distributed, recipes, training
    rank, world = distributed.init_distributed()
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
    parts = [distributed.shard(batch, r, 2) for r in range(2)]
    assert torch.equal(torch.cat([p[0] for p in parts]), batch[0])
    assert parts[1][1]["y"].tolist() == [40, 50, 60, 70] and parts[1][2].shape == (4, 2)
    assert distributed.shard(batch, 0, 1) is batch
    # a tensor that is not batch-sized (a shared "no condition" row, a number) is every rank's whole
    shared = (torch.arange(8), torch.zeros(1, 3), torch.tensor(2.0), {"null": torch.ones(1, 5)})
    mine = distributed.shard(shared, 1, 2)
    assert mine[0].tolist() == [4, 5, 6, 7] and mine[1].shape == (1, 3) and mine[2].item() == 2.0
    assert mine[3]["null"].shape == (1, 5)
    with pytest.raises(ValueError, match=r"global batch \(8\) must divide by the number of processes \(3\)"):
        distributed.shard(batch, 0, 3)
    assert distributed.world() == (0, 1)                        # no process group here


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
    (distributed.gather), and the autoencoder's z noise is drawn with the global batch: two processes
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
    assert distributed.gather(x) is x                           # one process: the batch is the global batch
    net = torch.nn.Linear(3, 2)
    assert distributed.unwrap(torch.compile(net)) is net and distributed.unwrap(net) is net
    monkeypatch.setattr(training, "world", lambda: (0, 2))
    with pytest.raises(ValueError, match="step_fn: a custom step cannot train under torchrun"):
        training.train(net, None, lambda step: x, 1, step_fn=lambda m, b, o: b.sum(), progress=False)


MASKS = textwrap.dedent("""
    import json
    import sys
    import torch
    from minidiff import distributed, training
    rank, world = distributed.init_distributed()
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 64), torch.nn.Dropout(0.5))
    masks = []
    net[1].register_forward_hook(lambda m, i, out: masks.append((out == 0).flatten().tolist()))
    training.train(net, lambda m, x: m(x).pow(2).mean(), lambda step: torch.ones(8, 4), int(sys.argv[2]),
                   progress=False, checkpoint=sys.argv[1] + (f".{rank}" if sys.argv[3] == "per-rank" else ""),
                   checkpoint_every=1)
    with open(f"{sys.argv[1]}.masks.{rank}", "w") as f:        # one file per rank: their prints interleave
        json.dump(masks, f)
""")


def run_script(tmp_path, text, *args):
    script = tmp_path / "script.py"
    script.write_text(text)
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(script), *map(str, args)], capture_output=True, text=True, timeout=240, env=env)


def masks_by_rank(path) -> dict:
    import json
    return {rank: json.loads(pathlib.Path(f"{path}.masks.{rank}").read_text()) for rank in (0, 1)}


def test_each_rank_draws_its_own_dropout_masks_and_the_same_again_on_resume(tmp_path):
    whole = run_script(tmp_path, MASKS, tmp_path / "a.pt", 2, "shared")
    assert whole.returncode == 0, whole.stderr[-3000:]
    masks = masks_by_rank(tmp_path / "a.pt")
    assert masks[0][0] != masks[1][0]                          # the same rows' inputs, different masks
    first = run_script(tmp_path, MASKS, tmp_path / "b.pt", 1, "shared")
    resumed = run_script(tmp_path, MASKS, tmp_path / "b.pt", 2, "shared")
    assert first.returncode == 0 and resumed.returncode == 0, resumed.stderr[-3000:]
    for rank in (0, 1):                                        # step 1 after a resume: the masks it had
        assert masks_by_rank(tmp_path / "b.pt")[rank] == [masks[rank][1]]


def test_ranks_that_disagree_on_the_resume_step_refuse_together(tmp_path):
    """On machines without a shared disk one rank may find a checkpoint the other lacks: both stop
    with the same error instead of hanging in a collective."""
    made = run_script(tmp_path, MASKS, tmp_path / "c.pt", 1, "per-rank")
    assert made.returncode == 0, made.stderr[-3000:]
    (tmp_path / "c.pt.1").unlink(missing_ok=True)                # only rank 0 finds a file (rank 0 wrote it)
    split = run_script(tmp_path, MASKS, tmp_path / "c.pt", 2, "per-rank")
    assert split.returncode != 0
    assert "the step this run resumes from differs across the 2 processes (from 0 to 1" in split.stderr
