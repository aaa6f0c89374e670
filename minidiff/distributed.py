"""Training on several processes under torchrun: each rank's rows, and what the ranks agree on.

Every process draws the same global batch (one seed) and ``shard`` gives it its rows, so N
processes train what one process trains at the same global batch (``training.train`` wraps the model
in DistributedDataParallel, which averages the gradients). ``gather`` brings a whole-batch loss's
inputs (CLIP's) together with their gradients. ``agree`` makes the ranks check a value they must share
(the step a run resumes from), and ``rank_seed`` gives each rank its own dropout masks.
"""
from __future__ import annotations

import os

import torch

__all__ = ["world", "init_distributed", "shard", "gather", "unwrap", "agree", "rank_seed"]


def world() -> tuple[int, int]:
    """(rank, world size) of this process: torch.distributed's when a process group is running
    (``init_distributed``, torchrun), else (0, 1)."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed() -> tuple[int, int]:
    """Join the process group torchrun describes (``WORLD_SIZE`` > 1 in the environment): NCCL with
    one GPU per process (``LOCAL_RANK``) where CUDA is present, else gloo on the CPU. Without torchrun
    (no ``WORLD_SIZE``, or 1) it does nothing. Returns ``world()``."""
    import torch.distributed as dist
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return world()


def _rows(batch) -> int | None:
    """The batch's n: the first dimension of its first tensor with one (None if it holds none)."""
    if isinstance(batch, torch.Tensor):
        return batch.shape[0] if batch.dim() else None
    parts = batch.values() if isinstance(batch, dict) else batch if isinstance(batch, (tuple, list)) else ()
    return next((n for n in map(_rows, parts) if n is not None), None)


def shard(batch, rank: int, world_size: int):
    """This rank's rows of a global batch: rows [rank n / W, (rank + 1) n / W) of every tensor (in
    a tuple, list or dict too) whose first dimension is the batch's n (its first tensor's); anything
    else (a condition of one row shared by all, a number) every rank takes whole. Every rank draws
    the same global batch, and each takes its slice: so N processes see exactly what one process sees."""
    n = _rows(batch)
    if world_size == 1 or n is None:
        return batch
    if n % world_size:
        raise ValueError(f"the global batch ({n}) must divide by the number of processes ({world_size}); "
                         f"pick a batch size that is a multiple of {world_size}")
    k = n // world_size

    def cut(b):
        if isinstance(b, torch.Tensor):
            return b[rank * k:(rank + 1) * k] if b.dim() and b.shape[0] == n else b
        if isinstance(b, (tuple, list)):
            return type(b)(cut(x) for x in b)
        if isinstance(b, dict):
            return {key: cut(v) for key, v in b.items()}
        return b

    return cut(batch)


def agree(name: str, value: int) -> int:
    """``value``, after checking that every rank holds the same one (a collective: every rank calls
    it). Ranks that disagree all raise the same ValueError, so none is left waiting in a collective."""
    rank, world_size = world()
    if world_size == 1:
        return value
    import torch.distributed as dist
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    span = torch.tensor([value, -value], dtype=torch.long, device=device)
    dist.all_reduce(span, op=dist.ReduceOp.MAX)
    high, low = int(span[0]), -int(span[1])
    if high != low:
        raise ValueError(f"{name} differs across the {world_size} processes (from {low} to {high}; {value} on rank "
                         f"{rank}): every process must see the same checkpoint file (a shared disk), or none")
    return value


def rank_seed(seed: int, step: int) -> int:
    """The seed of the model's own randomness (dropout) at ``step`` on this rank under torchrun: a
    function of (seed, step, rank), so ranks draw different masks for their different rows, and a
    resumed run draws the same ones again."""
    rank, world_size = world()
    return (seed * 1_000_003 + step * world_size + rank) % 2 ** 63


class _Gather(torch.autograd.Function):
    """Forward: every rank's rows, concatenated in rank order. Backward: the gradients for the whole
    concatenation are summed over the ranks, and each rank keeps its own rows' part."""

    @staticmethod
    def forward(ctx, x):
        import torch.distributed as dist
        rank, world_size = world()
        parts = [torch.empty_like(x) for _ in range(world_size)]
        dist.all_gather(parts, x.contiguous())
        ctx.rows = slice(rank * len(x), (rank + 1) * len(x))
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad):
        import torch.distributed as dist
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.rows]


def gather(x: torch.Tensor) -> torch.Tensor:
    """The global batch's rows of ``x`` (this rank's ``x`` and every other's, in rank order, as
    ``shard`` split them), with gradients flowing back to each rank's own rows; ``x`` itself in one
    process. For a loss over the whole batch rather than a mean over its samples, such as CLIP's
    contrastive loss (every image against every caption): each rank then computes the global batch's
    loss, each rank's gradient for its rows sums the ranks' (W times the loss's), and DDP's average
    over the W ranks leaves exactly the one-process gradient."""
    return _Gather.apply(x) if world()[1] > 1 else x


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model itself inside ``torch.compile`` and DistributedDataParallel wrappers (what ``train``
    passes a loss is wrapped so): for reaching its attributes, such as CLIP's ``logit_scale``."""
    from torch.nn.parallel import DistributedDataParallel
    while True:
        if isinstance(model, DistributedDataParallel):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), torch.nn.Module):      # torch.compile's wrapper
            model = model._orig_mod
        else:
            return model
