"""Asset export of the trained model, written at the end of ``fit``: Gaussian files (PLY,
optionally ``.splat``), or the density surface of a NeRF."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import lightning.pytorch as pl

from ds4d_pl.callbacks.progress import shows_progress
from ds4d_pl.export.assets import ExportFormat, export_density_frames, export_frames


class ExportAssets(pl.Callback):
    """Writes the 4D asset into ``export/``.

    Gaussians: ``canonical.ply`` and ``frame_XXXX.ply`` (standard 3DGS PLY), and the same as
    ``.splat`` (web splat viewers) when asked. A NeRF has no primitives to write as 3DGS PLY; it
    gets its density surface at every frame instead, as ``density_points_XXXX.ply`` (coloured
    points where the density crosses ``density_level``) or, when marching cubes is importable
    (scikit-image or PyMCubes) and ``density_kind`` allows it, ``density_mesh_XXXX.ply`` (see
    :mod:`ds4d_pl.export.density`).

    Args:
        enabled: Turn the export off.
        per_frame: Also write the deformed Gaussians of every frame of the clip (a NeRF: its
            surface at every frame; without it only at the middle frame).
        formats: Gaussian file formats: ``ply`` and/or ``splat``.
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
        formats: list[ExportFormat] | None = None,
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
        self.formats = list(formats) if formats is not None else ["ply"]
        self.density_level = density_level
        self.density_resolution = density_resolution
        self.density_kind = density_kind

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.enabled or not trainer.is_global_zero:
            return
        self.export(pl_module, Path(trainer.default_root_dir) / "export", shows_progress(trainer))

    def export(self, pl_module: pl.LightningModule, out: Path, show: bool = False) -> list[Path]:
        """Write the asset files into ``out`` and return their paths (with a progress bar when
        ``show``)."""
        model = pl_module.model
        times = pl_module.scene.train.times
        if model.is_nerf:
            return export_density_frames(
                model,
                times,
                out,
                per_frame=self.per_frame,
                level=self.density_level,
                resolution=self.density_resolution,
                kind=self.density_kind,
                show_progress=show,
            )
        return export_frames(model, times, out, self.formats, self.per_frame, show)
