"""Pure regularisers of HexPlane feature planes.

Every function takes one plane of shape ``(..., H, W)`` (any leading dimensions, typically
``(1, C, H, W)`` as stored by :class:`~ds4d_pl.fields.hexplane.HexPlane`) and returns a scalar
that is differentiable with respect to the plane. They are means, not sums, so a loss weight does
not depend on the plane resolution or channel count.

Time planes store time along the row axis ``H`` (``dim=-2``); that is the axis the temporal
regularisers act on.

Invariants are locked by ``tests/test_fields.py``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _check_plane(plane: Tensor, name: str) -> None:
    if plane.ndim < 2:
        raise ValueError(f"{name}: plane must have shape (..., H, W), got {tuple(plane.shape)}")


def plane_tv(plane: Tensor) -> Tensor:
    """Squared total variation of a plane (spatial smoothness).

    ``tv(P) = mean_{h,w} (P[h+1, w] - P[h, w])² + mean_{h,w} (P[h, w+1] - P[h, w])²``,
    with the means over all leading dimensions too. A constant plane gives exactly 0.

    Args:
        plane: ``(..., H, W)`` feature plane.

    Returns:
        Scalar tensor.
    """
    _check_plane(plane, "plane_tv")
    tv = 0.0 * plane.sum()  # keeps the graph (and a grad of zeros) when a side has size 1
    if plane.shape[-2] > 1:
        tv = tv + (plane[..., 1:, :] - plane[..., :-1, :]).square().mean()
    if plane.shape[-1] > 1:
        tv = tv + (plane[..., :, 1:] - plane[..., :, :-1]).square().mean()
    return tv


def time_smoothness(plane: Tensor) -> Tensor:
    """Second-order smoothness along time (rows, ``dim=-2``) of a time plane.

    ``s(P) = mean_{k,w} (P[k+1, w] - 2 P[k, w] + P[k-1, w])²``: penalises acceleration of the
    feature over time rather than velocity, so uniform motion is free. Zero for any plane that is
    affine in time (in particular a constant one). Fewer than three time samples give 0.

    Args:
        plane: ``(..., T, W)`` feature plane with time along ``dim=-2``.

    Returns:
        Scalar tensor.
    """
    _check_plane(plane, "time_smoothness")
    if plane.shape[-2] < 3:
        return 0.0 * plane.sum()
    second = plane[..., 2:, :] - 2.0 * plane[..., 1:-1, :] + plane[..., :-2, :]
    return second.square().mean()


def time_l1(plane: Tensor) -> Tensor:
    """L1 distance of a time plane to 1.

    ``l(P) = mean |1 - P|``. Time planes multiply the spatial features, so 1 means "no
    time-dependent change"; this pulls the field towards a static scene where the data allows.

    Args:
        plane: ``(..., T, W)`` feature plane.

    Returns:
        Scalar tensor.
    """
    _check_plane(plane, "time_l1")
    return (1.0 - plane).abs().mean()


def mean_of(values: list[Tensor]) -> Tensor:
    """Mean of a non-empty list of scalar tensors (keeps the graph)."""
    if not values:
        raise ValueError("mean_of: empty list")
    return torch.stack(values).mean()
