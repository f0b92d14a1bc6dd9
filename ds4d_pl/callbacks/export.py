"""Gaussian PLY export of the trained model, written at the end of ``fit``."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import torch

from ds4d_pl.export.ply import save_ply


class ExportAssets(pl.Callback):
    """Writes ``export/canonical.ply`` and ``export/frame_XXXX.ply`` (standard 3DGS PLY).

    Args:
        enabled: Turn the export off.
        per_frame: Also write the deformed Gaussians of every frame of the clip.
    """

    def __init__(self, enabled: bool = True, per_frame: bool = True) -> None:
        self.enabled = enabled
        self.per_frame = per_frame

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.enabled or not trainer.is_global_zero:
            return
        self.export(pl_module, Path(trainer.default_root_dir) / "export")

    @torch.no_grad()
    def export(self, pl_module: pl.LightningModule, out: Path) -> list[Path]:
        """Write the PLY files into ``out`` and return their paths."""
        paths = [out / "canonical.ply"]
        save_ply(paths[0], pl_module.model.at(0.0, deform=False))
        if self.per_frame:
            for i, t in enumerate(pl_module.scene.train.times):
                paths.append(out / f"frame_{i:04d}.ply")
                save_ply(paths[-1], pl_module.model.at(t))
        return paths
