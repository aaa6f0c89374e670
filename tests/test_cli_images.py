"""The image CLI end to end at tiny scale: train, resume, sample; and the sampler comparison."""
import subprocess
import sys

import pytest
import torch

from minidiff import data, loss, recipes, samplers
from minidiff.experiments import common, generating_images

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
    model, s, cfg = generating_images.model_from_checkpoint(ck)
    assert s.T == 1000 and cfg["prediction"] == "v"
    assert model(torch.zeros(1, 1, 28, 28), torch.tensor([5])).shape == (1, 1, 28, 28)
    # `sample` reads the model's output as what the checkpoint says it predicts
    from minidiff import __main__ as cli
    seen = []
    real_sample = samplers.sample
    monkeypatch.setattr(samplers, "sample", lambda *a, **kw: seen.append(kw["prediction"]) or real_sample(*a, **kw))
    assert cli.main(["sample", "--checkpoint", str(ck), "--steps", "2", "--n", "2", "--out", str(out),
                     "--no-progress"]) == 0
    assert seen == ["v"]


def test_cli_train_passes_compile(tmp_path, monkeypatch):
    """--compile reaches training.train (compiling itself is exercised on a GPU, not here)."""
    from minidiff import __main__ as cli
    seen = {}

    def fake_recipe(*args, **kw):
        seen.update(kw)
        return common.DDPMRun(None, None, None, [0.5], {}, 0.0)

    monkeypatch.setattr(recipes, "load_or_train", fake_recipe)
    assert cli.main(["train", "--checkpoint", str(tmp_path / "c.pt"), "--compile", "--no-progress"]) == 0
    assert seen["compile"] is True
    assert cli.main(["train", "--checkpoint", str(tmp_path / "c.pt"), "--no-progress"]) == 0
    assert seen["compile"] is None          # the recipes' default: compiled at full scale on CUDA only


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


@needs_data
def test_train_and_sample_a_latent_model(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIDIFF_CACHE", str(tmp_path / "cache"))
    ck = tmp_path / "latent.pt"
    r = run("train", "--model", "latent", "--scale", "tiny", "--steps", "2", "--checkpoint", str(ck),
            "--no-progress", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    state = torch.load(ck, weights_only=True)
    assert state["config"]["recipe"] == "fashion-latent-ddpm" and "latent_scale" in state["autoencoder"]
    out = tmp_path / "grid.png"
    r = run("sample", "--checkpoint", str(ck), "--sampler", "ddim", "--steps", "2", "--n", "4", "--out", str(out),
            "--no-progress", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes()[:4] == b"\x89PNG"
