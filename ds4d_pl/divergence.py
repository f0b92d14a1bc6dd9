"""Whether an optimisation has run away: non-finite values anywhere in the model, or Gaussians
far outside (or far larger than) the scene.

A huge learning rate does not always make the loss non-finite: Gaussian centres thrown to 1e30
leave an empty, perfectly finite render. The bound is on the scene radius the model keeps
(``DS4DModel.extent``, the initial Gaussians' radius), so it means the same for an object of
radius 0.5 and a room of radius 3.
"""

from __future__ import annotations

import torch
from torch import nn

#: Gaussians whose centres or scales reach this many scene radii mean the fit ran away.
MAX_EXTENT_FACTOR = 1000.0


def find_divergence(
    model: nn.Module, factor: float = MAX_EXTENT_FACTOR, buffers: bool = True
) -> str | None:
    """What is wrong with ``model``'s state, or ``None`` when nothing is.

    Args:
        model: A :class:`~ds4d_pl.model.DS4DModel` (any module works for the finiteness test;
            the bound needs ``extent`` and ``gaussians.means`` / ``gaussians.log_scales``).
        factor: Bound on centres (distance from the origin) and scales, in scene radii.
        buffers: Also test the buffers (frozen frame features, ...), which no optimiser step
            changes: before a checkpoint, not after every step.

    Returns:
        One sentence naming the first offending tensor, or ``None``.
    """
    with torch.no_grad():
        tensors = model.state_dict() if buffers else dict(model.named_parameters())
        for name, value in tensors.items():
            if torch.is_floating_point(value) and not bool(torch.isfinite(value).all()):
                bad = int((~torch.isfinite(value)).sum())
                return f"{name} holds {bad} non-finite values (of {value.numel()})"
        gaussians = getattr(model, "gaussians", None)
        extent = getattr(model, "extent", None)
        if (
            gaussians is None
            or extent is None
            or float(extent) <= 0
            or gaussians.means.numel() == 0
        ):
            return None
        bound = factor * float(extent)
        reach = float(gaussians.means.norm(dim=-1).max())
        if reach > bound:
            return (
                f"Gaussian centres reach {reach:.3g} from the origin, more than {factor:g}x the "
                f"scene radius {float(extent):.3g}"
            )
        size = float(gaussians.log_scales.max().exp())
        if size > bound:
            return (
                f"Gaussian scales reach {size:.3g}, more than {factor:g}x the scene radius "
                f"{float(extent):.3g}"
            )
    return None
