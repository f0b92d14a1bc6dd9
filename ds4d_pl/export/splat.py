"""``.splat`` files: the compact Gaussian layout that web splat viewers load.

The layout is the one introduced by the antimatter15/splat WebGL viewer and read by the viewers
that followed it: no header, 32 bytes per Gaussian, little endian::

    position  3 x float32    centre, in the package's world frame (y-up, as the PLY files)
    scale     3 x float32    standard deviations along the local axes (linear, not log)
    rgba      4 x uint8      colour 255 * (0.5 + SH_C0 * f_dc), opacity 255 * sigmoid(logit)
    rotation  4 x uint8      unit quaternion (w, x, y, z) mapped to 128 * q + 128

Gaussians are written in decreasing order of ``scale_x * scale_y * scale_z * opacity``, as the
viewers expect: they stream the file and draw what arrived first, so the big opaque Gaussians
come first. Unlike the reference converter, bytes are rounded to the nearest value rather than
truncated, which halves the quantisation error. View-dependent colour (SH bands above 0) has no
place in the format and is dropped: the colour is the DC term only.

API: :func:`write_splat` writes one file, :func:`write_splat_frames` the canonical Gaussians and
every frame under the names the PLY export uses, :func:`read_splat` reads a file back.
Tests: ``tests/test_splat.py``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ds4d_pl.atomic import atomic_path
from ds4d_pl.gaussians.canonical import CanonicalGaussians
from ds4d_pl.render.base import SH_C0, GaussianParams

__all__ = ["SPLAT_DTYPE", "read_splat", "splat_records", "write_splat", "write_splat_frames"]

#: One Gaussian of a ``.splat`` file (32 bytes).
SPLAT_DTYPE = np.dtype(
    [
        ("position", "<f4", (3,)),
        ("scale", "<f4", (3,)),
        ("rgba", "u1", (4,)),
        ("rotation", "u1", (4,)),
    ]
)
assert SPLAT_DTYPE.itemsize == 32

# Raw tables a mapping must hold (the keys of CanonicalGaussians.TABLES this format uses).
_RAW_KEYS = ("means", "quats", "log_scales", "logit_opacities", "sh_dc")


def _activated(gaussians: GaussianParams | CanonicalGaussians | Mapping[str, Tensor]) -> dict:
    """Centres, linear scales, opacities in [0, 1], DC colour and quaternions, as float64."""
    if isinstance(gaussians, CanonicalGaussians):
        gaussians = gaussians.activated()
    if isinstance(gaussians, GaussianParams):
        tables = {
            "means": gaussians.means,
            "scales": gaussians.scales,
            "opacities": gaussians.opacities,
            "dc": gaussians.sh[:, 0],
            "quats": gaussians.quats,
        }
    elif isinstance(gaussians, Mapping):
        missing = [k for k in _RAW_KEYS if k not in gaussians]
        if missing:
            raise KeyError(f"write_splat: raw tables lack {missing}; expected keys {_RAW_KEYS}")
        tables = {
            "means": gaussians["means"],
            "scales": torch.exp(gaussians["log_scales"]),
            "opacities": torch.sigmoid(gaussians["logit_opacities"]),
            "dc": gaussians["sh_dc"].reshape(-1, 3),
            "quats": gaussians["quats"],
        }
    else:
        raise TypeError(
            "write_splat expects GaussianParams, CanonicalGaussians or a mapping of raw tables, "
            f"got {type(gaussians).__name__}"
        )
    arrays = {k: v.detach().cpu().double().numpy() for k, v in tables.items()}
    n = arrays["means"].shape[0]
    shapes = {"means": (n, 3), "scales": (n, 3), "opacities": (n,), "dc": (n, 3), "quats": (n, 4)}
    for name, shape in shapes.items():
        if arrays[name].shape != shape:
            raise ValueError(f"write_splat: {name} must be {shape}, got {arrays[name].shape}")
        bad = ~np.isfinite(arrays[name])
        if bad.any():
            first = int(np.argwhere(bad)[0][0])
            raise ValueError(f"write_splat: {name} of Gaussian {first} is not finite")
    return arrays


def _to_byte(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def splat_records(
    gaussians: GaussianParams | CanonicalGaussians | Mapping[str, Tensor],
) -> np.ndarray:
    """The Gaussians as ``.splat`` records, most important first.

    Args:
        gaussians: Activated params (e.g. the deformed Gaussians of one frame), the canonical
            module, or its raw tables (``log_scales``, ``logit_opacities``, ...).

    Returns:
        A structured array of dtype :data:`SPLAT_DTYPE`, sorted by decreasing
        ``prod(scale) * opacity`` (ties keep the input order).
    """
    a = _activated(gaussians)
    norm = np.linalg.norm(a["quats"], axis=1, keepdims=True)
    # A zero quaternion (never produced by training, but possible in hand-made tables) is the
    # identity rotation, as the renderer treats it.
    quats = np.where(norm > 1e-12, a["quats"] / np.maximum(norm, 1e-12), [1.0, 0.0, 0.0, 0.0])
    importance = a["scales"].prod(axis=1) * a["opacities"]
    order = np.argsort(-importance, kind="stable")
    records = np.empty(len(order), dtype=SPLAT_DTYPE)
    records["position"] = a["means"][order]
    records["scale"] = a["scales"][order]
    rgb = 255.0 * (0.5 + SH_C0 * a["dc"][order])
    records["rgba"] = _to_byte(np.concatenate([rgb, 255.0 * a["opacities"][order, None]], axis=1))
    records["rotation"] = _to_byte(128.0 * quats[order] + 128.0)
    return records


def write_splat(
    path: str | Path, params: GaussianParams | CanonicalGaussians | Mapping[str, Tensor]
) -> Path:
    """Write Gaussians as a ``.splat`` file, atomically (temp file + ``os.replace``).

    Args:
        path: Destination; parent directories are created.
        params: Activated params, the canonical module, or raw tables (see :func:`splat_records`).

    Returns:
        The written path.

    Raises:
        ValueError: A table has the wrong shape or holds NaN/inf (nothing is written).
    """
    records = splat_records(params)
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(records.tobytes())
    return path


def write_splat_frames(
    out_dir: str | Path,
    frames: Iterable[GaussianParams],
    canonical: GaussianParams | CanonicalGaussians | Mapping[str, Tensor] | None = None,
) -> list[Path]:
    """Write ``canonical.splat`` and ``frame_XXXX.splat`` files, named as the PLY export.

    Args:
        out_dir: Folder for the files.
        frames: The Gaussians of each frame in order, e.g. ``(model.at(t) for t in times)``;
            consumed one at a time, so only one frame is held in memory.
        canonical: The undeformed Gaussians, written as ``canonical.splat`` when given.

    Returns:
        The written paths, canonical first.
    """
    out_dir = Path(out_dir)
    paths = []
    if canonical is not None:
        paths.append(write_splat(out_dir / "canonical.splat", canonical))
    for i, frame in enumerate(frames):
        paths.append(write_splat(out_dir / f"frame_{i:04d}.splat", frame))
    return paths


def read_splat(path: str | Path) -> dict[str, Tensor]:
    """Read a ``.splat`` file back into activated tables, in file order.

    Args:
        path: A file written by :func:`write_splat` or any tool using the same layout.

    Returns:
        ``means (N, 3)``, ``scales (N, 3)``, ``colors (N, 3)`` and ``opacities (N,)`` in
        ``[0, 1]``, and ``quats (N, 4)`` as ``(w, x, y, z)`` decoded from the bytes (unit up to
        the 1/128 quantisation), as float32 tensors.

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: Its size is not a whole number of 32-byte records (the message names it).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f".splat file not found: {path}")
    data = path.read_bytes()
    if len(data) % SPLAT_DTYPE.itemsize:
        raise ValueError(
            f"{path}: {len(data)} bytes is not a whole number of {SPLAT_DTYPE.itemsize}-byte "
            "Gaussians; not a .splat file"
        )
    records = np.frombuffer(data, dtype=SPLAT_DTYPE)
    rgba = records["rgba"].astype(np.float32) / 255.0

    def tensor(array: np.ndarray) -> Tensor:
        return torch.from_numpy(np.array(array, dtype=np.float32))  # a writable copy

    return {
        "means": tensor(records["position"]),
        "scales": tensor(records["scale"]),
        "colors": tensor(rgba[:, :3]),
        "opacities": tensor(rgba[:, 3]),
        "quats": tensor((records["rotation"].astype(np.float32) - 128.0) / 128.0),
    }
