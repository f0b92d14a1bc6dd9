"""``ds4d fit | validate | test | predict``: the LightningCLI of DS4D runs.

Configs compose by repeating ``-c`` (later files win) and may interpolate other keys
(``${model.schedule.fine_steps}``, resolved after every file and flag is applied; see
:mod:`ds4d_pl.commands.config_files`); every key is type-checked at parse time, so a typo or a
wrong type stops the run before anything is built, naming the key and the closest valid one.

Run directory (``trainer.default_root_dir``) contract (:mod:`ds4d_pl.rundir`): ``config.yaml``
(every resolved value, defaults included), ``checkpoints/`` (written atomically; ``last.ckpt``
is the checkpoint of record), ``run_info.json``, ``renders/*.mp4``, ``export/*.ply``,
``loss_curve.png`` and ``metrics.json`` after testing. One run per directory: a new fit into a
directory holding a run is refused unless it resumes it (``--ckpt_path last``) or
``--overwrite`` replaces it; a lock stops two fits sharing it; a smoke run
(``trainer.fast_dev_run``) writes nothing into it.

A run started from a checkpoint takes the checkpoint's model; keys given that the checkpoint
fixes must agree with it, evaluation keys (and, when resuming, training keys) given win
(:mod:`ds4d_pl.resume`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
import yaml
from jsonargparse import ActionYesNo
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import CSVLogger, WandbLogger

from ds4d_pl.atomic import atomic_path, remove_orphans
from ds4d_pl.callbacks.checkpoint import RunCheckpoint
from ds4d_pl.callbacks.export import ExportAssets
from ds4d_pl.callbacks.loss_curve import LossCurve
from ds4d_pl.callbacks.progress import StageProgressBar
from ds4d_pl.callbacks.render_videos import RenderVideos
from ds4d_pl.callbacks.wandb_media import log_run_artifact
from ds4d_pl.commands.config_files import check_config_files, register_resolvers
from ds4d_pl.commands.parse_errors import DS4DArgumentParser
from ds4d_pl.commands.resolved import complete, group_types
from ds4d_pl.compat import upgrade_hparams
from ds4d_pl.config import StageSchedule
from ds4d_pl.data.datamodule import DS4DDataModule
from ds4d_pl.data.parsers.synthetic import SyntheticConfig, check_cost, synthetic_cost
from ds4d_pl.errors import CheckpointError, ConfigError, DataError, DataWarning, DS4DError
from ds4d_pl.resume import check_same_data, reconcile
from ds4d_pl.rundir import RunLock, check_new_fit, holds_run, last_checkpoint
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


def _saved_config(parser: LightningArgumentParser, config: Any) -> str:
    """The config as ``config.yaml`` holds it: every value, and nothing that ties a rerun to
    this directory's state (the checkpoint resumed from, ``--overwrite``)."""
    config = config.clone()
    config["ckpt_path"] = None
    if "overwrite" in config:
        # A fit-only flag: without it the file also serves `ds4d test -c config.yaml`.
        del config["overwrite"]
    return parser.dump(config, skip_none=False)


class RunDirConfig(SaveConfigCallback):
    """Saves the resolved config as ``<default_root_dir>/config.yaml`` when fitting starts, and
    sends all of it (trainer, model, data, callbacks) to the W&B config."""

    def __init__(self, parser: LightningArgumentParser, config: Any, **kwargs: Any) -> None:
        kwargs["save_to_log_dir"] = False
        super().__init__(parser, config, **kwargs)

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        text = _saved_config(self.parser, self.config)
        with atomic_path(Path(trainer.default_root_dir) / self.config_filename) as tmp:
            tmp.write_text(text)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_hyperparams(yaml.safe_load(text))


def _rank_zero_process() -> bool:
    """Whether this process is the launching one (not a DDP child re-running the command)."""
    return all(int(os.environ.get(k) or 0) == 0 for k in ("LOCAL_RANK", "NODE_RANK", "RANK"))


class DS4DCLI(LightningCLI):
    """LightningCLI wired for DS4D runs (see the module docstring for the run directory)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._lock: RunLock | None = None
        self._scratch: str | None = None
        self._resume_from_scratch = False
        self._ckpt: dict[str, Any] | None = None
        try:
            super().__init__(*args, **kwargs)
        finally:
            if self._lock is not None:
                self._lock.release()
            if self._scratch is not None:
                shutil.rmtree(self._scratch, ignore_errors=True)

    # ------------------------------------------------------------------ the parser
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
                "checkpoint.every_n_train_steps": 250,
                "checkpoint.save_top_k": 1,
                "checkpoint.filename": "step{step:06d}",
                "checkpoint.auto_insert_metric_name": False,
            }
        )
        parser.add_lightning_class_args(RenderVideos, "videos")
        parser.add_lightning_class_args(ExportAssets, "export")
        # The model owns its optimiser (per-group Adam and its schedule, model.optim.*), so
        # LightningCLI's --optimizer / --lr_scheduler are not offered. These hidden keys only let
        # config files saved before (which hold `optimizer: null`) parse; a value is refused.
        for key in ("optimizer", "lr_scheduler"):
            parser.add_argument(f"--{key}", type=Any, default=None, help=argparse.SUPPRESS)

    def _prepare_subcommand_parser(
        self, klass: type, subcommand: str, **kwargs: Any
    ) -> LightningArgumentParser:
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        if subcommand == "fit":
            parser.add_argument(
                "--overwrite",
                action=ActionYesNo,
                default=False,
                help="Replace the run held in trainer.default_root_dir (its checkpoints, config, "
                "renders, exports, metrics and logs are deleted first). Without it, a fit into a "
                "directory holding a run is refused unless it resumes it (--ckpt_path last).",
            )
        return parser

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        super().parse_arguments(parser, args)
        self._complete_groups()
        sub = self.config.get("subcommand")
        if sub and self.config[sub].trainer.default_root_dir is None:
            # Lightning's own default, made explicit: the run directory is named everywhere.
            self.config[sub].trainer.default_root_dir = os.getcwd()

    def _complete_groups(self) -> None:
        """Give every ``model``/``data`` group left ``null`` its default values, so the saved
        config, the W&B config and the checkpoint comparison see every value."""
        sub = self.config.get("subcommand")
        cfg = self.config[sub] if sub else self.config
        patch: dict[str, Any] = {}
        for section, cls in (("model", self._model_class), ("data", self._datamodule_class)):
            current = cfg.get(section)
            current = current.as_dict() if current is not None else {}
            filled = complete(current, cls)
            missing = {
                k: filled[k]
                for k in group_types(cls)
                if current.get(k) is None and filled.get(k) is not None
            }
            if missing:
                patch[section] = missing
        if patch:
            self.config = self.parser.parse_object({sub: patch} if sub else patch, self.config)

    def _note(self, message: str) -> None:
        if _rank_zero_process():
            print(f"ds4d {self.config.get('subcommand')}: {message}", file=sys.stderr, flush=True)

    # ------------------------------------------------------------- the checkpoint
    def _resolve_ckpt(self, sub: str, cfg: Any) -> str | None:
        """The checkpoint a command starts from: ``--ckpt_path last`` is the run directory's
        ``last.ckpt`` (never Lightning's newest ``last*``); evaluation commands default to it."""
        run_dir = Path(cfg.trainer.default_root_dir)
        given = cfg.get("ckpt_path")
        last = last_checkpoint(run_dir)
        if sub == "fit" and given is None:
            return None
        if given == "last" or (sub != "fit" and given is None):
            if last.is_file():
                return str(last)
            others = [f for f in holds_run(run_dir) if f.endswith(".ckpt")]
            if sub != "fit":
                raise CheckpointError(
                    f"{last}: no checkpoint to evaluate; pass --ckpt_path FILE or point "
                    "--trainer.default_root_dir at a finished run"
                )
            if others:
                raise CheckpointError(
                    f"{last} is missing but {run_dir} holds {', '.join(others)}; resume one of "
                    "them with --ckpt_path FILE"
                )
            self._note(f"--ckpt_path last: no checkpoint in {last.parent}; starting from scratch")
            self._resume_from_scratch = True
            return None
        if not Path(given).is_file():
            raise CheckpointError(f"{given}: no such checkpoint file")
        return str(given)

    def _parse_ckpt_path(self) -> None:
        """Resolve the checkpoint and merge its hyper-parameters with the given config
        (:func:`ds4d_pl.resume.reconcile`); older checkpoints' names are upgraded first."""
        sub = self.config.get("subcommand")
        if not sub:
            return
        cfg = self.config[sub]
        path = self._resolve_ckpt(sub, cfg)
        cfg["ckpt_path"] = path
        if path is None:
            return
        try:
            checkpoint = torch.load(path, weights_only=True, map_location="cpu")
        except Exception as err:  # noqa: BLE001 - any unreadable file is the same user error
            first = next((ln for ln in str(err).splitlines() if ln.strip()), "")[:160]
            raise CheckpointError(
                f"{path}: not a readable checkpoint ({type(err).__name__}: {first})"
            ) from err
        if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
            raise CheckpointError(f"{path}: not a Lightning checkpoint (no state_dict)")
        self._ckpt = {
            "path": path,
            "global_step": int(checkpoint.get("global_step", 0)),
            "ds4d": checkpoint.get("ds4d") or {},
        }
        hparams = dict(checkpoint.get("hyper_parameters") or {})
        hparams.pop("_instantiator", None)
        if not hparams:
            return
        cls = self._model_class
        # Config files saved by earlier versions carry the names and defaults checkpoints of that
        # time carry: both are brought to today's before they are compared.
        given = upgrade_hparams(cfg.model.as_dict())
        saved = complete(upgrade_hparams(hparams), cls)
        saved = {k: v for k, v in saved.items() if k in given}
        defaults = self._parser(sub).get_defaults().get("model")
        defaults = complete(defaults.as_dict() if defaults is not None else {}, cls)
        result = reconcile(given, defaults, saved, fitting=sub == "fit")
        for keys, what in (
            (result.used, "over the checkpoint's values, using"),
            (result.unused, f"not used by {sub} (training keys; the checkpoint's are kept):"),
        ):
            if keys:
                shown = ", ".join(
                    f"model.{k}={g!r} (checkpoint: {c!r})" for k, (g, c) in keys.items()
                )
                self._note(f"{what} {shown}")
        self.config = self.parser.parse_object({sub: {"model": result.model}}, self.config)

    # ------------------------------------------------------------- before building
    def before_instantiate_classes(self) -> None:
        sub = str(self.subcommand)
        cfg = self.config[sub]
        for key in ("optimizer", "lr_scheduler"):
            if cfg.get(key) is not None:
                raise ConfigError(
                    f"--{key}: not offered; the model builds its own optimiser (per-group Adam "
                    "with its learning-rate schedule): set model.optim.* instead"
                )
        if cfg.data.dataset == "synthetic" and cfg.data.root is not None:
            raise ConfigError(
                f"data.root={cfg.data.root!r} is set but data.dataset is 'synthetic' (embedded, "
                "reads no files); set data.dataset to the format of the files, or drop data.root"
            )
        if cfg.data.dataset == "synthetic":
            synthetic = SyntheticConfig(**cfg.data.synthetic.as_dict())
            try:
                check_cost(synthetic_cost(synthetic), "data.synthetic")
            except ValueError as err:
                raise ConfigError(
                    f"{err} (ds4d synth --force writes it once; read it with data.dataset "
                    "consistent4d)"
                ) from None
        # One source of truth for the run length: the stage schedule, unless the user (or a
        # smoke test) caps it explicitly with trainer.max_steps.
        if cfg.trainer.max_steps in (None, -1):
            schedule = StageSchedule(**cfg.model.schedule.as_dict())
            cfg.trainer.max_steps = schedule.total_steps
        if sub == "fit":
            self._check_steps(cfg)
            init_path = cfg.model.init.path
            if init_path is not None and self._ckpt is None and not Path(init_path).is_file():
                raise ConfigError(f"model.init.path={init_path!r}: no such point or mesh file")
            if cfg.trainer.fast_dev_run:
                self._scratch = tempfile.mkdtemp(prefix="ds4d-smoke-")
                self._note(
                    f"smoke run (trainer.fast_dev_run): nothing is written to "
                    f"{cfg.trainer.default_root_dir}; scratch outputs go to {self._scratch}"
                )
                cfg.trainer.default_root_dir = self._scratch
        self._logger_dirs(cfg)

    def _check_steps(self, cfg: Any) -> None:
        """Nothing trained, nothing scored: refuse a fit that would take no step."""
        if cfg.trainer.fast_dev_run:
            return
        max_steps = int(cfg.trainer.max_steps)
        if max_steps == 0:
            raise ConfigError(
                "trainer.max_steps=0 (or a schedule of 0 coarse + 0 fine steps): nothing would be "
                "trained, yet an untrained model would be scored and exported as a run; give a "
                "positive number of steps"
            )
        if self._ckpt is not None and max_steps > 0 and self._ckpt["global_step"] >= max_steps:
            raise CheckpointError(
                f"{self._ckpt['path']} is at step {self._ckpt['global_step']} and "
                f"trainer.max_steps={max_steps}: nothing left to train. Raise --trainer.max_steps "
                "(or the schedule) to continue, or score it with ds4d test"
            )

    def _claim_run_dir(self, cfg: Any) -> None:
        """Lock the run directory, clear temp files of killed writes, apply the one-run rule."""
        run_dir = Path(cfg.trainer.default_root_dir)
        self._lock = RunLock(run_dir)
        note = self._lock.acquire()
        if note:
            self._note(note)
        removed = remove_orphans(run_dir)
        if removed:
            self._note(f"removed {len(removed)} temporary file(s) of an interrupted write")
        overwrite = bool(cfg.get("overwrite")) or self._resume_from_scratch
        cleared = check_new_fit(run_dir, cfg.get("ckpt_path"), overwrite)
        if cleared:
            names = ", ".join(p.name for p in cleared)
            self._note(f"replacing the previous run in {run_dir} (removed {names})")

    def _logger_dirs(self, cfg: Any) -> None:
        """Loggers write inside the run directory unless told otherwise (W&B's ``wandb/``)."""
        loggers = cfg.trainer.logger
        for logger in loggers if isinstance(loggers, list) else [loggers]:
            init = getattr(logger, "init_args", None)
            if init is not None and "save_dir" in init and init.save_dir in (None, "", "."):
                init.save_dir = cfg.trainer.default_root_dir

    def instantiate_classes(self) -> None:
        # Constructors validate their config (learning rates, background, dataset options):
        # their ValueErrors are config errors, shown in one line.
        try:
            super().instantiate_classes()
        except DS4DError:
            raise
        except (ValueError, TypeError) as err:
            raise ConfigError(str(err)) from err

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Callback]) -> Trainer:
        given = list(config.get("callbacks") or [])
        if config.get("enable_progress_bar") is not False and not any(
            isinstance(cb, ProgressBar) for cb in given
        ):
            callbacks.append(StageProgressBar())
        if self.subcommand == "fit":
            callbacks.append(LossCurve())
        return super()._instantiate_trainer(config, callbacks)

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        for cb in trainer.checkpoint_callbacks:
            if isinstance(cb, RunCheckpoint):
                cb.check_dirpath(trainer.default_root_dir)  # before anything is written
            if isinstance(cb, ModelCheckpoint) and cb.dirpath is None:
                cb.dirpath = os.path.realpath(os.path.join(trainer.default_root_dir, "checkpoints"))
        if any(isinstance(lg, WandbLogger) for lg in trainer.loggers) and not any(
            isinstance(lg, CSVLogger) for lg in trainer.loggers
        ):
            # W&B keeps its copy online; the CSV log stays in the run directory with the rest.
            trainer.loggers = [*trainer.loggers, CSVLogger(trainer.default_root_dir, name="logs")]
        return trainer

    # ------------------------------------------------------------------ running
    def _load_data(self, stage: str) -> None:
        """Load (and validate) the dataset before anything runs; reader errors name the file
        and are shown in one line."""
        try:
            self.datamodule.setup(stage)
        except DS4DError:
            raise
        except (ValueError, OSError) as err:
            raise DataError(str(err)) from err

    def _check_scene(self) -> None:
        """Warn about data that loads but is probably not what was meant."""
        scene, data = self.datamodule.scene, self.config[self.subcommand].data
        frames = scene.train.num_frames
        if frames == 1:
            warnings.warn(
                f"scene {scene.name!r} has a single frame: nothing moves, so the deformation "
                "field learns nothing (this is a static 3D fit)",
                DataWarning,
                stacklevel=2,
            )
        options = data.get(data.dataset)
        for key in ("max_frames", "num_frames"):
            asked = (
                options.get(key) if options is not None and data.dataset != "synthetic" else None
            )
            if asked is not None and asked > frames:
                warnings.warn(
                    f"data.{data.dataset}.{key}={asked} but scene {scene.name!r} has only "
                    f"{frames} frames: using {frames}",
                    DataWarning,
                    stacklevel=2,
                )

    def before_fit(self) -> None:
        # Everything that can be refused is checked before the run directory is claimed, so a
        # bad config or dataset never costs the run that --overwrite would replace.
        self._load_data("fit")
        self._check_scene()
        if self._ckpt is not None:
            check_same_data(self._ckpt, self.datamodule.scene, self._ckpt["path"])
        if self._scratch is None and _rank_zero_process():
            self._claim_run_dir(self.config[self.subcommand])

    def before_test(self) -> None:
        self._load_data("test")

    def before_validate(self) -> None:
        self._load_data("validate")

    def before_predict(self) -> None:
        self._load_data("predict")

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
            log_run_artifact(self.trainer.loggers, self.trainer.default_root_dir)
            if self._scratch is None:
                print(f"run directory: {os.path.realpath(self.trainer.default_root_dir)}")


def run(argv: list[str], debug: bool = False) -> None:
    """Run a Lightning subcommand (``fit``, ``validate``, ``test``, ``predict``).

    Args:
        argv: The command line after ``ds4d`` (the subcommand first).
        debug: Show the parser's full messages (and let errors keep their tracebacks).

    Raises:
        DS4DError: A config, data, checkpoint or run-directory error (``ds4d`` prints it in
            one line).
    """
    # Lightning warns that manual optimisation checkpoints hold the post-step state; that is
    # exactly what a resume needs here.
    warnings.filterwarnings("ignore", message=".*manual optimization and every_n_train_steps.*")
    # Upstream deprecation noise that a user can do nothing about.
    warnings.filterwarnings("ignore", message=".*isinstance.treespec, LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*tensorboardX.* has been removed as a dependency.*")
    # The run directory's rules decide what may be in checkpoints/, not this warning.
    warnings.filterwarnings("ignore", message=".*Checkpoint directory .* exists and is not empty.*")
    warnings.filterwarnings("ignore", message=".*The dirpath has changed from.*")
    check_config_files(argv)
    register_resolvers()
    import jsonargparse

    # Presets write ${model.schedule.fine_steps} from the config's root, not from the
    # subcommand's node that jsonargparse resolves them in.
    jsonargparse.set_parsing_settings(omegaconf_absolute_to_relative_paths=True)
    DS4DArgumentParser.debug = debug
    DS4DArgumentParser.command = argv[0] if argv else ""
    mode = {"parser_mode": "omegaconf+"}
    DS4DCLI(
        DS4DSystem,
        DS4DDataModule,
        save_config_callback=RunDirConfig,
        save_config_kwargs={"overwrite": True},
        parser_class=DS4DArgumentParser,
        parser_kwargs={
            **mode,
            "prog": "ds4d",
            "description": "DS4D: video-to-4D Gaussians (fit|validate|test|predict)",
            **{sub: dict(mode) for sub in ("fit", "validate", "test", "predict")},
        },
        auto_configure_optimizers=False,
        args=argv,
    )
