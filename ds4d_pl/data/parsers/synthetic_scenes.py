"""Write the embedded synthetic object in the D-NeRF and N3DV file layouts.

These writers turn the analytic object of :mod:`ds4d_pl.data.parsers.synthetic` into real-format
datasets, so the D-NeRF and N3DV readers can be tested (and benchmarked) on files whose ground
truth is known exactly, without downloading anything:

* :func:`write_dnerf` — a monocular "teleporting" camera: every image has its own random pose
  on the upper hemisphere and its own time, as in the D-NeRF Blender scenes (RGBA PNGs, Blender
  camera-to-world poses, ``camera_angle_x``).
* :func:`write_n3dv` — a fixed forward-facing rig of cameras on a small arc in front of the
  object, all recording the same instants (opaque frames on white, LLFF ``poses_bounds.npy``),
  as extracted PNG frames or as H.264 videos.

The world is the object's: y up, object at the origin (D-NeRF's real scenes are z-up instead;
the readers keep whatever the files hold). Every file is written atomically.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ds4d_pl.atomic import atomic_path, write_json
from ds4d_pl.cameras import Cameras, look_at, orbit_position
from ds4d_pl.data.io import write_rgb, write_rgba
from ds4d_pl.data.parsers.dnerf import opencv_to_blender
from ds4d_pl.data.parsers.synthetic import SyntheticConfig, render_synthetic
from ds4d_pl.export.video import write_video

__all__ = [
    "DNERF_CAMERA_ANGLE_X",
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
# N3DV rig: vertical field of view, distance to the object, and the object's bounding radius
# (everything lies within ~0.62 of the origin) from which the near/far bounds are derived.
_N3DV_FOV_Y_DEG = 40.0
_N3DV_DISTANCE = 2.6
_OBJECT_RADIUS = 0.65
_N3DV_FPS = 30
# Near-lossless encoding: the fixtures compare video input against PNG input.
_N3DV_CRF = 12


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


def synthetic_n3dv_cameras(num_cameras: int, width: int, height: int) -> Cameras:
    """The forward-facing rig :func:`write_n3dv` uses, in camera order.

    Camera 0 is the centre of the rig (azimuth 0°, elevation 5°), which N3DV holds out for
    testing; the others alternate left/right on an arc of up to ±30° azimuth, alternating 0° and
    10° elevation, all at distance 2.6 looking at the origin.
    """
    _check_count("num_cameras", num_cameras)
    az, el = [0.0], [5.0]
    for k in range(1, num_cameras):
        step = (k + 1) // 2
        side = 1.0 if k % 2 else -1.0
        az.append(side * 30.0 * step / max(1, num_cameras // 2))
        el.append(10.0 if step % 2 else 0.0)
    c2w = look_at(orbit_position(torch.tensor(el), torch.tensor(az), _N3DV_DISTANCE))
    focal = 0.5 * height / math.tan(math.radians(_N3DV_FOV_Y_DEG) / 2)
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


def _remove_stale_cameras(root: Path, keep_videos: set[str], keep_dirs: set[str]) -> None:
    """Delete camera files of an earlier write that this one does not produce.

    A reader takes every ``camXX`` entry as a camera and prefers frame folders over videos, so
    leftovers from a write with more cameras or the other format would change what it loads.
    Only ``camXX.mp4`` files and numbered PNGs in ``camXX/images`` are touched.
    """
    if not root.is_dir():
        return
    for p in root.iterdir():
        m = re.fullmatch(r"cam\d+(\.mp4)?", p.name)
        if not m:
            continue
        if m.group(1) and p.is_file() and p.name not in keep_videos:
            p.unlink()
        elif not m.group(1) and p.is_dir():
            images = p / "images"
            if images.is_dir():
                for f in images.iterdir():
                    if p.name not in keep_dirs and re.fullmatch(r"\d+\.png", f.name):
                        f.unlink()
                if not any(images.iterdir()):
                    images.rmdir()
            if not any(p.iterdir()):
                p.rmdir()


def write_n3dv(
    cfg: SyntheticConfig,
    out_dir: str | Path,
    num_cameras: int = 6,
    num_frames: int = 12,
    resolution: tuple[int, int] = (96, 72),
    as_video: bool = False,
) -> Path:
    """Render the synthetic object as an N3DV scene (fixed forward-facing rig).

    Layout::

        out_dir/poses_bounds.npy          (num_cameras, 17) LLFF poses + near/far bounds
        out_dir/camXX/images/0000.png     RGB frames composited on white, or with as_video:
        out_dir/camXX.mp4                 H.264 videos of the same frames

    Camera order and poses are :func:`synthetic_n3dv_cameras`; frame ``f`` is at time
    ``linspace(0, 1, num_frames)[f]``. The bounds bracket the object's bounding sphere.

    Args:
        cfg: Object (``motion`` and ``seed`` matter).
        out_dir: Scene folder; created if needed. Camera entries of an earlier write that this
            one does not produce are removed.
        num_cameras: Number of cameras (>= 2, so one can be held out).
        num_frames: Frames per camera.
        resolution: ``(width, height)``; even sizes when ``as_video`` (H.264 needs them).
        as_video: Write ``camXX.mp4`` videos instead of PNG frames.

    Returns:
        ``out_dir``.
    """
    _check_count("num_cameras", num_cameras, 2)
    _check_count("num_frames", num_frames)
    width, height = (int(x) for x in resolution)
    _check_count("resolution width", width, 8)
    _check_count("resolution height", height, 8)
    if as_video and (width % 2 or height % 2):
        raise ValueError(f"write_n3dv: video frames need an even size, got {width}x{height}")
    root = Path(out_dir)
    cams = synthetic_n3dv_cameras(num_cameras, width, height)
    times = torch.linspace(0.0, 1.0, num_frames) if num_frames > 1 else torch.zeros(1)
    names = [f"cam{i:02d}" for i in range(num_cameras)]
    _remove_stale_cameras(
        root,
        keep_videos={f"{n}.mp4" for n in names} if as_video else set(),
        keep_dirs=set() if as_video else set(names),
    )

    dist = cams.centers.norm(dim=-1).double().numpy()
    near = 0.8 * (dist - _OBJECT_RADIUS)
    far = 1.2 * (dist + _OBJECT_RADIUS)
    rows = np.concatenate(
        [_opencv_to_llff(cams).reshape(num_cameras, 15), near[:, None], far[:, None]], axis=1
    )
    with atomic_path(root / "poses_bounds.npy") as tmp, open(tmp, "wb") as fh:
        np.save(fh, rows)

    for i, name in enumerate(names):
        r = render_synthetic(cfg, cams[i], times, aux=False)
        frames = r.rgb[0] * r.alpha[0] + (1.0 - r.alpha[0])  # (T, H, W, 3) on white
        if as_video:
            write_video(root / f"{name}.mp4", frames, fps=_N3DV_FPS, crf=_N3DV_CRF)
        else:
            # Stale frames beyond num_frames from a longer earlier write would extend the clip.
            images = root / name / "images"
            if images.is_dir():
                for f in images.iterdir():
                    m = re.fullmatch(r"(\d+)\.png", f.name)
                    if m and int(m.group(1)) >= num_frames:
                        f.unlink()
            for f in range(num_frames):
                write_rgb(images / f"{f:04d}.png", frames[f])
    return root
