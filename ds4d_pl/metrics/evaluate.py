"""``ds4d eval``: score any method's renders against the ground truth, with the package's code.

Both directories are laid out like Consistent4D's ``eval_gt``::

    DIR/<obj>/eval_{k}/{t}.png      frames numbered from 0 (zero padding allowed)

so a baseline's renders, ``ds4d predict``'s ``predictions/<scene>`` (its parent directory) and
the published ground truth are all scored by the same :class:`ProtocolScorer` as ``ds4d test``.
RGBA images are composited on the protocol background (white); RGB images are taken as they
are. The moving-region mask is :func:`ds4d_pl.data.types.motion_mask` of the ground truth's
RGBA frames at their own resolution (the definition ``ds4d test`` uses), resized to the
comparison resolution by area and kept where more than half of a pixel moves, as ``ds4d test``
resizes it.

Tests: ``tests/test_metrics_protocol.py``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ds4d_pl.data.io import read_rgba
from ds4d_pl.data.parsers.common import numbered_frames
from ds4d_pl.data.types import composite, motion_mask
from ds4d_pl.metrics.protocol import BenchmarkConfig, ProtocolScorer, resize_frames

__all__ = ["evaluate_dirs", "gt_dynamic_mask"]

_FRAME = re.compile(r"^(\d+)\.png$")
_VIEW = re.compile(r"^eval_(\d+)$")


def _views(obj_dir: Path) -> list[Path]:
    return numbered_frames(obj_dir, _VIEW, dirs=True, hint="'eval_0', 'eval_1', ...")


def _read_rgba_clip(paths: list[Path]) -> Tensor:
    """``(T, H, W, 4)`` straight RGBA (alpha 1 for RGB files), one size for every frame."""
    frames = []
    for p in paths:
        rgba = read_rgba(p, require_alpha=False)
        if frames and rgba.shape != frames[0].shape:
            raise ValueError(
                f"{p}: image is {rgba.shape[1]}x{rgba.shape[0]} but {paths[0]} is "
                f"{frames[0].shape[1]}x{frames[0].shape[0]}"
            )
        frames.append(rgba)
    return torch.stack(frames)


def gt_dynamic_mask(rgba: Tensor, size: tuple[int, int] | None = None) -> Tensor:
    """The protocol's dynamic-region mask of one ground-truth clip.

    Args:
        rgba: ``(T, H, W, 4)`` straight RGBA frames of one view.
        size: ``(H', W')`` the clip is compared at (``None``: its own size).

    Returns:
        ``(T, H', W', 1)`` boolean: :func:`~ds4d_pl.data.types.motion_mask` at the clip's own
        resolution, then resized like ``ds4d test`` resizes its masks (``resize_frames`` of the
        float mask, ``> 0.5``).
    """
    mask = motion_mask(rgba[None, ..., :3], rgba[None, ..., 3:])[0]
    if size is not None and tuple(mask.shape[1:3]) != tuple(size):
        mask = resize_frames(mask.float(), size) > 0.5
    return mask


def _check_root(root: Path, what: str, flag: str) -> None:
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: {what} directory does not exist")
    if any(_VIEW.match(p.name) and p.is_dir() for p in root.iterdir()):
        raise FileNotFoundError(
            f"{root}: this is one object's folder (it holds eval_0, eval_1, ...), not the "
            f"{what} root; pass the directory above it, which holds <obj>/eval_k/t.png "
            f"(here: {flag} {root.parent}, and --objects {root.name} to score only this object)"
        )


def evaluate_dirs(
    pred: str | Path,
    gt: str | Path,
    cfg: BenchmarkConfig | None = None,
    objects: list[str] | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Score every object of ``gt`` (or the listed ``objects``) against ``pred``.

    Args:
        pred: Directory of predicted renders (``<obj>/eval_{k}/{t}.png``).
        gt: Directory of ground truth in the same layout (e.g. Consistent4D's ``eval_gt``).
        cfg: Metrics to compute; ``cfg.resolution`` resizes both sides.
        objects: Object folders to score (default: every folder of ``gt``); each once.
        device: Where the metric networks run.

    Returns:
        The :meth:`ProtocolScorer.results` dictionary plus ``objects``.

    Raises:
        FileNotFoundError: A directory, object or view is missing on either side, or an
            object's own folder was given instead of the root.
        ValueError: An object is listed twice, or frame counts or image sizes differ between
            prediction and ground truth.
        MissingWeightsError: A weights path given in ``cfg.weights`` does not exist.
        BadWeightsError: A weights file is damaged.
    """
    cfg = cfg or BenchmarkConfig()
    pred, gt = Path(pred), Path(gt)
    _check_root(pred, "prediction", "--pred")
    _check_root(gt, "ground-truth", "--gt")
    names = list(objects) if objects else sorted(p.name for p in gt.iterdir() if p.is_dir())
    if not names:
        raise FileNotFoundError(f"{gt}: no object folders (expected <obj>/eval_k/t.png)")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(
            f"objects listed more than once: {repeated}; each object is scored once (a repeat "
            "would count its clips twice, in the averages and in FID-VID's covariances)"
        )
    # A weights path that does not exist fails before any image is read.
    cfg.check_weights()
    # Check the whole layout before loading any network or image: a typo costs seconds.
    plan = []
    for name in names:
        if not (gt / name).is_dir():
            raise FileNotFoundError(f"{gt / name}: no ground truth for object {name!r}")
        if not (pred / name).is_dir():
            raise FileNotFoundError(f"{pred / name}: no predictions for object {name!r}")
        gt_views, pred_views = _views(gt / name), _views(pred / name)
        if len(pred_views) != len(gt_views):
            raise ValueError(
                f"{pred / name}: {len(pred_views)} evaluation views but {gt / name} has "
                f"{len(gt_views)}"
            )
        for k, (gv, pv) in enumerate(zip(gt_views, pred_views, strict=True)):
            gf, pf = numbered_frames(gv, _FRAME), numbered_frames(pv, _FRAME)
            if len(gf) != len(pf):
                raise ValueError(f"{pv}: {len(pf)} frames but the ground truth {gv} has {len(gf)}")
            plan.append((name, k, pf, gf))
    scorer = ProtocolScorer(cfg, device=device)
    bg = torch.ones(3) if cfg.white_background else torch.zeros(3)
    for name, k, pf, gf in plan:
        target_rgba = _read_rgba_clip(gf)
        prediction_rgba = _read_rgba_clip(pf)
        if prediction_rgba.shape != target_rgba.shape and cfg.resolution is None:
            raise ValueError(
                f"{pf[0].parent}: frames are {prediction_rgba.shape[2]}x"
                f"{prediction_rgba.shape[1]} but the ground truth {gf[0].parent} is "
                f"{target_rgba.shape[2]}x{target_rgba.shape[1]} (pass a resolution to compare "
                "at one size)"
            )
        size = (cfg.resolution, cfg.resolution) if cfg.resolution else None
        target = composite(target_rgba[..., :3], target_rgba[..., 3:], bg)
        prediction = composite(prediction_rgba[..., :3], prediction_rgba[..., 3:], bg)
        if size is not None:
            target = resize_frames(target, size) if target.shape[1:3] != size else target
            if prediction.shape[1:3] != size:
                prediction = resize_frames(prediction, size)
        scorer.add_clip(name, k, prediction, target, gt_dynamic_mask(target_rgba, size))
    results = scorer.results()
    results["objects"] = names
    return results
