"""``ds4d eval``: score any method's renders against the ground truth, with the package's code.

Both directories are laid out like Consistent4D's ``eval_gt``::

    DIR/<obj>/eval_{k}/{t}.png      frames numbered from 0 (zero padding allowed)

so a baseline's renders, ``ds4d predict``'s ``predictions/<scene>`` (its parent directory) and
the published ground truth are all scored by the same :class:`ProtocolScorer` as ``ds4d test``.
RGBA images are composited on the protocol background (white); RGB images are taken as they
are. The moving-region mask comes from the ground truth's own temporal variation.

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
from ds4d_pl.data.types import motion_mask
from ds4d_pl.metrics.protocol import BenchmarkConfig, ProtocolScorer, resize_frames

__all__ = ["evaluate_dirs"]

_FRAME = re.compile(r"^(\d+)\.png$")
_VIEW = re.compile(r"^eval_(\d+)$")


def _views(obj_dir: Path) -> list[Path]:
    return numbered_frames(obj_dir, _VIEW, dirs=True, hint="'eval_0', 'eval_1', ...")


def _read_clip(paths: list[Path], white: bool, size: int | None) -> Tensor:
    frames = []
    for p in paths:
        rgba = read_rgba(p, require_alpha=False)
        bg = 1.0 if white else 0.0
        rgb = rgba[..., :3] * rgba[..., 3:] + bg * (1.0 - rgba[..., 3:])
        if frames and rgb.shape != frames[0].shape:
            raise ValueError(
                f"{p}: image is {rgb.shape[1]}x{rgb.shape[0]} but {paths[0]} is "
                f"{frames[0].shape[1]}x{frames[0].shape[0]}"
            )
        frames.append(rgb)
    clip = torch.stack(frames)
    if size is not None and clip.shape[1:3] != (size, size):
        clip = resize_frames(clip, (size, size))
    return clip


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
        objects: Object folders to score (default: every folder of ``gt``).
        device: Where the metric networks run.

    Returns:
        The :meth:`ProtocolScorer.results` dictionary plus ``objects``.

    Raises:
        FileNotFoundError: A directory, object or view is missing on either side.
        ValueError: Frame counts or image sizes differ between prediction and ground truth.
    """
    cfg = cfg or BenchmarkConfig()
    pred, gt = Path(pred), Path(gt)
    for root, what in ((pred, "prediction"), (gt, "ground-truth")):
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: {what} directory does not exist")
    names = objects or sorted(p.name for p in gt.iterdir() if p.is_dir())
    if not names:
        raise FileNotFoundError(f"{gt}: no object folders (expected <obj>/eval_k/t.png)")
    # Check the whole layout before loading any network or image: a typo costs seconds.
    plan = []
    for name in names:
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
    white = cfg.white_background
    for name, k, pf, gf in plan:
        target = _read_clip(gf, white, cfg.resolution)
        prediction = _read_clip(pf, white, cfg.resolution)
        if prediction.shape != target.shape:
            raise ValueError(
                f"{pf[0].parent}: frames are {prediction.shape[2]}x{prediction.shape[1]} but the "
                f"ground truth {gf[0].parent} is {target.shape[2]}x{target.shape[1]} (pass a "
                "resolution to compare at one size)"
            )
        dyn = motion_mask(target[None])[0]
        scorer.add_clip(name, k, prediction, target, dyn)
    results = scorer.results()
    results["objects"] = names
    return results
