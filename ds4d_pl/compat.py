"""Checkpoints written by earlier versions of the package, read in today's names.

Two things changed shape: hyper-parameters (a renamed loss weight, mode-specific conditioning
knobs that used to be stored with their defaults, the CPU renderer's name) and the state dict
(the 4D asset moved under ``model.``). :func:`upgrade_hparams` and :func:`upgrade_state_dict` bring
an old checkpoint to today's layout; on a current checkpoint both are the identity. Locked by
``tests/test_model.py`` with a checkpoint written before the change (``tests/data/``).
"""

from __future__ import annotations

import copy
from typing import Any

#: Hyper-parameters :func:`upgrade_hparams` may rewrite.
UPGRADED_HPARAMS = ("loss", "ablation", "conditioning", "renderer", "field", "optim", "framing")

#: State-dict entries that moved under ``model.`` when the asset became ``DS4DModel``.
_LEGACY_PREFIXES = ("background", "extent", "gaussians.", "field.", "conditioner.")


def upgrade_hparams(hparams: dict[str, Any]) -> dict[str, Any]:
    """Hyper-parameters of a checkpoint in today's names (a copy).

    * ``loss.rgb`` became ``loss.rgb_mse``;
    * ``conditioning.da_combine`` / ``ga_scorer`` were always stored with their defaults
      (``sum`` / ``own``) and now exist only for their fusion mode;
    * the CPU renderer ``torch_tiled`` is called ``torch``;
    * ``field.fusion_norm`` and ``field.cond_gate`` did not exist: those fields concatenated
      their inputs as they were (``none``, no gate), whatever today's defaults;
    * ``optim.restart_at_fine`` did not exist: those runs decayed every rate over the whole run
      (``False``), which matters when one is resumed;
    * ``conditioning.exclude_own_frame`` did not exist: those models were trained with a
      moving camera's own frame among its views (``False``);
    * ``framing.gauge`` did not exist: those framings took every motion (``init``); it was
      briefly ``fix_gauge`` (``True``: ``views``).
    """
    h = copy.deepcopy(hparams)
    loss = h.get("loss")
    if isinstance(loss, dict) and "rgb" in loss:
        loss["rgb_mse"] = loss.pop("rgb")
    ablation = h.get("ablation")
    tssf = ablation.get("tssf", "da") if isinstance(ablation, dict) else "da"
    cond = h.get("conditioning")
    if isinstance(cond, dict):
        if tssf != "da" and cond.get("da_combine") == "sum":
            cond["da_combine"] = None
        if tssf != "ga" and cond.get("ga_scorer") == "own":
            cond["ga_scorer"] = None
        cond.setdefault("exclude_own_frame", False)
    if "field" in h and h["field"] is None:
        h["field"] = {}  # stored as "defaults": those of the version that wrote it
    if isinstance(h.get("field"), dict):
        h["field"].setdefault("fusion_norm", "none")
        h["field"].setdefault("cond_gate", False)
    if "optim" in h and h["optim"] is None:
        h["optim"] = {}
    if isinstance(h.get("optim"), dict):
        h["optim"].setdefault("restart_at_fine", False)
    if isinstance(h.get("framing"), dict):
        framing = h["framing"]
        if "fix_gauge" in framing:
            # Briefly a boolean before it took three values.
            framing.setdefault("gauge", "views" if framing.pop("fix_gauge") else "init")
        framing.setdefault("gauge", "init")
    if h.get("renderer") == "torch_tiled":
        h["renderer"] = "torch"
    return h


def upgrade_state_dict(state: dict[str, Any]) -> None:
    """Move the asset's entries of an old state dict under ``model.``, in place."""
    for key in [k for k in state if k.startswith(_LEGACY_PREFIXES)]:
        state["model." + key] = state.pop(key)
