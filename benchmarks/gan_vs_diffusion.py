"""GANs versus diffusion, measured: the six rows of the usual comparison table (lesson 10).

    python benchmarks/gan_vs_diffusion.py [--scale small] [--samples N] [--no-write]

Trains (or takes from the model cache) the scale's DCGAN, conditional DCGAN, DDPM, class-conditional
DDPM, feature classifier and the stability grid (``gans_vs_diffusion.stability_grid``: 3 learning rates x 3
seeds per model, and the 3 seeds with each tuned optimiser setting back at its library default:
``gans_vs_diffusion.default_runs``), and writes
benchmarks/results/gan_vs_diffusion.json and .md:

* ``rows``: one per criterion (``criterion``, ``seed_gan``, ``seed_diffusion``, ``measured_gan``,
  ``measured_diffusion``, ``unit``, ``holds``: whether the measurement orders the models as the
  table does);
* ``runs``: the stability grid (model, setting, lr, seed, steps, FID, collapsed, diverged), the
  settings each recipe needed to tune (``gans_vs_diffusion.settings_tuned``), the final models' scores and
  training times, the guidance sweep of the conditional DDPM, speeds and lines of code;
* the machine.

Every FID uses the same feature classifier, the same ``samples`` test images and as many samples.
Lesson 10 makes the same measurements in front of the learner, with the same verdicts: a
difference in FID smaller than the seed spread of the grid does not count.
"""
from __future__ import annotations

import inspect
import pathlib
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from _machine import machine_info, parse_scale_run, scale_parser, write_result  # noqa: E402

import torch  # noqa: E402

from minidiff import data, device, evaluation, gan, loss, recipes, samplers, training, unet  # noqa: E402
from minidiff.experiments import gans_vs_diffusion  # noqa: E402

TABLE = {"training stability": ("Medium", "High"), "image quality": ("High", "Very High"),
         "diversity": ("Medium", "High"), "prompt control": ("Limited", "Excellent"),
         "training complexity": ("High", "Medium"), "generation speed": ("Fast", "Slower")}
GUIDANCE = (0.0, 1.0, 2.0, 3.0, 5.0)


def main(argv=None) -> int:
    p = scale_parser(__doc__, "samples per FID (default: by scale, as lesson 10)")
    args, scale, dev, n = parse_scale_run(p, argv, (64, 200, 5000))
    batch = device.sampling_batch_size(dev)
    fast = ("sde-dpm++2m", device.by_scale(5, 10, 10, scale=scale))
    quiet = {"device": dev, "progress": False}
    evaluator = evaluation.fashion_mnist_evaluator(recipes.load_or_train("fashion-classifier", scale, **quiet), n_real=n)
    judge, real = evaluator["classifier"], data.fashion_mnist("test")[0][:n]

    def scored(images):
        return {**evaluation.evaluate_samples(evaluator, images), **gan.collapse_stats(images, judge, 10, reference=real)}

    def fast_samples(model, schedule):
        return evaluation.draw_samples(model, schedule, (1, 28, 28), n, fast[0], fast[1], batch_size=batch, seed=0,
                                       device=dev, progress=False)

    grid = []
    for name in ("fashion-gan", "fashion-ddpm"):
        plans = [("recipe", o) for o in gans_vs_diffusion.stability_grid(name, scale)]
        plans += [(f"default {k}", o) for k, runs in gans_vs_diffusion.default_runs(name, scale).items() for o in runs]
        for setting, o in plans:
            row = {"model": name, "setting": setting, **{k: o[k] for k in ("lr", "seed", "steps")},
                   "beta1": o.get("beta1"), "diverged": False}
            try:
                run = recipes.load_or_train(name, scale, **quiet, **o)
            except FloatingPointError:
                grid.append({**row, "diverged": True, "collapsed": False, "failed": True, "fid": None})
                continue
            images = (run.model.sample(n, generator=torch.Generator().manual_seed(0)).cpu() if name == "fashion-gan"
                      else fast_samples(run.model, run.schedule)[0])
            s = scored(images)
            grid.append({**row, "collapsed": s["collapsed"], "failed": s["collapsed"], "fid": round(s["fid"], 3),
                         "entropy": round(s["entropy"], 4), "seconds": round(run.seconds, 1)})
    models = ("fashion-gan", "fashion-ddpm")
    recipe_rows = {m: [r for r in grid if r["model"] == m and r["setting"] == "recipe"] for m in models}
    failed = {m: sum(r["failed"] for r in rows) / len(rows) for m, rows in recipe_rows.items()}
    seed_fids = {m: [r["fid"] for r in rows if r["lr"] == recipes.config(m, scale)["lr"] and not r["failed"]]
                 for m, rows in recipe_rows.items()}
    noise = max([statistics.pstdev(f) / statistics.mean(f) for f in seed_fids.values() if len(f) > 1] + [0.0])
    tuned = {m: gans_vs_diffusion.settings_tuned(recipes.config(m, scale), gans_vs_diffusion.LIBRARY_DEFAULTS,
                                                 [r for r in grid if r["model"] == m], noise=noise) for m in models}
    for t in tuned.values():
        t["moved"] = {k: list(v) for k, v in t["moved"].items()}

    gan_run = recipes.load_or_train("fashion-gan", scale, **quiet)
    ddpm = recipes.load_or_train("fashion-ddpm", scale, **quiet)
    ddpm_drawn = recipes.load_or_sample("fashion-ddpm", scale, n=n, steps=device.by_scale(100, 1000, 1000, scale=scale),
                                        batch_size=batch, seed=0, **quiet)
    gan_images = gan_run.model.sample(n, generator=torch.Generator().manual_seed(0)).cpu()
    final = {"gan": scored(gan_images), "diffusion": scored(ddpm_drawn.images)}

    asked = torch.arange(n) % 10
    cgan = recipes.load_or_train("fashion-cond-gan", scale, **quiet)
    cgan_images = cgan.model.sample(n, asked, generator=torch.Generator().manual_seed(0)).cpu()
    control_gan = {"fid": evaluation.evaluate_samples(evaluator, cgan_images)["fid"],
                   "accuracy": evaluation.accuracy(judge, cgan_images, asked)}
    cddpm = recipes.load_or_train("fashion-cond-ddpm", scale, **quiet)
    sweep = []
    for s in GUIDANCE:
        imgs, _ = evaluation.draw_guided(cddpm, asked, s, (1, 28, 28), sampler=fast[0], steps=fast[1], batch_size=batch,
                                         device=dev)
        sweep.append({"scale": s, "fid": round(evaluation.evaluate_samples(evaluator, imgs)["fid"], 3),
                      "accuracy": round(evaluation.accuracy(judge, imgs, asked), 4)})
    matched = min(sweep, key=lambda r: abs(r["fid"] - control_gan["fid"]))

    def source_lines(*objs):
        return sum(len(inspect.getsource(o).splitlines()) for o in objs)

    lines_of = {"gan": source_lines(gan.Generator, gan.Discriminator, gan.GAN, gan.discriminator_loss,
                                    gan.generator_loss, gan.gan_step),
                "diffusion": source_lines(unet.ResBlock, unet.Attention, unet.UNet, loss.diffusion_loss,
                                          training.loss_step, samplers.sample)}
    with torch.no_grad():
        z = torch.randn(n, gan_run.model.z_dim, device=dev)
        gan_run.model.generator(z[:8])
        device.synchronize(dev)
        start = time.perf_counter()
        for zb in z.split(batch):
            gan_run.model.generator(zb)
        device.synchronize(dev)
    gan_img_s = n / (time.perf_counter() - start)
    fast_img_s = 1 / fast_samples(ddpm.ema.model, ddpm.schedule)[1]

    measured = {
        "training stability": (failed["fashion-gan"], failed["fashion-ddpm"], "share of grid runs that failed",
                               failed["fashion-gan"] > failed["fashion-ddpm"]),
        "image quality": (final["gan"]["fid"], final["diffusion"]["fid"], f"FID, {n} samples",
                          final["gan"]["fid"] - final["diffusion"]["fid"] > noise * final["diffusion"]["fid"]),
        "diversity": (final["gan"]["recall"], final["diffusion"]["recall"], "recall",
                      final["diffusion"]["recall"] > final["gan"]["recall"]),
        "prompt control": (control_gan["accuracy"], matched["accuracy"], "class accuracy at matched FID",
                           matched["accuracy"] > control_gan["accuracy"]),
        "training complexity": (tuned["fashion-gan"]["needed"], tuned["fashion-ddpm"]["needed"],
                                "settings that needed tuning", tuned["fashion-gan"]["needed"] > tuned["fashion-ddpm"]["needed"]),
        "generation speed": (gan_img_s, fast_img_s, f"images/s (diffusion: {fast[0]} {fast[1]} steps)",
                             gan_img_s > fast_img_s),
    }
    rows = [{"criterion": c, "seed_gan": TABLE[c][0], "seed_diffusion": TABLE[c][1], "measured_gan": round(g_, 4),
             "measured_diffusion": round(d_, 4), "unit": unit, "holds": bool(holds)}
            for c, (g_, d_, unit, holds) in measured.items()]
    result = {"scale": scale, "device": dev.type, "samples": n, "floor": round(evaluator["floor"], 3), "rows": rows,
              "seed_noise": round(noise, 4),
              "runs": {"grid": grid, "settings_tuned": tuned, "final": {k: {m: round(v[m], 4) for m in ("fid", "precision", "recall", "entropy")}
                                              for k, v in final.items()},
                       "conditional_gan": control_gan, "guidance_sweep": sweep, "lines_of_code": lines_of,
                       "speed_img_s": {"gan": gan_img_s, "diffusion_1000": 1 / ddpm_drawn.seconds_per_image,
                                       "diffusion_fast": fast_img_s},
                       "train_seconds": {"gan": gan_run.seconds, "diffusion": ddpm.seconds},
                       "train_steps": {"gan": gan_run.config["steps"], "diffusion": ddpm.config["steps"]},
                       "gan_tracking": [{k: t[k] for k in ("step", "fid", "entropy", "distance_ratio", "seconds")}
                                        for t in gan_run.tracking]},
              "machine": machine_info()}
    md = [f"GAN against diffusion on Fashion-MNIST ({scale}, {dev.type}, {n} samples per FID, floor {result['floor']:.1f})",
          "", "| criterion | table: GAN | table: diffusion | measured: GAN | measured: diffusion | unit | holds |",
          "|---|---|---|---|---|---|---|"]
    md += [f"| {r['criterion']} | {r['seed_gan']} | {r['seed_diffusion']} | {r['measured_gan']:.4g} | "
           f"{r['measured_diffusion']:.4g} | {r['unit']} | {'yes' if r['holds'] else 'no'} |" for r in rows]
    write_result("gan_vs_diffusion", result, md, write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
