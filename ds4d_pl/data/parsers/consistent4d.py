"""Consistent4D layout: an input video plus four evaluation views per object.

Layout (every folder name is a template in :class:`Consistent4DConfig`; ``{obj}`` is the object
name)::

    ROOT/
    ├── <obj>/                      input video: RGBA frames 0.png, 1.png, ... (or 0000.png, ...)
    ├── <obj>.mp4                   ... or a video file instead (``input_video``), see below
    ├── eval_gt/<obj>/
    │   ├── eval_0/{t}.png          ground truth at azimuth -75°  (elevation 0, radius 2,
    │   ├── eval_1/{t}.png                          azimuth  15°   vertical FoV 49.1°)
    │   ├── eval_2/{t}.png                          azimuth 105°
    │   └── eval_3/{t}.png                          azimuth 195°
    └── <obj>_mv/zero123/           optional pseudo views (Zero123++ poses)
        └── {t}_rgba/{0..5}.png

Frames are numbered from 0 without gaps, sorted numerically (``10.png`` after ``9.png``); zero
padded names are accepted. Every view set must have exactly as many frames as the input video.

Alpha: the input view needs the foreground alpha. PNG frames carry it as their alpha channel. A
video keeps it only with an alpha-capable codec (e.g. PNG or QuickTime Animation in ``.mov``;
H.264 has none, and FFmpeg's native VP9 decoder drops WebM alpha). Without it, ``alpha_dir``
must name a folder of masks ``{t}.png`` (single channel, or the alpha of RGBA images). An image's
own alpha always wins; masks only fill in for images that have none.

Everything is validated when the scene is loaded, and every problem is reported once, naming the
file or folder and what is wrong.

The helpers :func:`numbered_frames`, :func:`load_frames`, :func:`read_video_rgba`,
:func:`load_zero123_views` and :func:`load_eval_views` are shared with the Objaverse and
multi-view sequence parsers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from ds4d_pl.cameras import (
    CONSISTENT4D_EVAL_AZIMUTHS,
    Cameras,
    orbit_cameras,
    zero123pp_cameras,
)
from ds4d_pl.data.io import read_rgba
from ds4d_pl.data.types import Scene4D, ViewSet
from ds4d_pl.export.video import read_video_rgba

__all__ = [
    "OBJECT_BACKGROUND",
    "Consistent4DConfig",
    "load_consistent4d",
    "load_eval_views",
    "load_frames",
    "load_zero123_views",
    "numbered_frames",
    "read_video_rgba",
]

_NUMBERED = re.compile(r"^(\d+)\.png$")
_RGBA_DIR = re.compile(r"^(\d+)_rgba$")
#: Zero123++ always produces this many views per input frame.
NUM_ZERO123PP_VIEWS = 6
#: The object protocol composites RGBA on white (recorded as ``Scene4D.meta["background"]``).
OBJECT_BACKGROUND = (1.0, 1.0, 1.0)
_PIL_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
# Aspect ratios closer than this are "the same" (rounding when a renderer picks pixel sizes).
_ASPECT_TOL = 0.01


@dataclass
class Consistent4DConfig:
    """Options of :func:`load_consistent4d`.

    Folder options are templates relative to the dataset root (absolute paths are used as they
    are); ``{obj}`` is replaced by the object name.

    Attributes:
        resolution: Resize the input and pseudo views to this square size (``None`` keeps the
            files' size; pseudo views are then resized to the input's size).
        eval_resolution: Resize evaluation views to this square size (``None`` keeps them).
        input_dir: Folder of the input frames ``{t}.png``.
        input_video: Video file read instead of ``input_dir`` (``None``: use the frames).
        alpha_dir: Folder of masks ``{t}.png`` used as alpha for input frames without one
            (required for a video without alpha).
        eval_dir: Folder holding ``eval_0 .. eval_{N-1}``; ``None`` never loads evaluation views.
            A missing folder means "no evaluation views"; an incomplete one is an error.
        eval_azimuths_deg: Azimuth of each evaluation view (elevation 0, object protocol); the
            number of entries is the number of ``eval_k`` folders expected.
        pseudo_dir: Folder of precomputed Zero123++ views ``{t}_rgba/{0..5}.png``; ``None``
            never loads them. A missing folder means "no pseudo views".
        pseudo_version: Zero123++ pose set of the pseudo views, ``"v1.1"`` or ``"v1.2"``.
        max_frames: Use only the first ``max_frames`` frames of every view (``None``: all).
            The whole dataset is still checked; the kept clip's times span ``[0, 1]``.
    """

    resolution: int | None = None
    eval_resolution: int | None = None
    input_dir: str = "{obj}"
    input_video: str | None = None
    alpha_dir: str | None = None
    eval_dir: str | None = "eval_gt/{obj}"
    eval_azimuths_deg: tuple[float, ...] = CONSISTENT4D_EVAL_AZIMUTHS
    pseudo_dir: str | None = "{obj}_mv/zero123"
    pseudo_version: str = "v1.1"
    max_frames: int | None = None

    def __post_init__(self) -> None:
        check_positive("Consistent4DConfig", self, ("resolution", "eval_resolution", "max_frames"))
        check_version("Consistent4DConfig.pseudo_version", self.pseudo_version)
        self.eval_azimuths_deg = tuple(float(a) for a in self.eval_azimuths_deg)
        if not self.eval_azimuths_deg:
            raise ValueError("Consistent4DConfig.eval_azimuths_deg needs at least one azimuth")


def check_positive(owner: str, cfg: object, names: tuple[str, ...]) -> None:
    """Raise unless each optional integer field of ``cfg`` is ``None`` or ``>= 1``."""
    for name in names:
        value = getattr(cfg, name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{owner}.{name} must be None or an integer >= 1; got {value!r}")


def check_version(name: str, version: str) -> None:
    """Raise unless ``version`` names a Zero123++ pose set."""
    if version not in ("v1.1", "v1.2"):
        raise ValueError(f"{name} must be 'v1.1' or 'v1.2'; got {version!r}")


def resolve(root: Path, template: str, **names: str) -> Path:
    """``root / template`` with ``{key}`` placeholders replaced (absolute templates ignore root)."""
    for key, value in names.items():
        template = template.replace("{" + key + "}", value)
    return root / template


# --------------------------------------------------------------------------------------------
# Frame listings


def numbered_frames(
    folder: Path,
    pattern: re.Pattern = _NUMBERED,
    dirs: bool = False,
    hint: str = "'0.png', '1.png', ...",
) -> list[Path]:
    """Entries of ``folder`` numbered ``0..T-1``, sorted numerically.

    Args:
        folder: Folder to list.
        pattern: Regular expression whose first group is the frame number.
        dirs: List sub-folders instead of files.
        hint: Example names for the error raised when nothing matches.

    Returns:
        The ``T`` matching paths in frame order.

    Raises:
        FileNotFoundError: ``folder`` does not exist or holds no matching entry.
        ValueError: The numbers have gaps or two names carry the same number (``1.png`` and
            ``01.png``).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: frame folder does not exist")
    found: dict[int, Path] = {}
    for p in sorted(folder.iterdir()):
        m = pattern.match(p.name)
        if not m or p.is_dir() != dirs:
            continue
        i = int(m.group(1))
        if i in found:
            raise ValueError(f"{folder}: {found[i].name} and {p.name} are both frame {i}")
        found[i] = p
    if not found:
        raise FileNotFoundError(f"{folder}: no frames named like {hint}")
    if set(found) != set(range(len(found))):
        missing = sorted(set(range(max(found) + 1)) - set(found))
        raise ValueError(f"{folder}: frame numbers are not contiguous from 0; missing {missing}")
    return [found[i] for i in range(len(found))]


def check_count(folder: Path, count: int, expected: int, what: str) -> None:
    """Raise (naming ``folder``) when a view set's frame count differs from the input video's."""
    if count != expected:
        raise ValueError(
            f"{folder}: {what} has {count} frames but the input video has {expected} "
            f"({'extra' if count > expected else 'missing'} frames)"
        )


# --------------------------------------------------------------------------------------------
# Images


def _read_image(path: Path) -> tuple[Tensor, bool]:
    """``(H, W, 4)`` straight RGBA (alpha 1 when absent) and whether the file had alpha."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: image file not found")
    try:
        # Opening only parses the header; read_rgba then decodes (and handles 16-bit modes).
        with Image.open(path) as img:
            has_alpha = img.mode in _PIL_ALPHA_MODES or (
                img.mode == "P" and "transparency" in img.info
            )
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"{path}: cannot read image ({err})") from err
    return read_rgba(path, require_alpha=False), has_alpha


def _read_mask(path: Path, hw: tuple[int, int], image: Path) -> Tensor:
    """``(H, W, 1)`` mask: the alpha of an image with alpha, else its grey level."""
    mask, has_alpha = _read_image(path)
    if tuple(mask.shape[:2]) != hw:
        raise ValueError(
            f"{path}: mask is {mask.shape[1]}x{mask.shape[0]} but its image {image} is "
            f"{hw[1]}x{hw[0]}"
        )
    return mask[..., 3:] if has_alpha else mask[..., :1]


def _resize(img: Tensor, hw: tuple[int, int]) -> Tensor:
    """Resize straight RGBA ``(H, W, 4)``.

    Filtering straight colour would mix the (arbitrary) colour of transparent pixels into the
    silhouette's edge, so colour is filtered premultiplied and divided back afterwards.
    """
    rgb, alpha = img[..., :3], img[..., 3:]
    x = torch.cat([rgb * alpha, alpha, rgb], dim=-1).permute(2, 0, 1)[None]
    down = hw[0] <= img.shape[0] and hw[1] <= img.shape[1]
    if down:
        y = torch.nn.functional.interpolate(x, hw, mode="area")
    else:
        y = torch.nn.functional.interpolate(x, hw, mode="bilinear", align_corners=False)
    y = y[0].permute(1, 2, 0).clamp(0.0, 1.0)
    premul, a, straight = y[..., :3], y[..., 3:4], y[..., 4:]
    # Fully transparent pixels keep the filtered straight colour (usually the background).
    colour = torch.where(a > 1e-4, premul / a.clamp_min(1e-4), straight).clamp(0.0, 1.0)
    return torch.cat([colour, a], dim=-1)


def _fit(img: Tensor, hw: tuple[int, int] | None, path: Path) -> Tensor:
    if hw is None or tuple(img.shape[:2]) == tuple(hw):
        return img
    h, w = img.shape[:2]
    if abs((w / h) / (hw[1] / hw[0]) - 1.0) > _ASPECT_TOL:
        raise ValueError(
            f"{path}: image is {w}x{h}; resizing it to {hw[1]}x{hw[0]} would distort it (the "
            "aspect ratios differ)"
        )
    return _resize(img, hw)


def square(resolution: int | None) -> tuple[int, int] | None:
    """``(resolution, resolution)``, or ``None``."""
    return None if resolution is None else (resolution, resolution)


def load_frames(
    paths: list[Path],
    size: tuple[int, int] | None = None,
    masks: list[Path] | None = None,
    alpha_hint: str = "",
) -> Tensor:
    """Read one view's frames.

    Args:
        paths: Image files in frame order.
        size: ``(H, W)`` to resize to (same aspect ratio only), or ``None`` to keep the files'.
        masks: Optional mask file per frame, used as alpha for images without an alpha channel.
        alpha_hint: Appended to the "no alpha" error (how this dataset can provide masks).

    Returns:
        ``(T, H, W, 4)`` straight RGBA in ``[0, 1]``.

    Raises:
        ValueError: Frames of different sizes, an image without alpha and no mask, a mask of
            another size, or an unreadable file (each names the file).
    """
    frames = []
    first: tuple[int, int] | None = None
    for i, p in enumerate(paths):
        img, has_alpha = _read_image(p)
        hw = (img.shape[0], img.shape[1])
        if first is None:
            first = hw
        elif hw != first:
            raise ValueError(
                f"{p}: image is {hw[1]}x{hw[0]} but {paths[0]} is {first[1]}x{first[0]} "
                "(all frames of a view must share one size)"
            )
        if not has_alpha:
            if masks is None:
                raise ValueError(
                    f"{p}: image has no alpha channel; the foreground alpha is needed, so store "
                    f"RGBA images{alpha_hint}"
                )
            img = torch.cat([img[..., :3], _read_mask(masks[i], hw, p)], dim=-1)
        frames.append(_fit(img, size, p))
    return torch.stack(frames)


# --------------------------------------------------------------------------------------------
# View sets shared by the object parsers


def load_zero123_views(
    folder: Path,
    num_frames: int,
    keep: int,
    size: tuple[int, int],
) -> list[Tensor]:
    """Read precomputed Zero123++ views ``folder/{t}_rgba/{0..5}.png``.

    Args:
        folder: The ``zero123`` folder.
        num_frames: Frames of the input video; ``folder`` must hold exactly that many.
        keep: Load only the first ``keep`` frames.
        size: ``(H, W)`` every view is resized to (the input view's size).

    Returns:
        Six ``(keep, H, W, 4)`` stacks, one per Zero123++ view.

    Raises:
        ValueError: Extra or missing frame folders, a frame folder without exactly six views,
            or bad images (each names the file or folder).
    """
    frame_dirs = numbered_frames(folder, _RGBA_DIR, dirs=True, hint="'0_rgba/', '1_rgba/', ...")
    check_count(folder, len(frame_dirs), num_frames, "the pseudo-view folder")
    per_frame = []
    for d in frame_dirs:
        views = numbered_frames(d, hint="'0.png' .. '5.png'")
        if len(views) != NUM_ZERO123PP_VIEWS:
            raise ValueError(
                f"{d}: holds {len(views)} views (0.png..{len(views) - 1}.png) but Zero123++ "
                f"gives {NUM_ZERO123PP_VIEWS} per frame"
            )
        per_frame.append(views)
    return [
        load_frames([per_frame[t][k] for t in range(keep)], size)
        for k in range(NUM_ZERO123PP_VIEWS)
    ]


def load_eval_views(
    folder: Path,
    num_views: int,
    num_frames: int,
    keep: int,
    size: tuple[int, int] | None,
) -> list[Tensor]:
    """Read Consistent4D-style evaluation views ``folder/eval_{k}/{t}.png``.

    Args:
        folder: Folder holding ``eval_0 .. eval_{num_views-1}``.
        num_views: Number of evaluation views expected.
        num_frames: Frames of the input video; each view must have exactly that many.
        keep: Load only the first ``keep`` frames.
        size: ``(H, W)`` to resize to, or ``None`` (then all views must share one size).

    Returns:
        ``num_views`` stacks ``(keep, H, W, 4)``.
    """
    views = []
    for k in range(num_views):
        view_dir = folder / f"eval_{k}"
        if not view_dir.is_dir():
            raise FileNotFoundError(
                f"{view_dir}: evaluation view folder missing ({folder} must hold "
                f"eval_0 .. eval_{num_views - 1})"
            )
        paths = numbered_frames(view_dir)
        check_count(view_dir, len(paths), num_frames, "the evaluation view")
        stack = load_frames(paths[:keep], size)
        if views and stack.shape[1:3] != views[0].shape[1:3]:
            raise ValueError(
                f"{paths[0]}: image is {stack.shape[2]}x{stack.shape[1]} but "
                f"{folder / 'eval_0'} holds {views[0].shape[2]}x{views[0].shape[1]} images "
                "(evaluation views must share one size, or set eval_resolution)"
            )
        views.append(stack)
    return views


def clip_times(t: int) -> Tensor:
    """``(T,)`` frame times spanning ``[0, 1]``."""
    return torch.linspace(0.0, 1.0, t) if t > 1 else torch.zeros(1)


def make_viewset(stacks: list[Tensor], cameras: Cameras, source: str) -> ViewSet:
    """A :class:`ViewSet` from per-view ``(T, H, W, 4)`` stacks."""
    rgba = torch.stack(stacks)
    return ViewSet(rgba[..., :3], rgba[..., 3:], cameras, clip_times(rgba.shape[1]), source=source)


def eval_orbit_cameras(azimuths_deg: tuple[float, ...], width: int, height: int) -> Cameras:
    """Object-protocol cameras at elevation 0 (Consistent4D's when given its four azimuths)."""
    return orbit_cameras([0.0] * len(azimuths_deg), list(azimuths_deg), width, height)


# --------------------------------------------------------------------------------------------
# Loader


@dataclass
class _Clip:
    """The kept (resized) frames of the input view, the full clip's length and its source."""

    frames: Tensor
    total: int
    path: Path


def _input_clip(root: Path, obj: str, cfg: Consistent4DConfig) -> _Clip:
    """The input view from PNG frames or a video, with alpha, resized to ``cfg.resolution``."""
    size = square(cfg.resolution)
    mask_dir = None if cfg.alpha_dir is None else resolve(root, cfg.alpha_dir, obj=obj)
    if cfg.input_video is None:
        folder = resolve(root, cfg.input_dir, obj=obj)
        paths = numbered_frames(folder)
        masks = None
        if mask_dir is not None:
            masks = numbered_frames(mask_dir)
            if len(masks) != len(paths):
                raise ValueError(
                    f"{mask_dir}: {len(masks)} masks but {folder} has {len(paths)} frames"
                )
        keep = len(paths) if cfg.max_frames is None else min(cfg.max_frames, len(paths))
        hint = "" if masks is not None else " or set alpha_dir to a folder of masks {t}.png"
        # Frames past ``keep`` are not decoded; their count still checks the other view sets.
        frames = load_frames(paths[:keep], size, masks=masks, alpha_hint=hint)
        return _Clip(frames, len(paths), folder)

    video = resolve(root, cfg.input_video, obj=obj)
    frames, has_alpha = read_video_rgba(video)
    n = frames.shape[0]
    keep = n if cfg.max_frames is None else min(cfg.max_frames, n)
    frames = frames[:keep]
    if not has_alpha:
        if mask_dir is None:
            raise ValueError(
                f"{video}: video has no alpha channel; the input view needs the foreground alpha, "
                "so give an RGBA input (PNG frames, or a video with an alpha codec such as PNG "
                "or QuickTime Animation in .mov) or set alpha_dir to a folder of masks {t}.png"
            )
        masks = numbered_frames(mask_dir)
        if len(masks) != n:
            raise ValueError(f"{mask_dir}: {len(masks)} masks but the video {video} has {n} frames")
        hw = (frames.shape[1], frames.shape[2])
        alpha = torch.stack([_read_mask(m, hw, video) for m in masks[:keep]])
        frames = torch.cat([frames[..., :3], alpha], dim=-1)
    frames = torch.stack([_fit(f, size, video) for f in frames])
    return _Clip(frames, n, video)


def load_consistent4d(
    root: str | Path,
    object_name: str,
    cfg: Consistent4DConfig | None = None,
) -> Scene4D:
    """Read one object in the Consistent4D layout (see the module docstring).

    Args:
        root: Dataset root.
        object_name: Object name (``{obj}`` in the folder templates).
        cfg: Options; defaults to ``Consistent4DConfig()``.

    Returns:
        A :class:`Scene4D`: ``train`` view 0 is the input video at the object protocol's front
        camera (elevation 0, azimuth 0), views 1..6 the pseudo views when present
        (``source="zero123pp"``, else the train set's source is ``"gt"``); ``eval`` the
        evaluation views or ``None``; ``num_input_views=1``.

    Raises:
        FileNotFoundError: The root, the input frames/video or an evaluation view folder is
            missing.
        ValueError: Gaps in frame numbers, frame counts that differ between view sets, images
            of different sizes, input images without alpha, an undecodable video.
    """
    cfg = Consistent4DConfig() if cfg is None else cfg
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: data root does not exist")
    clip = _input_clip(root, object_name, cfg)
    inp, t_all = clip.frames, clip.total
    keep = inp.shape[0]
    _, h, w, _ = inp.shape

    stacks = [inp]
    cams = [orbit_cameras([0.0], [0.0], w, h)]
    source = "gt"
    mv = None if cfg.pseudo_dir is None else resolve(root, cfg.pseudo_dir, obj=object_name)
    if mv is not None and mv.is_dir():
        stacks += load_zero123_views(mv, t_all, keep, (h, w))
        cams.append(zero123pp_cameras(w, h, cfg.pseudo_version))
        source = "zero123pp"
    train = make_viewset(stacks, Cameras.cat(cams), source)

    eval_set = None
    ev_dir = None if cfg.eval_dir is None else resolve(root, cfg.eval_dir, obj=object_name)
    if ev_dir is not None and ev_dir.is_dir():
        ev = load_eval_views(
            ev_dir, len(cfg.eval_azimuths_deg), t_all, keep, square(cfg.eval_resolution)
        )
        eh, ew = ev[0].shape[1:3]
        eval_set = make_viewset(ev, eval_orbit_cameras(cfg.eval_azimuths_deg, ew, eh), "gt")
    return Scene4D(
        name=object_name,
        train=train,
        eval=eval_set,
        num_input_views=1,
        meta={
            "dataset": "consistent4d",
            "root": str(root),
            "background": OBJECT_BACKGROUND,
            "input": str(clip.path),
            "pseudo_views": source,
            "pseudo_version": cfg.pseudo_version if source == "zero123pp" else None,
            "num_frames": keep,
            "num_frames_on_disk": t_all,
        },
    )
