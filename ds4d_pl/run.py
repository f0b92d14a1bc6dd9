"""Load a trained run without a Trainer: its model, scene and configuration.

A run directory (``docs/design.md`` §8) holds ``config.yaml`` (the resolved LightningCLI config,
whose ``model:`` and ``data:`` sections rebuild the system and the data module) and
``checkpoints/last.ckpt``. :func:`load_run` rebuilds both with the same typed parser the CLI uses,
loads the checkpoint strictly, reads the scene and prepares the conditioning features, so the
viewer, ``ds4d render`` and ``ds4d export`` work on the same :class:`LoadedRun`. Every failure is a
:class:`RunLoadError` whose message is one line naming the file and the problem.
"""

from __future__ import annotations

import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from ds4d_pl.compat import UPGRADED_HPARAMS, upgrade_hparams
from ds4d_pl.conditioning.build import feature_cache_dir
from ds4d_pl.data.types import Scene4D
from ds4d_pl.errors import DS4DError
from ds4d_pl.model import DS4DModel


class RunLoadError(DS4DError):
    """A path that is not a loadable run; the message is one line naming the file and the
    problem (``ds4d`` prints it as one line with exit status 2)."""


@dataclass(frozen=True)
class RunFiles:
    """The two files a viewer session reads.

    Attributes:
        config: The run's ``config.yaml``.
        checkpoint: The checkpoint whose weights are shown.
    """

    config: Path
    checkpoint: Path


def find_run_files(
    path: str | Path, checkpoint: str | Path | None = None, config: str | Path | None = None
) -> RunFiles:
    """Locate the config and the checkpoint of a run.

    Args:
        path: A run directory (``config.yaml`` + ``checkpoints/last.ckpt``) or a checkpoint file
            inside one (``RUN/checkpoints/step000250.ckpt``).
        checkpoint: Another checkpoint to show with the run's config.
        config: Another config to rebuild the model from.

    Returns:
        The files.

    Raises:
        RunLoadError: When a file is missing, naming what was looked for.
    """
    path = Path(path)
    if not path.exists():
        raise RunLoadError(f"{path}: no such file or directory")
    if path.is_dir():
        cfg = Path(config) if config is not None else path / "config.yaml"
        if config is None and not cfg.is_file():
            raise RunLoadError(
                f"{path} is not a ds4d run directory: it has no config.yaml (ds4d fit writes one)"
            )
        ckpt = Path(checkpoint) if checkpoint is not None else path / "checkpoints" / "last.ckpt"
        if checkpoint is None and not ckpt.is_file():
            raise RunLoadError(
                f"{path} is a run directory without checkpoints/last.ckpt (did ds4d fit finish "
                "a step?); pass --ckpt"
            )
    else:
        if checkpoint is not None:
            raise RunLoadError(f"{path} is a file: give either a checkpoint path or --ckpt")
        ckpt = path
        candidates = [path.parent / "config.yaml", path.parent.parent / "config.yaml"]
        found = [c for c in candidates if c.is_file()]
        if config is not None:
            cfg = Path(config)
        elif found:
            cfg = found[0]
        else:
            raise RunLoadError(
                f"{path}: no config.yaml next to the checkpoint or in its run directory; "
                "pass --config"
            )
    for name, file in (("config", cfg), ("checkpoint", ckpt)):
        if not file.is_file():
            raise RunLoadError(f"{file}: {name} file not found")
    return RunFiles(config=cfg, checkpoint=ckpt)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def _config_problem(error: BaseException) -> str:
    """One line from a (multi-line) config parser error: the key it names and the most specific
    complaint (e.g. ``Parser key "model.field": Option 'encodingg' is not accepted``)."""
    lines = [line.strip(" -") for line in str(error).splitlines() if line.strip(" -")]
    if len(lines) < 2:
        return _first_line(error)
    generic = ("Does not validate against", "Subtypes:", "Errors:", "Given value", "NoneType")
    details = [line for line in lines[1:] if not any(g in line for g in generic)]
    specific = [line for line in details if not line.startswith("Problem with given")]
    detail = (specific or details or lines[1:])[0]
    return f"{lines[0].rstrip(':')}: {detail}"


def _build(config: Path, saved: dict | None = None) -> tuple[object, object]:
    """The run's system and data module, rebuilt from the ``model:`` and ``data:`` sections of
    its config with the same typed parser LightningCLI uses (so every key is validated).

    ``saved`` are the checkpoint's hyper-parameters. They complete the config's ``field``,
    ``optim`` and ``conditioning`` sections, whose defaults have changed since older runs
    (``field.cond_gate``, ``optim.restart_at_fine``, ``conditioning.exclude_own_frame``): a
    config that says ``null`` or leaves a key out means the values
    the run was trained with, which the checkpoint records; a key the config does give still
    wins. Every section is then read in today's names (:func:`~ds4d_pl.compat.upgrade_hparams`)."""
    from jsonargparse import ArgumentParser

    from ds4d_pl.data.datamodule import DS4DDataModule
    from ds4d_pl.system import DS4DSystem

    try:
        raw = yaml.safe_load(config.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise RunLoadError(f"{config}: not a readable YAML file ({_first_line(e)})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("model"), dict) or "data" not in raw:
        raise RunLoadError(f"{config}: not a ds4d run config (needs 'model:' and 'data:' sections)")
    model = dict(raw["model"])
    trained = upgrade_hparams({k: v for k, v in (saved or {}).items() if k in UPGRADED_HPARAMS})
    for key in ("field", "optim", "conditioning"):
        if isinstance(trained.get(key), dict) and isinstance(model.get(key) or {}, dict):
            model[key] = {**trained[key], **(model.get(key) or {})}
    # Then today's names for what older versions wrote (e.g. a stale ga_scorer under DA).
    model.update(upgrade_hparams({k: model[k] for k in UPGRADED_HPARAMS if k in model}))
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(DS4DSystem, "model")
    parser.add_class_arguments(DS4DDataModule, "data")
    try:
        cfg = parser.parse_object({"model": model, "data": raw["data"] or {}})
        init = parser.instantiate(cfg)
    except Exception as e:  # noqa: BLE001 - any failure to rebuild is reported as one line
        raise RunLoadError(f"{config}: cannot rebuild the run ({_config_problem(e)})") from None
    return init.model, init.data


def _read_checkpoint(files: RunFiles) -> dict:
    """The checkpoint as a dict with a ``state_dict``, or one clear error."""
    try:
        # The checkpoint holds the run's typed hyper-parameters (dataclasses), which the
        # tensor-only unpickler refuses; it is the user's own run file.
        ckpt = torch.load(files.checkpoint, map_location="cpu", weights_only=False)
    except (OSError, EOFError, RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile) as e:
        raise RunLoadError(
            f"{files.checkpoint}: not a readable checkpoint ({_first_line(e)})"
        ) from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise RunLoadError(f"{files.checkpoint}: not a Lightning checkpoint (no state_dict)")
    return ckpt


def _load_weights(system: torch.nn.Module, files: RunFiles, ckpt: dict) -> dict:
    """Copy the checkpoint's weights into ``system``; a checkpoint of another configuration
    (other field sizes, other ablation) is refused, naming the first disagreeing tensor."""
    # Old checkpoints keep the asset's entries outside ``model.``; the system renames them
    # (and restores the state kept outside the state dict) before the weights are copied.
    system.on_load_checkpoint(ckpt)
    try:
        system.load_state_dict(ckpt["state_dict"], strict=True)
    except RuntimeError as e:
        details = [
            line.strip()
            for line in str(e).splitlines()
            if line.strip().startswith(("size mismatch", "Missing key", "Unexpected key"))
        ]
        raise RunLoadError(
            f"{files.checkpoint} does not match the model of {files.config}: "
            f"{details[0] if details else _first_line(e)}"
        ) from None
    return ckpt


def _attach_scene(system: object, scene: Scene4D) -> None:
    """What ``DS4DSystem.setup`` does for a loaded run, without a Trainer: attach the scene and
    derive the conditioner's feature maps (and energy) from the frozen encoder's features of the
    training views (disk-cached by ``ds4d fit``)."""
    system.scene = scene
    if system.model.needs_features:
        # A command on a finished run: a bar while encoding when stderr is a terminal.
        system.model.prepare_conditioning(scene.train, feature_cache_dir(system.cond_cfg), None)


@dataclass
class LoadedRun:
    """A trained run, ready to render.

    Attributes:
        files: The config and checkpoint it was loaded from.
        system: The :class:`~ds4d_pl.system.DS4DSystem` (its configs, in eval mode).
        model: The 4D asset (``system.model``).
        scene: The run's scene (training views, evaluation views when the dataset has them).
    """

    files: RunFiles
    system: object
    model: DS4DModel
    scene: Scene4D


def load_run(
    path: str | Path,
    *,
    checkpoint: str | Path | None = None,
    config: str | Path | None = None,
    device: str = "cpu",
) -> LoadedRun:
    """Load a run directory or checkpoint.

    Args:
        path: Run directory or checkpoint file (see :func:`find_run_files`).
        checkpoint: Another checkpoint to load with the run's config.
        config: Another config to rebuild the model from.
        device: Where the model goes.

    Raises:
        RunLoadError: On a path that is not a run, an unreadable file or a checkpoint that does
            not fit the config; the message is one line.
    """
    files = find_run_files(path, checkpoint, config)
    ckpt = _read_checkpoint(files)
    system, datamodule = _build(files.config, ckpt.get("hyper_parameters"))
    _load_weights(system, files, ckpt)
    try:
        datamodule.setup("test")
    except (OSError, ValueError) as e:
        raise RunLoadError(
            f"{files.config}: cannot load the run's data ({_first_line(e)})"
        ) from None
    system.to(device)
    system.eval()
    _attach_scene(system, datamodule.scene)
    return LoadedRun(files, system, system.model, datamodule.scene)
