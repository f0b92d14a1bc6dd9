"""The run directory's rules: one run per directory, one writer at a time, one checkpoint of
record.

* A new ``ds4d fit`` into a directory that already holds a run (a ``config.yaml`` or a
  checkpoint) is refused, unless it resumes that run (``--ckpt_path last``, or a checkpoint
  inside the directory's ``checkpoints/``) or ``--overwrite`` asks to replace it, which first
  deletes what the package wrote there (:data:`OUTPUTS`) and nothing else.
* A lock file (:data:`LOCK_NAME`) holds the directory while a fit runs; a second fit into it is
  refused, naming the process. The lock of a process that no longer runs is taken over.
* ``checkpoints/last.ckpt`` is the checkpoint of record: resume, ``ds4d test`` and ``predict``
  read it, and ``run_info.json`` names it with its step (:func:`record_checkpoint`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from ds4d_pl.atomic import write_json
from ds4d_pl.errors import RunDirectoryError

#: Everything the package writes into a run directory; ``--overwrite`` deletes these only.
OUTPUTS = (
    "config.yaml",
    "checkpoints",
    "run_info.json",
    "metrics.json",
    "metrics.md",
    "loss_curve.png",
    "diagnostics",
    "renders",
    "export",
    "predictions",
    "logs",
    "lightning_logs",
    "wandb",
)
#: The lock file of a running fit (pid, host, start time, as JSON).
LOCK_NAME = ".ds4d.lock"
#: The checkpoint of record, relative to the run directory.
LAST = Path("checkpoints") / "last.ckpt"


def last_checkpoint(run_dir: str | os.PathLike) -> Path:
    """``<run_dir>/checkpoints/last.ckpt`` (whether or not it exists)."""
    return Path(run_dir) / LAST


def holds_run(run_dir: str | os.PathLike) -> list[str]:
    """What in ``run_dir`` shows that a run was written there (empty: a fresh directory)."""
    root = Path(run_dir)
    found = ["config.yaml"] if (root / "config.yaml").is_file() else []
    ckpts = root / "checkpoints"
    if ckpts.is_dir():
        # Dot files are temp files of interrupted writes (removed at the next start), not runs.
        found += [f"checkpoints/{p.name}" for p in sorted(ckpts.glob("[!.]*.ckpt"))]
    return found


def inside(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """Whether ``path`` lies inside ``folder`` (symlinks resolved)."""
    try:
        Path(path).resolve().relative_to(Path(folder).resolve())
    except ValueError:
        return False
    return True


def check_new_fit(run_dir: str | os.PathLike, ckpt_path: str | None, overwrite: bool) -> list[Path]:
    """Apply the one-run-per-directory rule before a fit writes anything.

    Args:
        run_dir: ``trainer.default_root_dir``.
        ckpt_path: The checkpoint the fit starts from (already resolved), or ``None``.
        overwrite: ``--overwrite``: replace the run held in ``run_dir``.

    Returns:
        What ``--overwrite`` deleted.

    Raises:
        RunDirectoryError: ``run_dir`` holds a run that this fit neither resumes nor overwrites.
    """
    found = holds_run(run_dir)
    resumes_own = ckpt_path is not None and inside(ckpt_path, Path(run_dir) / "checkpoints")
    if not found or resumes_own:
        if overwrite and resumes_own:
            raise RunDirectoryError(
                f"--overwrite would delete {ckpt_path}, the checkpoint this fit resumes from; "
                "drop one of the two"
            )
        return []
    if overwrite:
        return clear_outputs(run_dir)
    shown = ", ".join(found[:3]) + (" ..." if len(found) > 3 else "")
    raise RunDirectoryError(
        f"{run_dir} already holds a run ({shown}); resume it with --ckpt_path last, replace "
        "it with --overwrite, or choose another --trainer.default_root_dir"
    )


def clear_outputs(run_dir: str | os.PathLike) -> list[Path]:
    """Delete what the package writes in ``run_dir`` (:data:`OUTPUTS`), nothing else."""
    removed = []
    for name in OUTPUTS:
        p = Path(run_dir) / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()
        else:
            continue
        removed.append(p)
    return removed


@dataclass
class RunLock:
    """The lock file of a fit writing into ``run_dir``.

    Args:
        run_dir: The run directory.
        command: What holds it (shown to a second fit).
    """

    run_dir: Path
    command: str = "ds4d fit"
    held: bool = False

    @property
    def path(self) -> Path:
        return Path(self.run_dir) / LOCK_NAME

    def acquire(self) -> str | None:
        """Take the lock.

        Returns:
            A note to show when a stale lock (of a process that no longer runs) was taken
            over, else ``None``.

        Raises:
            RunDirectoryError: A live process (or one on another host) holds it.
        """
        Path(self.run_dir).mkdir(parents=True, exist_ok=True)
        note = None
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
            except FileExistsError:
                owner = self._owner()
                if owner is not None and _alive(owner):
                    raise RunDirectoryError(
                        f"{self.run_dir} is in use by {owner.get('command', 'ds4d')} (pid "
                        f"{owner.get('pid')} on {owner.get('host')}, since "
                        f"{owner.get('started', '?')}); wait for it to finish or choose another "
                        f"--trainer.default_root_dir (if no such process runs, delete {self.path})"
                    ) from None
                pid = owner.get("pid") if owner else "?"
                note = f"taking over the stale lock of pid {pid} (no longer running) in {self.path}"
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
                continue
            with os.fdopen(fd, "w") as fh:
                json.dump(
                    {
                        "pid": os.getpid(),
                        "host": socket.gethostname(),
                        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                        "command": self.command,
                    },
                    fh,
                )
            self.held = True
            return note
        raise RunDirectoryError(f"{self.path}: could not take the run directory lock")

    def release(self) -> None:
        """Remove the lock file if this process holds it."""
        if self.held:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            self.held = False

    def _owner(self) -> dict | None:
        try:
            owner = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None  # half-written or garbage: its writer died mid-write
        return owner if isinstance(owner, dict) else None


def _alive(owner: dict) -> bool:
    """Whether the lock's process still runs (a lock from another host counts as alive: this
    machine cannot tell)."""
    if owner.get("host") != socket.gethostname():
        return True
    pid = owner.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


def record_checkpoint(run_dir: str | os.PathLike, path: str | os.PathLike, step: int) -> None:
    """Name the checkpoint of record and its step in ``run_info.json`` (kept otherwise)."""
    info_path = Path(run_dir) / "run_info.json"
    try:
        info = json.loads(info_path.read_text())
    except (OSError, ValueError):
        info = {}
    try:
        rel = str(Path(path).resolve().relative_to(Path(run_dir).resolve()))
    except ValueError:
        rel = str(path)
    info["checkpoint"] = {
        "path": rel,
        "global_step": int(step),
        "written": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    write_json(info_path, info)
