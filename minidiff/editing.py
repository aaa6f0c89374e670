"""Editing with a diffusion model that was never trained to edit (lesson 11).

A trained denoiser knows what images look like at every noise level; editing steers its
reverse process with an image we already have.

**Inpainting by replacement** (Song et al. 2021, "Score-Based Generative Modeling through SDEs",
App. I.2; RePaint, Lugmayr et al. 2022, eq. 8): at every step the pixels we keep are the
*known* image noised to that step's level, x_{t-1}^known ~ q(x_{t-1} | x_0) (DDPM eq. 4), and
the others come from the model's step, x_{t-1}^unknown ~ p(x_{t-1} | x_t); the two are joined
by the mask, x_{t-1} = keep * x_{t-1}^known + (1 - keep) * x_{t-1}^unknown. At the end the kept
pixels are the image itself.

**Resampling** (RePaint §4.2, Algorithm 1): the model only sees the known pixels through x_t,
so its unknown pixels can disagree with them. RePaint goes back up: it re-noises x_{t-1} to x_t
with the forward step q(x_t | x_{t-1}) (DDPM eq. 2) and denoises again, ``resample`` times at
every ``jump_length``-th level, jumping ``jump_length`` levels at once (the schedule of its
published code). ``repaint_schedule`` returns that path; each step down is one network call.

**SDEdit** (Meng et al. 2022, "SDEdit", §3): noise an input (a sketch, a corrupted image) to an
intermediate level t_0 ~ strength * T (the timestep of the sampler's grid where
int(strength * steps) steps remain) with q(x_{t0} | x) and run the reverse process from there:
low strength stays faithful to the input, high strength makes it realistic.

**DDIM inversion** (Song et al. 2021, DDIM §4.3, eq. 13 as an ODE; Mokady et al. 2023, §3):
DDIM with eta = 0 is a deterministic map from x_T to x_0, and run with its steps reversed it
maps an image to the noise that DDIM turns back into (nearly) that image:

    x_{i+1} = sqrt(abar_{i+1}) x0_hat + sqrt(1 - abar_{i+1}) eps_hat,
    eps_hat = model(x_i, t_{i+1}),  x0_hat = (x_i - sqrt(1 - abar_i) eps_hat) / sqrt(abar_i),

with abar = 1 for the image itself (level -1 in the code) and the one approximation that eps is
read at the next level's timestep from the current x.

**Style transfer by class**: start from the input noised (SDEdit) or inverted with its own
class part-way up, and come back down asking for another class, with classifier-free guidance.
"""
from __future__ import annotations

import inspect
import math

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ._checks import check_choice, check_float, check_int, check_tensor
from .forward import PREDICTIONS, q_sample, q_step, randn_like, to_x0_eps
from .reverse import clip_x0_hat, ddpm_step, timesteps
from .samplers import SAMPLERS, sample
from .schedules import NoiseSchedule, check_schedule

__all__ = ["repaint_schedule", "network_calls", "inpaint", "border_mask", "outpaint", "MASKS", "make_mask",
           "rough_sketch", "sdedit_start", "sdedit", "ddim_invert", "style_transfer"]

MASKS = ("free-form", "half", "super-resolution", "lines", "border")


def repaint_schedule(steps: int, jump_length: int = 1, resample: int = 1) -> list[tuple[int, int]]:
    """RePaint's path through the ``steps`` levels of a respaced schedule (Lugmayr et al. 2022, §4.2
    and Algorithm 1, with the jumps of its published code): from level steps - 1 (x_T) down to -1
    (the image), one level at a time; on reaching each level j = 0, jump_length, 2 jump_length, ...
    below steps - jump_length, go back up ``jump_length`` levels by forward noising and down again,
    ``resample - 1`` times. The finished image is never re-noised (Algorithm 1: only while t > 1).
    Returns the moves (from, to): to = from - 1 is one network call at level ``from``; to = from + 1
    re-noises with q(x_to | x_from). With jump_length = resample = 1 it is plain replacement:
    ``steps`` calls."""
    steps = check_int("steps", steps, low=1)
    jump_length = check_int("jump_length", jump_length, low=1)
    resample = check_int("resample", resample, low=1)
    jumps = {j: resample - 1 for j in range(0, steps - jump_length, jump_length)}
    if resample > 1 and not jumps:
        raise ValueError(f"jump_length {jump_length} leaves no level to resample at with steps {steps}: "
                         f"use jump_length < steps, or resample=1")
    levels, t = [], steps
    while t >= 1:
        t -= 1
        levels.append(t)                    # x at level t (from t + 1: one network call there)
        if jumps.get(t, 0) > 0:
            jumps[t] -= 1
            for _ in range(jump_length):    # back up, one forward step at a time
                t += 1
                levels.append(t)
    levels.append(-1)                       # the last call, at level 0, gives the image
    return list(zip(levels[:-1], levels[1:]))


def network_calls(moves) -> int:
    """How many network calls a path of ``repaint_schedule`` makes: its steps down."""
    return sum(1 for a, b in moves if b < a)


def _check_image(x) -> torch.Tensor:
    check_tensor("x", x)
    if x.dim() < 2:
        raise ValueError(f"x must be a batch (N, ...) of images, got shape {tuple(x.shape)}")
    return x


def _check_keep(keep, x: torch.Tensor) -> torch.Tensor:
    """``keep`` as a bool tensor broadcast to x's shape: True where the pixel is known and kept."""
    check_tensor("keep", keep)
    if keep.dtype != torch.bool:
        if not ((keep == 0) | (keep == 1)).all():
            raise ValueError("keep must hold only 0 and 1 (1 = keep the pixel, 0 = repaint it), "
                             f"got values in [{keep.min().item():.3g}, {keep.max().item():.3g}]")
        keep = keep == 1
    try:
        return torch.broadcast_to(keep.to(x.device), x.shape)
    except RuntimeError:
        raise ValueError(f"keep of shape {tuple(keep.shape)} does not broadcast to x's shape {tuple(x.shape)}") from None


def _check_model(model, s, prediction, steps) -> int:
    """Check what every edit takes; return ``steps``."""
    check_schedule(s)
    if not callable(model):
        raise TypeError(f"model must be callable as model(x_t, t, **cond), got {type(model).__name__}")
    check_choice("prediction", prediction, PREDICTIONS)
    return check_int("steps", steps, low=1, high=s.T)


@torch.no_grad()
def inpaint(model, s: NoiseSchedule, x: torch.Tensor, keep: torch.Tensor, *, steps: int, jump_length: int = 1,
            resample: int = 1, generator: torch.Generator | None = None, prediction: str = "eps",
            clip_x0: float | None = 1.0, progress: bool = False, **cond) -> torch.Tensor:
    """Repaint the pixels of ``x`` where ``keep`` is 0 and keep those where it is 1.

    Every step down is the DDPM ancestral step (``reverse.ddpm_step``) on ``steps`` respaced levels,
    after which the kept pixels are replaced by ``x`` noised to the new level (``forward.q_sample``)
    — or by ``x`` itself after the last step, so the result equals ``x`` exactly where ``keep`` is 1.
    With ``resample > 1``, RePaint's path (``repaint_schedule``): the joined image is re-noised
    ``jump_length`` levels up (``forward.q_step``) and denoised again, ``resample`` times.

    :param x: the images (N, C, H, W) in the model's range.
    :param keep: 1 (or True) = known pixel kept, 0 = repainted; any shape that broadcasts to x.
    :param cond: the model's condition keywords (``y=labels``), passed to every call.
    """
    x = _check_image(x)
    keep = _check_keep(keep, x)
    steps = _check_model(model, s, prediction, steps)
    sub = s.respace(timesteps(s.T, steps))
    moves = repaint_schedule(steps, jump_length, resample)
    if clip_x0 is not None:
        clip_x0 = check_float("clip_x0", clip_x0, low=0, low_open=True)
    t_model = sub.timestep_map.to(x.device)
    xt = randn_like(x, generator)
    for a, b in tqdm(moves, desc="inpainting", disable=not progress, leave=False):
        if b > a:                                           # back up: x_b ~ q(x_b | x_a)
            xt = q_step(sub, xt, b, generator=generator)
            continue
        out = model(xt, t_model[a].expand(len(x)), **cond)
        x0_hat, eps_hat = to_x0_eps(sub, xt, a, out.to(xt.dtype), prediction)
        x0_hat, _ = clip_x0_hat(sub, xt, a, x0_hat, eps_hat, clip_x0)
        unknown = ddpm_step(sub, a, xt, x0_hat, generator=generator)
        known = x if b < 0 else q_sample(sub, x, b, generator=generator)
        xt = torch.where(keep, known, unknown)
    return xt


def border_mask(shape, border: int) -> torch.Tensor:
    """A ``keep`` mask (1, 1, H, W) for outpainting: 0 on a band ``border`` pixels wide around the
    edge (repainted), 1 inside (kept). ``shape``: (..., H, W)."""
    if not isinstance(shape, (tuple, list, torch.Size)) or len(shape) < 2:
        raise TypeError(f"shape must be a tuple ending in (H, W), got {shape!r}")
    h, w = int(shape[-2]), int(shape[-1])
    border = check_int("border", border, low=1, high=(min(h, w) - 1) // 2)
    keep = torch.zeros(1, 1, h, w, dtype=torch.bool)
    keep[..., border:h - border, border:w - border] = True
    return keep


def make_mask(name: str, size: int, n: int = 1, generator: torch.Generator | None = None) -> torch.Tensor:
    """A ``keep`` mask (n, 1, size, size), bool, of one of the kinds lesson 11 repairs (``MASKS``):

    * "free-form": wide brush strokes (RePaint's "wide" kind), a random walk of discs (radius
      size/7) over at least 30% of the image, one per row of the batch (drawn on ``generator``);
    * "half": the right half unknown;
    * "super-resolution": every other pixel in both directions unknown (keep 1 in 4: 2x upscaling);
    * "lines": every other row unknown;
    * "border": outpainting, a band of size/7 pixels around the edge unknown (``border_mask``).
    """
    check_choice("name", name, MASKS)
    size = check_int("size", size, low=8)
    n = check_int("n", n, low=1)
    keep = torch.ones(n, 1, size, size, dtype=torch.bool)
    if name == "half":
        keep[..., size // 2:] = False
    elif name == "super-resolution":
        keep[..., 1::2, :] = False
        keep[..., :, 1::2] = False
    elif name == "lines":
        keep[..., 1::2, :] = False
    elif name == "border":
        keep = border_mask((size, size), max(1, size // 7)).expand(n, -1, -1, -1).clone()
    else:
        yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
        radius = max(1.0, size / 7)
        dev = generator.device if generator is not None else "cpu"      # draw where the generator lives
        for k in range(n):
            p = torch.rand(2, generator=generator, device=dev).cpu() * size
            while (~keep[k]).float().mean() < 0.3:
                keep[k, 0] &= (yy - p[0]) ** 2 + (xx - p[1]) ** 2 > radius ** 2
                step = (torch.rand(2, generator=generator, device=dev).cpu() - 0.5) * 2 * radius
                p = (p + step).clamp(0, size - 1)
    return keep


def outpaint(model, s: NoiseSchedule, x: torch.Tensor, border: int, **kwargs) -> torch.Tensor:
    """Extend the centre of ``x`` outwards: ``inpaint`` with the outer ``border`` pixels unknown
    (``border_mask``); ``kwargs`` as for ``inpaint``."""
    return inpaint(model, s, x, border_mask(_check_image(x).shape, border), **kwargs)


def rough_sketch(images: torch.Tensor, block: int = 4, greys=(-0.5, 0.3)) -> torch.Tensor:
    """A crude drawing of ``images`` (N, C, H, W) in [-1, 1], SDEdit's kind of input: the mean of
    each ``block`` x ``block`` square, put into three flat greys (-1, 0, 1) split at ``greys``."""
    check_tensor("images", images)
    if images.dim() != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    block = check_int("block", block, low=1)
    coarse = F.interpolate(F.avg_pool2d(images.float(), block, ceil_mode=True), scale_factor=block,
                           mode="nearest")[..., :images.shape[-2], :images.shape[-1]]
    return torch.bucketize(coarse, torch.tensor(greys, dtype=coarse.dtype, device=coarse.device)).float() - 1


def sdedit_start(steps: int, strength: float) -> int:
    """The index into the ``steps`` timesteps where SDEdit starts: it skips the first
    steps - int(strength * steps) of them and makes int(strength * steps) network calls."""
    steps = check_int("steps", steps, low=1)
    strength = check_float("strength", strength, low=0.0, high=1.0, low_open=True)
    calls = int(strength * steps + 1e-9)    # 0.58 * 100 is 57.99999...: count 58
    if calls < 1:
        raise ValueError(f"strength {strength} x steps {steps} leaves no step to take: raise either")
    return steps - calls


@torch.no_grad()
def sdedit(model, s: NoiseSchedule, x: torch.Tensor, strength: float, *, steps: int, sampler: str = "ddim",
           eta: float = 0.0, generator: torch.Generator | None = None, prediction: str = "eps",
           clip_x0: float | None = 1.0, spacing: str = "trailing", progress: bool = False, **cond) -> torch.Tensor:
    """SDEdit (Meng et al. 2022): x noised to the timestep ``strength`` selects among ``steps``
    (``forward.q_sample``; ``spacing`` as in ``reverse.timesteps``), then ``samplers.sample`` from
    there on the same grid with ``sampler``: int(strength * steps) network calls. strength in (0, 1];
    1 starts from (nearly) pure noise. ``cond`` holds the model's condition keywords only."""
    x = _check_image(x)
    check_choice("sampler", sampler, SAMPLERS)
    settings = sorted(set(cond) & set(inspect.signature(sample).parameters))
    if settings:
        raise ValueError(f"sdedit passes **cond to the model as its condition, and {', '.join(settings)} is a "
                         f"setting of samplers.sample: give spacing to sdedit itself (the start is chosen on that "
                         f"grid); sdedit sets the others")
    steps = _check_model(model, s, prediction, steps)
    start = sdedit_start(steps, strength)
    t0 = int(timesteps(s.T, steps, spacing)[start])
    x_t0 = q_sample(s, x, t0, generator=generator)
    return sample(model, s, x.shape, sampler, steps, eta=eta, x_T=x_t0, generator=generator, prediction=prediction,
                  clip_x0=clip_x0, spacing=spacing, start=start, progress=progress, **cond)


@torch.no_grad()
def ddim_invert(model, s: NoiseSchedule, x: torch.Tensor, *, steps: int, strength: float = 1.0,
                prediction: str = "eps", progress: bool = False, **cond) -> torch.Tensor:
    """DDIM (eta = 0) run backwards from the images ``x`` up int(strength * steps) of ``steps``
    levels (module docstring). ``samplers.sample(model, s, x.shape, "ddim", steps, x_T=result,
    start=sdedit_start(steps, strength), amp=False)`` maps it back to (nearly) x (``amp=False``: on
    CUDA, sample would otherwise decode in bf16 and add that error to inversion's)."""
    x = _check_image(x)
    steps = _check_model(model, s, prediction, steps)
    sub = s.respace(timesteps(s.T, steps))
    start = sdedit_start(steps, strength)
    t_model = sub.timestep_map.to(x.device)
    abar = sub.alpha_bars.tolist()             # python floats: no float64 tensor on the device
    xt = x.clone()
    for i in tqdm(range(0, steps - start), desc="DDIM inversion", disable=not progress, leave=False):
        out = model(xt, t_model[i].expand(len(x)), **cond)       # eps read at the next level's timestep
        _, eps_hat = to_x0_eps(sub, xt, i, out.to(xt.dtype), prediction)
        a_now = abar[i - 1] if i > 0 else 1.0                    # abar = 1 for the image itself
        x0_hat = (xt - math.sqrt(1 - a_now) * eps_hat) / math.sqrt(a_now)
        xt = math.sqrt(abar[i]) * x0_hat + math.sqrt(1 - abar[i]) * eps_hat
    return xt


@torch.no_grad()
def style_transfer(model, s: NoiseSchedule, x: torch.Tensor, source: torch.Tensor, target: torch.Tensor, *,
                   uncond: dict, scale: float, strength: float, steps: int, method: str = "sdedit",
                   generator: torch.Generator | None = None, prediction: str = "eps", key: str = "y",
                   progress: bool = False) -> torch.Tensor:
    """Turn images of class ``source`` into class ``target`` with a class-conditional model: start
    from x part-way up — noised ("sdedit") or DDIM-inverted with its own class ("inversion") to
    the level ``strength`` selects — and come back down asking for ``target`` under classifier-free
    guidance at ``scale`` (``guidance.cfg`` with ``uncond``) with DDIM (eta = 0).

    :param key: the model's condition keyword (labels: "y")."""
    from .guidance import cfg

    check_choice("method", method, ("sdedit", "inversion"))
    x = _check_image(x)
    for name, v in (("source", source), ("target", target)):
        check_tensor(name, v)
        if v.shape[:1] != x.shape[:1]:
            raise ValueError(f"{name} must hold one condition per image ({len(x)}), got shape {tuple(v.shape)}")
    guided = cfg(model, scale, uncond)
    if method == "sdedit":
        return sdedit(guided, s, x, strength, steps=steps, generator=generator, prediction=prediction,
                      progress=progress, **{key: target})
    start = sdedit_start(steps, strength)
    x_t = ddim_invert(model, s, x, steps=steps, strength=strength, prediction=prediction, progress=progress,
                      **{key: source})
    return sample(guided, s, x.shape, "ddim", steps, x_T=x_t, start=start, prediction=prediction, clip_x0=1.0,
                  progress=progress, amp=False, **{key: target})
