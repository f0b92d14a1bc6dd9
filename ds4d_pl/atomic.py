"""Atomic file writes: a reader (or a killed run) never sees a half-written file.

Everything that lands in a run directory (checkpoints, exports, metrics) goes through
:func:`atomic_path`: write to a temporary sibling, flush it to disk, then ``os.replace`` it over
the target, which POSIX guarantees to be atomic within one filesystem. The file ends up with the
permissions any other file of the user gets (``0666`` less the umask), not the ``0600`` of a
temporary file, and the temporary files a killed write leaves behind carry a name that
:func:`remove_orphans` recognises at the next start.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ds4d_pl.errors import write_failure

#: Marker in the name of every temporary file: ``.<target name>.tmp-<random><suffix>``.
TMP_MARK = ".tmp-"
_ORPHAN = re.compile(r"^\..+\.tmp-[A-Za-z0-9_]{6,}")


def current_umask() -> int:
    """The process's umask, read without changing it where the platform allows (Linux
    ``/proc/self/status``), since setting it to read it races with other threads."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it over ``path`` only on success.

    Args:
        path: Final destination. Its parent directory is created.
        suffix: Suffix of the temporary file (writers such as ffmpeg pick the format from it);
            defaults to the destination's suffix.

    Yields:
        The temporary path to write to. On an exception it is deleted and ``path`` is untouched.

    Raises:
        OutOfSpaceError: The write failed because the disk is full (the message names the
            folder); other failures propagate unchanged.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}{TMP_MARK}",
        suffix=suffix if suffix is not None else path.suffix,
        dir=path.parent,
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        # mkstemp creates 0600; the result is an ordinary file of the user's.
        os.chmod(tmp_path, 0o666 & ~current_umask())
        os.replace(tmp_path, path)
    except (OSError, RuntimeError) as err:
        full = write_failure(path, err)
        if full is not None:
            raise full from err
        raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def remove_orphans(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that killed atomic writes left anywhere under ``folder``.

    Call it only while no other process writes into ``folder`` (the run directory lock).

    Returns:
        The removed files.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for p in folder.rglob(f".*{TMP_MARK}*"):
        if p.is_file() and _ORPHAN.match(p.name):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                removed.append(p)
    return removed


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as indented JSON atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
