"""A progress bar for long loops outside the training loop (videos, exports, feature caching),
so a command that renders or writes for minutes does not look like a hang. Plain tqdm, no
Lightning: the export functions and the commands of a finished run use it too."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")


def progress(
    items: Iterable[T], description: str, total: int | None = None, enabled: bool | None = True
) -> Iterator[T]:
    """``items``, with a progress bar on stderr.

    Args:
        items: What the loop runs over.
        description: The bar's label, e.g. ``video turntable``.
        total: Number of items when ``items`` has no ``len``.
        enabled: ``True``: show the bar; ``False``: no bar; ``None``: only when stderr is a
            terminal (the commands' choice, so logs of batch jobs stay free of bar updates).
    """
    if enabled is False:
        yield from items
        return
    # tqdm's disable=None is "off unless the output is a terminal".
    disable = None if enabled is None else False
    bar = tqdm(
        items, desc=description, total=total, leave=False, dynamic_ncols=True, disable=disable
    )
    try:
        yield from bar
    finally:
        bar.close()
