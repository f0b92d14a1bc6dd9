"""Dynamic-static feature decoupling (DSFD, docs/design.md §5 "Reference" and "DSFD").

Every frame feature of a view is split, token by token, into a *static* part (its projection onto
a reference feature of the same view) and a *dynamic* part (the residual orthogonal to the
reference). The conditioning feature is ``concat(f, dynamic)``: the dynamic half highlights what
moves, so the deformation field does not drown it in the (usually dominant) static content.

Everything here is parameter-free; compute it once per run and cache the result.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

REFERENCE_MODES = ("mid", "mean", "mix")

# Channel axis of ``(..., C, h, w)`` feature tensors.
_CH = -3


def reference_feature(feats: Tensor, mode: str = "mix", alpha: float = 0.5) -> Tensor:
    """Per-view reference feature that the frames are decoupled against.

    Args:
        feats: ``(V, T, C, h, w)`` frame features of V views over T frames.
        mode: ``mid`` (the middle frame ``f(T//2)``), ``mean`` (temporal mean) or ``mix``
            (``alpha * f_mid + (1 - alpha) * f_mean``).
        alpha: Weight of the middle frame in ``mix`` mode, in ``[0, 1]``.

    Returns:
        ``(V, C, h, w)`` reference features.

    Raises:
        ValueError: On an unknown ``mode``, a badly shaped input or ``alpha`` outside ``[0, 1]``.
    """
    if mode not in REFERENCE_MODES:
        raise ValueError(f"unknown reference mode {mode!r}; expected one of {REFERENCE_MODES}")
    if feats.ndim != 5:
        raise ValueError(f"feats must be (V, T, C, h, w), got {tuple(feats.shape)}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    mid = feats[:, feats.shape[1] // 2]
    if mode == "mid":
        return mid
    mean = feats.mean(dim=1)
    if mode == "mean":
        return mean
    return alpha * mid + (1.0 - alpha) * mean


@dataclass
class Decoupled:
    """Result of :func:`decouple`.

    Attributes:
        static: ``(..., C, h, w)`` projection of ``f`` onto the reference, per token.
        dynamic: ``(..., C, h, w)`` residual ``f - static`` (orthogonal to the reference).
        decoupled: ``(..., 2C, h, w)`` ``concat(f, dynamic)`` along the channel axis.
        energy: ``(..., h, w)`` ``‖dynamic‖ / ‖f‖`` per token, in ``[0, 1]`` up to ``eps``.
    """

    static: Tensor
    dynamic: Tensor
    decoupled: Tensor
    energy: Tensor


def decouple(f: Tensor, r: Tensor, eps: float = 1e-6) -> Decoupled:
    """Split features into their static and dynamic parts with respect to a reference.

    The projection is taken per token over the channel axis (``-3``), so it is invariant to the
    scale of ``r`` (up to ``eps``): only the reference's direction matters.

    Args:
        f: ``(..., C, h, w)`` features.
        r: Reference broadcastable to ``f``, e.g. ``(V, 1, C, h, w)`` against ``(V, T, C, h, w)``.
        eps: Added to ``‖r‖²`` and ``‖f‖`` so zero tokens give zero static part / energy.

    Returns:
        The :class:`Decoupled` parts.
    """
    if f.ndim < 3:
        raise ValueError(f"f must be (..., C, h, w), got {tuple(f.shape)}")
    coeff = (f * r).sum(dim=_CH, keepdim=True) / ((r * r).sum(dim=_CH, keepdim=True) + eps)
    static = coeff * r
    dynamic = f - static
    energy = torch.linalg.vector_norm(dynamic, dim=_CH) / (
        torch.linalg.vector_norm(f, dim=_CH) + eps
    )
    return Decoupled(
        static=static,
        dynamic=dynamic,
        decoupled=torch.cat([f, dynamic], dim=_CH),
        energy=energy,
    )


class DSFD(nn.Module):
    """Decouple every frame of every view against that view's reference feature.

    Args:
        in_dim: Channel count C of the encoder features.
        reference: Reference mode, see :func:`reference_feature`.
        alpha: Middle-frame weight of the ``mix`` reference.
    """

    def __init__(self, in_dim: int, reference: str = "mix", alpha: float = 0.5) -> None:
        super().__init__()
        if reference not in REFERENCE_MODES:
            raise ValueError(
                f"unknown reference mode {reference!r}; expected one of {REFERENCE_MODES}"
            )
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
        self.in_dim = in_dim
        self.out_dim = 2 * in_dim
        self.reference = reference
        self.alpha = alpha

    def _decouple(self, feats: Tensor) -> Decoupled:
        if feats.ndim != 5 or feats.shape[2] != self.in_dim:
            raise ValueError(f"feats must be (V, T, {self.in_dim}, h, w), got {tuple(feats.shape)}")
        r = reference_feature(feats, self.reference, self.alpha)
        return decouple(feats, r[:, None])

    def forward(self, feats: Tensor) -> Tensor:
        """Decoupled features.

        Args:
            feats: ``(V, T, C, h, w)`` frame features.

        Returns:
            ``(V, T, 2C, h, w)`` ``concat(f, dynamic)``.
        """
        return self._decouple(feats).decoupled

    def dynamic_energy(self, feats: Tensor) -> Tensor:
        """Per-token ``‖dynamic‖ / ‖f‖`` map ``(V, T, h, w)``, a diagnostic image to log."""
        return self._decouple(feats).energy


class PassThroughDSFD(nn.Module):
    """The "DSFD off" ablation: ``concat(f, 0)`` with the same ``out_dim = 2C`` as :class:`DSFD`.

    The decoupled feature only ever enters the model through a learnable linear projection
    ``W [f; d] = W_f f + W_d d``. With ``d = 0`` that is exactly a linear layer on the plain
    features (``W_d`` receives no gradient), so this is the "plain frame features" row of the
    ablation while every shape, checkpoint layout and downstream module stays the same.

    Args:
        in_dim: Channel count C of the encoder features.
    """

    def __init__(self, in_dim: int) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.out_dim = 2 * in_dim

    def forward(self, feats: Tensor) -> Tensor:
        """``(V, T, C, h, w)`` → ``(V, T, 2C, h, w)`` with an all-zero second half."""
        if feats.ndim != 5 or feats.shape[2] != self.in_dim:
            raise ValueError(f"feats must be (V, T, {self.in_dim}, h, w), got {tuple(feats.shape)}")
        return torch.cat([feats, torch.zeros_like(feats)], dim=_CH)

    def dynamic_energy(self, feats: Tensor) -> Tensor:
        """All-zero ``(V, T, h, w)`` map: nothing is decoupled."""
        return feats.new_zeros(feats.shape[:2] + feats.shape[3:])
