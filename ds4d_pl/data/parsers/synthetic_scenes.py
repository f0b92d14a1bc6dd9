"""Write the embedded synthetic object in the D-NeRF and N3DV file layouts.

These writers turn the analytic object of :mod:`ds4d_pl.data.parsers.synthetic` into real-format
datasets, so the D-NeRF and N3DV readers can be tested (and benchmarked) on files whose ground
truth is known exactly, without downloading anything:

* :func:`write_dnerf` — a monocular "teleporting" camera: every image has its own random pose
  on the upper hemisphere and its own time, as in the D-NeRF Blender scenes (RGBA PNGs, Blender
  camera-to-world poses, ``camera_angle_x``).
* :func:`write_n3dv` — a fixed forward-facing rig of cameras on an arc in front of the object,
  all recording the same instants (LLFF ``poses_bounds.npy``), as extracted PNG frames or as
  H.264 videos. By default the object stands in a textured room
  (:mod:`~ds4d_pl.data.parsers.synthetic_room`), so, as in N3DV, every pixel is a surface and
  only a small part of the frame moves; the object alone on white remains an option. Exact
  per-frame moving-part masks and a coloured point cloud (the stand-in for COLMAP's) are
  written too.

The world is the object's: y up, object at the origin (D-NeRF's real scenes are z-up instead;
the readers keep whatever the files hold). Every file is written atomically.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ds4d_pl.atomic import atomic_path, write_json
from ds4d_pl.cameras import Cameras, look_at, orbit_position
from ds4d_pl.data.io import write_rgb, write_rgba
from ds4d_pl.data.parsers.dnerf import opencv_to_blender
from ds4d_pl.data.parsers.synthetic import (
    SyntheticConfig,
    render_synthetic,
    sample_synthetic_surface,
)
from ds4d_pl.data.parsers.synthetic_room import (
    render_room,
    render_room_scene,
    sample_room_scene_points,
)
from ds4d_pl.export.video import write_video

__all__ = [
    "DNERF_CAMERA_ANGLE_X",
    "N3DV_BACKGROUNDS",
    "POINTS_FILE",
    "SCENE_POINTS",
    "dnerf_split_times",
    "synthetic_dnerf_cameras",
    "synthetic_n3dv_cameras",
    "write_dnerf",
    "write_n3dv",
]

#: Horizontal field of view of the D-NeRF Blender scenes (radians, ≈ 39.6°).
DNERF_CAMERA_ANGLE_X = 0.6911112070083618
#: Elevation range (degrees) of the random D-NeRF cameras: mostly from above, as in D-NeRF.
_DNERF_ELEVATION = (-10.0, 60.0)
_DNERF_SPLITS = ("train", "val", "test")
#: What surrounds the object in :func:`write_n3dv`: a textured room, or nothing (white).
N3DV_BACKGROUNDS = ("room", "none")
#: The point cloud :func:`write_n3dv` writes: the name 4D-GS gives its downsampled COLMAP points.
POINTS_FILE = "points3D_downsample2.ply"
#: Default number of points in it (4D-GS downsamples COLMAP's to at most ~40k).
SCENE_POINTS = 20_000
# The object's bounding radius (everything lies within ~0.62 of the origin), from which the
# near bounds are derived.
_OBJECT_RADIUS = 0.65
_N3DV_FPS = 30
# Near-lossless encoding: the fixtures compare video input against PNG input.
_N3DV_CRF = 12


@dataclass(frozen=True)
class _Rig:
    """Geometry of the forward-facing rig: distance to the look-at point, vertical field of
    view, half-angle of the arc, height of the look-at point."""

    distance: float
    fov_y_deg: float
    arc_deg: float
    target_y: float


# In the room the rig comes closer and looks a little above the origin (the object's centre),
# so the object covers ~15 % of the frame and its arm ~1 %: a small moving part, as in N3DV.
_RIGS = {"none": _Rig(2.6, 40.0, 30.0, 0.0), "room": _Rig(2.2, 45.0, 20.0, 0.1)}


def _rig(background: str) -> _Rig:
    if background not in _RIGS:
        raise ValueError(
            f"background must be one of {', '.join(N3DV_BACKGROUNDS)}, got {background!r}"
        )
    return _RIGS[background]


def _check_count(name: str, value: int, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def synthetic_dnerf_cameras(
    split: str, num: int, resolution: int, radius: float = 2.6, seed: int = 0
) -> Cameras:
    """The random OpenCV cameras :func:`write_dnerf` uses for one split.

    Camera centres are uniform in azimuth and in elevation over [-10°, 60°] at ``radius``,
    looking at the origin with world ``+y`` up; each split draws from its own seed, so test
    poses differ from training poses.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``.
        num: Number of cameras.
        resolution: Square image size.
        radius: Distance to the origin.
        seed: Base seed.

    Returns:
        ``num`` cameras with D-NeRF's horizontal field of view.
    """
    if split not in _DNERF_SPLITS:
        raise ValueError(f"split must be one of {', '.join(_DNERF_SPLITS)}, got {split!r}")
    g = torch.Generator().manual_seed(1_000 * seed + _DNERF_SPLITS.index(split))
    lo, hi = _DNERF_ELEVATION
    elevation = lo + (hi - lo) * torch.rand(num, generator=g)
    azimuth = 360.0 * torch.rand(num, generator=g)
    c2w = look_at(orbit_position(elevation, azimuth, radius))
    focal = 0.5 * resolution / math.tan(0.5 * DNERF_CAMERA_ANGLE_X)
    K = torch.tensor([[focal, 0.0, resolution / 2], [0.0, focal, resolution / 2], [0, 0, 1.0]])
    return Cameras(c2w, K.expand(num, 3, 3).clone(), resolution, resolution)


def dnerf_split_times(split: str, num: int) -> Tensor:
    """Frame times of a :func:`write_dnerf` split.

    Training times are ``linspace(0, 1, num)``; validation and test times sit in the middle of
    ``num`` equal bins, so they fall between training instants.
    """
    if split == "train":
        return torch.linspace(0.0, 1.0, num) if num > 1 else torch.zeros(1)
    return (torch.arange(num, dtype=torch.float32) + 0.5) / num


def write_dnerf(
    cfg: SyntheticConfig,
    out_dir: str | Path,
    num_train: int = 60,
    num_val: int = 10,
    num_test: int = 20,
    resolution: int = 128,
    radius: float = 2.6,
    seed: int = 0,
) -> Path:
    """Render the synthetic object as a D-NeRF scene.

    Layout::

        out_dir/transforms_{train,val,test}.json   camera_angle_x + frames (Blender c2w, time)
        out_dir/{train,val,test}/r_XXX.png          RGBA, straight colour
        out_dir/{train,val,test}/dyn_XXX.png        moving-part mask ("dyn_mask_path")

    At radius 2.6 with D-NeRF's 39.6° field of view the object fills about 70 % of the frame.

    Args:
        cfg: Object (``motion`` and ``seed`` matter; its frame count and resolutions do not).
        out_dir: Scene folder; created if needed.
        num_train: Training images (times ``linspace(0, 1, num_train)``).
        num_val: Validation images.
        num_test: Test images.
        resolution: Square image size.
        radius: Camera distance to the object.
        seed: Seed of the camera poses.

    Returns:
        ``out_dir``.
    """
    for name, value in (("num_train", num_train), ("num_val", num_val), ("num_test", num_test)):
        _check_count(name, value)
    _check_count("resolution", resolution, 8)
    if not radius > _OBJECT_RADIUS:
        raise ValueError(f"radius must exceed the object's radius {_OBJECT_RADIUS}, got {radius}")
    root = Path(out_dir)
    for split, num in (("train", num_train), ("val", num_val), ("test", num_test)):
        cams = synthetic_dnerf_cameras(split, num, resolution, radius, seed)
        times = dnerf_split_times(split, num)
        blender = opencv_to_blender(cams.c2w)
        frames = []
        for i in range(num):
            # One camera at one time per image: the camera moves with time.
            r = render_synthetic(cfg, cams[i], times[i : i + 1], aux=False)
            write_rgba(root / split / f"r_{i:03d}.png", torch.cat([r.rgb[0, 0], r.alpha[0, 0]], -1))
            # The moving part's pixels in this image: the only dynamic-region mask a camera
            # that moves every frame can have.
            write_rgb(root / split / f"dyn_{i:03d}.png", r.moving[0, 0].float().expand(-1, -1, 3))
            frames.append(
                {
                    "file_path": f"./{split}/r_{i:03d}",
                    "dyn_mask_path": f"./{split}/dyn_{i:03d}",
                    "time": float(times[i]),
                    "transform_matrix": blender[i].tolist(),
                }
            )
        write_json(
            root / f"transforms_{split}.json",
            {"camera_angle_x": DNERF_CAMERA_ANGLE_X, "frames": frames},
        )
    return root


def synthetic_n3dv_cameras(
    num_cameras: int, width: int, height: int, background: str = "room"
) -> Cameras:
    """The forward-facing rig :func:`write_n3dv` uses, in camera order.

    Camera 0 is the centre of the rig (azimuth 0°, elevation 5°), which N3DV holds out for
    testing. Cameras 1.. run left to right (increasing azimuth, evenly spaced over the whole
    arc, so camera 0 sits in the middle of it), alternating between a lower (0°) and an upper
    (10°) row, all looking at the object. With ``background="room"`` the rig is closer and wider
    in angle (2.2 from the object, ±20°, 45° vertical field of view) so the object covers a
    room-like share of the frame; ``"none"`` keeps the object-only rig (2.6, ±30°, 40°).

    Args:
        num_cameras: Number of cameras (>= 1).
        width: Image width.
        height: Image height.
        background: ``"room"`` or ``"none"`` (see :func:`write_n3dv`).

    Returns:
        ``num_cameras`` OpenCV cameras.
    """
    _check_count("num_cameras", num_cameras)
    rig = _rig(background)
    side = num_cameras - 1
    az = [0.0] + torch.linspace(-rig.arc_deg, rig.arc_deg, side).tolist() if side else [0.0]
    el = [5.0] + [0.0 if k % 2 == 0 else 10.0 for k in range(side)]
    target = torch.tensor([0.0, rig.target_y, 0.0])
    eye = orbit_position(torch.tensor(el), torch.tensor(az), rig.distance) + target
    c2w = look_at(eye, target)
    focal = 0.5 * height / math.tan(math.radians(rig.fov_y_deg) / 2)
    K = torch.tensor([[focal, 0.0, width / 2], [0.0, focal, height / 2], [0.0, 0.0, 1.0]])
    return Cameras(c2w, K.expand(num_cameras, 3, 3).clone(), width, height)


def _opencv_to_llff(cameras: Cameras) -> np.ndarray:
    """``(N, 3, 5)`` LLFF poses ``[down, right, back, centre, hwf]`` of OpenCV cameras."""
    c2w = cameras.c2w.double().numpy()
    poses = np.zeros((len(cameras), 3, 5))
    poses[:, :, 0] = c2w[:, :3, 1]  # down
    poses[:, :, 1] = c2w[:, :3, 0]  # right
    poses[:, :, 2] = -c2w[:, :3, 2]  # backwards
    poses[:, :, 3] = c2w[:, :3, 3]
    poses[:, :, 4] = np.stack(
        [np.full(len(cameras), cameras.height), np.full(len(cameras), cameras.width)]
        + [cameras.K[:, 0, 0].double().numpy()],
        axis=-1,
    )
    return poses


def _clear_numbered(folder: Path, keep: int) -> None:
    """Delete ``<n>.png`` files with ``n >= keep`` from ``folder``; remove it if left empty.

    A reader takes every numbered frame as part of the clip, so frames of an earlier, longer
    write would extend it.
    """
    if not folder.is_dir():
        return
    for f in folder.iterdir():
        m = re.fullmatch(r"(\d+)\.png", f.name)
        if m and int(m.group(1)) >= keep:
            f.unlink()
    if not any(folder.iterdir()):
        folder.rmdir()


def _remove_stale_cameras(root: Path, names: list[str], num_frames: int, as_video: bool) -> None:
    """Delete camera files of an earlier write that this one does not produce.

    A reader takes every ``camXX`` entry as a camera and prefers frame folders over videos, so
    leftovers from a write with more cameras, more frames or the other format would change what
    it loads. Only ``camXX.mp4`` files and numbered PNGs in ``camXX/images`` and
    ``camXX/dyn_masks`` are touched.
    """
    if not root.is_dir():
        return
    for p in root.iterdir():
        m = re.fullmatch(r"(cam\d+)(\.mp4)?", p.name)
        if not m:
            continue
        kept = m.group(1) in names
        if m.group(2):
            if p.is_file() and not (kept and as_video):
                p.unlink()
        elif p.is_dir():
            _clear_numbered(p / "images", num_frames if kept and not as_video else 0)
            _clear_numbered(p / "dyn_masks", num_frames if kept else 0)
            if not any(p.iterdir()):
                p.rmdir()


def _write_points(path: Path, points: Tensor, colors: Tensor) -> None:
    """A coloured point cloud as a binary PLY (``x y z`` float, ``red green blue`` uchar).

    The layout of a COLMAP ``fused.ply`` without normals, which is what 4D-GS's
    ``points3D_downsample2.ply`` is.
    """
    from plyfile import PlyData, PlyElement

    dtype = [(n, "f4") for n in "xyz"] + [(n, "u1") for n in ("red", "green", "blue")]
    data = np.empty(points.shape[0], dtype=dtype)
    for k, n in enumerate("xyz"):
        data[n] = points[:, k].numpy()
    rgb = (colors.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).numpy()
    for k, n in enumerate(("red", "green", "blue")):
        data[n] = rgb[:, k]
    with atomic_path(path) as tmp:
        PlyData([PlyElement.describe(data, "vertex")], text=False, byte_order="<").write(str(tmp))


def _moving_fractions(moving: Tensor, names: list[str]) -> dict:
    """Summary of the moving-part share of the frames, ``moving`` ``(V, T, H, W, 1)``."""
    per_frame = moving.float().mean(dim=(2, 3, 4))  # (V, T)
    return {
        "per_frame_mean": float(per_frame.mean()),
        "per_frame_min": float(per_frame.min()),
        "per_frame_max": float(per_frame.max()),
        "union_over_time_mean": float(moving.any(dim=1).float().mean()),
        "per_camera_mean": {n: float(per_frame[i].mean()) for i, n in enumerate(names)},
    }


def write_n3dv(
    cfg: SyntheticConfig,
    out_dir: str | Path,
    num_cameras: int = 12,
    num_frames: int = 12,
    resolution: tuple[int, int] = (128, 96),
    as_video: bool = False,
    background: str = "room",
    num_points: int = SCENE_POINTS,
) -> Path:
    """Render the synthetic object as an N3DV scene (fixed forward-facing rig).

    Layout::

        out_dir/poses_bounds.npy            (num_cameras, 17) LLFF poses + near/far bounds
        out_dir/camXX/images/0000.png       RGB frames, or with as_video:
        out_dir/camXX.mp4                   H.264 videos of the same frames
        out_dir/camXX/dyn_masks/0000.png    the moving part's pixels in each frame (white)
        out_dir/points3D_downsample2.ply    coloured surface points (4D-GS's COLMAP file name)
        out_dir/synthetic.json              how the scene was made, moving-pixel shares

    ``background="room"`` stands the object in a textured box room
    (:mod:`~ds4d_pl.data.parsers.synthetic_room`): full-frame, opaque images in which only the
    object's moving part changes, as in N3DV. ``"none"`` composites the object alone on white.

    Camera order and poses are :func:`synthetic_n3dv_cameras` (``cam00`` in the middle of the
    arc, N3DV's held-out camera); frame ``f`` is at time ``linspace(0, 1, num_frames)[f]``. The
    masks are exact (ray-cast), per camera and frame. The point cloud stands in for the COLMAP
    points real N3DV scenes get: ``num_points`` pixels of the *training* cameras (not
    ``cam00``) back-projected onto the surfaces they see at the middle frame, with their
    colours (``"none"``: samples of the object's surface at the middle frame). The bounds
    bracket what each camera sees.

    Args:
        cfg: Object (``motion`` and ``seed`` matter; the seed also varies the room's patterns).
        out_dir: Scene folder; created if needed. Camera entries of an earlier write that this
            one does not produce are removed.
        num_cameras: Number of cameras (>= 2, so one can be held out).
        num_frames: Frames per camera.
        resolution: ``(width, height)``; even sizes when ``as_video`` (H.264 needs them).
        as_video: Write ``camXX.mp4`` videos instead of PNG frames (masks stay PNGs).
        background: ``"room"`` or ``"none"``.
        num_points: Points in ``points3D_downsample2.ply``.

    Returns:
        ``out_dir``.

    Raises:
        ValueError: A count or size out of range, an odd size for video, an unknown background.
    """
    _check_count("num_cameras", num_cameras, 2)
    _check_count("num_frames", num_frames)
    _check_count("num_points", num_points)
    _rig(background)
    width, height = (int(x) for x in resolution)
    _check_count("resolution width", width, 8)
    _check_count("resolution height", height, 8)
    if as_video and (width % 2 or height % 2):
        raise ValueError(f"write_n3dv: video frames need an even size, got {width}x{height}")
    root = Path(out_dir)
    cams = synthetic_n3dv_cameras(num_cameras, width, height, background)
    times = torch.linspace(0.0, 1.0, num_frames) if num_frames > 1 else torch.zeros(1)
    mid = float(times[len(times) // 2])
    names = [f"cam{i:02d}" for i in range(num_cameras)]
    _remove_stale_cameras(root, names, num_frames, as_video)

    dist = cams.centers.norm(dim=-1).double().numpy()
    near = 0.8 * (dist - _OBJECT_RADIUS)
    if background == "room":
        # The room's nearest and farthest visible points bound what each camera sees (the
        # floor may come closer than the object).
        room_depth = render_room(cams, cfg.seed, supersample=1).depth.double()
        near = np.minimum(near, 0.8 * room_depth.amin(dim=(1, 2, 3)).numpy())
        far = 1.2 * room_depth.amax(dim=(1, 2, 3)).numpy()
        points, colors = sample_room_scene_points(cfg, cams[1:], mid, num_points)
    else:
        far = 1.2 * (dist + _OBJECT_RADIUS)
        points, colors = sample_synthetic_surface(cfg, mid, num_points)
    rows = np.concatenate(
        [_opencv_to_llff(cams).reshape(num_cameras, 15), near[:, None], far[:, None]], axis=1
    )
    with atomic_path(root / "poses_bounds.npy") as tmp, open(tmp, "wb") as fh:
        np.save(fh, rows)
    _write_points(root / POINTS_FILE, points, colors)

    moving_all = []
    for i, name in enumerate(names):
        if background == "room":
            r = render_room_scene(cfg, cams[i], times)
            frames, moving = r.rgb[0], r.moving[0]
        else:
            r = render_synthetic(cfg, cams[i], times, aux=False)
            frames = r.rgb[0] * r.alpha[0] + (1.0 - r.alpha[0])  # (T, H, W, 3) on white
            moving = r.moving[0]
        moving_all.append(moving)
        if as_video:
            write_video(root / f"{name}.mp4", frames, fps=_N3DV_FPS, crf=_N3DV_CRF)
        else:
            for f in range(num_frames):
                write_rgb(root / name / "images" / f"{f:04d}.png", frames[f])
        for f in range(num_frames):
            write_rgb(
                root / name / "dyn_masks" / f"{f:04d}.png", moving[f].float().expand(-1, -1, 3)
            )

    info = {
        "generator": "ds4d synth --format n3dv",
        "background": background,
        "motion": cfg.motion,
        "motion_cycles": cfg.motion_cycles,
        "seed": cfg.seed,
        "num_cameras": num_cameras,
        "num_frames": num_frames,
        "resolution": [width, height],
        "test_camera": names[0],
        "rig": asdict(_rig(background)),
        "points_file": POINTS_FILE,
        "points": (
            f"{num_points} pixels of the training cameras back-projected at t={mid:g}"
            if background == "room"
            else f"{num_points} object surface samples at t={mid:g}"
        ),
        "moving_fraction": _moving_fractions(torch.stack(moving_all), names),
    }
    write_json(root / "synthetic.json", info)
    return root
