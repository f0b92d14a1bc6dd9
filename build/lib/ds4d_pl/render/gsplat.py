"""CUDA backend: a thin adapter from our tensors to ``gsplat.rasterization``.

gsplat is imported lazily so that this module (and the package) import on machines without it.
Both sides use OpenCV world-to-camera matrices and the same SH basis (``SH + 0.5``, clamped at
0), so no axis or colour conversion is needed.
"""

from __future__ import annotations

from torch import Tensor

from ds4d_pl.cameras import Cameras
from ds4d_pl.render.base import GaussianParams, RenderOutput


class GsplatRenderer:
    """:class:`~ds4d_pl.render.base.Renderer` backed by gsplat's fused CUDA rasteriser.

    Args:
        tile_size: Tile edge in pixels.
        near: Near-plane depth.
        far: Far-plane depth.
        eps2d: Low-pass dilation (px²) of the 2D covariances.
        antialiased: Use gsplat's ``"antialiased"`` rasterize mode (opacity compensation)
            instead of ``"classic"``.
        packed: gsplat's memory-saving packed mode; off by default because ``means2d`` must be
            the dense ``(C, N, 2)`` tensor the densification strategy reads.

    Raises:
        RuntimeError: gsplat cannot be imported.
    """

    name = "gsplat"

    def __init__(
        self,
        tile_size: int = 16,
        near: float = 0.01,
        far: float = 1e10,
        eps2d: float = 0.3,
        antialiased: bool = False,
        packed: bool = False,
    ) -> None:
        try:
            from gsplat import rasterization
        except Exception as err:  # missing package or broken CUDA extension
            raise RuntimeError(f"renderer 'gsplat' needs the gsplat package: {err}") from err
        if packed:
            raise ValueError("GsplatRenderer(packed=True) would not return dense (C, N) radii")
        self._rasterization = rasterization
        self.tile_size = tile_size
        self.near = near
        self.far = far
        self.eps2d = eps2d
        self.antialiased = antialiased

    def __call__(
        self, gaussians: GaussianParams, cameras: Cameras, background: Tensor
    ) -> RenderOutput:
        """Render ``gaussians`` from every camera (see the Renderer protocol)."""
        cams = cameras.to(gaussians.means.device)
        c = len(cams)
        colors, alphas, info = self._rasterization(
            means=gaussians.means,
            quats=gaussians.quats,
            scales=gaussians.scales,
            opacities=gaussians.opacities,
            colors=gaussians.sh,
            viewmats=cams.viewmats.to(gaussians.means),
            Ks=cams.K.to(gaussians.means),
            width=cams.width,
            height=cams.height,
            near_plane=self.near,
            far_plane=self.far,
            eps2d=self.eps2d,
            sh_degree=gaussians.sh_degree,
            packed=False,
            tile_size=self.tile_size,
            backgrounds=background.to(gaussians.means).expand(c, 3),
            render_mode="RGB+ED",
            rasterize_mode="antialiased" if self.antialiased else "classic",
        )
        means2d = info["means2d"]
        if means2d.requires_grad:
            means2d.retain_grad()
        radii = info["radii"]
        if radii.ndim == 3:  # gsplat >= 1.5 reports per-axis radii (C, N, 2)
            radii = radii.max(dim=-1).values
        alpha = alphas
        depth = colors[..., 3:4]
        # gsplat divides by max(alpha, 1e-10); zero it where nothing was hit, as the protocol says.
        depth = depth * (alpha > 1e-6)
        return RenderOutput(
            rgb=colors[..., :3], alpha=alpha, depth=depth, means2d=means2d, radii=radii.int()
        )
