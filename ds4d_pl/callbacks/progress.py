"""Progress that says where a run is: the training bar names the stage (coarse / fine) and the
Gaussian count and counts global steps; long loops outside the training loop (videos, exports)
show a bar of their own through :func:`ds4d_pl.progress.progress`."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import TQDMProgressBar

from ds4d_pl.progress import progress

__all__ = ["StageProgressBar", "progress", "shows_progress", "stage_of"]


def stage_of(pl_module: pl.LightningModule, step: int) -> str:
    """``coarse`` or ``fine`` for systems with a stage schedule, else ``train``."""
    is_coarse = getattr(pl_module, "is_coarse", None)
    if is_coarse is None:
        return "train"
    return "coarse" if is_coarse(step) else "fine"


class StageProgressBar(TQDMProgressBar):
    """Lightning's bar over global steps (``1250/2300``, also after a resume) instead of
    "Epoch 0" over an endless stream, with the stage as description and the Gaussian count
    next to the loss."""

    @property
    def train_description(self) -> str:
        return "train"

    def on_train_epoch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        # Not Lightning's version: it labels the bar "Epoch 0" and counts the batches of an
        # epoch, which an endless step stream never ends.
        if self._leave:
            self.train_progress_bar = self.init_train_tqdm()
        bar = self.train_progress_bar
        bar.set_description(stage_of(trainer.lightning_module, trainer.global_step), refresh=False)
        bar.reset(total=trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else None)
        bar.n = bar.initial = trainer.global_step
        bar.refresh()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, i: int
    ) -> None:
        bar = self.train_progress_bar
        n = trainer.global_step
        if bar is not None and self._should_update(n, bar.total):
            bar.n = n
            bar.set_description(stage_of(pl_module, n), refresh=False)
            bar.set_postfix(self.get_metrics(trainer, pl_module))

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        model = getattr(pl_module, "model", None)
        # A NeRF has no Gaussians to count.
        if model is not None and hasattr(model, "gaussians") and not getattr(model, "is_nerf", 0):
            items["gaussians"] = model.gaussians.num_gaussians
        return items


def shows_progress(trainer: pl.Trainer | None) -> bool:
    """Whether ``trainer`` shows progress (its progress bar is on)."""
    return trainer is not None and trainer.progress_bar_callback is not None
