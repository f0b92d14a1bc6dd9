"""``ds4d prepare``: turn a user's video or frames into the Consistent4D input layout.

The method expects an RGBA video of one foreground object, centred, at a size where the object
fills most of the frame (the Zero123 object protocol). This module

1. reads a video file or a folder of numbered frames (PNG/JPEG; zero padding allowed),
2. takes the foreground alpha, in this order, from the input itself (RGBA PNGs, or a video codec
   with alpha), from a folder of numbered masks, or from a local segmentation model (a
   TorchScript foreground model, contract in :mod:`ds4d_pl.data.segment`); without any of them
   it stops with an error naming the file,
3. crops the union of the foreground over *all* frames (one crop for the whole clip, so the
   object's motion inside the frame is kept), rescales it so its larger side fills ``fill`` of
   a square ``size`` canvas, centres it, and
4. writes ``OUT/<name>/{t}.png`` (straight RGBA, atomically), which ``data.dataset:
   consistent4d`` reads, and
5. optionally (:func:`write_pseudo_views`) runs Zero123++ over the written clip and writes
   ``OUT/<name>_mv/ref/{t}_rgba.png`` + ``OUT/<name>_mv/zero123/{t}_rgba/{0..5}.png``, which
   ``data.dataset: multiview_sequence`` reads.

Tests: ``tests/test_prepare.py``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from ds4d_pl.data.io import read_rgba, read_video_rgba, write_rgba
from ds4d_pl.data.parsers.common import numbered_frames
from ds4d_pl.data.segment import Segmenter, SegmenterConfig, load_segmenter

if TYPE_CHECKING:
    from ds4d_pl.priors.zero123pp import Zero123ppConfig

__all__ = ["prepare_video", "write_pseudo_views"]

# A user's frames: any common prefix and a number (0.png, 0001.png, frame_001.jpg, img12.PNG).
_FRAME = re.compile(r"^(?P<prefix>.*?)(?P<num>\d+)\.(?:png|jpg|jpeg)$", re.IGNORECASE)
_MASK = re.compile(r"^(\d+)\.png$", re.IGNORECASE)
_VIDEO_SUFFIXES = (".mp4", ".mov", ".webm", ".mkv", ".avi", ".gif")


def user_frames(folder: Path, what: str = "frames") -> list[Path]:
    """The numbered images of a user's folder, in order.

    Names are a common prefix and a number (``0.png``, ``0001.png`` as ffmpeg writes them,
    ``frame_001.jpg``): numbering may start anywhere but must not skip, and one folder holds one
    sequence.

    Raises:
        FileNotFoundError: The folder is missing or holds no numbered image.
        ValueError: Two prefixes, a repeated number or a gap (each named).
    """
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: {what} folder does not exist")
    found: dict[str, dict[int, Path]] = {}
    for p in sorted(folder.iterdir()):
        m = _FRAME.match(p.name)
        if not m or p.is_dir():
            continue
        numbers = found.setdefault(m["prefix"], {})
        n = int(m["num"])
        if n in numbers:
            raise ValueError(f"{folder}: {numbers[n].name} and {p.name} are both {what[:-1]} {n}")
        numbers[n] = p
    if not found:
        raise FileNotFoundError(
            f"{folder}: no {what} named like '0.png', '0001.png' or 'frame_001.jpg'"
        )
    if len(found) > 1:
        examples = ", ".join(f"{prefix}{min(n)}" for prefix, n in sorted(found.items()))
        raise ValueError(f"{folder}: holds several numbered sequences ({examples}); keep one")
    numbers = next(iter(found.values()))
    first, last = min(numbers), max(numbers)
    missing = sorted(set(range(first, last + 1)) - set(numbers))
    if missing:
        raise ValueError(f"{folder}: {what} numbers skip {missing[:10]}")
    return [numbers[n] for n in range(first, last + 1)]


def _read_input(path: Path) -> tuple[Tensor, bool, list[str]]:
    """``(T, H, W, 4)`` frames, whether they carry alpha, and a name per frame for errors."""
    if path.is_dir():
        files = user_frames(path)
        frames, alphas = [], []
        for f in files:
            rgba = read_rgba(f, require_alpha=False)
            if frames and rgba.shape != frames[0].shape:
                raise ValueError(
                    f"{f}: image is {rgba.shape[1]}x{rgba.shape[0]} but {files[0]} is "
                    f"{frames[0].shape[1]}x{frames[0].shape[0]}"
                )
            frames.append(rgba)
            alphas.append(bool((rgba[..., 3] < 1.0).any()))
        # A PNG saved with an alpha channel that is opaque everywhere carries no foreground.
        return torch.stack(frames), any(alphas), [str(f) for f in files]
    if path.suffix.lower() in _VIDEO_SUFFIXES:
        rgba, has_alpha = read_video_rgba(path)
        return rgba, has_alpha, [f"{path} frame {t}" for t in range(len(rgba))]
    if not path.exists():
        raise FileNotFoundError(f"{path}: input video or frame folder does not exist")
    raise ValueError(f"{path}: not a frame folder or a video ({', '.join(_VIDEO_SUFFIXES)})")


def _read_masks(folder: Path, frames: Tensor) -> Tensor:
    files = user_frames(folder, "masks")
    if len(files) != len(frames):
        raise ValueError(f"{folder}: {len(files)} masks but the input has {len(frames)} frames")
    masks = []
    for f in files:
        m = read_rgba(f, require_alpha=False)
        if m.shape[:2] != frames.shape[1:3]:
            raise ValueError(
                f"{f}: mask is {m.shape[1]}x{m.shape[0]} but the frames are "
                f"{frames.shape[2]}x{frames.shape[1]}"
            )
        # A mask with transparency stores the foreground in its alpha, otherwise in its grey.
        masks.append(m[..., 3] if bool((m[..., 3] < 1.0).any()) else m[..., :3].mean(-1))
    return torch.stack(masks)


def prepare_video(
    input_path: str | Path,
    out_dir: str | Path,
    name: str | None = None,
    masks: str | Path | None = None,
    size: int = 512,
    fill: float = 0.8,
    max_frames: int | None = None,
    segmenter: str | Path | Segmenter | None = None,
    segmenter_cfg: SegmenterConfig | None = None,
) -> Path:
    """Write a video or frame folder as a centred RGBA clip in the Consistent4D layout.

    Args:
        input_path: Video file or folder of numbered frames.
        out_dir: Dataset root; the clip goes to ``out_dir/<name>/{t}.png``.
        name: Object name (default: the input's file or folder name).
        masks: Folder of numbered foreground masks (``0.png`` ...), for inputs without alpha.
        segmenter: TorchScript foreground model (path or loaded), for inputs without alpha
            and without ``masks`` (contract in :mod:`ds4d_pl.data.segment`).
        segmenter_cfg: How the segmentation model is fed and read.
        size: Side of the square output frames.
        fill: Fraction of the side the object's larger extent fills.
        max_frames: Keep only the first frames.

    Returns:
        The object's folder.

    Raises:
        FileNotFoundError: The input or mask folder is missing.
        MissingWeightsError: The segmentation model file is missing.
        ValueError: No alpha, no masks and no segmentation model, masks that do not match the
            frames, an empty foreground, or bad options (each names the file or option).
    """
    if size < 16:
        raise ValueError(f"size must be >= 16, got {size}")
    if not 0.1 <= fill <= 1.0:
        raise ValueError(f"fill must be in [0.1, 1], got {fill}")
    src = Path(input_path)
    frames, has_alpha, labels = _read_input(src)
    if max_frames is not None:
        frames, labels = frames[:max_frames], labels[:max_frames]
    if masks is not None:
        frames = torch.cat([frames[..., :3], _read_masks(Path(masks), frames)[..., None]], -1)
    elif not has_alpha and segmenter is not None:
        if not isinstance(segmenter, Segmenter):
            segmenter = load_segmenter(segmenter, segmenter_cfg)
        alpha = torch.stack([segmenter(f[..., :3]) for f in frames])
        frames = torch.cat([frames[..., :3], alpha[..., None]], -1)
    elif not has_alpha:
        raise ValueError(
            f"{labels[0]}: the input has no alpha channel; give RGBA frames (or a video codec "
            "with alpha), a folder of foreground masks with --masks, or a segmentation model "
            "with --segmenter"
        )
    alpha = frames[..., 3]
    for t in range(len(frames)):
        if not bool((alpha[t] > 0.5).any()):
            raise ValueError(f"{labels[t]}: the foreground mask is empty")
    # One crop for the whole clip: the union of every frame's foreground.
    fg = (alpha > 0.5).any(0)
    rows, cols = fg.any(1).nonzero()[:, 0], fg.any(0).nonzero()[:, 0]
    top, bottom, left, right = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    h, w = bottom - top, right - left
    scale = fill * size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    crop = frames[:, top:bottom, left:right]
    # Resize premultiplied colour so transparent pixels do not bleed into the edges.
    premult = torch.cat([crop[..., :3] * crop[..., 3:], crop[..., 3:]], -1).permute(0, 3, 1, 2)
    mode = "area" if scale < 1 else "bilinear"
    kwargs = {} if mode == "area" else {"align_corners": False}
    resized = F.interpolate(premult, (nh, nw), mode=mode, **kwargs).clamp(0, 1)
    canvas = torch.zeros(len(frames), 4, size, size)
    y0, x0 = (size - nh) // 2, (size - nw) // 2
    canvas[:, :, y0 : y0 + nh, x0 : x0 + nw] = resized
    a = canvas[:, 3:]
    rgb = torch.where(a > 1e-6, canvas[:, :3] / a.clamp_min(1e-6), torch.zeros_like(canvas[:, :3]))
    out = torch.cat([rgb.clamp(0, 1), a], 1).permute(0, 2, 3, 1)
    obj = Path(out_dir) / (name or src.stem)
    if obj.is_dir():
        # A shorter clip must not keep an earlier run's extra frames (the reader would see them).
        for stale in obj.iterdir():
            m = _MASK.match(stale.name)
            if m and int(m.group(1)) >= len(out):
                stale.unlink()
    for t, frame in enumerate(out):
        write_rgba(obj / f"{t}.png", frame)
    return obj


def write_pseudo_views(
    obj_dir: str | Path,
    zero123pp: str | Path | None,
    cfg: Zero123ppConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
    segmenter_cfg: SegmenterConfig | None = None,
) -> Path:
    """Run Zero123++ over a prepared clip and write its multi-view sequence next to it.

    Args:
        obj_dir: A clip written by :func:`prepare_video` (``OUT/<name>/{t}.png``).
        zero123pp: Local Zero123++ directory (hub layout; ``None``: ``$DS4D_WEIGHTS_DIR`` or
            the HF cache, offline).
        cfg: Generation options (version, steps, seed, temporal anchor, alpha, ...).
        progress: Called with ``(frames done, total)``.
        segmenter_cfg: How ``cfg.segmenter`` is fed (with ``cfg.alpha="segmenter"``).

    Returns:
        ``OUT/<name>_mv``, holding ``ref/{t}_rgba.png`` and ``zero123/{t}_rgba/{0..5}.png``.

    Raises:
        MissingWeightsError: The Zero123++ directory or one of its parts is missing.
    """
    from ds4d_pl.priors.zero123pp import generate_multiview_sequence, load_zero123pp

    obj = Path(obj_dir)
    files = numbered_frames(obj, _MASK, hint="'0.png', '1.png', ...")
    frames = torch.stack([read_rgba(f) for f in files])
    model = load_zero123pp(zero123pp, cfg, segmenter_cfg)
    return generate_multiview_sequence(frames, obj.parent / f"{obj.name}_mv", model, progress)
