"""A verdict needs its error bar: intervals for a difference, and what they allow one to say.

A claim such as "the EMA weights score a lower FID than the raw ones" is a claim about the sign of
a difference d = a - b. It **holds** when the whole confidence interval of d lies on the claimed
side of 0, it **does not hold** when the whole interval lies on the other side, and otherwise
the measurement **cannot tell at this n**: the difference is inside its own noise.

Intervals here:

* two sets of measurements (per-seed scores, per-image errors), **paired** when item i of a and of
  b share everything but the change (the same starting noise, the same test image): the
  Student-t interval of the mean of the differences, mean(d) +- t_{1-alpha/2, n-1} s_d / sqrt(n);
  **unpaired**: Welch's interval, with Welch–Satterthwaite degrees of freedom
  nu = (s_a^2/n_a + s_b^2/n_b)^2 / ((s_a^2/n_a)^2/(n_a-1) + (s_b^2/n_b)^2/(n_b-1)) (Welch 1947);
* a statistic of whole sample sets (FID, KID): the percentile bootstrap (Efron & Tibshirani
  1993, §13.3), resampling the same rows of both sets when they are paired.

The Student-t quantile is computed here (no SciPy at run time): its CDF is the integral of the
density Gamma((nu+1)/2) / (sqrt(nu pi) Gamma(nu/2)) (1 + x^2/nu)^(-(nu+1)/2), by Simpson's rule,
and the quantile is found by bisection.
"""
from __future__ import annotations

import math

import torch

from ._checks import check_choice, check_float, check_int

__all__ = ["t_quantile", "mean_interval", "difference_interval", "bootstrap_interval", "verdict", "compare"]

CLAIMS = ("a < b", "a > b")


def _t_cdf(x: float, nu: float, points: int = 2000) -> float:
    """P(T <= x) for Student's t with nu degrees of freedom (Simpson's rule on [0, |x|])."""
    if x == 0:
        return 0.5
    log_c = math.lgamma((nu + 1) / 2) - math.lgamma(nu / 2) - 0.5 * math.log(nu * math.pi)
    h = abs(x) / points
    f = [math.exp(log_c - (nu + 1) / 2 * math.log1p((k * h) ** 2 / nu)) for k in range(points + 1)]
    area = h / 3 * (f[0] + f[-1] + 4 * sum(f[1:-1:2]) + 2 * sum(f[2:-1:2]))
    return 0.5 + math.copysign(area, x)


def t_quantile(p: float, nu: float) -> float:
    """The p-quantile of Student's t with nu degrees of freedom (nu = inf: the normal's)."""
    p = check_float("p", p, low=0.0, high=1.0, low_open=True, high_open=True)
    if not (isinstance(nu, float) and nu == math.inf):
        nu = check_float("nu", nu, low=0.0, low_open=True)
    else:
        return math.sqrt(2) * torch.erfinv(torch.tensor(2 * p - 1, dtype=torch.float64)).item()
    lo, hi = -1.0, 1.0
    while _t_cdf(lo, nu) > p:
        lo *= 2
    while _t_cdf(hi, nu) < p:
        hi *= 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _t_cdf(mid, nu) < p else (lo, mid)
    return (lo + hi) / 2


def _values(name, x) -> torch.Tensor:
    x = torch.as_tensor(x, dtype=torch.float64).flatten()
    if len(x) < 2 or not torch.isfinite(x).all():
        raise ValueError(f"{name} must hold at least 2 finite measurements, got {x.tolist()}")
    return x


def mean_interval(x, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): the Student-t interval of the mean of the measurements ``x``."""
    x = _values("x", x)
    level = check_float("level", level, low=0.0, high=1.0, low_open=True, high_open=True)
    half = t_quantile(0.5 + level / 2, len(x) - 1) * x.std().item() / math.sqrt(len(x))
    return x.mean().item(), x.mean().item() - half, x.mean().item() + half


def difference_interval(a, b, *, paired: bool, level: float = 0.95) -> tuple[float, float, float]:
    """(mean(a) - mean(b), low, high): paired, the t interval of the mean of a_i - b_i; unpaired,
    Welch's interval (module docstring)."""
    a, b = _values("a", a), _values("b", b)
    if paired:
        if len(a) != len(b):
            raise ValueError(f"paired measurements need as many of a as of b, got {len(a)} and {len(b)}")
        return mean_interval(a - b, level)
    level = check_float("level", level, low=0.0, high=1.0, low_open=True, high_open=True)
    va, vb = a.var().item() / len(a), b.var().item() / len(b)
    d = a.mean().item() - b.mean().item()
    if va + vb == 0:
        return d, d, d
    nu = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = t_quantile(0.5 + level / 2, nu) * math.sqrt(va + vb)
    return d, d - half, d + half


def bootstrap_interval(statistic, n: int, *, resamples: int = 200, level: float = 0.95,
                       generator: torch.Generator | None = None) -> tuple[float, float]:
    """The percentile-bootstrap interval of ``statistic(rows)``, where ``rows`` is a resample (with
    replacement) of ``range(n)`` drawn on ``generator``: (low, high). A statistic of two sets
    that are paired row by row uses the same ``rows`` for both."""
    n = check_int("n", n, low=2)
    resamples = check_int("resamples", resamples, low=10)
    level = check_float("level", level, low=0.0, high=1.0, low_open=True, high_open=True)
    values = torch.tensor([statistic(torch.randint(0, n, (n,), generator=generator)) for _ in range(resamples)],
                          dtype=torch.float64)
    tail = (1 - level) / 2
    return torch.quantile(values, tail).item(), torch.quantile(values, 1 - tail).item()


def verdict(low: float, high: float, claim: str, n) -> str:
    """What the interval [low, high] of d = a - b says of ``claim`` ("a < b" or "a > b")."""
    check_choice("claim", claim, CLAIMS)
    below, above = high < 0, low > 0
    if (claim == "a < b" and below) or (claim == "a > b" and above):
        return "holds"
    if (claim == "a < b" and above) or (claim == "a > b" and below):
        return "does not hold"
    return f"cannot tell at n = {n}"


def compare(a, b, *, claim: str, paired: bool, level: float = 0.95) -> dict:
    """Compare two sets of measurements (each a list or tensor of numbers, e.g. one FID per seed,
    one error per test image) for ``claim`` ("a < b" or "a > b"): the ``difference`` mean(a) -
    mean(b), its interval (``low``, ``high``, at ``level``), ``n`` and the ``verdict``: "holds",
    "does not hold" or "cannot tell at n = ..." (module docstring)."""
    check_choice("claim", claim, CLAIMS)
    a, b = _values("a", a), _values("b", b)
    d, low, high = difference_interval(a, b, paired=paired, level=level)
    n = len(a) if paired else f"{len(a)} and {len(b)}"
    return {"difference": d, "low": low, "high": high, "level": level, "n": n, "paired": paired, "claim": claim,
            "verdict": verdict(low, high, claim, n)}
