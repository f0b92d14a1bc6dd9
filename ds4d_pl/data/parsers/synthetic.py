"""Embedded synthetic 4D object: an analytic ray-cast video that needs no download.

The object is a small procedural "creature" made of three analytic primitives:

* a **body** — an ellipsoid (radii ≈ 0.36 × 0.40 × 0.32) centred slightly below the origin,
  with a soft-checker texture and a lighter belly patch facing the input camera;
* a **head** — a sphere (radius 0.16) on top of the body with a wavy pattern and two dark
  "eye" spots facing +z;
* an **arm** — a capsule (length 0.26, radius 0.065) hinged on the body's right side (+x,
  slightly towards the camera) with spiral bands. It swings up and down in the image plane of
  the input view, so it is clearly visible from the front.

Everything lies within ≈ 0.62 of the origin, so the whole object is in view at the Zero123
protocol's radius 2 and vertical FoV 49.1°. Shading is Lambertian (a key and a fill light plus
ambient), colours are straight (not premultiplied) and alpha is the anti-aliased pixel coverage
from ``supersample²`` rays per pixel.

The images are produced by :func:`render_synthetic`, an *independent* analytic ray caster
(closed-form ray–ellipsoid/sphere/capsule intersections vectorised over pixels). It never uses a
Gaussian-splatting renderer, so tests that compare the package's renderer against these images
are not circular.

Motion kinds (the three video types of the DS4D paper), for times ``t ∈ [0, 1]``:

* ``static_only`` — nothing moves; every frame is identical.
* ``mostly_static`` — the body and head are static, only the arm swings (one period over the
  clip, so the clip loops). The arm's swept area is ≈ 15 % of the front-view silhouette.
* ``dynamic_only`` — the whole object moves: the body yaws, rolls, sways sideways and bobs, the
  head follows it rigidly and the arm swings on top of that.

The seed changes the palette, the texture phases and (slightly) the motion phase and amplitude.
"""

from __future__ import annotations

import colorsys
import functools
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from ds4d_pl.atomic import write_json
from ds4d_pl.cameras import (
    Cameras,
    consistent4d_eval_cameras,
    orbit_cameras,
    zero123pp_cameras,
)
from ds4d_pl.data.io import write_rgb, write_rgba
from ds4d_pl.data.parsers.common import PROVENANCE_FILE
from ds4d_pl.data.parsers.degrade import DegradeConfig, degrade_pseudo_views
from ds4d_pl.data.types import Scene4D, ViewSet, composite

__all__ = [
    "MOTIONS",
    "SyntheticConfig",
    "SyntheticRender",
    "make_synthetic_scene",
    "moving_part_end",
    "render_synthetic",
    "sample_synthetic_surface",
    "visible_from",
    "write_consistent4d",
    "write_synthetic",
]

#: The motion kinds :class:`SyntheticConfig` accepts.
MOTIONS = ("static_only", "mostly_static", "dynamic_only")
_PSEUDO_VERSIONS = ("v1.1", "v1.2")
_PSEUDO_KINDS = ("oracle", "degraded")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

# Geometry in the body's local frame (metres of the unit protocol; y up, +z towards the input
# camera). The joint lies inside the body so the arm visibly grows out of it.
_BODY_CENTER = (0.0, -0.12, 0.0)
_BODY_RADII = (0.38, 0.42, 0.34)
_HEAD_OFFSET = (0.0, 0.50, 0.0)
_HEAD_RADIUS = 0.17
_ARM_JOINT = (0.31, 0.04, 0.09)
_ARM_LENGTH = 0.25
_ARM_RADIUS = 0.065
_ARM_TILT_DEG = 20.0  # towards the camera, so the arm is not hidden behind the body edge
_ARM_REST_DEG = -10.0  # slightly drooping
_ARM_SWING_DEG = 32.0

# Light directions (world, pointing towards the light) and weights: a key light from the upper
# front right and a weak fill from the back left so back views are not black.
_KEY_LIGHT = (0.45, 0.75, 0.55)
_FILL_LIGHT = (-0.7, 0.3, -0.4)
_AMBIENT, _KEY, _FILL = 0.38, 0.55, 0.30

# Background colour stored in fully transparent pixels (white: the Consistent4D protocol).
_BACKGROUND = 1.0
# Rays per frame chunk: bounds peak memory at large eval resolutions.
_MAX_RAYS_PER_CHUNK = 1 << 20


@dataclass(frozen=True)
class SyntheticConfig:
    """Parameters of the embedded synthetic scene.

    Attributes:
        motion: ``"static_only"``, ``"mostly_static"`` or ``"dynamic_only"`` (see module doc).
        motion_cycles: Swings of the motion over the clip (times ``0 … 1``). 1 is one smooth
            swing; more give the motion more temporal detail for the same frames, as a walk or
            a wave has, which a deformation field with a coarse time axis cannot hold. Keep it
            under half the number of frames, or the frames alias the motion.
        num_frames: Number of frames ``T``; times are ``linspace(0, 1, T)``.
        resolution: Square size of the input view and of the pseudo views.
        eval_resolution: Square size of the four Consistent4D evaluation views.
        seed: Changes palette, texture phases and motion phase/amplitude.
        name: Object name; derived from ``motion`` (and ``seed`` when non-zero) if ``None``.
        pseudo_version: Zero123++ pose set of the pseudo views, ``"v1.1"`` or ``"v1.2"``.
        num_init_points: Number of surface samples returned as ``Scene4D.init_points``.
        pseudo_views: ``"oracle"`` (exact renders at the Zero123++ poses) or ``"degraded"``
            (the same renders with the defects of real generated views, see ``degrade``).
        degrade: Severity of each defect when ``pseudo_views="degraded"`` (ignored otherwise).
    """

    motion: str = "mostly_static"
    motion_cycles: float = 1.0
    num_frames: int = 16
    resolution: int = 128
    eval_resolution: int = 128
    seed: int = 0
    name: str | None = None
    pseudo_version: str = "v1.1"
    num_init_points: int = 4000
    pseudo_views: Literal["oracle", "degraded"] = "oracle"
    degrade: DegradeConfig = field(default_factory=DegradeConfig)

    def __post_init__(self) -> None:
        if self.motion not in MOTIONS:
            raise ValueError(
                f"SyntheticConfig.motion must be one of {', '.join(MOTIONS)}; got {self.motion!r}"
            )
        cycles = self.motion_cycles
        if (
            isinstance(cycles, bool)
            or not isinstance(cycles, (int, float))
            or not 0 < cycles < math.inf
        ):
            raise ValueError(
                f"SyntheticConfig.motion_cycles must be a positive finite number; got {cycles!r}"
            )
        for field_name, minimum in (
            ("num_frames", 1),
            ("resolution", 8),
            ("eval_resolution", 8),
            ("num_init_points", 1),
        ):
            value = getattr(self, field_name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(
                    f"SyntheticConfig.{field_name} must be an integer >= {minimum}; got {value!r}"
                )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(
                f"SyntheticConfig.seed must be a non-negative integer; got {self.seed!r}"
            )
        if self.pseudo_version not in _PSEUDO_VERSIONS:
            raise ValueError(
                f"SyntheticConfig.pseudo_version must be one of {', '.join(_PSEUDO_VERSIONS)}; "
                f"got {self.pseudo_version!r}"
            )
        if self.pseudo_views not in _PSEUDO_KINDS:
            raise ValueError(
                f"SyntheticConfig.pseudo_views must be one of {', '.join(_PSEUDO_KINDS)}; "
                f"got {self.pseudo_views!r}"
            )
        if isinstance(self.degrade, dict):
            object.__setattr__(self, "degrade", DegradeConfig(**self.degrade))
        elif not isinstance(self.degrade, DegradeConfig):
            raise ValueError(
                f"SyntheticConfig.degrade must be a DegradeConfig; got {self.degrade!r}"
            )
        if self.name is None:
            derived = (
                f"synthetic_{self.motion}"
                + (f"_cycles{self.motion_cycles:g}" if self.motion_cycles != 1 else "")
                + (f"_seed{self.seed}" if self.seed else "")
            )
            # Frozen dataclass: the derived default is filled in once, at construction.
            object.__setattr__(self, "name", derived)
        elif not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise ValueError(
                "SyntheticConfig.name must be a non-empty file-name-safe string (letters, digits, "
                f"'_', '-', '.'; not starting with '.' or '-'); got {self.name!r}"
            )

    @property
    def times(self) -> Tensor:
        """``(T,)`` frame times, ``linspace(0, 1, T)``."""
        return torch.linspace(0.0, 1.0, self.num_frames)


@dataclass
class SyntheticRender:
    """Output of :func:`render_synthetic` for ``N`` cameras × ``T`` times.

    Attributes:
        rgb: ``(N, T, H, W, 3)`` straight colour; white where nothing is hit.
        alpha: ``(N, T, H, W, 1)`` coverage (fraction of the pixel's rays that hit).
        depth: ``(N, T, H, W, 1)`` mean camera-z of the hits in the pixel (0 where none);
            ``(N, T, H, W, 0)`` when rendered with ``aux=False``.
        normal: ``(N, T, H, W, 3)`` mean world normal of the hits, unit length (0 where none);
            ``(N, T, H, W, 0)`` when rendered with ``aux=False``.
        moving: ``(N, T, H, W, 1)`` boolean, ``True`` where any ray of the pixel first hits a
            part that moves in this motion kind.
    """

    rgb: Tensor
    alpha: Tensor
    depth: Tensor
    normal: Tensor
    moving: Tensor


# --------------------------------------------------------------------------------------------
# Object description


@dataclass(frozen=True)
class _Look:
    """Seed-dependent appearance and motion phase."""

    palette: Tensor  # (7, 3): body a, body b, belly, head a, head b, arm a, arm b
    phases: Tensor  # (6,) texture phases
    motion_phase: float  # radians
    motion_gain: float  # multiplies every motion amplitude


@dataclass
class _Part:
    """One primitive at ``T`` instants. Local frame: ``x_world = origin + rot @ x_local``."""

    kind: str  # "ellipsoid" | "capsule"
    origin: Tensor  # (T, 3): ellipsoid centre or capsule joint
    rot: Tensor  # (T, 3, 3) local-to-world rotation; a capsule runs along local +x
    size: Tensor  # ellipsoid radii (3,) or capsule (length, radius)
    moving: bool
    texture: str  # "body" | "head" | "arm"


def _hsv(h: float, s: float, v: float) -> list[float]:
    return list(colorsys.hsv_to_rgb(h % 1.0, s, v))


@functools.lru_cache(maxsize=32)
def _look(seed: int) -> _Look:
    g = torch.Generator().manual_seed(1_000_003 * seed + 17)
    u = torch.rand(10, generator=g, dtype=torch.float64).tolist()
    h = u[0]
    palette = torch.tensor(
        [
            _hsv(h, 0.50, 0.92),
            _hsv(h + 0.07, 0.80, 0.42),
            _hsv(h + 0.10, 0.18, 0.97),
            _hsv(h + 0.50, 0.50, 0.90),
            _hsv(h + 0.56, 0.70, 0.55),
            _hsv(h + 0.30, 0.80, 0.95),
            _hsv(h + 0.34, 0.85, 0.42),
        ],
        dtype=torch.float32,
    )
    phases = torch.tensor(u[1:7], dtype=torch.float32) * (2 * math.pi)
    return _Look(
        palette=palette,
        phases=phases,
        motion_phase=(u[7] - 0.5) * 0.8,
        motion_gain=0.9 + 0.2 * u[8],
    )


def _rot(axis: str, angle: Tensor) -> Tensor:
    """``(T, 3, 3)`` right-handed rotations about a coordinate axis by ``angle`` (radians)."""
    c, s = torch.cos(angle), torch.sin(angle)
    one, zero = torch.ones_like(angle), torch.zeros_like(angle)
    rows = {
        "x": [[one, zero, zero], [zero, c, -s], [zero, s, c]],
        "y": [[c, zero, s], [zero, one, zero], [-s, zero, c]],
        "z": [[c, -s, zero], [s, c, zero], [zero, zero, one]],
    }[axis]
    return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)


def _parts(cfg: SyntheticConfig, times: Tensor) -> list[_Part]:
    """The object's primitives at ``times`` ``(T,)`` (``cfg``'s motion, seed and cycles)."""
    motion = cfg.motion
    look = _look(cfg.seed)
    t = times.to(torch.float32).reshape(-1)
    phase = 2 * math.pi * cfg.motion_cycles * t + look.motion_phase
    gain = look.motion_gain
    zero = torch.zeros_like(t)

    body_c = torch.tensor(_BODY_CENTER).expand(len(t), 3).clone()
    body_r = torch.eye(3).expand(len(t), 3, 3).clone()
    if motion == "dynamic_only":
        yaw = math.radians(28.0) * gain * torch.sin(phase)
        roll = math.radians(8.0) * gain * torch.sin(phase + 1.3)
        body_r = _rot("y", yaw) @ _rot("z", roll)
        body_c = body_c + torch.stack(
            [0.04 * gain * torch.sin(phase + 0.7), 0.04 * gain * torch.sin(2 * phase), zero], -1
        )

    if motion == "static_only":
        swing = zero + math.radians(_ARM_REST_DEG)
    else:
        swing = math.radians(_ARM_REST_DEG) + math.radians(_ARM_SWING_DEG) * gain * torch.sin(phase)

    head_c = body_c + body_r @ torch.tensor(_HEAD_OFFSET)
    joint = body_c + body_r @ torch.tensor(_ARM_JOINT)
    arm_r = body_r @ _rot("y", zero - math.radians(_ARM_TILT_DEG)) @ _rot("z", swing)

    moves_body = motion == "dynamic_only"
    moves_arm = motion != "static_only"
    return [
        _Part("ellipsoid", body_c, body_r, torch.tensor(_BODY_RADII), moves_body, "body"),
        _Part("ellipsoid", head_c, body_r, torch.full((3,), _HEAD_RADIUS), moves_body, "head"),
        _Part("capsule", joint, arm_r, torch.tensor([_ARM_LENGTH, _ARM_RADIUS]), moves_arm, "arm"),
    ]


def moving_part_end(cfg: SyntheticConfig, times: Tensor) -> tuple[Tensor, float]:
    """Centre and radius of the arm's end-cap sphere (the hand) at ``times``.

    The point ``centre + radius * normalize(camera_centre - centre)`` is the hand's surface
    point nearest to a camera; tests use it to check that the ray caster and
    :meth:`Cameras.project` agree.

    Args:
        cfg: Scene configuration (only ``motion`` and ``seed`` matter).
        times: ``(T,)`` times in ``[0, 1]``.

    Returns:
        ``(T, 3)`` centres and the radius.
    """
    arm = _parts(cfg, torch.as_tensor(times, dtype=torch.float32))[2]
    return arm.origin + arm.rot[:, :, 0] * _ARM_LENGTH, _ARM_RADIUS


# --------------------------------------------------------------------------------------------
# Ray casting


def _quadratic_first_root(b: Tensor, a: Tensor | float, c: Tensor) -> Tensor:
    """Smaller root of ``a t² + 2 b t + c = 0`` where it is real and positive, else inf."""
    h = b * b - a * c
    t = (-b - torch.sqrt(h.clamp_min(0.0))) / a
    return torch.where((h > 0) & (t > 0), t, torch.full_like(t, math.inf))


def _sphere_t(o: Tensor, d: Tensor, center: Tensor, radius: float) -> Tensor:
    """``(F, R)`` first hits of unit rays ``d`` ``(R, 3)`` from ``o`` with spheres ``(F, 3)``."""
    oc = o - center  # (F, 3)
    # Dot products as one matmul: no (F, R, 3) temporaries (this runs per frame and ray).
    b = oc @ d.T
    c = (oc * oc).sum(-1, keepdim=True) - radius * radius
    return _quadratic_first_root(b, 1.0, c)


def _hit_t(part: _Part, f: slice, o: Tensor, d: Tensor) -> Tensor:
    """``(F, R)`` first-hit distance of unit rays ``d`` ``(R, 3)`` with ``part`` at frames ``f``.

    Inf where the ray misses.
    """
    origin, rot = part.origin[f], part.rot[f]
    if part.kind == "ellipsoid":
        # Into the unit-sphere frame: x_local = rot^T (x - origin) / radii.
        to_local = rot / part.size  # (F, 3, 3): column j scaled by 1 / radii[j]
        ol = ((o - origin)[:, None] @ to_local)[:, 0]  # (F, 3)
        dl = d @ to_local  # (F, R, 3)
        a = (dl * dl).sum(-1)
        b = (dl @ ol[:, :, None])[..., 0]
        c = (ol * ol).sum(-1, keepdim=True) - 1.0
        return _quadratic_first_root(b, a, c)
    # Capsule = finite cylinder ∪ two end spheres; the first hit of a union seen from outside is
    # the minimum of the first hits, and the cylinder's end discs lie inside the spheres.
    length, radius = float(part.size[0]), float(part.size[1])
    axis = rot[:, :, 0]  # (F, 3), unit
    oa = o - origin
    oax = (oa * axis).sum(-1, keepdim=True)  # (F, 1)
    op = oa - oax * axis  # origin offset perpendicular to the axis
    dax = axis @ d.T  # (F, R)
    # With unit d and axis: |d_perp|² = 1 - dax², d_perp · op = d · op (op ⟂ axis).
    a = (1.0 - dax * dax).clamp_min(1e-12)
    t_cyl = _quadratic_first_root(op @ d.T, a, (op * op).sum(-1, keepdim=True) - radius**2)
    along = oax + t_cyl * dax
    t_cyl = torch.where((along >= 0) & (along <= length), t_cyl, torch.full_like(t_cyl, math.inf))
    end = origin + axis * length
    return torch.minimum(
        t_cyl, torch.minimum(_sphere_t(o, d, origin, radius), _sphere_t(o, d, end, radius))
    )


def _normal_and_local(part: _Part, frame: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
    """Unit world normals and texture coordinates of surface points ``p`` ``(M, 3)``.

    ``frame`` ``(M,)`` indexes the part's time axis. Texture coordinates are in the part's local
    frame so the texture sticks to the surface when the part moves.
    """
    origin, rot = part.origin[frame], part.rot[frame]
    local = torch.einsum("mji,mj->mi", rot, p - origin)
    if part.kind == "ellipsoid":
        radii = part.size
        unit = local / radii
        n_local = unit / radii
        normal = torch.nn.functional.normalize(torch.einsum("mij,mj->mi", rot, n_local), dim=-1)
        return normal, unit
    length, radius = float(part.size[0]), float(part.size[1])
    s = local[:, 0].clamp(0.0, length)
    n_local = local - torch.stack([s, torch.zeros_like(s), torch.zeros_like(s)], -1)
    normal = torch.nn.functional.normalize(torch.einsum("mij,mj->mi", rot, n_local), dim=-1)
    # (position along the axis in [0, 1] incl. caps, angle around the axis, unused).
    h = (local[:, 0] + radius) / (length + 2 * radius)
    ang = torch.atan2(local[:, 2], local[:, 1])
    return normal, torch.stack([h, ang, torch.zeros_like(h)], -1)


def _albedo(texture: str, uv: Tensor, look: _Look) -> Tensor:
    """Smooth procedural colour patterns of moderate frequency, ``(M, 3)`` in ``[0, 1]``."""
    pal, ph = look.palette, look.phases
    if texture == "body":
        x, y, z = uv.unbind(-1)
        lon = torch.atan2(x, z)
        # Soft checker: latitude stripes × longitude stripes through a smooth step.
        s = torch.sin(2.5 * math.pi * y + ph[0]) * torch.sin(4.0 * lon + ph[1])
        w = torch.sigmoid(3.0 * s)[:, None]
        col = pal[0] * (1 - w) + pal[1] * w
        col = col * (0.88 + 0.12 * y[:, None])
        # A small light belly spot (front of the body) adds a feature the input view sees.
        belly = 0.7 * torch.exp(-(x**2 + (y + 0.15) ** 2) / 0.05) * (z > 0).float()
        return col * (1 - belly[:, None]) + pal[2] * belly[:, None]
    if texture == "head":
        x, y, z = uv.unbind(-1)
        s = torch.sin(5.0 * x + ph[2]) * torch.sin(5.0 * y + ph[3])
        w = torch.sigmoid(3.0 * s)[:, None]
        col = pal[3] * (1 - w) + pal[4] * w
        # Two dark eye spots facing +z make the orientation readable in every view.
        eyes = torch.zeros_like(x)
        for ex in (-0.42, 0.42):
            eyes = eyes + torch.exp(-((x - ex) ** 2 + (y - 0.25) ** 2 + (z - 0.87) ** 2) / 0.012)
        return col * (1 - 0.85 * eyes.clamp(max=1.0)[:, None])
    h, ang, _ = uv.unbind(-1)
    s = torch.sin(2 * math.pi * 2.5 * h + 2.0 * ang + ph[4])
    w = torch.sigmoid(4.0 * s)[:, None]
    return pal[5] * (1 - w) + pal[6] * w


def _shade(albedo: Tensor, normal: Tensor) -> Tensor:
    key = torch.nn.functional.normalize(torch.tensor(_KEY_LIGHT), dim=0)
    fill = torch.nn.functional.normalize(torch.tensor(_FILL_LIGHT), dim=0)
    light = _AMBIENT + _KEY * (normal @ key).clamp_min(0) + _FILL * (normal @ fill).clamp_min(0)
    return (albedo * light[:, None]).clamp(0.0, 1.0)


def _layer(
    parts: list[_Part], look: _Look, f: slice, o: Tensor, d: Tensor, limit: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """First hits of rays ``d`` ``(1, R, 3)`` from ``o`` with ``parts`` at frames ``f``.

    Only hits nearer than ``limit`` (broadcast to ``(F, R)``) are shaded: the others are hidden
    behind another layer and would be discarded anyway.

    Returns:
        ``t`` ``(F, R)`` (inf where nothing is hit), ``rgb`` and ``normal`` ``(F, R, 3)``.
    """
    nf, nr = f.stop - f.start, d.shape[1]
    if not parts:
        return torch.full((nf, nr), math.inf), torch.zeros(nf, nr, 3), torch.zeros(nf, nr, 3)
    t, idx = torch.stack([_hit_t(p, f, o, d[0]) for p in parts]).min(0)
    visible = torch.isfinite(t) if limit is None else t < limit
    rgb = torch.zeros(nf, nr, 3)
    normal = torch.zeros(nf, nr, 3)
    frame_of = torch.arange(f.start, f.stop)[:, None].expand(nf, nr)
    for k, part in enumerate(parts):
        sel = visible & (idx == k)
        if not sel.any():
            continue
        p = o + t[sel][:, None] * d.expand(nf, -1, -1)[sel]
        n, uv = _normal_and_local(part, frame_of[sel], p)
        rgb[sel] = _shade(_albedo(part.texture, uv, look), n)
        normal[sel] = n
    return t, rgb, normal


def _pool(x: Tensor, height: int, width: int, ss: int, reduce: str = "mean") -> Tensor:
    """``(F, H*ss * W*ss, C)`` sub-pixel values to ``(F, H, W, C)`` pixels.

    Summing strided slices is ~10x faster on CPU than ``mean`` over the two sub-pixel axes of a
    6-D view, and this runs on every frame of every view.
    """
    nf, c = x.shape[0], x.shape[-1]
    combine = torch.logical_or if reduce == "any" else torch.add
    rows = x.reshape(nf, height, ss, width * ss * c)
    acc = rows[:, :, 0]
    for k in range(1, ss):
        acc = combine(acc, rows[:, :, k])
    cols = acc.reshape(nf, height, width, ss, c)
    out = cols[:, :, :, 0]
    for k in range(1, ss):
        out = combine(out, cols[:, :, :, k])
    return out if reduce == "any" else out / (ss * ss)


@torch.no_grad()
def render_synthetic(
    cfg: SyntheticConfig,
    cameras: Cameras,
    times: Tensor,
    supersample: int = 2,
    aux: bool = True,
    look_seed: int | None = None,
) -> SyntheticRender:
    """Ray-cast the synthetic object analytically from arbitrary cameras and times.

    Useful beyond the embedded dataset, e.g. as an oracle that renders ground truth at any pose.

    Args:
        cfg: Scene configuration (only ``motion`` and ``seed`` affect the object).
        cameras: ``N`` cameras (OpenCV convention, see :mod:`ds4d_pl.cameras`).
        times: ``(T,)`` times in ``[0, 1]``.
        supersample: Rays per pixel along each axis (anti-aliasing); ``supersample²`` in total.
        aux: Also compute ``depth`` and ``normal``; if ``False`` they are returned empty
            (``(N, T, H, W, 0)``), which saves time when only colours are needed.
        look_seed: Paint the object with the palette and texture phases of this seed instead
            of ``cfg.seed``'s (same geometry and motion): another plausible appearance.

    Returns:
        A :class:`SyntheticRender` of ``(N, T, H, W, ·)`` float32 tensors (``moving`` is bool).
    """
    if supersample < 1:
        raise ValueError(f"supersample must be >= 1, got {supersample}")
    times = torch.as_tensor(times, dtype=torch.float32).reshape(-1).cpu()
    cameras = cameras.to("cpu")
    look = _look(cfg.seed if look_seed is None else look_seed)
    parts = _parts(cfg, times)
    static_parts = [p for p in parts if not p.moving]
    moving_parts = [p for p in parts if p.moving]
    ss, width, height = supersample, cameras.width, cameras.height
    n_cam, n_t = len(cameras), len(times)

    # Sub-pixel ray positions; pixel i covers [i, i + 1) (centres at +0.5, as in Cameras).
    sub = (torch.arange(ss, dtype=torch.float32) + 0.5) / ss
    us = (torch.arange(width, dtype=torch.float32)[:, None] + sub).reshape(-1)
    vs = (torch.arange(height, dtype=torch.float32)[:, None] + sub).reshape(-1)
    vv, uu = torch.meshgrid(vs, us, indexing="ij")

    n_aux = 1 if aux else 0
    out_rgb = torch.empty(n_cam, n_t, height, width, 3)
    out_alpha = torch.empty(n_cam, n_t, height, width, 1)
    out_depth = torch.zeros(n_cam, n_t, height, width, n_aux)
    out_normal = torch.zeros(n_cam, n_t, height, width, 3 * n_aux)
    out_moving = torch.empty(n_cam, n_t, height, width, 1, dtype=torch.bool)
    chunk = max(1, _MAX_RAYS_PER_CHUNK // uu.numel())

    def pool(x: Tensor, reduce: str = "mean") -> Tensor:
        return _pool(x, height, width, ss, reduce)

    for i in range(n_cam):
        K, c2w = cameras.K[i], cameras.c2w[i]
        cam_dirs = torch.stack(
            [(uu - K[0, 2]) / K[0, 0], (vv - K[1, 2]) / K[1, 1], torch.ones_like(uu)], -1
        ).reshape(1, -1, 3)
        d = torch.nn.functional.normalize(cam_dirs @ c2w[:3, :3].T, dim=-1)
        o = c2w[:3, 3]
        z_per_t = (d * c2w[:3, 2]).sum(-1)  # camera-z per unit ray distance
        # Parts that do not move are identical in every frame: cast and shade them once per
        # camera, then per frame only the moving parts, shading just the rays they win.
        t_s, rgb_s, normal_s = _layer(static_parts, look, slice(0, 1), o, d)
        for start in range(0, n_t, chunk):
            f = slice(start, min(n_t, start + chunk))
            t_m, rgb_m, normal_m = _layer(moving_parts, look, f, o, d, limit=t_s)
            moving = t_m < t_s
            t = torch.where(moving, t_m, t_s)
            hit = torch.isfinite(t)
            rgb = torch.where(moving[..., None], rgb_m, rgb_s)
            hitf = hit.float()[..., None]
            cover = pool(hitf)
            denom = cover.clamp_min(1e-8)
            col = pool(rgb * hitf) / denom
            out_rgb[i, f] = torch.where(cover > 0, col, torch.full_like(col, _BACKGROUND))
            out_alpha[i, f] = cover
            out_moving[i, f] = pool(moving[..., None], "any")
            if aux:
                depth = torch.where(hit, t * z_per_t, torch.zeros_like(t))
                out_depth[i, f] = pool(depth[..., None]) / denom
                normal = torch.where(moving[..., None], normal_m, normal_s)
                out_normal[i, f] = torch.nn.functional.normalize(pool(normal), dim=-1)
    return SyntheticRender(out_rgb, out_alpha, out_depth, out_normal, out_moving)


@torch.no_grad()
def visible_from(
    cfg: SyntheticConfig, origin: Tensor, points: Tensor, times: Tensor, tol: float = 0.01
) -> Tensor:
    """Which points a camera at ``origin`` sees: nothing of the object lies between them.

    A point counts as seen when the first surface hit along the segment from ``origin`` towards
    it is no nearer than the point itself minus ``tol`` (so points on the surface, or off it by
    less than ``tol``, are seen when they face the camera and nothing occludes them).

    Args:
        cfg: Scene configuration (only ``motion`` and ``seed`` matter).
        origin: ``(3,)`` camera centre.
        points: ``(T, M, 3)`` world points, ``M`` per frame.
        times: ``(T,)`` times in ``[0, 1]`` of the frames.
        tol: Distance slack, in the protocol's units (the object is ~1.2 across).

    Returns:
        ``(T, M)`` boolean.
    """
    times = torch.as_tensor(times, dtype=torch.float32).reshape(-1)
    if points.ndim != 3 or points.shape[0] != len(times) or points.shape[-1] != 3:
        raise ValueError(
            f"visible_from needs points (T, M, 3) for {len(times)} times; got {tuple(points.shape)}"
        )
    parts = _parts(cfg, times)
    o = torch.as_tensor(origin, dtype=torch.float32).reshape(3)
    out = torch.ones(points.shape[:2], dtype=torch.bool)
    for f in range(len(times)):
        offset = points[f].float() - o
        dist = offset.norm(dim=-1)
        d = offset / dist.clamp_min(1e-8)[:, None]
        hits = torch.stack([_hit_t(p, slice(f, f + 1), o, d)[0] for p in parts]).amin(0)
        out[f] = hits >= dist - tol
    return out


# --------------------------------------------------------------------------------------------
# Surface samples (initialisation points)


def _inside(part: _Part, frame: int, p: Tensor) -> Tensor:
    """Signed "inside" test with a small margin, used to drop samples buried in other parts."""
    local = (p - part.origin[frame]) @ part.rot[frame]
    if part.kind == "ellipsoid":
        return ((local / part.size) ** 2).sum(-1) < 1.0 - 1e-3
    length, radius = float(part.size[0]), float(part.size[1])
    s = local[:, 0].clamp(0.0, length)
    dist = (local - torch.stack([s, torch.zeros_like(s), torch.zeros_like(s)], -1)).norm(dim=-1)
    return dist < radius - 1e-4


def _sample_part(part: _Part, frame: int, n: int, g: torch.Generator) -> Tensor:
    """``n`` (roughly area-uniform) world points on one primitive's surface."""
    if part.kind == "ellipsoid":
        radii = part.size
        # Map sphere samples onto the ellipsoid and correct the density by rejection on the
        # area stretch factor, so points do not bunch up at the flatter poles.
        pts = []
        while sum(len(x) for x in pts) < n:
            u = torch.nn.functional.normalize(torch.randn(4 * n, 3, generator=g), dim=-1)
            stretch = (u / radii).norm(dim=-1) * radii.prod()
            keep = torch.rand(4 * n, generator=g) * stretch.max() < stretch
            pts.append(u[keep] * radii)
        local = torch.cat(pts)[:n]
    else:
        length, radius = float(part.size[0]), float(part.size[1])
        u = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1) * radius
        cyl_area, cap_area = 2 * math.pi * radius * length, 4 * math.pi * radius * radius
        on_cyl = torch.rand(n, generator=g) < cyl_area / (cyl_area + cap_area)
        along = torch.rand(n, generator=g) * length
        # Cylinder: keep the perpendicular part of the sphere direction; caps: the half sphere.
        perp = torch.nn.functional.normalize(u[:, 1:], dim=-1) * radius
        cyl = torch.cat([along[:, None], perp], -1)
        cap = u.clone()
        cap[:, 0] = torch.where(u[:, 0] > 0, u[:, 0] + length, u[:, 0])
        local = torch.where(on_cyl[:, None], cyl, cap)
    return part.origin[frame] + local @ part.rot[frame].T


def _surface_area(part: _Part) -> float:
    if part.kind == "ellipsoid":
        a, b, c = (float(x) for x in part.size)
        p = 1.6075  # Knud Thomsen's approximation, < 1.1 % error
        return 4 * math.pi * (((a * b) ** p + (a * c) ** p + (b * c) ** p) / 3) ** (1 / p)
    length, radius = float(part.size[0]), float(part.size[1])
    return 2 * math.pi * radius * length + 4 * math.pi * radius * radius


@torch.no_grad()
def sample_synthetic_surface(
    cfg: SyntheticConfig, time: float, num_points: int, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """Points on the object's outer surface at ``time`` with their shaded colours.

    Stand-in for the paper's LRM mesh of the middle frame. Points buried inside another part
    are dropped, so all samples lie on the visible outer surface. Colours are the Lambertian
    shaded colours, which are view-independent and match the rendered images.

    Args:
        cfg: Scene configuration.
        time: Instant in ``[0, 1]``.
        num_points: Number of points.
        seed: Sampling seed (combined with ``cfg.seed``).

    Returns:
        ``points`` ``(num_points, 3)`` and ``colors`` ``(num_points, 3)`` in ``[0, 1]``.
    """
    if num_points < 1:
        raise ValueError(f"num_points must be >= 1, got {num_points}")
    parts = _parts(cfg, torch.tensor([float(time)]))
    look = _look(cfg.seed)
    g = torch.Generator().manual_seed(7919 * cfg.seed + seed + 1)
    areas = torch.tensor([_surface_area(p) for p in parts])
    pts, cols = [], []
    # Over-sample by the buried fraction (at most ~30 %), then trim deterministically.
    for k, part in enumerate(parts):
        want = int(math.ceil(2.0 * num_points * float(areas[k] / areas.sum()))) + 8
        p = _sample_part(part, 0, want, g)
        keep = torch.ones(len(p), dtype=torch.bool)
        for j, other in enumerate(parts):
            if j != k:
                keep &= ~_inside(other, 0, p)
        p = p[keep]
        n, uv = _normal_and_local(part, torch.zeros(len(p), dtype=torch.long), p)
        pts.append(p)
        cols.append(_shade(_albedo(part.texture, uv, look), n))
    points, colors = torch.cat(pts), torch.cat(cols)
    if len(points) < num_points:  # pragma: no cover - the over-sampling factor makes this rare
        raise RuntimeError("surface sampling produced too few points")
    order = torch.randperm(len(points), generator=g)[:num_points]
    return points[order].contiguous(), colors[order].contiguous()


# --------------------------------------------------------------------------------------------
# Scene assembly


@functools.lru_cache(maxsize=4)
def _scene_tensors(cfg: SyntheticConfig) -> dict:
    times = cfg.times
    res, eres = cfg.resolution, cfg.eval_resolution
    front = orbit_cameras([0.0], [0.0], res, res)
    train_cams = Cameras.cat([front, zero123pp_cameras(res, res, cfg.pseudo_version)])
    eval_cams = consistent4d_eval_cameras(eres, eres)
    # Nothing moves in static_only: render one instant and repeat it (cheap, exactly equal).
    render_times = times[:1] if cfg.motion == "static_only" else times
    out: dict = {"times": times, "train_cams": train_cams, "eval_cams": eval_cams}
    for key, cams in (("train", train_cams), ("eval", eval_cams)):
        r = render_synthetic(cfg, cams, render_times, aux=False)
        shape = (len(cams), len(times), cams.height, cams.width)
        dyn = r.moving.any(dim=1, keepdim=True).expand(*shape, 1)
        rgb, alpha = r.rgb.expand(*shape, 3), r.alpha.expand(*shape, 1)
        # Outside the moving parts every frame hits the same static geometry; vectorised float
        # maths can still differ by an ulp between frames. Snap to frame 0 so "pixels outside
        # dyn_mask never change" holds exactly.
        rgb = torch.where(dyn, rgb, rgb[:, :1])
        alpha = torch.where(dyn, alpha, alpha[:, :1])
        out[key] = (rgb, alpha, dyn)
    mid = float(times[len(times) // 2])
    out["init"] = sample_synthetic_surface(cfg, mid, cfg.num_init_points)
    _, alpha, dyn = out["train"]
    # Moving share of the front view: dyn mask over the silhouette's union over time.
    sil = (alpha[0] > 0).any(dim=0)
    out["dyn_fraction_front"] = float(dyn[0, 0].sum() / sil.sum().clamp_min(1))
    return out


def _oracle_key(cfg: SyntheticConfig) -> SyntheticConfig:
    """``cfg`` with oracle pseudo views: the cache key of the renders both kinds start from."""
    if cfg.pseudo_views == "oracle" and cfg.degrade == DegradeConfig():
        return cfg
    return replace(cfg, pseudo_views="oracle", degrade=DegradeConfig())


def _invented_appearance(
    cfg: SyntheticConfig, cams: Cameras, input_cam: Cameras, times: Tensor
) -> tuple[Tensor, Tensor]:
    """Another texture on the same moving object, and where the input camera does not see it.

    Returns:
        ``(N, T, H, W, 3)`` colour of the object painted with another seed's look (the
        "hallucinated" appearance) and ``(N, T, H, W, 1)`` boolean, ``True`` on covered pixels
        whose surface point (from the rendered depth) the input camera does not see.
    """
    render_times = times[:1] if cfg.motion == "static_only" else times
    # Any seed but the object's own gives a different palette and texture phases.
    r = render_synthetic(
        cfg, cams, render_times, aux=True, look_seed=cfg.seed + 1 + cfg.degrade.seed
    )
    n, tr, h, w = r.alpha.shape[:4]
    origin = input_cam.centers[0]
    unseen = torch.zeros(n, tr, h, w, 1, dtype=torch.bool)
    u = torch.arange(w, dtype=torch.float32) + 0.5
    v = torch.arange(h, dtype=torch.float32) + 0.5
    for i in range(n):
        K, c2w = cams.K[i], cams.c2w[i]
        dirs = torch.stack(
            [
                ((u - K[0, 2]) / K[0, 0]).expand(h, w),
                ((v - K[1, 2]) / K[1, 1])[:, None].expand(h, w),
                torch.ones(h, w),
            ],
            dim=-1,
        )
        # Depth is camera z, so the camera-frame point is the (z = 1) direction times depth.
        points = (dirs * r.depth[i]) @ c2w[:3, :3].T + c2w[:3, 3]
        seen = visible_from(cfg, origin, points.reshape(tr, -1, 3), render_times)
        unseen[i] = (r.alpha[i] > 0) & ~seen.reshape(tr, h, w, 1)
    shape = (n, len(times), h, w)
    return r.rgb.expand(*shape, 3), unseen.expand(*shape, 1)


@functools.lru_cache(maxsize=4)
def _degraded_train(cfg: SyntheticConfig) -> tuple[Tensor, Tensor, Tensor, dict]:
    """Training views with degraded pseudo views, and the record of what was drawn."""
    data = _scene_tensors(_oracle_key(cfg))
    rgb, alpha, dyn = data["train"]
    cams, times = data["train_cams"], data["times"]
    invented = unseen = None
    if cfg.degrade.hallucinate > 0:
        invented, unseen = _invented_appearance(cfg, cams[1:], cams[0], times)
    out = degrade_pseudo_views(rgb[1:], alpha[1:], times, cfg.degrade, dyn[1:], invented, unseen)
    d = out.defects
    record = {
        **cfg.degrade.knobs(),
        # Train-view indices (view 0 is the input) and the per-view framing actually applied.
        "wrong_view_indices": [1 + k for k in d.wrong],
        "view_scale": [round(float(x), 6) for x in d.view_scale],
        "view_shift_px": [
            [round(float(x), 4) for x in row] for row in d.view_shift + d.wrong_shift
        ],
    }
    assert out.dyn_mask is not None
    return (
        torch.cat([rgb[:1], out.rgb]),
        torch.cat([alpha[:1], out.alpha]),
        torch.cat([dyn[:1], out.dyn_mask]),
        record,
    )


#: Rays the analytic renderer casts per second, conservatively: 1.3-3.7 M rays/s were measured
#: on one core of a shared 2-core CPU (32-64 px, 4-8 frames); a faster machine only finishes early.
RAYS_PER_SECOND = 1.0e6
#: A request estimated above either bound is refused unless forced (``ds4d synth --force``).
MAX_SECONDS = 3600.0
MAX_BYTES = 16 * 2**30


def render_cost(frames: int, views: list[tuple[int, int]], supersample: int = 2) -> dict:
    """Estimated time and memory of rendering ``frames`` frames of ``views`` (``(w, h)`` each):
    seconds at :data:`RAYS_PER_SECOND`, and the bytes of the float32 RGBA + mask tables."""
    pixels = sum(w * h for w, h in views)
    rays = frames * pixels * supersample**2
    return {"seconds": rays / RAYS_PER_SECOND, "bytes": frames * pixels * 5 * 4, "rays": rays}


def synthetic_cost(cfg: SyntheticConfig) -> dict:
    """:func:`render_cost` of :func:`make_synthetic_scene` (7 training and 4 evaluation views)."""
    train = [(cfg.resolution, cfg.resolution)] * 7
    return render_cost(cfg.num_frames, train + [(cfg.eval_resolution, cfg.eval_resolution)] * 4)


def check_cost(cost: dict, what: str, force: bool = False) -> None:
    """Refuse a render estimated to take over :data:`MAX_SECONDS` or :data:`MAX_BYTES`.

    Raises:
        ValueError: The estimate is above a bound and ``force`` is off (the message gives it).
    """
    hours, gib = cost["seconds"] / 3600.0, cost["bytes"] / 2**30
    if force or (cost["seconds"] <= MAX_SECONDS and cost["bytes"] <= MAX_BYTES):
        return
    raise ValueError(
        f"{what} would take about {hours:.1f} h and {gib:.1f} GiB of memory to render "
        f"({cost['rays']:.2g} rays at ~{RAYS_PER_SECOND:.0e} rays/s; bounds "
        f"{MAX_SECONDS / 3600:.0f} h, {MAX_BYTES / 2**30:.0f} GiB); lower the resolution or the "
        "number of frames, or force it"
    )


def make_synthetic_scene(cfg: SyntheticConfig | None = None) -> Scene4D:
    """Build the embedded synthetic :class:`Scene4D`.

    .. warning::
        With ``cfg.pseudo_views="oracle"`` (the default) the pseudo views (``train`` views
        ``1..6``) are **oracle** renders of the ground-truth object at the Zero123++ poses — a
        stand-in for the generative multi-view prior, not a prior. They are far more accurate
        (and 3D-consistent) than Zero123++ output, so results on this scene overstate what a
        real prior allows. ``train.source == "oracle"`` and ``meta["pseudo_views"]`` record
        this. ``pseudo_views="degraded"`` adds the defects of real generated views
        (:mod:`ds4d_pl.data.parsers.degrade`).

    Contents:
        * ``train``: 7 views at ``cfg.resolution`` — view 0 the input front view (elevation 0,
          azimuth 0), views 1..6 the Zero123++ ``cfg.pseudo_version`` poses; ``source="oracle"``
          (or ``cfg.degrade.summary()``, ``"degraded(seed=...,...)"``); ``num_input_views == 1``.
        * ``eval``: the 4 Consistent4D evaluation views at ``cfg.eval_resolution``,
          ``source="gt"``.
        * ``dyn_mask`` (both sets): pixels where a moving part is visible at any frame of the
          clip, repeated over frames (empty for ``static_only``; the whole object's union for
          ``dynamic_only``). Pixels outside it are identical in every frame (degraded pseudo
          views: the mask is moved with the images; their pixels flicker).
        * ``init_points``/``init_colors``: ``cfg.num_init_points`` surface samples of the middle
          frame ``times[T // 2]`` (stand-in for the LRM mesh initialisation).
        * ``meta``: provenance; for degraded views ``meta["pseudo_views"] == "degraded"`` and
          ``meta["degrade"]`` holds the knobs, the wrong views' train indices and each pseudo
          view's injected scale and shift.

    Results are cached per config; each call returns fresh tensors, so callers may modify them.

    Args:
        cfg: Configuration; defaults to ``SyntheticConfig()``.

    Returns:
        The scene, with ``rgb`` straight and ``alpha`` soft, float32 in ``[0, 1]``.
    """
    cfg = SyntheticConfig() if cfg is None else cfg
    data = _scene_tensors(_oracle_key(cfg))
    times = data["times"]
    train = data["train"]
    degraded = cfg.pseudo_views == "degraded"
    if degraded:
        *train, record = _degraded_train(cfg)

    def view_set(images: tuple, cams: Cameras, source: str) -> ViewSet:
        rgb, alpha, dyn = images
        return ViewSet(
            rgb=rgb.clone(),
            alpha=alpha.clone(),
            cameras=Cameras(cams.c2w.clone(), cams.K.clone(), cams.width, cams.height),
            times=times.clone(),
            dyn_mask=dyn.clone(),
            source=source,
        )

    points, colors = data["init"]
    meta = {
        "dataset": "synthetic",
        "motion": cfg.motion,
        "motion_cycles": cfg.motion_cycles,
        "seed": cfg.seed,
        "num_frames": cfg.num_frames,
        "resolution": cfg.resolution,
        "eval_resolution": cfg.eval_resolution,
        "pseudo_version": cfg.pseudo_version,
        "pseudo_views": "oracle (analytic ground truth), not a generative prior",
        "init_points": "analytic surface samples of the middle frame (stand-in for an LRM mesh)",
        "renderer": "analytic ray caster (ds4d_pl.data.parsers.synthetic), 2x2 supersampling",
        "background": (1.0, 1.0, 1.0),  # white; rgb is straight where alpha == 0
        "dyn_fraction_front": data["dyn_fraction_front"],
    }
    if degraded:
        meta["pseudo_views"] = "degraded"
        meta["degrade"] = record
    source = cfg.degrade.summary() if degraded else "oracle"
    return Scene4D(
        name=cfg.name,
        train=view_set(tuple(train), data["train_cams"], source),
        eval=view_set(data["eval"], data["eval_cams"], "gt"),
        num_input_views=1,
        init_points=points.clone(),
        init_colors=colors.clone(),
        meta=meta,
    )


# --------------------------------------------------------------------------------------------
# Consistent4D file layout


def _rgba(vs: ViewSet, view: int, frame: int) -> Tensor:
    return torch.cat([vs.rgb[view, frame], vs.alpha[view, frame]], dim=-1)


def _remove_stale(directory: Path, keep: set[str]) -> None:
    """Delete frame entries (``{t}.png``, ``{t}_rgba.png``, ``{t}_rgba/``) not in ``keep``.

    A longer clip written earlier into the same directory would otherwise leave extra frames
    that a reader lists as part of this clip. Only names matching the frame patterns are
    touched; anything else in the directory is left alone.
    """
    if not directory.is_dir():
        return
    for path in directory.iterdir():
        if path.name in keep or not re.fullmatch(r"\d+(_rgba)?(\.png)?", path.name):
            continue
        if path.is_dir():
            for child in path.iterdir():
                if re.fullmatch(r"\d+\.png", child.name):
                    child.unlink()
            if not any(path.iterdir()):
                path.rmdir()
        else:
            path.unlink()


def write_consistent4d(
    scene: Scene4D,
    out_dir: str | Path,
    write_pseudo: bool = True,
    pseudo_background: float | None = None,
) -> Path:
    """Write a scene as RGBA PNGs in the Consistent4D layout.

    Layout (``T`` frames, ``N = scene.name``)::

        out_dir/N/{t}.png                              input view (train view 0)
        out_dir/eval_gt/N/eval_{0..3}/{t}.png           evaluation views (if scene.eval)
        out_dir/N_mv/ref/{t}_rgba.png                   input view again (if write_pseudo)
        out_dir/N_mv/zero123/{t}_rgba/{0..5}.png        pseudo views 1..6 (if write_pseudo)
        out_dir/N_mv/zero123/provenance.json            what the pseudo views are (if write_pseudo)

    Each file is written atomically. Frame files of an earlier, longer clip in these
    directories are removed so the tree always holds exactly ``T`` frames.

    ``provenance.json`` records ``scene.train.source`` as ``"pseudo_views"`` (``"oracle"``
    for the synthetic object's exact renders), the storage background and, for degraded views,
    ``scene.meta["degrade"]``. Readers keep it in ``Scene4D.meta`` and do not re-align oracle
    views.

    Args:
        scene: Scene whose ``train`` view 0 is the input video.
        out_dir: Dataset root; created if needed.
        write_pseudo: Also write the precomputed multi-view (pseudo view) layout.
        pseudo_background: ``None`` writes the pseudo views as RGBA; a grey level stores them
            the way Zero123++ does: opaque RGB composited on that grey (0.5 for the published
            models), without alpha, so a reader has to derive the silhouette.

    Returns:
        The object's input directory ``out_dir/N``.
    """
    if pseudo_background is not None and not 0.0 <= pseudo_background <= 1.0:
        raise ValueError(f"pseudo_background must be in [0, 1] or None; got {pseudo_background!r}")
    root = Path(out_dir)
    name, train = scene.name, scene.train
    n_t = train.num_frames
    frames = {f"{t}.png" for t in range(n_t)}

    input_dir = root / name
    _remove_stale(input_dir, frames)
    for t in range(n_t):
        write_rgba(input_dir / f"{t}.png", _rgba(train, 0, t))

    if scene.eval is not None:
        for k in range(scene.eval.num_views):
            eval_dir = root / "eval_gt" / name / f"eval_{k}"
            _remove_stale(eval_dir, frames)
            for t in range(scene.eval.num_frames):
                write_rgba(eval_dir / f"{t}.png", _rgba(scene.eval, k, t))

    if write_pseudo:
        n_pseudo = train.num_views - scene.num_input_views
        if n_pseudo != 6:
            raise ValueError(
                f"write_consistent4d: the Zero123++ layout needs 6 pseudo views, scene "
                f"{name!r} has {n_pseudo} (pass write_pseudo=False)"
            )
        mv = root / f"{name}_mv"
        _remove_stale(mv / "ref", {f"{t}_rgba.png" for t in range(n_t)})
        _remove_stale(mv / "zero123", {f"{t}_rgba" for t in range(n_t)})
        grey = None if pseudo_background is None else torch.full((3,), float(pseudo_background))
        for t in range(n_t):
            write_rgba(mv / "ref" / f"{t}_rgba.png", _rgba(train, 0, t))
            for j in range(6):
                view = scene.num_input_views + j
                path = mv / "zero123" / f"{t}_rgba" / f"{j}.png"
                if grey is None:
                    write_rgba(path, _rgba(train, view, t))
                else:
                    write_rgb(path, composite(train.rgb[view, t], train.alpha[view, t], grey))
        provenance = {
            "pseudo_views": train.source,
            "stored_as": "rgba" if grey is None else f"opaque rgb on grey {pseudo_background}",
            "degrade": scene.meta.get("degrade"),
            "writer": "ds4d_pl.data.parsers.synthetic.write_consistent4d",
        }
        write_json(mv / "zero123" / PROVENANCE_FILE, provenance)
    return input_dir


def write_synthetic(
    cfg: SyntheticConfig,
    out_dir: str | Path,
    write_pseudo: bool = True,
    pseudo_background: float | None = None,
) -> Path:
    """:func:`make_synthetic_scene` followed by :func:`write_consistent4d`.

    Args:
        cfg: Scene configuration (``cfg.pseudo_views`` picks oracle or degraded pseudo views).
        out_dir: Dataset root.
        write_pseudo: Also write the pseudo views in the precomputed multi-view layout.
        pseudo_background: Store the pseudo views as opaque RGB on this grey (Zero123++: 0.5)
            instead of RGBA.

    Returns:
        The object's input directory ``out_dir/<cfg.name>``.
    """
    scene = make_synthetic_scene(cfg)
    return write_consistent4d(
        scene, out_dir, write_pseudo=write_pseudo, pseudo_background=pseudo_background
    )
