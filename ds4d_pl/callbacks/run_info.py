"""What a run used, written into its directory when fitting starts: ``run_info.json`` and the
dynamic-energy maps of DSFD (``diagnostics/``)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import lightning.pytorch as pl
from torch import Tensor

from ds4d_pl.atomic import write_json
from ds4d_pl.conditioning.encoders import encoder_record
from ds4d_pl.data.io import write_rgb
from ds4d_pl.logging import log_images


class RunInfo(pl.Callback):
    """Writes ``run_info.json`` (encoder and its checksum, renderer, supervision, ablation row,
    scene provenance) and, with DSFD on, ``diagnostics/dynamic_energy.png`` (one row of frames
    per training view) and ``diagnostics/dynamic_energy/view_{j}.png``; the per-view maps also go
    to loggers that take images (W&B, TensorBoard)."""

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        root = Path(trainer.default_root_dir)
        write_json(root / "run_info.json", run_info(pl_module))
        energy = pl_module.model.energy
        if energy is not None:
            images = write_energy_maps(energy.cpu(), root / "diagnostics")
            log_images(trainer.logger, "diagnostics/dynamic_energy", images, trainer.global_step)


def run_info(pl_module: pl.LightningModule) -> dict:
    """The record of ``run_info.json``."""
    model, scene = pl_module.model, pl_module.scene
    return {
        "ablation": asdict(pl_module.ablation),
        "init_source": model.init_record,
        "renderer": model.renderer.name,
        "encoder": encoder_record(model.encoder) if model.encoder is not None else None,
        "scene": scene.name,
        "pseudo_views": scene.train.source,
        "pseudo_view_loss": pl_module.pseudo_view_loss.description,
        "sds": asdict(pl_module.sds_cfg) if pl_module.sds_enabled else None,
        "scene_meta": {k: str(v) for k, v in scene.meta.items()},
    }


def write_energy_maps(energy: Tensor, out: Path) -> list:
    """Write ``energy`` ``(V, T, h, w)`` as images; return the per-view images as arrays."""
    v, t, h, w = energy.shape
    # One scale for every view, so views can be compared by brightness.
    energy = energy / energy.max().clamp_min(1e-6)
    rows = energy.permute(0, 2, 1, 3).reshape(v, h, t * w)
    write_rgb(out / "dynamic_energy.png", rows.reshape(v * h, t * w)[..., None].expand(-1, -1, 3))
    images = []
    for j in range(v):
        image = rows[j][..., None].expand(-1, -1, 3)
        write_rgb(out / "dynamic_energy" / f"view_{j}.png", image)
        images.append(image.numpy())
    return images
