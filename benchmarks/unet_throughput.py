"""Training throughput of the minidiff U-Net against diffusers' UNet2DModel of about the same size.

    python benchmarks/unet_throughput.py [--device cpu|cuda] [--threads 2] [--repeats 15] [--rounds 3]

One training step = forward, noise-prediction MSE, backward, AdamW step, on a batch of 64
one-channel 28x28 images with random timesteps. Warm-up steps are excluded; a round times each
model's median step; the models take turns for --rounds rounds (so that a noisy neighbour on a
shared machine slows both alike) and the figure is the median over rounds.

Three models, all in one process:
- minidiff's U-Net in the ``small`` recipe's layout (16, 32, 64, 64 channels: most parameters at
  7x7 and 4x4);
- diffusers' UNet2DModel in the common (32, 64, 64) layout, within 20% of its parameter count;
- minidiff's U-Net in that same (32, 64, 64) layout, with exactly diffusers' parameter count.
The first pair is the headline (``ratio``: what the layout choice buys at equal size); the
second pair (``same_layout_ratio``) compares the implementations alone. The last line printed is
JSON with minidiff_img_s, diffusers_img_s, ratio, minidiff_params, diffusers_params and
same_layout_img_s, same_layout_ratio; the same JSON (plus the machine) goes to
benchmarks/results/unet_throughput_<device>.json.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
import time

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from _machine import machine_info  # noqa: E402

from minidiff import recipes  # noqa: E402
from minidiff.unet import UNet  # noqa: E402
from minidiff.experiments import common  # noqa: E402


def minidiff_unet():
    """The U-Net of the ``small`` Fashion-MNIST recipe (lessons 06-07)."""
    return UNet(in_channels=1, **common.unet_kwargs(recipes.config("fashion-ddpm", "small")))


def minidiff_unet_same_layout():
    """minidiff's U-Net laid out exactly like ``diffusers_unet`` (same parameter count)."""
    return UNet(in_channels=1, base_channels=32, channel_mults=(1, 2, 2), attention_levels=(2,))


def diffusers_unet():
    from diffusers import UNet2DModel
    return UNet2DModel(sample_size=28, in_channels=1, out_channels=1, layers_per_block=1,
                       block_out_channels=(32, 64, 64), norm_num_groups=8,
                       down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"), attention_head_dim=16)


def step_times(model, call, device, batch, warmup, repeats, bf16):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 1, 28, 28, generator=g).to(device)
    noise = torch.randn(batch, 1, 28, 28, generator=g).to(device)
    t = torch.randint(0, 1000, (batch,), generator=g).to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    times = []
    for k in range(warmup + repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = torch.nn.functional.mse_loss(call(model, x, t).float(), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if k >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--threads", type=int, default=2, help="CPU threads (default: %(default)s)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    bf16 = device.type == "cuda"
    torch.manual_seed(0)
    models = {"minidiff": (minidiff_unet().to(device), lambda m, x, t: m(x, t)),
              "diffusers": (diffusers_unet().to(device), lambda m, x, t: m(x, t).sample),
              "same_layout": (minidiff_unet_same_layout().to(device), lambda m, x, t: m(x, t))}
    params = {name: sum(q.numel() for q in m.parameters()) for name, (m, _) in models.items()}
    if not 0.8 <= params["minidiff"] / params["diffusers"] <= 1.2:
        print(f"warning: parameter counts differ by more than 20%: {params}", file=sys.stderr)
    times = {name: [] for name in models}
    for _ in range(args.rounds):          # take turns, so that machine noise hits every model alike
        for name, (model, call) in models.items():
            times[name].append(step_times(model, call, device, args.batch, args.warmup, args.repeats, bf16))
    img_s = {name: args.batch / statistics.median(ts) for name, ts in times.items()}
    result = {"minidiff_img_s": round(img_s["minidiff"], 1), "diffusers_img_s": round(img_s["diffusers"], 1),
              "ratio": round(img_s["minidiff"] / img_s["diffusers"], 3), "minidiff_params": params["minidiff"],
              "diffusers_params": params["diffusers"], "same_layout_img_s": round(img_s["same_layout"], 1),
              "same_layout_ratio": round(img_s["same_layout"] / img_s["diffusers"], 3)}
    out = pathlib.Path(__file__).resolve().parent / "results" / f"unet_throughput_{args.device}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({**result, "device": args.device, "threads": args.threads, "batch": args.batch,
                               "rounds": args.rounds, "bf16": bf16, "machine": machine_info()}, indent=2) + "\n")
    for name, label in [("minidiff", "minidiff U-Net, small layout"), ("diffusers", "diffusers U-Net, (32, 64, 64)"),
                        ("same_layout", "minidiff U-Net, (32, 64, 64)")]:
        print(f"{label:<31}: {img_s[name]:7.1f} images/s ({params[name]:,} parameters)")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
