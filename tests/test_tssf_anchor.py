"""Per-point input view of the fusions (``conditioning.anchor: best``, docs/design.md §5).

Spec:
  * a per-point anchor that is 0 everywhere gives exactly the int path, in every fusion;
  * a per-point anchor gives, for each point, what the int path gives with that point's anchor;
  * an anchor that does not see its point falls back to the uniform mean of the views that do;
  * gradients reach the features of the anchor and of the other views, and DA's merge layer;
  * :func:`best_views` picks the visible view with the largest footprint (nearest, for equal
    focal lengths), never an unseen one; ties go to the lower index;
  * the conditioner uses it with ``anchor: best``; scenes with pseudo views refuse it.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ds4d_pl.cameras import Cameras, look_at, orbit_cameras
from ds4d_pl.conditioning.build import Conditioner
from ds4d_pl.conditioning.tssf import (
    PointFeatures,
    best_views,
    make_fusion,
    sample_point_features,
)
from ds4d_pl.config import AblationConfig, ConditioningConfig, FieldConfig, GaussianInit
from ds4d_pl.data.parsers.synthetic import SyntheticConfig, make_synthetic_scene
from ds4d_pl.model import DS4DModel

V, N, D = 4, 30, 6

FUSIONS = {
    "da_sum": {"mode": "da", "combine": "sum", "tau": 0.7},
    "da_concat": {"mode": "da", "combine": "concat"},
    "ga_relative": {"mode": "ga", "ga_scorer": "relative"},
    "ga_own": {"mode": "ga"},
    "mean": {"mode": "mean"},
    "off": {"mode": "off"},
}


def _features(seed: int = 0) -> PointFeatures:
    g = torch.Generator().manual_seed(seed)
    vis = torch.rand(V, N, generator=g) > 0.3
    vis[:, 0] = False  # a point no view sees
    vis[:, 1] = True  # one every view sees
    feats = torch.randn(V, N, D, generator=g) * vis[..., None]
    return PointFeatures(feats, vis)


def _fusion(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    fusion = make_fusion(D, **FUSIONS[name])
    with torch.no_grad():  # learned layers away from their zero start, so they matter
        for p in fusion.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    return fusion


@pytest.mark.parametrize("name", list(FUSIONS))
def test_per_point_anchor_of_zeros_is_the_int_path(name: str) -> None:
    fusion, pf = _fusion(name), _features()
    a = fusion(pf, 0)
    b = fusion(pf, torch.zeros(N, dtype=torch.long))
    assert torch.equal(a.features, b.features) and torch.equal(a.weights, b.weights)


@pytest.mark.parametrize("name", list(FUSIONS))
def test_per_point_anchor_is_the_int_path_point_by_point(name: str) -> None:
    fusion, pf = _fusion(name), _features(1)
    anchor = torch.randint(0, V, (N,), generator=torch.Generator().manual_seed(2))
    mixed = fusion(pf, anchor)
    for v in range(V):
        ref = fusion(pf, v)
        cols = anchor == v
        torch.testing.assert_close(mixed.features[cols], ref.features[cols])
        torch.testing.assert_close(mixed.weights[:, cols], ref.weights[:, cols])


def test_an_anchor_that_does_not_see_its_point_falls_back_to_the_mean_of_the_others() -> None:
    fusion, pf = make_fusion(D, "da"), _features(3)
    vis = pf.visible.clone()
    vis[:, 5] = torch.tensor([False, True, True, False])
    pf = PointFeatures(pf.features * vis[..., None], vis)
    anchor = torch.zeros(N, dtype=torch.long)
    anchor[5] = 3  # view 3 does not see point 5
    out = fusion(pf, anchor)
    torch.testing.assert_close(out.weights[:, 5], torch.tensor([0.0, 0.5, 0.5, 0.0]))
    torch.testing.assert_close(out.features[5], 0.5 * (pf.features[1, 5] + pf.features[2, 5]))
    assert torch.equal(out.features[0], torch.zeros(D))  # no view at all: exactly zero


def test_gradients_reach_the_anchor_the_other_views_and_the_merge_layer() -> None:
    fusion = make_fusion(D, "da", combine="concat")
    pf = _features(4)
    feats = pf.features.clone().requires_grad_(True)
    anchor = torch.randint(0, V, (N,), generator=torch.Generator().manual_seed(5))
    out = fusion(PointFeatures(feats, pf.visible), anchor)
    out.features.square().sum().backward()
    grad = feats.grad.abs().sum(-1)  # (V, N)
    assert grad[anchor[1], 1] > 0  # point 1 is seen by every view
    assert all(grad[v, 1] > 0 for v in range(V))
    assert torch.equal(grad[~pf.visible], torch.zeros_like(grad[~pf.visible]))
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in fusion.parameters())


def test_bad_per_point_anchors_are_refused() -> None:
    fusion, pf = make_fusion(D, "da"), _features()
    with pytest.raises(ValueError, match="per-point input_view"):
        fusion(pf, torch.zeros(N - 1, dtype=torch.long))
    with pytest.raises(ValueError, match="per-point input_view"):
        fusion(pf, torch.zeros(N))
    with pytest.raises(ValueError, match="input_view"):
        fusion(pf, torch.full((N,), V, dtype=torch.long))
    with pytest.raises(ValueError, match="anchor"):
        ConditioningConfig(anchor="camera0")


def _line_of_cameras(distances: list[float]) -> Cameras:
    """Cameras on the +z axis at the given distances, all looking at the origin."""
    eye = torch.tensor([[0.0, 0.0, d] for d in distances])
    K = torch.tensor([[20.0, 0.0, 16.0], [0.0, 20.0, 16.0], [0.0, 0.0, 1.0]]).expand(len(eye), 3, 3)
    return Cameras(look_at(eye), K.clone(), 32, 32)


def test_best_view_is_the_visible_view_with_the_largest_footprint() -> None:
    cams = _line_of_cameras([4.0, 2.0, 3.0, 2.0])
    points = torch.zeros(3, 3)
    pf = sample_point_features(points, cams, torch.ones(4, 1, 4, 4))
    vis = pf.visible.clone()
    vis[1, 1] = False  # point 1: the nearest camera is occluded, the next nearest is view 3
    vis[:, 2] = False  # point 2: nobody sees it
    best = best_views(PointFeatures(pf.features, vis, pf.depth), cams)
    # Point 0: views 1 and 3 tie (both 2 away): the lower index wins.
    assert best.tolist() == [1, 3, 0]
    # A longer focal length counts as much as a shorter distance.
    cams.K[0, :2, :2] *= 3.0  # 60 px / 4 = 15 > 20 px / 2 = 10
    assert best_views(sample_point_features(points, cams, torch.ones(4, 1, 4, 4)), cams)[0] == 0
    with pytest.raises(ValueError, match="depth"):
        best_views(PointFeatures(pf.features, vis), cams)
    with pytest.raises(ValueError, match="cameras"):
        best_views(pf, cams[:2])


def test_conditioner_anchors_each_point_on_its_best_view() -> None:
    cams = orbit_cameras([0.0, 0.0, 20.0], [-30.0, 0.0, 30.0], 32, 32)
    g = torch.Generator().manual_seed(6)
    feats = torch.rand(3, 4, 5, 8, 8, generator=g) + 0.1
    points = torch.randn(40, 3, generator=g) * 0.4
    cfg = ConditioningConfig(width=4, anchor="best")
    cond = Conditioner(5, cfg, dsfd=True, tssf="da")
    cond.set_features(feats, torch.linspace(0, 1, 4))
    out, fused = cond(points, 0.5, cams)
    best = best_views(sample_point_features(points, cams, cond.maps[:, 0]), cams)
    assert len(set(best.tolist())) > 1  # not every point has the same best view
    seen = fused.weights.sum(0) > 0
    # DA gives its anchor the coefficient 1 where it sees the point.
    torch.testing.assert_close(fused.weights[best, torch.arange(40)][seen], torch.ones(40)[seen])
    inputs = Conditioner(5, ConditioningConfig(width=4), dsfd=True, tssf="da")
    inputs.load_state_dict(cond.state_dict())
    inputs.set_features(feats, torch.linspace(0, 1, 4))
    assert not torch.allclose(inputs(points, 0.5, cams)[0], out)


def test_scenes_with_pseudo_views_refuse_the_best_anchor() -> None:
    scene = make_synthetic_scene(
        SyntheticConfig(num_frames=2, resolution=16, eval_resolution=16, num_init_points=50)
    )
    assert scene.num_input_views < scene.train.num_views  # view 0 real, the rest pseudo

    def model(anchor: str) -> DS4DModel:
        cond = ConditioningConfig(encoder_input_size=32, cache_dir="", anchor=anchor)
        field = FieldConfig(plane_resolution=8, time_resolution=2, feature_dim=8, hidden=16)
        ablation = AblationConfig("points", True, True, "da")
        return DS4DModel(GaussianInit(), field, ablation, cond, renderer="torch")

    with pytest.raises(ValueError, match="anchor"):
        model("best").initialise(scene, torch.Generator().manual_seed(0))
    model("input").initialise(scene, torch.Generator().manual_seed(0))
    # The same views as a rig of real cameras: accepted, and conditioned forwards run.
    rig = dataclasses.replace(scene, num_input_views=scene.train.num_views)
    m = model("best")
    m.initialise(rig, torch.Generator().manual_seed(0))
    m.prepare_conditioning(rig.train)
    assert m._condition(0.5).shape == (50, m.conditioner.out_dim)
