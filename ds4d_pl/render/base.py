"""Renderer protocol and the tensors that cross it.

Every backend (``torch`` on CPU, ``gsplat`` on CUDA) takes world-space, *activated*
Gaussians at one instant plus a batch of cameras, and returns the same :class:`RenderOutput`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from ds4d_pl.cameras import Cameras

#: Real spherical-harmonics band constants (3DGS convention).
SH_C0 = 0.28209479177387814


@dataclass
class GaussianParams:
    """Activated Gaussians in world space.

    Attributes:
        means: ``(N, 3)`` centres.
        quats: ``(N, 4)`` rotations as ``(w, x, y, z)``; need not be normalised.
        scales: ``(N, 3)`` standard deviations along the local axes (positive).
        opacities: ``(N,)`` in ``[0, 1]``.
        sh: ``(N, K, 3)`` spherical-harmonics colour coefficients, ``K = (degree + 1) ** 2``;
            colour = ``SH(dir) + 0.5`` clamped at 0, as in 3DGS.
    """

    means: Tensor
    quats: Tensor
    scales: Tensor
    opacities: Tensor
    sh: Tensor

    def __post_init__(self) -> None:
        n = self.means.shape[0]
        expected = {
            "means": (n, 3),
            "quats": (n, 4),
            "scales": (n, 3),
            "opacities": (n,),
        }
        for name, shape in expected.items():
            got = tuple(getattr(self, name).shape)
            if got != shape:
                raise ValueError(f"GaussianParams.{name} must be {shape}, got {got}")
        if self.sh.ndim != 3 or self.sh.shape[0] != n or self.sh.shape[2] != 3:
            raise ValueError(f"GaussianParams.sh must be (N, K, 3), got {tuple(self.sh.shape)}")
        k = self.sh.shape[1]
        if math.isqrt(k) ** 2 != k:
            raise ValueError(f"GaussianParams.sh has {k} coefficients, not a square number")

    def __len__(self) -> int:
        return self.means.shape[0]

    @property
    def sh_degree(self) -> int:
        return math.isqrt(self.sh.shape[1]) - 1


@dataclass
class RenderOutput:
    """What a renderer returns for ``C`` cameras and ``N`` Gaussians.

    Attributes:
        rgb: ``(C, H, W, 3)`` colour composited over the background.
        alpha: ``(C, H, W, 1)`` accumulated opacity.
        depth: ``(C, H, W, 1)`` alpha-weighted expected depth divided by alpha
            (0 where alpha is ~0).
        means2d: ``(C, N, 2)`` projected centres in pixels. It is a non-leaf tensor on which the
            renderer called ``retain_grad()`` when gradients are enabled, so the densification
            strategy can read the view-space positional gradient after ``backward``.
        radii: ``(C, N)`` integer screen radii; 0 marks a Gaussian that was culled in that view.
    """

    rgb: Tensor
    alpha: Tensor
    depth: Tensor
    means2d: Tensor
    radii: Tensor

    def rgb_on(self, background: Tensor, rendered_on: Tensor) -> Tensor:
        """:attr:`rgb`, rendered over ``rendered_on`` ``(3,)``, re-composited over
        ``background`` ``(3,)`` through the rendered alpha (differentiable)."""
        return self.rgb + (background.to(self.rgb) - rendered_on.to(self.rgb)) * (1.0 - self.alpha)


@runtime_checkable
class Renderer(Protocol):
    """Rasterises Gaussians for a batch of cameras."""

    name: str

    def __call__(
        self, gaussians: GaussianParams, cameras: Cameras, background: Tensor
    ) -> RenderOutput:
        """Render.

        Args:
            gaussians: Activated Gaussians in world space.
            cameras: ``C`` cameras sharing one image size.
            background: ``(3,)`` background colour in ``[0, 1]``.
        """
        ...


def eval_sh(sh: Tensor, dirs: Tensor) -> Tensor:
    """Evaluate real SH colour (3DGS basis, degree ≤ 3) for unit view directions.

    Args:
        sh: ``(..., K, 3)`` coefficients.
        dirs: ``(..., 3)`` unit directions from the camera to the Gaussian.

    Returns:
        ``(..., 3)`` colour, ``SH + 0.5`` clamped at 0.
    """
    k = sh.shape[-2]
    out = SH_C0 * sh[..., 0, :]
    if k > 1:
        x, y, z = dirs[..., 0:1], dirs[..., 1:2], dirs[..., 2:3]
        c1 = 0.4886025119029199
        out = out - c1 * y * sh[..., 1, :] + c1 * z * sh[..., 2, :] - c1 * x * sh[..., 3, :]
        if k > 4:
            xx, yy, zz = x * x, y * y, z * z
            xy, yz, xz = x * y, y * z, x * z
            out = (
                out
                + 1.0925484305920792 * xy * sh[..., 4, :]
                - 1.0925484305920792 * yz * sh[..., 5, :]
                + 0.31539156525252005 * (2.0 * zz - xx - yy) * sh[..., 6, :]
                - 1.0925484305920792 * xz * sh[..., 7, :]
                + 0.5462742152960396 * (xx - yy) * sh[..., 8, :]
            )
            if k > 9:
                out = (
                    out
                    - 0.5900435899266435 * y * (3 * xx - yy) * sh[..., 9, :]
                    + 2.890611442640554 * xy * z * sh[..., 10, :]
                    - 0.4570457994644658 * y * (4 * zz - xx - yy) * sh[..., 11, :]
                    + 0.3731763325901154 * z * (2 * zz - 3 * xx - 3 * yy) * sh[..., 12, :]
                    - 0.4570457994644658 * x * (4 * zz - xx - yy) * sh[..., 13, :]
                    + 1.445305721320277 * z * (xx - yy) * sh[..., 14, :]
                    - 0.5900435899266435 * x * (xx - 3 * yy) * sh[..., 15, :]
                )
    return torch.clamp_min(out + 0.5, 0.0)


def quat_to_rotmat(quats: Tensor) -> Tensor:
    """Rotation matrices from ``(w, x, y, z)`` quaternions, safe for zero quaternions.

    Args:
        quats: ``(..., 4)`` quaternions, any norm.

    Returns:
        ``(..., 3, 3)`` rotations; a (near-)zero quaternion maps to the identity with zero
        gradient instead of a division by zero.
    """
    norm = quats.norm(dim=-1, keepdim=True)
    degenerate = norm < 1e-12
    identity = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=quats.dtype, device=quats.device)
    # Sanitise before dividing so the discarded branch cannot leak inf/NaN into the backward.
    q = torch.where(degenerate, identity, quats / torch.where(degenerate, 1.0, norm))
    w, x, y, z = q.unbind(-1)
    rot = torch.stack(
        [
            1 - 2 * (y * y + z * z),
            2 * (x * y - w * z),
            2 * (x * z + w * y),
            2 * (x * y + w * z),
            1 - 2 * (x * x + z * z),
            2 * (y * z - w * x),
            2 * (x * z - w * y),
            2 * (y * z + w * x),
            1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    )
    return rot.reshape(quats.shape[:-1] + (3, 3))


def rgb_to_sh0(rgb: Tensor) -> Tensor:
    """DC coefficient that renders as ``rgb`` (inverse of the degree-0 part of :func:`eval_sh`)."""
    return (rgb - 0.5) / SH_C0
