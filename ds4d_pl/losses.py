"""Loss terms, named and weighted in one place.

The system computes raw terms with the functions below and :func:`weigh` applies
:class:`~ds4d_pl.config.LossWeights`; both the raw value and the weight of every term are logged,
so a run shows exactly what was optimised.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ds4d_pl.config import LossWeights
from ds4d_pl.metrics.image import ssim
from ds4d_pl.weights import MissingWeightsError

#: Input-view terms, scaled together by ``LossWeights.input_view``.
INPUT_VIEW_TERMS = ("rgb_mse", "rgb_l1", "rgb_ssim", "mask")


class PseudoViewLoss:
    """What the pseudo views are compared with: the frozen LPIPS network (when its weight is on
    and its files are found) and a description of the loss actually used.

    Deliberately not an ``nn.Module``: held by the Lightning system, a frozen network must stay
    out of checkpoints, the optimiser and DDP.

    Attributes:
        lpips: The LPIPS (VGG) network in eval mode, or ``None``.
        description: The pseudo-view loss in words, e.g. ``l1+ssim+lpips`` or ``l1+ssim (lpips
            requested but its weights are missing: vgg16-397923af.pth)``; ``run_info.json``
            records it.
    """

    def __init__(self, lpips: nn.Module | None, description: str) -> None:
        self.lpips = lpips
        self.description = description

    @classmethod
    def build(cls, weights: LossWeights) -> PseudoViewLoss:
        """Load LPIPS when ``weights.pseudo_lpips > 0``; without its weights, warn and go on
        without the term (a random VGG would be a wrong loss, not a weaker one)."""
        parts = [name for name in ("l1", "ssim") if getattr(weights, f"pseudo_{name}") > 0]
        if weights.pseudo_downsample > 1:
            k = weights.pseudo_downsample
            parts = [f"{name}@1/{k}" for name in parts]
        lpips, note = None, ""
        if weights.pseudo_lpips > 0:
            from ds4d_pl.metrics.lpips import LPIPSNet

            try:
                lpips = LPIPSNet.from_pretrained().requires_grad_(False)
                parts.append("lpips")
            except MissingWeightsError as err:
                missing = ", ".join(sorted(set(_missing_names(str(err)))))
                note = f" (lpips requested but its weights are missing: {missing})"
                warnings.warn(
                    f"loss.pseudo_lpips={weights.pseudo_lpips} but the LPIPS weights are not on "
                    f"this machine, so the pseudo views are compared without it: {err}",
                    stacklevel=2,
                )
        description = ("+".join(parts) or "none") + note
        if weights.pseudo_weighting == "tssf":
            description += f", views weighted by tssf trust^{weights.pseudo_trust_power:g}"
        return cls(lpips, description)

    def to(self, device: torch.device) -> PseudoViewLoss:
        if self.lpips is not None:
            self.lpips.to(device)
        return self


def _missing_names(message: str) -> list[str]:
    names = ("vgg16-397923af.pth", "lpips_vgg_v0.1.pth")
    return [name for name in names if name in message] or ["see the warning"]


def _low_pass(x: Tensor, k: int) -> Tensor:
    """``(B, H, W, C)`` images averaged over ``k × k`` blocks (a ragged border is dropped)."""
    if k == 1:
        return x
    return F.avg_pool2d(x.permute(0, 3, 1, 2), k).permute(0, 2, 3, 1)


def photometric_terms(
    pred_rgb: Tensor,
    pred_alpha: Tensor,
    target_rgb: Tensor,
    target_alpha: Tensor,
    is_input: Tensor,
    weights: LossWeights,
    lpips: nn.Module | None = None,
    pseudo_weights: Tensor | None = None,
) -> dict[str, Tensor]:
    """Image losses against real input views and pseudo views.

    Input views get MSE on colour and coverage (they are exact observations; 4D-GS-style scene
    presets use L1 and optional 1 − SSIM instead); pseudo views come from a generative prior, so
    they get the more forgiving L1 + (1 − SSIM), optionally LPIPS, and a coverage term, compared
    after a ``pseudo_downsample`` block average (LPIPS at full resolution).
    Terms whose weight is 0 or whose subset is empty in this batch are omitted.

    With ``pseudo_weights`` every pseudo term is the mean over the pseudo images of
    ``weight × that image's value`` (:func:`pseudo_view_trust` gives weights that average 1 over
    the scene's pseudo views, so the expected pseudo weight over the sampled views is unchanged).
    The weights are detached: a view's trust is a judgement of the data, not a parameter the
    loss may lower by distrusting whatever it fits badly.

    Args:
        pred_rgb: ``(B, H, W, 3)`` rendered colour on the background.
        pred_alpha: ``(B, H, W, 1)`` rendered coverage.
        target_rgb: ``(B, H, W, 3)`` target composited on the same background.
        target_alpha: ``(B, H, W, 1)`` target coverage.
        is_input: ``(B,)`` boolean, real observation vs pseudo view.
        weights: Which terms are active.
        lpips: The LPIPS network (:class:`PseudoViewLoss`) for ``pseudo_lpips``; ``None``
            leaves that term out.
        pseudo_weights: ``(B,)`` weight of every image (only the pseudo views' are read), or
            ``None``: all pseudo images alike (the plain mean over their pixels).

    Returns:
        Raw (unweighted) terms by name.
    """
    terms: dict[str, Tensor] = {}
    inp, pse = is_input, ~is_input
    if pseudo_weights is not None and pseudo_weights.shape != is_input.shape:
        raise ValueError(
            f"pseudo_weights must be one weight per image {tuple(is_input.shape)}, got "
            f"{tuple(pseudo_weights.shape)}"
        )
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
        k = weights.pseudo_downsample
        w = None if pseudo_weights is None else pseudo_weights[pse].detach().to(pred_rgb.dtype)
        pred, target = _low_pass(pred_rgb[pse], k), _low_pass(target_rgb[pse], k)
        if weights.pseudo_l1 > 0:
            terms["pseudo_l1"] = _over_images((pred - target).abs(), w)
        if weights.pseudo_ssim > 0:
            s = ssim(pred, target)
            terms["pseudo_ssim"] = 1.0 - s.mean() if w is None else _over_images(1.0 - s, w)
        if weights.pseudo_mask > 0:
            diff = _low_pass(pred_alpha[pse], k) - _low_pass(target_alpha[pse], k)
            terms["pseudo_mask"] = _over_images(diff**2, w)
        if weights.pseudo_lpips > 0 and lpips is not None:
            p = pred_rgb[pse].permute(0, 3, 1, 2) * 2.0 - 1.0
            t = target_rgb[pse].permute(0, 3, 1, 2) * 2.0 - 1.0
            terms["pseudo_lpips"] = _over_images(lpips(p, t), w)
    return terms


def _over_images(values: Tensor, w: Tensor | None) -> Tensor:
    """Mean of per-image values ``(P, ...)``: the plain mean, or with weights ``w`` ``(P,)`` the
    mean over images of each image's weight × its mean (every image has the same size, so
    ``w = 1`` is the plain mean)."""
    if w is None:
        return values.mean()
    per_image = values.mean(dim=tuple(range(1, values.ndim))) if values.ndim > 1 else values
    return (w * per_image).mean()


@torch.no_grad()
def pseudo_view_trust(
    fusion_weights: Tensor,
    visible: Tensor,
    num_input_views: int = 1,
    power: float = 1.0,
) -> Tensor:
    """How much TSSF trusts each pseudo view at one time: per-view weights of the supervision.

    For every Gaussian seen by the input view (view 0, DA's anchor) and by pseudo view ``v``,
    the fusion's weight of ``v`` among the pseudo views that see the Gaussian (renormalised over
    them, so DA's weights are used as they are and GA's lose the input view's share), times the
    number of those views: 1 when the fusion weighs them alike, below 1 for a view whose features
    disagree with the input's. ``v``'s raw trust is the mean of that over those Gaussians (1 when
    it shares none with the input view: no evidence either way), raised to ``power``; the trusts
    are then scaled to average 1 over the pseudo views.

    Args:
        fusion_weights: ``(V, N)`` :attr:`~ds4d_pl.conditioning.tssf.Fused.weights` of the
            conditioning at that time, view ``v`` the scene's training view ``v`` (fixed
            cameras).
        visible: ``(V, N)`` bool, where each Gaussian is visible in each view (the fusion's
            visibility).
        num_input_views: The leading real views; they get trust 1 and do not enter the mean.
        power: Sharpening exponent ``>= 0`` (``0``: uniform).

    Returns:
        ``(V,)`` finite, non-negative trusts, 1 for the real views and averaging 1 over the
        pseudo views; no gradient.

    Raises:
        ValueError: Shapes that disagree, or no pseudo view.
    """
    if fusion_weights.ndim != 2 or visible.shape != fusion_weights.shape:
        raise ValueError(
            f"fusion_weights and visible must both be (V, N), got {tuple(fusion_weights.shape)} "
            f"and {tuple(visible.shape)}"
        )
    v = fusion_weights.shape[0]
    if not 1 <= num_input_views < v:
        raise ValueError(
            f"need 1 <= num_input_views < V={v} (at least one pseudo view), got {num_input_views}"
        )
    if not power >= 0:
        raise ValueError(f"power must be >= 0, got {power}")
    w = fusion_weights.detach().float().clamp_min(0.0)
    pseudo_vis = visible[num_input_views:]
    w_pseudo = w[num_input_views:] * pseudo_vis
    # Each Gaussian's pseudo weights over the pseudo views that see it, times their number:
    # the weight relative to "all alike".
    count = pseudo_vis.sum(0, keepdim=True).float()
    share = w_pseudo / w_pseudo.sum(0, keepdim=True).clamp_min(1e-12)
    relative = share * count
    shared = pseudo_vis & visible[0] & (w_pseudo.sum(0, keepdim=True) > 0)
    n = shared.sum(1)
    raw = torch.where(
        n > 0, (relative * shared).sum(1) / n.clamp_min(1), torch.ones_like(n).float()
    )
    raw = raw.pow(power)
    mean = raw.mean()
    pseudo = raw / mean if mean > 0 else torch.ones_like(raw)
    return torch.cat([torch.ones(num_input_views, device=w.device), pseudo])


def check_pseudo_weighting(
    weights: LossWeights,
    conditioned: bool,
    tssf: str,
    representation: str = "gaussians",
) -> None:
    """Refuse ``loss.pseudo_weighting: tssf`` where there is no fusion to take the trust from.

    Raises:
        ValueError: Naming ``model.loss.pseudo_weighting`` and what is missing.
    """
    if weights.pseudo_weighting != "tssf":
        return
    if not conditioned:
        raise ValueError(
            "model.loss.pseudo_weighting='tssf' weighs the pseudo views by TSSF's trust, but "
            "this ablation row has no frame features (model.ablation.frame_features: false, "
            "rows A/B); use pseudo_weighting: uniform or a row with frame features"
        )
    if tssf == "off":
        raise ValueError(
            "model.loss.pseudo_weighting='tssf' needs a fusion across views, but "
            "model.ablation.tssf is 'off' (the input view only, so no pseudo view has a weight); "
            "use pseudo_weighting: uniform or tssf: mean, ga or da"
        )
    if representation != "gaussians":
        raise ValueError(
            "model.loss.pseudo_weighting='tssf' takes the trust from the fusion weights of the "
            f"Gaussians; model.representation={representation!r} is conditioned at ray samples"
        )


def scale_ratio_term(log_scales: Tensor, max_ratio: float) -> Tensor:
    """Mean excess anisotropy ``relu(max/min − max_ratio)``: needle-like Gaussians shimmer when
    they rotate over time, so their elongation is bounded softly."""
    if log_scales.numel() == 0:
        return log_scales.sum()
    ratio = torch.exp(log_scales.max(-1).values - log_scales.min(-1).values)
    return torch.relu(ratio - max_ratio).mean()


def term_weights(weights: LossWeights, step: int) -> dict[str, float]:
    """Effective weight of every term at ``step``: input-view terms scaled by ``input_view``,
    the mask weight ramped in linearly."""
    w = {k: float(v) for k, v in weights.as_dict().items() if k not in _NON_TERMS}
    for name in INPUT_VIEW_TERMS:
        w[name] *= weights.input_view
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


_NON_TERMS = {
    "mask_ramp_steps",
    "max_scale_ratio",
    "input_view",
    "pseudo_downsample",
    "pseudo_weighting",
    "pseudo_trust_power",
}
