"""Atomic file writes: a reader (or a killed run) never sees a half-written file.

Everything that lands in a run directory (checkpoints, exports, metrics) goes through
:func:`atomic_path`: write to a temporary sibling, flush it to disk, then ``os.replace`` it over
the target, which POSIX guarantees to be atomic within one filesystem.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it over ``path`` only on success.

    Args:
        path: Final destination. Its parent directory is created.
        suffix: Suffix of the temporary file (writers such as ffmpeg pick the format from it);
            defaults to the destination's suffix.

    Yields:
        The temporary path to write to. On an exception it is deleted and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.",
        suffix=suffix if suffix is not None else path.suffix,
        dir=path.parent,
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as indented JSON atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
