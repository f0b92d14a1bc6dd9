"""HexPlane: a factorised space-time feature grid over ``(x, y, z, t)``.

Six 2D feature planes, one per pair of axes (``xy, xz, yz, xt, yt, zt``), are bilinearly sampled at
the projections of a query point and multiplied elementwise. One such set of six planes exists per
spatial resolution multiplier; their features are concatenated, so
``out_dim = feature_dim * len(multires)``.

Coordinates:

* world positions are mapped into ``[-1, 1]³`` by the axis-aligned box ``aabb`` (a buffer, set from
  the initial points with :meth:`BoundedEncoding.set_bounds`);
* time ``t ∈ [0, 1]`` is mapped onto the full grid range ``[-1, 1]``, so ``t = 0`` and ``t = 1``
  hit the first and last time samples. ``half_time_range=True`` reproduces anchor code that feeds
  ``t`` directly and therefore only uses the ``[0, 1]`` half of the time axis.

Queries outside the box (or outside ``[0, 1]`` in time) are clamped onto it. Gaussians do drift out
of the initial box during training; with zero padding their spatial features would collapse to 0
and, because features are multiplied across planes, their whole feature would vanish abruptly at
the boundary. Clamping instead gives them the feature of the nearest boundary point, so the
deformation stays continuous across the boundary (and the hash grid, which shares this helper,
never indexes outside its tables).

Invariants are locked by ``tests/test_fields.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ds4d_pl.config import FieldConfig
from ds4d_pl.fields.regularizers import mean_of, plane_tv, time_l1, time_smoothness

#: Axis pairs of the six planes; 0, 1, 2 are x, y, z and 3 is time. The first axis of a pair runs
#: along the plane's columns (``W``), the second along its rows (``H``), as ``grid_sample`` reads
#: ``(x, y)`` grid coordinates.
PLANE_AXES: tuple[tuple[int, int], ...] = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))
PLANE_NAMES: tuple[str, ...] = ("xy", "xz", "yz", "xt", "yt", "zt")

# Smallest half-width of an aabb axis, so a flat point cloud does not cause a division by zero.
_MIN_HALF_EXTENT = 1e-4


def aabb_from_points(points: Tensor, margin: float = 0.1) -> Tensor:
    """Axis-aligned bounding box of a point cloud, enlarged by a relative margin.

    Each axis ``[lo, hi]`` becomes ``[lo - margin·(hi-lo), hi + margin·(hi-lo)]``; an axis thinner
    than ``2e-4`` is widened symmetrically to that.

    Args:
        points: ``(P, 3)`` positions, ``P >= 1``, finite.
        margin: Fraction of the box size added on each side (``>= 0``).

    Returns:
        ``(2, 3)`` box ``[min; max]`` (detached, same dtype and device as ``points``).
    """
    if points.ndim != 2 or points.shape[1] != 3 or points.shape[0] == 0:
        raise ValueError(f"set_bounds: points must be (P>0, 3), got {tuple(points.shape)}")
    if margin < 0:
        raise ValueError(f"set_bounds: margin must be >= 0, got {margin}")
    pts = points.detach()
    if not bool(torch.isfinite(pts).all()):
        raise ValueError("set_bounds: points contain NaN or inf")
    lo, hi = pts.min(dim=0).values, pts.max(dim=0).values
    size = hi - lo
    lo, hi = lo - margin * size, hi + margin * size
    centre, half = 0.5 * (lo + hi), 0.5 * (hi - lo)
    half = half.clamp_min(_MIN_HALF_EXTENT)
    return torch.stack([centre - half, centre + half])


def check_query(x: Tensor, t: Tensor | float, who: str) -> tuple[Tensor, Tensor]:
    """Validate a field query and broadcast the time to one value per point.

    Args:
        x: ``(N, 3)`` positions.
        t: A float, a 0-d / one-element tensor (shared by all points), or ``(N,)`` / ``(N, 1)``.
        who: Name used in error messages.

    Returns:
        ``x`` unchanged and ``t`` as an ``(N, 1)`` tensor of ``x``'s dtype and device.
    """
    if not isinstance(x, Tensor) or x.ndim != 2 or x.shape[1] != 3:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{who}: x must have shape (N, 3), got {shape}")
    n = x.shape[0]
    tt = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    if tt.numel() == 1:
        tt = tt.reshape(1, 1).expand(n, 1)
    elif tt.shape in ((n,), (n, 1)):
        tt = tt.reshape(n, 1)
    else:
        raise ValueError(
            f"{who}: t must be a scalar, (N,) or (N, 1) with N={n} matching x, "
            f"got shape {tuple(tt.shape)}"
        )
    # Values are deliberately not checked: that would cost a host sync per step, and a NaN
    # position propagates to NaN features and then to the loss, where the training loop stops
    # with one clear error for every source of NaN.
    return x, tt


class BoundedEncoding(nn.Module):
    """Base of the space-time encodings: owns the ``aabb`` buffer and the coordinate mapping.

    Args:
        bounds: Optional ``(2, 3)`` box ``[min; max]``; defaults to ``[-1, 1]³``. Use
            :meth:`set_bounds` to derive it from a point cloud.
    """

    aabb: Tensor
    out_dim: int

    def __init__(self, bounds: Tensor | None = None) -> None:
        super().__init__()
        self.register_buffer("aabb", torch.tensor([[-1.0] * 3, [1.0] * 3]))
        if bounds is not None:
            self.set_aabb(bounds)

    @torch.no_grad()
    def set_aabb(self, aabb: Tensor) -> None:
        """Set the box directly.

        Args:
            aabb: ``(2, 3)`` tensor ``[min; max]`` with ``min < max`` on every axis.
        """
        aabb = torch.as_tensor(aabb)
        if aabb.shape != (2, 3):
            raise ValueError(f"aabb must have shape (2, 3) [min; max], got {tuple(aabb.shape)}")
        if not bool((aabb[1] > aabb[0]).all()):
            raise ValueError(f"aabb must have min < max on every axis, got {aabb.tolist()}")
        # In place, so the buffer keeps its device and dtype after the module was moved.
        self.aabb.copy_(aabb.to(self.aabb))

    def set_bounds(self, points: Tensor, margin: float = 0.1) -> None:
        """Fit the box to a point cloud (see :func:`aabb_from_points`).

        Args:
            points: ``(P, 3)`` positions, e.g. the initial Gaussian centres.
            margin: Fraction of the box size added on each side.
        """
        self.set_aabb(aabb_from_points(points, margin))

    def normalize_positions(self, x: Tensor) -> Tensor:
        """Map world positions into ``[-1, 1]³`` by the box, clamping points outside it."""
        lo, hi = self.aabb[0].to(x.dtype), self.aabb[1].to(x.dtype)
        return ((x - lo) / (hi - lo) * 2.0 - 1.0).clamp(-1.0, 1.0)


class HexPlane(BoundedEncoding):
    """Multi-resolution HexPlane over ``(x, y, z, t)``.

    Args:
        feature_dim: Channels per plane.
        plane_resolution: Base spatial resolution (samples per spatial axis at multiplier 1).
        time_resolution: Samples along time (shared by all scales).
        multires: Spatial resolution multipliers, one plane set per entry.
        half_time_range: Map ``t ∈ [0, 1]`` to grid coordinate ``t`` (half the axis) instead of
            ``2t - 1`` (the full axis).
        bounds: Optional ``(2, 3)`` box ``[min; max]``.

    Attributes:
        out_dim: ``feature_dim * len(multires)``.
        grids: One ``ParameterList`` of six ``(1, C, H, W)`` planes per scale, in
            :data:`PLANE_AXES` order.
    """

    def __init__(
        self,
        feature_dim: int = 16,
        plane_resolution: int = 32,
        time_resolution: int = 8,
        multires: list[int] | tuple[int, ...] = (1, 2),
        half_time_range: bool = False,
        bounds: Tensor | None = None,
    ) -> None:
        super().__init__(bounds)
        multires = list(multires)
        if feature_dim < 1:
            raise ValueError(f"HexPlane: feature_dim must be >= 1, got {feature_dim}")
        if plane_resolution < 2 or time_resolution < 2:
            raise ValueError(
                "HexPlane: plane_resolution and time_resolution must be >= 2 (bilinear "
                f"interpolation needs two samples), got {plane_resolution} and {time_resolution}"
            )
        if not multires or any(int(m) < 1 for m in multires):
            raise ValueError(
                f"HexPlane: multires must be a non-empty list of ints >= 1, got {multires}"
            )
        self.feature_dim = feature_dim
        self.plane_resolution = plane_resolution
        self.time_resolution = time_resolution
        self.multires = [int(m) for m in multires]
        self.half_time_range = half_time_range
        self.out_dim = feature_dim * len(self.multires)

        self.grids = nn.ModuleList()
        for m in self.multires:
            res = [plane_resolution * m] * 3 + [time_resolution]
            planes = nn.ParameterList()
            for a, b in PLANE_AXES:
                plane = torch.empty(1, feature_dim, res[b], res[a])
                if b == 3:
                    # Features are multiplied across planes: time planes at 1 make the initial
                    # feature time-independent.
                    nn.init.ones_(plane)
                else:
                    nn.init.uniform_(plane, 0.1, 0.5)
                planes.append(nn.Parameter(plane))
            self.grids.append(planes)

    @classmethod
    def from_config(cls, cfg: FieldConfig, bounds: Tensor | None = None) -> HexPlane:
        """Build from a :class:`~ds4d_pl.config.FieldConfig`."""
        return cls(
            feature_dim=cfg.feature_dim,
            plane_resolution=cfg.plane_resolution,
            time_resolution=cfg.time_resolution,
            multires=cfg.multires,
            half_time_range=cfg.half_time_range,
            bounds=bounds,
        )

    def normalize_time(self, t: Tensor) -> Tensor:
        """Map ``t ∈ [0, 1]`` (clamped) to the grid coordinate of the time axis."""
        t = t.clamp(0.0, 1.0)
        return t if self.half_time_range else t * 2.0 - 1.0

    def time_planes(self) -> list[Tensor]:
        """The three planes containing time, of every scale."""
        return [
            p
            for planes in self.grids
            for (_, b), p in zip(PLANE_AXES, planes, strict=True)
            if b == 3
        ]

    def space_planes(self) -> list[Tensor]:
        """The three purely spatial planes, of every scale."""
        return [
            p
            for planes in self.grids
            for (_, b), p in zip(PLANE_AXES, planes, strict=True)
            if b != 3
        ]

    def forward(self, x: Tensor, t: Tensor | float) -> Tensor:
        """Space-time features of points.

        Args:
            x: ``(N, 3)`` world positions.
            t: Time in ``[0, 1]``: a float, a one-element tensor, ``(N,)`` or ``(N, 1)``.

        Returns:
            ``(N, out_dim)`` features.
        """
        x, tt = check_query(x, t, "HexPlane.forward")
        n = x.shape[0]
        dtype = self.grids[0][0].dtype
        coords = torch.cat([self.normalize_positions(x), self.normalize_time(tt)], dim=-1)
        coords = coords.to(dtype)
        # grid_sample's border padding turns a NaN coordinate into a finite border sample; keep
        # the NaN visible (it must reach the loss check) by returning NaN for such points.
        bad = ~torch.isfinite(coords).all(dim=-1, keepdim=True)
        grids = [coords[:, (a, b)].reshape(1, n, 1, 2) for a, b in PLANE_AXES]
        feats = []
        for planes in self.grids:
            feat = None
            for grid, plane in zip(grids, planes, strict=True):
                # padding "border" only matters at round-off: coordinates are already clamped.
                sampled = F.grid_sample(
                    plane, grid, mode="bilinear", padding_mode="border", align_corners=True
                )
                # Channel-major (C, N) stays contiguous through the product (much faster on CPU
                # than multiplying transposed views); transposed once at the end.
                sampled = sampled.reshape(self.feature_dim, n)
                feat = sampled if feat is None else feat * sampled
            feats.append(feat)
        feat = torch.cat(feats, dim=0).t()
        return torch.where(bad, torch.full_like(feat, float("nan")), feat)

    def regularizers(self) -> dict[str, Tensor]:
        """HexPlane regularisers, each a mean over the planes it applies to (and all scales).

        Returns:
            ``plane_tv`` (TV of the spatial planes), ``time_smooth`` (second-order smoothness of
            the time planes along t) and ``time_l1`` (time planes towards 1); see
            :mod:`ds4d_pl.fields.regularizers`.
        """
        space, time = self.space_planes(), self.time_planes()
        return {
            "plane_tv": mean_of([plane_tv(p) for p in space]),
            "time_smooth": mean_of([time_smoothness(p) for p in time]),
            "time_l1": mean_of([time_l1(p) for p in time]),
        }

    def extra_repr(self) -> str:
        return (
            f"feature_dim={self.feature_dim}, plane_resolution={self.plane_resolution}, "
            f"time_resolution={self.time_resolution}, multires={self.multires}, "
            f"half_time_range={self.half_time_range}, out_dim={self.out_dim}"
        )
