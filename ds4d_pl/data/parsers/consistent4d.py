"""Consistent4D layout: an input video plus four evaluation views per object.

Layout (every folder name is a template in :class:`Consistent4DConfig`; ``{obj}`` is the object
name)::

    ROOT/
    ├── <obj>/                      input video: RGBA frames 0.png, 1.png, ... (or 0000.png, ...)
    ├── <obj>.mp4                   ... or a video file instead (``input_video``), see below
    ├── eval_gt/<obj>/
    │   ├── eval_0/{t}.png          ground truth at azimuth -75°  (elevation 0, radius 2,
    │   ├── eval_1/{t}.png                          azimuth  15°   vertical FoV 49.1°)
    │   ├── eval_2/{t}.png                          azimuth 105°
    │   └── eval_3/{t}.png                          azimuth 195°
    └── <obj>_mv/zero123/           optional pseudo views (Zero123++ poses)
        └── {t}_rgba/{0..5}.png

Pseudo views may be RGBA or, as Zero123++ stores them, opaque RGB on a grey background: the
alpha then comes from the background colour, and each view is aligned to the input view's
silhouette (``pseudo_alpha``, ``align_pseudo_views``; see :mod:`ds4d_pl.data.parsers.common`).

Frames are numbered from 0 without gaps, sorted numerically (``10.png`` after ``9.png``); zero
padded names are accepted. Every view set must have exactly as many frames as the input video.

Alpha: the input view needs the foreground alpha. PNG frames carry it as their alpha channel. A
video keeps it only with an alpha-capable codec (e.g. PNG or QuickTime Animation in ``.mov``;
H.264 has none, and FFmpeg's native VP9 decoder drops WebM alpha). Without it, ``alpha_dir``
must name a folder of masks ``{t}.png`` (single channel, or the alpha of RGBA images). An image's
own alpha always wins; masks only fill in for images that have none.

Everything is validated when the scene is loaded, and every problem is reported once, naming the
file or folder and what is wrong.

The helpers this reader shares with the Objaverse and multi-view sequence readers live in
:mod:`ds4d_pl.data.parsers.common`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from ds4d_pl.cameras import CONSISTENT4D_EVAL_AZIMUTHS, Cameras, orbit_cameras, zero123pp_cameras
from ds4d_pl.data.io import read_video_rgba
from ds4d_pl.data.parsers.common import (
    OBJECT_BACKGROUND,
    check_positive,
    check_version,
    eval_orbit_cameras,
    fit_size,
    load_eval_views,
    load_frames,
    load_pseudo_views,
    make_viewset,
    numbered_frames,
    pseudo_options,
    read_mask,
    resolve,
    square,
)
from ds4d_pl.data.types import Scene4D

__all__ = ["Consistent4DConfig", "load_consistent4d"]


@dataclass
class Consistent4DConfig:
    """Options of :func:`load_consistent4d`.

    Folder options are templates relative to the dataset root (absolute paths are used as they
    are); ``{obj}`` is replaced by the object name.

    Attributes:
        resolution: Resize the input and pseudo views to this square size (``None`` keeps the
            files' size; pseudo views are then resized to the input's size).
        eval_resolution: Resize evaluation views to this square size (``None`` keeps them).
        input_dir: Folder of the input frames ``{t}.png``.
        input_video: Video file read instead of ``input_dir`` (``None``: use the frames).
        alpha_dir: Folder of masks ``{t}.png`` used as alpha for input frames without one
            (required for a video without alpha).
        eval_dir: Folder holding ``eval_0 .. eval_{N-1}``; ``None`` never loads evaluation views.
            A missing folder means "no evaluation views"; an incomplete one is an error.
        eval_azimuths_deg: Azimuth of each evaluation view (elevation 0, object protocol); the
            number of entries is the number of ``eval_k`` folders expected.
        pseudo_dir: Folder of precomputed Zero123++ views ``{t}_rgba/{0..5}.png``; ``None``
            never loads them. A missing folder means "no pseudo views".
        pseudo_version: Zero123++ pose set of the pseudo views, ``"v1.1"`` or ``"v1.2"``.
        pseudo_alpha: Alpha of the pseudo views: ``"auto"`` (the file's when it has a real
            one, else derived from the background colour), ``"file"`` or ``"background"``.
        pseudo_background: Grey level of the generator's background (Zero123++: 0.5).
        pseudo_alpha_threshold: Max per-channel distance to it counted as background.
        align_pseudo_views: Align each pseudo view's scale and centre to the input view's
            silhouette; ``None`` (default): yes, except for oracle views (``provenance.json``).
        max_frames: Use only the first ``max_frames`` frames of every view (``None``: all).
            The whole dataset is still checked; the kept clip's times span ``[0, 1]``.
    """

    resolution: int | None = None
    eval_resolution: int | None = None
    input_dir: str = "{obj}"
    input_video: str | None = None
    alpha_dir: str | None = None
    eval_dir: str | None = "eval_gt/{obj}"
    eval_azimuths_deg: tuple[float, ...] = CONSISTENT4D_EVAL_AZIMUTHS
    pseudo_dir: str | None = "{obj}_mv/zero123"
    pseudo_version: str = "v1.1"
    pseudo_alpha: Literal["auto", "file", "background"] = "auto"
    pseudo_background: float = 0.5
    pseudo_alpha_threshold: float = 0.08
    align_pseudo_views: bool | None = None
    max_frames: int | None = None

    def __post_init__(self) -> None:
        check_positive("Consistent4DConfig", self, ("resolution", "eval_resolution", "max_frames"))
        check_version("Consistent4DConfig.pseudo_version", self.pseudo_version)
        pseudo_options("Consistent4DConfig", self)
        self.eval_azimuths_deg = tuple(float(a) for a in self.eval_azimuths_deg)
        if not self.eval_azimuths_deg:
            raise ValueError("Consistent4DConfig.eval_azimuths_deg needs at least one azimuth")


# --------------------------------------------------------------------------------------------
# Loader


@dataclass
class _Clip:
    """The kept (resized) frames of the input view, the full clip's length and its source."""

    frames: Tensor
    total: int
    path: Path


def _input_clip(root: Path, obj: str, cfg: Consistent4DConfig) -> _Clip:
    """The input view from PNG frames or a video, with alpha, resized to ``cfg.resolution``."""
    size = square(cfg.resolution)
    mask_dir = None if cfg.alpha_dir is None else resolve(root, cfg.alpha_dir, obj=obj)
    if cfg.input_video is None:
        folder = resolve(root, cfg.input_dir, obj=obj)
        paths = numbered_frames(folder)
        masks = None
        if mask_dir is not None:
            masks = numbered_frames(mask_dir)
            if len(masks) != len(paths):
                raise ValueError(
                    f"{mask_dir}: {len(masks)} masks but {folder} has {len(paths)} frames"
                )
        keep = len(paths) if cfg.max_frames is None else min(cfg.max_frames, len(paths))
        hint = "" if masks is not None else " or set alpha_dir to a folder of masks {t}.png"
        # Frames past ``keep`` are not decoded; their count still checks the other view sets.
        frames = load_frames(paths[:keep], size, masks=masks, alpha_hint=hint)
        return _Clip(frames, len(paths), folder)

    video = resolve(root, cfg.input_video, obj=obj)
    frames, has_alpha = read_video_rgba(video)
    n = frames.shape[0]
    keep = n if cfg.max_frames is None else min(cfg.max_frames, n)
    frames = frames[:keep]
    if not has_alpha:
        if mask_dir is None:
            raise ValueError(
                f"{video}: video has no alpha channel; the input view needs the foreground alpha, "
                "so give an RGBA input (PNG frames, or a video with an alpha codec such as PNG "
                "or QuickTime Animation in .mov) or set alpha_dir to a folder of masks {t}.png"
            )
        masks = numbered_frames(mask_dir)
        if len(masks) != n:
            raise ValueError(f"{mask_dir}: {len(masks)} masks but the video {video} has {n} frames")
        hw = (frames.shape[1], frames.shape[2])
        alpha = torch.stack([read_mask(m, hw, video) for m in masks[:keep]])
        frames = torch.cat([frames[..., :3], alpha], dim=-1)
    frames = torch.stack([fit_size(f, size, video) for f in frames])
    return _Clip(frames, n, video)


def load_consistent4d(
    root: str | Path,
    object_name: str,
    cfg: Consistent4DConfig | None = None,
) -> Scene4D:
    """Read one object in the Consistent4D layout (see the module docstring).

    Args:
        root: Dataset root.
        object_name: Object name (``{obj}`` in the folder templates).
        cfg: Options; defaults to ``Consistent4DConfig()``.

    Returns:
        A :class:`Scene4D`: ``train`` view 0 is the input video at the object protocol's front
        camera (elevation 0, azimuth 0), views 1..6 the pseudo views when present
        (``source="zero123pp"``, else the train set's source is ``"gt"``); ``eval`` the
        evaluation views or ``None``; ``num_input_views=1``.

    Raises:
        FileNotFoundError: The root, the input frames/video or an evaluation view folder is
            missing.
        ValueError: Gaps in frame numbers, frame counts that differ between view sets, images
            of different sizes, input images without alpha, an undecodable video.
    """
    cfg = Consistent4DConfig() if cfg is None else cfg
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: data root does not exist")
    clip = _input_clip(root, object_name, cfg)
    inp, t_all = clip.frames, clip.total
    keep = inp.shape[0]
    _, h, w, _ = inp.shape

    stacks = [inp]
    cams = [orbit_cameras([0.0], [0.0], w, h)]
    source = "gt"
    pseudo_meta: dict = {}
    mv = None if cfg.pseudo_dir is None else resolve(root, cfg.pseudo_dir, obj=object_name)
    if mv is not None and mv.is_dir():
        pseudo_cams = zero123pp_cameras(w, h, cfg.pseudo_version)
        pseudo, pseudo_meta = load_pseudo_views(
            mv, t_all, inp, cams[0], pseudo_cams, pseudo_options("Consistent4DConfig", cfg)
        )
        stacks += pseudo
        cams.append(pseudo_cams)
        source = "zero123pp"
    train = make_viewset(stacks, Cameras.cat(cams), source)

    eval_set = None
    ev_dir = None if cfg.eval_dir is None else resolve(root, cfg.eval_dir, obj=object_name)
    if ev_dir is not None and ev_dir.is_dir():
        ev = load_eval_views(
            ev_dir, len(cfg.eval_azimuths_deg), t_all, keep, square(cfg.eval_resolution)
        )
        eh, ew = ev[0].shape[1:3]
        eval_set = make_viewset(ev, eval_orbit_cameras(cfg.eval_azimuths_deg, ew, eh), "gt")
    return Scene4D(
        name=object_name,
        train=train,
        eval=eval_set,
        num_input_views=1,
        meta={
            "dataset": "consistent4d",
            "root": str(root),
            "background": OBJECT_BACKGROUND,
            "input": str(clip.path),
            "pseudo_views": source,
            "pseudo_version": cfg.pseudo_version if source == "zero123pp" else None,
            "num_frames": keep,
            "num_frames_on_disk": t_all,
            **pseudo_meta,
        },
    )
