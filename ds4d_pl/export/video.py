"""H.264 mp4 writing through PyAV (reading lives with the other readers in ``data/io.py``).

Files are written under a temporary name in the destination directory and moved into place with
``os.replace``, so a crash or an encoder error never leaves a truncated video behind.
Tests: ``tests/test_export.py``.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import torch
from torch import Tensor

from ds4d_pl.atomic import atomic_path


def _pad_even(frames: np.ndarray) -> np.ndarray:
    """Replicate the last row / column so height and width are even (yuv420p needs it)."""
    _, h, w, _ = frames.shape
    pad_h, pad_w = h % 2, w % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    return frames


def write_video(path: str | Path, frames: Tensor, fps: int = 24, crf: int = 18) -> Path:
    """Encode frames as an H.264 (libx264, yuv420p) mp4, atomically.

    Odd heights / widths are padded by one replicated row / column to the next even size.

    Args:
        path: Destination ``.mp4``; parent directories are created.
        frames: ``(T, H, W, 3)`` float RGB in ``[0, 1]`` (values outside are clamped).
        fps: Frames per second.
        crf: x264 constant rate factor (lower is better quality; 18 is visually lossless).

    Returns:
        The written path.

    Raises:
        ValueError: Wrong shape, no frames, non-finite values or ``fps < 1``.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise ValueError(f"write_video: frames must be (T>0, H, W, 3), got {tuple(frames.shape)}")
    if not torch.isfinite(frames).all():
        raise ValueError("write_video: frames contain NaN or inf")
    if fps < 1:
        raise ValueError(f"write_video: fps must be >= 1, got {fps}")
    data = (frames.detach().float().clamp(0, 1) * 255.0).round().to(torch.uint8).cpu().numpy()
    data = _pad_even(data)
    _, h, w, _ = data.shape

    path = Path(path)
    # The temporary file keeps the .mp4 suffix so the muxer is chosen correctly for it too.
    with (
        atomic_path(path, suffix=".mp4") as tmp,
        av.open(str(tmp), mode="w", format="mp4") as container,
    ):
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = w, h
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf)}
        for frame in data:
            video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
            for packet in stream.encode(video_frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
