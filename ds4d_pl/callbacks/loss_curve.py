"""``loss_curve.png``: the training loss against the step, written into the run directory when
fitting ends (no logger needed), with the start of the fine stage marked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from ds4d_pl.data.io import write_rgb
from ds4d_pl.plots import line_plot


class LossCurve(pl.Callback):
    """Records the total training loss of every step and draws it at the end of ``fit``.

    The history is part of the callback's checkpoint state, so the curve of a resumed run
    covers the whole run.
    """

    def __init__(self) -> None:
        self.steps: list[int] = []
        self.losses: list[float] = []

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, i: int
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor) and loss.numel() == 1:
            # global_step counts the steps taken: this one is step global_step - 1.
            self.steps.append(int(trainer.global_step) - 1)
            self.losses.append(float(loss.detach()))

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero and self.steps:
            self.write(Path(trainer.default_root_dir) / "loss_curve.png", pl_module)

    def write(self, path: Path, pl_module: pl.LightningModule | None = None) -> Path:
        """Draw the recorded curve into ``path`` (PNG)."""
        schedule = getattr(pl_module, "schedule", None)
        markers = []
        if schedule is not None and schedule.fine_steps > 0 and schedule.coarse_steps > 0:
            markers.append((float(schedule.coarse_steps), "fine stage"))
        image = line_plot(
            self.steps,
            self.losses,
            title="training loss (weighted sum of every term)",
            x_label="step",
            y_label="loss (log scale)",
            markers=markers,
        )
        write_rgb(path, torch.from_numpy(image.copy()))
        return path

    def state_dict(self) -> dict[str, Any]:
        return {"steps": list(self.steps), "losses": list(self.losses)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.steps = list(state_dict.get("steps", []))
        self.losses = list(state_dict.get("losses", []))
