"""Classifier-free guidance: one network, trained with and without its condition, extrapolated.

Ho & Salimans 2022 train a single model on (x_t, condition) and, a fraction p of the time
(Algorithm 1, p_uncond = 0.1 here), on (x_t, "no condition"); ``drop_condition`` does that
replacement. At sampling time both predictions are made and combined (their eq. 6):

    eps~ = (1 + w) eps(x_t, c) - w eps(x_t, none)  =  eps_u + s (eps_c - eps_u),   s = 1 + w.

Two conventions for the same thing: Ho & Salimans' w (w = 0: no guidance) and the scale s of
Stable Diffusion and most code today (s = 1: no guidance, the conditional model; s = 0: the
unconditional model). minidiff uses s everywhere; ``scale_from_w`` converts. A model trained
without condition dropout has an unconditional branch it never learned, and any s != 1 then
extrapolates from noise.

``cfg`` wraps a model so that any sampler in ``samplers`` runs it unchanged: one network call
on the doubled batch [x_t, x_t] with [condition, no condition].
"""
from __future__ import annotations

import torch

from ._checks import check_float, check_tensor

__all__ = ["drop_condition", "cfg", "scale_from_w", "expand_condition"]


def scale_from_w(w: float) -> float:
    """Ho & Salimans' guidance weight w as the scale s = 1 + w used here."""
    return 1.0 + check_float("w", w, low=-1.0)


def drop_condition(cond: torch.Tensor, p: float, generator: torch.Generator | None = None,
                   null: torch.Tensor | float | int = 0) -> torch.Tensor:
    """``cond`` with each row replaced by ``null`` (the "no condition" value: a tensor shaped like
    one row, or a number) with probability ``p``, independently, drawn on ``generator``."""
    check_tensor("cond", cond)
    p = check_float("p", p, low=0.0, high=1.0)
    if cond.dim() == 0:
        raise ValueError("cond must have a batch dimension (N, ...)")
    dev = generator.device if generator is not None else cond.device
    drop = (torch.rand(cond.shape[0], generator=generator, device=dev) < p).to(cond.device)
    null = torch.as_tensor(null, dtype=cond.dtype, device=cond.device)
    if null.dim() and tuple(null.shape) != tuple(cond.shape[1:]):
        raise ValueError(f"null must be a number or shaped like one row of cond {tuple(cond.shape[1:])}, "
                         f"got {tuple(null.shape)}")
    return torch.where(drop.view(-1, *([1] * (cond.dim() - 1))), null.expand_as(cond), cond)


def expand_condition(name: str, value: torch.Tensor, n: int) -> torch.Tensor:
    """An unconditional value with batch size 1 (or n) repeated to batch size n."""
    check_tensor(name, value)
    if value.dim() == 0 or value.shape[0] not in (1, n):
        raise ValueError(f"{name} must have batch size 1 or {n}, got shape {tuple(value.shape)}")
    return value.expand(n, *value.shape[1:])


def cfg(model, scale: float, uncond: dict):
    """``guided(x_t, t, **cond) = eps_u + scale * (eps_c - eps_u)`` (Ho & Salimans 2022, eq. 6 with
    s = 1 + w), as a model any sampler runs: ``samplers.sample(cfg(model, 3.0, uncond), s, shape,
    context=tokens)``.

    :param scale: s >= 0. s = 1 calls the conditional model alone, s = 0 the unconditional one;
        any other s makes one call on the doubled batch.
    :param uncond: the "no condition" keyword arguments, one per condition the model takes, each
        with batch size 1 or N, e.g. ``{"context": tokenizer.encode([""])}`` or
        ``{"y": torch.tensor([num_classes])}``.
    """
    scale = check_float("scale", scale, low=0.0)
    if not callable(model):
        raise TypeError(f"model must be callable as model(x_t, t, **cond), got {type(model).__name__}")
    if not isinstance(uncond, dict) or not uncond:
        raise TypeError("uncond must be a dict of the model's 'no condition' keyword arguments, e.g. "
                        "{'context': tokens_of_the_empty_prompt}")

    def guided(x: torch.Tensor, t: torch.Tensor, **cond) -> torch.Tensor:
        if set(cond) != set(uncond):
            raise ValueError(f"the condition's keywords {sorted(cond)} must be those of uncond {sorted(uncond)}")
        n = x.shape[0]
        for k, v in cond.items():
            check_tensor(k, v)
            if v.shape[0] != n:
                raise ValueError(f"{k} must have one row per image ({n}), got batch size {v.shape[0]}")
        null = {k: expand_condition(f"uncond[{k!r}]", v.to(x.device), n) for k, v in uncond.items()}
        if scale == 1.0:
            return model(x, t, **cond)
        if scale == 0.0:
            return model(x, t, **null)
        both = model(torch.cat([x, x]), torch.cat([t, t]), **{k: torch.cat([cond[k], null[k]]) for k in cond})
        eps_c, eps_u = both.chunk(2)
        return eps_u + scale * (eps_c - eps_u)

    if callable(getattr(model, "parameters", None)):      # where it runs: samplers draw x_T on that device
        guided.parameters = model.parameters
    return guided
