"""DSFD's dynamic energy at the Gaussians, and the colours the viewer paints it with.

DSFD splits every frame feature token into a static part (along the view's reference feature)
and a dynamic residual; the energy ``‖dynamic‖ / ‖f‖`` of a token (``(V, T, h, w)`` maps, one
per training view and frame) says how much of it the method reads as motion. The viewer shows
it per Gaussian: the energy of the input view (view 0, the real observation) at the Gaussian's
projection at the current time, which is where that Gaussian's conditioning feature is read.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ds4d_pl.cameras import Cameras
from ds4d_pl.conditioning.tssf import sample_point_features

#: Colour of a Gaussian the input view does not see (outside the image, behind the camera or
#: occluded): grey, which the energy colour scale never uses.
UNSEEN_RGB = (0.55, 0.55, 0.55)

# Colour scale from low (static) to high (dynamic) energy: the stops of the perceptually uniform
# viridis map at 0, 1/4, 1/2, 3/4 and 1, linearly interpolated between them.
_STOPS = np.array(
    [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]],
    dtype=np.float32,
) / np.float32(255.0)


def frame_weights(times: Tensor, t: float) -> tuple[int, int, float]:
    """The two frames around ``t`` and the weight of the later one (linear in time).

    Args:
        times: ``(T,)`` sorted frame times.
        t: Query time; clamped to ``[times[0], times[-1]]``.

    Returns:
        ``(lo, hi, w)`` with ``value(t) = (1 - w) · value[lo] + w · value[hi]``.
    """
    if times.ndim != 1 or len(times) == 0:
        raise ValueError(f"times must be a non-empty (T,) tensor, got {tuple(times.shape)}")
    if len(times) == 1:
        return 0, 0, 0.0
    tt = torch.as_tensor(float(t), dtype=times.dtype).clamp(times[0], times[-1]).reshape(1)
    hi = int(torch.searchsorted(times, tt).clamp(1, len(times) - 1))
    lo = hi - 1
    span = float(times[hi] - times[lo])
    w = 0.0 if span <= 0 else min(max((float(tt) - float(times[lo])) / span, 0.0), 1.0)
    return lo, hi, w


@torch.no_grad()
def energy_at_points(
    energy: Tensor,
    times: Tensor,
    t: float,
    cameras: Cameras,
    points: Tensor,
    depth: Tensor | None = None,
    depth_tolerance: float = 0.05,
) -> Tensor:
    """Energy of one view sampled at the projections of ``points`` at time ``t``.

    With a fixed camera the maps of the two frames around ``t`` are blended linearly (as the
    conditioner blends its feature maps); with a camera per frame the nearest frame is read
    through its own camera, since maps seen from two different cameras do not line up.
    Sampling is bilinear at sub-token precision
    (:func:`~ds4d_pl.conditioning.tssf.sample_point_features`), with its visibility rule.

    Args:
        energy: ``(T, h, w)`` energy maps of the view.
        times: ``(T,)`` frame times.
        t: Normalised time.
        cameras: The view's camera: 1 (fixed) or ``T`` (one per frame).
        points: ``(N, 3)`` world positions (the Gaussians at time ``t``).
        depth: Optional ``(H', W')`` depth of the scene rendered from the camera at time ``t``;
            points behind it by more than ``depth_tolerance`` (relative) count as unseen.
        depth_tolerance: Relative slack of the occlusion test.

    Returns:
        ``(N,)`` energies, NaN where the view does not see the point.
    """
    if energy.ndim != 3 or energy.shape[0] != times.shape[0]:
        raise ValueError(
            f"energy must be (T, h, w) with T={times.shape[0]} frames, got {tuple(energy.shape)}"
        )
    if len(cameras) not in (1, len(times)):
        raise ValueError(f"expected 1 or {len(times)} cameras, got {len(cameras)}")
    energy = energy.to(points.device, torch.float32)
    times = times.detach().cpu().float()
    if len(cameras) == 1:
        lo, hi, w = frame_weights(times, t)
        maps = energy[lo] * (1.0 - w) + energy[hi] * w
        cam = cameras
    else:
        frame = int((times - float(t)).abs().argmin())
        maps, cam = energy[frame], cameras[frame]
    pf = sample_point_features(
        points,
        cam.to(points.device),
        maps[None, None],
        None if depth is None else depth.reshape(1, *depth.shape[-2:]).to(points.device),
        depth_tolerance,
    )
    values = pf.features[0, :, 0]
    return torch.where(pf.visible[0], values, torch.full_like(values, float("nan")))


def energy_colors(values: np.ndarray, scale: float) -> np.ndarray:
    """Colours of energies: viridis from 0 (dark violet, static) to ``scale`` (yellow, dynamic).

    Args:
        values: ``(N,)`` energies; NaN marks an unseen Gaussian.
        scale: Energy drawn at the top of the scale (larger values are clipped), ``> 0``.

    Returns:
        ``(N, 3)`` float32 colours in ``[0, 1]``; :data:`UNSEEN_RGB` where ``values`` is NaN.
    """
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    values = np.asarray(values, dtype=np.float32)
    unseen = ~np.isfinite(values)
    x = np.clip(np.where(unseen, 0.0, values) / np.float32(scale), 0.0, 1.0)
    pos = x * (len(_STOPS) - 1)
    lo = np.minimum(pos.astype(np.int64), len(_STOPS) - 2)
    frac = (pos - lo)[:, None]
    rgb = _STOPS[lo] * (1.0 - frac) + _STOPS[lo + 1] * frac
    rgb[unseen] = UNSEEN_RGB
    return rgb.astype(np.float32)
