"""Lesson 11: how well the edits of ``minidiff.editing`` work, measured.

On lesson 06's DDPM and lesson 10's class-conditional DDPM: RePaint against plain replacement at equal
network calls, SDEdit's faithfulness against realism, DDIM inversion's return trip, and style
transfer by class under guidance."""
from __future__ import annotations

import torch
from tqdm.auto import tqdm

from .._checks import check_int, check_tensor
from ..editing import (ddim_invert, inpaint, network_calls, repaint_schedule, sdedit, sdedit_start,
                       style_transfer)
from ..evaluation import accuracy, draw_guided, evaluate_samples, features, model_device, probabilities
from ..metrics import frechet_distance
from ..samplers import sample
from .common import seeded

__all__ = ["masked_error", "feature_distance", "low_frequency_distance", "inpainting_comparison", "sdedit_sweep",
           "inversion_errors", "style_sweep"]


def _rms_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """The per-image root mean square difference of two batches, averaged over the images."""
    return (a.cpu() - b.cpu()).pow(2).flatten(1).mean(1).sqrt().mean().item()


def masked_error(images: torch.Tensor, truth: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Per image, the mean squared error to ``truth`` over the repainted pixels (``keep`` 0): (N,)."""
    check_tensor("images", images)
    if images.shape != truth.shape:
        raise ValueError(f"images {tuple(images.shape)} and truth {tuple(truth.shape)} must have one shape")
    unknown = (~torch.broadcast_to(keep.bool(), images.shape)).flatten(1).float().cpu()
    if (unknown.sum(1) == 0).any():
        raise ValueError("keep repaints no pixel of some image: there is no error to measure")
    sq = (images.float().cpu() - truth.float().cpu()).pow(2).flatten(1)
    return (sq * unknown).sum(1) / unknown.sum(1)


def feature_distance(classifier, images: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Per image, the Euclidean distance between the feature classifier's features (``features``)
    of ``images`` and of ``truth``, pairwise: (N,). Small when an edit keeps what the image is."""
    if images.shape != truth.shape:
        raise ValueError(f"images {tuple(images.shape)} and truth {tuple(truth.shape)} must have one shape")
    return (features(classifier, images.clamp(-1, 1)) - features(classifier, truth.clamp(-1, 1))).norm(dim=1).float()


def low_frequency_distance(images: torch.Tensor, reference: torch.Tensor, factor: int = 4) -> torch.Tensor:
    """Per image, the RMS difference of the two images averaged over ``factor`` x ``factor`` blocks:
    how much of the coarse structure (layout, silhouette) an edit kept, ignoring detail. (N,)."""
    factor = check_int("factor", factor, low=1)
    if images.shape != reference.shape:
        raise ValueError(f"images {tuple(images.shape)} and reference {tuple(reference.shape)} must have one shape")
    pool = torch.nn.functional.avg_pool2d
    d = pool(images.float().cpu(), factor, ceil_mode=True) - pool(reference.float().cpu(), factor, ceil_mode=True)
    return d.pow(2).flatten(1).mean(1).sqrt()


def inpainting_comparison(model, s, truth: torch.Tensor, masks: dict, evaluator: dict, *, steps: int,
                          jump_length: int, resample: int, seed: int = 0, prediction: str = "eps", device=None,
                          progress: bool = False) -> dict:
    """RePaint against plain replacement at an equal number of network calls (lesson 11).

    For each named ``keep`` mask in ``masks``: ``editing.inpaint`` with RePaint's ``steps``,
    ``jump_length`` and ``resample``, and with plain replacement on as many levels as RePaint makes
    calls (at most T), from the same starting noise. Each result holds the ``images``, its
    ``network_calls``, and per image the ``mse`` on the repainted pixels (``masked_error``) and the
    ``feature`` distance to the truth (``feature_distance``), plus the ``fid`` of the whole set.
    """
    device = torch.device(device) if device is not None else model_device(evaluator["classifier"])
    calls = network_calls(repaint_schedule(steps, jump_length, resample))
    plans = {"plain": {"steps": min(calls, s.T)},
             "RePaint": {"steps": steps, "jump_length": jump_length, "resample": resample}}
    out = {}
    for name, keep in tqdm(masks.items(), desc="masks", disable=not progress):
        out[name] = {}
        for method, plan in plans.items():
            images = inpaint(model, s, truth.to(device), keep.to(device), generator=seeded(device, seed),
                             prediction=prediction, **plan).cpu()
            out[name][method] = {"images": images, "network_calls": calls if method == "RePaint" else plan["steps"],
                                 "mse": masked_error(images, truth, keep),
                                 "feature": feature_distance(evaluator["classifier"], images, truth),
                                 "fid": evaluate_samples(evaluator, images)["fid"]}
    return out


def sdedit_sweep(model, s, inputs: torch.Tensor, strengths, evaluator: dict, *, steps: int, sampler: str = "ddim",
                 eta: float = 1.0, labels: torch.Tensor | None = None, seed: int = 0, prediction: str = "eps",
                 device=None) -> list[dict]:
    """SDEdit of ``inputs`` at each strength (``editing.sdedit`` with ``sampler``, by default DDIM with
    eta = 1, i.e. ancestral steps: the stochastic reverse process SDEdit runs): per strength the
    ``images``, the network ``calls``, **faithfulness** (``distance``: mean RMS distance to the input)
    and **realism** (the classifier's mean top-class ``confidence`` and the ``fid``), and with
    ``labels`` the share still read as that class (``accuracy``)."""
    device = torch.device(device) if device is not None else model_device(evaluator["classifier"])
    rows = []
    for strength in strengths:
        images = sdedit(model, s, inputs.to(device), strength, steps=steps, sampler=sampler, eta=eta,
                        generator=seeded(device, seed), prediction=prediction).cpu()
        probs = probabilities(evaluator["classifier"], images)
        row = {"strength": strength, "calls": steps - sdedit_start(steps, strength), "images": images,
               "distance": _rms_distance(images, inputs),
               "confidence": probs.max(1).values.mean().item(), "fid": evaluate_samples(evaluator, images)["fid"]}
        if labels is not None:
            row["accuracy"] = (probs.argmax(1) == labels.cpu()).float().mean().item()
        rows.append(row)
    return rows


def inversion_errors(model, s, images: torch.Tensor, step_counts, *, prediction: str = "eps", device=None) -> dict:
    """DDIM inversion (``editing.ddim_invert``) then DDIM (eta = 0) back, for each number of steps:
    {steps: {"noise", "back", "rms" (mean per-image RMS error to ``images``), "noise_std"}}."""
    device = torch.device(device) if device is not None else model_device(model)
    out = {}
    for steps in step_counts:
        noise = ddim_invert(model, s, images.to(device), steps=steps, prediction=prediction)
        back = sample(model, s, noise.shape, "ddim", steps, x_T=noise, prediction=prediction, amp=False,
                      progress=False).cpu()
        out[steps] = {"noise": noise.cpu(), "back": back, "noise_std": noise.std().item(),
                      "rms": _rms_distance(back, images)}
    return out


def style_sweep(run, images: torch.Tensor, source: int, target: int, scales, evaluator: dict, *, strength: float,
                steps: int, reference: torch.Tensor, batch_size: int = 100, seed: int = 0, device=None) -> list[dict]:
    """Style transfer by class (``editing.style_transfer``) with a class-conditional run's EMA model,
    class ``source`` -> ``target``, by "sdedit" and by "inversion", at each guidance scale, beside
    target-class samples "from scratch" at that scale (``draw_guided``, DDIM, ``steps``). Per row:
    ``scale``, ``method``, ``images``, ``accuracy`` (share read as ``target``), ``structure``
    (mean ``low_frequency_distance`` to the input, 4x4 blocks: lower keeps more of it) and ``fid``
    against ``reference``, real images of the target class (realism as that class)."""
    device = torch.device(device) if device is not None else model_device(run.ema.model)
    key = next(iter(run.uncond))
    n = len(images)
    src, tgt = torch.full((n,), source, device=device), torch.full((n,), target)
    real = features(evaluator["classifier"], reference)
    rows = []
    for scale in scales:
        outs = {"from scratch": draw_guided(run, tgt, scale, tuple(images.shape[1:]), sampler="ddim", steps=steps,
                                            batch_size=batch_size, seed=seed, device=device)[0].cpu()}
        for method in ("sdedit", "inversion"):
            outs[method] = style_transfer(run.ema.model, run.schedule, images.to(device), src, tgt.to(device),
                                          uncond=run.uncond, scale=scale, strength=strength, steps=steps, method=method,
                                          key=key, generator=seeded(device, seed),
                                          prediction=run.config["prediction"]).cpu()
        for method, out in outs.items():
            rows.append({"scale": scale, "method": method, "images": out,
                         "accuracy": accuracy(evaluator["classifier"], out.clamp(-1, 1), tgt),
                         "structure": low_frequency_distance(out, images).mean().item(),
                         "fid": frechet_distance(features(evaluator["classifier"], out.clamp(-1, 1)), real)})
    return rows

