"""What the viewer shows, as plain arrays: the contract between a model and the GUI.

The GUI (:mod:`ds4d_pl.viewer.app`) reads a :class:`ViewerSource` and nothing else, so it knows
neither Lightning nor how a run is stored; :mod:`ds4d_pl.viewer.load` is the one adapter that
builds a source from a run. The helpers here turn the package's own types
(:class:`~ds4d_pl.render.base.GaussianParams`, :class:`~ds4d_pl.data.types.ViewSet`) into the
arrays a splat viewer takes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F

from ds4d_pl.data.types import ViewSet
from ds4d_pl.render.base import SH_C0, GaussianParams, quat_to_rotmat


@dataclass(frozen=True)
class Splats:
    """Gaussians at one instant, in the form a splat viewer draws.

    Attributes:
        centers: ``(N, 3)`` float32 world positions.
        covariances: ``(N, 3, 3)`` float32 world covariances ``R diag(s²) Rᵀ``.
        rgbs: ``(N, 3)`` float32 colours in ``[0, 1]``.
        opacities: ``(N, 1)`` float32 opacities in ``[0, 1]``.
    """

    centers: np.ndarray
    covariances: np.ndarray
    rgbs: np.ndarray
    opacities: np.ndarray

    def __post_init__(self) -> None:
        n = self.centers.shape[0]
        expected = {
            "centers": (n, 3),
            "covariances": (n, 3, 3),
            "rgbs": (n, 3),
            "opacities": (n, 1),
        }
        for name, shape in expected.items():
            got = tuple(getattr(self, name).shape)
            if got != shape:
                raise ValueError(f"Splats.{name} must be {shape}, got {got}")

    def __len__(self) -> int:
        return self.centers.shape[0]


@dataclass(frozen=True)
class CameraGroup:
    """Cameras of one kind (input, pseudo or evaluation views) with their images.

    Attributes:
        name: Group name shown in the GUI (``input``, ``pseudo``, ``eval``).
        c2w: ``(K, T, 4, 4)`` float32 camera-to-world matrices in OpenCV axes, one per view and
            frame (repeated over frames for fixed cameras).
        fov_y: ``(K,)`` vertical fields of view in radians.
        aspect: Image width over height (shared by the group).
        images: ``(K, T, h, w, 3)`` uint8 frames composited on the run's background.
        times: ``(T,)`` normalised times of the frames.
    """

    name: str
    c2w: np.ndarray
    fov_y: np.ndarray
    aspect: float
    images: np.ndarray
    times: np.ndarray

    def __post_init__(self) -> None:
        if self.images.ndim != 5 or self.images.shape[-1] != 3 or self.images.dtype != np.uint8:
            raise ValueError(
                f"CameraGroup {self.name!r}: images must be uint8 (K, T, h, w, 3), got "
                f"{self.images.dtype} {tuple(self.images.shape)}"
            )
        k, t = self.images.shape[:2]
        if tuple(self.c2w.shape) != (k, t, 4, 4):
            raise ValueError(
                f"CameraGroup {self.name!r}: c2w must be {(k, t, 4, 4)}, got {self.c2w.shape}"
            )
        if tuple(self.fov_y.shape) != (k,) or tuple(self.times.shape) != (t,):
            raise ValueError(
                f"CameraGroup {self.name!r}: fov_y must be ({k},) and times ({t},), got "
                f"{self.fov_y.shape} and {self.times.shape}"
            )

    @property
    def num_views(self) -> int:
        return self.images.shape[0]

    def frame_at(self, t: float) -> int:
        """Index of the frame nearest to time ``t``."""
        return nearest_frame(self.times, t)


@runtime_checkable
class ViewerSource(Protocol):
    """A 4D asset as the viewer sees it.

    Attributes:
        name: Scene or object name (page title).
        times: ``(T,)`` normalised times of the training frames, in ``[0, 1]``.
        camera_groups: The dataset's cameras with their images.
        energy_scale: The energy shown at the top of the colour scale (the largest value of the
            energy maps), or ``None`` when the run has no DSFD energy.
    """

    name: str
    times: np.ndarray
    camera_groups: list[CameraGroup]
    energy_scale: float | None

    @property
    def num_frames(self) -> int:
        """Number of training frames ``T``."""
        ...

    def gaussians_at(self, t: float) -> Splats:
        """The deformed Gaussians at normalised time ``t`` in ``[0, 1]``."""
        ...

    def energy_at(self, t: float) -> np.ndarray | None:
        """DSFD's dynamic energy of every Gaussian at time ``t``.

        Returns:
            ``(N,)`` float32 values in ``[0, 1]``, in the order of :meth:`gaussians_at`, NaN
            for a Gaussian the sampled view does not see; ``None`` when the run has no energy.
        """
        ...


def nearest_frame(times: np.ndarray, t: float) -> int:
    """Index of the entry of ``times`` nearest to ``t`` (the earlier one on a tie)."""
    return int(np.argmin(np.abs(np.asarray(times, dtype=np.float64) - float(t))))


@torch.no_grad()
def splats_from_gaussians(params: GaussianParams) -> Splats:
    """Activated Gaussians as viewer splats.

    Colours are the view-independent SH band (``SH_C0 · dc + 0.5``, clamped to ``[0, 1]``): a
    splat viewer takes one colour per Gaussian, and higher bands would need the viewing
    direction of every frame the browser draws.

    Args:
        params: Activated Gaussians (any device; quaternions need not be normalised).

    Returns:
        :class:`Splats` on the CPU.
    """
    rot = quat_to_rotmat(params.quats.detach().float())
    scales = params.scales.detach().float()
    cov = rot @ torch.diag_embed(scales * scales) @ rot.transpose(-1, -2)
    rgb = (SH_C0 * params.sh[:, 0].detach().float() + 0.5).clamp(0.0, 1.0)
    return Splats(
        centers=params.means.detach().float().cpu().numpy(),
        covariances=cov.cpu().numpy(),
        rgbs=rgb.cpu().numpy(),
        opacities=params.opacities.detach().float().clamp(0.0, 1.0)[:, None].cpu().numpy(),
    )


@torch.no_grad()
def camera_group(
    name: str,
    views: ViewSet,
    view_ids: list[int],
    background: torch.Tensor,
    max_image_size: int = 128,
) -> CameraGroup:
    """A :class:`CameraGroup` of some views of a :class:`ViewSet`.

    Images are shrunk (area-averaged) so their longer side is at most ``max_image_size``: every
    time the slider crosses a frame each frustum's image is sent to the browser again, and
    thumbnails keep scrubbing smooth.

    Args:
        name: Group name.
        views: The views.
        view_ids: Which views of ``views`` belong to the group.
        background: ``(3,)`` colour the images are composited on.
        max_image_size: Longest image side sent to the browser, ``>= 1``.

    Returns:
        The group.
    """
    if max_image_size < 1:
        raise ValueError(f"max_image_size must be >= 1, got {max_image_size}")
    if not view_ids or not all(0 <= v < views.num_views for v in view_ids):
        raise ValueError(f"view_ids must be a non-empty subset of 0..{views.num_views - 1}")
    t = views.num_frames
    c2w = torch.stack([views.cameras_at(f).c2w[view_ids] for f in range(t)], dim=1)
    # With a camera per frame, the intrinsics of each view's first frame stand for the view.
    fy = views.cameras_at(0).K[view_ids, 1, 1]
    h, w = views.image_size
    fov_y = 2.0 * torch.atan(0.5 * h / fy)
    rgb = views.composite(background.cpu().float())[view_ids]  # (K, T, H, W, 3)
    scale = min(1.0, max_image_size / max(h, w))
    if scale < 1.0:
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        flat = rgb.reshape(-1, h, w, 3).permute(0, 3, 1, 2)
        flat = F.interpolate(flat, size=size, mode="area")
        rgb = flat.permute(0, 2, 3, 1).reshape(len(view_ids), t, *size, 3)
    images = (rgb.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
    return CameraGroup(
        name=name,
        c2w=c2w.float().cpu().numpy(),
        fov_y=fov_y.float().cpu().numpy(),
        aspect=w / h,
        images=images.cpu().numpy(),
        times=views.times.float().cpu().numpy(),
    )
