"""Command line.

    python -m minidiff demo [--out PATH]
    python -m minidiff train --dataset fashion-mnist --scale small --steps N --checkpoint PATH [--seed S] [--compile]
                             [--model pixel|latent]
    torchrun --standalone --nproc_per_node=4 -m minidiff train ...      (the same run on 4 processes)
    python -m minidiff sample --checkpoint PATH --sampler ddim --steps 50 --out grid.png

``demo`` trains a small noise-prediction MLP on an embedded 2-D data set (no download), then
writes one PNG: the data, the data being noised, and samples drawn by the reverse process.
``train`` trains (or resumes) the image DDPM, in pixels or (``--model latent``) in the latent
space of the recipe's autoencoder; ``sample`` draws a grid from either kind of checkpoint. Started by
torchrun, ``train`` runs on every process with DistributedDataParallel (``distributed.init_distributed``:
NCCL on GPUs, gloo on CPUs), each process taking its share of the same global batch; rank 0 writes
the checkpoint and prints.
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

    from . import data, device, loss, nets, plots, samplers, schedules, training
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
    samples = samplers.sample(model, s, (2000, 2), sampler="ddpm", generator=g, progress=progress)
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


def sample_grid(args) -> int:
    import matplotlib
    matplotlib.use("Agg")
    import os

    import torch

    from . import plots, samplers
    from .device import get_device
    from .experiments.generating_images import model_from_checkpoint
    from .experiments.latent_diffusion import latent_space_from_checkpoint

    if not os.path.exists(args.checkpoint):
        print(f"error: no checkpoint at {args.checkpoint}; make one with 'python -m minidiff train'", file=sys.stderr)
        return 2
    dev = get_device()
    try:
        model, s, cfg = model_from_checkpoint(args.checkpoint, use_ema=not args.raw, device=dev)
        space = latent_space_from_checkpoint(args.checkpoint, device=dev)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    g = torch.Generator().manual_seed(args.seed)
    size = cfg.get("image_size", 28)
    shape = (args.n, *(space.latent_shape((1, size, size)) if space else (1, size, size)))
    x = samplers.sample(model, s, shape, sampler=args.sampler, steps=args.steps, generator=g,
                       prediction=cfg.get("prediction", "eps"), clip_x0=None if space else 1.0, device=dev,
                       progress=not args.no_progress)
    if space is not None:                     # latents -> images through the stored autoencoder
        with torch.no_grad():
            x = space.decode(x).clamp(-1, 1)
    fig = plots.show_images(x.cpu(), nrow=8, title=f"{args.sampler}, {args.steps} steps ({cfg['scale']} model)")
    folder = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(folder, exist_ok=True)
    fig.savefig(args.out, dpi=100, bbox_inches="tight")
    print(f"wrote {args.out}")
    return 0


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
    p = sub.add_parser("train", help="train (or resume) a DDPM on Fashion-MNIST",
                       description="Train the U-Net DDPM of a run scale on Fashion-MNIST. If --checkpoint "
                                   "exists, training resumes from it and continues exactly.")
    p.add_argument("--dataset", default="fashion-mnist", choices=["fashion-mnist"], help="the image data set")
    p.add_argument("--scale", choices=["tiny", "small", "full"], default=None,
                   help="model size and defaults (default: $MINIDIFF_SCALE, else full with CUDA, small without)")
    p.add_argument("--steps", type=int, default=None, help="total training steps (default: the scale's)")
    p.add_argument("--checkpoint", required=True, help="checkpoint file: resumed if it exists, written atomically")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--checkpoint-every", type=int, default=500, help="steps between checkpoints (default: %(default)s)")
    p.add_argument("--prediction", choices=["eps", "x0", "v"], default=None,
                   help="what the U-Net learns to predict: the noise eps, the image x0 or v (default: the scale's, "
                        "eps); 'sample' reads it from the checkpoint")
    p.add_argument("--model", choices=["pixel", "latent"], default="pixel",
                   help="diffuse the pixels, or the latents of the scale's autoencoder (trained first if the "
                        "model cache lacks it; the checkpoint stores it) (default: %(default)s)")
    p.add_argument("--compile", action="store_true",
                   help="train a torch.compile'd model (faster on a GPU after a minute or so of compiling; "
                        "the default at full scale on CUDA)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p = sub.add_parser("sample", help="draw a grid of images from a checkpoint",
                       description="Load a checkpoint written by 'train' and sample a grid of images.")
    p.add_argument("--checkpoint", required=True, help="checkpoint written by 'train'")
    p.add_argument("--sampler", default="ddim", choices=["ddpm", "ddim", "dpm++2m", "sde-dpm++2m"],
                   help="sampler (default: %(default)s)")
    p.add_argument("--steps", type=int, default=50, help="sampling steps (default: %(default)s)")
    p.add_argument("--n", type=int, default=64, help="number of images (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--raw", action="store_true", help="use the raw weights instead of the EMA weights")
    p.add_argument("--out", default="grid.png", help="where to write the PNG (default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    if getattr(args, "steps", 1) is not None and getattr(args, "steps", 1) < 1:
        parser.error("--steps must be >= 1")
    if args.command == "train":
        from . import recipes
        from .distributed import init_distributed
        rank, world_size = init_distributed()           # under torchrun: join the group; else (0, 1)
        overrides = {k: v for k, v in (("steps", args.steps), ("prediction", args.prediction)) if v is not None}
        try:
            recipe = {"pixel": "fashion-ddpm", "latent": "fashion-latent-ddpm"}[args.model]
            history = recipes.load_or_train(recipe, args.scale, checkpoint=args.checkpoint, seed=args.seed,
                                            progress=not args.no_progress, compile=args.compile or None,
                                            checkpoint_every=args.checkpoint_every,
                                            **overrides).history
        except ValueError as e:          # e.g. resuming a checkpoint with other settings
            print(f"error: {e}", file=sys.stderr)
            return 2
        if rank == 0:
            print(f"trained to step {len(history)}; checkpoint {args.checkpoint}; last loss {history[-1]:.4f}"
                  + (f" ({world_size} processes)" if world_size > 1 else ""))
        return 0
    if args.command == "sample":
        return sample_grid(args)
    if args.command == "demo":
        path = demo(args.out, args.dataset, args.steps, args.seed, progress=not args.no_progress)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
