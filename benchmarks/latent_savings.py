"""What latent diffusion saves, measured: the pixel DDPM of lesson 06 against the latent DDPM of
lesson 08 (the same U-Net on the autoencoder's 4x7x7 latents).

    python benchmarks/latent_savings.py [--scale small] [--samples N] [--sampling-steps 1000] [--no-write]

Trains (or takes from the model cache) the scale's pixel DDPM, autoencoder, latent DDPM and
feature classifier, and writes benchmarks/results/latent.json and latent.md:

* ``rows``, one per model ("pixel", "latent"): ``params``; ``train_img_s`` (training images per
  second, batch 64, data already encoded for the latent model); ``sample_img_s`` (DDPM, 1000
  steps, decoder included; the pixel model's samples are lesson 06's, from ``recipes.load_or_sample``,
  timed when they were drawn); ``peak_mem_mb`` (on CUDA the allocator's peak over training steps;
  on a CPU the peak resident memory of a fresh process that builds the model and takes two
  training steps, Python and torch included); ``fid`` and ``samples``;
* ``rfid`` and ``psnr`` of the autoencoder's reconstructions of held-out images, and the
  ``latent_scale``;
* ``resolution_rows`` at 28, 56 and 112 pixels (Fashion-MNIST upsampled): seconds per training
  step (batch 16) and activation memory of the same U-Net on pixels and on f = 4 latents;
* the seconds each model took to train, and the machine.

Lesson 08 makes the same measurements in front of the learner.
"""
from __future__ import annotations

import argparse
import copy
import pathlib
import resource
import subprocess
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from _machine import machine_info, write_result  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from minidiff import costs, data, device, evaluation, loss, metrics, recipes, schedules  # noqa: E402
from minidiff.unet import UNet  # noqa: E402
from minidiff.experiments import common  # noqa: E402

RESOLUTIONS = (28, 56, 112)


def child_peak_memory(model: str, scale: str) -> float:
    """Run ``--child`` in a fresh process: build the scale's U-Net for pixels or latents, take two
    training steps on a batch of 64; return that process's peak resident memory in MB."""
    out = subprocess.run([sys.executable, __file__, "--child", model, "--scale", scale], capture_output=True,
                         text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def child(model: str, scale: str) -> None:
    cfg = recipes.config("fashion-ddpm", scale)
    shape = (1, 28, 28) if model == "pixel" else (4, 7, 7)
    torch.manual_seed(0)
    net = UNet(in_channels=shape[0], **common.unet_kwargs(cfg))
    s = schedules.linear(T=1000)
    costs.training_speed(net, lambda m, x: loss.diffusion_loss(m, s, x), torch.randn(64, *shape), steps=1,
                         tries=1)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)       # Linux: kilobytes


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", choices=device.SCALES, default=None)
    p.add_argument("--samples", type=int, default=None, help="images per FID (default: by scale, as lesson 08)")
    p.add_argument("--sampling-steps", type=int, default=1000, help="DDPM steps per sample (default: %(default)s)")
    p.add_argument("--no-write", action="store_true", help="print the JSON, write no file (for tests)")
    p.add_argument("--child", choices=["pixel", "latent"], default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    scale = device.get_scale(args.scale)
    if args.child:
        child(args.child, scale)
        return 0
    dev = device.get_device()
    n = args.samples or device.by_scale(64, 200, 5000, scale=scale)
    batch = device.sampling_batch_size(dev)
    pixel = recipes.load_or_train("fashion-ddpm", scale, device=dev)
    ae_run = recipes.load_or_train("fashion-autoencoder", scale, device=dev)
    latent = recipes.load_or_train("fashion-latent-ddpm", scale, device=dev)
    evaluator = evaluation.fashion_mnist_evaluator(recipes.load_or_train("fashion-classifier", scale, device=dev),
                                                   n_real=n)
    x_test = data.fashion_mnist("test")[0]
    held_out = x_test[-n:].to(dev)
    with torch.no_grad():
        recon = torch.cat([ae_run.model.decode(ae_run.model.encode(b).mode()) for b in held_out.split(500)])
    recon = recon.clamp(-1, 1)

    g = torch.Generator(dev).manual_seed(0)
    x64 = data.fashion_mnist("train")[0][:64].to(dev)
    with torch.no_grad():
        batches = {"pixel": x64, "latent": latent.space.encode(x64, generator=g)}
    rows = []
    for name, run in (("pixel", pixel), ("latent", latent)):
        def loss_fn(m, x):
            return loss.diffusion_loss(m, run.schedule, x, generator=g)
        train_img_s, cuda_peak = costs.training_speed(copy.deepcopy(run.model).train(), loss_fn, batches[name])
        if name == "pixel":         # lesson 06's samples, from the cache when it ran: the time is the one measured then
            drawn = recipes.load_or_sample("fashion-ddpm", scale, n=n, steps=args.sampling_steps, batch_size=batch,
                                           seed=0, device=dev, progress=not args.no_write)
            images, sample_s = drawn.images, drawn.seconds_per_image
        else:
            device.synchronize(dev)
            start = time.perf_counter()
            z, _ = evaluation.draw_samples(run.ema.model, run.schedule, latent.space.latent_shape((1, 28, 28)), n,
                                           "ddpm", args.sampling_steps, batch_size=batch, seed=0, device=dev,
                                           progress=not args.no_write, clip_x0=None)
            with torch.no_grad():
                images = torch.cat([latent.space.decode(b.to(dev)) for b in z.split(500)]).cpu()
            device.synchronize(dev)
            sample_s = (time.perf_counter() - start) / n
        rows.append({"model": name, "params": sum(q.numel() for q in run.model.parameters()),
                     "train_img_s": round(train_img_s, 2), "sample_img_s": round(1 / sample_s, 3),
                     "peak_mem_mb": round(cuda_peak if cuda_peak is not None else child_peak_memory(name, scale), 1),
                     "fid": round(evaluation.evaluate_samples(evaluator, images.clamp(-1, 1))["fid"], 3),
                     "samples": n, "train_seconds": round(run.seconds + (ae_run.seconds if name == "latent" else 0), 1)})
        if not args.no_write:
            print(rows[-1])

    resolution_rows = []
    for size in RESOLUTIONS:
        xr = F.interpolate(x64[:16], size=(size, size), mode="bilinear", align_corners=False)
        zr = torch.randn(16, 4, size // 4, size // 4, device=dev)
        row = {"resolution": size}
        for name, x_in in (("pixel", xr), ("latent", zr)):
            torch.manual_seed(0)
            net = UNet(in_channels=x_in.shape[1], **common.unet_kwargs(pixel.config)).to(dev)
            s = schedules.linear(T=1000)
            per_s, _ = costs.training_speed(net, lambda m, x: loss.diffusion_loss(m, s, x, generator=g), x_in,
                                            steps=2, tries=2)
            row[f"{name}_step_s"] = round(len(x_in) / per_s, 4)
            tt = torch.full((len(x_in),), 500, device=dev)
            row[f"{name}_mem_mb"] = round(costs.activation_bytes(net, x_in, tt) / 2**20, 2)
        resolution_rows.append(row)
        if not args.no_write:
            print(row)

    result = {"scale": scale, "device": dev.type, "rows": rows, "rfid": round(
        evaluation.evaluate_samples(evaluator, recon.cpu())["fid"], 3), "psnr": round(metrics.psnr(recon, held_out), 3),
        "latent_scale": round(ae_run.latent_scale, 5), "kl_weight": ae_run.config["kl_weight"],
        "real_floor": round(evaluator["floor"], 3), "resolution_rows": resolution_rows,
        "sampling_steps": args.sampling_steps, "machine": machine_info()}
    pix, lat = rows
    lines = [f"Pixel against latent DDPM ({scale}, {dev.type}, {n} samples per FID, floor {result['real_floor']:.1f}; "
             f"autoencoder rFID {result['rfid']:.1f}, PSNR {result['psnr']:.1f} dB, latent scale {result['latent_scale']:.4f})",
             "", "| model | params | train img/s | sample img/s | peak memory MB | FID | training s |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['params']:,} | {r['train_img_s']:.1f} | {r['sample_img_s']:.2f} | "
              f"{r['peak_mem_mb']:.0f} | {r['fid']:.1f} | {r['train_seconds']:.0f} |" for r in rows]
    lines += ["", f"latent / pixel: {lat['train_img_s'] / pix['train_img_s']:.1f}x training, "
              f"{lat['sample_img_s'] / pix['sample_img_s']:.1f}x sampling, FID ratio {lat['fid'] / pix['fid']:.2f}", "",
              "| resolution | pixel s/step | latent s/step | ratio | pixel act. MB | latent act. MB | ratio |",
              "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['resolution']} | {r['pixel_step_s']:.3f} | {r['latent_step_s']:.3f} | "
              f"{r['pixel_step_s'] / r['latent_step_s']:.1f}x | {r['pixel_mem_mb']:.1f} | {r['latent_mem_mb']:.2f} | "
              f"{r['pixel_mem_mb'] / r['latent_mem_mb']:.1f}x |" for r in resolution_rows]
    write_result("latent", result, lines, write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
