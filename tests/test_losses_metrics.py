"""Loss terms and image metrics: names, weights, invariants, masking."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import CONFIGS, tiny_overrides, tiny_synthetic

from ds4d_pl.cli import main
from ds4d_pl.config import LossWeights
from ds4d_pl.losses import (
    PseudoViewLoss,
    photometric_terms,
    scale_ratio_term,
    term_weights,
    weigh,
)
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


def test_input_view_weight_scales_every_input_term_and_no_pseudo_term() -> None:
    plain = term_weights(LossWeights(rgb_l1=0.5, mask_ramp_steps=0), step=0)
    heavy = term_weights(LossWeights(rgb_l1=0.5, mask_ramp_steps=0, input_view=4.0), step=0)
    for name in ("rgb_mse", "rgb_l1", "rgb_ssim", "mask"):
        assert heavy[name] == 4.0 * plain[name], name
    for name in ("pseudo_l1", "pseudo_ssim", "pseudo_mask", "pseudo_lpips", "plane_tv"):
        assert heavy[name] == plain[name], name
    assert "input_view" not in heavy and "pseudo_downsample" not in heavy  # knobs, not terms
    with pytest.raises(ValueError, match="input_view"):
        LossWeights(input_view=0.0)


def _textured(shift: int = 0) -> torch.Tensor:
    """``(1, 16, 16, 3)`` fine stripes (period 2 px) over a coarse gradient, shifted in x."""
    x = torch.arange(16).roll(shift).float()
    fine = (x % 2)[None, :].expand(16, 16)
    coarse = torch.linspace(0, 1, 16)[:, None].expand(16, 16)
    return (0.5 * coarse + 0.3 * fine).unsqueeze(-1).expand(16, 16, 3).unsqueeze(0)


def test_pseudo_downsample_compares_block_averages_and_forgives_misplaced_detail() -> None:
    alpha = torch.ones(2, 16, 16, 1)
    is_input = torch.tensor([True, False])
    w = LossWeights(pseudo_downsample=2, pseudo_ssim=0.0)
    pred, target = _pair(2)
    terms = photometric_terms(pred, alpha, target, alpha, is_input, w)
    pooled = torch.nn.functional.avg_pool2d((pred[1:] - target[1:]).permute(0, 3, 1, 2), 2)
    assert terms["pseudo_l1"] == pytest.approx(pooled.abs().mean().item(), rel=1e-5)
    assert terms["rgb_mse"] == pytest.approx(((pred[0] - target[0]) ** 2).mean().item())
    # Detail one pixel off (a generated view's misplacement) costs nothing once averaged over
    # 2 x 2 blocks, while the coarse layout still counts: a darker render is still penalised.
    shifted = torch.cat([_textured(), _textured(1)])
    full = photometric_terms(
        shifted, alpha, torch.cat([_textured()] * 2), alpha, is_input, LossWeights()
    )
    low = photometric_terms(shifted, alpha, torch.cat([_textured()] * 2), alpha, is_input, w)
    assert full["pseudo_l1"] > 0.2 and low["pseudo_l1"] < 1e-6
    darker = torch.cat([_textured(), _textured() * 0.5])
    assert photometric_terms(darker, alpha, shifted, alpha, is_input, w)["pseudo_l1"] > 0.05
    with pytest.raises(ValueError, match="pseudo_downsample"):
        LossWeights(pseudo_downsample=0)


def test_pseudo_lpips_term_uses_the_given_network_on_pseudo_views_only() -> None:
    from ds4d_pl.metrics.lpips import LPIPSNet

    torch.manual_seed(0)
    net = LPIPSNet().eval().requires_grad_(False)  # random weights: a test stand-in only
    pred, target = _pair(3, 32, 32)
    pred.requires_grad_(True)
    alpha = torch.ones(3, 32, 32, 1)
    is_input = torch.tensor([True, False, False])
    w = LossWeights(pseudo_lpips=0.2)
    terms = photometric_terms(pred, alpha, target, alpha, is_input, w, lpips=net)
    expected = net(pred[1:].permute(0, 3, 1, 2) * 2 - 1, target[1:].permute(0, 3, 1, 2) * 2 - 1)
    assert terms["pseudo_lpips"].item() == pytest.approx(expected.mean().item(), rel=1e-5)
    terms["pseudo_lpips"].backward()
    assert pred.grad[1:].abs().sum() > 0 and pred.grad[0].abs().sum() == 0
    # No network (weights missing): the term is left out rather than computed on anything else.
    assert "pseudo_lpips" not in photometric_terms(pred, alpha, target, alpha, is_input, w)


def test_pseudo_view_loss_says_what_it_uses(no_weights: Path) -> None:
    assert PseudoViewLoss.build(LossWeights()).description == "l1+ssim"
    assert PseudoViewLoss.build(LossWeights(pseudo_downsample=2)).description == "l1@1/2+ssim@1/2"
    with pytest.warns(UserWarning, match="vgg16-397923af.pth"):
        missing = PseudoViewLoss.build(LossWeights(pseudo_lpips=0.2))
    assert missing.lpips is None
    assert missing.description == (
        "l1+ssim (lpips requested but its weights are missing: lpips_vgg_v0.1.pth, "
        "vgg16-397923af.pth)"
    )
    from ds4d_pl.metrics.lpips import LPIPSNet

    net = LPIPSNet()
    weights = no_weights / "weights"
    torch.save(dict(net.backbone.state_dict()), weights / "vgg16-397923af.pth")
    torch.save(net.heads.state_dict(), weights / "lpips_vgg_v0.1.pth")
    found = PseudoViewLoss.build(LossWeights(pseudo_lpips=0.2))
    assert found.description == "l1+ssim+lpips" and found.lpips is not None
    assert not any(p.requires_grad for p in found.lpips.parameters())


def test_run_info_records_the_pseudo_view_loss_actually_used(
    no_weights: Path, run_dir: Path
) -> None:
    args = ["fit", "-c", str(CONFIGS / "base.yaml"), *tiny_synthetic(), *tiny_overrides(run_dir)]
    with pytest.warns(UserWarning, match="pseudo_lpips"):
        main([*args, "--model.loss.pseudo_lpips=0.2", "--test_after_fit=false"])
    info = json.loads((run_dir / "run_info.json").read_text())
    assert info["pseudo_view_loss"].startswith("l1+ssim (lpips requested but its weights")


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
