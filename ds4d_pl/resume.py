"""What a run started from a checkpoint takes from the checkpoint, and what from the user.

Model keys fall in three classes:

* keys that decide the asset: its parameters' shapes or what it computes from its inputs
  (deformation field, ablation switches, frame conditioning, background, SH degree). The
  checkpoint fixes them; a config giving one of them another value is an error naming every
  such key, never a silent replacement;
* evaluation keys: how a model is scored, which backend renders it, where weights are on this
  machine (:data:`EVALUATION_KEYS`). Given values win;
* training keys: how training continues (:data:`TRAINING_KEYS`). Given values win when
  resuming (``fit``); when only evaluating they have no effect, so the checkpoint's values are
  kept and the given ones are listed as unused.

A key counts as *given* when its value differs from the parser's default (the CLI cannot tell
a default typed out from one left alone, and both mean the same).

The checkpoint also stores a fingerprint of the training data (:func:`data_fingerprint`), so
that resuming onto different data is refused (:func:`check_same_data`).
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass, field
from typing import Any

import torch

from ds4d_pl.errors import CheckpointError

#: Model keys (and key prefixes) that only change how a model is scored or where files are found.
EVALUATION_KEYS = (
    "benchmark",
    "renderer",
    "conditioning.encoder_weights",
    "conditioning.cache_dir",
    "sds.path",
    # A control run at test time (the middle frame's features for every frame); no parameters.
    "conditioning.placebo",
    # How many rays a NeRF shades at once (and whether under checkpointing): memory, not results.
    "nerf.ray_chunk",
    "nerf.checkpoint_chunks",
)
#: Model keys that change how training continues (or started), not what the checkpoint holds.
TRAINING_KEYS = (
    "loss",
    "optim",
    "schedule",
    "densify",
    "sds",
    "seed",
    "conditioning.visibility_every",
    "conditioning.feature_dropout",
    "conditioning.reference_refresh",
    "init.num",
    "init.source",
    "init.hull",
    "init.radius",
    "init.path",
    "init.normalize",
    "init.init_opacity",
    "nerf.stratified",
)


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}``; lists and tuples are leaves (as lists)."""
    if isinstance(tree, dict) and tree:
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    if isinstance(tree, tuple):
        tree = list(tree)
    return {prefix[:-1]: tree}


def _matches(key: str, prefixes: tuple[str, ...]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return float(a) == float(b)
    return a == b


@dataclass
class Reconciled:
    """The outcome of :func:`reconcile`.

    Attributes:
        model: The merged model section (nested).
        used: Keys whose given value won, each with ``(given, checkpoint)``.
        unused: Training keys given to an evaluation, which keep the checkpoint's value.
    """

    model: dict[str, Any]
    used: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    unused: dict[str, tuple[Any, Any]] = field(default_factory=dict)


def reconcile(
    given: dict[str, Any], defaults: dict[str, Any], saved: dict[str, Any], fitting: bool
) -> Reconciled:
    """Merge the model config of a run with a checkpoint's hyper-parameters.

    Args:
        given: The model section of the parsed config (every group complete).
        defaults: The model section of the parser's defaults (every group complete).
        saved: The checkpoint's hyper-parameters, in today's names.
        fitting: Whether the run trains (``fit``) or only evaluates.

    Returns:
        The merged section, the given values used and the given values without effect.

    Raises:
        CheckpointError: A key the checkpoint fixes was given a different value; the message
            lists every such key with both values.
    """
    flat_given, flat_default, flat_saved = flatten(given), flatten(defaults), flatten(saved)
    merged = dict(flat_saved)
    out = Reconciled(model={})
    conflicts: list[str] = []
    for key, value in flat_given.items():
        if key in flat_default and _same(value, flat_default[key]):
            continue  # not given
        if key in flat_saved and _same(value, flat_saved[key]):
            continue
        old = flat_saved.get(key)
        if _changes_shape(key, value, old):
            conflicts.append(f"model.{key}: given {value!r}, checkpoint {old!r}")
        elif _matches(key, EVALUATION_KEYS) or (fitting and _matches(key, TRAINING_KEYS)):
            merged[key] = value
            out.used[key] = (value, old)
        elif _matches(key, TRAINING_KEYS):
            out.unused[key] = (value, old)
        else:
            conflicts.append(f"model.{key}: given {value!r}, checkpoint {old!r}")
    if conflicts:
        raise CheckpointError(
            "the config does not match the checkpoint's model ("
            + "; ".join(conflicts)
            + "). A checkpoint fixes its model: drop these keys, or pass the checkpoint's values"
        )
    out.model = unflatten(merged)
    return out


def _changes_shape(key: str, given: Any, saved: Any) -> bool:
    """The one training key that also decides the parameters: without fine steps the model
    has no deformation field."""
    if key == "schedule.fine_steps" and isinstance(given, int) and isinstance(saved, int):
        return (given > 0) != (saved > 0)
    return False


def unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`flatten`."""
    tree: dict[str, Any] = {}
    for key, value in flat.items():
        node = tree
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return tree


# --------------------------------------------------------------------------------- the data
#: At most this many values of each image table are hashed (a strided sample beyond it).
_SAMPLE = 1 << 22


def data_fingerprint(scene: Any) -> str:
    """A short hash of a scene's training data: name, table shapes, times and (a strided
    sample of) every training image and alpha, quantised to 8 bits so that float noise of
    decoding does not count as different data. Cached per scene object."""
    cached = getattr(scene, "_ds4d_fingerprint", None)
    if cached is not None:
        return cached
    train = scene.train
    digest = hashlib.sha256()
    digest.update(f"{scene.name}|{tuple(train.rgb.shape)}|{scene.num_input_views}".encode())
    digest.update(train.times.detach().cpu().to(torch.float64).numpy().round(6).tobytes())
    for table in (train.rgb, train.alpha):
        flat = table.detach().reshape(-1)
        flat = flat[:: max(1, flat.numel() // _SAMPLE)]
        digest.update((flat.float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy())
    value = digest.hexdigest()[:16]
    # Kept on the scene itself: it is hashed once per run, not at every checkpoint.
    with contextlib.suppress(AttributeError):
        scene._ds4d_fingerprint = value
    return value


def check_same_data(checkpoint: dict, scene: Any, ckpt_path: str) -> None:
    """Refuse to resume a checkpoint on other training data than it was trained on.

    Checkpoints written before fingerprints were stored are accepted.

    Raises:
        CheckpointError: The fingerprints differ; the message names both scenes.
    """
    info = checkpoint.get("ds4d") or {}
    stored = info.get("data_fingerprint")
    if stored is None:
        return
    now = data_fingerprint(scene)
    if stored != now:
        raise CheckpointError(
            f"{ckpt_path} was trained on other data (scene {info.get('scene')!r}, fingerprint "
            f"{stored}) than this run loads (scene {scene.name!r}, {now}); resuming would "
            "continue on different images. Point data at the original, or start afresh "
            "without --ckpt_path (--overwrite to replace the run)"
        )
