"""The object's depth as one learned number: a scale of the whole asset about the input camera.

A single input view cannot tell a small object near the camera from a large one further away:
scaling every Gaussian (centre and size) about the camera's centre leaves its image unchanged.
The generated views do see the difference, but a fit moves the object only through each
Gaussian's own position updates, and a collective motion of thousands of them is slow: from a
mesh start 5 % too near, 600 steps recovered about a third of the error
(``benchmarks/results/ablation_findings.md``, "A mesh start with a depth error"). One scale
parameter moves the whole object at once, along the one direction the input view leaves free.

It acts on the Gaussians as they enter the world (after the deformation field, which keeps its
own coordinates and box), so renders, exports, the viewer and the conditioning's projections all
see the object where it is placed. A NeRF has no Gaussians to place.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ds4d_pl.render.base import GaussianParams


class DepthPlacement(nn.Module):
    """``x -> p + k (x - p)`` and ``scale -> k scale`` for every Gaussian, ``k`` learned.

    ``log k = max_log_scale * tanh(raw)``, zero-initialised (the identity), so the object can
    never collapse or run away. ``p`` (the pivot) is the input camera's centre, set once from the
    scene; both are saved with the model.

    Args:
        max_log_scale: Bound on ``|log k|``.
    """

    pivot: Tensor

    def __init__(self, max_log_scale: float = 0.25) -> None:
        super().__init__()
        if not 0.0 < max_log_scale <= 1.0:
            raise ValueError(f"max_log_scale must be in (0, 1], got {max_log_scale}")
        self.max_log_scale = float(max_log_scale)
        self.raw = nn.Parameter(torch.zeros(()))
        self.register_buffer("pivot", torch.zeros(3))

    def set_pivot(self, centre: Tensor) -> None:
        """The point the object is scaled about (the input camera's centre)."""
        self.pivot.copy_(centre.detach().reshape(3).to(self.pivot))

    @property
    def scale(self) -> Tensor:
        """``k``: how far the object now is, as a multiple of where the Gaussians put it."""
        return torch.exp(self.max_log_scale * torch.tanh(self.raw))

    def points(self, x: Tensor) -> Tensor:
        """``(..., 3)`` positions moved with the object."""
        pivot = self.pivot.to(x)
        return pivot + self.scale.to(x) * (x - pivot)

    def forward(self, params: GaussianParams) -> GaussianParams:
        """The Gaussians placed: centres about the pivot and sizes scaled by ``k``; rotations,
        opacities and colours unchanged (seen from the pivot, each Gaussian keeps its image)."""
        k = self.scale.to(params.means)
        return GaussianParams(
            means=self.points(params.means),
            quats=params.quats,
            scales=params.scales * k,
            opacities=params.opacities,
            sh=params.sh,
        )
