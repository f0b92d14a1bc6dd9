"""Per-image PSNR, SSIM and dynamic-region (masked) PSNR, and the pooled dynamic-region PSNR.

All metrics take images as ``(B, H, W, 3)`` in ``[0, 1]`` (the package's layout). All but one
average per-image scores over images, the convention of the 4D-GS and DS4D tables;
:class:`PooledMaskedPSNR` pools the squared error over every masked pixel first. ``data_range`` is
always passed explicitly: torchmetrics' default changed across versions and silently gives
different numbers.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.functional.image import structural_similarity_index_measure


def _check_pair(pred: Tensor, target: Tensor) -> None:
    if pred.shape != target.shape or pred.ndim != 4 or pred.shape[-1] != 3:
        raise ValueError(
            f"expected pred and target of one shape (B, H, W, 3), got {tuple(pred.shape)} and "
            f"{tuple(target.shape)}"
        )


def psnr_from_mse(mse: Tensor, data_range: float = 1.0) -> Tensor:
    """PSNR in dB from a mean squared error."""
    return 10.0 * torch.log10(data_range**2 / mse.clamp_min(1e-12))


def ssim(pred: Tensor, target: Tensor, data_range: float = 1.0) -> Tensor:
    """Per-image SSIM (Gaussian window 11, σ 1.5), differentiable.

    Args:
        pred: ``(B, H, W, 3)``.
        target: ``(B, H, W, 3)``.
        data_range: Value range of the images.

    Returns:
        ``(B,)`` SSIM values.
    """
    _check_pair(pred, target)
    return structural_similarity_index_measure(
        pred.permute(0, 3, 1, 2),
        target.permute(0, 3, 1, 2),
        data_range=data_range,
        reduction="none",
    )


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
