"""Training throughput of the minidiff U-Net against diffusers' UNet2DModel of about the same size.

    python benchmarks/unet_throughput.py [--device cpu|cuda] [--threads 2] [--repeats 20]

One training step = forward, noise-prediction MSE, backward, AdamW step, on a batch of 64
one-channel 28x28 images with random timesteps. Warm-up steps are excluded; the figure is the
median over repeated steps. Both models run side by side in one process. The last line printed
is JSON with minidiff_img_s, diffusers_img_s, ratio, minidiff_params, diffusers_params; the
same JSON (plus the machine) goes to benchmarks/results/unet_throughput_<device>.json.
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

from minidiff.unet import UNet  # noqa: E402


def minidiff_unet():
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
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    bf16 = device.type == "cuda"
    torch.manual_seed(0)
    ours, theirs = minidiff_unet().to(device), diffusers_unet().to(device)
    n_ours = sum(q.numel() for q in ours.parameters())
    n_theirs = sum(q.numel() for q in theirs.parameters())
    if not 0.8 <= n_ours / n_theirs <= 1.2:
        print(f"warning: parameter counts differ by more than 20%: {n_ours} vs {n_theirs}", file=sys.stderr)
    # interleave the two so that machine noise hits both alike
    t_ours, t_theirs = [], []
    for _ in range(2):
        t_ours.append(step_times(ours, lambda m, x, t: m(x, t), device, args.batch, args.warmup, args.repeats, bf16))
        t_theirs.append(step_times(theirs, lambda m, x, t: m(x, t).sample, device, args.batch, args.warmup,
                                   args.repeats, bf16))
    ours_img_s = args.batch / min(t_ours)
    theirs_img_s = args.batch / min(t_theirs)
    result = {"minidiff_img_s": round(ours_img_s, 1), "diffusers_img_s": round(theirs_img_s, 1),
              "ratio": round(ours_img_s / theirs_img_s, 3), "minidiff_params": n_ours, "diffusers_params": n_theirs}
    out = pathlib.Path(__file__).resolve().parent / "results" / f"unet_throughput_{args.device}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({**result, "device": args.device, "threads": args.threads, "batch": args.batch,
                               "bf16": bf16, "machine": machine_info()}, indent=2) + "\n")
    print(f"minidiff U-Net : {ours_img_s:8.1f} images/s ({n_ours:,} parameters)")
    print(f"diffusers U-Net: {theirs_img_s:8.1f} images/s ({n_theirs:,} parameters)")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
