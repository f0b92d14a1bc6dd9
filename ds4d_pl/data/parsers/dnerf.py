"""D-NeRF layout: a monocular capture whose camera moves to a new pose at every frame.

Layout (the Blender synthetic scenes of D-NeRF, Pumarola et al. 2021)::

    ROOT/transforms_train.json    {"camera_angle_x": float, "frames": [frame, ...]}
    ROOT/transforms_val.json      frame = {"file_path": "./train/r_000", "time": float in [0, 1],
    ROOT/transforms_test.json              "transform_matrix": 4x4 Blender camera-to-world}
    ROOT/{train,val,test}/r_XXX.png   RGBA images (straight colour + alpha)

``file_path`` is relative to ``ROOT`` and usually has no extension; ``.png`` is tried then.
An optional per-frame ``"dyn_mask_path"`` (same rules, a greyscale PNG, white = moving) gives the
dynamic-region mask of that image; a camera that moves every frame leaves no other way to know
which pixels belong to moving parts, so without it dynamic-region PSNR is reported as n/a. The
synthetic writer (``synthetic_scenes.write_dnerf``) provides it. Either every frame of a split
has one or none does.

D-NeRF ships no point cloud; like 4D-GS, the scene's initial points are random in a cube
(``init_box``), which the ``points`` initialisation then uses.

Each split becomes one :class:`ViewSet` with ``V = 1`` view and ``T`` frames sorted by time
(stable for equal times), with one camera per frame (``len(cameras) == T``), because D-NeRF
has a single image per instant and the camera "teleports" between frames.

Poses are Blender/OpenGL camera-to-world matrices (x right, y up, z backward); they are turned
into the package's OpenCV axes by :func:`blender_to_opencv` and nowhere else. The world frame
is kept as it is in the files: Blender scenes are **z-up**, unlike the y-up object protocol.

Every problem is reported once, at load time, naming the file and what is wrong.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ds4d_pl.cameras import Cameras, opengl_to_opencv
from ds4d_pl.data.io import read_rgba
from ds4d_pl.data.types import Scene4D, ViewSet

__all__ = [
    "DNeRFConfig",
    "blender_to_opencv",
    "downscale_rgba",
    "load_dnerf",
    "opencv_to_blender",
]

_EVAL_SPLITS = ("test", "val")


@dataclass
class DNeRFConfig:
    """Options of the D-NeRF reader.

    Attributes:
        downscale: Integer factor the images are shrunk by (area average of premultiplied
            colour); ``2`` is D-NeRF's usual ``half_res``. Must divide the image size.
        background: Colour the dataset's RGBA images are meant to be composited on (white for
            the D-NeRF Blender scenes). The loaded views keep straight colour + alpha; the value
            is recorded in ``Scene4D.meta["background"]`` so a run whose model background differs
            can warn.
        eval_split: Split used for evaluation, ``"test"`` (default) or ``"val"``.
        require_alpha: Refuse images without an alpha channel; an opaque image would make the
            whole frame foreground.
        init_box: Half size of the cube the initial points are drawn in (world units).
        num_init_points: Number of random initial points (grey).
    """

    downscale: int = 1
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    eval_split: str = "test"
    require_alpha: bool = True
    init_box: float = 1.3
    num_init_points: int = 2000

    def __post_init__(self) -> None:
        if isinstance(self.downscale, bool) or not isinstance(self.downscale, int):
            raise ValueError(f"DNeRFConfig.downscale must be an integer, got {self.downscale!r}")
        if self.downscale < 1:
            raise ValueError(f"DNeRFConfig.downscale must be >= 1, got {self.downscale}")
        try:
            bg = tuple(float(c) for c in self.background)
        except (TypeError, ValueError):
            bg = ()
        if len(bg) != 3 or not all(0.0 <= c <= 1.0 for c in bg):
            raise ValueError(
                "DNeRFConfig.background must be three numbers in [0, 1] (RGB), got "
                f"{self.background!r}"
            )
        # Config systems hand over lists; a tuple keeps the field hashable and comparable.
        self.background = bg
        if self.eval_split not in _EVAL_SPLITS:
            raise ValueError(
                f"DNeRFConfig.eval_split must be one of {', '.join(_EVAL_SPLITS)}, got "
                f"{self.eval_split!r}"
            )
        if not self.init_box > 0:
            raise ValueError(f"DNeRFConfig.init_box must be > 0, got {self.init_box!r}")
        if isinstance(self.num_init_points, bool) or not (
            isinstance(self.num_init_points, int) and self.num_init_points >= 1
        ):
            raise ValueError(
                f"DNeRFConfig.num_init_points must be an integer >= 1, got {self.num_init_points!r}"
            )
        if not isinstance(self.require_alpha, bool):
            raise ValueError(
                f"DNeRFConfig.require_alpha must be true or false, got {self.require_alpha!r}"
            )


def blender_to_opencv(transform_matrix: Any) -> Tensor:
    """Convert Blender/OpenGL camera-to-world matrices to the package's OpenCV axes.

    Blender cameras look down their local ``-z`` with ``+y`` up; OpenCV cameras look down
    ``+z`` with ``+y`` down. The camera centre and the world frame are unchanged.

    Args:
        transform_matrix: ``(4, 4)`` or ``(N, 4, 4)`` matrix (nested lists, array or tensor).

    Returns:
        float32 tensor of the same shape.
    """
    m = torch.as_tensor(np.asarray(transform_matrix, dtype=np.float32))
    if m.ndim < 2 or m.shape[-2:] != (4, 4):
        raise ValueError(f"blender_to_opencv: expected (..., 4, 4) matrices, got {tuple(m.shape)}")
    return opengl_to_opencv(m)


def opencv_to_blender(c2w: Tensor) -> Tensor:
    """Inverse of :func:`blender_to_opencv` (the axis flip is its own inverse)."""
    return opengl_to_opencv(torch.as_tensor(c2w, dtype=torch.float32))


def downscale_rgba(rgba: Tensor, factor: int) -> Tensor:
    """Shrink ``(H, W, 4)`` straight RGBA by an integer ``factor`` (area average).

    Colour is averaged premultiplied and divided by the averaged alpha: averaging straight
    colour would mix the arbitrary colour stored in transparent pixels into the object's edges.
    Fully transparent output pixels keep the straight average.
    """
    if factor == 1:
        return rgba
    x = rgba.permute(2, 0, 1)[None]
    rgb, alpha = x[:, :3], x[:, 3:]
    pool = torch.nn.functional.avg_pool2d
    a = pool(alpha, factor)
    premult = pool(rgb * alpha, factor)
    straight = torch.where(a > 0, premult / a.clamp_min(1e-8), pool(rgb, factor))
    return torch.cat([straight.clamp(0.0, 1.0), a], dim=1)[0].permute(1, 2, 0).contiguous()


def _read_json(path: Path) -> Any:
    try:
        text = path.read_text()
    except OSError as err:
        raise ValueError(f"{path}: cannot read file ({err})") from err
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{path}: malformed JSON at line {err.lineno}, column {err.colno}: {err.msg}"
        ) from err


def _number(value: Any) -> float | None:
    """``value`` as a finite float, or ``None`` when it is not a real number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


#: Tolerance on ``R^T R = I`` of a camera-to-world rotation (Blender writes float32 poses).
_POSE_TOL = 1e-3


def _check_pose(m: np.ndarray, where: str) -> None:
    """Refuse a ``transform_matrix`` that is no camera pose (a singular, scaled or mirrored
    rotation block, or a last row other than ``[0, 0, 0, 1]``): rendering inverts it, and a
    singular one would fail only mid-training."""
    if not np.allclose(m[3], [0.0, 0.0, 0.0, 1.0], atol=_POSE_TOL):
        raise ValueError(f"{where}: the last row of 'transform_matrix' must be [0, 0, 0, 1]")
    rot = m[:3, :3]
    det = float(np.linalg.det(rot))
    if abs(det) < 1e-6:
        raise ValueError(
            f"{where}: 'transform_matrix' is singular (its rotation block has no inverse)"
        )
    if det < 0 or not np.allclose(rot.T @ rot, np.eye(3), atol=_POSE_TOL):
        raise ValueError(
            f"{where}: the rotation block of 'transform_matrix' is not a rotation (scaled or "
            "mirrored axes)"
        )


def _inside(path: Path, root: Path) -> bool:
    """Whether ``path`` stays inside ``root`` (``..`` and symlinks resolved)."""
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


def _image_path(root: Path, file_path: str) -> Path:
    direct = root / file_path
    if direct.suffix.lower() in (".png", ".jpg", ".jpeg") and direct.is_file():
        return direct
    return root / f"{file_path}.png"


def _load_split(root: Path, split: str, cfg: DNeRFConfig) -> tuple[ViewSet, float]:
    """One split as a ``V = 1`` view set with a camera per frame, and its ``camera_angle_x``."""
    path = root / f"transforms_{split}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: transforms file of the {split!r} split does not exist")
    data = _read_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object at the top level")
    if "camera_angle_x" not in data:
        raise ValueError(f"{path}: missing key 'camera_angle_x'")
    angle = _number(data["camera_angle_x"])
    if angle is None or not 0.0 < angle < math.pi:
        raise ValueError(
            f"{path}: 'camera_angle_x' must be a horizontal field of view in radians in "
            f"(0, pi), got {data['camera_angle_x']!r}"
        )
    if "frames" not in data:
        raise ValueError(f"{path}: missing key 'frames'")
    frames = data["frames"]
    if not isinstance(frames, list) or not frames:
        raise ValueError(f"{path}: 'frames' must be a non-empty list")

    # Parse and validate every entry before reading any image, so a typo near the end of a
    # long file does not cost a full image load first.
    entries = []
    for i, fr in enumerate(frames):
        where = f"{path}: frames[{i}]"
        if not isinstance(fr, dict):
            raise ValueError(f"{where} must be an object")
        for key in ("file_path", "time", "transform_matrix"):
            if key not in fr:
                raise ValueError(f"{where}: missing key '{key}'")
        if not isinstance(fr["file_path"], str) or not fr["file_path"]:
            raise ValueError(f"{where}: 'file_path' must be a non-empty string")
        t = _number(fr["time"])
        if t is None or not 0.0 <= t <= 1.0:
            raise ValueError(f"{where}: 'time' must be a number in [0, 1], got {fr['time']!r}")
        try:
            m = np.asarray(fr["transform_matrix"], dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{where}: 'transform_matrix' is not a numeric matrix") from err
        if m.shape != (4, 4):
            raise ValueError(f"{where}: 'transform_matrix' must be 4x4, got shape {tuple(m.shape)}")
        if not np.isfinite(m).all():
            raise ValueError(f"{where}: 'transform_matrix' contains NaN or inf")
        _check_pose(m, where)
        if not _inside(root / fr["file_path"], root):
            raise ValueError(
                f"{where}: 'file_path' {fr['file_path']!r} points outside the dataset folder {root}"
            )
        image = _image_path(root, fr["file_path"])
        if not image.is_file():
            raise FileNotFoundError(f"{image}: image referenced by {where} does not exist")
        mask = None
        if "dyn_mask_path" in fr:
            mask = _image_path(root, str(fr["dyn_mask_path"]))
            if not mask.is_file():
                raise FileNotFoundError(
                    f"{mask}: dynamic mask referenced by {where} does not exist"
                )
        entries.append((t, m, image, mask))
    with_mask = sum(e[3] is not None for e in entries)
    if 0 < with_mask < len(entries):
        raise ValueError(
            f"{path}: {with_mask} of {len(entries)} frames have a 'dyn_mask_path'; give it for "
            "every frame of the split or for none"
        )

    # Python's sort is stable, so frames with equal times keep their file order.
    entries.sort(key=lambda e: e[0])
    images = []
    for _, _, image, _ in entries:
        rgba = read_rgba(image, require_alpha=cfg.require_alpha)
        if images and rgba.shape != images[0].shape:
            raise ValueError(
                f"{image}: image is {rgba.shape[1]}x{rgba.shape[0]} but {entries[0][2]} in the "
                f"same split ({path.name}) is {images[0].shape[1]}x{images[0].shape[0]}"
            )
        images.append(rgba)
    h, w = images[0].shape[:2]
    ds = cfg.downscale
    if h % ds or w % ds:
        raise ValueError(f"{entries[0][2]}: image size {w}x{h} is not divisible by downscale={ds}")
    rgba = torch.stack([downscale_rgba(im, ds) for im in images])
    del images
    h, w = h // ds, w // ds

    # The focal length follows from the field of view at the (downscaled) width, so it scales
    # with the image; the principal point is the image centre (pixel centres at +0.5).
    focal = 0.5 * w / math.tan(0.5 * angle)
    K = torch.tensor([[focal, 0.0, w / 2], [0.0, focal, h / 2], [0.0, 0.0, 1.0]])
    c2w = blender_to_opencv(np.stack([e[1] for e in entries]))
    cameras = Cameras(c2w, K.expand(len(entries), 3, 3).clone(), w, h)
    times = torch.tensor([e[0] for e in entries], dtype=torch.float32)
    dyn = None
    if with_mask:
        masks = []
        for _, _, image, mask in entries:
            m = read_rgba(mask, require_alpha=False)
            if m.shape[:2] != (h * ds, w * ds):
                raise ValueError(
                    f"{mask}: mask is {m.shape[1]}x{m.shape[0]} but its image {image} is "
                    f"{w * ds}x{h * ds}"
                )
            # A pixel is dynamic if any of the full-resolution pixels it covers is.
            full = (m[..., :1] > 0.5).float().permute(2, 0, 1)[None]
            masks.append(torch.nn.functional.max_pool2d(full, ds)[0].permute(1, 2, 0) > 0)
        dyn = torch.stack(masks)[None]
    views = ViewSet(
        rgba[None, ..., :3], rgba[None, ..., 3:], cameras, times, dyn_mask=dyn, source="gt"
    )
    return views, angle


def load_dnerf(root: str | Path, cfg: DNeRFConfig | None = None) -> Scene4D:
    """Read a D-NeRF scene.

    Args:
        root: Scene folder holding ``transforms_{train,val,test}.json``.
        cfg: Reader options; defaults to ``DNeRFConfig()``.

    Returns:
        A :class:`Scene4D` named after the folder: ``train`` and ``eval`` (``cfg.eval_split``)
        each with one view, ``T`` frames sorted by time and one OpenCV camera per frame;
        ``num_input_views = 1``; random grey initial points in the ``init_box`` cube.

    Raises:
        FileNotFoundError: The root, a transforms file or a referenced image is missing.
        ValueError: Malformed JSON, a missing or invalid key, inconsistent image sizes, an image
            without alpha (with ``require_alpha``) or a downscale that does not divide the size.
    """
    cfg = DNeRFConfig() if cfg is None else cfg
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: D-NeRF scene folder does not exist")
    # Check both transforms files exist before loading any images.
    for split in ("train", cfg.eval_split):
        path = root / f"transforms_{split}.json"
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: transforms file of the {split!r} split does not exist"
            )
    train, angle = _load_split(root, "train", cfg)
    evals, eval_angle = _load_split(root, cfg.eval_split, cfg)
    h, w = train.image_size
    g = torch.Generator().manual_seed(0)
    points = (torch.rand(cfg.num_init_points, 3, generator=g) * 2.0 - 1.0) * cfg.init_box
    meta = {
        "dataset": "dnerf",
        "root": str(root),
        "split_sizes": {"train": train.num_frames, cfg.eval_split: evals.num_frames},
        "eval_split": cfg.eval_split,
        "background": cfg.background,
        "camera_angle_x": angle,
        "eval_camera_angle_x": eval_angle,
        "downscale": cfg.downscale,
        "image_size": [w, h],
        "world_up": "as stored in the files (+z for Blender scenes)",
    }
    return Scene4D(
        name=root.resolve().name,
        train=train,
        eval=evals,
        num_input_views=1,
        init_points=points,
        init_colors=torch.full_like(points, 0.5),
        meta=meta,
    )
