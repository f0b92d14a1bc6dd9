"""Typed containers every parser returns and every consumer reads.

A :class:`Scene4D` is what a parser produces: named groups of images observed by cameras at
times in ``[0, 1]``. Groups are :class:`ViewSet` tables of ``V`` cameras × ``T`` frames (object
videos, pseudo views, evaluation views). A :class:`FrameBatch` is what one training step
consumes: a flat list of (time, camera, image) samples.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from ds4d_pl.cameras import Cameras


def composite(rgb: Tensor, alpha: Tensor, background: Tensor) -> Tensor:
    """Straight colour ``(..., 3)`` over ``background`` ``(3,)`` with coverage ``(..., 1)``."""
    return rgb * alpha + background.to(rgb) * (1.0 - alpha)


@dataclass
class ViewSet:
    """``V`` fixed cameras each observing the same ``T`` instants.

    Attributes:
        rgb: ``(V, T, H, W, 3)`` straight (not premultiplied) colour in ``[0, 1]``.
        alpha: ``(V, T, H, W, 1)`` foreground coverage in ``[0, 1]``.
        cameras: ``V`` fixed cameras, or ``V * T`` cameras (view-major: camera of view ``v`` at
            frame ``f`` is ``cameras[v * T + f]``) when the camera moves during the clip, as in a
            monocular D-NeRF capture. Read them through :meth:`cameras_at`.
        times: ``(T,)`` normalised times in ``[0, 1]``, non-decreasing.
        dyn_mask: Optional ``(V, T, H, W, 1)`` boolean mask of pixels that belong to moving
            parts; consumers fall back to :func:`motion_mask` when it is absent.
        source: Where the images come from (``"gt"``, ``"oracle"``, ``"zero123pp"``, ...), so a
            run can report what supervised it.
    """

    rgb: Tensor
    alpha: Tensor
    cameras: Cameras
    times: Tensor
    dyn_mask: Tensor | None = None
    source: str = "gt"

    def __post_init__(self) -> None:
        if self.rgb.ndim != 5 or self.rgb.shape[-1] != 3:
            raise ValueError(f"ViewSet.rgb must be (V, T, H, W, 3), got {tuple(self.rgb.shape)}")
        v, t, h, w, _ = self.rgb.shape
        if tuple(self.alpha.shape) != (v, t, h, w, 1):
            raise ValueError(
                f"ViewSet.alpha must be {(v, t, h, w, 1)}, got {tuple(self.alpha.shape)}"
            )
        if len(self.cameras) not in (v, v * t):
            raise ValueError(
                f"ViewSet has {v} views x {t} frames but {len(self.cameras)} cameras (expected "
                f"{v} fixed or {v * t} per-frame cameras)"
            )
        if (self.cameras.width, self.cameras.height) != (w, h):
            raise ValueError(
                f"ViewSet images are {w}x{h} but cameras are "
                f"{self.cameras.width}x{self.cameras.height}"
            )
        if tuple(self.times.shape) != (t,):
            raise ValueError(f"ViewSet.times must be ({t},), got {tuple(self.times.shape)}")
        if t > 1 and bool((self.times[1:] < self.times[:-1]).any()):
            raise ValueError("ViewSet.times must be sorted (non-decreasing)")
        if self.dyn_mask is not None and tuple(self.dyn_mask.shape) != (v, t, h, w, 1):
            raise ValueError(
                f"ViewSet.dyn_mask must be {(v, t, h, w, 1)}, got {tuple(self.dyn_mask.shape)}"
            )

    @property
    def num_views(self) -> int:
        return self.rgb.shape[0]

    @property
    def num_frames(self) -> int:
        return self.rgb.shape[1]

    @property
    def per_frame_cameras(self) -> bool:
        """``True`` when every frame has its own camera (moving-camera capture).

        With one frame both layouts coincide, and the fixed-camera reading is used.
        """
        return len(self.cameras) != self.num_views

    def cameras_at(self, frame: int) -> Cameras:
        """The ``V`` cameras observing ``frame``."""
        if not self.per_frame_cameras:
            return self.cameras
        t = self.num_frames
        return self.cameras[torch.arange(self.num_views) * t + frame]

    def camera_indices(self, view_ids: Tensor, frame_ids: Tensor) -> Tensor:
        """Index into :attr:`cameras` of each ``(view, frame)`` pair."""
        if not self.per_frame_cameras:
            return view_ids
        return view_ids * self.num_frames + frame_ids

    @property
    def image_size(self) -> tuple[int, int]:
        """``(height, width)``."""
        return self.rgb.shape[2], self.rgb.shape[3]

    def composite(self, background: Tensor) -> Tensor:
        """Colour composited over ``background`` ``(3,)``: ``(V, T, H, W, 3)``."""
        return composite(self.rgb, self.alpha, background)

    def select(self, views: list[int] | None = None, frames: list[int] | None = None) -> ViewSet:
        """A sub-table of some views and frames (``None``: all), cameras following along.

        Times keep their values (a subset of frames is not re-spaced over ``[0, 1]``).
        """
        v_idx = torch.arange(self.num_views) if views is None else torch.as_tensor(views)
        f_idx = torch.arange(self.num_frames) if frames is None else torch.as_tensor(frames)
        if self.per_frame_cameras:
            cams = self.cameras[(v_idx[:, None] * self.num_frames + f_idx[None]).reshape(-1)]
        else:
            cams = self.cameras[v_idx]
        rgb = self.rgb[v_idx][:, f_idx]
        alpha = self.alpha[v_idx][:, f_idx]
        dyn = None if self.dyn_mask is None else self.dyn_mask[v_idx][:, f_idx]
        return ViewSet(rgb, alpha, cams, self.times[f_idx], dyn, self.source)

    def dynamic_mask(self, threshold: float = 0.02) -> Tensor:
        """The dataset's moving-pixel mask, or one derived from the images themselves.

        A camera that moves every frame changes almost every pixel, so no mask can be derived
        from the images; without a dataset mask the result is empty and dynamic-region metrics
        report "not available" instead of a number over the wrong pixels.
        """
        if self.dyn_mask is not None:
            return self.dyn_mask
        if self.per_frame_cameras:
            return torch.zeros_like(self.alpha, dtype=torch.bool)
        return motion_mask(self.rgb, self.alpha, threshold=threshold)


@dataclass
class Scene4D:
    """Everything a parser knows about one object or scene.

    Attributes:
        name: Object or scene name.
        train: Views that supervise training. For objects view 0 is the input video and views
            ``1..`` are pseudo views; for multi-view scenes all are real cameras.
        eval: Views the metrics are computed on (Consistent4D's four, a held-out camera, ...).
        num_input_views: How many leading views of ``train`` are real observations; the rest
            are pseudo views from a prior (loss ``pseudo`` instead of ``input``).
        init_points: Optional ``(P, 3)`` points (and ``init_colors`` ``(P, 3)``) to seed the
            Gaussians from.
        meta: Free-form provenance recorded in the run directory.
        holdout: Real views at frames held out of training (``data.holdout_every``): scored,
            never trained on, so they measure temporal interpolation on data without ground
            truth of novel views.
    """

    name: str
    train: ViewSet
    eval: ViewSet | None = None
    num_input_views: int = 1
    init_points: Tensor | None = None
    init_colors: Tensor | None = None
    meta: dict = field(default_factory=dict)
    holdout: ViewSet | None = None

    def intended_background(self) -> Tensor | None:
        """The ``(3,)`` background colour the dataset's images are meant to be composited on
        (``meta["background"]``, recorded by the parsers), or ``None`` when it says nothing."""
        value = self.meta.get("background")
        if (
            isinstance(value, (tuple, list))
            and len(value) == 3
            and all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in value)
        ):
            return torch.tensor([float(c) for c in value])
        return None

    def __post_init__(self) -> None:
        if not 1 <= self.num_input_views <= self.train.num_views:
            raise ValueError(
                f"Scene4D {self.name!r}: num_input_views={self.num_input_views} but the training "
                f"set has {self.train.num_views} views"
            )


@dataclass
class FrameBatch:
    """A flat batch of ``B`` (time, camera, image) samples for one training step.

    Attributes:
        times: ``(B,)`` normalised times in ``[0, 1]``.
        cameras: ``B`` cameras (one per sample).
        rgb: ``(B, H, W, 3)`` target colour composited over the run's background.
        alpha: ``(B, H, W, 1)`` target coverage.
        view_ids: ``(B,)`` index of the view within ``Scene4D.train``.
        frame_ids: ``(B,)`` index of the frame within the view's video.
        is_input: ``(B,)`` boolean, ``True`` for real observations, ``False`` for pseudo views.
    """

    times: Tensor
    cameras: Cameras
    rgb: Tensor
    alpha: Tensor
    view_ids: Tensor
    frame_ids: Tensor
    is_input: Tensor

    def __len__(self) -> int:
        return self.times.shape[0]

    def to(self, device: torch.device | str) -> FrameBatch:
        return FrameBatch(
            self.times.to(device),
            self.cameras.to(device),
            self.rgb.to(device),
            self.alpha.to(device),
            self.view_ids.to(device),
            self.frame_ids.to(device),
            self.is_input.to(device),
        )


def motion_mask(rgb: Tensor, alpha: Tensor | None = None, *, threshold: float = 0.02) -> Tensor:
    """The dynamic region of each view: pixels whose appearance changes anywhere in the clip.

    The one definition ``ds4d test`` (through :meth:`ViewSet.dynamic_mask`) and ``ds4d eval``
    share: a pixel is dynamic when, in some frame, its premultiplied colour ``rgb * alpha`` or
    its ``alpha`` differs from that pixel's temporal median by more than ``threshold`` (largest
    absolute difference over the four values). Premultiplied colour and alpha fix the pixel
    on every background, so the mask does not depend on the background the frames are shown
    on: a dark object moving over an empty background is dynamic on black and on white alike
    (premultiplied colour alone missed it, a white composite alone caught it). Opaque frames
    (``alpha=None``, e.g. RGB files) are judged by their colour.

    Args:
        rgb: ``(V, T, H, W, 3)`` straight colour in ``[0, 1]``.
        alpha: ``(V, T, H, W, 1)`` coverage, or ``None`` for opaque frames.
        threshold: Largest deviation from the temporal median that still counts as static.

    Returns:
        ``(V, T, H, W, 1)`` boolean, the same mask repeated for every frame of a view.
    """
    if alpha is not None and not isinstance(alpha, Tensor):
        # The former signature was motion_mask(frames, threshold): make that call fail loudly.
        raise TypeError("motion_mask(rgb, alpha=None, *, threshold=0.02): alpha must be a tensor")
    values = rgb if alpha is None else torch.cat([rgb * alpha, alpha], dim=-1)
    median = values.median(dim=1, keepdim=True).values
    moving = (values - median).abs().amax(dim=-1, keepdim=True).amax(dim=1, keepdim=True)
    return (moving > threshold).expand(*rgb.shape[:-1], 1)
