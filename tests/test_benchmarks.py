"""The benchmark scripts run end to end (at tiny size, writing nothing) and print their JSON."""
import json
import pathlib
import subprocess
import sys

import pytest

from minidiff import data, editing, recipes

ROOT = pathlib.Path(__file__).resolve().parents[1]


def last_json(*args):
    r = subprocess.run([sys.executable, *args, "--no-write"], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not (data.SYSTEM_DATA_DIR / "train-images-idx3-ubyte.gz").exists(),
                    reason="needs the Debian package dataset-fashion-mnist (.ci/run installs it)")
def test_train_loop_benchmark_reports_both_rates():
    out = last_json("benchmarks/train_loop.py", "--scale", "tiny", "--steps", "2", "--rounds", "1")
    assert out["scale"] == "tiny" and out["raw_img_s"] > 0 and out["loop_img_s"] > 0
    assert out["loop_fraction"] == pytest.approx(out["loop_img_s"] / out["raw_img_s"], rel=1e-2)


def test_sampling_speed_benchmark_reports_both_rates():
    out = last_json("benchmarks/sampling_speed.py", "--scale", "tiny", "--batch", "4", "--steps", "2", "--rounds", "1")
    assert out["batch"] == 4 and out["fp32_ms_per_call"] > 0 and out["default_ms_per_call"] > 0
    assert out["speedup"] == pytest.approx(out["fp32_ms_per_call"] / out["default_ms_per_call"], rel=1e-2)


@pytest.mark.skipif(not (data.SYSTEM_DATA_DIR / "train-images-idx3-ubyte.gz").exists(),
                    reason="needs the Debian package dataset-fashion-mnist (.ci/run installs it)")
def test_latent_savings_benchmark_reports_every_field():
    out = last_json("benchmarks/latent_savings.py", "--scale", "tiny", "--samples", "8", "--sampling-steps", "3")
    assert [r["model"] for r in out["rows"]] == ["pixel", "latent"]
    for r in out["rows"]:
        assert set(r) >= {"params", "train_img_s", "sample_img_s", "peak_mem_mb", "fid", "samples"}
        assert r["samples"] == 8 and r["train_img_s"] > 0 and r["sample_img_s"] > 0 and r["peak_mem_mb"] > 50
    assert abs(out["rows"][0]["params"] - out["rows"][1]["params"]) < 1000   # the same U-Net, 4 channels in/out
    assert [r["resolution"] for r in out["resolution_rows"]] == [28, 56, 112]
    for r in out["resolution_rows"]:                                          # f = 4: far fewer activations
        assert r["pixel_mem_mb"] > 4 * r["latent_mem_mb"]
    assert out["latent_scale"] > 0 and out["psnr"] > 0 and out["rfid"] >= 0


def test_guidance_benchmark_reports_every_field():
    out = last_json("benchmarks/guidance.py", "--scale", "tiny", "--samples", "6", "--steps", "2")
    assert [(r["scale"], r["set"]) for r in out["rows"]][:3] == [(0.0, "seen"), (0.0, "held-out"), (1.0, "seen")]
    assert len(out["rows"]) == 14
    for r in out["rows"]:
        assert {"scale", "fid", "precision", "recall", "condition_accuracy", "samples"} <= set(r)
        assert r["samples"] == 6 and 0 <= r["condition_accuracy"] <= min(r["accuracy"].values()) + 1e-9
    assert set(out["clip_zero_shot"]) == {"caption", "ensemble", "word"}
    assert set(out["clip_zero_shot"]["ensemble"]["held-out"]) == {"colour", "shape", "size", "position"}
    assert out["machine"]["cpu_count"] >= 1


@pytest.mark.skipif(not (data.SYSTEM_DATA_DIR / "train-images-idx3-ubyte.gz").exists(),
                    reason="needs the Debian package dataset-fashion-mnist (.ci/run installs it)")
def test_gan_vs_diffusion_benchmark_measures_every_row():
    out = last_json("benchmarks/gan_vs_diffusion.py", "--scale", "tiny", "--samples", "16")
    assert [r["criterion"] for r in out["rows"]] == ["training stability", "image quality", "diversity",
                                                     "prompt control", "training complexity", "generation speed"]
    for r in out["rows"]:
        assert {"seed_gan", "seed_diffusion", "measured_gan", "measured_diffusion", "unit", "holds"} <= set(r)
        assert isinstance(r["holds"], bool)
    # tiny: 9 grid runs each, 3 per setting each recipe moves from Adam's defaults (GAN: lr, beta1; DDPM: lr)
    assert len(out["runs"]["grid"]) == 9 + 6 + 9 + 3 and out["machine"]["cpu_count"] >= 1
    assert {r["setting"] for r in out["runs"]["grid"]} == {"recipe", "default lr", "default beta1"}
    complexity = next(r for r in out["rows"] if r["criterion"] == "training complexity")
    assert complexity["measured_gan"] == out["runs"]["settings_tuned"]["fashion-gan"]["needed"]
    assert out["runs"]["settings_tuned"]["fashion-gan"]["moved"] == {"lr": [2e-4, 1e-3], "beta1": [0.5, 0.9]}


@pytest.mark.skipif(not (data.SYSTEM_DATA_DIR / "train-images-idx3-ubyte.gz").exists(),
                    reason="needs the Debian package dataset-fashion-mnist (.ci/run installs it)")
def test_editing_benchmark_measures_every_edit():
    out = last_json("benchmarks/editing.py", "--scale", "tiny", "--samples", "8")
    rows = out["inpainting"]
    assert {(r["mask"], r["method"]) for r in rows} == {(m, k) for m in editing.MASKS for k in ("plain", "RePaint")}
    for r in rows:
        assert {"network_calls", "masked_mse", "feature_distance", "samples"} <= set(r) and r["samples"] == 8
        assert r["masked_mse"][0] >= 0 and r["feature_distance"][0] >= 0
    assert len({r["network_calls"] for r in rows}) == 1                    # equal calls for both methods
    assert [r["strength"] for r in out["sdedit"]] == [0.2, 0.4, 0.6, 0.8]
    assert all({"faithfulness", "realism", "calls"} <= set(r) for r in out["sdedit"])
    assert {r["method"] for r in out["style"]} == {"from scratch", "sdedit", "inversion"}
    assert all(0 <= r["accuracy"] <= 1 for r in out["style"]) and out["machine"]["cpu_count"] >= 1


@pytest.mark.skipif(not (data.SYSTEM_DATA_DIR / "train-images-idx3-ubyte.gz").exists(),
                    reason="needs the Debian package dataset-fashion-mnist (.ci/run installs it)")
def test_inverse_benchmark_reports_every_row():
    out = last_json("benchmarks/inverse.py", "--scale", "tiny", "--samples", "2")
    assert {(r["task"], r["acceleration"]) for r in out["rows"]} == {("mri", 4), ("mri", 8), ("denoise", None),
                                                                     ("super-resolution", 2)}
    for r in out["rows"]:
        assert {"psnr", "ssim", "data_range", "residual", "seconds_per_image", "images"} <= set(r)
        assert r["data_range"] == 2.0 and r["images"] == 2
    consistent = [r for r in out["rows"] if r["method"] == "projection"]
    assert consistent and all(r["residual"] < 1e-3 for r in consistent)      # exact on the measured part
    assert set(out["zeta_chosen_on_validation"]) == {"mri 4", "mri 8", "denoise", "super-resolution 2"}
    syn = out["synthetic"]
    assert all(0 <= syn[k] <= 1 for k in ("real_acc", "synthetic_acc", "mixed_acc", "both_acc")) and syn["images"] == 20
    assert [r["type_scale"] for r in out["molecules"]["ablation"]] == [0.25, 1.0, 4.0]
    assert all(0 <= r["validity"] <= r["geometry"] <= 1 for r in out["molecules"]["ablation"])
    motion = out["video"]["motion_error"]
    assert motion["real clips"] < 0.1 < motion["frames from different clips"]      # the floor and the chance level
    assert {"space + time attention", "space attention only"} <= set(motion) and out["video"]["baseline"] in motion


@pytest.mark.skipif(not (data.SYSTEM_DATA_DIR / "train-images-idx3-ubyte.gz").exists(),
                    reason="needs the Debian package dataset-fashion-mnist (.ci/run installs it)")
def test_full_scale_benchmark_reports_times_fids_and_the_sweep():
    out = last_json("benchmarks/full_scale.py", "--scale", "tiny", "--samples", "8", "--steps", "4",
                    "--sweep", "16:2e-3,32:1e-3", "--sweep-images", "96")
    assert out["scale"] == "tiny" and out["recipe"]["steps"] == 4 and out["train_seconds"] > 0
    assert [r["name"] for r in out["samplers"]] == ["ddpm 20", "dpm++2m 20", "ddim 50"]
    for r in out["samplers"]:
        assert r["fid"] > 0 and r["fid_over_floor"] == pytest.approx(r["fid"] / out["fid_floor"], rel=1e-2)
    assert out["samplers"][0]["fid_over_ddpm"] == 1.0 and set(out["targets"]) == {
        "ddpm_fid_within_2.5x_floor", "dpm++2m_20_within_1.15x_ddpm", "ddim_50_within_1.25x_ddpm"}
    assert [(r["batch_size"], r["lr"]) for r in out["sweep"]] == [(16, 2e-3), (32, 1e-3)]
    tiny = recipes.config("fashion-ddpm", "tiny")       # batch 32: the second run keeps the recipe's EMA
    assert [(r["steps"], r["images"]) for r in out["sweep"]] == [(6, 96), (3, 96)]
    assert out["sweep"][1]["ema_decay"] == pytest.approx(tiny["ema_decay"])
    assert out["sweep"][0]["ema_decay"] == pytest.approx(tiny["ema_decay"] ** 0.5, abs=1e-6)
    assert all(r["images_per_second"] > 0 and r["held_out_loss"] > 0 and r["dpm++2m_20_fid"] > 0
               for r in out["sweep"])


@pytest.mark.skipif(not (data.SYSTEM_DATA_DIR / "train-images-idx3-ubyte.gz").exists(),
                    reason="needs the Debian package dataset-fashion-mnist (.ci/run installs it)")
def test_noise_scale_benchmark_measures_both_weights():
    out = last_json("benchmarks/noise_scale.py", "--scale", "tiny")
    assert [r["weights"] for r in out["rows"]] == ["initial", "trained (150 steps at batch 32)"]
    for r in out["rows"]:           # the three numbers hang together: B_simple = tr(Sigma) / |G|^2
        assert r["b_simple"] == pytest.approx(r["trace_sigma"] / r["grad_norm_sq"], rel=1e-3)
    # a trained model's gradient signal is far smaller than at initialisation, its noise scale larger
    assert out["rows"][1]["grad_norm_sq"] < out["rows"][0]["grad_norm_sq"]
    assert out["rows"][1]["b_simple"] > out["rows"][0]["b_simple"]
