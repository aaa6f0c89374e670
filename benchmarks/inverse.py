"""Inverse problems with one trained DDPM, measured (the measurement part of lesson 12, which is
still to come).

    python benchmarks/inverse.py [--scale small] [--samples N] [--no-write]

Takes the scale's Fashion-MNIST DDPM from the model cache and writes
benchmarks/results/inverse.json and .md with ``rows`` of ``task``, ``acceleration``, ``method``,
``psnr``, ``ssim``, ``data_range``, ``residual``, ``seconds_per_image``, ``images``:

* "mri": k-space measurements at 4x and 8x (``inverse.cartesian_mask``, noise sigma 0.01):
  zero-filled against projection against DPS;
* "denoise": Gaussian noise sigma 0.2 on the image: the noisy input against DPS;
* "super-resolution": 2x block means: nearest upsampling against projection against DPS.

DPS's step zeta is chosen per task on validation images (the first test images), never on the
images it is scored on (the last ones). PSNR and SSIM use the data range 2 (images in [-1, 1]);
``residual`` is the mean per-image norm of y - A(x) on the measurement.
"""
from __future__ import annotations

import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from _machine import machine_info, scale_parser, write_result  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from minidiff import data, device, inverse, recipes  # noqa: E402

DATA_RANGE = 2.0
ZETAS = (0.25, 0.5, 1.0, 2.0)
BASELINES = {"mri": "zero-filled", "denoise": "noisy input", "super-resolution": "nearest upsampling"}


def main(argv=None) -> int:
    p = scale_parser(__doc__, "validation and test images each (default: by scale)")
    args = p.parse_args(argv)
    scale = device.get_scale(args.scale)
    dev = device.get_device()
    n = args.samples or device.by_scale(4, 32, 128, scale=scale)
    steps = device.by_scale(10, 100, 250, scale=scale)
    run = recipes.load_or_train("fashion-ddpm", scale, device=dev, progress=False)
    model, s = run.ema.model, run.schedule
    x_test = data.fashion_mnist("test")[0]
    validation, test = x_test[:n].to(dev), x_test[-n:].to(dev)

    def measured(images, task, acceleration):
        g = torch.Generator().manual_seed(1)
        if task == "mri":
            mask = inverse.cartesian_mask(28, acceleration, generator=torch.Generator().manual_seed(0)).to(dev)
            return inverse.measure(images, mask, sigma=0.01, generator=g), (lambda x: inverse.forward_operator(x, mask)), \
                (lambda x, v: inverse.project_kspace(x, v, mask)), (lambda y: inverse.zero_filled(y, mask))
        if task == "denoise":
            noisy = images + 0.2 * torch.randn(images.shape, generator=g).to(dev)
            return noisy, (lambda x: x), None, (lambda y: y)
        return inverse.downsample(images, 2), (lambda x: inverse.downsample(x, 2)), \
            (lambda x, v: inverse.project_downsample(x, v, 2)), (lambda y: F.interpolate(y, scale_factor=2, mode="nearest"))

    def solve(images, task, acceleration, method, zeta=None):
        y, op, proj, baseline = measured(images, task, acceleration)
        start = time.perf_counter()
        gen = torch.Generator().manual_seed(0)
        if method == "baseline":
            out = baseline(y)
        elif method == "projection":
            out = inverse.projection(model, s, y, op, proj, images.shape, steps=steps, generator=gen)
        else:
            out = inverse.dps(model, s, y, op, images.shape, zeta=zeta, steps=steps, generator=gen)
        seconds = (time.perf_counter() - start) / len(images)
        residual = torch.linalg.vector_norm((y - op(out)).flatten(1), dim=1).mean().item()
        return out.clamp(-1, 1).cpu(), seconds, residual

    rows, chosen = [], {}
    tasks = [("mri", 4), ("mri", 8), ("denoise", None), ("super-resolution", 2)]
    for task, acceleration in tasks:
        sweep = {z: inverse.psnr(solve(validation, task, acceleration, "dps", z)[0], validation.cpu(),
                                 DATA_RANGE).mean().item() for z in ZETAS}
        zeta = max(sweep, key=sweep.get)
        chosen[f"{task} {acceleration or ''}".strip()] = {"zeta": zeta, "validation_psnr": {str(k): round(v, 3)
                                                                                          for k, v in sweep.items()}}
        methods = ["baseline"] + (["projection"] if task != "denoise" else []) + ["dps"]
        for method in methods:
            out, seconds, residual = solve(test, task, acceleration, method, zeta)
            name = BASELINES[task] if method == "baseline" else method + (f" (zeta {zeta:g})" if method == "dps" else "")
            rows.append({"task": task, "acceleration": acceleration, "method": name,
                         "psnr": round(inverse.psnr(out, test.cpu(), DATA_RANGE).mean().item(), 3),
                         "ssim": round(inverse.ssim(out, test.cpu(), DATA_RANGE).mean().item(), 4),
                         "data_range": DATA_RANGE, "residual": round(residual, 5),
                         "seconds_per_image": round(seconds, 4), "images": n})

    result = {"scale": scale, "device": dev.type, "steps": steps, "sampler": "ddim, eta 1", "rows": rows,
              "zeta_chosen_on_validation": chosen, "not_yet_measured": ["synthetic", "molecules", "video"],
              "machine": machine_info()}
    md = [f"Inverse problems with lesson 06's DDPM ({scale}, {dev.type}, {n} test images, {steps} steps of DDIM with "
          f"eta 1; PSNR/SSIM with data range {DATA_RANGE:g}; DPS's zeta chosen on {n} other images)", "",
          "| task | method | PSNR (dB) | SSIM | residual | s / image |", "|---|---|---|---|---|---|"]
    md += [f"| {r['task']}{' ' + str(r['acceleration']) + 'x' if r['acceleration'] else ''} | {r['method']} | "
           f"{r['psnr']:.2f} | {r['ssim']:.3f} | {r['residual']:.3f} | {r['seconds_per_image']:.3f} |" for r in rows]
    write_result("inverse", result, md, write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
