"""The image CLI end to end at tiny scale: train, resume, sample; and the sampler comparison."""
import subprocess
import sys

import pytest
import torch

from minidiff import data, loss, metrics, samplers, schedules, training

needs_data = pytest.mark.skipif(
    not (data.SYSTEM_DATA_DIR / "train-images-idx3-ubyte.gz").exists(),
    reason="needs the Debian package dataset-fashion-mnist (.ci/run installs it)")


def run(*args, cwd):
    return subprocess.run([sys.executable, "-m", "minidiff", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600)


@needs_data
def test_train_resume_and_sample(tmp_path, monkeypatch):
    ck = tmp_path / "run" / "ddpm.pt"
    r = run("train", "--dataset", "fashion-mnist", "--scale", "tiny", "--steps", "3", "--checkpoint", str(ck),
            "--seed", "1", "--prediction", "v", "--no-progress", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert torch.load(ck, weights_only=True)["step"] == 3
    r = run("train", "--scale", "tiny", "--steps", "5", "--checkpoint", str(ck), "--seed", "1", "--no-progress",
            cwd=tmp_path)                                  # resumed with the scale's default prediction: refused
    assert r.returncode == 2 and "prediction: 'v' there, 'eps' here" in r.stderr, r.stderr
    r = run("train", "--scale", "tiny", "--steps", "5", "--checkpoint", str(ck), "--seed", "1", "--no-progress",
            "--prediction", "v", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    state = torch.load(ck, weights_only=True)
    assert state["step"] == 5 and len(state["history"]) == 5 and state["config"]["scale"] == "tiny"
    out = tmp_path / "grid.png"
    r = run("sample", "--checkpoint", str(ck), "--sampler", "dpm++2m", "--steps", "3", "--n", "4", "--out", str(out),
            "--no-progress", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes()[:4] == b"\x89PNG"
    model, s, cfg = training.model_from_checkpoint(ck)
    assert s.T == 1000 and cfg["prediction"] == "v"
    assert model(torch.zeros(1, 1, 28, 28), torch.tensor([5])).shape == (1, 1, 28, 28)
    # `sample` reads the model's output as what the checkpoint says it predicts
    from minidiff import __main__ as cli
    from minidiff import reverse
    seen = []
    real_sample = reverse.sample
    monkeypatch.setattr(reverse, "sample", lambda *a, **kw: seen.append(kw["prediction"]) or real_sample(*a, **kw))
    assert cli.main(["sample", "--checkpoint", str(ck), "--steps", "2", "--n", "2", "--out", str(out),
                     "--no-progress"]) == 0
    assert seen == ["v"]


def test_cli_help_and_errors(tmp_path):
    for cmd in ("train", "sample"):
        r = run(cmd, "--help", cwd=tmp_path)
        assert r.returncode == 0 and "--checkpoint" in r.stdout and "--steps" in r.stdout
    r = run("sample", "--checkpoint", str(tmp_path / "missing.pt"), cwd=tmp_path)
    assert r.returncode == 2 and "no checkpoint" in r.stderr
    r = run("sample", "--checkpoint", "x.pt", "--sampler", "euler", cwd=tmp_path)
    assert r.returncode == 2 and "invalid choice" in r.stderr
    # the CLI spells the samplers out (so that --help needs no torch); it must offer exactly the package's
    choices = r.stderr.split("choose from")[1]
    assert sorted(c.strip(" '\n)") for c in choices.split(",")) == sorted(samplers.SAMPLERS)
    r = run("train", "--checkpoint", "x.pt", "--steps", "0", cwd=tmp_path)
    assert r.returncode == 2 and "--steps must be >= 1" in r.stderr
    r = run("train", "--checkpoint", "x.pt", "--prediction", "score", cwd=tmp_path)   # likewise the predictions
    choices = r.stderr.split("choose from")[1]
    assert r.returncode == 2 and sorted(c.strip(" '\n)") for c in choices.split(",")) == sorted(loss.PREDICTIONS)


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_compare_samplers_measures_every_run(g, prediction):
    """With a 'model' that knows the answer (a constant x0), every sampler reproduces it and the
    FID of those images against themselves is the floor-free 0 case — read as eps or as v."""
    target = torch.rand(1, 1, 28, 28, generator=g) * 2 - 1
    s = schedules.linear(T=1000)

    class Oracle(torch.nn.Module):        # eps (or v) that points exactly at `target`
        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x, t):
            ab = s.alpha_bars[t].float()[:, None, None, None]
            eps = (x - ab.sqrt() * target) / (1 - ab).sqrt()
            v = ab.sqrt() * eps - (1 - ab).sqrt() * target                 # Salimans & Ho 2022, §4
            return eps if prediction == "eps" else v

    clf = metrics.FashionClassifier()
    real = metrics.features(clf, target.expand(20, 1, 28, 28) + 0.01 * torch.randn(20, 1, 28, 28, generator=g))
    evaluator = {"classifier": clf, "real": real, "floor": 0.0, "n_real": 20}
    runs = [("ddpm", 10), ("ddim", 5), ("dpm++2m", 5), ("ddim", 5, 1.0), ("sde-dpm++2m", 5)]
    rows = metrics.compare_samplers(Oracle(), s, evaluator, runs, n=20, batch_size=8, prediction=prediction,
                                    progress=False)
    assert [(r["sampler"], r["steps"], r["eta"]) for r in rows] == [(*run, 0.0)[:3] for run in runs]
    assert [r["name"] for r in rows][2:4] == ["dpm++2m 5", "ddim 5, eta=1"]
    for r in rows:
        assert r["samples"] == 20 and r["seconds_per_image"] > 0 and r["fid"] < 1.0
