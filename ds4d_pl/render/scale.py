"""Drawing fitted Gaussians at another resolution than they were fitted at.

A splat's look at its training resolution is its 2D covariance plus the renderer's low-pass
dilation (``eps2d``, in px² *of the training pixels*). Drawn at another pixel scale, the same
Gaussians are no longer the image that was fitted:

* **larger** (more pixels per radian), the dilation shrinks in world terms, the splats thin out
  and gaps open between them (a synthetic object fitted at 64² and drawn at 128²: 24.1 instead
  of 30.3 dB full-frame, ``benchmarks/results/render_scale.md``). Scaling the dilation by the
  square of the scale factor keeps each splat's footprint, and the render is then the fitted
  image sampled more densely;
* **smaller**, splats narrower than a pixel are point-sampled and alias (fitted at 128², drawn
  at 64²: 22.4 instead of 34.0 dB). Rendering at the fitted scale and averaging blocks of
  pixels is the box filter a camera applies.

:func:`at_fitted_scale` wraps a ``render(cameras, t)`` so that every call does whichever is
needed; :class:`ScalePlan` says what it did, for the run's ``metrics.json``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch.nn.functional as F
from torch import Tensor

from ds4d_pl.cameras import Cameras
from ds4d_pl.data.types import Scene4D
from ds4d_pl.render.base import RenderOutput

Render = Callable[[Cameras, Any], RenderOutput]

#: Pixel-scale ratios (drawn / fitted) within this factor either way count as the same scale
#: when deciding whether to warn about drawing natively (see ``DS4DSystem``).
SCALE_TOLERANCE = 1.5


def focal_px(cameras: Cameras) -> float:
    """Median horizontal focal length in pixels: the pixel scale of a batch of cameras."""
    return float(cameras.K[:, 0, 0].median())


def fitted_focal(scene: Scene4D) -> float:
    """The pixel scale the Gaussians of a fit on ``scene`` were fitted at (its training
    views' focal length in pixels)."""
    return focal_px(scene.train.cameras_at(0))


@dataclass(frozen=True)
class ScalePlan:
    """How a render at one pixel scale reproduces the image fitted at another.

    Attributes:
        ratio: Drawn / fitted pixel scale (focal lengths in pixels).
        supersample: Render this many times larger per axis, then average blocks down (1: no).
        dilation: Factor on the renderer's ``eps2d`` (1: unchanged).
    """

    ratio: float
    supersample: int = 1
    dilation: float = 1.0

    @classmethod
    def for_ratio(cls, ratio: float) -> ScalePlan:
        """The plan for drawing at ``ratio`` times the fitted pixel scale.

        Below the fitted scale the render is supersampled by the nearest integer factor; if
        that overshoots the fitted scale (0.45 → 2 → 0.9 does not; 0.6 → 2 → 1.2 does), the
        overshoot is drawn with the dilation scaled, as any scale above the fitted one is.
        """
        if not math.isfinite(ratio) or ratio <= 0:
            raise ValueError(f"pixel-scale ratio must be positive and finite, got {ratio}")
        k = max(1, math.floor(1.0 / ratio + 0.5))
        residual = k * ratio
        return cls(ratio, k, residual**2 if residual > 1.0 else 1.0)

    @property
    def identity(self) -> bool:
        return self.supersample == 1 and self.dilation == 1.0

    def describe(self) -> str:
        """What the plan does, in words (the run's log and ``metrics.md``)."""
        how = []
        if self.supersample > 1:
            how.append(f"rendered {self.supersample}x larger and averaged down")
        if self.dilation != 1.0:
            how.append(f"low-pass dilation x{self.dilation:.3g}")
        return " and ".join(how) or "drawn as fitted"

    def record(self) -> dict[str, float | int]:
        """The plan as plain values (``metrics.json``'s ``render_scale``)."""
        return {
            "ratio": round(self.ratio, 6),
            "supersample": self.supersample,
            "dilation": round(self.dilation, 6),
        }


def supersampled(render: Render, factor: int) -> Render:
    """``render(cameras, t)`` drawn at ``factor`` times the cameras' size and averaged down.

    Averaging the composited colour and the alpha alike is exact compositing: both are linear in
    the premultiplied colour. Depth is averaged weighted by alpha; ``means2d`` and ``radii`` are
    given in the output's pixels.
    """
    if factor < 1:
        raise ValueError(f"supersampling factor must be >= 1, got {factor}")
    if factor == 1:
        return render

    def draw(cameras: Cameras, t: Any) -> RenderOutput:
        out = render(cameras.resized(cameras.width * factor, cameras.height * factor), t)

        def pool(x: Tensor) -> Tensor:
            return F.avg_pool2d(x.permute(0, 3, 1, 2), factor).permute(0, 2, 3, 1)

        alpha = pool(out.alpha)
        depth = pool(out.depth * out.alpha) / alpha.clamp_min(1e-4)
        depth = depth * (alpha > 1e-6)
        radii = (out.radii + factor - 1) // factor
        return RenderOutput(pool(out.rgb), alpha, depth, out.means2d / factor, radii)

    return draw


@contextmanager
def dilated(renderer: object, factor: float) -> Iterator[None]:
    """Scale ``renderer.eps2d`` by ``factor`` for the block (renderers without one: no-op)."""
    eps2d = getattr(renderer, "eps2d", None)
    if eps2d is None or factor == 1.0:
        yield
        return
    renderer.eps2d = eps2d * factor
    try:
        yield
    finally:
        renderer.eps2d = eps2d


def at_fitted_scale(render: Render, renderer: object, fitted_focal: float) -> Render:
    """``render`` made to reproduce, at any resolution, the image fitted at ``fitted_focal``.

    Args:
        render: ``render(cameras, t)`` drawing through ``renderer``.
        renderer: The rasteriser whose ``eps2d`` the plan scales (a renderer without one, e.g.
            a volume renderer, only gets the supersampling).
        fitted_focal: Focal length in pixels of the views the Gaussians were fitted to.
    """
    if not math.isfinite(fitted_focal) or fitted_focal <= 0:
        raise ValueError(f"fitted focal length must be positive, got {fitted_focal}")

    def draw(cameras: Cameras, t: Any) -> RenderOutput:
        plan = ScalePlan.for_ratio(focal_px(cameras) / fitted_focal)
        with dilated(renderer, plan.dilation):
            return supersampled(render, plan.supersample)(cameras, t)

    return draw
