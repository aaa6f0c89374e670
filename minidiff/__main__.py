"""Command line: ``python -m minidiff demo [--out PATH]``.

``demo`` trains a small noise-prediction MLP on an embedded 2-D data set (no download), then
writes one PNG: the data, the data being noised, and samples drawn by the reverse process.
"""
from __future__ import annotations

import argparse
import os
import sys
import time


def demo(out: str, dataset: str = "swiss_roll", steps: int = 4000, seed: int = 0,
         progress: bool = True) -> str:
    """Train, sample and draw; return the path of the PNG written."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from . import data, device, loss, nets, plots, reverse, schedules, training
    from .forward import q_sample

    g = device.seed_everything(seed)
    s = schedules.linear(T=200, beta_start=1e-4, beta_end=0.05)
    model = nets.TimeMLP(dim=2, hidden=128, blocks=3)

    def next_batch(step):
        return data.toy_2d(dataset, 512, generator=g)

    def loss_fn(m, x0):
        return loss.diffusion_loss(m, s, x0, generator=g)

    t0 = time.perf_counter()
    history = training.train(model, loss_fn, next_batch, steps, lr=2e-3, progress=progress,
                             desc=f"demo: training on {dataset}")
    samples = reverse.sample(model, s, (2000, 2), sampler="ddpm", generator=g, progress=progress)
    seconds = time.perf_counter() - t0

    x0 = data.toy_2d(dataset, 2000, generator=g)
    fig, axes = plt.subplots(1, 6, figsize=(16, 3.2))
    plots.scatter(x0, ax=axes[0], title=f"data: {dataset}")
    for a, t in zip(axes[1:4], (20, 60, 199)):
        xt = q_sample(s, x0, torch.full((len(x0),), t), generator=g)
        plots.scatter(xt, ax=a, title=f"noised, t={t}", color="C7")
    axes[4].semilogy(history, lw=0.5)
    axes[4].set_title("training loss (MSE on eps)", fontsize=9)
    axes[4].set_xlabel("step")
    plots.scatter(samples, ax=axes[5], title="generated (DDPM, 200 steps)", color="C3")
    fig.suptitle(f"minidiff demo: {steps} training steps + sampling in {seconds:.0f} s", fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minidiff",
                                     description="minidiff: diffusion models explained by building them.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="train a small diffusion model on 2-D data and draw a PNG",
                       description="Train a noise-prediction MLP on an embedded 2-D data set (no "
                                   "download) and write one PNG: data, noising, samples.")
    p.add_argument("--out", default="minidiff_demo.png", help="where to write the PNG (default: %(default)s)")
    p.add_argument("--dataset", default="swiss_roll", choices=["swiss_roll", "moons", "mixture"],
                   help="which 2-D data set to learn (default: %(default)s)")
    p.add_argument("--steps", type=int, default=4000, help="training steps (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    args = parser.parse_args(argv)
    if args.command == "demo":
        if args.steps < 1:
            parser.error("--steps must be >= 1")
        path = demo(args.out, args.dataset, args.steps, args.seed, progress=not args.no_progress)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
