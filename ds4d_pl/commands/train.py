"""``ds4d fit | validate | test | predict``: the LightningCLI of DS4D runs.

Configs compose by repeating ``-c`` (later files win); every key is type-checked at parse time,
so a typo or a wrong type stops the run before anything is built, naming the key.

Run directory (``trainer.default_root_dir``) contract: ``config.yaml``, ``checkpoints/`` (written
atomically, ``last.ckpt`` for ``--ckpt_path last``), ``renders/*.mp4``, ``export/*.ply`` and
``metrics.json`` after testing.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback

from ds4d_pl.atomic import atomic_path
from ds4d_pl.callbacks.checkpoint import RunCheckpoint
from ds4d_pl.callbacks.export import ExportAssets
from ds4d_pl.callbacks.render_videos import RenderVideos
from ds4d_pl.compat import upgrade_hparams
from ds4d_pl.config import StageSchedule
from ds4d_pl.data.datamodule import DS4DDataModule
from ds4d_pl.system import DS4DSystem


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes checkpoints to a sibling temp file and renames it into place.

    Lightning's default writes through an fsspec transaction whose temp file may live on another
    filesystem, so the final move is a copy that a kill can interrupt; a rename in the same
    directory cannot leave a truncated checkpoint behind.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None
    ) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO does not take storage_options")
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)


class RunDirConfig(SaveConfigCallback):
    """Saves the resolved config as ``<default_root_dir>/config.yaml`` when fitting starts."""

    def __init__(self, parser: LightningArgumentParser, config: Any, **kwargs: Any) -> None:
        kwargs["save_to_log_dir"] = False
        super().__init__(parser, config, **kwargs)

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        text = self.parser.dump(self.config, skip_none=False)
        with atomic_path(Path(trainer.default_root_dir) / self.config_filename) as tmp:
            tmp.write_text(text)


class DS4DCLI(LightningCLI):
    """LightningCLI wired for DS4D runs (see the module docstring for the run directory)."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=True,
            help="After fit, evaluate (evaluation views when the dataset has them, held-out and "
            "training frames, no-reference scores) and write metrics.json.",
        )
        parser.add_lightning_class_args(RunCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.save_last": True,
                "checkpoint.every_n_train_steps": 250,
                "checkpoint.save_top_k": 1,
                "checkpoint.filename": "step{step:06d}",
                "checkpoint.auto_insert_metric_name": False,
            }
        )
        parser.add_lightning_class_args(RenderVideos, "videos")
        parser.add_lightning_class_args(ExportAssets, "export")

    def before_instantiate_classes(self) -> None:
        cfg = self.config.get(str(self.subcommand), self.config)
        # One source of truth for the run length: the stage schedule, unless the user (or a
        # smoke test) caps it explicitly with trainer.max_steps.
        if cfg.trainer.max_steps in (None, -1):
            sched = cfg.model.schedule
            schedule = StageSchedule(**sched.as_dict()) if sched else StageSchedule()
            cfg.trainer.max_steps = schedule.total_steps

    def _parse_ckpt_path(self) -> None:
        """LightningCLI applies a checkpoint's hyper-parameters to the config; older
        checkpoints store some under earlier names, so bring them to today's first."""
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if not ckpt_path or not Path(ckpt_path).is_file():
            return
        checkpoint = torch.load(ckpt_path, weights_only=True, map_location="cpu")
        hparams = checkpoint.get("hyper_parameters", {})
        hparams.pop("_instantiator", None)
        if hparams:
            self.config = self.parser.parse_object(
                {subcommand: {"model": upgrade_hparams(hparams)}}, self.config
            )

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        for cb in trainer.checkpoint_callbacks:
            if isinstance(cb, ModelCheckpoint) and cb.dirpath is None:
                cb.dirpath = os.path.realpath(os.path.join(trainer.default_root_dir, "checkpoints"))
        return trainer

    def _resolve_eval_ckpt(self) -> None:
        """``test``/``validate``/``predict`` without a checkpoint would score an untrained model:
        default to the run's last checkpoint and fail loudly when there is none."""
        cfg = self.config_init[self.subcommand]
        ckpt = cfg.get("ckpt_path")
        if ckpt in (None, "last"):
            last = Path(self.trainer.default_root_dir) / "checkpoints" / "last.ckpt"
            if not last.is_file():
                raise FileNotFoundError(
                    f"{last}: no checkpoint to evaluate; pass --ckpt_path or point "
                    "--trainer.default_root_dir at a finished run"
                )
            cfg["ckpt_path"] = str(last)

    def before_test(self) -> None:
        self._resolve_eval_ckpt()

    def before_validate(self) -> None:
        self._resolve_eval_ckpt()

    def before_predict(self) -> None:
        self._resolve_eval_ckpt()

    def after_fit(self) -> None:
        cfg = self.config_init[self.subcommand]
        if self.datamodule.scene is None:
            # ddp_spawn: the scene was loaded in the worker processes, not in this one.
            self.datamodule.setup("test")
        # Every scene can be tested: without evaluation views (a user's own video) the report
        # holds the held-out frames, the input reconstruction and the no-reference scores.
        if cfg.get("test_after_fit") and not self.trainer.interrupted:
            self.trainer.test(self.model, datamodule=self.datamodule, verbose=False)
        if self.trainer.is_global_zero:
            print(f"run directory: {os.path.realpath(self.trainer.default_root_dir)}")


def run(argv: list[str]) -> None:
    """Run a Lightning subcommand (``fit``, ``validate``, ``test``, ``predict``)."""
    # Lightning warns that manual optimisation checkpoints hold the post-step state; that is
    # exactly what a resume needs here.
    warnings.filterwarnings("ignore", message=".*manual optimization and every_n_train_steps.*")
    # Upstream deprecation noise that a user can do nothing about.
    warnings.filterwarnings("ignore", message=".*isinstance.treespec, LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*tensorboardX.* has been removed as a dependency.*")
    DS4DCLI(
        DS4DSystem,
        DS4DDataModule,
        save_config_callback=RunDirConfig,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"description": "DS4D: video-to-4D Gaussians (fit|validate|test|predict)"},
        args=argv,
    )
