"""Sampling quality against speed: DDPM at 1000 steps versus DDIM and DPM-Solver++ at 10–100 steps,
each both deterministic (an ODE solver: DDIM eta=0, DPM-Solver++(2M)) and stochastic (DDIM eta=1,
SDE-DPM-Solver++(2M)).

    python benchmarks/sampling_quality.py [--scale small] [--checkpoint PATH] [--samples N]
                                          [--prediction v] [--training-steps N]

Trains the Fashion-MNIST DDPM of the scale (or resumes/loads it from --checkpoint), trains the
feature classifier, samples the same N starting noises with every sampler and step count, and
writes benchmarks/results/sampling.json (rows of sampler, steps, fid, seconds_per_image,
samples; plus real_floor, scale and the machine) and benchmarks/results/sampling.md, the table
the README shows. The same measurement is lesson 07's. ``--prediction`` and ``--training-steps``
change the recipe (what the U-Net predicts, how long it trains); such runs are written to
sampling_<prediction>_<N>steps.json/.md instead, next to the recipe's.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from _machine import machine_info, parse_scale_run  # noqa: E402

from minidiff import device, evaluation, loss, recipes  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", choices=device.SCALES, default=None)
    p.add_argument("--checkpoint", default=None, help="resume/load the model from here instead of the model cache (trained if missing)")
    p.add_argument("--samples", type=int, default=None, help="images per run (default: by scale)")
    p.add_argument("--ddpm-steps", type=int, default=1000)
    p.add_argument("--steps", type=int, nargs="*", default=[10, 20, 50, 100])
    p.add_argument("--prediction", choices=loss.PREDICTIONS, default=None,
                   help="what the model learns to predict (default: the recipe's)")
    p.add_argument("--training-steps", type=int, default=None, help="training steps (default: the recipe's)")
    args, scale, dev, n = parse_scale_run(p, argv, (64, 500, 5000))
    recipe = recipes.config("fashion-ddpm", scale)
    prediction = args.prediction or recipe["prediction"]
    overrides = {"steps": args.training_steps} if args.training_steps else {}
    model, ema, s, history, *_ = recipes.load_or_train("fashion-ddpm", scale, checkpoint=args.checkpoint, device=dev,
                                                      prediction=prediction, **overrides)
    classifier = recipes.load_or_train("fashion-classifier", scale, device=dev)
    evaluator = evaluation.fashion_mnist_evaluator(classifier, n_real=n)
    runs = ([("ddpm", args.ddpm_steps)] + [(name, k) for name in ("ddim", "dpm++2m") for k in args.steps]
            + [("ddim", k, 1.0) for k in args.steps] + [("sde-dpm++2m", k) for k in args.steps])
    rows = evaluation.compare_samplers(ema.model, s, evaluator, runs, n=n, prediction=prediction, device=dev,
                                   progress=True, batch_size=device.sampling_batch_size(dev))
    keep = ("name", "sampler", "steps", "eta", "fid", "seconds_per_image", "samples", "precision", "recall",
            "covered", "max_share_ratio")
    rows = [{k: (round(r[k], 5) if isinstance(r[k], float) else r[k]) for k in keep} for r in rows]
    out = pathlib.Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    result = {"scale": scale, "training_steps": len(history), "prediction": prediction,
              "classifier_accuracy": round(evaluator["accuracy"], 4), "real_floor": round(evaluator["floor"], 4),
              "device": dev.type, "rows": rows, "machine": machine_info()}
    stem = "sampling"
    if prediction != recipe["prediction"] or len(history) != recipe["steps"]:
        stem += f"_{prediction}_{len(history)}steps"
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    base = rows[0]
    lines = [f"Scale `{scale}` ({len(history)} training steps, {prediction}-prediction), {n} samples per run, on "
             f"{result['machine']['gpu'] or result['machine']['processor'] + ' CPU'} "
             f"({dev.type}); feature classifier {evaluator['accuracy']:.1%} test accuracy; "
             f"real-vs-real FID floor {evaluator['floor']:.2f}.", "",
             "| sampler | steps | noise per step | FID | FID / DDPM | s per image | precision | recall |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        label = r["sampler"] + (f" (eta={r['eta']:g})" if r["sampler"] == "ddim" else "")
        stochastic = "yes" if r["sampler"] in ("ddpm", "sde-dpm++2m") or r["eta"] > 0 else "no"
        lines.append(f"| {label} | {r['steps']} | {stochastic} | {r['fid']:.2f} | {r['fid'] / base['fid']:.2f} | "
                     f"{r['seconds_per_image']:.4f} | {r['precision']:.2f} | {r['recall']:.2f} |")
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
