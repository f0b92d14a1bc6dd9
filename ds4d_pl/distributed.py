"""Collectives that keep the replicated Gaussians identical on every DDP rank.

DDP's reducer registers its parameters once, when the model is wrapped; densification replaces
the Gaussian tables by new ``nn.Parameter`` objects of another size, so they are kept out of the
reducer (see ``DS4DSystem.ddp_ignored_names``) and synchronised here instead:

* :func:`all_reduce_mean_grads_` averages their gradients over ranks after ``backward`` (what DDP
  does for the fixed-size field), so every rank takes the same optimizer step;
* :func:`all_reduce_sum` / :func:`all_reduce_max` combine the densification statistics, so every
  rank clones, splits and prunes the same Gaussians;
* :func:`broadcast_` copies rank 0's tables to the others once at the start.

Every function is a no-op (no collective call) unless a process group with more than one rank
is initialised, so a single-process run behaves exactly as without this module. Plain torch, no
Lightning. Invariants are locked by ``tests/test_distributed.py``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed(group: dist.ProcessGroup | None = None) -> bool:
    """Whether collectives are needed: a process group is initialised with more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1


def world_size(group: dist.ProcessGroup | None = None) -> int:
    """Number of ranks (1 when not distributed)."""
    return dist.get_world_size(group) if dist.is_available() and dist.is_initialized() else 1


def all_reduce_sum(t: Tensor, group: dist.ProcessGroup | None = None) -> Tensor:
    """Sum of ``t`` over ranks, as a new tensor (``t`` itself when not distributed)."""
    return _all_reduce(t, dist.ReduceOp.SUM, group)


def all_reduce_max(t: Tensor, group: dist.ProcessGroup | None = None) -> Tensor:
    """Element-wise maximum of ``t`` over ranks, as a new tensor (``t`` when not distributed)."""
    return _all_reduce(t, dist.ReduceOp.MAX, group)


def _all_reduce(t: Tensor, op: dist.ReduceOp, group: dist.ProcessGroup | None) -> Tensor:
    if not is_distributed(group):
        return t
    out = t.detach().clone()
    dist.all_reduce(out, op=op, group=group)
    return out


def any_rank(flag: bool, group: dist.ProcessGroup | None = None) -> bool:
    """Whether ``flag`` is true on at least one rank (every rank gets the same answer, so a
    decision such as stopping on a non-finite loss is taken by all ranks together)."""
    if not is_distributed(group):
        return flag
    return bool(all_reduce_max(torch.tensor([float(flag)]), group)[0] > 0)


def all_reduce_mean_grads_(
    params: Iterable[torch.nn.Parameter], group: dist.ProcessGroup | None = None
) -> None:
    """Replace each parameter's ``.grad`` by its mean over ranks, in one collective.

    Matches DDP's averaging: a rank without a gradient for a parameter contributes zeros, and
    a parameter without a gradient on every rank keeps ``grad = None`` (Adam then skips it, as
    in a single-process run). Gradients are flattened into one buffer together with a
    has-gradient flag per parameter, so the whole call is a single ``all_reduce``.

    Args:
        params: Parameters in the same order on every rank (shapes must agree across ranks).
        group: Process group (default: the world).
    """
    if not is_distributed(group):
        return
    params = [p for p in params if p.requires_grad]
    if not params:
        return
    ref = params[0]
    chunks, flags = [], []
    for p in params:
        if p.grad is None:
            chunks.append(torch.zeros(p.numel(), dtype=torch.float32, device=ref.device))
            flags.append(0.0)
        else:
            if p.grad.is_sparse:
                raise ValueError("all_reduce_mean_grads_: sparse gradients are not supported")
            chunks.append(p.grad.detach().reshape(-1).float())
            flags.append(1.0)
    chunks.append(torch.tensor(flags, dtype=torch.float32, device=ref.device))
    flat = torch.cat(chunks)
    dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
    n = world_size(group)
    had_grad = flat[-len(params) :] > 0
    offset = 0
    for i, p in enumerate(params):
        k = p.numel()
        if had_grad[i]:
            mean = (flat[offset : offset + k] / n).view_as(p).to(p.dtype)
            if p.grad is None:
                p.grad = mean.clone()
            else:
                p.grad.copy_(mean)
        offset += k


def broadcast_(tensors: Sequence[Tensor], src: int = 0, group: dist.ProcessGroup | None = None):
    """Overwrite ``tensors`` in place with those of rank ``src`` (no-op when not distributed).

    Raises:
        ValueError: On every rank, when the shapes differ between ranks (e.g. Gaussian counts
            that drifted apart), instead of a hang or a garbled broadcast.
    """
    if not is_distributed(group):
        return
    check_same_shapes(tensors, group)
    with torch.no_grad():
        for t in tensors:
            dist.broadcast(t.data, src=src, group=group)


def check_same_shapes(tensors: Sequence[Tensor], group: dist.ProcessGroup | None = None) -> None:
    """Raise ``ValueError`` on every rank if the shapes of ``tensors`` differ between ranks."""
    if not is_distributed(group):
        return
    shapes = [list(t.shape) for t in tensors]
    gathered: list[list[list[int]] | None] = [None] * world_size(group)
    dist.all_gather_object(gathered, shapes, group=group)
    if any(g != gathered[0] for g in gathered):
        raise ValueError(f"tensor shapes differ between ranks: {gathered}")


def require_unused_parameter_detection(strategy: object) -> bool:
    """Make a Lightning DDP strategy detect unused parameters; ``True`` if it had to be set.

    The deformation field and the conditioning take no part in coarse steps, so DDP's reducer
    must be told which parameters a step did not use, or its next step fails with "Expected to
    have finished reduction in the prior iteration". ``configs/trainer/ddp.yaml`` names the
    ``ddp_find_unused_parameters_true`` strategy explicitly; this covers a plain ``ddp``. Reads
    the strategy's (private) DDP keyword arguments; strategies without them are left alone.
    """
    kwargs = getattr(strategy, "_ddp_kwargs", None)
    if isinstance(kwargs, dict) and not kwargs.get("find_unused_parameters"):
        kwargs["find_unused_parameters"] = True
        return True
    return False
