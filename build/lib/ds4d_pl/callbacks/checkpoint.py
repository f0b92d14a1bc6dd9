"""Checkpointing into ``<run_dir>/checkpoints`` that always includes the final step."""

from __future__ import annotations

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint


class RunCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` that also saves when training finishes normally.

    Training runs on an endless step stream, so no epoch ever ends and ``every_n_train_steps``
    alone would leave the last ``max_steps % every_n_train_steps`` steps unsaved: ``ds4d test``
    and ``--ckpt_path last`` would then see an older model than the one fit just evaluated.
    A crash (e.g. a non-finite loss) does not reach ``on_train_end``, so the last good
    checkpoint is never overwritten by a broken state.
    """

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.interrupted or self._last_global_step_saved == trainer.global_step:
            return
        candidates = self._monitor_candidates(trainer)
        self._save_topk_checkpoint(trainer, candidates)
        self._save_last_checkpoint(trainer, candidates)
