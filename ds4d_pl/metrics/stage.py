"""The per-stage image metrics of validation and testing (PSNR, SSIM, dynamic-region PSNR as a
per-image mean and pooled over all moving pixels, and PSNR on the object's pixels).

One :class:`StageMetrics` per stage, so ``val/…`` and ``test/…`` values never share state; the
metrics are torchmetrics objects and are gathered over DDP ranks by torchmetrics itself.
"""

from __future__ import annotations

from torch import Tensor, nn

from ds4d_pl.metrics.image import ImagePSNR, ImageSSIM, MaskedPSNR, PooledMaskedPSNR

#: Keys of :meth:`StageMetrics.compute` (also the first keys of ``metrics.json``).
STAGE_METRIC_KEYS = ("psnr", "ssim", "dyn_psnr", "dyn_psnr_pooled", "masked_psnr")


class StageMetrics(nn.Module):
    """PSNR, SSIM, dynamic-region PSNR (per-image mean and pooled) and object-region PSNR of
    renders against targets.

    The pooled dynamic PSNR pools the squared error over every moving pixel of all views, so views
    that see no motion drop out instead of counting as a perfect or an empty score.

    The object region (``masked_psnr``) is where the target's alpha exceeds 0.5: on object
    videos the full-frame PSNR is dominated by the empty background, which any model gets right.
    """

    def __init__(self) -> None:
        super().__init__()
        self.psnr = ImagePSNR(data_range=1.0)
        self.ssim = ImageSSIM(data_range=1.0)
        self.dyn_psnr = MaskedPSNR(data_range=1.0)
        self.dyn_psnr_pooled = PooledMaskedPSNR(data_range=1.0)
        self.masked_psnr = MaskedPSNR(data_range=1.0)

    def update(self, pred: Tensor, target: Tensor, dyn_mask: Tensor, object_mask: Tensor) -> None:
        """Accumulate ``(B, H, W, 3)`` predictions and targets with their ``(B, H, W, 1)``
        moving-pixel and object masks."""
        self.psnr.update(pred, target)
        self.ssim.update(pred, target)
        self.dyn_psnr.update(pred, target, dyn_mask)
        self.dyn_psnr_pooled.update(pred, target, dyn_mask)
        self.masked_psnr.update(pred, target, object_mask)

    def compute_and_reset(self) -> dict[str, float]:
        """The values by :data:`STAGE_METRIC_KEYS`; the states are reset for the next epoch."""
        values = {}
        for key in STAGE_METRIC_KEYS:
            metric = getattr(self, key)
            values[key] = float(metric.compute())
            metric.reset()
        return values
