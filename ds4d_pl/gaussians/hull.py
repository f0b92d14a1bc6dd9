"""Initial points without a mesh: a visual hull carved from silhouettes at known cameras.

A user's video has neither the synthetic object's true surface points nor an image-to-3D mesh,
and random points in a sphere start the Gaussians far from the object. The input view and the
pseudo views (Zero123++: six views at fixed known poses) give silhouettes of the middle frame
from up to seven directions; the voxels whose projections fall inside them bound the object.

Carving rules (one place, so the choices are explicit):

* Each voxel is tested by its **footprint**: the pixels (centres) under the projection of the
  voxel's circumscribed sphere, and at least the pixel under its centre (``footprint="voxel"``,
  default); the view votes "inside" when any of them is foreground. A voxel larger than a pixel
  that touches the object is kept even when its centre misses the silhouette, so a coarse grid
  does not lose thin parts. ``footprint="center"`` tests the centre's pixel only.
* A voxel whose centre projects **outside a view's image** (or lies behind its camera) gets
  **no evidence** from that view, neither inside nor outside: the object may be cropped in that
  view, and "outside the image" says nothing about occupancy.
* The pseudo views' silhouettes are widened by ``pseudo_margin`` of the image side: a
  generated view frames the object a few percent larger or smaller and off centre, and several
  such views at once would otherwise cut slices off the object.
* A voxel is kept when no input view places it outside its silhouette (``trust_input``: the
  input is a real observation), at most ``max_misses`` of the other views that see it do
  (``max_misses=1`` keeps the hull whole when one pseudo view is badly wrong), and at
  least ``min_hits`` views place it inside. By default ``min_hits`` is all views but
  ``max_misses`` and one: where few views see a voxel, two silhouette cones (one running past
  the object towards another camera) overlap with no third view to carve them away.

Without a given box, the grid is fitted to the silhouettes: a coarse carve of the cube around
the largest ball every camera sees whole (centred where the optical axes meet) gives the
object's bounding box, which plus one fine voxel of margin becomes the fine grid. Projection
runs over voxel chunks, so memory stays bounded at 128³ voxels × 7 views.

Surface points are coloured from the views that see them: a ray from the point (lifted off the
surface along the hull's normal) to the camera must not cross the hull's interior, so a point
on the back is not coloured by the front view; the input views win where they see the point.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from ds4d_pl.cameras import Cameras
from ds4d_pl.data.types import ViewSet

log = logging.getLogger(__name__)

ColorSource = Literal["input_first", "mean", "none"]
Footprint = Literal["voxel", "center"]

_COLOR_SOURCES = ("input_first", "mean", "none")
_FOOTPRINTS = ("voxel", "center")
#: Resolution of the coarse pass that fits the grid to the silhouettes. It only bounds the
#: object (with the conservative footprint), so 32 voxels across a generous cube are enough.
_COARSE_RESOLUTION = 32
#: A silhouette covering this much of its image is no mask at all.
_FULL_FRACTION = 0.99
#: Points closer to a camera than this (camera z) get no evidence from it.
_NEAR = 1e-6
#: Rays from a surface point towards a camera start this many voxels off the surface, along
#: the hull's normal: past the interior voxels a point jittered deep in its voxel may touch.
_RAY_LIFT_VOXELS = 1.0
#: Ray-marching step in voxels; half a voxel does not jump over a voxel the ray crosses squarely.
_RAY_STEP_VOXELS = 0.5
#: Surface points processed together when ray marching (memory ~ chunk × steps × 3 floats).
_RAY_CHUNK = 512


@dataclass
class HullConfig:
    """How the visual hull is carved and sampled.

    Attributes:
        resolution: Voxels along each axis of the (cubic) grid.
        half_size: Half the side of the grid cube in world units. ``None`` fits the cube to the
            silhouettes with a coarse pass (see module doc).
        center: Centre of the grid cube (and of the coarse search). ``None`` uses the point
            nearest to all cameras' optical axes (the origin for the object protocol).
        alpha_threshold: A pixel is foreground where ``alpha >= alpha_threshold``.
        max_misses: How many views that see a voxel may place it outside their silhouette with
            the voxel still kept (1: "inside for all but one view").
        trust_input: A miss in an input view (a real observation, not a prior's guess) always
            carves; ``max_misses`` then forgives the pseudo views only.
        pseudo_margin: Widen the pseudo views' silhouettes by this fraction of the image side
            (each way): a generated view frames the object a few percent larger or smaller and
            off centre, which would otherwise carve into the object in several views at once.
        min_hits: How many views must place a voxel inside their silhouette. ``None``: all
            views but ``max_misses`` and one more (which may not see the voxel), at least 2.
        footprint: ``voxel`` (any pixel under the projection of the voxel's circumscribed
            sphere, so voxels larger than pixels keep thin parts) or ``center`` (the pixel under
            the voxel's centre only).
        num_points: Number of points sampled on the hull's surface.
        colors: ``input_first`` (the input views where they see the point, else the mean of the
            other views that see it), ``mean`` (all views that see it) or ``none`` (mid grey).
        seed: Seed of the surface sampling.
        chunk: Voxels projected together; bounds memory (about ``chunk × views × 200`` bytes:
            45 MB for the default and 7 views; larger chunks are not faster).
    """

    resolution: int = 128
    half_size: float | None = None
    center: tuple[float, float, float] | None = None
    alpha_threshold: float = 0.5
    max_misses: int = 1
    trust_input: bool = True
    pseudo_margin: float = 0.02
    min_hits: int | None = None
    footprint: Footprint = "voxel"
    num_points: int = 4000
    colors: ColorSource = "input_first"
    seed: int = 0
    chunk: int = 1 << 15

    def __post_init__(self) -> None:
        for name, minimum in (
            ("resolution", 4),
            ("max_misses", 0),
            ("num_points", 1),
            ("seed", 0),
            ("chunk", 1),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(
                    f"HullConfig.{name} must be an integer >= {minimum}, got {value!r}"
                )
        if self.min_hits is not None and (
            isinstance(self.min_hits, bool)
            or not isinstance(self.min_hits, int)
            or self.min_hits < 1
        ):
            raise ValueError(
                f"HullConfig.min_hits must be an integer >= 1 or None, got {self.min_hits!r}"
            )
        if self.half_size is not None and not (
            isinstance(self.half_size, (int, float)) and 0 < self.half_size < math.inf
        ):
            raise ValueError(
                f"HullConfig.half_size must be a positive finite number or None, "
                f"got {self.half_size!r}"
            )
        if self.center is not None:
            center = tuple(self.center)
            if len(center) != 3 or not all(
                isinstance(c, (int, float)) and math.isfinite(c) for c in center
            ):
                raise ValueError(
                    f"HullConfig.center must be three finite numbers or None, got {self.center!r}"
                )
            self.center = (float(center[0]), float(center[1]), float(center[2]))
        if not (isinstance(self.alpha_threshold, (int, float)) and 0 < self.alpha_threshold < 1):
            raise ValueError(
                f"HullConfig.alpha_threshold must be in (0, 1), got {self.alpha_threshold!r}"
            )
        if not (isinstance(self.pseudo_margin, (int, float)) and 0 <= self.pseudo_margin < 0.5):
            raise ValueError(
                f"HullConfig.pseudo_margin must be in [0, 0.5), got {self.pseudo_margin!r}"
            )
        if not isinstance(self.trust_input, bool):
            raise ValueError(f"HullConfig.trust_input must be a bool, got {self.trust_input!r}")
        if self.footprint not in _FOOTPRINTS:
            raise ValueError(
                f"HullConfig.footprint must be one of {_FOOTPRINTS}, got {self.footprint!r}"
            )
        if self.colors not in _COLOR_SOURCES:
            raise ValueError(
                f"HullConfig.colors must be one of {_COLOR_SOURCES}, got {self.colors!r}"
            )


@dataclass(frozen=True)
class VoxelGrid:
    """A cubic grid of ``resolution³`` voxels; ``occupancy[i, j, k]`` is the voxel at x-index
    ``i``, y-index ``j``, z-index ``k``.

    Attributes:
        lo: ``(3,)`` world coordinates of the grid's minimum corner.
        voxel_size: Side of one voxel in world units.
        resolution: Voxels along each axis.
    """

    lo: Tensor
    voxel_size: float
    resolution: int

    @staticmethod
    def cube(center: Tensor, half_size: float, resolution: int) -> VoxelGrid:
        """The grid filling the cube of ``half_size`` around ``center``."""
        center = torch.as_tensor(center, dtype=torch.float32)
        return VoxelGrid(center - half_size, 2.0 * half_size / resolution, resolution)

    @property
    def hi(self) -> Tensor:
        """``(3,)`` world coordinates of the grid's maximum corner."""
        return self.lo + self.voxel_size * self.resolution

    def centers(self) -> Tensor:
        """``(R, R, R, 3)`` world coordinates of the voxel centres."""
        return self.flat_centers(0, self.resolution**3).reshape(*(self.resolution,) * 3, 3)

    def flat_centers(self, start: int, stop: int) -> Tensor:
        """``(stop - start, 3)`` centres of the voxels with flat (row-major) indices in range."""
        r = self.resolution
        flat = torch.arange(start, stop, device=self.lo.device)
        ijk = torch.stack([flat // (r * r), (flat // r) % r, flat % r], dim=-1)
        return self.lo + (ijk.float() + 0.5) * self.voxel_size

    def index_of(self, points: Tensor) -> tuple[Tensor, Tensor]:
        """Voxel indices ``(P, 3)`` of world points and whether each lies inside the grid."""
        ijk = torch.floor((points - self.lo) / self.voxel_size).long()
        inside = ((ijk >= 0) & (ijk < self.resolution)).all(dim=-1)
        return ijk.clamp(0, self.resolution - 1), inside


# --------------------------------------------------------------------------------------------
# Carving


def carve(
    alpha: Tensor, cameras: Cameras, cfg: HullConfig | None = None, num_input_views: int = 1
) -> tuple[Tensor, VoxelGrid]:
    """Space-carve the visual hull of the silhouettes ``alpha`` seen by ``cameras``.

    Args:
        alpha: ``(V, H, W)`` or ``(V, H, W, 1)`` foreground coverage in ``[0, 1]``.
        cameras: The ``V`` cameras (OpenCV axes, camera-to-world) of the silhouettes.
        cfg: Carving settings; defaults to :class:`HullConfig`.
        num_input_views: The leading views that are real observations; with
            ``cfg.trust_input`` a miss in one of them always carves.

    Returns:
        ``occupancy`` ``(R, R, R)`` bool and the :class:`VoxelGrid` that places it in the world.

    Raises:
        ValueError: No or a single view, shapes that disagree with the cameras, non-finite
            alpha, every silhouette empty, or an empty hull (silhouettes that do not agree with
            the cameras).
    """
    cfg = HullConfig() if cfg is None else cfg
    sil = _silhouettes(alpha, cameras, cfg)
    if isinstance(num_input_views, bool) or not 0 <= num_input_views <= len(sil):
        raise ValueError(f"carve: num_input_views must be in 0..{len(sil)}, got {num_input_views}")
    views = _Views.build(sil, cameras.to(sil.device), cfg, num_input_views)
    if cfg.half_size is None:
        grid = _fit_grid(sil, views, cfg)
    else:
        center = _grid_center(cameras, cfg).to(sil.device)
        grid = VoxelGrid.cube(center, float(cfg.half_size), cfg.resolution)
    occupancy = _carve_grid(grid, views, cfg, cfg.footprint)
    if not occupancy.any():
        raise ValueError(_empty_hull_message(sil, cfg, grid))
    return occupancy, grid


def required_hits(cfg: HullConfig, num_views: int) -> int:
    """Views that must place a voxel inside their silhouette: ``cfg.min_hits``, or by default
    all views but ``max_misses`` and one more (that one may not see the voxel at all, e.g. when
    the object is cropped in it), and never fewer than two."""
    if cfg.min_hits is not None:
        return cfg.min_hits
    return max(2, num_views - cfg.max_misses - 1)


def _silhouettes(alpha: Tensor, cameras: Cameras, cfg: HullConfig) -> Tensor:
    """Validated ``(V, H, W)`` boolean foreground masks."""
    if not isinstance(alpha, Tensor):
        raise TypeError(f"carve: alpha must be a tensor, got {type(alpha).__name__}")
    if alpha.ndim == 4 and alpha.shape[-1] == 1:
        alpha = alpha[..., 0]
    if alpha.ndim != 3:
        raise ValueError(
            f"carve: alpha must be (V, H, W) or (V, H, W, 1), got {tuple(alpha.shape)}"
        )
    v, h, w = alpha.shape
    if v == 0:
        raise ValueError("carve: no views (alpha has 0 silhouettes)")
    if v < 2:
        raise ValueError(
            "carve: a visual hull needs silhouettes from at least 2 views (one silhouette is a "
            "cone with no depth); got 1"
        )
    if len(cameras) != v:
        raise ValueError(f"carve: {v} silhouettes but {len(cameras)} cameras")
    if (cameras.height, cameras.width) != (h, w):
        raise ValueError(
            f"carve: silhouettes are {w}x{h} but cameras are {cameras.width}x{cameras.height}"
        )
    if cfg.min_hits is not None and cfg.min_hits > v:
        raise ValueError(f"carve: HullConfig.min_hits={cfg.min_hits} but only {v} views")
    if not bool(torch.isfinite(alpha).all()):
        raise ValueError("carve: alpha contains NaN or inf")
    sil = alpha >= cfg.alpha_threshold
    if not bool(sil.any()):
        raise ValueError(
            f"carve: every silhouette is empty at alpha_threshold={cfg.alpha_threshold} "
            f"(largest alpha {float(alpha.max()):.3g}); nothing to carve a hull from"
        )
    # A scene capture without masks (alpha 1 everywhere) bounds nothing: the "hull" would be the
    # whole region the cameras see.
    full = sil.flatten(1).float().mean(1) >= _FULL_FRACTION
    if bool(full.all()):
        raise ValueError(
            f"carve: every silhouette covers at least {_FULL_FRACTION:.0%} of its image "
            f"(alpha_threshold={cfg.alpha_threshold}): the views have no object mask to carve a "
            "hull from"
        )
    return sil


@dataclass
class _Views:
    """What carving reads from the views.

    Attributes:
        table: ``(V, H + 1, W + 1, 1)`` summed-area tables of the silhouettes.
        cameras: The ``V`` cameras.
        trusted: Leading views whose miss always carves.
        margin_px: ``(V,)`` pixels each silhouette is widened by.
    """

    table: Tensor
    cameras: Cameras
    trusted: int
    margin_px: Tensor

    @staticmethod
    def build(sil: Tensor, cameras: Cameras, cfg: HullConfig, num_input_views: int) -> _Views:
        v, h, w = sil.shape
        margin = torch.zeros(v, device=sil.device)
        margin[num_input_views:] = cfg.pseudo_margin * max(h, w)
        return _Views(
            _integral_image(sil[..., None].to(torch.int32)),
            cameras,
            num_input_views if cfg.trust_input else 0,
            margin,
        )


def _integral_image(values: Tensor) -> Tensor:
    """Summed-area tables ``(V, H + 1, W + 1, C)`` of ``(V, H, W, C)`` values: the sum over
    any pixel box in four lookups, whatever its size."""
    v, h, w, c = values.shape
    table = torch.zeros(v, h + 1, w + 1, c, dtype=values.dtype, device=values.device)
    table[:, 1:, 1:] = values.cumsum(1).cumsum(2)
    return table


def _grid_center(cameras: Cameras, cfg: HullConfig) -> Tensor:
    """``cfg.center``, else the least-squares point nearest to every optical axis."""
    if cfg.center is not None:
        return torch.tensor(cfg.center, dtype=torch.float32)
    axes = F.normalize(cameras.c2w[:, :3, 2].double().cpu(), dim=-1)
    origins = cameras.centers.double().cpu()
    proj = torch.eye(3, dtype=torch.float64) - axes[:, :, None] * axes[:, None, :]
    a, b = proj.sum(0), (proj @ origins[:, :, None]).sum(0)[:, 0]
    eig = torch.linalg.eigvalsh(a)
    if float(eig[0]) < 1e-6 * float(eig[-1]):
        raise ValueError(
            "carve: the cameras' optical axes are (nearly) parallel, so they do not say where "
            "the object is; set HullConfig.center and HullConfig.half_size"
        )
    return torch.linalg.solve(a, b).float()


def _seen_ball_radius(cameras: Cameras, center: Tensor) -> float:
    """Radius of the largest ball around ``center`` that every camera sees whole.

    The ball's angular radius from a camera is the angle from the ray through ``center`` to the
    nearest image border (measured on the axes, exact for a centred principal point).
    """
    k = cameras.K.double().cpu()
    c2w = cameras.c2w.double().cpu()
    to_center = center.double().cpu() - c2w[:, :3, 3]
    dist = to_center.norm(dim=-1)
    local = (to_center[:, None, :] @ c2w[:, :3, :3])[:, 0]  # camera-frame direction (OpenCV)
    radii = []
    for i in range(len(cameras)):
        x, y, z = (float(c) for c in local[i])
        if z <= 0:
            raise ValueError(
                f"carve: camera {i} looks away from the grid centre {center.tolist()}; set "
                "HullConfig.center and HullConfig.half_size"
            )
        fx, fy = float(k[i, 0, 0]), float(k[i, 1, 1])
        cx, cy = float(k[i, 0, 2]), float(k[i, 1, 2])
        # Angles from the centre's ray to the four image borders, along the image axes.
        ax, ay = math.atan2(x, z), math.atan2(y, z)
        left = ax - math.atan(-cx / fx)
        right = math.atan((cameras.width - cx) / fx) - ax
        top = ay - math.atan(-cy / fy)
        bottom = math.atan((cameras.height - cy) / fy) - ay
        angle = min(left, right, top, bottom)
        if angle <= 0:
            raise ValueError(
                f"carve: the grid centre {center.tolist()} projects outside camera {i}'s image; "
                "set HullConfig.center and HullConfig.half_size"
            )
        radii.append(float(dist[i]) * math.sin(angle))
    return min(radii)


def _fit_grid(sil: Tensor, views: _Views, cfg: HullConfig) -> VoxelGrid:
    """Fit the fine grid to a coarse hull carved in the cube around the ball all cameras see.

    The search stays within what every camera sees: far from it, a voxel is seen by only a few
    views, and two silhouette cones (one passing behind the object towards another camera)
    overlap there without the other views to carve it away.
    """
    cameras = views.cameras
    center = _grid_center(cameras, cfg).to(sil.device)
    reach = _seen_ball_radius(cameras, center)
    coarse = VoxelGrid.cube(center, reach, _COARSE_RESOLUTION)
    # Always the conservative footprint here: this pass only bounds the object, and a thin part
    # missed at coarse resolution would be cut off by the box.
    occ = _carve_grid(coarse, views, cfg, "voxel")
    if not occ.any():
        raise ValueError(_empty_hull_message(sil, cfg, coarse))
    ijk = occ.nonzero()
    lo_ijk, hi_ijk = ijk.amin(0), ijk.amax(0)
    if bool((lo_ijk == 0).any() or (hi_ijk == _COARSE_RESOLUTION - 1).any()):
        log.warning(
            "visual hull reaches the edge of the search cube (half-size %.3g around %s): the "
            "object may extend beyond what every camera sees; set HullConfig.half_size to "
            "carve a larger cube",
            reach,
            [round(float(c), 3) for c in center],
        )
    lo = coarse.lo + lo_ijk.float() * coarse.voxel_size
    hi = coarse.lo + (hi_ijk.float() + 1.0) * coarse.voxel_size
    # A cube (isotropic voxels) around the box, one fine voxel of margin on each side so the
    # outermost hull voxels still have an empty neighbour.
    r = cfg.resolution
    half = 0.5 * float((hi - lo).max()) * r / max(r - 2, 1)
    return VoxelGrid.cube(0.5 * (lo + hi), half, r)


def _carve_grid(grid: VoxelGrid, views: _Views, cfg: HullConfig, footprint: Footprint) -> Tensor:
    """Occupancy ``(R, R, R)`` of ``grid`` by the hit/miss rule (module doc)."""
    total = grid.resolution**3
    min_hits = required_hits(cfg, len(views.cameras))
    trusted = views.trusted
    keep = torch.empty(total, dtype=torch.bool, device=views.table.device)
    # Radius of the voxel's circumscribed sphere: its projection covers the voxel's footprint.
    radius = 0.5 * math.sqrt(3.0) * grid.voxel_size if footprint == "voxel" else 0.0
    for start in range(0, total, cfg.chunk):
        stop = min(start + cfg.chunk, total)
        seen, box = _footprints(
            grid.flat_centers(start, stop), radius, views.cameras, views.margin_px
        )
        inside = _box_sums(views.table, box)[..., 0] > 0
        miss = seen & ~inside
        keep[start:stop] = (
            ~miss[:trusted].any(0)
            & (miss[trusted:].sum(0) <= cfg.max_misses)
            & ((seen & inside).sum(0) >= min_hits)
        )
    return keep.reshape(*(grid.resolution,) * 3)


def _footprints(
    points: Tensor, radius: float, cameras: Cameras, margin_px: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Where world balls of ``radius`` around ``points`` land in every view, widened by
    ``margin_px`` ``(V,)`` pixels each way.

    Returns:
        ``seen`` ``(V, P)``: the centre projects inside the image, in front of the camera; and
        ``box`` ``(V, P, 4)``: the inclusive pixel rows and columns ``r0, r1, c0, c1`` (clamped
        to the image) whose pixel centres lie within the ball's projected radius, always
        including the pixel under the projected centre. Not "every pixel the box touches": that
        would widen each silhouette by up to another pixel, which the alpha threshold already
        settles.
    """
    h, w = cameras.height, cameras.width
    uv, z = cameras.project(points)
    u, v = uv[..., 0], uv[..., 1]
    seen = (z > _NEAR) & (u >= 0) & (u < w) & (v >= 0) & (v < h)
    zc = z.clamp_min(_NEAR)
    extra = 0.0 if margin_px is None else margin_px[:, None]
    ru = cameras.K[:, 0, 0, None] * radius / zc + extra
    rv = cameras.K[:, 1, 1, None] * radius / zc + extra
    cu, cv = torch.floor(u), torch.floor(v)
    c0 = torch.minimum(torch.ceil(u - ru - 0.5), cu).clamp(0, w - 1)
    c1 = torch.maximum(torch.floor(u + ru - 0.5), cu).clamp(0, w - 1)
    r0 = torch.minimum(torch.ceil(v - rv - 0.5), cv).clamp(0, h - 1)
    r1 = torch.maximum(torch.floor(v + rv - 0.5), cv).clamp(0, h - 1)
    return seen, torch.stack([r0, r1, c0, c1], dim=-1).long()


def _box_sums(table: Tensor, box: Tensor) -> Tensor:
    """``(V, P, C)`` sums of the values under each pixel box, from summed-area tables."""
    v, h1, w1, c = table.shape
    flat = table.reshape(v, h1 * w1, c)
    r0, r1, c0, c1 = box.unbind(-1)

    def at(r: Tensor, col: Tensor) -> Tensor:
        index = (r * w1 + col)[..., None].expand(-1, -1, c)
        return flat.gather(1, index)

    return at(r1 + 1, c1 + 1) - at(r0, c1 + 1) - at(r1 + 1, c0) + at(r0, c0)


def _empty_hull_message(sil: Tensor, cfg: HullConfig, grid: VoxelGrid) -> str:
    fractions = ", ".join(f"{float(f):.3f}" for f in sil.float().mean(dim=(1, 2)))
    lo = [round(float(x), 3) for x in grid.lo]
    hi = [round(float(x), 3) for x in grid.hi]
    return (
        f"carve: the visual hull is empty (max_misses={cfg.max_misses}, "
        f"min_hits={required_hits(cfg, len(sil))}, "
        f"grid {lo}..{hi}); the silhouettes do not agree on any voxel. Foreground fraction per "
        f"view: [{fractions}]. Check that the cameras are camera-to-world in OpenCV axes and "
        "match the images, or raise max_misses"
    )


# --------------------------------------------------------------------------------------------
# Surface sampling and colour


def surface_voxels(occupancy: Tensor) -> Tensor:
    """Occupied voxels with at least one empty 6-neighbour (the grid's outside counts as empty)."""
    p = F.pad(occupancy[None, None].float(), (1, 1, 1, 1, 1, 1))[0, 0]
    c = slice(1, -1)
    neighbours = (
        p[2:, c, c], p[:-2, c, c], p[c, 2:, c], p[c, :-2, c], p[c, c, 2:], p[c, c, :-2]
    )  # fmt: skip
    interior = torch.stack(neighbours).amin(0) > 0
    return occupancy & ~interior


def sample_hull_points(
    occupancy: Tensor,
    grid: VoxelGrid,
    images: Tensor,
    alpha: Tensor,
    cameras: Cameras,
    cfg: HullConfig | None = None,
    generator: torch.Generator | None = None,
    num_input_views: int = 1,
) -> tuple[Tensor, Tensor]:
    """Points on the hull's surface voxels, coloured from the views that see them.

    Each point lies uniformly inside a surface voxel (every surface voxel gets one before any
    gets two). A view colours a point when the point's voxel projects inside its image and
    silhouette, the point faces the camera and the ray from it to the camera does not cross the
    hull's interior, so a point on the back is not coloured by the front view. A point no view
    sees this way (at a silhouette's rim, or on a face kept against one view's silhouette) takes
    the colour the unoccluded views show under its footprint, and where they show only
    background, the colour of the nearest point that has one (mid grey if none has).

    Args:
        occupancy: ``(R, R, R)`` bool, from :func:`carve`.
        grid: The grid of ``occupancy``.
        images: ``(V, H, W, 3)`` straight colour in ``[0, 1]``.
        alpha: ``(V, H, W)`` or ``(V, H, W, 1)`` coverage of the same views.
        cameras: The ``V`` cameras.
        cfg: Sampling settings (``num_points``, ``colors``, ``alpha_threshold``, ``seed``).
        generator: Random source; ``torch.Generator().manual_seed(cfg.seed)`` when ``None``.
        num_input_views: The leading views that are real observations; with
            ``colors="input_first"`` they win wherever they see the point.

    Returns:
        ``points`` ``(N, 3)`` and ``colors`` ``(N, 3)`` in ``[0, 1]``, ``N = cfg.num_points``.
    """
    cfg = HullConfig() if cfg is None else cfg
    r = grid.resolution
    if occupancy.dtype != torch.bool or tuple(occupancy.shape) != (r, r, r):
        raise ValueError(
            f"sample_hull_points: occupancy must be a bool ({r}, {r}, {r}) tensor for the grid, "
            f"got {occupancy.dtype} {tuple(occupancy.shape)}"
        )
    if not bool(occupancy.any()):
        raise ValueError("sample_hull_points: occupancy is empty; there is no hull to sample")
    if alpha.ndim == 4 and alpha.shape[-1] == 1:
        alpha = alpha[..., 0]
    if images.ndim != 4 or images.shape[-1] != 3 or not images.is_floating_point():
        raise ValueError(
            "sample_hull_points: images must be float (V, H, W, 3) in [0, 1], got "
            f"{images.dtype} {tuple(images.shape)}"
        )
    if tuple(alpha.shape) != tuple(images.shape[:3]):
        raise ValueError(
            f"sample_hull_points: alpha {tuple(alpha.shape)} does not match images "
            f"{tuple(images.shape)}"
        )
    v, h, w = alpha.shape
    if len(cameras) != v or (cameras.height, cameras.width) != (h, w):
        raise ValueError(
            f"sample_hull_points: {v} images of {w}x{h} but {len(cameras)} cameras of "
            f"{cameras.width}x{cameras.height}"
        )
    if not 0 <= num_input_views <= v:
        raise ValueError(
            f"sample_hull_points: num_input_views must be in 0..{v}, got {num_input_views}"
        )
    g = torch.Generator().manual_seed(cfg.seed) if generator is None else generator
    device = occupancy.device
    surface = surface_voxels(occupancy).nonzero()
    n = cfg.num_points
    # Spread points evenly: a permutation of the surface voxels, repeated when N exceeds them.
    order = torch.cat(
        [torch.randperm(len(surface), generator=g) for _ in range(-(-n // len(surface)))]
    )
    jitter = torch.rand(n, 3, generator=g)
    ijk = surface[order[:n].to(device)].float()
    points = grid.lo + (ijk + jitter.to(device)) * grid.voxel_size
    if cfg.colors == "none":
        return points, torch.full_like(points, 0.5)
    cameras = cameras.to(device)
    colors = _point_colors(
        points, occupancy, grid, images.to(device), alpha.to(device), cameras, cfg, num_input_views
    )
    return points, colors


def _point_colors(
    points: Tensor,
    occupancy: Tensor,
    grid: VoxelGrid,
    images: Tensor,
    alpha: Tensor,
    cameras: Cameras,
    cfg: HullConfig,
    num_input_views: int,
) -> Tensor:
    """``(P, 3)`` colours of hull points by the visibility and priority rules.

    Whether a view's silhouette holds a point is asked of the point's voxel as carving asked
    it (same footprint and margin): a view that voted the voxel inside keeps it, even where the
    jittered point itself projects just outside the pixel-rounded silhouette. The colour is the
    alpha-weighted mean under the footprint without the margin (a view with no foreground
    there adds nothing), else under the widened one.
    """
    ijk, _ = grid.index_of(points)
    centers = grid.lo + (ijk.float() + 0.5) * grid.voxel_size
    radius = 0.5 * math.sqrt(3.0) * grid.voxel_size if cfg.footprint == "voxel" else 0.0
    views = _Views.build(alpha >= cfg.alpha_threshold, cameras, cfg, num_input_views)
    seen, carve_box = _footprints(centers, radius, cameras, views.margin_px)
    in_sil = seen & (_box_sums(views.table, carve_box)[..., 0] > 0)
    _, box = _footprints(centers, radius, cameras)
    # The occluder is the hull less its surface layer: a ray leaving a voxelised surface at a
    # grazing angle runs through the staircase of neighbouring surface voxels, which must not
    # hide the point; a ray from the back crosses the interior. (Parts thinner than about three
    # voxels have no interior and so do not occlude.)
    interior = occupancy & ~surface_voxels(occupancy)
    normals = _hull_normals(occupancy, grid, points)
    unoccluded = _unoccluded(points, normals, interior, grid, cameras)
    weight = in_sil & unoccluded
    if cfg.colors == "input_first" and num_input_views > 0:
        seen_by_input = weight[:num_input_views].any(0)
        weight[num_input_views:] &= ~seen_by_input
    # A point no silhouette claims (at a rim, after a tolerated miss) takes what the views that
    # see it unoccluded show under its footprint, if any foreground is there; else mid grey.
    unseen = ~weight.any(0)
    weight[:, unseen] = (seen & unoccluded)[:, unseen]
    # Alpha-weighted mean colour under the footprint: straight colour at the silhouette's rim,
    # not a blend with the background. Where that holds no foreground (a point kept by the
    # pseudo views' margin), the widened footprint's. Summed-area tables in float64 (sums of up
    # to H*W values must difference exactly enough), one view at a time to bound memory.
    sums = torch.zeros(2, len(points), 4, dtype=torch.float64, device=points.device)
    for view in range(len(cameras)):
        a = alpha[view, ..., None].double()
        table = _integral_image(torch.cat([images[view].double() * a, a], dim=-1)[None])
        w = weight[view, :, None].double()
        for i, b in enumerate((box, carve_box)):
            sums[i] += _box_sums(table, b[view : view + 1])[0] * w
    use = torch.where(sums[0, :, 3:] > 1e-6, sums[0], sums[1])
    num, den = use[:, :3], use[:, 3:]
    colored = den[:, 0] > 1e-6
    colors = torch.where(colored[:, None], num / den.clamp_min(1e-6), torch.full_like(num, 0.5))
    # A point no view shows (in a dent of the voxelised hull, or seen only past a silhouette's
    # rim) takes the colour of the nearest point that has one: the surface is locally coloured
    # alike far more often than it is mid grey.
    if bool(colored.any()) and not bool(colored.all()):
        lost = (~colored).nonzero()[:, 0]
        source = colored.nonzero()[:, 0]
        for start in range(0, len(lost), _RAY_CHUNK):
            chunk = lost[start : start + _RAY_CHUNK]
            nearest = torch.cdist(points[chunk], points[source]).argmin(dim=1)
            colors[chunk] = colors[source[nearest]]
    return colors.float().clamp(0.0, 1.0).contiguous()


def _hull_normals(occupancy: Tensor, grid: VoxelGrid, points: Tensor) -> Tensor:
    """Outward unit normals ``(P, 3)`` of the hull at ``points`` (zero where undefined).

    Minus the gradient of the occupancy smoothed over 5³ voxels: smooth enough that the
    voxel staircase does not tilt it, local enough to follow the hull's shape.
    """
    smooth = F.avg_pool3d(occupancy[None, None].float(), 5, stride=1, padding=2)[0, 0]
    padded = F.pad(smooth, (1, 1, 1, 1, 1, 1))
    ijk, _ = grid.index_of(points)
    i, j, k = (ijk + 1).unbind(-1)
    grad = torch.stack(
        [
            padded[i + 1, j, k] - padded[i - 1, j, k],
            padded[i, j + 1, k] - padded[i, j - 1, k],
            padded[i, j, k + 1] - padded[i, j, k - 1],
        ],
        dim=-1,
    )
    norm = grad.norm(dim=-1, keepdim=True)
    return torch.where(norm > 1e-6, -grad / norm.clamp_min(1e-6), torch.zeros_like(grad))


def _unoccluded(
    points: Tensor, normals: Tensor, occluder: Tensor, grid: VoxelGrid, cameras: Cameras
) -> Tensor:
    """``(V, P)``: each point faces each camera and the segment to it misses ``occluder``.

    The ray starts lifted off the surface along the normal (the usual shadow-ray offset), so
    at grazing angles it does not run through the voxel staircase under its own point. A point
    without a normal (inside a thin part) is only tested by the ray.
    """
    vs = grid.voxel_size
    flat = occluder.reshape(-1)
    r = grid.resolution
    out = torch.zeros(len(cameras), len(points), dtype=torch.bool, device=points.device)
    lo, hi = grid.lo.to(points), grid.hi.to(points)
    step = _RAY_STEP_VOXELS * vs
    for view, center in enumerate(cameras.centers):
        for start in range(0, len(points), _RAY_CHUNK):
            n = normals[start : start + _RAY_CHUNK]
            p = points[start : start + _RAY_CHUNK] + _RAY_LIFT_VOXELS * vs * n
            d = center - p
            length = d.norm(dim=-1, keepdim=True)
            d = d / length.clamp_min(1e-12)
            facing = ((n * d).sum(-1) > 0) | (n == 0).all(-1)
            # Where the ray leaves the grid box (slab method); nothing beyond can occlude.
            safe = torch.where(d.abs() < 1e-12, torch.full_like(d, 1e-12), d)
            exit_t = torch.maximum((lo - p) / safe, (hi - p) / safe).amin(-1, keepdim=True)
            end = torch.minimum(length, exit_t)[:, 0]
            steps = int(math.ceil(max(float(end.max()), 0.0) / step)) + 1
            t = torch.arange(steps, device=p.device) * step
            q = p[:, None] + t[None, :, None] * d[:, None]
            ijk, inside = grid.index_of(q)
            hit = flat[(ijk[..., 0] * r + ijk[..., 1]) * r + ijk[..., 2]]
            hit &= inside & (t[None] < end[:, None])
            out[view, start : start + _RAY_CHUNK] = facing & ~hit.any(-1)
    return out


def hull_points_from_views(
    views: ViewSet,
    frame: int | None = None,
    cfg: HullConfig | None = None,
    num_input_views: int = 1,
) -> tuple[Tensor, Tensor]:
    """Initial points of one frame of a training :class:`ViewSet`, from its visual hull.

    Args:
        views: The training views (view 0 the input video, the rest pseudo views), with known
            cameras.
        frame: Frame index; the middle frame ``T // 2`` (the synthetic object's init frame)
            when ``None``.
        cfg: Carving and sampling settings.
        num_input_views: Leading views that are real observations (``Scene4D.num_input_views``).

    Returns:
        ``points`` ``(N, 3)`` and ``colors`` ``(N, 3)`` in ``[0, 1]``.
    """
    cfg = HullConfig() if cfg is None else cfg
    t = views.num_frames
    f = t // 2 if frame is None else frame
    if isinstance(f, bool) or not isinstance(f, int) or not 0 <= f < t:
        raise ValueError(f"hull_points_from_views: frame must be in 0..{t - 1}, got {frame!r}")
    cameras = views.cameras_at(f)
    alpha = views.alpha[:, f]
    occupancy, grid = carve(alpha, cameras, cfg, num_input_views)
    points, colors = sample_hull_points(
        occupancy, grid, views.rgb[:, f], alpha, cameras, cfg, None, num_input_views
    )
    log.info(
        "visual hull of frame %d from %d views: %d³ voxels of %.4g, %d occupied, %d points",
        f,
        views.num_views,
        grid.resolution,
        grid.voxel_size,
        int(occupancy.sum()),
        len(points),
    )
    return points, colors
