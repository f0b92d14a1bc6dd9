"""Loss terms and image metrics: names, weights, invariants, masking."""

from __future__ import annotations

import math

import pytest
import torch

from ds4d_pl.config import LossWeights
from ds4d_pl.losses import photometric_terms, scale_ratio_term, term_weights, weigh
from ds4d_pl.metrics.image import (
    ImagePSNR,
    ImageSSIM,
    MaskedPSNR,
    PooledMaskedPSNR,
    psnr_from_mse,
)


def _pair(b: int = 4, h: int = 16, w: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(b, h, w, 3, generator=g), torch.rand(b, h, w, 3, generator=g)


def test_photometric_terms_split_input_and_pseudo_views() -> None:
    pred, target = _pair()
    alpha = torch.ones(4, 16, 16, 1)
    is_input = torch.tensor([True, False, False, False])
    terms = photometric_terms(pred, alpha, target, alpha, is_input, LossWeights())
    assert set(terms) == {"rgb_mse", "mask", "pseudo_l1", "pseudo_ssim", "pseudo_mask"}
    assert terms["rgb_mse"] == pytest.approx(((pred[0] - target[0]) ** 2).mean().item())
    assert terms["pseudo_l1"] == pytest.approx((pred[1:] - target[1:]).abs().mean().item())
    only_input = photometric_terms(
        pred, alpha, target, alpha, torch.ones(4, dtype=bool), LossWeights()
    )
    assert set(only_input) == {"rgb_mse", "mask"}


def test_scene_loss_uses_l1_and_ssim_on_real_views() -> None:
    pred, target = _pair()
    alpha = torch.ones(4, 16, 16, 1)
    w = LossWeights(rgb_mse=0.0, rgb_l1=1.0, rgb_ssim=0.2, mask=0.0)
    terms = photometric_terms(pred, alpha, target, alpha, torch.ones(4, dtype=bool), w)
    assert set(terms) == {"rgb_l1", "rgb_ssim"}
    assert terms["rgb_l1"] == pytest.approx((pred - target).abs().mean().item())
    assert 0.0 < terms["rgb_ssim"] < 2.0
    same = photometric_terms(pred, alpha, pred, alpha, torch.ones(4, dtype=bool), w)
    assert same["rgb_ssim"].abs() < 1e-5 and same["rgb_l1"] == 0


def test_zero_weight_terms_are_not_computed_and_perfect_prediction_costs_nothing() -> None:
    pred, _ = _pair()
    alpha = torch.rand(4, 16, 16, 1)
    w = LossWeights(pseudo_ssim=0.0, mask=0.0)
    terms = photometric_terms(pred, alpha, pred, alpha, torch.tensor([1, 0, 0, 0]).bool(), w)
    assert "pseudo_ssim" not in terms and "mask" not in terms
    assert all(v.abs() < 1e-6 for v in terms.values())


def test_weigh_applies_weights_ramps_mask_and_rejects_unknown_terms() -> None:
    w = LossWeights(rgb_mse=2.0, mask=1.0, mask_ramp_steps=10)
    terms = {"rgb_mse": torch.tensor(1.0), "mask": torch.tensor(1.0)}
    total, used = weigh(terms, w, step=5)
    assert total.item() == pytest.approx(2.5)
    assert used == {"rgb_mse": 2.0, "mask": 0.5}
    assert term_weights(w, 100)["mask"] == 1.0
    with pytest.raises(KeyError, match="rbg"):
        weigh({"rbg": torch.tensor(1.0)}, w, 0)
    with pytest.raises(ValueError, match="no loss terms"):
        weigh({}, w, 0)


def test_scale_ratio_penalises_only_needles() -> None:
    iso = torch.zeros(5, 3)
    assert scale_ratio_term(iso, 10.0) == 0
    needle = torch.tensor([[math.log(100.0), 0.0, 0.0]], requires_grad=True)
    loss = scale_ratio_term(needle, 10.0)
    assert loss.item() == pytest.approx(90.0, rel=1e-4)
    loss.backward()
    assert needle.grad.abs().sum() > 0


def test_psnr_is_per_image_mean_with_explicit_range() -> None:
    pred, target = _pair(2)
    m = ImagePSNR(data_range=1.0)
    m.update(pred, target)
    mse = ((pred - target) ** 2).flatten(1).mean(1)
    assert m.compute().item() == pytest.approx(psnr_from_mse(mse).mean().item(), rel=1e-5)
    m2 = ImagePSNR(data_range=2.0)
    m2.update(pred, target)
    assert m2.compute() - m.compute() == pytest.approx(20 * math.log10(2.0), rel=1e-4)


def test_ssim_of_identical_images_is_one_and_drops_with_noise() -> None:
    pred, _ = _pair()
    s = ImageSSIM()
    s.update(pred, pred)
    assert s.compute().item() == pytest.approx(1.0, abs=1e-5)
    s.reset()
    s.update((pred + 0.2 * torch.randn_like(pred)).clamp(0, 1), pred)
    assert s.compute() < 0.95


def test_masked_psnr_only_sees_masked_pixels_and_skips_empty_masks() -> None:
    pred, target = _pair(2)
    mask = torch.zeros(2, 16, 16, 1, dtype=torch.bool)
    mask[0, :4, :4] = True
    pred_outside = pred.clone()
    pred_outside[0, 8:] = 0.0  # changes outside the mask must not matter
    a, b = MaskedPSNR(), MaskedPSNR()
    a.update(pred, target, mask)
    b.update(pred_outside, target, mask)
    assert a.compute() == b.compute()
    mse = ((pred[0, :4, :4] - target[0, :4, :4]) ** 2).mean()
    assert a.compute().item() == pytest.approx(psnr_from_mse(mse).item(), rel=1e-5)
    empty = MaskedPSNR()
    empty.update(pred, target, torch.zeros(2, 16, 16, 1, dtype=torch.bool))
    assert math.isnan(empty.compute().item())


def test_pooled_dynamic_psnr_pools_every_moving_pixel_and_ignores_views_without_motion() -> None:
    target = torch.full((3, 8, 8, 3), 0.5)
    pred = target.clone()
    mask = torch.zeros(3, 8, 8, 1, dtype=torch.bool)
    mask[0, :2, :2] = True  # 4 moving pixels, error 0.1
    pred[0, :2, :2] = 0.6
    mask[1, :3, :4] = True  # 12 moving pixels, error 0.2
    pred[1, :3, :4] = 0.7
    pred[2] = 0.0  # a view without moving pixels: its (large) error must not count
    pred[0, 5:] = 1.0  # nor an error outside the mask
    pooled = PooledMaskedPSNR()
    pooled.update(pred, target, mask)
    by_hand = 10 * math.log10(1.0 / ((4 * 3 * 0.1**2 + 12 * 3 * 0.2**2) / (16 * 3)))
    assert pooled.compute().item() == pytest.approx(by_hand, abs=1e-4)  # 14.88 dB
    per_image = MaskedPSNR()
    per_image.update(pred, target, mask)
    assert per_image.compute().item() == pytest.approx((20.0 + 10 * math.log10(25)) / 2, abs=1e-4)
    # Pooling over two updates equals pooling over one batch.
    split = PooledMaskedPSNR()
    split.update(pred[:1], target[:1], mask[:1])
    split.update(pred[1:], target[1:], mask[1:])
    assert split.compute().item() == pytest.approx(by_hand, abs=1e-4)
    empty = PooledMaskedPSNR()
    empty.update(pred, target, torch.zeros_like(mask))
    assert math.isnan(empty.compute().item())
    with pytest.raises(ValueError, match="mask"):
        empty.update(pred, target, torch.ones(3, 4, 4))


def test_metric_shape_errors_are_clear() -> None:
    with pytest.raises(ValueError, match=r"\(B, H, W, 3\)"):
        ImagePSNR().update(torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8))
    with pytest.raises(ValueError, match="mask"):
        MaskedPSNR().update(torch.rand(1, 8, 8, 3), torch.rand(1, 8, 8, 3), torch.ones(1, 4, 4))


def test_fusion_statistics_report_input_and_pseudo_shares() -> None:
    from ds4d_pl.logging import fusion_statistics

    weights = torch.tensor([[1.0, 0.0, 0.0], [0.25, 0.5, 0.0], [0.75, 0.5, 0.0]])
    stats = fusion_statistics(weights)
    assert stats["train/fusion/unseen_fraction"] == pytest.approx(1 / 3)
    assert stats["train/fusion/input_weight"] == pytest.approx(0.5)
    assert stats["train/fusion/pseudo_weight"] == pytest.approx(1.0)
