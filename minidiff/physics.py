"""Ink in water: the physics that diffusion models borrow their name and their maths from.

A drop of ink spreads because each ink particle is kicked about at random (Brownian motion).
Seen one particle at a time, the position is a random walk whose variance grows linearly in
time, <x^2> = 2 D t per axis (Einstein 1905, eq. for the mean square displacement). Seen as a
concentration, the same process is the heat (diffusion) equation, du/dt = D laplacian(u)
(Fick's second law); the particles' histogram solves it.

Plain diffusion never stops spreading. Add a gentle pull toward the origin and it settles
instead: the Ornstein–Uhlenbeck process dx = -theta x dt + sqrt(2 theta) dW (Uhlenbeck &
Ornstein 1930). Its exact one-step update,

    x_{t+dt} = exp(-theta dt) x_t + sqrt(1 - exp(-2 theta dt)) z,

is the DDPM forward step sqrt(1 - beta) x + sqrt(beta) z with beta = 1 - exp(-2 theta dt):
whatever the ink looked like, it ends as N(0, I). That is the forward process of a diffusion
model (Song et al. 2021, "Score-Based Generative Modeling through SDEs", §3.4, the VP SDE).

Un-mixing runs time backwards. Anderson (1982) showed the reverse of dx = f dt + g dW is

    dx = [f(x) - g^2 grad log p_t(x)] dt + g dW_reverse                  (Song et al. 2021, eq. 6)

so all we need is the score grad log p_t. For an ink drop that starts Gaussian, p_t is
Gaussian at every t and its score is exact: -(x - m_t) / v_t. A diffusion model learns this
score for data whose p_t we cannot write down.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ._checks import check_float, check_int, check_tensor

__all__ = ["brownian_motion", "heat_equation", "grid_variance", "grid_entropy",
           "gaussian_entropy", "ou_process", "ou_marginal", "gaussian_score", "unmix"]


def brownian_motion(n: int, steps: int, dt: float = 0.01, D: float = 1.0, dim: int = 2,
                    generator=None) -> torch.Tensor:
    """Random walks started at the origin: x_{k+1} = x_k + sqrt(2 D dt) z.

    Returns positions of shape (steps + 1, n, dim); Var[x_k] = 2 D k dt per axis (Einstein 1905).
    """
    n = check_int("n", n, low=1)
    steps = check_int("steps", steps, low=0)
    dt = check_float("dt", dt, low=0, low_open=True)
    D = check_float("D", D, low=0, low_open=True)
    dim = check_int("dim", dim, low=1)
    kicks = math.sqrt(2 * D * dt) * torch.randn(steps, n, dim, generator=generator, dtype=torch.float64)
    return torch.cat([torch.zeros(1, n, dim, dtype=torch.float64), kicks.cumsum(0)])


_LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]], dtype=torch.float64)


def heat_equation(u0: torch.Tensor, steps: int, dt: float = 0.2, D: float = 1.0, dx: float = 1.0) -> torch.Tensor:
    """Solve du/dt = D laplacian(u) on a 2-D grid with no-flux walls.

    Forward Euler in time, the five-point Laplacian in space (the FTCS scheme):
    u_{k+1} = u_k + (D dt / dx^2) (u_N + u_S + u_E + u_W - 4 u). It is stable for
    D dt / dx^2 <= 1/4, conserves the total amount of ink, and (away from the walls) grows the
    ink's variance by exactly 2 D dt per axis per step, as a random walk does.

    :param u0: (H, W) initial concentration. Returns (steps + 1, H, W), float64.
    """
    check_tensor("u0", u0)
    if u0.dim() != 2:
        raise ValueError(f"u0 must be a 2-D grid (H, W), got shape {tuple(u0.shape)}")
    steps = check_int("steps", steps, low=0)
    r = check_float("dt", dt, low=0, low_open=True) * check_float("D", D, low=0, low_open=True) \
        / check_float("dx", dx, low=0, low_open=True) ** 2
    if r > 0.25:
        raise ValueError(f"D * dt / dx**2 must be <= 0.25 for a stable explicit scheme, got {r:.3g}")
    u = u0.to(torch.float64)[None, None]
    frames = [u[0, 0]]
    for _ in range(steps):
        padded = F.pad(u, (1, 1, 1, 1), mode="replicate")      # no-flux (Neumann) walls
        u = u + r * F.conv2d(padded, _LAPLACIAN[None, None])
        frames.append(u[0, 0])
    return torch.stack(frames)


def grid_variance(u: torch.Tensor, dx: float = 1.0) -> torch.Tensor:
    """Variance per axis of the ink distribution u (H, W) or (K, H, W), treating u as a density."""
    dx = check_float("dx", dx, low=0, low_open=True)
    h, w = u.shape[-2:]
    y = torch.arange(h, dtype=torch.float64) * dx
    x = torch.arange(w, dtype=torch.float64) * dx
    p = u / u.sum(dim=(-2, -1), keepdim=True)
    py, px = p.sum(-1), p.sum(-2)
    var_y = (py * y ** 2).sum(-1) - (py * y).sum(-1) ** 2
    var_x = (px * x ** 2).sum(-1) - (px * x).sum(-1) ** 2
    return torch.stack([var_y, var_x], dim=-1)


def grid_entropy(u: torch.Tensor) -> torch.Tensor:
    """Shannon entropy -sum p log p of the ink distribution (in nats), per frame."""
    p = u / u.sum(dim=(-2, -1), keepdim=True)
    return -(p * torch.log(p.clamp_min(1e-300))).sum(dim=(-2, -1))


def gaussian_entropy(var, dim: int = 1) -> torch.Tensor:
    """Differential entropy of N(m, var I) in ``dim`` dimensions: (dim / 2) log(2 pi e var)."""
    dim = check_int("dim", dim, low=1)
    return 0.5 * dim * torch.log(2 * math.pi * math.e * torch.as_tensor(var, dtype=torch.float64))


def ou_process(x0: torch.Tensor, steps: int, dt: float = 0.01, theta: float = 1.0,
               generator=None) -> torch.Tensor:
    """Ornstein–Uhlenbeck paths by the exact update x' = e^{-theta dt} x + sqrt(1 - e^{-2 theta dt}) z.

    Returns (steps + 1, *x0.shape). Any start ends at N(0, I): this is the DDPM forward step
    with beta = 1 - exp(-2 theta dt).
    """
    check_tensor("x0", x0)
    steps = check_int("steps", steps, low=0)
    dt = check_float("dt", dt, low=0, low_open=True)
    theta = check_float("theta", theta, low=0, low_open=True)
    a = math.exp(-theta * dt)
    b = math.sqrt(1 - a * a)
    xs = [x0.to(torch.float64)]
    for _ in range(steps):
        xs.append(a * xs[-1] + b * torch.randn(x0.shape, generator=generator, dtype=torch.float64))
    return torch.stack(xs)


def ou_marginal(mean0, var0, t, theta: float = 1.0):
    """Mean and variance at time t of the OU process started at N(mean0, var0):
    m_t = e^{-theta t} m_0, v_t = e^{-2 theta t} v_0 + 1 - e^{-2 theta t}."""
    theta = check_float("theta", theta, low=0, low_open=True)
    t = torch.as_tensor(t, dtype=torch.float64)
    decay = torch.exp(-theta * t)
    mean0 = torch.as_tensor(mean0, dtype=torch.float64)
    var0 = torch.as_tensor(var0, dtype=torch.float64)
    return decay * mean0, decay ** 2 * var0 + 1 - decay ** 2


def gaussian_score(x: torch.Tensor, mean, var) -> torch.Tensor:
    """grad_x log N(x; mean, var I) = -(x - mean) / var: the exact score of a Gaussian."""
    return -(x - mean) / var


def unmix(x_T: torch.Tensor, mean0, var0, t_end: float, steps: int, theta: float = 1.0,
          ode: bool = False, generator=None) -> torch.Tensor:
    """Run the ink backwards from time ``t_end`` to 0 using the exact Gaussian score.

    Reverse SDE (Song et al. 2021, eq. 6) with f(x) = -theta x, g^2 = 2 theta, stepped by
    Euler–Maruyama backwards in time:  x <- x - [f(x) - g^2 score] dt + g sqrt(dt) z.
    With ``ode=True`` the probability-flow ODE (Song et al. 2021, eq. 13) is used instead:
    x <- x - [f(x) - g^2 score / 2] dt, with no noise.

    :param x_T: samples at time t_end (e.g. N(0, I) draws), any shape (N, d).
    :param mean0, var0: the ink drop at time 0 (per-axis mean and variance).
    :returns: (steps + 1, *x_T.shape), from t_end down to 0.
    """
    check_tensor("x_T", x_T)
    t_end = check_float("t_end", t_end, low=0, low_open=True)
    steps = check_int("steps", steps, low=1)
    dt = t_end / steps
    g2 = 2 * theta
    x = x_T.to(torch.float64)
    xs = [x]
    for k in range(steps, 0, -1):
        m, v = ou_marginal(mean0, var0, k * dt, theta)
        score = gaussian_score(x, m, v)
        drift = -theta * x - (0.5 if ode else 1.0) * g2 * score
        x = x - drift * dt
        if not ode:
            x = x + math.sqrt(g2 * dt) * torch.randn(x.shape, generator=generator, dtype=torch.float64)
        xs.append(x)
    return torch.stack(xs)
