"""How much of the raw training step does ``training.train`` keep?

    python benchmarks/train_loop.py                  # the small recipe on CPU, the full one on CUDA
    python benchmarks/train_loop.py --scale tiny --steps 5 --rounds 1     # a quick check

Side by side in one run, on the same model, batch size and data (Fashion-MNIST resident on the
device), it times

* the **raw step**: draw a batch, forward, ``loss.diffusion_loss``, backward, AdamW step (under bf16
  autocast with channels_last on CUDA) and nothing else;
* the **loop**: ``training.train`` doing the same steps with everything a recipe asks for (gradient
  clipping, the EMA, the loss log, the progress bar switched off),

in alternating rounds, and reports images per second of each (the median round) and their ratio
``loop_fraction``. The last line printed is JSON; the result is written to
``benchmarks/results/train_loop_<device>.json`` with the machine it ran on.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
import time

import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _machine import machine_info  # noqa: E402

from minidiff import data, device, loss, recipes, schedules, training  # noqa: E402
from minidiff.unet import UNet  # noqa: E402
from minidiff.experiments import common  # noqa: E402


def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", choices=device.SCALES, default=None,
                   help="recipe to measure (default: full on CUDA, small elsewhere)")
    p.add_argument("--steps", type=int, default=None, help="steps per round (default: 20 on CPU, 200 on CUDA)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds of each (default: %(default)s)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model for both")
    p.add_argument("--no-write", action="store_true", help="print only; do not write benchmarks/results")
    args = p.parse_args(argv)

    dev = device.get_device()
    cuda = dev.type == "cuda"
    scale = args.scale or ("full" if cuda else "small")
    steps = args.steps or (200 if cuda else 20)
    recipe = recipes.config("fashion-ddpm", scale)
    bs = recipe["batch_size"]

    torch.manual_seed(0)
    g = torch.Generator(dev).manual_seed(0)
    images = data.fashion_mnist("train")[0].to(dev)
    s = schedules.linear(T=1000)
    model = UNet(in_channels=1, **common.unet_kwargs(recipe)).to(dev)
    if cuda:
        model.to(memory_format=torch.channels_last)
    ema = training.EMA(model, recipe["ema_decay"], warmup=recipe["ema_warmup"])
    opt = torch.optim.AdamW(model.parameters(), lr=recipe["lr"])
    fwd = torch.compile(model) if args.compile else model

    def next_batch(step):
        return images[torch.randint(0, len(images), (bs,), generator=g, device=dev)]

    def loss_fn(m, x0):
        return loss.diffusion_loss(m, s, x0, generator=g)

    def raw(n):
        model.train()
        for step in range(n):
            x0 = next_batch(step)
            if cuda:
                x0 = x0.contiguous(memory_format=torch.channels_last)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cuda):
                value = loss_fn(fwd, x0)
            opt.zero_grad(set_to_none=True)
            value.backward()
            opt.step()

    def loop(n):
        training.train(model, loss_fn, next_batch, n, optimizer=opt, ema=ema, compile=args.compile, progress=False)

    def timed(fn, n):
        _sync(dev)
        start = time.perf_counter()
        fn(n)
        _sync(dev)
        return n * bs / (time.perf_counter() - start)

    print(f"{scale} recipe on {dev.type}: batch {bs}, {sum(p.numel() for p in model.parameters()):,} parameters, "
          f"{steps} steps x {args.rounds} rounds", file=sys.stderr)
    raw(max(2, steps // 10))                      # warm-up (and compilation) outside the clock
    loop(max(2, steps // 10))
    raws, loops = [], []
    for r in range(args.rounds):
        raws.append(timed(raw, steps))
        loops.append(timed(loop, steps))
        print(f"round {r + 1}: raw {raws[-1]:.1f} img/s, loop {loops[-1]:.1f} img/s", file=sys.stderr)
    raw_img_s, loop_img_s = statistics.median(raws), statistics.median(loops)
    result = {"scale": scale, "device": dev.type, "batch_size": bs, "steps_per_round": steps,
              "rounds": args.rounds, "compile": args.compile, "raw_rounds": raws, "loop_rounds": loops,
              "raw_img_s": round(raw_img_s, 2), "loop_img_s": round(loop_img_s, 2),
              "loop_fraction": round(loop_img_s / raw_img_s, 4), "machine": machine_info()}
    if not args.no_write:
        out = ROOT / "benchmarks" / "results" / f"train_loop_{dev.type}.json"
        out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("scale", "device", "raw_img_s", "loop_img_s", "loop_fraction")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
