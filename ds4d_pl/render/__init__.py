"""Gaussian rasterisation backends behind one :class:`~ds4d_pl.render.base.Renderer` protocol.

``build_renderer("auto")`` picks gsplat's CUDA rasteriser when CUDA and gsplat are available and
the pure-PyTorch reference otherwise, so every code path runs on CPU.
"""

from __future__ import annotations

from typing import Any

import torch

from ds4d_pl.render.base import GaussianParams, Renderer, RenderOutput, eval_sh, rgb_to_sh0
from ds4d_pl.render.torch_raster import TorchRasterizer, project_gaussians

#: Backend names accepted by :func:`build_renderer` (besides ``"auto"``).
RENDERERS = ("torch", "gsplat")

__all__ = [
    "RENDERERS",
    "GaussianParams",
    "RenderOutput",
    "Renderer",
    "TorchRasterizer",
    "build_renderer",
    "eval_sh",
    "project_gaussians",
    "rgb_to_sh0",
]


def _gsplat_importable() -> bool:
    try:
        import gsplat  # noqa: F401
    except Exception:  # a broken CUDA extension raises more than ImportError
        return False
    return True


def build_renderer(backend: str = "auto", **kwargs: Any) -> Renderer:
    """Construct a renderer by name.

    Args:
        backend: ``"auto"`` (gsplat when CUDA is available and gsplat imports, else
            ``torch``), ``"torch"`` or ``"gsplat"``.
        **kwargs: Knobs forwarded to the backend's constructor (``tile_size``, ``near``,
            ``far``, ``eps2d``, ... see each class).

    Returns:
        The renderer.

    Raises:
        ValueError: Unknown backend name.
        RuntimeError: ``"gsplat"`` requested without CUDA or without an importable gsplat.
    """
    if backend == "auto":
        backend = "gsplat" if torch.cuda.is_available() and _gsplat_importable() else "torch"
    if backend == "torch":
        return TorchRasterizer(**kwargs)
    if backend == "gsplat":
        if not torch.cuda.is_available():
            raise RuntimeError(
                "renderer 'gsplat' needs a CUDA device, but torch.cuda.is_available() is False; "
                "use backend='torch' (or 'auto') on CPU"
            )
        from ds4d_pl.render.gsplat import GsplatRenderer

        return GsplatRenderer(**kwargs)
    raise ValueError(f"unknown renderer {backend!r}; choose one of {('auto', *RENDERERS)}")
