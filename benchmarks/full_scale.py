"""Full scale, measured: train lesson 06's Fashion-MNIST DDPM recipe, then sample and score it.

    python benchmarks/full_scale.py [--scale full] [--samples 2000] [--steps N] [--batch-size B] [--lr LR]
                                    [--sweep 256:4e-4,512:8e-4 [--sweep-images N]] [--no-write]

Trains (or takes from the model cache) the scale's "fashion-ddpm" recipe, compiled on CUDA (with
``--steps``, ``--batch-size``, ``--lr`` overriding the recipe), and reports: the time training took
(as recorded when it ran) and its images/s; the time to sample and score; the FID of DDPM at 1000
steps and of the fast samplers (DPM-Solver++(2M) at 20 steps, DDIM at 50), each against the
real-vs-real floor at the same sample count; and the device (the GPU's name). ``--sweep`` first trains
a run at each batch:lr pair on the same number of images (``--sweep-images``, default the recipe's;
the EMA's horizon kept in images) and records its images/s, held-out loss and DPM-Solver++(2M)-20
FID: the measurement a recipe's batch size and learning rate are chosen by.

Writes benchmarks/results/full_scale_<gpu>.json and .md on a GPU (full_scale_cpu_<scale> on a CPU).
The targets it is read against (issue 17): lesson 06 at full within 15 minutes on one H200 with
DDPM-1000's FID at most 2.5x the floor; DPM-Solver++(2M) 20 within 1.15x and DDIM 50 within 1.25x
of DDPM-1000's FID.
"""
from __future__ import annotations

import json
import pathlib
import re
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from _machine import machine_info, parse_scale_run, scale_parser, write_result  # noqa: E402

import torch  # noqa: E402

from minidiff import data, device, evaluation, recipes  # noqa: E402


def sweep(scale, dev, pairs, images, evaluator, held_out, n) -> list[dict]:
    """Runs of the recipe at each (batch_size, lr) on the same number of training images: their
    images/s, the held-out loss of their weights (evaluation.held_out_loss: the same test images, t
    and eps for every run) and the FID of their EMA with DPM-Solver++(2M) at 20 steps."""
    base = recipes.config("fashion-ddpm", scale)
    base["steps"] = round(images / base["batch_size"])
    rows = []
    for bs, lr in pairs:        # each on ``images`` images, the EMA's horizon kept in images
        over = {k: v for k, v in recipes.at_batch(base, bs, lr=lr).items()
                if k in ("batch_size", "lr", "steps", "ema_decay", "ema_warmup")}
        run = recipes.load_or_train("fashion-ddpm", scale, device=dev, progress=False, compile=dev.type == "cuda",
                                    **over)
        fid = evaluation.compare_samplers(run.ema.model, run.schedule, evaluator, [("dpm++2m", 20)], n,
                                          batch_size=device.sampling_batch_size(dev), device=dev, progress=False,
                                          prediction=run.config["prediction"])[0]["fid"]
        rows.append({"batch_size": bs, "lr": lr, "steps": over["steps"], "images": over["steps"] * bs,
                     "ema_decay": round(over["ema_decay"], 6), "train_seconds": round(run.seconds, 2),
                     "images_per_second": round(over["steps"] * bs / run.seconds, 1),
                     "held_out_loss": round(evaluation.held_out_loss(run.model, run.schedule, held_out,
                                                                     prediction=run.config["prediction"]), 5),
                     "dpm++2m_20_fid": round(fid, 3)})
        print(json.dumps({"sweep_row": rows[-1]}), flush=True)     # as it comes: a cut-off run keeps what it measured
    return rows


def main(argv=None) -> int:
    p = scale_parser(__doc__, "samples per FID (default: by scale; 2000 at full)")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the recipe's)")
    p.add_argument("--batch-size", type=int, default=None, help="global batch (default: the recipe's)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: the recipe's)")
    p.add_argument("--sweep", default=None, help="batch:lr pairs to try first, e.g. 256:4e-4,512:8e-4")
    p.add_argument("--sweep-images", type=int, default=None,
                   help="training images of each sweep run (default: the recipe's, steps x batch)")
    args, scale, dev, n = parse_scale_run(p, argv, (16, 200, 2000))
    overrides = {k: v for k, v in (("steps", args.steps), ("batch_size", args.batch_size), ("lr", args.lr))
                 if v is not None}
    result = {"scale": scale, "device": dev.type, "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None}
    classifier = recipes.load_or_train("fashion-classifier", scale, device=dev, progress=False)
    evaluator = evaluation.fashion_mnist_evaluator(classifier, n_real=n)
    if args.sweep:
        pairs = [(int(b), float(lr)) for b, lr in (item.split(":") for item in args.sweep.split(","))]
        base = recipes.config("fashion-ddpm", scale)
        images = args.sweep_images or base["steps"] * base["batch_size"]
        held_out = data.fashion_mnist("test")[0][-device.by_scale(200, 2000, 2000, scale=scale):]
        result["sweep"] = sweep(scale, dev, pairs, images, evaluator, held_out, n)

    start = time.perf_counter()
    run = recipes.load_or_train("fashion-ddpm", scale, device=dev, progress=False, compile=dev.type == "cuda",
                                **overrides)
    cfg = run.config
    result.update({"recipe": {k: cfg[k] for k in ("steps", "batch_size", "lr", "ema_decay", "unet")},
                   "trained_now": time.perf_counter() - start > 0.5 * run.seconds,
                   "train_seconds": round(run.seconds, 1),
                   "train_images_per_second": round(cfg["steps"] * cfg["batch_size"] / run.seconds, 1)})

    start = time.perf_counter()
    ddpm_steps = min(device.by_scale(20, 1000, 1000, scale=scale), run.schedule.T)
    runs = [("ddpm", ddpm_steps), ("dpm++2m", 20), ("ddim", 50)]
    rows = evaluation.compare_samplers(run.ema.model, run.schedule, evaluator, runs, n,
                                       batch_size=device.sampling_batch_size(dev), device=dev, progress=False,
                                       prediction=cfg["prediction"])
    result["sample_and_evaluate_seconds"] = round(time.perf_counter() - start, 1)
    floor = evaluator["floor"]
    ddpm_fid = rows[0]["fid"]
    result["samples"] = n
    result["fid_floor"] = round(floor, 3)
    result["samplers"] = [{"name": r["name"], "fid": round(r["fid"], 3), "fid_over_floor": round(r["fid"] / floor, 3),
                           "fid_over_ddpm": round(r["fid"] / ddpm_fid, 3),
                           "seconds_per_image": round(r["seconds_per_image"], 5)} for r in rows]
    result["targets"] = {"ddpm_fid_within_2.5x_floor": ddpm_fid <= 2.5 * floor,
                         "dpm++2m_20_within_1.15x_ddpm": rows[1]["fid"] <= 1.15 * ddpm_fid,
                         "ddim_50_within_1.25x_ddpm": rows[2]["fid"] <= 1.25 * ddpm_fid}
    result["machine"] = machine_info()

    where = result["gpu"] or f"{dev.type}, {scale}"
    md = [f"Full-scale run of the Fashion-MNIST DDPM ({where}; {cfg['steps']} steps at batch {cfg['batch_size']}, "
          f"lr {cfg['lr']:g}; trained in {run.seconds / 60:.1f} min at {result['train_images_per_second']:.0f} img/s; "
          f"{n} samples per FID, floor {floor:.2f})", "",
          "| sampler | FID | × floor | × DDPM-1000 | s / image |", "|---|---|---|---|---|"]
    md += [f"| {r['name']} | {r['fid']:.2f} | {r['fid_over_floor']:.2f} | {r['fid_over_ddpm']:.2f} | "
           f"{r['seconds_per_image']:.4f} |" for r in result["samplers"]]
    if "sweep" in result:
        md += ["", f"Sweep: each run on {result['sweep'][0]['images']:,} training images (EMA horizon kept in images)", "",
               "| batch | lr | steps | EMA decay | img/s | held-out loss | DPM++(2M)-20 FID |", "|---|---|---|---|---|---|---|"]
        md += [f"| {r['batch_size']} | {r['lr']:g} | {r['steps']} | {r['ema_decay']:g} | {r['images_per_second']:.0f} | "
               f"{r['held_out_loss']:.4f} | {r['dpm++2m_20_fid']:.2f} |" for r in result["sweep"]]
    stem = "full_scale_" + (re.sub(r"[^a-z0-9]+", "_", result["gpu"].lower()).strip("_") if result["gpu"]
                            else f"cpu_{scale}")
    write_result(stem, result, md, write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
