"""Checkpointing into ``<run_dir>/checkpoints`` with one checkpoint of record, ``last.ckpt``."""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Literal

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_warn

from ds4d_pl.errors import ConfigError
from ds4d_pl.rundir import record_checkpoint


class RunCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` bound to the run directory's rules (:mod:`ds4d_pl.rundir`).

    * ``last.ckpt`` is always written and always overwritten in place: Lightning's version
      counter (``last-v1.ckpt`` when ``last.ckpt`` exists) would leave the resume target,
      ``ds4d test`` and ``config.yaml`` disagreeing, so it is off;
    * the final step is always saved: training runs on an endless step stream, so no epoch ever
      ends and ``every_n_train_steps`` alone would leave the last steps unsaved;
    * smoke runs (``trainer.fast_dev_run``) save nothing;
    * every save of ``last.ckpt`` is recorded in ``run_info.json`` (path and step).

    A crash (e.g. a non-finite loss) does not reach ``on_train_end``, and the system refuses to
    save a diverged state, so the last good checkpoint is never overwritten by a broken one.

    Args are those of ``ModelCheckpoint``; ``dirpath``, when set, must be the run directory's
    ``checkpoints/`` (checked at set-up) and ``save_last`` true. ``enable_version_counter`` is
    accepted for config files written before this rule and is not used.
    """

    def __init__(
        self,
        dirpath: str | os.PathLike | None = None,
        filename: str | None = None,
        monitor: str | None = None,
        verbose: bool = False,
        save_last: bool | Literal["link"] | None = True,
        save_top_k: int = 1,
        save_on_exception: bool = False,
        save_weights_only: bool = False,
        mode: str = "min",
        auto_insert_metric_name: bool = True,
        every_n_train_steps: int | None = None,
        train_time_interval: timedelta | None = None,
        every_n_epochs: int | None = None,
        save_on_train_epoch_end: bool | None = None,
        enable_version_counter: bool = False,
    ) -> None:
        if save_last is not True:
            raise ConfigError(
                f"checkpoint.save_last={save_last!r}: every run keeps checkpoints/last.ckpt, the "
                "checkpoint that resume and ds4d test read"
            )
        if enable_version_counter:
            # Config files saved before the rule hold the old default (true): say it is not used.
            rank_zero_warn(
                "checkpoint.enable_version_counter=true is not used: a run directory keeps one "
                "last.ckpt, overwritten in place"
            )
        super().__init__(
            dirpath=dirpath,
            filename=filename,
            monitor=monitor,
            verbose=verbose,
            save_last=True,
            save_top_k=save_top_k,
            save_on_exception=save_on_exception,
            save_weights_only=save_weights_only,
            mode=mode,
            auto_insert_metric_name=auto_insert_metric_name,
            every_n_train_steps=every_n_train_steps,
            train_time_interval=train_time_interval,
            every_n_epochs=every_n_epochs,
            save_on_train_epoch_end=save_on_train_epoch_end,
            enable_version_counter=False,
        )

    def check_dirpath(self, run_dir: str | os.PathLike) -> None:
        """Refuse a ``dirpath`` other than ``<run_dir>/checkpoints``.

        Raises:
            ConfigError: Checkpoints would go where resume and ``ds4d test`` do not look.
        """
        expected = os.path.realpath(os.path.join(run_dir, "checkpoints"))
        if self.dirpath is not None and os.path.realpath(self.dirpath) != expected:
            raise ConfigError(
                f"checkpoint.dirpath={self.dirpath}: checkpoints go to the run directory's "
                f"checkpoints/ ({expected}), where resume and ds4d test look; set "
                "--trainer.default_root_dir instead"
            )

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        self.check_dirpath(trainer.default_root_dir)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if (
            trainer.interrupted
            or self._should_skip_saving_checkpoint(trainer)
            or self._last_global_step_saved == trainer.global_step
        ):
            return
        candidates = self._monitor_candidates(trainer)
        self._save_topk_checkpoint(trainer, candidates)
        self._save_last_checkpoint(trainer, candidates)

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        super()._save_checkpoint(trainer, filepath)
        if trainer.is_global_zero and os.path.basename(filepath) == "last.ckpt":
            record_checkpoint(trainer.default_root_dir, filepath, trainer.global_step)
