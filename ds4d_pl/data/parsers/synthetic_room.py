"""A textured box room around the synthetic object: full-frame scenes like Neural 3D Video.

N3DV captures are rooms: every pixel is a textured surface, and only a small part of the frame
(a person's hands, a flame) moves. The embedded object alone on an empty background is nothing
like that, so :mod:`ds4d_pl.data.parsers.synthetic_scenes` can place it in this room.

The room is an axis-aligned box (y up, as the object's world) whose floor touches the bottom of
the object's body. Its six faces carry smooth procedural textures of moderate frequency:

* floor — wooden planks running away from the rig, staggered, each with its own tint;
* back wall (behind the object) — striped wallpaper above a darker wainscot, with a framed
  painting of soft colour blobs to the right of the object;
* left wall — a soft checker with a bright window (cross-shaped mullions);
* right wall — shelves of books of varying widths and colours;
* ceiling — light panels; the front wall, behind the rig, is never seen.

Shading is Lambertian under the object's key and fill lights plus a larger ambient term, so no
face is black. Nothing in the room moves and there are no shadows: every pixel outside the
object's moving part is identical in every frame, and the moving part is known exactly.

Like :func:`~ds4d_pl.data.parsers.synthetic.render_synthetic`, this is an *independent*
analytic ray caster (ray–box exit distances in closed form), never the package's Gaussian
renderer, so comparing the renderer against these images is not circular. The object is
composited over the room with its anti-aliased coverage (:func:`render_room_scene`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ds4d_pl.cameras import Cameras
from ds4d_pl.data.parsers.synthetic import SyntheticConfig, render_synthetic

__all__ = [
    "ROOM_MAX",
    "ROOM_MIN",
    "RoomRender",
    "RoomSceneRender",
    "render_room",
    "render_room_scene",
    "sample_room_scene_points",
]

#: Corners of the room box (world units of the object: y up, object at the origin). The floor
#: is at the bottom of the object's body (centre -0.12, radius 0.42), so the object stands on it.
ROOM_MIN = (-2.4, -0.54, -1.6)
ROOM_MAX = (2.4, 2.0, 4.2)

# Faces in the order of :func:`_exit`: (axis, side) -> id; normals point into the room.
_FLOOR, _CEILING, _BACK, _FRONT, _LEFT, _RIGHT = range(6)
_NORMALS = torch.tensor(
    [[0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1], [1, 0, 0], [-1, 0, 0]], dtype=torch.float32
)
# Same light directions as the object (so the composite reads as one scene), with more ambient
# light: the ceiling and the right wall face away from the key light.
_KEY_LIGHT = (0.45, 0.75, 0.55)
_FILL_LIGHT = (-0.7, 0.3, -0.4)
_AMBIENT, _KEY, _FILL = 0.55, 0.40, 0.20
# Rays per chunk: bounds peak memory at large resolutions.
_MAX_RAYS_PER_CHUNK = 1 << 20


@dataclass
class RoomRender:
    """Output of :func:`render_room` for ``N`` cameras.

    Attributes:
        rgb: ``(N, H, W, 3)`` shaded colour in ``[0, 1]``.
        depth: ``(N, H, W, 1)`` mean camera-z of the pixel's rays.
    """

    rgb: Tensor
    depth: Tensor


@dataclass
class RoomSceneRender:
    """Output of :func:`render_room_scene` for ``N`` cameras × ``T`` times.

    Attributes:
        rgb: ``(N, T, H, W, 3)`` the object composited over the room; opaque everywhere.
        moving: ``(N, T, H, W, 1)`` boolean, ``True`` where any ray of the pixel first hits a
            part of the object that moves in this motion kind (the exact moving-part mask).
    """

    rgb: Tensor
    moving: Tensor


def _hash(*ints: Tensor, seed: int = 0) -> Tensor:
    """Deterministic pseudo-random values in ``[0, 1)`` of integer tensors (same shape).

    An integer hash, so the result is identical on every platform (a ``sin``-based hash of
    large arguments is not).
    """
    h = torch.full_like(ints[0], 2_166_136_261 + 97 * seed, dtype=torch.int64)
    for k, x in enumerate(ints):
        h = (h ^ (x.to(torch.int64) + 0x9E37 * (k + 1))) * 16_777_619 % 4_294_967_296
        h = (h ^ (h >> 13)) * 1_274_126_177 % 4_294_967_296
    return (h % 65_536).float() / 65_536.0


def _mix(a: Tensor | list[float], b: Tensor | list[float], w: Tensor) -> Tensor:
    """``a (1 - w) + b w`` for colours ``(3,)`` and weights ``(M,)``: ``(M, 3)``."""
    a, b = torch.as_tensor(a, dtype=torch.float32), torch.as_tensor(b, dtype=torch.float32)
    return a * (1 - w[:, None]) + b * w[:, None]


def _smooth_box(u: Tensor, lo: float, hi: float, soft: float) -> Tensor:
    """Smooth indicator of ``lo <= u <= hi`` with edges ``soft`` wide."""
    return torch.sigmoid((u - lo) / soft) * torch.sigmoid((hi - u) / soft)


def _floor(x: Tensor, z: Tensor, seed: int) -> Tensor:
    width, length = 0.3, 1.1
    col = torch.floor(x / width)
    shift = _hash(col, seed=seed) * length  # staggered plank ends
    row = torch.floor((z + shift) / length)
    tint = _hash(col, row, seed=seed + 1)
    base = _mix([0.56, 0.38, 0.22], [0.74, 0.55, 0.34], tint)
    grain = 0.06 * torch.sin(2 * math.pi * (x * 9.0 + 0.5 * torch.sin(z * 2.3 + 6.0 * tint)))
    # Dark seams along both plank edges and at the staggered ends.
    fx = x / width - col
    fz = (z + shift) / length - row
    seam = torch.exp(-((torch.minimum(fx, 1 - fx) * width / 0.015) ** 2))
    seam = torch.maximum(seam, torch.exp(-((torch.minimum(fz, 1 - fz) * length / 0.015) ** 2)))
    return base * (1 + grain[:, None]) * (1 - 0.45 * seam[:, None])


def _back_wall(x: Tensor, y: Tensor, seed: int) -> Tensor:
    stripes = torch.sigmoid(4.0 * torch.sin(2 * math.pi * x / 0.32 + 0.7 * seed))
    paper = _mix([0.80, 0.76, 0.62], [0.66, 0.72, 0.70], stripes)
    # Wainscot below a rail: darker panels with vertical grooves.
    groove = torch.exp(-(((x / 0.55 - torch.round(x / 0.55)) * 0.55 / 0.02) ** 2))
    panel = _mix([0.36, 0.44, 0.52], [0.24, 0.30, 0.36], groove)
    lower = torch.sigmoid((0.25 - y) / 0.01)
    col = paper * (1 - lower[:, None]) + panel * lower[:, None]
    # A framed painting right of the object (outside its silhouette from every camera).
    lo_x, hi_x, lo_y, hi_y = 0.9, 1.75, 0.6, 1.35
    frame = _smooth_box(x, lo_x, hi_x, 0.01) * _smooth_box(y, lo_y, hi_y, 0.01)
    inner = _smooth_box(x, lo_x + 0.06, hi_x - 0.06, 0.01) * _smooth_box(
        y, lo_y + 0.06, hi_y - 0.06, 0.01
    )
    art = torch.full((x.shape[0], 3), 0.15)
    blobs = (
        ((1.15, 0.85), (0.95, 0.45, 0.20)),
        ((1.50, 1.10), (0.20, 0.55, 0.85)),
        ((1.30, 1.20), (0.95, 0.85, 0.30)),
        ((1.55, 0.75), (0.40, 0.75, 0.35)),
    )
    for (cx, cy), colour in blobs:
        w = torch.exp(-((x - cx) ** 2 + (y - cy) ** 2) / 0.02)
        art = art + w[:, None] * (torch.tensor(colour) - art)
    col = col * (1 - frame[:, None]) + torch.tensor([0.30, 0.20, 0.10]) * frame[:, None]
    return col * (1 - inner[:, None]) + art * inner[:, None]


def _left_wall(z: Tensor, y: Tensor, seed: int) -> Tensor:
    s = torch.sin(2 * math.pi * z / 0.6 + seed) * torch.sin(2 * math.pi * y / 0.6)
    col = _mix([0.62, 0.70, 0.78], [0.52, 0.60, 0.70], torch.sigmoid(4.0 * s))
    lo_z, hi_z, lo_y, hi_y = -1.1, 0.5, 0.55, 1.55
    window = _smooth_box(z, lo_z, hi_z, 0.01) * _smooth_box(y, lo_y, hi_y, 0.01)
    mid_z, mid_y = 0.5 * (lo_z + hi_z), 0.5 * (lo_y + hi_y)
    mullion = torch.maximum(
        torch.exp(-(((z - mid_z) / 0.025) ** 2)), torch.exp(-(((y - mid_y) / 0.025) ** 2))
    )
    sky = _mix([0.98, 0.97, 0.90], [0.75, 0.86, 0.98], ((y - lo_y) / (hi_y - lo_y)).clamp(0, 1))
    glass = sky * (1 - mullion[:, None]) + torch.tensor([0.95, 0.95, 0.95]) * mullion[:, None]
    return col * (1 - window[:, None]) + glass * window[:, None]


def _right_wall(z: Tensor, y: Tensor, seed: int) -> Tensor:
    shelf_h = 0.42
    level = torch.floor((y + 0.54) / shelf_h)
    fy = (y + 0.54) / shelf_h - level
    # Book spines of equal width, shifted per shelf, each with its own colour and height.
    spine = 0.09
    pos = (z + level * 0.37) / spine
    idx = torch.floor(pos)
    hue = _hash(idx, level, seed=seed + 2)
    book = torch.stack(
        [
            0.35 + 0.55 * torch.sin(2 * math.pi * (hue + 0.00)) ** 2,
            0.30 + 0.45 * torch.sin(2 * math.pi * (hue + 0.33)) ** 2,
            0.25 + 0.50 * torch.sin(2 * math.pi * (hue + 0.66)) ** 2,
        ],
        dim=-1,
    )
    edge = torch.minimum(pos - idx, 1 - (pos - idx)) * spine
    book = book * (1 - 0.5 * torch.exp(-((edge / 0.006) ** 2)))[:, None]
    height = 0.55 + 0.35 * _hash(idx, level, seed=seed + 3)
    in_book = torch.sigmoid((height - fy) / 0.02) * torch.sigmoid((fy - 0.08) / 0.02)
    wood = torch.tensor([0.45, 0.32, 0.20])
    col = wood * (1 - in_book[:, None]) + book * in_book[:, None]
    # The shelf case covers z in [-1.4, 1.6]; plain wall elsewhere.
    case = _smooth_box(z, -1.4, 1.6, 0.01) * torch.sigmoid((1.6 - y) / 0.01)
    plain = torch.tensor([0.70, 0.66, 0.58])
    return plain * (1 - case[:, None]) + col * case[:, None]


def _ceiling(x: Tensor, z: Tensor) -> Tensor:
    fx = x / 0.6 - torch.round(x / 0.6)
    fz = z / 0.6 - torch.round(z / 0.6)
    line = torch.maximum(
        torch.exp(-((fx * 0.6 / 0.012) ** 2)), torch.exp(-((fz * 0.6 / 0.012) ** 2))
    )
    return _mix([0.92, 0.92, 0.90], [0.55, 0.55, 0.55], line)


def _albedo(face: Tensor, p: Tensor, seed: int) -> Tensor:
    """Colour ``(M, 3)`` of room points ``p`` ``(M, 3)`` on faces ``face`` ``(M,)``."""
    out = torch.full((p.shape[0], 3), 0.8)
    x, y, z = p.unbind(-1)
    for fid, fn in (
        (_FLOOR, lambda s: _floor(x[s], z[s], seed)),
        (_BACK, lambda s: _back_wall(x[s], y[s], seed)),
        (_LEFT, lambda s: _left_wall(z[s], y[s], seed)),
        (_RIGHT, lambda s: _right_wall(z[s], y[s], seed)),
        (_CEILING, lambda s: _ceiling(x[s], z[s])),
    ):
        sel = face == fid
        if sel.any():
            out[sel] = fn(sel)
    return out.clamp(0.0, 1.0)


def _shade(albedo: Tensor, normal: Tensor) -> Tensor:
    key = torch.nn.functional.normalize(torch.tensor(_KEY_LIGHT), dim=0)
    fill = torch.nn.functional.normalize(torch.tensor(_FILL_LIGHT), dim=0)
    light = _AMBIENT + _KEY * (normal @ key).clamp_min(0) + _FILL * (normal @ fill).clamp_min(0)
    return (albedo * light[:, None]).clamp(0.0, 1.0)


def _exit(o: Tensor, d: Tensor) -> tuple[Tensor, Tensor]:
    """Distance ``(R,)`` and face id ``(R,)`` where rays ``d`` ``(R, 3)`` from ``o`` leave the box.

    From inside a box every ray leaves through exactly one face: the nearest of the three
    planes it moves towards.
    """
    lo, hi = torch.tensor(ROOM_MIN), torch.tensor(ROOM_MAX)
    bound = torch.where(d > 0, hi, lo)
    safe = torch.where(d.abs() > 1e-12, d, torch.full_like(d, 1e-12))
    t_axis = torch.where(d.abs() > 1e-12, (bound - o) / safe, torch.full_like(d, math.inf))
    t, axis = t_axis.min(dim=-1)
    positive = torch.gather(d, 1, axis[:, None])[:, 0] > 0
    # axis 0 (x): left/right; 1 (y): floor/ceiling; 2 (z): back/front.
    face = torch.stack(
        [
            torch.where(positive, _RIGHT, _LEFT),
            torch.where(positive, _CEILING, _FLOOR),
            torch.where(positive, _FRONT, _BACK),
        ]
    ).gather(0, axis[None])[0]
    return t, face


def _check_inside(cameras: Cameras) -> None:
    lo, hi = torch.tensor(ROOM_MIN), torch.tensor(ROOM_MAX)
    c = cameras.centers.detach().cpu().float()
    outside = ((c <= lo) | (c >= hi)).any(dim=-1)
    if outside.any():
        i = int(outside.nonzero()[0, 0])
        raise ValueError(
            f"render_room: camera {i} at {c[i].tolist()} is outside the room "
            f"{list(ROOM_MIN)}..{list(ROOM_MAX)}"
        )


def _rays(cameras: Cameras, i: int, ss: int) -> tuple[Tensor, Tensor, Tensor]:
    """Origin ``(3,)``, unit directions ``(H*ss * W*ss, 3)`` and camera-z per unit distance."""
    sub = (torch.arange(ss, dtype=torch.float32) + 0.5) / ss
    us = (torch.arange(cameras.width, dtype=torch.float32)[:, None] + sub).reshape(-1)
    vs = (torch.arange(cameras.height, dtype=torch.float32)[:, None] + sub).reshape(-1)
    vv, uu = torch.meshgrid(vs, us, indexing="ij")
    K, c2w = cameras.K[i].float(), cameras.c2w[i].float()
    local = torch.stack(
        [(uu - K[0, 2]) / K[0, 0], (vv - K[1, 2]) / K[1, 1], torch.ones_like(uu)], -1
    ).reshape(-1, 3)
    d = torch.nn.functional.normalize(local @ c2w[:3, :3].T, dim=-1)
    return c2w[:3, 3], d, d @ c2w[:3, 2]


def _pool(x: Tensor, height: int, width: int, ss: int) -> Tensor:
    """``(H*ss * W*ss, C)`` sub-pixel values to their ``(H, W, C)`` pixel means."""
    c = x.shape[-1]
    return x.reshape(height, ss, width, ss, c).mean(dim=(1, 3))


@torch.no_grad()
def render_room(cameras: Cameras, seed: int = 0, supersample: int = 2) -> RoomRender:
    """Ray-cast the empty room from cameras inside it.

    Args:
        cameras: ``N`` cameras (OpenCV convention) inside the room box.
        seed: Changes the plank, book and wallpaper patterns.
        supersample: Rays per pixel along each axis (anti-aliasing).

    Returns:
        ``(N, H, W, ·)`` colour and depth.

    Raises:
        ValueError: A camera outside the box, or ``supersample < 1``.
    """
    if supersample < 1:
        raise ValueError(f"render_room: supersample must be >= 1, got {supersample}")
    cameras = cameras.to("cpu")
    _check_inside(cameras)
    ss, w, h = supersample, cameras.width, cameras.height
    rgb = torch.empty(len(cameras), h, w, 3)
    depth = torch.empty(len(cameras), h, w, 1)
    for i in range(len(cameras)):
        o, d, z_per_t = _rays(cameras, i, ss)
        t, face = _exit(o[None], d)
        p = o + t[:, None] * d
        col = _shade(_albedo(face, p, seed), _NORMALS[face])
        rgb[i] = _pool(col, h, w, ss)
        depth[i] = _pool((t * z_per_t)[:, None], h, w, ss)
    return RoomRender(rgb, depth)


@torch.no_grad()
def render_room_scene(
    cfg: SyntheticConfig, cameras: Cameras, times: Tensor, supersample: int = 2
) -> RoomSceneRender:
    """The synthetic object standing in the room, from arbitrary cameras and times.

    The object (:func:`render_synthetic`) is composited over the room with its anti-aliased
    coverage. The object always lies in front of the room along a ray (both camera and object
    are inside the box), so this is exact away from silhouette edges; at an edge the pixel mixes
    the object's colour with the room's mean colour over the whole pixel.

    Pixels outside the union over time of the moving mask are snapped to frame 0, so "pixels
    outside the moving part never change" holds exactly (vectorised float maths can otherwise
    differ by an ulp between frames).

    Args:
        cfg: Object configuration (``motion`` and ``seed`` matter; ``seed`` also varies the room).
        cameras: ``N`` cameras inside the room.
        times: ``(T,)`` times in ``[0, 1]``.
        supersample: Rays per pixel along each axis.

    Returns:
        Opaque colour and the exact moving-part mask, ``(N, T, H, W, ·)``.
    """
    room = render_room(cameras, cfg.seed, supersample)
    obj = render_synthetic(cfg, cameras, times, supersample=supersample, aux=False)
    rgb = obj.rgb * obj.alpha + room.rgb[:, None] * (1.0 - obj.alpha)
    ever = obj.moving.any(dim=1, keepdim=True)
    rgb = torch.where(ever, rgb, rgb[:, :1])
    return RoomSceneRender(rgb.contiguous(), obj.moving)


@torch.no_grad()
def sample_room_scene_points(
    cfg: SyntheticConfig,
    cameras: Cameras,
    time: float,
    num_points: int,
    seed: int = 0,
) -> tuple[Tensor, Tensor]:
    """Visible surface points of the room scene at one instant, with their colours.

    A stand-in for the multi-view-stereo point cloud real N3DV users make with COLMAP (4D-GS
    ships it as ``points3D_downsample2.ply``): random pixels of the given cameras are
    back-projected along one ray each to the first surface they hit (object or room), carrying
    that ray's shaded colour. Only surfaces some camera sees get points, as with stereo.

    Args:
        cfg: Object configuration.
        cameras: Cameras whose pixels are back-projected (the training cameras).
        time: Instant in ``[0, 1]`` the object is posed at.
        num_points: Number of points.
        seed: Sampling seed.

    Returns:
        ``points`` ``(num_points, 3)`` and ``colors`` ``(num_points, 3)`` in ``[0, 1]``.
    """
    if isinstance(num_points, bool) or not isinstance(num_points, int) or num_points < 1:
        raise ValueError(f"num_points must be an integer >= 1, got {num_points!r}")
    cameras = cameras.to("cpu")
    room = render_room(cameras, cfg.seed, supersample=1)
    obj = render_synthetic(cfg, cameras, torch.tensor([float(time)]), supersample=1, aux=True)
    hit = obj.alpha[:, 0] > 0.5  # one ray per pixel: coverage is 0 or 1
    depth = torch.where(hit, obj.depth[:, 0], room.depth)[..., 0]  # (N, H, W)
    colour = torch.where(hit, obj.rgb[:, 0], room.rgb)
    n, h, w = depth.shape
    g = torch.Generator().manual_seed(104_729 * cfg.seed + seed + 3)
    pick = torch.randint(n * h * w, (num_points,), generator=g)
    cam, rest = pick // (h * w), pick % (h * w)
    v, u = rest // w, rest % w
    z = depth[cam, v, u]
    K = cameras.K[cam].float()
    local = torch.stack(
        [
            (u.float() + 0.5 - K[:, 0, 2]) / K[:, 0, 0] * z,
            (v.float() + 0.5 - K[:, 1, 2]) / K[:, 1, 1] * z,
            z,
        ],
        dim=-1,
    )
    c2w = cameras.c2w[cam].float()
    points = (c2w[:, :3, :3] @ local[..., None])[..., 0] + c2w[:, :3, 3]
    return points.contiguous(), colour[cam, v, u].contiguous()
