"""Degraded pseudo views: oracle renders made to look like real Zero123++ output.

Oracle pseudo views (exact renders of the true object) are far better than what a multi-view
generator gives for a real video. :func:`degrade_pseudo_views` adds the defects real generated
views have, each with its own severity knob in :class:`DegradeConfig` (0 turns it off):

* **hallucinated appearance** where the input camera does not see the surface: the colour of
  another plausible texture, the same within a view, drifting in hue over the clip (each frame
  is generated on its own, so the unseen side is re-invented every frame). The texture and the
  "unseen" mask come from the caller (the synthetic object renders them, see
  :func:`ds4d_pl.data.parsers.synthetic.make_synthetic_scene`);
* **badly wrong views** (``wrong_views`` of them, chosen by the seed): the view shows the
  images of the opposite pose (``wrong_mode="pose"``) or is shifted by a quarter of the image
  (``"shift"``), in every frame;
* **per-view framing error**: one scale about the image centre and one shift per view, fixed
  over the clip (the generator sizes and centres each pose a little differently);
* **per-frame flicker**: a small shift (``jitter``) and a colour gain and offset per channel,
  drawn independently for every view and frame;
* **soft or noisy alpha**: a Gaussian blur of the alpha (the colour is extended into the new
  soft band, not the background's) and bounded uniform noise on the soft band.

They are applied in that order. Every defect draws from its own random stream derived from
``DegradeConfig.seed``, so the same seed gives the same views, and turning one knob on or off
does not change what the others draw. Geometric amounts are fractions of the image side, so a
preset means the same at every resolution.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from ds4d_pl.data.align import similarity_warp

__all__ = [
    "WRONG_SHIFT",
    "DegradeConfig",
    "DegradedViews",
    "Defects",
    "degrade_pseudo_views",
    "draw_defects",
    "hue_rotate",
]

#: Shift of a ``wrong_mode="shift"`` view, as a fraction of the image side.
WRONG_SHIFT = 0.25
# Straight colour stored where the degraded views are fully transparent (the object protocol's
# white background, as the oracle renders).
_FILL = 1.0
# Independent random streams, one per defect.
_STREAMS = ("framing", "wrong", "jitter", "gain", "offset", "drift", "alpha_noise")

# Upper bound of each severity knob (all start at 0 = off).
_LIMITS = {
    "hallucinate": 1.0,
    "hallucinate_drift": 0.5,
    "flicker_gain": 1.0,
    "flicker_offset": 1.0,
    "jitter": 0.25,
    "scale_error": 0.45,
    "center_error": 0.25,
    "alpha_blur": 0.1,
    "alpha_noise": 1.0,
}


@dataclass(frozen=True)
class DegradeConfig:
    """Severity of each defect of :func:`degrade_pseudo_views`; 0 turns a defect off.

    The defaults are a moderate, Zero123++-like level.

    Attributes:
        seed: Seed of every random draw.
        hallucinate: Strength in ``[0, 1]`` of the invented appearance on surface the input
            camera does not see (1: the other texture replaces the true one there).
        hallucinate_drift: Peak hue rotation of the invented appearance over the clip, in turns
            (0.05 = 18°).
        flicker_gain: Per view and frame, each channel is multiplied by a gain in
            ``[1 - flicker_gain, 1 + flicker_gain]``.
        flicker_offset: ... and offset by a value in ``[-flicker_offset, flicker_offset]``.
        jitter: Per view and frame, a shift of up to this fraction of the image side per axis.
        scale_error: Per view, a scale in ``[1 - scale_error, 1 + scale_error]`` about the
            image centre (fixed over the clip).
        center_error: Per view, a shift of up to this fraction of the image side per axis
            (fixed over the clip).
        alpha_blur: Standard deviation of the alpha's Gaussian blur, as a fraction of the side.
        alpha_noise: Uniform noise of at most this amplitude on the soft band of the alpha.
        wrong_views: How many views are badly wrong (0 to the number of pseudo views).
        wrong_mode: ``"pose"`` (a wrong view shows the opposite view's images) or ``"shift"``
            (it is shifted by :data:`WRONG_SHIFT` of the image side).
    """

    seed: int = 0
    hallucinate: float = 0.7
    hallucinate_drift: float = 0.04
    flicker_gain: float = 0.06
    flicker_offset: float = 0.03
    jitter: float = 0.004
    scale_error: float = 0.08
    center_error: float = 0.03
    alpha_blur: float = 0.006
    alpha_noise: float = 0.1
    wrong_views: int = 1
    wrong_mode: Literal["pose", "shift"] = "pose"

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(
                f"DegradeConfig.seed must be a non-negative integer; got {self.seed!r}"
            )
        for name, limit in _LIMITS.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"DegradeConfig.{name} must be a number; got {value!r}")
            if not 0.0 <= value <= limit:
                raise ValueError(f"DegradeConfig.{name} must be in [0, {limit}]; got {value!r}")
        n = self.wrong_views
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"DegradeConfig.wrong_views must be an integer >= 0; got {n!r}")
        if self.wrong_mode not in ("pose", "shift"):
            raise ValueError(
                f"DegradeConfig.wrong_mode must be 'pose' or 'shift'; got {self.wrong_mode!r}"
            )

    def knobs(self) -> dict:
        """The settings as a plain dict (for provenance records)."""
        return asdict(self)

    def summary(self) -> str:
        """``"degraded(seed=0,hallucinate=0.7,...)"``: the settings in one string."""
        parts = ",".join(f"{k}={v}" for k, v in asdict(self).items())
        return f"degraded({parts})"


@dataclass
class Defects:
    """The random draws of one degradation, for ``V`` pseudo views and ``T`` frames.

    Attributes:
        view_scale: ``(V,)`` per-view scale about the image centre.
        view_shift: ``(V, 2)`` per-view shift in pixels ``(dx, dy)``.
        jitter: ``(V, T, 2)`` per-frame shift in pixels.
        wrong: Indices (into the pseudo views) of the badly wrong views, sorted.
        wrong_shift: ``(V, 2)`` extra shift in pixels (non-zero only for ``"shift"`` views).
        gain: ``(V, T, 3)`` colour gains.
        offset: ``(V, T, 3)`` colour offsets.
        hue: ``(T,)`` hue rotation of the invented appearance, in radians.
    """

    view_scale: Tensor
    view_shift: Tensor
    jitter: Tensor
    wrong: list[int]
    wrong_shift: Tensor
    gain: Tensor
    offset: Tensor
    hue: Tensor


@dataclass
class DegradedViews:
    """Output of :func:`degrade_pseudo_views`: ``(V, T, H, W, ·)`` tensors and the draws."""

    rgb: Tensor
    alpha: Tensor
    dyn_mask: Tensor | None
    defects: Defects


def _stream(seed: int, name: str) -> torch.Generator:
    return torch.Generator().manual_seed(1_000_003 * seed + 7919 * _STREAMS.index(name) + 11)


def _symmetric(shape: tuple[int, ...], amplitude: float, g: torch.Generator) -> Tensor:
    """Uniform in ``[-amplitude, amplitude]``."""
    return (2.0 * torch.rand(shape, generator=g) - 1.0) * amplitude


def draw_defects(
    cfg: DegradeConfig, num_views: int, times: Tensor, size: tuple[int, int]
) -> Defects:
    """Draw every random amount of a degradation.

    Args:
        cfg: Severities and seed.
        num_views: Number of pseudo views ``V``.
        times: ``(T,)`` frame times in ``[0, 1]``.
        size: ``(H, W)`` of the views (shifts are returned in their pixels).

    Returns:
        The :class:`Defects`.
    """
    if cfg.wrong_views > num_views:
        raise ValueError(
            f"DegradeConfig.wrong_views={cfg.wrong_views} but there are only {num_views} "
            "pseudo views"
        )
    t = len(times)
    h, w = size
    px = torch.tensor([float(w), float(h)])
    g = _stream(cfg.seed, "framing")
    view_scale = 1.0 + _symmetric((num_views,), cfg.scale_error, g)
    view_shift = _symmetric((num_views, 2), cfg.center_error, g) * px
    g = _stream(cfg.seed, "wrong")
    wrong = sorted(torch.randperm(num_views, generator=g)[: cfg.wrong_views].tolist())
    angle = torch.rand(num_views, generator=g) * 2 * math.pi
    wrong_shift = torch.zeros(num_views, 2)
    if cfg.wrong_mode == "shift":
        for v in wrong:
            direction = torch.stack([torch.cos(angle[v]), torch.sin(angle[v])])
            wrong_shift[v] = WRONG_SHIFT * direction * px
    jitter = _symmetric((num_views, t, 2), cfg.jitter, _stream(cfg.seed, "jitter")) * px
    gain = 1.0 + _symmetric((num_views, t, 3), cfg.flicker_gain, _stream(cfg.seed, "gain"))
    offset = _symmetric((num_views, t, 3), cfg.flicker_offset, _stream(cfg.seed, "offset"))
    phase = float(torch.rand((), generator=_stream(cfg.seed, "drift"))) * 2 * math.pi
    hue = 2 * math.pi * cfg.hallucinate_drift * torch.sin(2 * math.pi * times.float() + phase)
    return Defects(view_scale, view_shift, jitter, wrong, wrong_shift, gain, offset, hue)


def hue_rotate(rgb: Tensor, angle: Tensor) -> Tensor:
    """Rotate colours ``(..., 3)`` about the grey axis by ``angle`` (radians, broadcast to
    ``rgb[..., 0]``): the hue turns while grey levels stay; clamped to ``[0, 1]``."""
    c, s = torch.cos(angle)[..., None], torch.sin(angle)[..., None]
    k = torch.full((3,), 1.0 / math.sqrt(3.0), dtype=rgb.dtype)
    # Rodrigues' rotation about the unit axis k = (1, 1, 1) / sqrt(3).
    cross = torch.linalg.cross(k.expand_as(rgb), rgb, dim=-1)
    along = (rgb * k).sum(-1, keepdim=True) * k
    return (rgb * c + cross * s + along * (1.0 - c)).clamp(0.0, 1.0)


def _gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of ``(N, C, H, W)`` with zero padding."""
    radius = max(1, math.ceil(3.0 * sigma))
    k = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=x.dtype) / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    x = F.conv2d(x, k.reshape(1, 1, 1, -1).expand(c, 1, 1, -1), padding=(0, radius), groups=c)
    return F.conv2d(x, k.reshape(1, 1, -1, 1).expand(c, 1, -1, 1), padding=(radius, 0), groups=c)


def _soften_alpha(
    rgb: Tensor, alpha: Tensor, cfg: DegradeConfig, g: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Blur the alpha, extend colour into the new soft band, add noise on the band."""
    shape = alpha.shape
    h, w = shape[-3:-1]
    if cfg.alpha_blur > 0:
        sigma = cfg.alpha_blur * max(h, w)
        a = alpha.reshape(-1, h, w, 1).permute(0, 3, 1, 2)
        pm = (rgb * alpha).reshape(-1, h, w, 3).permute(0, 3, 1, 2)
        blurred = _gaussian_blur(torch.cat([pm, a], dim=1), sigma).permute(0, 2, 3, 1)
        blurred = blurred.reshape(*shape[:-1], 4)
        a_new = blurred[..., 3:].clamp(0.0, 1.0)
        # Pixels the blur newly covers get the nearby object colour (the blurred premultiplied
        # colour), not the background's stored white.
        spread = blurred[..., :3] / a_new.clamp_min(1e-4)
        rgb = torch.where(alpha > 0, rgb, torch.where(a_new > 1e-4, spread, rgb)).clamp(0, 1)
        alpha = a_new
    if cfg.alpha_noise > 0:
        band = 4.0 * alpha * (1.0 - alpha)  # 0 where fully in or out, 1 at alpha 0.5
        noise = _symmetric(tuple(shape), cfg.alpha_noise, g)
        alpha = (alpha + noise * band).clamp(0.0, 1.0)
    return rgb, alpha


def degrade_pseudo_views(
    rgb: Tensor,
    alpha: Tensor,
    times: Tensor,
    cfg: DegradeConfig,
    dyn_mask: Tensor | None = None,
    invented: Tensor | None = None,
    unseen: Tensor | None = None,
) -> DegradedViews:
    """Apply every defect of ``cfg`` to ``V`` pseudo views (see the module docstring).

    Args:
        rgb: ``(V, T, H, W, 3)`` straight colour of the pseudo views (not the input view).
        alpha: ``(V, T, H, W, 1)`` coverage.
        times: ``(T,)`` frame times in ``[0, 1]``.
        cfg: Severities and seed.
        dyn_mask: Optional ``(V, T, H, W, 1)`` boolean moving-pixel mask, moved with the images.
        invented: ``(V, T, H, W, 3)`` the other texture's colour (needed when
            ``cfg.hallucinate > 0``).
        unseen: ``(V, T, H, W, 1)`` boolean, ``True`` where the input camera does not see the
            surface (needed when ``cfg.hallucinate > 0``).

    Returns:
        The degraded views (new tensors) and the :class:`Defects` drawn.
    """
    if rgb.ndim != 5 or rgb.shape[-1] != 3 or tuple(alpha.shape) != (*rgb.shape[:-1], 1):
        raise ValueError(
            f"degrade_pseudo_views needs rgb (V, T, H, W, 3) and alpha (V, T, H, W, 1); got "
            f"{tuple(rgb.shape)} and {tuple(alpha.shape)}"
        )
    v, t, h, w, _ = rgb.shape
    defects = draw_defects(cfg, v, times, (h, w))
    rgb, alpha = rgb.clone(), alpha.clone()

    if cfg.hallucinate > 0:
        if invented is None or unseen is None:
            raise ValueError(
                "degrade_pseudo_views: hallucinate > 0 needs the invented texture and the "
                "unseen mask"
            )
        drifted = hue_rotate(invented, defects.hue[None, :, None, None].expand(v, t, h, w))
        mixed = rgb + cfg.hallucinate * (drifted - rgb)
        rgb = torch.where(unseen & (alpha > 0), mixed, rgb)

    dyn = None if dyn_mask is None else dyn_mask.clone()
    if defects.wrong and cfg.wrong_mode == "pose":
        # The view opposite in the pose list (for Zero123++: azimuth + 180°).
        src_rgb, src_alpha = rgb.clone(), alpha.clone()
        src_dyn = None if dyn is None else dyn.clone()
        for k in defects.wrong:
            other = (k + v // 2) % v
            rgb[k], alpha[k] = src_rgb[other], src_alpha[other]
            if dyn is not None and src_dyn is not None:
                dyn[k] = src_dyn[other]

    scale = defects.view_scale[:, None].expand(v, t).reshape(-1)
    shift = (defects.view_shift[:, None] + defects.jitter + defects.wrong_shift[:, None]).reshape(
        -1, 2
    )
    # Resample only the images that move: the others stay bit-identical.
    moving = ((scale != 1) | (shift != 0).any(-1)).nonzero()[:, 0]
    if len(moving):
        flat_rgb = rgb.reshape(v * t, h, w, 3).clone()
        flat_alpha = alpha.reshape(v * t, h, w, 1).clone()
        flat_rgb[moving], flat_alpha[moving] = similarity_warp(
            flat_rgb[moving], flat_alpha[moving], scale[moving], shift[moving], _FILL
        )
        rgb, alpha = flat_rgb.reshape(v, t, h, w, 3), flat_alpha.reshape(v, t, h, w, 1)
        if dyn is not None:
            flat_dyn = dyn.reshape(v * t, h, w, 1).clone()
            _, moved = similarity_warp(
                torch.zeros(len(moving), h, w, 3),
                flat_dyn[moving].float(),
                scale[moving],
                shift[moving],
            )
            flat_dyn[moving] = moved > 0.5
            dyn = flat_dyn.reshape(v, t, h, w, 1)

    if cfg.flicker_gain > 0 or cfg.flicker_offset > 0:
        gain = defects.gain[:, :, None, None]
        offset = defects.offset[:, :, None, None]
        rgb = torch.where(alpha > 0, (rgb * gain + offset).clamp(0.0, 1.0), rgb)

    if cfg.alpha_blur > 0 or cfg.alpha_noise > 0:
        rgb, alpha = _soften_alpha(rgb, alpha, cfg, _stream(cfg.seed, "alpha_noise"))
    return DegradedViews(rgb, alpha, dyn, defects)
