"""Editing with one trained DDPM, measured (lesson 11).

    python benchmarks/editing.py [--scale small] [--samples N] [--no-write]

Takes the scale's Fashion-MNIST DDPM, class-conditional DDPM and feature classifier from the model
cache (training them if needed) and writes benchmarks/results/editing.json and .md:

* ``inpainting``: per mask (``editing.MASKS``) and method (plain replacement, RePaint at an equal
  number of network calls): ``mask``, ``method``, ``network_calls``, ``masked_mse`` and
  ``feature_distance`` (means with standard errors), the paired difference in masked MSE (plain
  minus RePaint) and its standard error, ``fid`` and ``samples``;
* ``sdedit``: per strength: ``strength``, ``calls``, ``faithfulness`` (RMS distance to the input
  sketch), ``realism`` (classifier confidence) and ``fid``;
* ``inversion``: DDIM inversion's reconstruction RMS error per number of steps;
* ``style``: sneaker -> sandal per guidance scale and method: ``accuracy`` (read as a sandal) and
  ``structure`` (coarse distance to the input), beside sampling from scratch;
* the machine.

The settings are lesson 11's at each scale, so the numbers are the lesson's.
"""
from __future__ import annotations

import math
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from _machine import machine_info, parse_scale_run, scale_parser, write_result  # noqa: E402

import torch  # noqa: E402

from minidiff import data, device, editing, evaluation, recipes  # noqa: E402
from minidiff.experiments import editing_images  # noqa: E402

STRENGTHS = (0.2, 0.4, 0.6, 0.8)
GUIDE = (1.0, 3.0, 5.0)
SOURCE, TARGET, STYLE_STRENGTH = 7, 5, 0.6          # sneaker -> sandal


def mean_se(v: torch.Tensor) -> tuple[float, float]:
    return round(v.mean().item(), 5), round((v.std() / math.sqrt(len(v))).item(), 5)


def main(argv=None) -> int:
    p = scale_parser(__doc__, "test images per measurement (default: by scale, as lesson 11)")
    args, scale, dev, n = parse_scale_run(p, argv, (8, 128, 512))
    steps = device.by_scale(10, 40, 100, scale=scale)
    jump, resample = device.by_scale((2, 2), (5, 3), (10, 10), scale=scale)
    edit_steps = device.by_scale(10, 50, 50, scale=scale)
    quiet = {"device": dev, "progress": False}
    run = recipes.load_or_train("fashion-ddpm", scale, **quiet)
    model, s = run.ema.model, run.schedule
    evaluator = evaluation.fashion_mnist_evaluator(recipes.load_or_train("fashion-classifier", scale, **quiet), n_real=n)
    x_test, y_test = data.fashion_mnist("test")
    truth, labels = x_test[-n:], y_test[-n:]

    masks = {name: editing.make_mask(name, 28, n, generator=torch.Generator().manual_seed(1)) for name in editing.MASKS}
    compared = editing_images.inpainting_comparison(model, s, truth, masks, evaluator, steps=steps, jump_length=jump,
                                                    resample=resample, device=dev)
    inpainting = []
    for name, r in compared.items():
        diff = mean_se(r["plain"]["mse"] - r["RePaint"]["mse"])
        for method, m in r.items():
            inpainting.append({"mask": name, "method": method, "network_calls": m["network_calls"],
                               "masked_mse": mean_se(m["mse"]), "feature_distance": mean_se(m["feature"]),
                               "mse_plain_minus_repaint": diff, "fid": round(m["fid"], 3), "samples": n,
                               "repaint_better": diff[0] > 2 * diff[1]})

    sketch = editing.rough_sketch(truth)
    sdedit = [{"strength": r["strength"], "calls": r["calls"], "faithfulness": round(r["distance"], 5),
               "realism": round(r["confidence"], 5), "class_kept": round(r["accuracy"], 4), "fid": round(r["fid"], 3)}
              for r in editing_images.sdedit_sweep(model, s, sketch, STRENGTHS, evaluator, steps=edit_steps, labels=labels,
                                                   device=dev)]

    n_inv = device.by_scale(4, 32, 64, scale=scale)
    inverted = editing_images.inversion_errors(model, s, truth[:n_inv], device.by_scale([5, 10], [10, 25, 50, 100],
                                                                                        [10, 25, 50, 100, 250], scale=scale))
    inversion = [{"steps": k, "rms": round(v["rms"], 5), "samples": n_inv} for k, v in inverted.items()]

    crun = recipes.load_or_train("fashion-cond-ddpm", scale, **quiet)
    src = x_test[y_test == SOURCE][:device.by_scale(8, 64, 256, scale=scale)]
    style = [{k: (round(v, 5) if isinstance(v, float) else v) for k, v in r.items() if k != "images"}
             for r in editing_images.style_sweep(crun, src, SOURCE, TARGET, GUIDE, evaluator, strength=STYLE_STRENGTH,
                                                 steps=edit_steps, reference=x_test[y_test == TARGET][:len(src)],
                                                 batch_size=device.sampling_batch_size(dev), device=dev)]
    scratch = {r["scale"]: r["structure"] for r in style if r["method"] == "from scratch"}
    for r in style:
        r["meets_target"] = r["method"] != "from scratch" and r["accuracy"] >= 0.8 and r["structure"] < scratch[r["scale"]]

    result = {"scale": scale, "device": dev.type, "samples": n,
              "settings": {"inpaint_steps": steps, "jump_length": jump, "resample": resample, "edit_steps": edit_steps,
                           "style": {"source": data.FASHION_MNIST_CLASSES[SOURCE],
                                     "target": data.FASHION_MNIST_CLASSES[TARGET], "strength": STYLE_STRENGTH}},
              "inpainting": inpainting, "sdedit": sdedit, "inversion": inversion, "style": style,
              "machine": machine_info()}
    md = [f"Editing with lesson 06's DDPM ({scale}, {dev.type}, {n} test images; RePaint {steps} levels, jump {jump}, "
          f"resample {resample})", "", "| mask | plain: masked MSE | RePaint: masked MSE | plain - RePaint | "
          "plain: feature dist. | RePaint: feature dist. | calls (each) | RePaint better |", "|---|---|---|---|---|---|---|---|"]
    for name in masks:
        pl, rp = (next(r for r in inpainting if r["mask"] == name and r["method"] == m) for m in ("plain", "RePaint"))
        md.append(f"| {name} | {pl['masked_mse'][0]:.4f} | {rp['masked_mse'][0]:.4f} | {pl['mse_plain_minus_repaint'][0]:+.4f} "
                  f"± {pl['mse_plain_minus_repaint'][1]:.4f} | {pl['feature_distance'][0]:.2f} | "
                  f"{rp['feature_distance'][0]:.2f} | {rp['network_calls']} | {'yes' if rp['repaint_better'] else 'no'} |")
    md += ["", "| SDEdit strength | calls | distance to sketch | classifier confidence | FID |", "|---|---|---|---|---|"]
    md += [f"| {r['strength']} | {r['calls']} | {r['faithfulness']:.3f} | {r['realism']:.2f} | {r['fid']:.1f} |"
           for r in sdedit]
    md += ["", f"| {result['settings']['style']['source']} -> {result['settings']['style']['target']}: guidance | method | "
           "read as target | coarse distance to input | FID to real targets | meets target |", "|---|---|---|---|---|---|"]
    md += [f"| {r['scale']} | {r['method']} | {r['accuracy']:.0%} | {r['structure']:.3f} | {r['fid']:.1f} | "
           f"{'yes' if r['meets_target'] else 'no'} |" for r in style]
    write_result("editing", result, md, write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
