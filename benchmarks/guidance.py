"""Classifier-free guidance, measured: the text-to-image DDPM on captioned shapes (lesson 09) at
guidance scales s = 0 ... 7.5, and the zero-shot accuracy of the CLIP text encoder it reads with.

    python benchmarks/guidance.py [--scale small] [--samples N] [--steps 25] [--no-write]

Trains (or takes from the model cache) the scale's "shapes-clip", "shapes-text-ddpm" (condition
"clip") and "shapes-classifier" (the judge), and writes benchmarks/results/guidance.json and
guidance.md:

* ``rows``, one per (guidance ``scale``, prompt ``set``): ``fid``, ``precision``, ``recall``
  against real pictures of the same prompts (the judge's features), ``condition_accuracy`` (the
  share of samples the judge reads with every asked-for attribute) and ``accuracy`` per attribute,
  ``samples``; set "seen" uses (colour, shape) pairs of the training set, "held-out" only pairs
  no model saw in training (``text_conditioning.HELD_OUT``); every scale starts from the same noise;
* ``clip_zero_shot``: per prompt template, per set, the zero-shot accuracy per attribute;
* the DDIM steps, the training seconds, and the machine.

Lesson 09 makes the same measurements in front of the learner.
"""
from __future__ import annotations

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from _machine import machine_info, parse_scale_run, scale_parser, write_result  # noqa: E402

from minidiff import device, recipes  # noqa: E402
from minidiff.experiments import text_conditioning  # noqa: E402

SCALES = (0.0, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5)


def main(argv=None) -> int:
    p = scale_parser(__doc__, "prompts per set (default: by scale, as lesson 09)")
    p.add_argument("--steps", type=int, default=None, help="DDIM steps per sample (default: by scale, as lesson 09)")
    args, scale, dev, n = parse_scale_run(p, argv, (40, 150, 1000))
    steps = args.steps or device.by_scale(10, 25, 50, scale=scale)
    progress = not args.no_write
    clip_run = recipes.load_or_train("shapes-clip", scale, device=dev, progress=progress)
    run = recipes.load_or_train("shapes-text-ddpm", scale, device=dev, progress=progress)
    judge = recipes.load_or_train("shapes-classifier", scale, device=dev, progress=progress)
    size = run.config["size"]
    sets = {"seen": text_conditioning.shapes_eval_set(size, n, False, text_conditioning.HELD_OUT, seed=0),
            "held-out": text_conditioning.shapes_eval_set(size, n, True, text_conditioning.HELD_OUT, seed=1)}

    zero_shot = {t: {name: {k: round(v, 4) for k, v in text_conditioning.shapes_zero_shot(
        clip_run.model, clip_run.tokenizer, ev["images"], ev["attributes"], t).items()} for name, ev in sets.items()}
        for t in text_conditioning.ZERO_SHOT_TEMPLATES}
    rows = []
    for r in text_conditioning.guidance_sweep(run, judge, SCALES, sets, steps=steps, batch_size=device.sampling_batch_size(dev),
                                              device=dev, progress=False):
        rows.append({"scale": r["scale"], "set": r["set"], "fid": round(r["fid"], 3), "precision": round(r["precision"], 4),
                     "recall": round(r["recall"], 4), "condition_accuracy": round(r["accuracy"]["all"], 4),
                     "accuracy": {k: round(v, 4) for k, v in r["accuracy"].items() if k != "all"},
                     "samples": r["samples"], "seconds_per_image": round(r["seconds_per_image"], 5)})
        if progress:
            print(rows[-1])
    result = {"scale": scale, "device": dev.type, "sampler": "ddim", "steps": steps, "rows": rows,
              "clip_zero_shot": zero_shot, "hold_out": [list(p) for p in text_conditioning.HELD_OUT],
              "train_seconds": {"clip": round(clip_run.seconds, 1), "text_ddpm": round(run.seconds, 1)},
              "machine": machine_info()}
    lines = [f"Classifier-free guidance on captioned shapes ({scale}, {dev.type}, {n} prompts per set, "
             f"DDIM {steps} steps; held-out pairs: {', '.join(' '.join(p) for p in text_conditioning.HELD_OUT)})", "",
             "| s | pairs | FID | precision | recall | colour | shape | size | position | all four |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['scale']:g} | {r['set']} | {r['fid']:.1f} | {r['precision']:.2f} | {r['recall']:.2f} | "
              + " | ".join(f"{r['accuracy'][k]:.0%}" for k in ("colour", "shape", "size", "position"))
              + f" | {r['condition_accuracy']:.0%} |" for r in rows]
    lines += ["", "CLIP zero-shot accuracy (template: ensemble of captions / the word alone / own caption varied)", "",
              "| pairs | attribute | ensemble | word | caption |", "|---|---|---|---|---|"]
    lines += [f"| {name} | {k} | " + " | ".join(f"{zero_shot[t][name][k]:.0%}" for t in ("ensemble", "word", "caption"))
              + " |" for name in sets for k in zero_shot["ensemble"][name]]
    write_result("guidance", result, lines, write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
