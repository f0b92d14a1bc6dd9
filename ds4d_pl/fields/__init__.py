"""Deformation fields: space-time encodings (HexPlane, 4D hash grid), heads and regularisers."""

from __future__ import annotations

from torch import Tensor

from ds4d_pl.config import FieldConfig
from ds4d_pl.fields.deformation import DeformationField, build_encoding
from ds4d_pl.fields.hashgrid import HashGrid4D
from ds4d_pl.fields.hexplane import HexPlane, aabb_from_points
from ds4d_pl.fields.regularizers import plane_tv, time_l1, time_smoothness


def build_field(
    cfg: FieldConfig, cond_dim: int = 0, bounds: Tensor | None = None
) -> DeformationField:
    """Build the deformation field described by ``cfg``.

    Args:
        cfg: Encoding and MLP sizes.
        cond_dim: Width of the per-Gaussian conditioning feature (0: unconditioned).
        bounds: Optional ``(2, 3)`` box ``[min; max]`` of the encoding. To derive it from points,
            call ``field.set_bounds(points)`` (or pass ``aabb_from_points(points)``).

    Returns:
        A fresh field whose deltas are exactly zero.
    """
    return DeformationField(cfg, cond_dim=cond_dim, bounds=bounds)


__all__ = [
    "DeformationField",
    "HashGrid4D",
    "HexPlane",
    "aabb_from_points",
    "build_encoding",
    "build_field",
    "plane_tv",
    "time_l1",
    "time_smoothness",
]
