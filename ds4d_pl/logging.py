"""What the system sends to loggers beyond plain scalars: images, and TSSF weight summaries."""

from __future__ import annotations

from torch import Tensor

from ds4d_pl.plots import to_uint8


def log_images(logger: object, key: str, images: list, step: int) -> None:
    """Send ``(H, W, 3)`` images (float in ``[0, 1]`` or ``uint8``) to a logger that takes
    images (W&B through ``log_image``, TensorBoard through ``add_image``); other loggers are
    skipped. Images are sent as ``uint8``: W&B casts float arrays to bytes without scaling, so
    a float image in ``[0, 1]`` would arrive black."""
    if logger is None or not images:
        return
    images = [to_uint8(image) for image in images]
    if hasattr(logger, "log_image"):
        captions = [f"view {j}" for j in range(len(images))]
        logger.log_image(key=key, images=images, caption=captions, step=step)
    elif hasattr(getattr(logger, "experiment", None), "add_image"):
        for j, image in enumerate(images):
            logger.experiment.add_image(f"{key}/view_{j}", image, step, dataformats="HWC")


def fusion_statistics(weights: Tensor) -> dict[str, float]:
    """Summary of TSSF view weights ``(V, N)``: how much the input view (view 0) and the pseudo
    views count, averaged over Gaussians with any weight, and the fraction of Gaussians that no
    view sees. Logged to check whether a fusion mode buries the input view."""
    seen = weights.sum(0) > 0
    stats = {"train/fusion/unseen_fraction": float(1.0 - seen.float().mean())}
    if seen.any():
        w = weights[:, seen]
        stats["train/fusion/input_weight"] = float(w[0].mean())
        stats["train/fusion/pseudo_weight"] = float(w[1:].sum(0).mean())
    return stats
