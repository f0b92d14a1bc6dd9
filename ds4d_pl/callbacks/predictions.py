"""``ds4d predict``: the evaluation views of a trained model written as RGBA PNG files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from torch import Tensor

from ds4d_pl.data.io import write_rgba
from ds4d_pl.render.base import RenderOutput


def straight_rgba(out: RenderOutput, rendered_on: Tensor) -> Tensor:
    """``(C, H, W, 4)`` straight (un-premultiplied) colour and alpha of a render.

    Renders are composited over the model background; PNG stores straight alpha, and a reader
    composites ``rgb·α + bg·(1−α)`` again. Writing the composited colour would apply the
    background twice (a render identical to the ground truth would score ~39.5 dB instead of a
    perfect score), so the background's share is removed and the colour divided by alpha.
    Fully transparent pixels get black colour.
    """
    alpha = out.alpha.clamp(0.0, 1.0)
    premultiplied = out.rgb - rendered_on.to(out.rgb) * (1.0 - alpha)
    straight = torch.where(alpha > 0, premultiplied / alpha.clamp_min(1e-12), 0.0)
    return torch.cat([straight.clamp(0.0, 1.0), alpha], dim=-1)


class EvalViewWriter(BasePredictionWriter):
    """Writes ``<run_dir>/predictions/<scene>/eval_{k}/{t}.png``, the layout of the Consistent4D
    ground truth, so predictions and GT compare file by file (``ds4d eval``)."""

    def __init__(self) -> None:
        super().__init__(write_interval="batch")

    def write_on_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        prediction: Any,
        batch_indices: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        frame, rgba = prediction
        root = Path(trainer.default_root_dir) / "predictions" / pl_module.scene.name
        for k, image in enumerate(rgba):
            write_rgba(root / f"eval_{k}" / f"{frame}.png", image)
