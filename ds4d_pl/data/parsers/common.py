"""Helpers every file-based object reader shares: frame listings, image stacks, the
Zero123++ and Consistent4D-evaluation view folders, and small config checks.

Readers (``consistent4d``, ``objaverse``, ``multiview_sequence``) and ``ds4d prepare`` /
``ds4d eval`` import from here; nothing here knows a particular dataset layout beyond the two
view-folder conventions (``{t}_rgba/{0..5}.png`` and ``eval_{k}/{t}.png``).

Generated pseudo views are read as real generators write them (:func:`load_pseudo_views`):

* **Alpha.** Zero123++ paints an opaque grey (0.5) background and stores no alpha. With
  ``pseudo_alpha="auto"`` a view's own alpha is used when it has one that says something (not
  all opaque), else the alpha is derived from the background colour
  (:func:`ds4d_pl.data.alpha.background_alpha`: only background connected to the image border
  counts, so grey parts inside the object stay foreground). ``"file"`` requires the alpha
  channel, ``"background"`` always derives it.
* **Framing.** Each view is moved and scaled to the input view's silhouette
  (:mod:`ds4d_pl.data.align`, one similarity per view) unless ``align_pseudo_views`` is
  ``False``; by default (``None``) every view is aligned except views whose
  ``provenance.json`` says they are oracle renders (what ``ds4d synth`` writes for the exact
  synthetic views).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from ds4d_pl.cameras import Cameras, orbit_cameras
from ds4d_pl.data.align import align_pseudo_views
from ds4d_pl.data.alpha import background_alpha, is_opaque
from ds4d_pl.data.io import read_rgba
from ds4d_pl.data.types import ViewSet

NUMBERED = re.compile(r"^(\d+)\.png$")
#: A numbered image of any case or format (``4.PNG``, ``5.jpg``): frames under a wrong name.
_FRAME_LIKE = re.compile(r"^\d+\.(png|jpe?g|webp|bmp|tiff?|exr)$", re.IGNORECASE)
_RGBA_DIR = re.compile(r"^(\d+)_rgba$")
#: Zero123++ always produces this many views per input frame.
NUM_ZERO123PP_VIEWS = 6
#: Optional file in a pseudo-view folder saying what the views are (``{"pseudo_views": ...}``).
PROVENANCE_FILE = "provenance.json"
#: How a pseudo view's alpha is obtained (see the module docstring).
PSEUDO_ALPHA_MODES = ("auto", "file", "background")
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


@dataclass(frozen=True)
class PseudoViewOptions:
    """How generated pseudo views are read (each reader config carries these four fields).

    Attributes:
        alpha: ``"auto"``, ``"file"`` or ``"background"`` (module docstring).
        background: Grey level of the generator's background (0.5 for Zero123++, 1 for white).
        threshold: Max per-channel distance to ``background`` counted as background.
        align: ``True``/``False`` forces the per-view alignment on/off; ``None`` aligns all
            views except oracle renders (by their ``provenance.json``).
    """

    alpha: Literal["auto", "file", "background"] = "auto"
    background: float = 0.5
    threshold: float = 0.08
    align: bool | None = None

    def __post_init__(self) -> None:
        if self.alpha not in PSEUDO_ALPHA_MODES:
            raise ValueError(
                f"pseudo_alpha must be one of {', '.join(PSEUDO_ALPHA_MODES)}; got {self.alpha!r}"
            )
        for name, value, low, high in (
            ("pseudo_background", self.background, 0.0, 1.0),
            ("pseudo_alpha_threshold", self.threshold, 0.0, 1.0),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{name} must be a number; got {value!r}")
            if not low <= value <= high:
                raise ValueError(f"{name} must be in [{low}, {high}]; got {value!r}")
        if self.threshold <= 0:
            raise ValueError(f"pseudo_alpha_threshold must be > 0; got {self.threshold!r}")
        if self.align is not None and not isinstance(self.align, bool):
            raise ValueError(f"align_pseudo_views must be true, false or null; got {self.align!r}")


def pseudo_options(owner: str, cfg: object) -> PseudoViewOptions:
    """A reader config's ``pseudo_alpha``, ``pseudo_background``, ``pseudo_alpha_threshold``
    and ``align_pseudo_views`` fields, checked; errors name ``owner``."""
    try:
        return PseudoViewOptions(
            alpha=cfg.pseudo_alpha,  # type: ignore[attr-defined]
            background=cfg.pseudo_background,  # type: ignore[attr-defined]
            threshold=cfg.pseudo_alpha_threshold,  # type: ignore[attr-defined]
            align=cfg.align_pseudo_views,  # type: ignore[attr-defined]
        )
    except ValueError as err:
        raise ValueError(f"{owner}.{err}") from None


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
    strays = []
    for p in sorted(folder.iterdir()):
        m = pattern.match(p.name)
        if not m and not dirs and _FRAME_LIKE.match(p.name) and p.is_file():
            strays.append(p.name)
        if not m or p.is_dir() != dirs:
            continue
        i = int(m.group(1))
        if i in found:
            raise ValueError(f"{folder}: {found[i].name} and {p.name} are both frame {i}")
        found[i] = p
    if strays:
        # A frame saved as 4.PNG or 5.jpg would otherwise be skipped without a word: the clip
        # would end early or show a gap that the message below misattributes.
        raise ValueError(
            f"{folder}: {', '.join(strays[:5])}{' ...' if len(strays) > 5 else ''} look like "
            f"frames but are not named like {hint}; rename or remove them"
        )
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


def _load_pseudo_frames(
    paths: list[Path], size: tuple[int, int], opts: PseudoViewOptions
) -> Tensor:
    """One pseudo view's frames ``(T, H, W, 4)``, alpha per ``opts.alpha``."""
    images: list[Tensor] = []
    derive: list[int] = []
    for i, p in enumerate(paths):
        img, has_alpha = read_image(p)
        if images and img.shape != images[0].shape:
            raise ValueError(
                f"{p}: image is {img.shape[1]}x{img.shape[0]} but {paths[0]} is "
                f"{images[0].shape[1]}x{images[0].shape[0]} (all frames of a view must share one "
                "size)"
            )
        if opts.alpha == "file" and not has_alpha:
            raise ValueError(
                f"{p}: pseudo view has no alpha channel and pseudo_alpha='file'; use "
                "pseudo_alpha='auto' or 'background' to derive it from the background colour "
                f"(grey {opts.background})"
            )
        if opts.alpha == "background" or (
            opts.alpha == "auto" and (not has_alpha or is_opaque(img[..., 3:]))
        ):
            derive.append(i)
        images.append(img)
    if derive:
        # Derived at the files' resolution (before any resize), all frames of the view at once.
        alpha = background_alpha(
            torch.stack([images[i] for i in derive]), opts.threshold, opts.background
        )
        for j, i in enumerate(derive):
            images[i] = torch.cat([images[i][..., :3], alpha[j][..., None]], dim=-1)
    return torch.stack([fit_size(img, size, p) for img, p in zip(images, paths, strict=True)])


def load_zero123_views(
    folder: Path,
    num_frames: int,
    keep: int,
    size: tuple[int, int],
    opts: PseudoViewOptions | None = None,
) -> list[Tensor]:
    """Read precomputed Zero123++ views ``folder/{t}_rgba/{0..5}.png``.

    Args:
        folder: The ``zero123`` folder.
        num_frames: Frames of the input video; ``folder`` must hold exactly that many.
        keep: Load only the first ``keep`` frames.
        size: ``(H, W)`` every view is resized to (the input view's size).
        opts: How the alpha is obtained (default: ``PseudoViewOptions()``, i.e. ``"auto"``).

    Returns:
        Six ``(keep, H, W, 4)`` stacks, one per Zero123++ view.

    Raises:
        ValueError: Extra or missing frame folders, a frame folder without exactly six views,
            bad images, or a view without alpha under ``pseudo_alpha="file"`` (each names the
            file or folder).
    """
    opts = PseudoViewOptions() if opts is None else opts
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
        _load_pseudo_frames([per_frame[t][k] for t in range(keep)], size, opts)
        for k in range(NUM_ZERO123PP_VIEWS)
    ]


def read_provenance(folder: Path) -> dict | None:
    """``folder/provenance.json`` as a dict, or ``None`` when there is none."""
    path = folder / PROVENANCE_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: malformed JSON ({err})") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def load_pseudo_views(
    folder: Path,
    num_frames: int,
    input_rgba: Tensor,
    input_camera: Cameras,
    view_cameras: Cameras,
    opts: PseudoViewOptions,
) -> tuple[list[Tensor], dict]:
    """Read, and align unless told otherwise, a folder of generated pseudo views.

    Args:
        folder: The ``zero123`` folder (``{t}_rgba/{0..5}.png``, optional ``provenance.json``).
        num_frames: Frames of the whole input video (the folder must hold as many).
        input_rgba: ``(T, H, W, 4)`` the loaded input view; its ``T`` frames are loaded and
            every view is resized to its ``H x W``.
        input_camera: The input view's camera.
        view_cameras: The six pseudo-view cameras.
        opts: Alpha and alignment options.

    Returns:
        Six ``(T, H, W, 4)`` stacks and the provenance for ``Scene4D.meta``:
        ``pseudo_alpha`` (the mode), ``pseudo_provenance`` (the folder's ``provenance.json`` or
        ``None``) and ``pseudo_alignment`` (``{"per": "view", "views": [...]}`` with each
        view's scale, shift in pixels and frames used, or ``{"per": "off", "reason": ...}``).
    """
    keep, h, w = input_rgba.shape[:3]
    views = load_zero123_views(folder, num_frames, keep, (h, w), opts)
    provenance = read_provenance(folder)
    oracle = provenance is not None and provenance.get("pseudo_views") == "oracle"
    align = (not oracle) if opts.align is None else opts.align
    meta: dict = {"pseudo_alpha": opts.alpha, "pseudo_provenance": provenance}
    if align:
        views, records = align_pseudo_views(input_rgba, views, input_camera, view_cameras)
        meta["pseudo_alignment"] = {"per": "view", "views": [r.as_dict() for r in records]}
    else:
        reason = "align_pseudo_views=false" if opts.align is False else "oracle views"
        meta["pseudo_alignment"] = {"per": "off", "reason": reason}
    return views, meta


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
