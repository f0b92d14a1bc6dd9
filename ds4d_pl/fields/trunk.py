"""Pieces shared by the fields that map an encoding (+ an optional conditioning feature) through
a ReLU trunk: the deformation field (:mod:`ds4d_pl.fields.deformation`) and the dynamic NeRF
(:mod:`ds4d_pl.fields.nerf`)."""

from __future__ import annotations

from torch import Tensor, nn


def relu_stack(width: int, hidden: int, depth: int) -> tuple[nn.Sequential, int]:
    """``depth`` x (``Linear`` -> ``ReLU``) of width ``hidden`` reading ``width`` features, and
    its output width (``width`` itself when ``depth`` is 0: an identity)."""
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    return nn.Sequential(*layers), width


def check_cond(owner: str, cond: Tensor | None, n: int, cond_dim: int, how: str) -> None:
    """Raise a ``ValueError`` naming ``owner`` unless ``cond`` is what a field built with
    ``cond_dim`` needs for ``n`` points: ``None`` iff ``cond_dim`` is 0, else ``(n, cond_dim)``.

    Args:
        owner: The field's name, first word of the message.
        cond: The conditioning feature that was passed.
        n: Number of query points.
        cond_dim: The conditioning width the field was built with.
        how: How to build the field to condition it (ends the message of an unexpected
            feature).
    """
    if cond_dim == 0:
        if cond is not None:
            raise ValueError(
                f"{owner}: got a conditioning feature of shape {tuple(cond.shape)} but the field "
                f"was built with cond_dim=0; {how}"
            )
        return
    if cond is None:
        raise ValueError(
            f"{owner}: built with cond_dim={cond_dim} but no conditioning was given; pass an "
            f"(N, {cond_dim}) feature"
        )
    if cond.shape != (n, cond_dim):
        raise ValueError(
            f"{owner}: conditioning must have shape (N={n}, cond_dim={cond_dim}), got "
            f"{tuple(cond.shape)}"
        )
