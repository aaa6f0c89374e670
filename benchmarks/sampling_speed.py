"""Seconds per network call of ``samplers.sample``, fp32 against the default (bf16 + channels_last on CUDA).

    python benchmarks/sampling_speed.py                    # full recipe's U-Net on CUDA, small on CPU
    python benchmarks/sampling_speed.py --scale tiny --batch 8 --steps 3

Both runs sample the same untrained U-Net of the recipe (speed does not depend on the weights)
with DDIM from the same noise, alternating for ``--rounds`` rounds; the median is reported. On a
CPU the default *is* fp32 (autocast and channels_last are for CUDA), so the ratio there only
shows the measurement's own noise. The last line printed is JSON with ``fp32_ms_per_call``,
``default_ms_per_call`` and ``speedup``; the result and the machine go to
``benchmarks/results/sampling_speed_<device>.json``.
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

from minidiff import device, recipes, samplers, schedules  # noqa: E402
from minidiff.unet import UNet  # noqa: E402
from minidiff.experiments import common  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", choices=device.SCALES, default=None, help="whose U-Net (default: full on CUDA, else small)")
    p.add_argument("--batch", type=int, default=None, help="images per call (default: device.sampling_batch_size)")
    p.add_argument("--steps", type=int, default=20, help="DDIM steps per run (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (default: %(default)s)")
    p.add_argument("--no-write", action="store_true", help="print only; do not write benchmarks/results")
    args = p.parse_args(argv)

    dev = device.get_device()
    scale = args.scale or ("full" if dev.type == "cuda" else "small")
    batch = args.batch or device.sampling_batch_size(dev)
    torch.manual_seed(0)
    model = UNet(in_channels=1, **common.unet_kwargs(recipes.config("fashion-ddpm", scale))).to(dev).eval()
    s = schedules.linear(T=1000)
    x_T = torch.randn(batch, 1, 28, 28, generator=torch.Generator().manual_seed(0)).to(dev)

    def run(**kw):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        samplers.sample(model, s, x_T.shape, "ddim", steps=args.steps, x_T=x_T, progress=False, **kw)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return 1000 * (time.perf_counter() - start) / args.steps

    run(amp=False, channels_last=False)                # warm-up
    run()
    fp32, default = [], []
    for r in range(args.rounds):
        fp32.append(run(amp=False, channels_last=False))
        default.append(run())
        print(f"round {r + 1}: fp32 {fp32[-1]:.1f} ms/call, default {default[-1]:.1f} ms/call", file=sys.stderr)
    result = {"scale": scale, "device": dev.type, "batch": batch, "steps": args.steps, "rounds": args.rounds,
              "fp32_ms_per_call": round(statistics.median(fp32), 2),
              "default_ms_per_call": round(statistics.median(default), 2),
              "speedup": round(statistics.median(fp32) / statistics.median(default), 3), "machine": machine_info()}
    if not args.no_write:
        out = ROOT / "benchmarks" / "results" / f"sampling_speed_{dev.type}.json"
        out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("scale", "device", "batch", "fp32_ms_per_call", "default_ms_per_call",
                                             "speedup")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
