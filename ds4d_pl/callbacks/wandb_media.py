"""What a W&B run receives besides scalars and the config: the run directory's results (PLY and
.splat exports, ``metrics.json``/``metrics.md``, ``config.yaml``, ``run_info.json``, the loss
curve) as one artifact, so a run on W&B can be downloaded and rescored without the machine that
made it."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

#: Files of a run directory put into the artifact (globs, relative to the run directory).
ARTIFACT_FILES = (
    "config.yaml",
    "run_info.json",
    "metrics.json",
    "metrics.md",
    "loss_curve.png",
    "export/*.ply",
    "export/*.splat",
)


def run_files(run_dir: str | os.PathLike) -> list[Path]:
    """The files of :data:`ARTIFACT_FILES` present in ``run_dir``."""
    root = Path(run_dir)
    return sorted({p for pattern in ARTIFACT_FILES for p in root.glob(pattern) if p.is_file()})


def log_run_artifact(loggers: Iterable[object], run_dir: str | os.PathLike) -> list[str]:
    """Log the run directory's results as a ``ds4d-run`` artifact to every W&B logger.

    Args:
        loggers: The trainer's loggers (others than W&B are skipped).
        run_dir: The run directory.

    Returns:
        The names of the logged artifacts.
    """
    from lightning.pytorch.loggers import WandbLogger

    files = run_files(run_dir)
    names = []
    for logger in loggers:
        if not isinstance(logger, WandbLogger) or not files:
            continue
        import wandb

        run = logger.experiment
        artifact = wandb.Artifact(name=f"ds4d-run-{run.id}", type="ds4d-run")
        for path in files:
            artifact.add_file(str(path), name=path.relative_to(run_dir).as_posix())
        run.log_artifact(artifact)
        names.append(artifact.name)
    return names
