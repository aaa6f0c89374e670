"""Inverse problems: recover an image from partial, noisy measurements with a trained denoiser (lesson 12).

**MRI-like measurement.** An MRI scanner measures the image's 2-D Fourier transform (k-space)
line by line; measuring only some lines (acceleration R: one line in R) is faster. Here

    A x = M ⊙ F x,        y = M ⊙ F (x + n),   n ~ N(0, sigma^2 I) in image space,

with F the orthonormal 2-D DFT (F^H F = I, so each measured coefficient carries noise of variance
sigma^2) and M a Cartesian mask of k-space columns that keeps a fully sampled band of the lowest
frequencies and random others (Zbontar et al. 2018, fastMRI §4.3: the centre band, then random
lines). The images here are real, so their k-space is Hermitian (F x at -k is the conjugate of F x
at k); the mask keeps lines in such pairs, and the noise is that of a real image, so that every
reconstruction below can stay real and still agree with y exactly on the measured lines. The adjoint is A^H y = F^H (M ⊙ y), and the **zero-filled**
reconstruction Re(A^H y) is what an inverse FFT of the measured lines gives.

**Data consistency by projection** (Song, Shen, Xing & Ermon 2022, "Solving inverse problems in
medical imaging with score-based generative models", eq. 6-8 with lambda = 1): after every
reverse step, put the measured lines back, noised to the step's level:

    y_t = sqrt(abar_t) y + sqrt(1 - abar_t) M ⊙ F eps,    x_t <- Re F^H [ (1 - M) ⊙ F x_t + M ⊙ y_t ],

and with y itself after the last step. It is inpainting (lesson 11) in k-space.

**Diffusion posterior sampling** (Chung, Kim, McCann, Klasky & Ye 2023, "DPS", Algorithm 1 with
the step of its App. C): after every reverse step from x_i,

    x_{i-1} <- x'_{i-1} - zeta ∇_{x_i} || y - A x0_hat(x_i) ||,

the gradient of the residual's *norm* (not its square) taken through the network's x0_hat.

Both run inside ``samplers.sample`` through its per-step ``hook``, so any sampler serves. The same
two ideas serve **enhancement** with other operators: for denoising the operator is the identity
(``dps`` with ``operator=lambda x: x``), for 2x super-resolution it is the block mean
(``downsample``; its projection ``project_downsample`` puts the measured block means back). The
scores: **PSNR** = 10 log10(data_range^2 / MSE) with the data range stated (an image in [-1, 1]
has range 2), and **SSIM** (Wang, Bovik, Sheikh & Simoncelli 2004, eq. 13, with a 7x7 uniform
window, K1 = 0.01, K2 = 0.03, as scikit-image computes it by default).
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F

from ._checks import check_choice, check_float, check_int, check_tensor
from .forward import randn_like, to_x0_eps
from .samplers import sample
from .schedules import NoiseSchedule, check_schedule

__all__ = ["kspace", "image_from_kspace", "cartesian_mask", "forward_operator", "adjoint_operator", "measure",
           "zero_filled", "project_kspace", "downsample", "project_downsample", "projection", "dps", "reconstruct", "psnr",
           "ssim", "METHODS", "TASKS", "Problem", "make_problem", "solve"]

METHODS = ("projection", "dps")
TASKS = {"mri": 0.01, "denoise": 0.2, "super-resolution": 0.0}      # each task's default noise sigma
BASELINES = {"mri": "zero-filled", "denoise": "noisy input", "super-resolution": "nearest upsampling"}


def kspace(x: torch.Tensor) -> torch.Tensor:
    """F x: the orthonormal 2-D DFT over the last two axes (complex; F^H F = I)."""
    check_tensor("x", x)
    return torch.fft.fft2(x, norm="ortho")


def image_from_kspace(k: torch.Tensor) -> torch.Tensor:
    """F^H k: the orthonormal inverse 2-D DFT over the last two axes (complex)."""
    check_tensor("k", k)
    return torch.fft.ifft2(k, norm="ortho")


def cartesian_mask(size: int, acceleration: float, center_fraction: float = 0.08,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """A (size, size) bool k-space mask of whole columns (phase-encoding lines) in the layout of
    ``kspace`` (frequency 0 at index 0, -f at size - f): about size / acceleration lines. The
    frequencies |f| <= ceil(size * center_fraction) // 2 are always kept (3 lines at size 28 or 16 with
    the default 0.08: f = 0 and +-1); the others are drawn at random on ``generator``, in pairs
    (f, -f) so that a real image's k-space stays Hermitian."""
    size = check_int("size", size, low=4)
    acceleration = check_float("acceleration", acceleration, low=1.0)
    center_fraction = check_float("center_fraction", center_fraction, low=0.0, high=1.0, low_open=True)
    total = max(1, round(size / acceleration))
    f = torch.arange(size)
    freq = torch.minimum(f, size - f)                           # |frequency| of each column
    lines = freq <= max(0, math.ceil(size * center_fraction) // 2)
    pairs = [int(k) for k in torch.unique(freq[~lines])]        # each |f| not yet kept: one line or two
    dev = generator.device if generator is not None else "cpu"          # drawn where the generator lives
    for k in torch.randperm(len(pairs), generator=generator, device=dev).tolist():
        if int(lines.sum()) >= total:
            break
        lines |= freq == pairs[k]
    return lines[None, :].expand(size, size).clone()


def _check_mask(mask, x) -> torch.Tensor:
    check_tensor("mask", mask)
    if mask.shape[-2:] != x.shape[-2:]:
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not match the image size {tuple(x.shape[-2:])}")
    return mask.to(x.device)


def forward_operator(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A x = M ⊙ F x (complex)."""
    return _check_mask(mask, x) * kspace(x)


def adjoint_operator(y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A^H y = F^H (M ⊙ y) (complex): the adjoint of ``forward_operator``."""
    return image_from_kspace(_check_mask(mask, y) * y)


def measure(x: torch.Tensor, mask: torch.Tensor, sigma: float = 0.0,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """y = M ⊙ F (x + n), n ~ N(0, sigma^2 I) drawn on ``generator``: each measured coefficient gets
    complex noise of variance sigma^2, Hermitian like a real image's."""
    check_tensor("x", x)
    sigma = check_float("sigma", sigma, low=0.0)
    return forward_operator(x + sigma * randn_like(x, generator) if sigma > 0 else x, mask)


def zero_filled(y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Re(A^H y): the inverse FFT of the measured lines, the rest taken as zero."""
    return adjoint_operator(y, mask).real


def project_kspace(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Re F^H [(1 - M) ⊙ F x + M ⊙ y]: x with its measured lines replaced by y's."""
    m = _check_mask(mask, x)
    return image_from_kspace(torch.where(m, y, kspace(x))).real.to(x.dtype)


def downsample(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """The super-resolution measurement: the mean of each ``factor`` x ``factor`` block."""
    check_tensor("x", x)
    return F.avg_pool2d(x, check_int("factor", factor, low=1))


def project_downsample(x: torch.Tensor, y: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """x + U(y - D x) with D = ``downsample`` and U nearest-neighbour upsampling: the closest image
    to x (in squared error) whose block means are y, so ``downsample`` of the result is y."""
    factor = check_int("factor", factor, low=1)
    return x + F.interpolate(y - downsample(x, factor), scale_factor=factor, mode="nearest")


def _steered(model, s, shape, hook, y, steps, sampler, eta, generator, prediction, progress) -> torch.Tensor:
    """``samplers.sample`` with a solver's per-step ``hook`` (it checks the sampler, prediction and
    schedule): fp32, x0_hat clamped to [-1, 1], eta only where the sampler takes it."""
    return sample(model, s, shape, sampler, steps, eta=eta if sampler == "ddim" else 0.0, generator=generator,
                  prediction=prediction, clip_x0=1.0, hook=hook, device=y.device, progress=progress, amp=False)


def projection(model, s: NoiseSchedule, y: torch.Tensor, operator, project, shape, *, steps: int = 100,
               sampler: str = "ddim", eta: float = 1.0, generator: torch.Generator | None = None,
               prediction: str = "eps", progress: bool = False) -> torch.Tensor:
    """Data consistency by projection (Song et al. 2022) for a linear ``operator`` and its
    ``project(x, y) -> x'``: after every step of ``samplers.sample`` to timestep t, x is projected onto
    the measurement noised to that level, sqrt(abar_t) y + sqrt(1 - abar_t) operator(eps), and onto
    y itself after the last step."""
    check_schedule(s)
    check_tensor("y", y)
    for name, f in (("operator", operator), ("project", project)):
        if not callable(f):
            raise TypeError(f"{name} must be callable, got {type(f).__name__}")
    abar = s.alpha_bars.tolist()

    def hook(x, t, x0_hat):
        if t < 0:
            return project(x, y)
        return project(x, math.sqrt(abar[t]) * y + math.sqrt(1 - abar[t]) * operator(randn_like(x, generator)))

    return _steered(model, s, shape, hook, y, steps, sampler, eta, generator, prediction, progress)


def dps(model, s: NoiseSchedule, y: torch.Tensor, operator, shape, *, zeta: float, steps: int = 100,
        sampler: str = "ddim", eta: float = 1.0, generator: torch.Generator | None = None, prediction: str = "eps",
        progress: bool = False) -> torch.Tensor:
    """Diffusion posterior sampling (Chung et al. 2023) for any differentiable measurement
    ``operator(x) -> y``: after every step of ``samplers.sample`` from x_i, subtract ``zeta`` times
    the gradient of sum over images of || y - operator(x0_hat(x_i)) || (a norm, not its square)."""
    check_tensor("y", y)
    zeta = check_float("zeta", zeta, low=0.0)
    if not callable(operator):
        raise TypeError(f"operator must be callable as operator(x) -> measurement, got {type(operator).__name__}")
    check_schedule(s)
    grads = {}
    # the model is called at training timesteps; s may itself be respaced: its index of each one
    index = torch.full((int(s.timestep_map.max()) + 1,), -1, dtype=torch.long)
    index[s.timestep_map] = torch.arange(s.T)
    index = index.to(y.device)

    def guided(x, t):
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            out = model(xg, t)
            x0_hat, _ = to_x0_eps(s, xg, index[t], out, prediction)
            residual = torch.linalg.vector_norm((y - operator(x0_hat)).flatten(1), dim=1).sum()
            grads["g"] = torch.autograd.grad(residual, xg)[0]
        return out.detach()

    def hook(x, t, x0_hat):
        return x - zeta * grads.pop("g")

    return _steered(guided, s, shape, hook, y, steps, sampler, eta, generator, prediction, progress)


def reconstruct(model, s: NoiseSchedule, y: torch.Tensor, mask: torch.Tensor, shape, *, method: str = "projection",
                steps: int = 100, sampler: str = "ddim", eta: float = 1.0, zeta: float = 1.0,
                generator: torch.Generator | None = None, prediction: str = "eps", progress: bool = False) -> torch.Tensor:
    """Reconstruct images of ``shape`` (N, C, H, W) from k-space measurements ``y`` (``measure``) with
    a trained pixel model, by "projection" (Song et al. 2022) or "dps" (Chung et al. 2023, step
    ``zeta`` on the gradient of the residual's norm), running ``samplers.sample`` with ``sampler``."""
    check_choice("method", method, METHODS)
    check_tensor("y", y)
    if tuple(y.shape) != tuple(shape):
        raise ValueError(f"y must have the images' shape {tuple(shape)}, got {tuple(y.shape)}")
    return solve(model, s, _kspace_problem(y, _check_mask(mask, y)), method, zeta=zeta, steps=steps, sampler=sampler,
                 eta=eta, generator=generator, prediction=prediction, progress=progress)


class Problem(NamedTuple):
    """One measured inverse problem: the ``task``, the measurement ``y``, the linear ``operator``
    (x -> its measurement), ``project`` (x, y) -> the nearest x that agrees with y (None where
    there is nothing to keep: denoising measures every pixel, with noise), the ``baseline``
    reconstruction that uses no prior and its ``baseline_name``."""
    task: str
    y: torch.Tensor
    operator: Callable
    project: Callable | None
    baseline: torch.Tensor
    baseline_name: str


def _kspace_problem(y: torch.Tensor, mask: torch.Tensor) -> Problem:
    """The MRI-like ``Problem`` of k-space measurements ``y`` on ``mask``."""
    return Problem("mri", y, lambda v: forward_operator(v, mask), lambda v, m: project_kspace(v, m, mask),
                   zero_filled(y, mask), BASELINES["mri"])


def make_problem(task: str, x: torch.Tensor, *, acceleration: float = 4.0, factor: int = 2, sigma: float | None = None,
                 mask_generator: torch.Generator | None = None, generator: torch.Generator | None = None) -> Problem:
    """Measure images ``x`` for ``task``: "mri" (``cartesian_mask`` at ``acceleration``, its lines
    drawn on ``mask_generator``; ``measure`` with noise ``sigma``, default 0.01), "denoise" (x plus
    Gaussian noise of ``sigma``, default 0.2) or "super-resolution" (``downsample`` by ``factor``,
    plus noise ``sigma``, default 0). The noise is drawn on ``generator``."""
    check_choice("task", task, TASKS)
    check_tensor("x", x)
    sigma = check_float("sigma", TASKS[task] if sigma is None else sigma, low=0.0)
    if task == "mri":
        mask = cartesian_mask(x.shape[-1], acceleration, generator=mask_generator).to(x.device)
        return _kspace_problem(measure(x, mask, sigma, generator), mask)
    noisy = x + sigma * randn_like(x, generator) if sigma > 0 else x
    if task == "denoise":
        return Problem(task, noisy, lambda v: v, None, noisy, BASELINES[task])
    factor = check_int("factor", factor, low=1)
    y = downsample(noisy, factor)
    return Problem(task, y, lambda v: downsample(v, factor), lambda v, m: project_downsample(v, m, factor),
                   F.interpolate(y, scale_factor=factor, mode="nearest"), BASELINES[task])


def solve(model, s: NoiseSchedule, problem: Problem, method: str, *, zeta: float = 1.0, steps: int = 100,
          sampler: str = "ddim", eta: float = 1.0, generator: torch.Generator | None = None, prediction: str = "eps",
          progress: bool = False) -> torch.Tensor:
    """Reconstruct a ``Problem``'s images: "baseline" (its prior-free reconstruction), "projection"
    or "dps" (step ``zeta``), with the images' shape taken from the baseline."""
    check_choice("method", method, ("baseline",) + METHODS)
    if method == "baseline":
        return problem.baseline
    kw = dict(steps=steps, sampler=sampler, eta=eta, generator=generator, prediction=prediction, progress=progress)
    shape = problem.baseline.shape
    if method == "projection":
        if problem.project is None:
            raise ValueError(f"task {problem.task!r} has no projection (every value is measured, with noise): use 'dps'")
        return projection(model, s, problem.y, problem.operator, problem.project, shape, **kw)
    return dps(model, s, problem.y, problem.operator, shape, zeta=zeta, **kw)


def psnr(x: torch.Tensor, reference: torch.Tensor, data_range: float) -> torch.Tensor:
    """Per image, 10 log10(data_range^2 / MSE) in dB. ``data_range``: max - min of the images' scale
    (2 for images in [-1, 1]); stated, never guessed from the data."""
    data_range = check_float("data_range", data_range, low=0.0, low_open=True)
    if x.shape != reference.shape:
        raise ValueError(f"x {tuple(x.shape)} and reference {tuple(reference.shape)} must have one shape")
    mse = (x.double() - reference.double()).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(data_range ** 2 / mse)


def ssim(x: torch.Tensor, reference: torch.Tensor, data_range: float, window: int = 7) -> torch.Tensor:
    """Per image, the mean structural similarity (Wang et al. 2004, eq. 13) over ``window`` x
    ``window`` uniform windows (valid positions only), C1 = (0.01 L)^2, C2 = (0.03 L)^2 with L =
    ``data_range``, sample covariances (N - 1), channels averaged: scikit-image's defaults."""
    data_range = check_float("data_range", data_range, low=0.0, low_open=True)
    window = check_int("window", window, low=3)
    if window % 2 == 0:
        raise ValueError(f"window must be odd (a window centred on a pixel, as scikit-image requires), got {window}")
    if x.shape != reference.shape or x.dim() != 4:
        raise ValueError(f"x and reference must be (N, C, H, W) of one shape, got {tuple(x.shape)} and "
                         f"{tuple(reference.shape)}")
    a, b = x.double(), reference.double()
    n = window * window

    def mean(z):
        return F.avg_pool2d(z, window, stride=1)

    mu_a, mu_b = mean(a), mean(b)
    cov = n / (n - 1)
    var_a, var_b = cov * (mean(a * a) - mu_a ** 2), cov * (mean(b * b) - mu_b ** 2)
    cov_ab = cov * (mean(a * b) - mu_a * mu_b)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s_map = ((2 * mu_a * mu_b + c1) * (2 * cov_ab + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return s_map.flatten(1).mean(1)
