"""Old import path of the weights registry, kept so ``from ds4d_pl.metrics.weights import ...``
still works. Everything lives in :mod:`ds4d_pl.weights` (one copy of the logic); import from
there in new code."""

from __future__ import annotations

from ds4d_pl.weights import (
    REGISTRY,
    BadWeightsError,
    MissingWeightsError,
    WeightsError,
    WeightsSpec,
    find_file,
    load_pretrained,
    load_strict,
    quiet_hub_loading,
    read_state_dict,
    resolve,
    search_paths,
    sha256_file,
    status,
)

#: The former name of :func:`ds4d_pl.weights.read_state_dict`.
load_state_dict = read_state_dict

__all__ = [
    "REGISTRY",
    "BadWeightsError",
    "MissingWeightsError",
    "WeightsError",
    "WeightsSpec",
    "find_file",
    "load_pretrained",
    "load_state_dict",
    "load_strict",
    "quiet_hub_loading",
    "resolve",
    "search_paths",
    "sha256_file",
    "status",
]
