"""Consistent4D layout: an input video plus four evaluation views per object.

Layout (folder names overridable)::

    ROOT/<obj>/{t}.png                          input video, RGBA, frames numbered 0..T-1
    ROOT/eval_gt/<obj>/eval_{0..3}/{t}.png      ground truth at azimuth -75/15/105/195°, elev. 0
    ROOT/<obj>_mv/zero123/{t}_rgba/{0..5}.png   optional pseudo views (Zero123++ v1.1 poses)

Every problem is reported once, at setup, naming the file and what is wrong.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import Tensor

from ds4d_pl.cameras import (
    Cameras,
    consistent4d_eval_cameras,
    orbit_cameras,
    zero123pp_cameras,
)
from ds4d_pl.data.io import read_rgba
from ds4d_pl.data.types import Scene4D, ViewSet

_NUMBERED = re.compile(r"^(\d+)\.png$")


def numbered_frames(folder: Path, pattern: re.Pattern = _NUMBERED) -> list[Path]:
    """PNG frames of ``folder`` sorted numerically, checked to be exactly ``0..T-1``."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: frame folder does not exist")
    found = {}
    for p in folder.iterdir():
        m = pattern.match(p.name)
        if m:
            found[int(m.group(1))] = p
    if not found:
        raise FileNotFoundError(f"{folder}: no frames named like '0.png', '1.png', ...")
    expected = set(range(len(found)))
    if set(found) != expected:
        missing = sorted(set(range(max(found) + 1)) - set(found))
        raise ValueError(f"{folder}: frame numbers are not contiguous from 0; missing {missing}")
    return [found[i] for i in range(len(found))]


def _load_stack(paths: list[Path], size: int | None) -> Tensor:
    """``(T, H, W, 4)`` frames, optionally resized, all checked to share one size."""
    frames = []
    for p in paths:
        img = read_rgba(p)
        if size is not None and img.shape[:2] != (size, size):
            img = _resize(img, size)
        if frames and img.shape != frames[0].shape:
            raise ValueError(
                f"{p}: image is {img.shape[1]}x{img.shape[0]} but {paths[0]} is "
                f"{frames[0].shape[1]}x{frames[0].shape[0]}"
            )
        frames.append(img)
    return torch.stack(frames)


def _resize(img: Tensor, size: int) -> Tensor:
    x = img.permute(2, 0, 1)[None]
    return torch.nn.functional.interpolate(x, (size, size), mode="area")[0].permute(1, 2, 0)


def _viewset(stacks: list[Tensor], cameras: Cameras, source: str) -> ViewSet:
    rgba = torch.stack(stacks)
    t = rgba.shape[1]
    times = torch.linspace(0.0, 1.0, t) if t > 1 else torch.zeros(1)
    return ViewSet(rgba[..., :3], rgba[..., 3:], cameras, times, source=source)


def load_consistent4d(
    root: str | Path,
    object_name: str,
    resolution: int | None = None,
    eval_resolution: int | None = None,
    eval_dir: str = "eval_gt",
    pseudo_dir_suffix: str = "_mv",
) -> Scene4D:
    """Read one object.

    Args:
        root: Dataset root.
        object_name: Folder name of the object under ``root``.
        resolution: Resize input and pseudo views to this square size (``None`` keeps them).
        eval_resolution: Resize evaluation views (``None`` keeps them).
        eval_dir: Folder holding the evaluation ground truth.
        pseudo_dir_suffix: ``<obj><suffix>/zero123`` holds optional precomputed pseudo views.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: data root does not exist")
    inp = _load_stack(numbered_frames(root / object_name), resolution)
    t, h, w, _ = inp.shape
    stacks = [inp]
    front = orbit_cameras([0.0], [0.0], w, h)
    cams = [front]
    source = "gt"
    mv = root / f"{object_name}{pseudo_dir_suffix}" / "zero123"
    if mv.is_dir():
        views = []
        for k in range(6):
            paths = [mv / f"{i}_rgba" / f"{k}.png" for i in range(t)]
            missing = [p for p in paths if not p.is_file()]
            if missing:
                raise FileNotFoundError(
                    f"{missing[0]}: pseudo view missing ({len(missing)} in all)"
                )
            views.append(_load_stack(paths, resolution or h))
        stacks += views
        cams.append(zero123pp_cameras(w, h))
        source = "zero123pp"
    train = _viewset(stacks, Cameras.cat(cams), source)

    eval_set = None
    eval_root = root / eval_dir / object_name
    if eval_root.is_dir():
        ev = [
            _load_stack(numbered_frames(eval_root / f"eval_{k}"), eval_resolution) for k in range(4)
        ]
        if any(e.shape[0] != t for e in ev):
            raise ValueError(
                f"{eval_root}: evaluation views have {[e.shape[0] for e in ev]} frames but the "
                f"input video has {t}"
            )
        eh, ew = ev[0].shape[1:3]
        eval_set = _viewset(ev, consistent4d_eval_cameras(ew, eh), "gt")
    return Scene4D(
        name=object_name,
        train=train,
        eval=eval_set,
        num_input_views=1,
        meta={"dataset": "consistent4d", "root": str(root), "pseudo_views": source},
    )
