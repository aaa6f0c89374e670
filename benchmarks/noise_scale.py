"""The gradient noise scale of lesson 06's Fashion-MNIST DDPM, at initialisation and trained: the
batch size past which a larger batch stops paying per image (``costs.gradient_noise_scale``,
McCandlish et al. 2018). Read with the batch sweep of ``full_scale.py``: a recipe's batch well above
the trained model's B_simple spends images averaging away noise that a step no longer has.

    python benchmarks/noise_scale.py [--scale small] [--batches 16] [--big 512] [--small 32] [--no-write]

Gradients are of the recipe's loss (DDPM's, t and eps drawn per example) in train mode, on batches of
training images drawn from a fixed seed; the same batches for both weights. Writes
benchmarks/results/noise_scale_<device>_<scale>.json and .md.
"""
from __future__ import annotations

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from _machine import machine_info, parse_scale_run, scale_parser, write_result  # noqa: E402

import torch  # noqa: E402

from minidiff import costs, data, device, loss, recipes, schedules  # noqa: E402
from minidiff.forward import randn_like  # noqa: E402


def main(argv=None) -> int:
    p = scale_parser(__doc__, "unused here")
    p.add_argument("--batches", type=int, default=None, help="big batches averaged (default: 2 at tiny, else 16)")
    p.add_argument("--big", type=int, default=None, help="rows of a big batch (default: 64 at tiny, else 512)")
    p.add_argument("--small", type=int, default=None, help="rows of a small chunk (default: 16 at tiny, else 32)")
    args, scale, dev, _ = parse_scale_run(p, argv, (1, 1, 1))
    batches = args.batches or device.by_scale(2, 16, 16, scale=scale)
    big, small = args.big or device.by_scale(64, 512, 512, scale=scale), args.small or device.by_scale(16, 32, 32, scale=scale)
    cfg = recipes.config("fashion-ddpm", scale)
    s = schedules.make(cfg["schedule"], T=cfg["T"])
    images = data.fashion_mnist("train")[0]
    g = torch.Generator().manual_seed(1)
    draws = []
    for _ in range(batches):
        x0 = images[torch.randint(0, len(images), (big,), generator=g)]
        draws.append(tuple(b.to(dev) for b in (x0, loss.draw_timesteps(s.T, big, g, torch.device("cpu")), randn_like(x0, g))))

    def loss_fn(m, batch):
        x0, t, eps = batch
        return loss.diffusion_loss(m, s, x0, t, eps, prediction=cfg["prediction"])

    initial = recipes.load_or_train("fashion-ddpm", scale, device=dev, steps=0, progress=False)   # the recipe's init
    run = recipes.load_or_train("fashion-ddpm", scale, device=dev)      # from the cache, or trained now
    weights = [("initial", initial.model), (f"trained ({cfg['steps']} steps at batch {cfg['batch_size']})", run.model)]
    rows = []
    for name, model in weights:
        model.train()
        out = costs.gradient_noise_scale(model, loss_fn, draws, small)
        rows.append({"weights": name, **{k: round(v, 6) for k, v in out.items()}})
    result = {"scale": scale, "device": dev.type, "batches": batches, "big": big, "small": small,
              "recipe_batch": cfg["batch_size"], "rows": rows, "machine": machine_info()}
    md = [f"Gradient noise scale of the Fashion-MNIST DDPM ({scale}; {batches} batches of {big}, chunks of {small}; "
          f"the recipe trains at batch {cfg['batch_size']})", "",
          "| weights | B_simple | tr(Σ) | \\|G\\|² |", "|---|---|---|---|"]
    md += [f"| {r['weights']} | {r['b_simple']:.3g} | {r['trace_sigma']:.4g} | {r['grad_norm_sq']:.4g} |" for r in rows]
    write_result(f"noise_scale_{dev.type}_{scale}", result, md, write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
