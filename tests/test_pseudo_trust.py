"""Pseudo-view trust: TSSF's per-view weights applied to the supervision.

Spec (``loss.pseudo_weighting``, ``losses.pseudo_view_trust``):
  * ``uniform`` (the default) computes the pseudo terms exactly as before; weights of 1 give the
    same values through the weighted path;
  * a view whose features are unrelated to the input's gets the lowest trust under DA, lower
    still when sharpened; the mean fusion trusts every view alike;
  * trusts are finite, >= 0, average 1 over the pseudo views, 1 for the real views, and carry no
    gradient; a zero-trust view's render gets no gradient from the pseudo terms;
  * ``tssf`` without frame features or without a fusion is refused at build time, naming the key.
"""

from __future__ import annotations

import math

import pytest
import torch

from ds4d_pl.cameras import orbit_cameras, zero123pp_cameras
from ds4d_pl.conditioning.build import Conditioner
from ds4d_pl.config import AblationConfig, ConditioningConfig, LossWeights
from ds4d_pl.losses import (
    PseudoViewLoss,
    check_pseudo_weighting,
    photometric_terms,
    pseudo_view_trust,
    weigh,
)
from ds4d_pl.metrics.image import ssim

C, T, RES = 8, 3, 32
BAD = 4  # the pseudo view (of 1..6) whose features have nothing to do with the input's


def _cameras():
    front = orbit_cameras([0.0], [0.0], RES, RES)
    return front.cat([front, zero123pp_cameras(RES, RES)])


def _features(bad: int | None = BAD) -> torch.Tensor:
    """``(7, T, C, 4, 4)`` features: every view sees the input's content up to small noise,
    except view ``bad``, whose features are an unrelated draw (the opposite side, say)."""
    g = torch.Generator().manual_seed(0)
    content = torch.rand(1, T, C, 4, 4, generator=g) + 0.5
    feats = content + 0.05 * torch.randn(7, T, C, 4, 4, generator=g)
    if bad is not None:
        feats[bad] = torch.rand(T, C, 4, 4, generator=g) * 2.0
    return feats


def _points(n: int = 200) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return (torch.rand(n, 3, generator=g) - 0.5) * 0.4


def _trust(tssf: str = "da", bad: int | None = BAD, power: float = 1.0) -> torch.Tensor:
    cond = Conditioner(C, ConditioningConfig(width=4), dsfd=True, tssf=tssf)
    cond.set_features(_features(bad), torch.linspace(0, 1, T))
    cams, pts = _cameras(), _points()
    _, fused = cond(pts, 0.5, cams)
    visible = cond.last_visible
    assert visible.shape == fused.weights.shape == (7, len(pts))
    assert visible[0].all()  # the set-up: the input view sees every point
    return pseudo_view_trust(fused.weights, visible, num_input_views=1, power=power)


def test_the_unrelated_view_gets_the_lowest_trust_and_sharpening_lowers_it_further() -> None:
    trust = _trust()
    pseudo = trust[1:]
    assert int(pseudo.argmin()) + 1 == BAD
    others = torch.cat([pseudo[: BAD - 1], pseudo[BAD:]])
    assert pseudo[BAD - 1] < others.min() - 0.1
    # DA's softmax at tau = 1 is gentle (here 0.85 against ~1.03); a power p acts like the
    # temperature tau / p on the trust and pushes the unrelated view far down.
    sharp = _trust(power=8.0)
    sharp_others = torch.cat([sharp[1:BAD], sharp[BAD + 1 :]])
    assert int(sharp[1:].argmin()) + 1 == BAD
    assert sharp[BAD] < trust[BAD] and sharp[BAD] < 0.5 * sharp_others.min()
    assert math.isclose(float(sharp[1:].mean()), 1.0, rel_tol=1e-5)


def test_consistent_views_are_trusted_alike() -> None:
    trust = _trust(bad=None)
    assert torch.allclose(trust, torch.ones(7), atol=0.1)


def test_mean_fusion_trusts_every_view_alike() -> None:
    assert torch.allclose(_trust("mean"), torch.ones(7))


def test_trust_bounds_and_no_gradient() -> None:
    g = torch.Generator().manual_seed(2)
    visible = torch.rand(5, 50, generator=g) > 0.3
    weights = (torch.rand(5, 50, generator=g) * visible).requires_grad_(True)
    for power in (0.0, 1.0, 4.0):
        trust = pseudo_view_trust(weights, visible, num_input_views=2, power=power)
        assert trust.shape == (5,) and not trust.requires_grad
        assert torch.isfinite(trust).all() and (trust >= 0).all()
        assert torch.equal(trust[:2], torch.ones(2))
        assert math.isclose(float(trust[2:].mean()), 1.0, rel_tol=1e-5)
    assert torch.equal(pseudo_view_trust(weights, visible, 2, power=0.0), torch.ones(5))


def test_a_view_that_shares_no_gaussian_with_the_input_is_neutral() -> None:
    visible = torch.ones(3, 10, dtype=torch.bool)
    visible[2, :] = False  # view 2 sees nothing: no evidence either way
    weights = torch.tensor([[1.0] * 10, [1.0] * 10, [0.0] * 10])
    trust = pseudo_view_trust(weights, visible)
    assert torch.allclose(trust, torch.ones(3))


def test_trust_refuses_bad_shapes() -> None:
    with pytest.raises(ValueError, match="visible"):
        pseudo_view_trust(torch.ones(3, 4), torch.ones(3, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="num_input_views"):
        pseudo_view_trust(torch.ones(2, 4), torch.ones(2, 4, dtype=torch.bool), 2)
    with pytest.raises(ValueError, match="power"):
        pseudo_view_trust(torch.ones(2, 4), torch.ones(2, 4, dtype=torch.bool), 1, -1.0)


# ------------------------------------------------------------------ the weighted loss
def _images(b: int = 4) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(3)
    pred = torch.rand(b, 16, 16, 3, generator=g)
    target = torch.rand(b, 16, 16, 3, generator=g)
    pa = torch.rand(b, 16, 16, 1, generator=g)
    ta = torch.rand(b, 16, 16, 1, generator=g)
    return pred, pa, target, ta


def test_uniform_pseudo_terms_are_exactly_the_unweighted_ones() -> None:
    pred, pa, target, ta = _images()
    is_input = torch.tensor([True, False, False, False])
    w = LossWeights()
    assert w.pseudo_weighting == "uniform"
    terms = photometric_terms(pred, pa, target, ta, is_input, w)
    pse = ~is_input
    # The formulas every run used before the weighting existed, bit for bit.
    assert torch.equal(terms["pseudo_l1"], (pred[pse] - target[pse]).abs().mean())
    assert torch.equal(terms["pseudo_ssim"], 1.0 - ssim(pred[pse], target[pse]).mean())
    assert torch.equal(terms["pseudo_mask"], ((pa[pse] - ta[pse]) ** 2).mean())
    ones = photometric_terms(pred, pa, target, ta, is_input, w, pseudo_weights=torch.ones(4))
    assert ones.keys() == terms.keys()
    for name in terms:
        assert torch.allclose(ones[name], terms[name], rtol=1e-6), name
    # The input-view terms never see the pseudo weights.
    half = photometric_terms(
        pred, pa, target, ta, is_input, w, pseudo_weights=torch.full((4,), 0.5)
    )
    assert torch.equal(half["rgb_mse"], terms["rgb_mse"])
    assert torch.allclose(half["pseudo_l1"], 0.5 * terms["pseudo_l1"])


def test_weighted_terms_follow_each_image_and_a_distrusted_view_gets_no_gradient() -> None:
    pred, pa, target, ta = _images()
    pred.requires_grad_(True)
    is_input = torch.tensor([True, False, False, False])
    weights = torch.tensor([1.0, 2.0, 1.0, 0.0], requires_grad=True)
    terms = photometric_terms(pred, pa, target, ta, is_input, LossWeights(), None, weights)
    per_image = (pred - target).abs().mean(dim=(1, 2, 3)).detach()
    expected = (2.0 * per_image[1] + per_image[2]) / 3
    assert torch.allclose(terms["pseudo_l1"], expected)
    total, _ = weigh(terms, LossWeights(pseudo_weighting="tssf"), step=1000)
    total.backward()
    assert pred.grad[3].abs().sum() == 0  # trust 0: the view no longer pulls
    assert pred.grad[1].abs().sum() > 0 and pred.grad[2].abs().sum() > 0
    assert weights.grad is None  # detached: the loss cannot lower a view's trust


def test_weights_must_be_one_per_image() -> None:
    pred, pa, target, ta = _images()
    with pytest.raises(ValueError, match="one weight per image"):
        photometric_terms(
            pred, pa, target, ta, torch.zeros(4, dtype=torch.bool), LossWeights(), None,
            torch.ones(3),
        )  # fmt: skip


# ------------------------------------------------------------------ configuration
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"pseudo_weighting": "confidence"}, "loss.pseudo_weighting"),
        ({"pseudo_trust_power": -1.0}, "loss.pseudo_trust_power"),
        ({"pseudo_trust_power": float("nan")}, "loss.pseudo_trust_power"),
    ],
)
def test_bad_values_are_refused_naming_the_key(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LossWeights(**kwargs)


def test_tssf_weighting_needs_a_fusion_of_frame_features() -> None:
    tssf = LossWeights(pseudo_weighting="tssf")
    with pytest.raises(ValueError, match=r"model\.loss\.pseudo_weighting.*frame_features"):
        check_pseudo_weighting(tssf, conditioned=False, tssf="off")
    with pytest.raises(ValueError, match=r"model\.loss\.pseudo_weighting.*tssf is 'off'"):
        check_pseudo_weighting(tssf, conditioned=True, tssf="off")
    with pytest.raises(ValueError, match=r"model\.loss\.pseudo_weighting.*nerf"):
        check_pseudo_weighting(tssf, conditioned=True, tssf="da", representation="nerf")
    for mode in ("mean", "ga", "da"):
        check_pseudo_weighting(tssf, conditioned=True, tssf=mode)
    check_pseudo_weighting(LossWeights(), conditioned=False, tssf="off")


def test_the_system_refuses_tssf_weighting_on_row_b_at_build_time() -> None:
    from ds4d_pl.system import DS4DSystem

    row_b = AblationConfig("points", False, False, "off")
    with pytest.raises(ValueError, match="model.loss.pseudo_weighting"):
        DS4DSystem(ablation=row_b, loss=LossWeights(pseudo_weighting="tssf"))
    DS4DSystem(ablation=row_b)  # uniform: fine


def test_the_run_records_the_weighting() -> None:
    assert "tssf" not in PseudoViewLoss.build(LossWeights()).description
    described = PseudoViewLoss.build(LossWeights(pseudo_weighting="tssf", pseudo_trust_power=2))
    assert described.description == "l1+ssim, views weighted by tssf trust^2"


def test_a_fit_weighs_the_pseudo_views_and_logs_their_trust(run_dir) -> None:
    import csv
    import json

    from conftest import logged_tiny_fit

    log = logged_tiny_fit(run_dir, "row_h_trust", 3, "--model.loss.pseudo_trust_power=2")
    rows = [r for r in csv.DictReader(log.open()) if r.get("train/pseudo_trust/view_1")]
    assert rows, "no trust logged in the fine steps"
    for row in rows:
        trusts = [float(row[f"train/pseudo_trust/view_{k}"]) for k in range(1, 7)]
        assert all(math.isfinite(x) and x >= 0 for x in trusts)
        assert math.isclose(sum(trusts) / 6, 1.0, rel_tol=1e-4)
    info = json.loads((run_dir / "run_info.json").read_text())
    assert info["pseudo_view_loss"] == "l1+ssim, views weighted by tssf trust^2"
