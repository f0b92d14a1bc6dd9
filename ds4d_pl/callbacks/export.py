"""Gaussian files of the trained model (PLY, optionally ``.splat``), written at the end of
``fit``."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl

from ds4d_pl.export.assets import ExportFormat, export_frames


class ExportAssets(pl.Callback):
    """Writes ``export/canonical.ply`` and ``export/frame_XXXX.ply`` (standard 3DGS PLY), and the
    same as ``.splat`` (web splat viewers) when asked.

    Args:
        enabled: Turn the export off.
        per_frame: Also write the deformed Gaussians of every frame of the clip.
        formats: File formats: ``ply`` and/or ``splat``.
    """

    def __init__(
        self,
        enabled: bool = True,
        per_frame: bool = True,
        formats: list[ExportFormat] | None = None,
    ) -> None:
        self.enabled = enabled
        self.per_frame = per_frame
        self.formats = list(formats) if formats is not None else ["ply"]

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.enabled or not trainer.is_global_zero:
            return
        self.export(pl_module, Path(trainer.default_root_dir) / "export")

    def export(self, pl_module: pl.LightningModule, out: Path) -> list[Path]:
        """Write the files into ``out`` and return their paths."""
        times = pl_module.scene.train.times
        return export_frames(pl_module.model, times, out, self.formats, self.per_frame)
