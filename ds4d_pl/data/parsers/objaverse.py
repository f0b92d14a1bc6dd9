"""Rendered animated Objaverse objects, in one of two layouts.

**protocol** — the Consistent4D four-view protocol, read by
:func:`~ds4d_pl.data.parsers.consistent4d.load_consistent4d` (only ``meta["dataset"]`` differs)::

    ROOT/
    ├── <uid>/{t}.png                         input video, RGBA
    ├── eval_gt/<uid>/eval_{0..3}/{t}.png     azimuth -75/15/105/195°, elevation 0
    └── <uid>_mv/zero123/{t}_rgba/{0..5}.png  optional Zero123++ pseudo views

**render** — one folder per rendered view with its own camera, as animation render scripts
write them::

    ROOT/
    ├── <uid>/
    │   ├── 0/                        view name (any folder holding img/)
    │   │   ├── img/{t}.png           RGBA, or RGB with a mask
    │   │   ├── mask/{t}.png          optional single-channel foreground mask
    │   │   └── camera.json
    │   ├── 1/ ...
    │   └── 2/ ...
    └── <uid>_mv/zero123/{t}_rgba/{0..5}.png  optional Zero123++ pseudo views

``camera.json`` holds one fixed camera, in either form::

    {"c2w": [[...], [...], [...], [0, 0, 0, 1]],   camera-to-world, 4x4
     "convention": "opengl",                         "opengl" (Blender, default) or "opencv"
     "fov_deg": 49.1}                                vertical FoV; or "K": 3x3 pixels

    {"elevation_deg": 30, "azimuth_deg": 90,         object protocol angles (as orbit_cameras)
     "radius": 2.0, "fov_deg": 49.1}                 optional, these are the defaults

``K`` is in pixels of the stored images. A mask is used only for frames whose image has no alpha
channel. Frames are numbered ``0..T-1`` (zero padding accepted) and every view has ``T`` frames.

One view is the monocular input (``input_view``); the evaluation views default to all others.
Render scripts use their own world (Blender's is z-up, the radius varies), while the pseudo
views, the initial points and the SDS orbit assume the object protocol (y-up, input camera at
elevation 0, azimuth 0, radius 2). With ``align_to_input`` (default) every camera is therefore
re-expressed in the frame where the input camera *is* the protocol's front camera: one rotation
about the origin and one uniform scale (plus a shift when the input camera does not aim at the
origin), recorded in ``meta["world_from_files"]``. Images are unchanged by it.

Pseudo views are read as in the Consistent4D reader: RGBA or opaque RGB on the generator's grey
background (alpha derived from it), each aligned to the input view's silhouette
(``pseudo_alpha``, ``align_pseudo_views``; see :mod:`ds4d_pl.data.parsers.common`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from PIL import Image
from torch import Tensor

from ds4d_pl.cameras import (
    OBJECT_FOV_Y_DEG,
    OBJECT_RADIUS,
    Cameras,
    intrinsics_from_fov,
    opengl_to_opencv,
    orbit_cameras,
    zero123pp_cameras,
)
from ds4d_pl.data.parsers.common import (
    OBJECT_BACKGROUND,
    check_positive,
    check_version,
    load_frames,
    load_pseudo_views,
    make_viewset,
    numbered_frames,
    pseudo_options,
    resolve,
    square,
)
from ds4d_pl.data.parsers.consistent4d import Consistent4DConfig, load_consistent4d
from ds4d_pl.data.types import Scene4D

__all__ = ["LAYOUTS", "ObjaverseConfig", "load_objaverse", "read_camera_json"]

#: Layouts :class:`ObjaverseConfig` accepts.
LAYOUTS = ("auto", "protocol", "render")
_CONVENTIONS = ("opengl", "opencv")
# Tolerances for "this 3x3 block is a rotation" and "the input camera is the front camera".
_ROT_TOL = 1e-3
_POSE_TOL = 1e-3


@dataclass
class ObjaverseConfig:
    """Options of :func:`load_objaverse`.

    Attributes:
        layout: ``"protocol"``, ``"render"`` or ``"auto"`` (``render`` when ``ROOT/<uid>`` has a
            sub-folder holding ``img/``, else ``protocol``).
        input_view: Render layout: the view used as the monocular input (default ``"0"`` if it
            exists, else the first view in natural order).
        eval_views: Render layout: views used for evaluation (default all but the input view).
        resolution: Square size of the input and pseudo views (``None`` keeps the files').
        eval_resolution: Square size of the evaluation views (``None`` keeps the files').
        max_frames: Use only the first ``max_frames`` frames (``None``: all).
        pseudo_dir: Folder of precomputed Zero123++ views (``{obj}`` is the uid); ``None`` never
            loads them, a missing folder means none.
        pseudo_version: Zero123++ pose set of the pseudo views, ``"v1.1"`` or ``"v1.2"``.
        pseudo_alpha: Alpha of the pseudo views: ``"auto"`` (the file's when it has a real
            one, else derived from the background colour), ``"file"`` or ``"background"``.
        pseudo_background: Grey level of the generator's background (Zero123++: 0.5).
        pseudo_alpha_threshold: Max per-channel distance to it counted as background.
        align_pseudo_views: Align each pseudo view's scale and centre to the input view's
            silhouette; ``None`` (default): yes, except for oracle views (``provenance.json``).
        eval_dir: Protocol layout: folder holding ``eval_0..eval_3``.
        align_to_input: Render layout: move every camera into the frame where the input camera
            is the object protocol's front camera (see the module docstring). With ``False``
            the files' world is kept, and pseudo views are refused unless the input camera
            already is the front camera.
    """

    layout: str = "auto"
    # ``int`` too: YAML reads view folders named 0, 1, ... as numbers; they become strings.
    input_view: str | int | None = None
    eval_views: list[str | int] | None = None
    resolution: int | None = None
    eval_resolution: int | None = None
    max_frames: int | None = None
    pseudo_dir: str | None = "{obj}_mv/zero123"
    pseudo_version: str = "v1.1"
    pseudo_alpha: Literal["auto", "file", "background"] = "auto"
    pseudo_background: float = 0.5
    pseudo_alpha_threshold: float = 0.08
    align_pseudo_views: bool | None = None
    eval_dir: str = "eval_gt/{obj}"
    align_to_input: bool = True

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(
                f"ObjaverseConfig.layout must be one of {', '.join(LAYOUTS)}; got {self.layout!r}"
            )
        check_positive("ObjaverseConfig", self, ("resolution", "eval_resolution", "max_frames"))
        check_version("ObjaverseConfig.pseudo_version", self.pseudo_version)
        pseudo_options("ObjaverseConfig", self)
        if self.input_view is not None:
            self.input_view = str(self.input_view)
        if self.eval_views is not None:
            self.eval_views = [str(v) for v in self.eval_views]


# --------------------------------------------------------------------------------------------
# camera.json


def _number(data: dict, key: str, path: Path, default: float | None = None) -> float:
    value = data.get(key, default)
    if value is None:
        raise ValueError(f"{path}: missing key {key!r}")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{path}: {key!r} must be a finite number, got {value!r}")
    return float(value)


def _matrix(data: dict, key: str, shape: tuple[int, int], path: Path) -> Tensor:
    try:
        m = torch.tensor(data[key], dtype=torch.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: {key!r} must be a {shape[0]}x{shape[1]} number matrix") from err
    if tuple(m.shape) != shape or not torch.isfinite(m).all():
        raise ValueError(
            f"{path}: {key!r} must be a finite {shape[0]}x{shape[1]} matrix, got shape "
            f"{tuple(m.shape)}"
        )
    return m


def read_camera_json(path: str | Path, width: int, height: int) -> Cameras:
    """Read one view's ``camera.json`` (both forms are described in the module docstring).

    Args:
        path: The file.
        width: Width of the view's stored images (``K`` is in their pixels).
        height: Height of the view's stored images.

    Returns:
        One camera (OpenCV axes) for ``width`` x ``height`` images.

    Raises:
        FileNotFoundError: The file is missing.
        ValueError: Malformed JSON, both or neither camera form, a matrix of the wrong shape,
            a ``c2w`` whose rotation is not orthonormal, an unknown ``convention``, both or
            neither of ``fov_deg``/``K`` with ``c2w``, or a non-positive radius or FoV.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: camera file missing (every view folder needs a camera.json)"
        )
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: malformed JSON ({err})") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path}: malformed camera file: expected a JSON object")
    has_matrix = "c2w" in data
    has_angles = "elevation_deg" in data or "azimuth_deg" in data
    if has_matrix == has_angles:
        raise ValueError(
            f"{path}: give exactly one camera form: a 4x4 'c2w' (with 'fov_deg' or 'K'), or "
            "'elevation_deg' and 'azimuth_deg' (with optional 'radius' and 'fov_deg')"
        )

    if has_angles:
        el = _number(data, "elevation_deg", path)
        az = _number(data, "azimuth_deg", path)
        radius = _number(data, "radius", path, OBJECT_RADIUS)
        fov = _number(data, "fov_deg", path, OBJECT_FOV_Y_DEG)
        if radius <= 0 or not 0 < fov < 180:
            raise ValueError(f"{path}: need radius > 0 and 0 < fov_deg < 180")
        return orbit_cameras([el], [az], width, height, radius=radius, fov_y_deg=fov)

    c2w = _matrix(data, "c2w", (4, 4), path)
    if not torch.allclose(c2w[3], torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=c2w.dtype)):
        raise ValueError(f"{path}: the last row of 'c2w' must be [0, 0, 0, 1]")
    rot = c2w[:3, :3]
    if not torch.allclose(rot.T @ rot, torch.eye(3, dtype=c2w.dtype), atol=_ROT_TOL) or (
        torch.linalg.det(rot) < 0
    ):
        raise ValueError(
            f"{path}: the rotation block of 'c2w' is not a rotation (scaled or mirrored axes)"
        )
    convention = data.get("convention", "opengl")
    if convention not in _CONVENTIONS:
        raise ValueError(f"{path}: 'convention' must be 'opengl' or 'opencv', got {convention!r}")
    if ("fov_deg" in data) == ("K" in data):
        raise ValueError(f"{path}: a 'c2w' camera needs exactly one of 'fov_deg' or 'K'")
    if "K" in data:
        K = _matrix(data, "K", (3, 3), path).float()
        if K[0, 0] <= 0 or K[1, 1] <= 0:
            raise ValueError(f"{path}: 'K' needs positive focal lengths")
    else:
        fov = _number(data, "fov_deg", path)
        if not 0 < fov < 180:
            raise ValueError(f"{path}: need 0 < fov_deg < 180, got {fov}")
        K = intrinsics_from_fov(fov, width, height)
    c2w = c2w.float()[None]
    if convention == "opengl":
        c2w = opengl_to_opencv(c2w)
    return Cameras(c2w, K[None], width, height)


def _align_to_front(cams: Cameras, input_c2w: Tensor) -> tuple[Cameras, Tensor]:
    """Move ``cams`` by the similarity that takes ``input_c2w`` to the protocol front camera.

    Returns:
        The moved cameras and the ``(4, 4)`` similarity (world of the files -> scene world).
    """
    front = orbit_cameras([0.0], [0.0], 1, 1).c2w[0].double()
    src = input_c2w.double()
    dist = float(src[:3, 3].norm())
    if dist < 1e-6:
        raise ValueError("the input camera sits at the origin; cannot align it to the protocol")
    q = front[:3, :3] @ src[:3, :3].T
    s = OBJECT_RADIUS / dist
    b = front[:3, 3] - s * q @ src[:3, 3]
    m = torch.eye(4, dtype=torch.float64)
    m[:3, :3], m[:3, 3] = s * q, b
    c2w = cams.c2w.double().clone()
    c2w[:, :3, :3] = q @ c2w[:, :3, :3]
    c2w[:, :3, 3] = s * c2w[:, :3, 3] @ q.T + b
    return Cameras(c2w.float(), cams.K, cams.width, cams.height), m.float()


# --------------------------------------------------------------------------------------------
# Render layout


def _natural(name: str) -> tuple[int, int | str]:
    return (0, int(name)) if name.isdigit() else (1, name)


@dataclass
class _View:
    name: str
    frames: list[Path]
    masks: list[Path] | None
    camera_file: Path


def _list_view(folder: Path) -> _View:
    img_dir = folder / "img"
    frames = numbered_frames(img_dir)
    masks = None
    mask_dir = folder / "mask"
    if mask_dir.is_dir():
        masks = numbered_frames(mask_dir)
        if len(masks) != len(frames):
            raise ValueError(
                f"{mask_dir}: {len(masks)} masks but {img_dir} has {len(frames)} images"
            )
    camera_file = folder / "camera.json"
    if not camera_file.is_file():
        raise FileNotFoundError(
            f"{camera_file}: camera file missing (every view folder needs a camera.json)"
        )
    return _View(folder.name, frames, masks, camera_file)


def _render_view_names(obj_dir: Path) -> list[str]:
    if not obj_dir.is_dir():
        raise FileNotFoundError(f"{obj_dir}: object folder does not exist")
    return sorted((p.name for p in obj_dir.iterdir() if (p / "img").is_dir()), key=_natural)


def _load_view(view: _View, size: tuple[int, int] | None) -> tuple[Tensor, Cameras]:
    """Frames ``(T, H, W, 4)`` and the camera at the loaded size."""
    hint = f" or add {view.frames[0].parent.parent / 'mask'}/{{t}}.png foreground masks"
    stack = load_frames(view.frames, size, masks=view.masks, alpha_hint=hint)
    # The camera is defined for the stored size (K in its pixels), then scaled with the images.
    with Image.open(view.frames[0]) as img:
        w0, h0 = img.size
    cam = read_camera_json(view.camera_file, w0, h0)
    return stack, cam.resized(stack.shape[2], stack.shape[1])


def _load_render(root: Path, uid: str, cfg: ObjaverseConfig) -> Scene4D:
    obj_dir = root / uid
    names = _render_view_names(obj_dir)
    if not names:
        raise FileNotFoundError(f"{obj_dir}: no view folders holding img/ (render layout)")
    input_name = cfg.input_view or ("0" if "0" in names else names[0])
    eval_names = (
        cfg.eval_views if cfg.eval_views is not None else [n for n in names if n != input_name]
    )
    for n in [input_name, *eval_names]:
        if n not in names:
            raise FileNotFoundError(
                f"{obj_dir / n}: view folder with img/ not found (views: {', '.join(names)})"
            )
    views = {n: _list_view(obj_dir / n) for n in dict.fromkeys([input_name, *eval_names])}
    t_all = len(views[input_name].frames)
    for n, v in views.items():
        if len(v.frames) != t_all:
            raise ValueError(
                f"{obj_dir / n / 'img'}: view has {len(v.frames)} frames but the input view "
                f"{obj_dir / input_name / 'img'} has {t_all}"
            )
    keep = t_all if cfg.max_frames is None else min(cfg.max_frames, t_all)
    for v in views.values():
        v.frames = v.frames[:keep]
        v.masks = None if v.masks is None else v.masks[:keep]

    inp, inp_cam = _load_view(views[input_name], square(cfg.resolution))
    eval_stacks, eval_cams = [], []
    for n in eval_names:
        stack, cam = _load_view(views[n], square(cfg.eval_resolution))
        if eval_stacks and stack.shape[1:3] != eval_stacks[0].shape[1:3]:
            raise ValueError(
                f"{views[n].frames[0]}: image is {stack.shape[2]}x{stack.shape[1]} but the "
                f"evaluation view {eval_names[0]} has {eval_stacks[0].shape[2]}x"
                f"{eval_stacks[0].shape[1]} images (evaluation views must share one size, or "
                "set eval_resolution)"
            )
        eval_stacks.append(stack)
        eval_cams.append(cam)

    transform = torch.eye(4)
    if cfg.align_to_input:
        raw = inp_cam.c2w[0]
        inp_cam, transform = _align_to_front(inp_cam, raw)
        eval_cams = [_align_to_front(c, raw)[0] for c in eval_cams]

    h, w = inp.shape[1:3]
    stacks, cams, source = [inp], [inp_cam], "gt"
    pseudo_meta: dict = {}
    mv = None if cfg.pseudo_dir is None else resolve(root, cfg.pseudo_dir, obj=uid)
    if mv is not None and mv.is_dir():
        front = orbit_cameras([0.0], [0.0], w, h).c2w[0]
        if not torch.allclose(inp_cam.c2w[0], front, atol=_POSE_TOL):
            raise ValueError(
                f"{views[input_name].camera_file}: pseudo views in {mv} are posed relative to "
                "the protocol's front camera but the input camera is elsewhere; enable "
                "align_to_input"
            )
        pseudo_cams = zero123pp_cameras(w, h, cfg.pseudo_version)
        pseudo, pseudo_meta = load_pseudo_views(
            mv, t_all, inp, inp_cam, pseudo_cams, pseudo_options("ObjaverseConfig", cfg)
        )
        stacks += pseudo
        cams.append(pseudo_cams)
        source = "zero123pp"
    train = make_viewset(stacks, Cameras.cat(cams), source)
    eval_set = make_viewset(eval_stacks, Cameras.cat(eval_cams), "gt") if eval_stacks else None
    return Scene4D(
        name=uid,
        train=train,
        eval=eval_set,
        num_input_views=1,
        meta={
            "dataset": "objaverse",
            "layout": "render",
            "background": OBJECT_BACKGROUND,
            "root": str(root),
            "input_view": input_name,
            "eval_views": list(eval_names),
            "pseudo_views": source,
            "pseudo_version": cfg.pseudo_version if source == "zero123pp" else None,
            "world_from_files": transform.tolist(),
            "num_frames": keep,
            "num_frames_on_disk": t_all,
            **pseudo_meta,
        },
    )


def load_objaverse(
    root: str | Path,
    uid: str,
    cfg: ObjaverseConfig | None = None,
) -> Scene4D:
    """Read one rendered animated Objaverse object (layouts in the module docstring).

    Args:
        root: Dataset root.
        uid: Object folder name under ``root``.
        cfg: Options; defaults to ``ObjaverseConfig()``.

    Returns:
        A :class:`Scene4D` with ``train`` = the input view (+ six pseudo views when present,
        ``num_input_views=1``), ``eval`` = the evaluation views with their cameras (or
        ``None``), ``meta["dataset"] == "objaverse"`` and ``meta["layout"]``.

    Raises:
        FileNotFoundError: Missing root, object, view folder or ``camera.json``.
        ValueError: Malformed ``camera.json``, mask/image count mismatch, frame count mismatch
            between views, images of different sizes, images without alpha and no mask.
    """
    cfg = ObjaverseConfig() if cfg is None else cfg
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: data root does not exist")
    layout = cfg.layout
    if layout == "auto":
        obj_dir = root / uid
        layout = "render" if obj_dir.is_dir() and _render_view_names(obj_dir) else "protocol"
    if layout == "render":
        return _load_render(root, uid, cfg)
    scene = load_consistent4d(
        root,
        uid,
        Consistent4DConfig(
            resolution=cfg.resolution,
            eval_resolution=cfg.eval_resolution,
            eval_dir=cfg.eval_dir,
            pseudo_dir=cfg.pseudo_dir,
            pseudo_version=cfg.pseudo_version,
            pseudo_alpha=cfg.pseudo_alpha,
            pseudo_background=cfg.pseudo_background,
            pseudo_alpha_threshold=cfg.pseudo_alpha_threshold,
            align_pseudo_views=cfg.align_pseudo_views,
            max_frames=cfg.max_frames,
        ),
    )
    scene.meta.update(dataset="objaverse", layout="protocol")
    return scene
