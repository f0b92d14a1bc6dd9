"""Per-image PSNR, SSIM and dynamic-region (masked) PSNR.

All metrics take images as ``(B, H, W, 3)`` in ``[0, 1]`` (the package's layout) and average
per-image scores over images, the convention of the 4D-GS and DS4D tables. ``data_range`` is
always passed explicitly: torchmetrics' default changed across versions and silently gives
different numbers.

Two SSIMs, the same Gaussian window (11 taps, σ 1.5, ``C1 = 0.01²``, ``C2 = 0.03²``) and two
border conventions, because published tables use both:

* :func:`ssim` (``standard``): the statistics are taken only where the whole window lies inside
  the image, and that map is averaged (scikit-image's ``structural_similarity`` with Gaussian
  weights, and torchmetrics 1.4, which reflect-pads and then crops the 5-pixel border off).
  It is written here rather than delegated, because torchmetrics 1.9 stopped cropping and now
  averages the reflect-padded border too: the number would depend on the installed version.
* :func:`ssim_zero_padded` (``4dgs``): the ``ssim`` of 3D-GS / 4D-GS ``utils/loss_utils.py``.
  The image is zero-padded by 5 pixels and the whole map, border included, is averaged. The
  zero padding darkens the border statistics, so on a photo it reads 0.002-0.009 higher than
  the standard one.

:func:`to_8bit` is the PNG round trip of ``torchvision.utils.save_image`` (``x·255 + 0.5``,
floored), which 4D-GS applies to renders and ground truth before scoring them.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric


def _check_pair(pred: Tensor, target: Tensor) -> None:
    if pred.shape != target.shape or pred.ndim != 4 or pred.shape[-1] != 3:
        raise ValueError(
            f"expected pred and target of one shape (B, H, W, 3), got {tuple(pred.shape)} and "
            f"{tuple(target.shape)}"
        )


def psnr_from_mse(mse: Tensor, data_range: float = 1.0) -> Tensor:
    """PSNR in dB from a mean squared error."""
    return 10.0 * torch.log10(data_range**2 / mse.clamp_min(1e-12))


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> Tensor:
    x = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-(x**2) / (2.0 * sigma**2))
    return g / g.sum()


def _ssim_map(pred: Tensor, target: Tensor, data_range: float, pad: int) -> Tensor:
    """SSIM map of ``(B, H, W, 3)`` images with an 11-tap σ=1.5 Gaussian window; ``pad`` zeros
    around the images (0: only where the window fits)."""
    _check_pair(pred, target)
    x, y = pred.permute(0, 3, 1, 2), target.permute(0, 3, 1, 2)
    if min(x.shape[-2:]) + 2 * pad < 11:
        raise ValueError(f"SSIM needs images of at least 11x11 pixels, got {tuple(x.shape[-2:])}")
    g = _gaussian_window().to(x)
    kernel = (g[:, None] * g[None, :]).expand(3, 1, 11, 11).contiguous()

    def blur(z: Tensor) -> Tensor:
        return torch.nn.functional.conv2d(z, kernel, padding=pad, groups=3)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    return num / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))


def ssim(pred: Tensor, target: Tensor, data_range: float = 1.0) -> Tensor:
    """Per-image SSIM (Gaussian window 11, σ 1.5) over the pixels where the window fits
    (the ``standard`` protocol), differentiable.

    Args:
        pred: ``(B, H, W, 3)``, ``H, W >= 11``.
        target: ``(B, H, W, 3)``.
        data_range: Value range of the images.

    Returns:
        ``(B,)`` SSIM values.
    """
    return _ssim_map(pred, target, data_range, pad=0).flatten(1).mean(1)


def ssim_zero_padded(pred: Tensor, target: Tensor, data_range: float = 1.0) -> Tensor:
    """Per-image SSIM as 3D-GS / 4D-GS compute it (the ``4dgs`` protocol): the images
    zero-padded by 5 pixels, the whole map averaged. Differentiable.

    Args:
        pred: ``(B, H, W, 3)`` in ``[0, 1]``.
        target: ``(B, H, W, 3)``.
        data_range: Value range of the images.

    Returns:
        ``(B,)`` SSIM values.
    """
    return _ssim_map(pred, target, data_range, pad=5).flatten(1).mean(1)


def to_8bit(images: Tensor) -> Tensor:
    """Images quantised the way ``torchvision.utils.save_image`` writes PNGs (floor of
    ``x·255 + 0.5``, clamped), back in ``[0, 1]``."""
    return torch.floor(images.clamp(0.0, 1.0) * 255.0 + 0.5) / 255.0


class _PerImageMean(Metric):
    """Mean over images of a per-image score (DDP-synced sum and count)."""

    higher_is_better = True
    full_state_update = False

    def __init__(self, data_range: float = 1.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.data_range = data_range
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def scores(self, pred: Tensor, target: Tensor) -> Tensor:
        """``(B,)`` scores of ``(B, H, W, 3)`` images."""
        raise NotImplementedError

    def update(self, pred: Tensor, target: Tensor) -> None:
        self.update_scores(self.scores(pred, target))

    def update_scores(self, values: Tensor) -> None:
        """Accumulate already computed per-image scores."""
        self.total += values.double().sum()
        self.count += values.numel()

    def compute(self) -> Tensor:
        return (self.total / self.count.clamp_min(1)).float()


class ImagePSNR(_PerImageMean):
    """PSNR per image, averaged over images."""

    def scores(self, pred: Tensor, target: Tensor) -> Tensor:
        _check_pair(pred, target)
        return psnr_from_mse(((pred - target) ** 2).flatten(1).mean(1), self.data_range)


class ImageSSIM(_PerImageMean):
    """SSIM per image, averaged over images."""

    def scores(self, pred: Tensor, target: Tensor) -> Tensor:
        return ssim(pred, target, self.data_range)


class MaskedPSNR(_PerImageMean):
    """PSNR restricted to a per-image pixel mask (dynamic-region PSNR), averaged over images.

    Images whose mask is empty are skipped (a static clip has no dynamic region); if no image
    had any masked pixel, :meth:`compute` returns NaN rather than a made-up number.
    """

    def update(self, pred: Tensor, target: Tensor, mask: Tensor) -> None:
        """Accumulate.

        Args:
            pred: ``(B, H, W, 3)``.
            target: ``(B, H, W, 3)``.
            mask: ``(B, H, W, 1)`` or ``(B, H, W)`` boolean.
        """
        _check_pair(pred, target)
        if mask.ndim == 4:
            mask = mask[..., 0]
        if mask.shape != pred.shape[:3]:
            raise ValueError(f"mask must be {tuple(pred.shape[:3])}, got {tuple(mask.shape)}")
        m = mask.to(pred.dtype)
        npix = m.flatten(1).sum(1)
        sq = ((pred - target) ** 2).sum(-1) * m
        keep = npix > 0
        mse = sq.flatten(1).sum(1)[keep] / (3.0 * npix[keep])
        self.update_scores(psnr_from_mse(mse, self.data_range))

    def compute(self) -> Tensor:
        if self.count == 0:
            return torch.tensor(float("nan"))
        return super().compute()
