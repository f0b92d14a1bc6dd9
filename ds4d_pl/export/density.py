"""Exports of a radiance field's surface at one instant: coloured points, or a mesh.

A NeRF has no primitives to write as a 3DGS PLY; what a viewer (or a Chamfer-distance script) can
use is its surface, the level set ``density = level``. The density is evaluated on a regular grid
over the field's box, in chunks, and:

* :func:`density_points` returns, for every grid edge whose two ends lie on either side of the
  level, the linearly interpolated crossing point: a point cloud on the level set whose accuracy
  is a fraction of a grid cell. Points are coloured by the field's colour head there.
  :func:`save_points_ply` writes them as a plain PLY (``x y z`` floats, ``red green blue``
  bytes) that every point-cloud viewer opens; the per-frame name is :func:`points_filename`
  (``density_points_0007.ply``).
* :func:`density_mesh` runs marching cubes on the same grid when ``scikit-image`` or ``PyMCubes``
  is importable (optional: neither is a dependency), and :func:`save_mesh_ply` writes vertices
  with colours and triangular faces (``density_mesh_0007.ply``).

:func:`export_density` does one frame end to end. Tests: ``tests/test_nerf.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from plyfile import PlyData, PlyElement
from torch import Tensor

from ds4d_pl.atomic import atomic_path
from ds4d_pl.fields.nerf import RadianceVolume

MeshBackend = Callable[[np.ndarray, float], tuple[np.ndarray, np.ndarray]]

#: Grid points evaluated per field query; bounds peak memory.
_QUERY_CHUNK = 65536


def points_filename(index: int) -> str:
    """File name of frame ``index``'s surface point cloud."""
    return f"density_points_{index:04d}.ply"


def mesh_filename(index: int) -> str:
    """File name of frame ``index``'s marching-cubes mesh."""
    return f"density_mesh_{index:04d}.ply"


def _check_volume(volume: RadianceVolume, resolution: int) -> Tensor:
    if not isinstance(volume, RadianceVolume):
        raise TypeError(
            "density exports read a radiance field at one instant (NeRFField.at(t)), got "
            f"{type(volume).__name__}"
        )
    if resolution < 2:
        raise ValueError(f"density export: resolution must be >= 2, got {resolution}")
    return volume.aabb  # raises for a field without bounds


def _grid_axes(aabb: Tensor, resolution: int) -> list[Tensor]:
    return [
        torch.linspace(float(aabb[0, i]), float(aabb[1, i]), resolution, device=aabb.device)
        for i in range(3)
    ]


@torch.no_grad()
def density_grid(volume: RadianceVolume, resolution: int = 128) -> tuple[Tensor, list[Tensor]]:
    """Density on a regular ``resolution^3`` vertex grid spanning the field's box.

    Args:
        volume: The field at one instant.
        resolution: Vertices per axis (``>= 2``).

    Returns:
        ``(R, R, R)`` density indexed ``[ix, iy, iz]`` and the three axis coordinate vectors.
    """
    aabb = _check_volume(volume, resolution)
    axes = _grid_axes(aabb, resolution)
    pts = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    sigma = torch.cat(
        [
            volume.density(pts[i : i + _QUERY_CHUNK]).float()
            for i in range(0, len(pts), _QUERY_CHUNK)
        ]
    )
    return sigma.reshape(resolution, resolution, resolution), axes


@torch.no_grad()
def _colors_at(volume: RadianceVolume, points: Tensor) -> Tensor:
    if len(points) == 0:
        return points.new_zeros(0, 3)
    parts = [
        volume.query(points[i : i + _QUERY_CHUNK])[1] for i in range(0, len(points), _QUERY_CHUNK)
    ]
    return torch.cat(parts).float().clamp(0.0, 1.0)


@torch.no_grad()
def density_points(
    volume: RadianceVolume, level: float = 10.0, resolution: int = 128
) -> tuple[Tensor, Tensor]:
    """Points where the density crosses ``level``, coloured by the field.

    Args:
        volume: The field at one instant.
        level: Density level of the surface (per world unit: ``1 - exp(-level * d)`` is the
            opacity of a slab of thickness ``d``).
        resolution: Grid vertices per axis.

    Returns:
        ``points`` ``(P, 3)`` and ``colors`` ``(P, 3)`` in ``[0, 1]`` (``P`` may be 0).
    """
    sigma, axes = density_grid(volume, resolution)
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1)
    f = sigma - level
    points = []
    for axis in range(3):
        lo = f.narrow(axis, 0, resolution - 1)
        hi = f.narrow(axis, 1, resolution - 1)
        cross = (lo < 0) != (hi < 0)
        p_lo = grid.narrow(axis, 0, resolution - 1)[cross]
        p_hi = grid.narrow(axis, 1, resolution - 1)[cross]
        a, b = lo[cross], hi[cross]
        # Linear interpolation of the zero crossing of (density - level) along the edge.
        w = (a / (a - b)).clamp(0.0, 1.0)[:, None]
        points.append(p_lo + w * (p_hi - p_lo))
    pts = torch.cat(points)
    return pts, _colors_at(volume, pts.to(volume.aabb.device))


def _to_uint8(colors: Tensor) -> np.ndarray:
    return (colors.detach().float().clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).cpu().numpy()


def _vertex_array(points: Tensor, colors: Tensor, who: str) -> np.ndarray:
    if points.ndim != 2 or points.shape[1] != 3 or colors.shape != points.shape:
        raise ValueError(
            f"{who}: points and colors must both be (P, 3), got {tuple(points.shape)} and "
            f"{tuple(colors.shape)}"
        )
    vertex = np.empty(
        len(points),
        dtype=[
            ("x", "f4"),
            ("y", "f4"),
            ("z", "f4"),
            ("red", "u1"),
            ("green", "u1"),
            ("blue", "u1"),
        ],
    )
    xyz = points.detach().float().cpu().numpy()
    rgb = _to_uint8(colors)
    for i, name in enumerate(("x", "y", "z")):
        vertex[name] = xyz[:, i]
    for i, name in enumerate(("red", "green", "blue")):
        vertex[name] = rgb[:, i]
    return vertex


def save_points_ply(path: str | Path, points: Tensor, colors: Tensor) -> Path:
    """Write a coloured point cloud as a binary PLY (``x y z`` float, ``red green blue`` uchar).

    Args:
        path: Destination (written atomically).
        points: ``(P, 3)`` positions.
        colors: ``(P, 3)`` colours in ``[0, 1]``.

    Returns:
        ``path``.
    """
    vertex = _vertex_array(points, colors, "save_points_ply")
    path = Path(path)
    with atomic_path(path) as tmp:
        PlyData([PlyElement.describe(vertex, "vertex")]).write(str(tmp))
    return path


def _skimage_backend() -> MeshBackend | None:
    try:
        from skimage.measure import marching_cubes  # type: ignore[import-not-found]
    except ImportError:
        return None

    def run(volume: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
        verts, faces, _, _ = marching_cubes(volume, level=level)
        return verts, faces

    return run


def _mcubes_backend() -> MeshBackend | None:
    try:
        import mcubes  # type: ignore[import-not-found]
    except ImportError:
        return None
    return lambda volume, level: mcubes.marching_cubes(volume, level)


def mesh_backend() -> tuple[str, MeshBackend] | None:
    """The first importable marching-cubes implementation (``skimage``, then ``mcubes``)."""
    for name, probe in (("skimage", _skimage_backend), ("mcubes", _mcubes_backend)):
        backend = probe()
        if backend is not None:
            return name, backend
    return None


@torch.no_grad()
def density_mesh(
    volume: RadianceVolume, level: float = 10.0, resolution: int = 128
) -> tuple[Tensor, Tensor, Tensor]:
    """Marching-cubes mesh of the level set ``density = level``.

    Args:
        volume: The field at one instant.
        level: Density level of the surface.
        resolution: Grid vertices per axis.

    Returns:
        ``vertices`` ``(V, 3)`` world positions, ``faces`` ``(F, 3)`` int64 and vertex
        ``colors`` ``(V, 3)`` in ``[0, 1]``.

    Raises:
        ImportError: Neither scikit-image nor PyMCubes is installed.
    """
    found = mesh_backend()
    if found is None:
        raise ImportError(
            "density_mesh needs marching cubes from scikit-image (pip install scikit-image) or "
            "PyMCubes (pip install PyMCubes); neither is installed. density_points works without"
        )
    _, backend = found
    sigma, axes = density_grid(volume, resolution)
    grid = sigma.cpu().numpy()
    if not grid.min() < level < grid.max():
        # Marching cubes raises on a level outside the data range; the surface is just empty.
        empty = torch.zeros(0, 3)
        return empty, torch.zeros(0, 3, dtype=torch.long), empty
    verts, faces = backend(grid, level)
    verts_t = torch.as_tensor(np.ascontiguousarray(verts), dtype=torch.float32)
    lo = torch.stack([a[0] for a in axes]).cpu()
    step = torch.stack([a[1] - a[0] for a in axes]).cpu()
    verts_t = lo + verts_t * step  # grid index space -> world
    colors = _colors_at(volume, verts_t.to(volume.aabb.device)).cpu()
    return verts_t, torch.as_tensor(np.ascontiguousarray(faces), dtype=torch.long), colors


def save_mesh_ply(path: str | Path, vertices: Tensor, faces: Tensor, colors: Tensor) -> Path:
    """Write a vertex-coloured triangle mesh as a binary PLY.

    Args:
        path: Destination (written atomically).
        vertices: ``(V, 3)`` positions.
        faces: ``(F, 3)`` vertex indices.
        colors: ``(V, 3)`` colours in ``[0, 1]``.
    """
    vertex = _vertex_array(vertices, colors, "save_mesh_ply")
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"save_mesh_ply: faces must be (F, 3), got {tuple(faces.shape)}")
    face = np.empty(len(faces), dtype=[("vertex_indices", "i4", (3,))])
    face["vertex_indices"] = faces.cpu().numpy().astype(np.int32)
    path = Path(path)
    with atomic_path(path) as tmp:
        PlyData([PlyElement.describe(vertex, "vertex"), PlyElement.describe(face, "face")]).write(
            str(tmp)
        )
    return path


def export_density(
    volume: RadianceVolume,
    out_dir: str | Path,
    index: int,
    level: float = 10.0,
    resolution: int = 128,
    kind: Literal["points", "mesh", "auto"] = "auto",
) -> Path:
    """Write one frame's surface: a mesh when asked (or, with ``auto``, when marching cubes is
    importable), else the point cloud.

    Args:
        volume: The field at the frame's instant.
        out_dir: Directory of the files.
        index: Frame index used in the file name.
        level: Density level of the surface.
        resolution: Grid vertices per axis.
        kind: ``points``, ``mesh`` (raises without a marching-cubes package) or ``auto``.

    Returns:
        The written file.
    """
    if kind not in ("points", "mesh", "auto"):
        raise ValueError(f"export_density: kind must be 'points', 'mesh' or 'auto', got {kind!r}")
    out_dir = Path(out_dir)
    if kind == "mesh" or (kind == "auto" and mesh_backend() is not None):
        verts, faces, colors = density_mesh(volume, level, resolution)
        return save_mesh_ply(out_dir / mesh_filename(index), verts, faces, colors)
    points, colors = density_points(volume, level, resolution)
    return save_points_ply(out_dir / points_filename(index), points, colors)
