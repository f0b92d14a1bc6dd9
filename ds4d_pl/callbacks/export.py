"""Asset export of the trained model, written at the end of ``fit``: Gaussian PLYs, or the
density surface of a NeRF."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import lightning.pytorch as pl
import torch

from ds4d_pl.export.density import export_density
from ds4d_pl.export.ply import save_ply


class ExportAssets(pl.Callback):
    """Writes the 4D asset into ``export/``.

    Gaussians: ``canonical.ply`` and ``frame_XXXX.ply`` (standard 3DGS PLY). A NeRF has no
    primitives to write as 3DGS PLY; it gets its density surface at every frame instead, as
    ``density_points_XXXX.ply`` (coloured points where the density crosses ``density_level``)
    or, when marching cubes is importable (scikit-image or PyMCubes) and ``density_kind`` allows
    it, ``density_mesh_XXXX.ply`` (see :mod:`ds4d_pl.export.density`).

    Args:
        enabled: Turn the export off.
        per_frame: Also write the deformed Gaussians of every frame of the clip (a NeRF: its
            surface at every frame; without it only at the middle frame).
        density_level: NeRF only: density (per world unit) of the exported surface.
        density_resolution: NeRF only: grid vertices per axis over the field's box. Each frame
            queries ``density_resolution^3`` points (a conditioned field also runs its
            conditioner on its own grid).
        density_kind: NeRF only: ``auto`` (a mesh when marching cubes is importable, else
            points), ``points`` or ``mesh`` (fails without scikit-image / PyMCubes).
    """

    def __init__(
        self,
        enabled: bool = True,
        per_frame: bool = True,
        density_level: float = 10.0,
        density_resolution: int = 64,
        density_kind: Literal["auto", "points", "mesh"] = "auto",
    ) -> None:
        if density_resolution < 2:
            raise ValueError(f"export.density_resolution must be >= 2, got {density_resolution}")
        if not density_level > 0:
            raise ValueError(f"export.density_level must be > 0, got {density_level}")
        if density_kind not in ("auto", "points", "mesh"):
            raise ValueError(
                f"export.density_kind must be 'auto', 'points' or 'mesh', got {density_kind!r}"
            )
        self.enabled = enabled
        self.per_frame = per_frame
        self.density_level = density_level
        self.density_resolution = density_resolution
        self.density_kind = density_kind

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.enabled or not trainer.is_global_zero:
            return
        self.export(pl_module, Path(trainer.default_root_dir) / "export")

    @torch.no_grad()
    def export(self, pl_module: pl.LightningModule, out: Path) -> list[Path]:
        """Write the asset files into ``out`` and return their paths."""
        model = pl_module.model
        times = pl_module.scene.train.times
        if model.is_nerf:
            frames = range(len(times)) if self.per_frame else [len(times) // 2]
            return [
                export_density(
                    model.at(times[i]),
                    out,
                    i,
                    level=self.density_level,
                    resolution=self.density_resolution,
                    kind=self.density_kind,
                )
                for i in frames
            ]
        paths = [out / "canonical.ply"]
        save_ply(paths[0], model.at(0.0, deform=False))
        if self.per_frame:
            for i, t in enumerate(times):
                paths.append(out / f"frame_{i:04d}.ply")
                save_ply(paths[-1], model.at(t))
        return paths
