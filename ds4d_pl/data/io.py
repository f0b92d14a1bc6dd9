"""Reading and writing image files, and decoding videos, as float tensors.

Images cross this module as ``(H, W, C)`` float32 tensors in ``[0, 1]`` with *straight* (not
premultiplied) colour, which is also what PNG stores. Writes are atomic: the image is encoded
into a temporary sibling file and moved over the target with ``os.replace``, so a reader running
concurrently (or a killed writer) never sees a truncated PNG. Videos are decoded through PyAV,
one frame at a time, so a reader that keeps every k-th frame of a long clip never holds the rest.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from ds4d_pl.atomic import atomic_path

__all__ = [
    "iter_video_frames",
    "read_rgba",
    "read_video",
    "read_video_rgba",
    "write_rgb",
    "write_rgba",
]


def read_rgba(path: str | os.PathLike, require_alpha: bool = True) -> Tensor:
    """Read an image file as straight RGBA.

    Args:
        path: Image file (PNG for anything with alpha; any format PIL reads otherwise).
        require_alpha: If ``True`` (default) an image without an alpha channel is an error,
            because a silently opaque mask would make the whole frame foreground. If ``False``
            such an image gets ``alpha = 1``.

    Returns:
        ``(H, W, 4)`` float32 tensor in ``[0, 1]``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: The file is not a readable image, or it has no alpha channel and
            ``require_alpha`` is set.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        with Image.open(path) as img:
            img.load()
            has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
                img.mode == "P" and "transparency" in img.info
            )
            if not has_alpha and require_alpha:
                raise ValueError(
                    f"{path}: image has no alpha channel (mode {img.mode!r}); an RGBA image with "
                    "the foreground alpha is required (pass require_alpha=False to treat it as "
                    "fully opaque)"
                )
            # 16-bit greyscale modes do not convert to RGBA with the right scale; go through
            # float and normalise by the mode's range first.
            if img.mode in ("I", "I;16", "I;16B", "I;16L"):
                grey = np.asarray(img, dtype=np.float32) / 65535.0
                rgb = np.repeat(grey[..., None], 3, axis=-1)
                arr = np.concatenate([rgb, np.ones_like(grey[..., None])], axis=-1)
            else:
                arr = np.asarray(img.convert("RGBA"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"{path}: cannot read image ({err})") from err
    return torch.from_numpy(np.ascontiguousarray(arr)).clamp_(0.0, 1.0)


def _to_uint8(image: Tensor, channels: int, name: str) -> np.ndarray:
    if not isinstance(image, Tensor):
        image = torch.as_tensor(image)
    if image.ndim != 3 or image.shape[-1] != channels:
        raise ValueError(f"{name} expects an (H, W, {channels}) tensor, got {tuple(image.shape)}")
    if image.dtype == torch.uint8:
        return image.cpu().numpy()
    if not image.is_floating_point():
        raise ValueError(f"{name} expects a float tensor in [0, 1] or uint8, got {image.dtype}")
    if not torch.isfinite(image).all():
        raise ValueError(f"{name}: image contains NaN or inf")
    arr = (image.detach().float().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
    return arr.cpu().numpy()


def _save_atomic(path: str | os.PathLike, arr: np.ndarray) -> None:
    path = Path(path)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG"}.get(path.suffix.lower(), "PNG")
    with atomic_path(path) as tmp:
        # The mode follows from the array shape ((H, W, 3) RGB, (H, W, 4) RGBA).
        Image.fromarray(arr).save(tmp, format=fmt)


def write_rgba(path: str | os.PathLike, rgba: Tensor) -> None:
    """Write a straight-alpha RGBA image as an 8-bit PNG, atomically.

    Args:
        path: Destination; parent directories are created.
        rgba: ``(H, W, 4)`` float in ``[0, 1]`` (values are clamped) or uint8.
    """
    _save_atomic(path, _to_uint8(rgba, 4, "write_rgba"))


def write_rgb(path: str | os.PathLike, rgb: Tensor) -> None:
    """Write an RGB image (PNG, or JPEG for a ``.jpg``/``.jpeg`` suffix), atomically.

    Args:
        path: Destination; parent directories are created.
        rgb: ``(H, W, 3)`` float in ``[0, 1]`` (values are clamped) or uint8.
    """
    _save_atomic(path, _to_uint8(rgb, 3, "write_rgb"))


def iter_video_frames(
    path: str | os.PathLike, fmt: str = "rgba", stride: int = 1, limit: int | None = None
) -> Iterator[np.ndarray]:
    """Decode a video frame by frame.

    Args:
        path: Video file.
        fmt: PyAV pixel format of the yielded arrays (``rgba`` or ``rgb24``).
        stride: Keep every ``stride``-th frame, starting with the first.
        limit: Stop after this many kept frames (``None``: all).

    Yields:
        ``(H, W, C)`` uint8 arrays.

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: The file cannot be decoded or holds no video stream (names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: video file not found")
    kept = 0
    try:
        with av.open(str(path), mode="r") as container:
            if not container.streams.video:
                raise ValueError("no video stream")
            for i, frame in enumerate(container.decode(video=0)):
                if i % stride:
                    continue
                yield frame.to_ndarray(format=fmt)
                kept += 1
                if limit is not None and kept >= limit:
                    return
    except (av.FFmpegError, ValueError) as err:
        raise ValueError(f"{path}: cannot decode video ({err})") from err


def _video_has_alpha(path: Path) -> bool:
    try:
        with av.open(str(path), mode="r") as container:
            stream = container.streams.video[0] if container.streams.video else None
            fmt = None if stream is None else stream.format
            return fmt is not None and any(c.is_alpha for c in fmt.components)
    except av.FFmpegError as err:
        raise ValueError(f"{path}: cannot decode video ({err})") from err


def read_video_rgba(path: str | os.PathLike) -> tuple[Tensor, bool]:
    """Decode a whole video, keeping its alpha channel when the codec stores one.

    Returns:
        ``(T, H, W, 4)`` straight RGBA in ``[0, 1]`` (alpha 1 when the stream has none) and
        whether the stream carried alpha.

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: The file cannot be decoded or holds no frames (names the file).
    """
    frames = list(iter_video_frames(path, "rgba"))
    if not frames:
        raise ValueError(f"{path}: cannot decode video (it holds no frames)")
    has_alpha = _video_has_alpha(Path(path))
    rgba = torch.from_numpy(np.stack(frames)).float() / 255.0
    if not has_alpha:
        rgba[..., 3] = 1.0
    return rgba, has_alpha


def read_video(path: str | os.PathLike) -> Tensor:
    """Decode every frame of a video as ``(T, H, W, 3)`` float RGB in ``[0, 1]``.

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: The file cannot be decoded or holds no video frames (names the file).
    """
    return read_video_rgba(path)[0][..., :3].contiguous()
