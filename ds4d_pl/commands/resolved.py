"""Every config group with its values, defaults included.

The system and the data module take their option groups as ``Config | None`` (``None``: the
defaults), so a parsed config holds ``model.field: null`` for every group nobody set, and a
``config.yaml`` dumped from it would not say which learning rates or loss weights a run used.
:func:`complete` replaces each such ``None`` by the group's default values.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from typing import Any


def dataclass_of(hint: Any) -> type | None:
    """The dataclass of a type hint ``C`` or ``C | None``."""
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return hint
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if len(args) == 1 and dataclasses.is_dataclass(args[0]) and isinstance(args[0], type):
        return args[0]
    return None


def dataclass_keys(cls: type, prefix: str) -> list[str]:
    """Every (nested) field of a dataclass, as dotted keys under ``prefix``."""
    keys = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        inner = dataclass_of(hints.get(f.name))
        if inner is not None:
            keys += dataclass_keys(inner, f"{prefix}{f.name}.")
        keys.append(f"{prefix}{f.name}")
    return keys


def group_types(cls: type) -> dict[str, type]:
    """The ``__init__`` arguments of ``cls`` typed as a dataclass (or ``dataclass | None``)."""
    hints = typing.get_type_hints(cls.__init__)
    groups = {}
    for name in inspect.signature(cls.__init__).parameters:
        inner = dataclass_of(hints.get(name))
        if inner is not None:
            groups[name] = inner
    return groups


#: Groups that exist for one setting of another key only, as ``group: (key, value)``. Elsewhere
#: ``None`` means "not used", and filling in defaults would switch them on: the system refuses a
#: ``model.nerf`` group unless ``model.representation`` is ``nerf``.
ONLY_WHEN: dict[str, tuple[str, Any]] = {"nerf": ("representation", "nerf")}


def complete(section: dict[str, Any], cls: type) -> dict[str, Any]:
    """``section`` (the ``model`` or ``data`` part of a config, as a dict) with every group of
    ``cls`` that is ``None`` or absent replaced by its defaults (a copy); groups of
    :data:`ONLY_WHEN` only when their key has the value that uses them."""
    out = dict(section)
    for name, group in group_types(cls).items():
        key, value = ONLY_WHEN.get(name, (None, None))
        if key is not None and out.get(key) != value:
            continue
        if out.get(name) is None:
            out[name] = dataclasses.asdict(group())
    return out
