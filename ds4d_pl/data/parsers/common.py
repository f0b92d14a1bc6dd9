"""Helpers every file-based object reader shares: frame listings, image stacks, the
Zero123++ and Consistent4D-evaluation view folders, and small config checks.

Readers (``consistent4d``, ``objaverse``, ``multiview_sequence``) and ``ds4d prepare`` /
``ds4d eval`` import from here; nothing here knows a particular dataset layout beyond the two
view-folder conventions (``{t}_rgba/{0..5}.png`` and ``eval_{k}/{t}.png``).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from ds4d_pl.cameras import Cameras, orbit_cameras
from ds4d_pl.data.io import read_rgba
from ds4d_pl.data.types import ViewSet

NUMBERED = re.compile(r"^(\d+)\.png$")
_RGBA_DIR = re.compile(r"^(\d+)_rgba$")
#: Zero123++ always produces this many views per input frame.
NUM_ZERO123PP_VIEWS = 6
#: The object protocol composites RGBA on white (recorded as ``Scene4D.meta["background"]``).
OBJECT_BACKGROUND = (1.0, 1.0, 1.0)
_PIL_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
# Aspect ratios closer than this are "the same" (rounding when a renderer picks pixel sizes).
_ASPECT_TOL = 0.01


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
    pattern: re.Pattern = NUMBERED,
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


def read_image(path: Path) -> tuple[Tensor, bool]:
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


def read_mask(path: Path, hw: tuple[int, int], image: Path) -> Tensor:
    """``(H, W, 1)`` mask: the alpha of an image with alpha, else its grey level."""
    mask, has_alpha = read_image(path)
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


def fit_size(img: Tensor, hw: tuple[int, int] | None, path: Path) -> Tensor:
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
        img, has_alpha = read_image(p)
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
            img = torch.cat([img[..., :3], read_mask(masks[i], hw, p)], dim=-1)
        frames.append(fit_size(img, size, p))
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
