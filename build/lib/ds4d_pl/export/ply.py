"""Standard 3D Gaussian Splatting PLY files (what common splat viewers open).

Layout (binary little endian, one ``vertex`` element, all ``float``), in this order::

    x y z  nx ny nz  f_dc_0..2  f_rest_0..(3·(K-1)-1)  opacity  scale_0..2  rot_0..3

``nx ny nz`` are zeros; ``f_rest`` is channel-major (all red coefficients, then green, then blue,
as 3DGS stores ``features_rest.transpose(1, 2)``); ``opacity`` is a logit, ``scale_*`` are log
standard deviations and ``rot_*`` a ``(w, x, y, z)`` quaternion.

API: :func:`save_ply` takes either the *raw* tables (a mapping keyed like
:attr:`CanonicalGaussians.TABLES`, e.g. ``gaussians.raw_tables()`` or :func:`load_ply`'s output),
a :class:`CanonicalGaussians` itself, or *activated* :class:`GaussianParams` (e.g. deformed
Gaussians at time t), which are converted back with ``log`` / ``logit``. :func:`load_ply` always
returns raw tables, so ``load_ply(save_ply(raw))`` is exact. Tests: ``tests/test_export.py``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ds4d_pl.atomic import atomic_path
from ds4d_pl.gaussians.canonical import CanonicalGaussians
from ds4d_pl.render.base import GaussianParams

RAW_KEYS = CanonicalGaussians.TABLES
# Opacities are clamped this far from 0 and 1 before the logit so the file stays finite.
_OPACITY_EPS = 1e-6


def ply_property_names(sh_degree: int) -> list[str]:
    """Vertex property names of a 3DGS PLY of the given SH degree, in file order."""
    n_rest = 3 * ((sh_degree + 1) ** 2 - 1)
    return (
        ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
        + [f"f_rest_{i}" for i in range(n_rest)]
        + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    )


def raw_from_params(params: GaussianParams) -> dict[str, Tensor]:
    """Convert activated Gaussians back to raw tables (``log`` scales, ``logit`` opacities)."""
    opac = params.opacities.detach().float().clamp(_OPACITY_EPS, 1.0 - _OPACITY_EPS)
    return {
        "means": params.means.detach().float(),
        "quats": params.quats.detach().float(),
        "log_scales": params.scales.detach().float().clamp_min(1e-30).log(),
        "logit_opacities": torch.log(opac) - torch.log1p(-opac),
        "sh_dc": params.sh[:, :1].detach().float(),
        "sh_rest": params.sh[:, 1:].detach().float(),
    }


def _as_raw(gaussians: GaussianParams | CanonicalGaussians | Mapping[str, Tensor]) -> dict:
    if isinstance(gaussians, GaussianParams):
        return raw_from_params(gaussians)
    if isinstance(gaussians, CanonicalGaussians):
        return gaussians.raw_tables()
    if isinstance(gaussians, Mapping):
        missing = [k for k in RAW_KEYS if k not in gaussians]
        if missing:
            raise KeyError(f"save_ply: raw tables lack {missing}; expected keys {RAW_KEYS}")
        return {k: gaussians[k].detach().float() for k in RAW_KEYS}
    raise TypeError(
        "save_ply expects GaussianParams, CanonicalGaussians or a mapping of raw tables, "
        f"got {type(gaussians).__name__}"
    )


def save_ply(
    path: str | Path, gaussians: GaussianParams | CanonicalGaussians | Mapping[str, Tensor]
) -> Path:
    """Write Gaussians as a standard 3DGS PLY, atomically (temp file + ``os.replace``).

    Args:
        path: Destination ``.ply``; parent directories are created.
        gaussians: Activated params, the canonical module, or raw tables (see module docstring).

    Returns:
        The written path.
    """
    from plyfile import PlyData, PlyElement

    raw = _as_raw(gaussians)
    # Reuse the module's shape checks so a bad table fails with a named shape.
    CanonicalGaussians._check_tables(raw)
    n = raw["means"].shape[0]
    k_rest = raw["sh_rest"].shape[1]
    sh_degree = math.isqrt(k_rest + 1) - 1
    columns = torch.cat(
        [
            raw["means"],
            torch.zeros(n, 3),
            raw["sh_dc"].reshape(n, 3),
            raw["sh_rest"].transpose(1, 2).reshape(n, 3 * k_rest),
            raw["logit_opacities"].reshape(n, 1),
            raw["log_scales"],
            raw["quats"],
        ],
        dim=1,
    ).cpu()
    names = ply_property_names(sh_degree)
    assert columns.shape[1] == len(names)
    data = np.empty(n, dtype=[(name, "<f4") for name in names])
    values = columns.numpy().astype("<f4")
    for i, name in enumerate(names):
        data[name] = values[:, i]

    path = Path(path)
    with atomic_path(path) as tmp:
        PlyData([PlyElement.describe(data, "vertex")], text=False, byte_order="<").write(str(tmp))
    return path


def load_ply(path: str | Path) -> dict[str, Tensor]:
    """Read a 3DGS PLY into raw tables keyed like :attr:`CanonicalGaussians.TABLES`.

    Args:
        path: A PLY written by :func:`save_ply` or by 3DGS-compatible tools.

    Returns:
        ``means (N,3)``, ``quats (N,4)``, ``log_scales (N,3)``, ``logit_opacities (N,)``,
        ``sh_dc (N,1,3)``, ``sh_rest (N,K-1,3)`` as float32 tensors.

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: Not a PLY, or a required property is missing (the message names the file).
    """
    from plyfile import PlyData

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Gaussian PLY not found: {path}")
    try:
        ply = PlyData.read(str(path))
    except Exception as err:  # plyfile raises several unrelated types on bad input
        raise ValueError(f"{path}: not a readable PLY file ({err})") from err
    if "vertex" not in [e.name for e in ply.elements]:
        raise ValueError(f"{path}: PLY has no 'vertex' element")
    vert = ply["vertex"]
    props = {p.name for p in vert.properties}
    n_rest = sum(1 for p in props if p.startswith("f_rest_"))
    if n_rest % 3 or math.isqrt(n_rest // 3 + 1) ** 2 != n_rest // 3 + 1:
        raise ValueError(f"{path}: {n_rest} f_rest properties is not 3·((d+1)²-1) for any degree")
    sh_degree = math.isqrt(n_rest // 3 + 1) - 1
    required = [p for p in ply_property_names(sh_degree) if p not in ("nx", "ny", "nz")]
    missing = [p for p in required if p not in props]
    if missing:
        raise ValueError(f"{path}: PLY vertex element lacks properties {missing}")

    def cols(names: list[str]) -> Tensor:
        if not names:  # degree 0 has no f_rest columns
            return torch.zeros(vert.count, 0)
        arr = np.stack([np.asarray(vert[name], dtype=np.float32) for name in names], axis=1)
        return torch.from_numpy(np.ascontiguousarray(arr))

    n = vert.count
    k_rest = n_rest // 3
    return {
        "means": cols(["x", "y", "z"]),
        "quats": cols([f"rot_{i}" for i in range(4)]),
        "log_scales": cols([f"scale_{i}" for i in range(3)]),
        "logit_opacities": cols(["opacity"])[:, 0].contiguous(),
        "sh_dc": cols([f"f_dc_{i}" for i in range(3)]).reshape(n, 1, 3),
        "sh_rest": cols([f"f_rest_{i}" for i in range(n_rest)])
        .reshape(n, 3, k_rest)
        .transpose(1, 2)
        .contiguous(),
    }
