"""The errors a user can fix, and how the ``ds4d`` commands report them.

Everything a user can act on (a bad config, bad data, missing weights, a checkpoint that does
not fit the run, a run directory in use, a diverged fit, a full disk) is a :class:`DS4DError`.
The command line prints such an error as one line, ``ds4d COMMAND: error: MESSAGE``, and exits
with status 2; ``--debug`` (or ``DS4D_DEBUG=1``) shows the traceback instead. Anything else is a
bug and keeps its traceback.

Each class also derives from the built-in exception that code catching the old, generic type
expects (``ValueError`` for config and data, ``FileNotFoundError`` for missing weights,
``FloatingPointError`` for divergence, ``OSError`` for a full disk), so existing ``except``
clauses keep working.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

#: Exit status of a command stopped by a :class:`DS4DError` (argparse's status for bad usage).
EXIT_CODE = 2


class DS4DError(Exception):
    """Root of every error whose message tells the user what to fix."""


class ConfigError(DS4DError, ValueError):
    """A config key, file or value is invalid; the message names it."""


class DataError(DS4DError, ValueError):
    """The dataset (or an input file of a command) is missing or malformed; the message names
    the file."""


class WeightsError(DS4DError):
    """Pretrained weights are missing or unusable; the message names the file. The weights
    registry (:mod:`ds4d_pl.weights`) raises its subclasses ``MissingWeightsError`` and
    ``BadWeightsError``."""


class CheckpointError(DS4DError):
    """A checkpoint is missing, unreadable or does not match the run's config or data."""


class RunDirectoryError(DS4DError):
    """The run directory holds another run, or another process is writing into it."""


class DivergenceError(DS4DError, FloatingPointError):
    """Training diverged (non-finite or runaway parameters); nothing poisoned was saved."""


class OutOfSpaceError(DS4DError, OSError):
    """A write failed because the disk is full."""


class DataWarning(UserWarning):
    """The data is usable but probably not what was meant (a one-frame clip, fewer frames than
    asked for)."""


def debug_requested(argv: list[str]) -> tuple[bool, list[str]]:
    """Whether tracebacks are wanted (``--debug`` anywhere in ``argv`` or ``DS4D_DEBUG=1``),
    and ``argv`` without the flag."""
    rest = [a for a in argv if a != "--debug"]
    env = os.environ.get("DS4D_DEBUG", "").strip().lower() not in ("", "0", "false", "no")
    return env or len(rest) != len(argv), rest


def one_line(command: str, err: BaseException) -> str:
    """How a :class:`DS4DError` is shown: the message on the first line, the hint on the second."""
    # Messages that list several paths span lines; the error stays one line on the terminal.
    message = " ".join(ln.strip() for ln in str(err).splitlines() if ln.strip())
    message = message or type(err).__name__
    return f"ds4d {command}: error: {message}\n(run with --debug for the traceback)"


def write_failure(path: str | os.PathLike, err: BaseException) -> OutOfSpaceError | None:
    """An :class:`OutOfSpaceError` naming ``path``'s folder when ``err`` is a failed write on a
    full disk, else ``None``.

    ``torch.save`` reports a full disk as a ``RuntimeError`` from its zip writer
    (``inline_container.cc ... file write failed``) without the errno, so besides ``ENOSPC`` a
    failed write counts as disk-full when the folder's filesystem has (almost) no space left.
    """
    folder = Path(path).parent
    full = isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT)
    if not full and isinstance(err, RuntimeError):
        text = str(err)
        if "inline_container" in text or "PytorchStreamWriter" in text or "write failed" in text:
            try:
                full = shutil.disk_usage(folder).free < 16 * 1024 * 1024
            except OSError:
                full = False
    if not full:
        return None
    return OutOfSpaceError(f"no space left on {folder} while writing {Path(path).name}")
