"""Precomputed Zero123++ multi-view sequences: an input video plus six pseudo views per frame.

Layout (what :func:`~ds4d_pl.data.parsers.synthetic.write_consistent4d` writes under
``<obj>_mv/``, and what running Zero123++ on every frame of a video gives)::

    ROOT/
    ├── <seq>/                          e.g. <obj>_mv
    │   ├── ref/{t}_rgba.png            the input video, RGBA, frames 0..T-1
    │   └── zero123/{t}_rgba/{0..5}.png the six Zero123++ views of frame t
    └── eval_gt/<obj>/eval_{0..3}/{t}.png   optional Consistent4D evaluation views

The six views are at the fixed Zero123++ poses (azimuth 30, 90, ..., 330°; elevation +30/−20°
alternating for v1.1, +20/−10° for v1.2) relative to the input view, which sits at the object
protocol's front camera (elevation 0, azimuth 0, radius 2, vertical FoV 49.1°). Pseudo views
are resized to the input view's size. ``<obj>`` is ``<seq>`` without a trailing ``_mv``.

Pseudo views may be RGBA or, as Zero123++ stores them, opaque RGB on a grey background: the
alpha then comes from the background colour, and each view is aligned to the input view's
silhouette (``pseudo_alpha``, ``align_pseudo_views``; see :mod:`ds4d_pl.data.parsers.common`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ds4d_pl.cameras import CONSISTENT4D_EVAL_AZIMUTHS, Cameras, orbit_cameras, zero123pp_cameras
from ds4d_pl.data.parsers.common import (
    OBJECT_BACKGROUND,
    check_positive,
    check_version,
    eval_orbit_cameras,
    load_eval_views,
    load_frames,
    load_pseudo_views,
    make_viewset,
    numbered_frames,
    pseudo_options,
    resolve,
    square,
)
from ds4d_pl.data.types import Scene4D

__all__ = ["MultiviewSequenceConfig", "load_multiview_sequence"]

_REF = re.compile(r"^(\d+)_rgba\.png$")


@dataclass
class MultiviewSequenceConfig:
    """Options of :func:`load_multiview_sequence`.

    Attributes:
        zero123pp_version: Pose set of the six views, ``"v1.1"`` or ``"v1.2"``.
        resolution: Square size of the input and pseudo views (``None``: the input's size, and
            pseudo views are resized to it).
        eval_resolution: Square size of the evaluation views (``None`` keeps the files').
        max_frames: Use only the first ``max_frames`` frames (``None``: all).
        eval_root: Root of the evaluation ground truth (``None``: the sequence root). When set
            explicitly the evaluation folder must exist; otherwise it is optional.
        eval_dir: Evaluation folder under ``eval_root`` holding ``eval_0..eval_3``; ``{obj}`` is
            the object name (sequence name without ``_mv``) and ``{seq}`` the sequence name.
            ``None`` never loads evaluation views.
        pseudo_alpha: Alpha of the six views: ``"auto"`` (the file's when it has a real one,
            else derived from the background colour), ``"file"`` or ``"background"``.
        pseudo_background: Grey level of the generator's background (Zero123++: 0.5).
        pseudo_alpha_threshold: Max per-channel distance to it counted as background.
        align_pseudo_views: Align each view's scale and centre to the input view's silhouette;
            ``None`` (default): yes, except for oracle views (``provenance.json``).
    """

    zero123pp_version: str = "v1.1"
    resolution: int | None = None
    eval_resolution: int | None = None
    max_frames: int | None = None
    eval_root: str | None = None
    eval_dir: str | None = "eval_gt/{obj}"
    pseudo_alpha: Literal["auto", "file", "background"] = "auto"
    pseudo_background: float = 0.5
    pseudo_alpha_threshold: float = 0.08
    align_pseudo_views: bool | None = None

    def __post_init__(self) -> None:
        check_positive(
            "MultiviewSequenceConfig", self, ("resolution", "eval_resolution", "max_frames")
        )
        check_version("MultiviewSequenceConfig.zero123pp_version", self.zero123pp_version)
        pseudo_options("MultiviewSequenceConfig", self)


def object_name(sequence: str) -> str:
    """The object a sequence folder belongs to: ``<obj>_mv`` -> ``<obj>``."""
    return sequence[: -len("_mv")] if sequence.endswith("_mv") and sequence != "_mv" else sequence


def load_multiview_sequence(
    root: str | Path,
    sequence: str,
    cfg: MultiviewSequenceConfig | None = None,
) -> Scene4D:
    """Read one precomputed multi-view sequence (layout in the module docstring).

    Args:
        root: Folder holding the sequence folder.
        sequence: Sequence folder name (``<obj>_mv`` for the Consistent4D layout).
        cfg: Options; defaults to ``MultiviewSequenceConfig()``.

    Returns:
        A :class:`Scene4D` named after the object: ``train`` holds 7 views, the input video at
        the front camera then the six Zero123++ views (``source="zero123pp"``,
        ``num_input_views=1``); ``eval`` the four Consistent4D views when found, else ``None``.

    Raises:
        FileNotFoundError: Missing root, ``ref`` or ``zero123`` folder, a missing evaluation
            view folder, or (with an explicit ``eval_root``) no evaluation folder.
        ValueError: Gaps in frame numbers, a frame folder without exactly six views, frame
            counts that differ, images of different sizes, input frames without alpha, pseudo
            views without alpha under ``pseudo_alpha="file"``, a malformed ``provenance.json``.
    """
    cfg = MultiviewSequenceConfig() if cfg is None else cfg
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: data root does not exist")
    seq_dir = root / sequence
    obj = object_name(sequence)

    ref = numbered_frames(seq_dir / "ref", _REF, hint="'0_rgba.png', '1_rgba.png', ...")
    t_all = len(ref)
    keep = t_all if cfg.max_frames is None else min(cfg.max_frames, t_all)
    inp = load_frames(ref[:keep], square(cfg.resolution))
    h, w = inp.shape[1:3]
    zero123 = seq_dir / "zero123"
    if not zero123.is_dir():
        raise FileNotFoundError(
            f"{zero123}: pseudo-view folder missing (a multi-view sequence needs zero123/)"
        )
    front = orbit_cameras([0.0], [0.0], w, h)
    pseudo_cams = zero123pp_cameras(w, h, cfg.zero123pp_version)
    pseudo, pseudo_meta = load_pseudo_views(
        zero123, t_all, inp, front, pseudo_cams, pseudo_options("MultiviewSequenceConfig", cfg)
    )
    train = make_viewset([inp, *pseudo], Cameras.cat([front, pseudo_cams]), "zero123pp")

    eval_set = None
    if cfg.eval_dir is not None:
        eval_root = root if cfg.eval_root is None else Path(cfg.eval_root)
        ev_dir = resolve(eval_root, cfg.eval_dir, obj=obj, seq=sequence)
        if ev_dir.is_dir():
            ev = load_eval_views(
                ev_dir,
                len(CONSISTENT4D_EVAL_AZIMUTHS),
                t_all,
                keep,
                square(cfg.eval_resolution),
            )
            eh, ew = ev[0].shape[1:3]
            eval_cams = eval_orbit_cameras(CONSISTENT4D_EVAL_AZIMUTHS, ew, eh)
            eval_set = make_viewset(ev, eval_cams, "gt")
        elif cfg.eval_root is not None:
            raise FileNotFoundError(f"{ev_dir}: evaluation folder not found under eval_root")
    return Scene4D(
        name=obj,
        train=train,
        eval=eval_set,
        num_input_views=1,
        meta={
            "dataset": "multiview_sequence",
            "background": OBJECT_BACKGROUND,
            "root": str(root),
            "sequence": sequence,
            "pseudo_views": "zero123pp",
            "pseudo_version": cfg.zero123pp_version,
            "num_frames": keep,
            "num_frames_on_disk": t_all,
            **pseudo_meta,
        },
    )
