"""Per-image PSNR, SSIM and dynamic-region (masked) PSNR, and the pooled dynamic-region PSNR.

All metrics take images as ``(B, H, W, 3)`` in ``[0, 1]`` (the package's layout). All but one
average per-image scores over images, the convention of the 4D-GS and DS4D tables;
:class:`PooledMaskedPSNR` pools the squared error over every masked pixel first. ``data_range`` is
always passed explicitly: torchmetrics' default changed across versions and silently gives
different numbers.

Two SSIMs with the same Gaussian window (11 taps, σ 1.5, ``C1 = 0.01²``, ``C2 = 0.03²``) and
two border conventions, because published tables use both. Both are written here, operation for
operation like their references, instead of delegated: torchmetrics changed its border handling
in 1.5 (PR #2721: before, it cropped the 5-pixel border off the map; since, it averages the
reflect-padded border too), so a delegated number would depend on the installed version.

* :func:`ssim` (``standard``): reflect padding, the whole map averaged, variances clamped at 0;
  what torchmetrics >= 1.5 computes, bit for bit, and what this package has always reported.
  (torchmetrics < 1.5 and scikit-image average only the pixels where the window fits.)
* :func:`ssim_zero_padded` (``4dgs``): the ``ssim`` of 3D-GS / 4D-GS ``utils/loss_utils.py``:
  zero padding, the whole map averaged. The zero border darkens the local statistics; on a
  photo it reads a few thousandths higher than the standard one.

:func:`to_8bit` is the PNG round trip of ``torchvision.utils.save_image`` (``x·255 + 0.5``,
floored), which 4D-GS applies to renders and ground truth before scoring them.
"""

from __future__ import annotations

import math

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


def _ssim_reflect(x: Tensor, y: Tensor, data_range: float) -> Tensor:
    """torchmetrics' (>= 1.5) Gaussian SSIM map of ``(B, 3, H, W)`` images, same operations in
    the same order and dtype, so the numbers agree to the last bit."""
    dist = torch.arange(-5.0, 6.0, 1.0, dtype=x.dtype, device=x.device)
    g = torch.exp(-torch.pow(dist / 1.5, 2) / 2)
    g = (g / g.sum())[None]
    kernel = torch.matmul(g.t(), g).expand(3, 1, 11, 11)
    x = torch.nn.functional.pad(x, (5, 5, 5, 5), mode="reflect")
    y = torch.nn.functional.pad(y, (5, 5, 5, 5), mode="reflect")
    stacked = torch.cat((x, y, x * x, y * y, x * y))
    mu_x, mu_y, xx, yy, xy = torch.nn.functional.conv2d(stacked, kernel, groups=3).split(x.shape[0])
    mu_xx, mu_yy, mu_xy = mu_x.pow(2), mu_y.pow(2), mu_x * mu_y
    var_x = torch.clamp(xx - mu_xx, min=0.0)
    var_y = torch.clamp(yy - mu_yy, min=0.0)
    cov = xy - mu_xy
    c1, c2 = pow(0.01 * data_range, 2), pow(0.03 * data_range, 2)
    upper = 2 * cov + c2
    lower = var_x + var_y + c2
    return ((2 * mu_xy + c1) * upper) / ((mu_xx + mu_yy + c1) * lower)


def _ssim_zeros(x: Tensor, y: Tensor, data_range: float) -> Tensor:
    """3D-GS / 4D-GS ``loss_utils.ssim`` map of ``(B, 3, H, W)`` images, same operations."""
    g = torch.tensor([math.exp(-((i - 5) ** 2) / float(2 * 1.5**2)) for i in range(11)])
    g = (g / g.sum())[:, None]
    kernel = g.mm(g.t()).to(x)[None, None].expand(3, 1, 11, 11).contiguous()

    def blur(z: Tensor) -> Tensor:
        return torch.nn.functional.conv2d(z, kernel, padding=5, groups=3)

    mu_x, mu_y = blur(x), blur(y)
    mu_xx, mu_yy, mu_xy = mu_x.pow(2), mu_y.pow(2), mu_x * mu_y
    var_x = blur(x * x) - mu_xx
    var_y = blur(y * y) - mu_yy
    cov = blur(x * y) - mu_xy
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    return ((2 * mu_xy + c1) * (2 * cov + c2)) / ((mu_xx + mu_yy + c1) * (var_x + var_y + c2))


def _ssim(pred: Tensor, target: Tensor, data_range: float, padding: str) -> Tensor:
    _check_pair(pred, target)
    if min(pred.shape[1:3]) < 6:
        raise ValueError(f"SSIM needs images of at least 6x6 pixels, got {tuple(pred.shape[1:3])}")
    x, y = pred.permute(0, 3, 1, 2), target.permute(0, 3, 1, 2)
    m = _ssim_reflect(x, y, data_range) if padding == "reflect" else _ssim_zeros(x, y, data_range)
    return m.reshape(m.shape[0], -1).mean(-1)


def ssim(pred: Tensor, target: Tensor, data_range: float = 1.0) -> Tensor:
    """Per-image SSIM, the ``standard`` protocol: Gaussian window 11 / σ 1.5, reflect padding,
    whole map (torchmetrics >= 1.5). Differentiable.

    Args:
        pred: ``(B, H, W, 3)``, ``H, W >= 6`` (reflect padding needs more pixels than 5).
        target: ``(B, H, W, 3)``.
        data_range: Value range of the images.

    Returns:
        ``(B,)`` SSIM values.
    """
    return _ssim(pred, target, data_range, "reflect")


def ssim_zero_padded(pred: Tensor, target: Tensor, data_range: float = 1.0) -> Tensor:
    """Per-image SSIM as 3D-GS / 4D-GS compute it (the ``4dgs`` protocol): zero padding, the
    whole map averaged. Differentiable.

    Args:
        pred: ``(B, H, W, 3)`` in ``[0, 1]``.
        target: ``(B, H, W, 3)``.
        data_range: Value range of the images.

    Returns:
        ``(B,)`` SSIM values.
    """
    return _ssim(pred, target, data_range, "zeros")


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


def _masked_squared_error(pred: Tensor, target: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Per image: summed squared error over the masked pixels' channels, and how many values
    that sum holds (``3 ×`` masked pixels)."""
    _check_pair(pred, target)
    if mask.ndim == 4:
        mask = mask[..., 0]
    if mask.shape != pred.shape[:3]:
        raise ValueError(f"mask must be {tuple(pred.shape[:3])}, got {tuple(mask.shape)}")
    m = mask.to(pred.dtype)
    sq = ((pred - target) ** 2).sum(-1) * m
    return sq.flatten(1).sum(1), 3.0 * m.flatten(1).sum(1)


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
        err, n = _masked_squared_error(pred, target, mask)
        keep = n > 0
        self.update_scores(psnr_from_mse(err[keep] / n[keep], self.data_range))

    def compute(self) -> Tensor:
        if self.count == 0:
            return torch.tensor(float("nan"))
        return super().compute()


class PooledMaskedPSNR(Metric):
    """Dynamic-region PSNR of the squared error pooled over every masked pixel of every image.

    ``10 log10(range² / (Σ masked squared error / Σ masked values))``: each moving pixel counts
    once, wherever it is. The per-image mean (:class:`MaskedPSNR`) instead weighs a view that
    sees a few dozen moving pixels (mostly silhouette edges at low resolution) as much as one
    that sees the whole moving part; views without moving pixels add nothing to either. NaN if
    no image had a masked pixel.
    """

    higher_is_better = True
    full_state_update = False

    def __init__(self, data_range: float = 1.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.data_range = data_range
        self.add_state("sq_error", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("values", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred: Tensor, target: Tensor, mask: Tensor) -> None:
        """Accumulate ``(B, H, W, 3)`` images and their ``(B, H, W[, 1])`` boolean masks."""
        err, n = _masked_squared_error(pred, target, mask)
        self.sq_error += err.double().sum()
        self.values += n.double().sum()

    def compute(self) -> Tensor:
        if self.values == 0:
            return torch.tensor(float("nan"))
        return psnr_from_mse(self.sq_error / self.values, self.data_range).float()
