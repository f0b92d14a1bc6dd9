"""How many CPU threads a ``ds4d`` process computes with.

PyTorch's default is one intra-op thread per core of the machine. When several jobs share the
machine (or a scheduler pins this one to a few cores) every process still starts that many
threads, they outnumber the cores and each parallel op waits for its slowest, descheduled
thread: a demo that takes minutes alone took over an hour next to a few others. The CLI
therefore sizes the thread pool from the CPUs this process may actually run on, and leaves the
choice to the user when ``OMP_NUM_THREADS`` is set.

It also makes idle OpenMP threads sleep instead of spin (``OMP_WAIT_POLICY=PASSIVE`` unless the
user set the variable). With spinning threads, two demos started together on 2 cores were each
still at step ~650 of 750 after 15 minutes, against 125 s for one demo alone; with passive waits
the two took 150 s each, and one alone 119 s (quiet 2-core machine, ``configs/demo.yaml``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection

__all__ = ["choose_threads", "configure_threads", "set_wait_policy", "usable_cpus"]

log = logging.getLogger(__name__)


def usable_cpus() -> set[int] | None:
    """The CPUs this process may run on (``os.sched_getaffinity``), or None where unknown."""
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux, or no affinity support
        return None


def choose_threads(affinity: Collection[int] | None, omp_num_threads: str | None) -> int:
    """Intra-op thread count: ``OMP_NUM_THREADS`` when set, else one per usable CPU.

    Args:
        affinity: CPUs the process may run on (None: unknown, ``os.cpu_count()`` is used).
        omp_num_threads: The ``OMP_NUM_THREADS`` value, or None/empty when unset. OpenMP's
            list form (``"4,2"``, per nesting level) counts by its first entry.

    Returns:
        A positive thread count. A user's ``OMP_NUM_THREADS`` is taken as given, even above
        the usable CPUs: it is an explicit choice.

    Raises:
        ValueError: ``OMP_NUM_THREADS`` is set but not a positive integer.
    """
    if omp_num_threads is not None and omp_num_threads.strip():
        first = omp_num_threads.split(",")[0].strip()
        if not first.isdigit() or int(first) < 1:
            raise ValueError(
                f"OMP_NUM_THREADS={omp_num_threads!r} is not a positive integer; unset it to "
                "use one thread per CPU this process may run on"
            )
        return int(first)
    if affinity:
        return len(affinity)
    return max(1, os.cpu_count() or 1)


def set_wait_policy() -> str:
    """``OMP_WAIT_POLICY=PASSIVE`` unless the user set the variable; returns the policy in force.

    OpenMP reads it once, when its runtime starts (the first torch import), so this only has an
    effect before torch is imported.
    """
    return os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def configure_threads() -> int:
    """Set torch's intra-op thread count with :func:`choose_threads` and return it.

    Called by the ``ds4d`` entry point before a command does any work; the compiled CPU
    rasteriser follows it (its ``threads=None`` reads ``torch.get_num_threads()``).
    """
    set_wait_policy()
    import torch

    threads = choose_threads(usable_cpus(), os.environ.get("OMP_NUM_THREADS"))
    torch.set_num_threads(threads)
    log.debug("torch intra-op threads: %d", threads)
    return threads
