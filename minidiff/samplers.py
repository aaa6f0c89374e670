"""Fast samplers: the same trained model, fewer and smarter steps.

DDIM (Song, Meng & Ermon 2021, "Denoising Diffusion Implicit Models"), eq. 12:

    x_{t-1} = sqrt(abar_{t-1}) x0_hat                       "predicted x_0"
            + sqrt(1 - abar_{t-1} - sigma_t^2) eps_hat        "direction pointing to x_t"
            + sigma_t z                                       "random noise"

    sigma_t(eta) = eta sqrt((1 - abar_{t-1}) / (1 - abar_t)) sqrt(1 - abar_t / abar_{t-1})   (eq. 16)

eta = 0 is deterministic; eta = 1 makes sigma_t^2 the DDPM posterior variance beta~_t, so
DDIM(eta=1) is ancestral DDPM sampling. Every sampler here works on a respaced schedule
``s`` (``reverse.sample`` builds it), where index i's "previous" step is simply i - 1.

DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Algorithm 2) solves the probability-flow
ODE in the half-log-SNR lambda_t = log(alpha_t / sigma_t), alpha_t = sqrt(abar_t),
sigma_t = sqrt(1 - abar_t), with h = lambda_{t-1} - lambda_t:

    first step (and the last):  x_{t-1} = (sigma_{t-1} / sigma_t) x_t - alpha_{t-1} (e^{-h} - 1) x0_hat_t
    later steps, r = h_prev / h: D = (1 + 1 / (2r)) x0_hat_t - (1 / (2r)) x0_hat_prev,
                                x_{t-1} = (sigma_{t-1} / sigma_t) x_t - alpha_{t-1} (e^{-h} - 1) D

The first-order step is DDIM(eta=0); the second order reuses the previous step's x0_hat as a
finite-difference derivative, so it costs one model call per step like the others.

The last step here is first order, which is *not* Algorithm 2: the paper integrates to a small
t = epsilon and stays second order to the end. This solver lands on the clean data, sigma = 0,
where lambda = +inf and h is infinite, so r = h_prev / h = 0 and the multistep correction has
no meaning; it takes the first-order step x_0 = x0_hat there (what diffusers calls
``final_sigmas_type="zero"`` with ``lower_order_final``, and what the reference test checks).

SDE-DPM-Solver++(2M) ("sde-dpm++2m") applies the same expansion to the reverse SDE instead of the
ODE (Lu et al. 2022, DPM-Solver++, its SDE variant; diffusers' ``sde-dpmsolver++``). Holding
x0_hat (or D) fixed over the step, the linear part integrates exactly and fresh noise enters:

    x_{t-1} = (sigma_{t-1} / sigma_t) e^{-h} x_t + alpha_{t-1} (1 - e^{-2h}) D
              + sigma_{t-1} sqrt(1 - e^{-2h}) z,        z ~ N(0, I),

with D as above. Its first-order step (D = x0_hat) is exactly DDPM's posterior step: since
1 - e^{-2h} = (alpha_{t-1}^2 - alpha_t^2) / (alpha_{t-1}^2 sigma_t^2), its mean and variance are
those of q(x_{t-1} | x_t, x0_hat) (DDPM eq. 7), i.e. DDIM(eta=1). The second order only sharpens D.

``sample`` is the one loop every sampler runs in: it respaces the schedule, calls the model once
per step, turns its output into (x0_hat, eps_hat) and hands them to the chosen step. A sampler's
memory (DPM-Solver++'s previous x0_hat) lives in that loop, in one trajectory, never across calls.
The loop can start part-way (``start``: SDEdit begins from a partly noised image) and let a
``hook`` replace x after every step (inpainting pastes the known pixels back).
"""
from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm

from ._checks import check_choice, check_float, check_int, check_tensor
from .forward import PREDICTIONS, randn_like, to_x0_eps
from .reverse import VARIANCES, clip_x0_hat, ddpm_step, timesteps
from .schedules import NoiseSchedule, check_schedule

__all__ = ["SAMPLERS", "ddim_sigma", "ddim_step", "dpm_solver_pp_2m_step", "sample"]

SAMPLERS = ("ddpm", "ddim", "dpm++2m", "sde-dpm++2m")


def ddim_sigma(s: NoiseSchedule, i: int, eta: float) -> float:
    """sigma_i(eta) of DDIM eq. 16 at index ``i`` of ``s``; ``eta`` in [0, 1]."""
    eta = check_float("eta", eta, low=0.0, high=1.0)
    abar, abar_prev = float(s.alpha_bars[i]), float(s.alpha_bars_prev[i])
    return eta * math.sqrt((1 - abar_prev) / (1 - abar)) * math.sqrt(1 - abar / abar_prev)


def ddim_step(s: NoiseSchedule, i: int, x: torch.Tensor, x0_hat: torch.Tensor, eps_hat: torch.Tensor,
              *, eta: float = 0.0, generator=None) -> torch.Tensor:
    """One DDIM update (eq. 12) from index ``i`` of ``s`` to index ``i - 1``; ``eta`` in [0, 1]."""
    abar_prev = float(s.alpha_bars_prev[i])
    sigma = ddim_sigma(s, i, eta)
    # eta <= 1 makes sigma^2 <= 1 - abar_prev; the clamp only absorbs rounding at eta = 1
    direction = math.sqrt(max(1.0 - abar_prev - sigma ** 2, 0.0)) * eps_hat
    x_prev = math.sqrt(abar_prev) * x0_hat + direction
    if sigma > 0:
        x_prev = x_prev + sigma * randn_like(x, generator)
    return x_prev


def dpm_solver_pp_2m_step(s: NoiseSchedule, i: int, x: torch.Tensor, x0_hat: torch.Tensor, prev=None, *,
                          stochastic: bool = False, generator=None):
    """One DPM-Solver++(2M) step from index ``i`` of ``s`` to ``i - 1`` (the module docstring has
    the formulas); ``stochastic=True`` takes the SDE form, drawing its noise on ``generator``.

    :param prev: what the previous step of this trajectory returned as its memory, or None on a
        trajectory's first step (which is then first order).
    :returns: ``(x_prev, memory)``; pass ``memory`` to the next step of the same trajectory.
    """
    alpha_s, sigma_s = math.sqrt(float(s.alpha_bars[i])), math.sqrt(1.0 - float(s.alpha_bars[i]))
    alpha_t, sigma_t = math.sqrt(float(s.alpha_bars_prev[i])), math.sqrt(1.0 - float(s.alpha_bars_prev[i]))
    # e^{-h} = (sigma_t / alpha_t) / (sigma_s / alpha_s), written without logs so that the
    # clean end (sigma_t = 0) and a zero-SNR start (alpha_s = 0) stay finite
    exp_neg_h = (sigma_t * alpha_s) / (alpha_t * sigma_s)
    h = -math.log(exp_neg_h) if 0.0 < exp_neg_h < math.inf else None
    D = x0_hat
    if prev is not None and i > 0 and h is not None and prev[1] is not None:
        r = prev[1] / h
        D = (1 + 1 / (2 * r)) * x0_hat - (1 / (2 * r)) * prev[0]
    memory = (x0_hat, h)
    if not stochastic:
        return (sigma_t / sigma_s) * x - alpha_t * (exp_neg_h - 1.0) * D, memory
    z = randn_like(x, generator)
    return ((sigma_t / sigma_s) * exp_neg_h * x + alpha_t * (1.0 - exp_neg_h ** 2) * D
            + sigma_t * math.sqrt(1.0 - exp_neg_h ** 2) * z), memory


def _model_device(model):
    params = getattr(model, "parameters", None)
    if callable(params):
        for p in params():
            return p.device
    return torch.device("cpu")


def _check_shape(shape) -> tuple:
    if isinstance(shape, torch.Size):
        shape = tuple(shape)
    if not isinstance(shape, (tuple, list)) or not shape or not all(
            isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
        raise ValueError(f"shape must be a non-empty tuple of positive ints (N, ...), got {shape!r}")
    return tuple(shape)


@torch.no_grad()
def sample(model, s: NoiseSchedule, shape, sampler: str = "ddpm", steps: int | None = None,
           eta: float = 0.0, x_T: torch.Tensor | None = None, generator: torch.Generator | None = None, *,
           prediction: str = "eps", spacing: str = "trailing", clip_x0: float | None = None,
           variance: str = "small", start: int = 0, hook=None, trajectory: bool = False,
           progress: bool = True, device=None, amp: bool | None = None, channels_last: bool | None = None,
           **cond):
    """Draw samples by running the reverse process from x_T ~ N(0, I) (DDPM Algorithm 2).

    :param model: any callable ``model(x_t, t, **cond)`` returning a prediction shaped like x_t.
    :param s: the schedule the model was trained with.
    :param shape: output shape (N, ...).
    :param sampler: "ddpm" (ancestral, ``reverse.ddpm_step``), "ddim" (``ddim_step``, with
        ``eta`` in [0, 1]), "dpm++2m" (``dpm_solver_pp_2m_step``) or "sde-dpm++2m" (its SDE form).
    :param steps: how many steps to take (default T); ``spacing`` chooses which
        (``reverse.timesteps``).
    :param x_T: the starting point (fixes the start; must have ``shape``).
    :param prediction: what the model predicts: "eps", "x0" or "v".
    :param clip_x0: clamp every x0_hat to [-clip_x0, clip_x0] (1.0 for images); None: no clamp.
    :param start: skip the first ``start`` of the ``steps`` timesteps ts: ``x_T`` (then required)
        is x at timestep ``ts[start]`` and the loop makes ``steps - start`` model calls (SDEdit).
    :param hook: ``hook(x, t, x0_hat)`` called after every step with the new x, the training
        timestep it now lies at (-1 after the last step: x is then the sample) and the step's
        x0_hat; a tensor it returns replaces x (inpainting pastes the known pixels).
    :param trajectory: also return every intermediate x, stacked as (steps - start + 1, *shape) on CPU.
    :param amp, channels_last: bf16 autocast for the model call and channels_last images; default
        on for CUDA, off elsewhere. x and every update keep x's dtype (float32 when drawn here).
    :returns: x_0 (or ``(x_0, trajectory)``).
    """
    check_schedule(s)
    if not callable(model):
        raise TypeError(f"model must be callable as model(x_t, t), got {type(model).__name__}")
    shape = _check_shape(shape)
    check_choice("sampler", sampler, SAMPLERS)
    check_choice("prediction", prediction, PREDICTIONS)
    check_choice("variance", variance, VARIANCES)
    eta = check_float("eta", eta, low=0.0, high=1.0)
    if eta != 0.0 and sampler != "ddim":
        raise ValueError(f"eta applies only to sampler='ddim', got eta={eta} with sampler={sampler!r}")
    if clip_x0 is not None:
        clip_x0 = check_float("clip_x0", clip_x0, low=0, low_open=True)
    steps = s.T if steps is None else check_int("steps", steps, low=1, high=s.T)
    start = check_int("start", start, low=0, high=steps - 1)
    if hook is not None and not callable(hook):
        raise TypeError(f"hook must be callable as hook(x, t, x0_hat), got {type(hook).__name__}")
    ts = timesteps(s.T, steps, spacing)
    sub = s.respace(ts)                       # index i of `sub` stands for timestep ts[steps-1-i]

    if x_T is None:
        if start:
            raise ValueError(f"start={start} needs x_T: the partly noised x at timestep {int(ts[start])}")
        dev = torch.device(device) if device is not None else _model_device(model)
        x = randn_like(torch.empty(shape, device=dev), generator)
    else:
        check_tensor("x_T", x_T)
        if tuple(x_T.shape) != shape:
            raise ValueError(f"x_T must have shape {shape}, got {tuple(x_T.shape)}")
        x = x_T.clone()
    cuda = x.device.type == "cuda"
    amp = cuda if amp is None else amp
    if (cuda if channels_last is None else channels_last) and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    t_model = sub.timestep_map.to(x.device)   # moved once: no copy (and no wait) inside the loop
    ts_list = ts.tolist() + [-1]
    n, memory = shape[0], None
    path = [x.cpu()] if trajectory else None
    for i in tqdm(range(sub.T - 1 - start, -1, -1), desc=f"{sampler} sampling", disable=not progress,
                  leave=False):
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            out = model(x, t_model[i].expand(n), **cond)
        if not isinstance(out, torch.Tensor) or out.shape != x.shape:
            raise ValueError(f"model output must have shape {tuple(x.shape)}, got "
                             f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}")
        x0_hat, eps_hat = to_x0_eps(sub, x, i, out.to(x.dtype), prediction)
        x0_hat, eps_hat = clip_x0_hat(sub, x, i, x0_hat, eps_hat, clip_x0)
        if sampler == "ddpm":
            x = ddpm_step(sub, i, x, x0_hat, generator=generator, variance=variance)
        elif sampler == "ddim":
            x = ddim_step(sub, i, x, x0_hat, eps_hat, eta=eta, generator=generator)
        else:
            x, memory = dpm_solver_pp_2m_step(sub, i, x, x0_hat, memory, stochastic=sampler == "sde-dpm++2m",
                                              generator=generator)
        if hook is not None:
            replaced = hook(x, ts_list[steps - i], x0_hat)
            if replaced is not None:
                x = replaced
        if trajectory:
            path.append(x.cpu())
    return (x, torch.stack(path)) if trajectory else x
