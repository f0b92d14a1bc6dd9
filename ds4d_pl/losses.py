"""Loss terms, named and weighted in one place.

The system computes raw terms with the functions below and :func:`weigh` applies
:class:`~ds4d_pl.config.LossWeights`; both the raw value and the weight of every term are logged,
so a run shows exactly what was optimised.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ds4d_pl.config import LossWeights
from ds4d_pl.metrics.image import ssim


def photometric_terms(
    pred_rgb: Tensor,
    pred_alpha: Tensor,
    target_rgb: Tensor,
    target_alpha: Tensor,
    is_input: Tensor,
    weights: LossWeights,
) -> dict[str, Tensor]:
    """Image losses against real input views and pseudo views.

    Input views get MSE on colour and coverage (they are exact observations; 4D-GS-style scene
    presets use L1 and optional 1 − SSIM instead); pseudo views come from a generative prior, so
    they get the more forgiving L1 + (1 − SSIM) and a coverage term.
    Terms whose weight is 0 or whose subset is empty in this batch are omitted.

    Args:
        pred_rgb: ``(B, H, W, 3)`` rendered colour on the background.
        pred_alpha: ``(B, H, W, 1)`` rendered coverage.
        target_rgb: ``(B, H, W, 3)`` target composited on the same background.
        target_alpha: ``(B, H, W, 1)`` target coverage.
        is_input: ``(B,)`` boolean, real observation vs pseudo view.
        weights: Which terms are active.

    Returns:
        Raw (unweighted) terms by name.
    """
    terms: dict[str, Tensor] = {}
    inp, pse = is_input, ~is_input
    if inp.any():
        if weights.rgb_mse > 0:
            terms["rgb_mse"] = ((pred_rgb[inp] - target_rgb[inp]) ** 2).mean()
        if weights.rgb_l1 > 0:
            terms["rgb_l1"] = (pred_rgb[inp] - target_rgb[inp]).abs().mean()
        if weights.rgb_ssim > 0:
            terms["rgb_ssim"] = 1.0 - ssim(pred_rgb[inp], target_rgb[inp]).mean()
        if weights.mask > 0:
            terms["mask"] = ((pred_alpha[inp] - target_alpha[inp]) ** 2).mean()
    if pse.any():
        if weights.pseudo_l1 > 0:
            terms["pseudo_l1"] = (pred_rgb[pse] - target_rgb[pse]).abs().mean()
        if weights.pseudo_ssim > 0:
            terms["pseudo_ssim"] = 1.0 - ssim(pred_rgb[pse], target_rgb[pse]).mean()
        if weights.pseudo_mask > 0:
            terms["pseudo_mask"] = ((pred_alpha[pse] - target_alpha[pse]) ** 2).mean()
    return terms


def scale_ratio_term(log_scales: Tensor, max_ratio: float) -> Tensor:
    """Mean excess anisotropy ``relu(max/min − max_ratio)``: needle-like Gaussians shimmer when
    they rotate over time, so their elongation is bounded softly."""
    if log_scales.numel() == 0:
        return log_scales.sum()
    ratio = torch.exp(log_scales.max(-1).values - log_scales.min(-1).values)
    return torch.relu(ratio - max_ratio).mean()


def term_weights(weights: LossWeights, step: int) -> dict[str, float]:
    """Effective weight of every term at ``step`` (the mask weight ramps in linearly)."""
    w = {k: float(v) for k, v in weights.as_dict().items() if k not in _NON_TERMS}
    if weights.mask_ramp_steps > 0:
        w["mask"] *= min(1.0, step / weights.mask_ramp_steps)
    return w


def weigh(terms: dict[str, Tensor], weights: LossWeights, step: int) -> tuple[Tensor, dict]:
    """Total loss from named terms.

    Returns:
        The weighted sum and the weights that were applied, by term name.

    Raises:
        KeyError: A term has no weight in :class:`LossWeights` (a typo in a term name must not
            silently drop the term).
    """
    w = term_weights(weights, step)
    unknown = set(terms) - set(w)
    if unknown:
        raise KeyError(f"loss terms without a weight in LossWeights: {sorted(unknown)}")
    if not terms:
        raise ValueError("no loss terms to optimise: every weight is 0 or no view was rendered")
    total = sum(w[name] * value for name, value in terms.items())
    return total, {name: w[name] for name in terms}


_NON_TERMS = {"mask_ramp_steps", "max_scale_ratio"}
