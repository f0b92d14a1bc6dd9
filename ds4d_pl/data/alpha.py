"""Foreground alpha of images generated on a plain background (Zero123++ views).

Generative multi-view models paint the object on an opaque, flat background: the published
Zero123++ models use grey 0.5 (the Stable Diffusion VAE's zero), other tools white. Such an image
carries no alpha, so the alpha is derived from the background colour. Both the Zero123++ sampler
(:mod:`ds4d_pl.priors.zero123pp`) and the readers of precomputed pseudo views
(:mod:`ds4d_pl.data.parsers.common`) use the one function here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["background_alpha", "is_opaque"]


def background_alpha(
    rgb: Tensor, threshold: float = 0.08, background: float = 0.5, open_px: int = 1
) -> Tensor:
    """Foreground alpha of views generated on a plain background (grey 0.5 or white 1.0).

    A pixel is background when every channel is within ``threshold`` of ``background`` *and* it
    is connected to the image border through such pixels (a flood fill), so background-coloured
    parts inside the object stay foreground. Cleanup: a morphological opening of the foreground
    with a ``(2 open_px + 1)²`` square removes isolated specks and one-pixel fringes the
    generator leaves on the background.

    Args:
        rgb: ``(..., H, W, C)`` float in ``[0, 1]`` with ``C >= 3`` (only RGB is read); leading
            dimensions are a batch, filled in one pass.
        threshold: Max per-channel distance to ``background`` that counts as background.
        background: Grey level of the background.
        open_px: Radius of the opening (0: none).

    Returns:
        ``(..., H, W)`` float alpha in ``{0, 1}``.
    """
    if rgb.ndim < 3 or rgb.shape[-1] < 3:
        raise ValueError(f"background_alpha needs (..., H, W, 3) colour, got {tuple(rgb.shape)}")
    lead, (h, w) = rgb.shape[:-3], rgb.shape[-3:-1]
    near = ((rgb[..., :3] - background).abs() <= threshold).all(-1).reshape(-1, 1, h, w)
    reach = torch.zeros_like(near)
    reach[..., 0, :], reach[..., -1, :] = near[..., 0, :], near[..., -1, :]
    reach[..., :, 0], reach[..., :, -1] = near[..., :, 0], near[..., :, -1]
    cand = near.float()
    cur = reach.float()
    # Grow the border-connected background one pixel (8-neighbourhood) per pass until it stops;
    # the number of passes is the longest background path, not H * W, in practice.
    for _ in range(h * w):
        nxt = F.max_pool2d(cur, 3, 1, 1) * cand
        if torch.equal(nxt, cur):
            break
        cur = nxt
    fg = 1.0 - cur
    if open_px > 0:
        k = 2 * open_px + 1
        fg = -F.max_pool2d(-fg, k, 1, open_px)  # erode
        fg = F.max_pool2d(fg, k, 1, open_px)  # dilate
    return fg.reshape(*lead, h, w)


def is_opaque(alpha: Tensor) -> bool:
    """``True`` when every pixel of ``alpha`` is fully opaque (an alpha channel that says nothing).

    Image tools often save RGB images as RGBA with a constant 255 alpha; such a channel carries
    no silhouette.
    """
    return bool((alpha >= 1.0 - 0.5 / 255).all())
