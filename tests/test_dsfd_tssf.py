"""DSFD algebra, point-feature sampling and TSSF fusion (docs/design.md §5)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ds4d_pl.cameras import Cameras, orbit_cameras
from ds4d_pl.conditioning.dsfd import DSFD, PassThroughDSFD, decouple, reference_feature
from ds4d_pl.conditioning.tssf import (
    InputViewOnly,
    PointFeatures,
    make_fusion,
    pixel_to_grid,
    sample_point_features,
)


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum(dim=-3)


# --------------------------------------------------------------------------------------- DSFD


def test_decouple_splits_into_orthogonal_parts() -> None:
    g = torch.Generator().manual_seed(0)
    f = torch.randn(2, 3, 16, 4, 5, generator=g)
    r = torch.randn(2, 1, 16, 4, 5, generator=g)
    d = decouple(f, r)
    torch.testing.assert_close(d.static + d.dynamic, f)
    scale = f.norm(dim=-3) ** 2
    assert (_dot(d.static, d.dynamic).abs() / scale).max() < 1e-5
    assert (_dot(d.dynamic, r.expand_as(f)).abs() / (f.norm(dim=-3) * r.norm(dim=-3))).max() < 1e-5
    torch.testing.assert_close(d.decoupled, torch.cat([f, d.dynamic], dim=2))
    assert d.decoupled.shape == (2, 3, 32, 4, 5)
    assert d.energy.shape == (2, 3, 4, 5)
    assert d.energy.min() >= 0 and d.energy.max() <= 1 + 1e-5
    # Random 16-d directions are far from parallel: the energy is not trivially zero.
    assert d.energy.mean() > 0.5


def test_feature_parallel_to_reference_has_no_dynamic_part() -> None:
    g = torch.Generator().manual_seed(1)
    r = torch.randn(3, 8, 4, 4, generator=g)
    c = torch.tensor([-2.0, 0.5, 3.0])[:, None, None, None]  # includes a sign flip
    d = decouple(c * r, r)
    assert d.dynamic.abs().max() < 1e-5
    assert d.energy.max() < 1e-5
    torch.testing.assert_close(d.static, c * r)


def test_decouple_invariant_to_reference_scale() -> None:
    g = torch.Generator().manual_seed(2)
    f = torch.randn(4, 12, 3, 3, generator=g)
    r = torch.randn(4, 12, 3, 3, generator=g)
    a, b = decouple(f, r), decouple(f, 7.3 * r)
    torch.testing.assert_close(a.static, b.static, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a.dynamic, b.dynamic, atol=1e-5, rtol=1e-5)


def test_zero_tokens_are_finite() -> None:
    d = decouple(torch.zeros(1, 4, 2, 2), torch.zeros(1, 4, 2, 2))
    assert torch.isfinite(d.decoupled).all() and d.energy.abs().max() == 0


def test_reference_modes() -> None:
    feats = torch.randn(2, 5, 3, 2, 2)
    mid, mean = feats[:, 2], feats.mean(dim=1)
    torch.testing.assert_close(reference_feature(feats, "mid"), mid)
    torch.testing.assert_close(reference_feature(feats, "mean"), mean)
    torch.testing.assert_close(reference_feature(feats, "mix", 0.25), 0.25 * mid + 0.75 * mean)
    torch.testing.assert_close(reference_feature(feats), 0.5 * mid + 0.5 * mean)
    # Even T: the middle frame is T // 2.
    torch.testing.assert_close(reference_feature(feats[:, :4], "mid"), feats[:, 2])
    with pytest.raises(ValueError, match="mid.*mean.*mix"):
        reference_feature(feats, "median")
    with pytest.raises(ValueError, match="alpha"):
        reference_feature(feats, "mix", 1.5)
    with pytest.raises(ValueError, match="mid.*mean.*mix"):
        DSFD(3, reference="first")


def test_dsfd_and_pass_through_share_out_dim() -> None:
    feats = torch.randn(2, 3, 6, 4, 4)
    dsfd, off = DSFD(6), PassThroughDSFD(6)
    assert dsfd.out_dim == off.out_dim == 12
    out, out_off = dsfd(feats), off(feats)
    assert out.shape == out_off.shape == (2, 3, 12, 4, 4)
    torch.testing.assert_close(out[:, :, :6], feats)
    torch.testing.assert_close(out_off[:, :, :6], feats)
    assert torch.equal(out_off[:, :, 6:], torch.zeros_like(feats))
    assert out[:, :, 6:].abs().max() > 0
    assert off.dynamic_energy(feats).shape == dsfd.dynamic_energy(feats).shape == (2, 3, 4, 4)
    assert torch.equal(off.dynamic_energy(feats), torch.zeros(2, 3, 4, 4))
    with pytest.raises(ValueError):
        dsfd(torch.randn(2, 3, 5, 4, 4))


def _moving_patch_video() -> tuple[torch.Tensor, tuple[slice, slice]]:
    """One view, five frames of a static 6x6 token grid; frame 4 changes a 2x2 patch."""
    g = torch.Generator().manual_seed(3)
    background = torch.randn(8, 6, 6, generator=g)
    feats = background.expand(1, 5, 8, 6, 6).clone()
    patch = (slice(1, 3), slice(2, 4))
    # A different direction, not a rescaling of the background (that would count as static).
    feats[0, 4, :, patch[0], patch[1]] = torch.randn(8, 2, 2, generator=g) * 2.0
    return feats, patch


def test_dynamic_energy_concentrates_on_moving_patch() -> None:
    feats, (rows, cols) = _moving_patch_video()
    inside = torch.zeros(6, 6, dtype=torch.bool)
    inside[rows, cols] = True

    energy = DSFD(8, reference="mid").dynamic_energy(feats)[0]  # (T, h, w)
    # Frame 2 *is* the reference: nothing dynamic anywhere.
    assert energy[2].max() < 1e-5
    assert energy[4][~inside].max() < 1e-5
    assert energy[4][inside].min() > 0.3

    # The default mixed reference contains a bit of the moved patch, yet the moving frame's
    # energy stays concentrated where the motion is.
    energy = DSFD(8).dynamic_energy(feats)[0]
    assert energy[4][~inside].max() < 1e-5
    assert energy[4][inside].min() > 0.1


# ------------------------------------------------------------------------ point feature sampling

W, H, FOCAL = 8, 6, 4.0


def _front_camera(width: int = W, height: int = H) -> Cameras:
    """Identity pose (OpenCV: looks along +z), principal point at the image centre."""
    K = torch.tensor([[FOCAL, 0.0, width / 2], [0.0, FOCAL, height / 2], [0.0, 0.0, 1.0]])
    return Cameras(torch.eye(4)[None], K[None], width, height)


def _point_at_pixel(u: float, v: float, z: float = 2.0) -> list[float]:
    return [(u - W / 2) * z / FOCAL, (v - H / 2) * z / FOCAL, z]


def _position_map(h: int = 3, w: int = 4) -> torch.Tensor:
    """``(1, 2, h, w)`` map whose channel 0 is the token's column and channel 1 its row."""
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return torch.stack([cols, rows]).float()[None]


def test_pixel_to_grid_maps_image_edges_and_token_centres() -> None:
    uv = torch.tensor([[0.0, 0.0], [8.0, 6.0], [1.0, 1.0]])
    grid = pixel_to_grid(uv, 8, 6)
    torch.testing.assert_close(grid[0], torch.tensor([-1.0, -1.0]))
    torch.testing.assert_close(grid[1], torch.tensor([1.0, 1.0]))
    # Pixel (1, 1) is the centre of token (0, 0) of a 3x4 grid on an 8x6 image: (2j+1)/w - 1.
    torch.testing.assert_close(grid[2], torch.tensor([1 / 4 - 1, 1 / 3 - 1]))


def test_point_at_token_centre_gets_that_token() -> None:
    fmap = _position_map()  # 3x4 tokens over an 8x6 image: 2x2 pixels per token
    pts, expected = [], []
    for i in range(3):
        for j in range(4):
            pts.append(_point_at_pixel((j + 0.5) * 2, (i + 0.5) * 2))
            expected.append([float(j), float(i)])
    pf = sample_point_features(torch.tensor(pts), _front_camera(), fmap)
    assert pf.features.shape == (1, 12, 2) and pf.visible.all()
    torch.testing.assert_close(pf.features[0], torch.tensor(expected), atol=1e-5, rtol=0)


def test_sampling_equals_upsampling_then_reading_the_pixel() -> None:
    fmap = torch.randn(1, 5, 3, 4, generator=torch.Generator().manual_seed(4))
    up = F.interpolate(fmap, size=(H, W), mode="bilinear", align_corners=False)[0]
    ys, xs = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    pts = torch.tensor(
        [_point_at_pixel(x + 0.5, y + 0.5) for x, y in zip(xs.flatten(), ys.flatten(), strict=True)]
    )
    pf = sample_point_features(pts, _front_camera(), fmap)
    assert pf.visible.all()
    torch.testing.assert_close(pf.features[0], up.flatten(1).T, atol=1e-5, rtol=1e-5)


def test_points_outside_or_behind_are_invisible_with_zero_features() -> None:
    fmap = torch.rand(1, 3, 3, 4) + 1.0  # nowhere zero
    pts = torch.tensor(
        [
            _point_at_pixel(4.0, 3.0),  # centre: visible
            _point_at_pixel(-0.5, 3.0),  # left of the image
            _point_at_pixel(8.0, 3.0),  # u == width is outside
            _point_at_pixel(4.0, 6.5),  # below
            [0.0, 0.0, -2.0],  # behind the camera
            [0.0, 0.0, 0.0],  # at the camera centre
        ]
    )
    pf = sample_point_features(pts, _front_camera(), fmap)
    assert pf.visible[0].tolist() == [True, False, False, False, False, False]
    assert torch.equal(pf.features[0, 1:], torch.zeros(5, 3))
    assert (pf.features[0, 0] > 0).all()


def test_depth_test_occludes_points_behind_the_surface() -> None:
    fmap = torch.rand(1, 3, 3, 4) + 1.0
    depth = torch.full((1, H, W), 2.0)
    depth[0, :, :2] = 0.0  # nothing rendered in the two left columns
    pts = torch.tensor(
        [
            _point_at_pixel(4.0, 3.0, z=2.0),  # on the surface
            _point_at_pixel(4.0, 3.0, z=2.08),  # inside the 5% relative tolerance
            _point_at_pixel(4.0, 3.0, z=2.5),  # behind
            _point_at_pixel(1.0, 3.0, z=9.0),  # far, but nothing rendered there
        ]
    )
    pf = sample_point_features(pts, _front_camera(), fmap, depth, depth_tolerance=0.05)
    assert pf.visible[0].tolist() == [True, True, False, True]
    assert torch.equal(pf.features[0, 2], torch.zeros(3))
    # The same surface as (V, H, W, 1), the renderer's layout, gives the same answer.
    pf4 = sample_point_features(pts, _front_camera(), fmap, depth[..., None])
    assert torch.equal(pf4.visible, pf.visible)


def test_low_resolution_depth_map() -> None:
    fmap = torch.rand(1, 3, 3, 4) + 1.0
    depth = torch.full((1, H // 2, W // 2), 3.0)
    depth[0, :, : W // 4] = 1.0  # left half of the image: a surface in front of z = 2
    pts = torch.tensor(
        [
            _point_at_pixel(1.5, 3.0),  # left half → occluded
            _point_at_pixel(3.9, 3.0),  # still left half (image pixel 3 → depth pixel 1)
            _point_at_pixel(4.1, 3.0),  # right half → visible
            _point_at_pixel(7.5, 0.5),
        ]
    )
    pf = sample_point_features(pts, _front_camera(), fmap, depth)
    assert pf.visible[0].tolist() == [False, False, True, True]


def test_gradient_reaches_feature_maps() -> None:
    fmap = torch.zeros(1, 2, 3, 4, requires_grad=True)
    pts = torch.tensor([_point_at_pixel(3.0, 3.0), _point_at_pixel(3.0, 3.0), [0.0, 0.0, -1.0]])
    pf = sample_point_features(pts, _front_camera(), fmap)
    pf.features.sum().backward()
    expected = torch.zeros(1, 2, 3, 4)
    expected[..., 1, 1] = 2.0  # two points at the centre of token (1, 1); the third is unseen
    torch.testing.assert_close(fmap.grad, expected)


def test_orbit_views_see_the_origin_at_the_image_centre() -> None:
    cams = orbit_cameras([0.0, 30.0, -20.0], [0.0, 90.0, 200.0], 32, 32)
    fmap = torch.randn(3, 4, 2, 2)
    pf = sample_point_features(torch.zeros(1, 3), cams, fmap)
    assert pf.visible.all()
    torch.testing.assert_close(pf.features[:, 0], fmap.mean(dim=(2, 3)), atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------- TSSF


def _random_point_features(v: int = 4, n: int = 64, d: int = 6, seed: int = 5) -> PointFeatures:
    g = torch.Generator().manual_seed(seed)
    vis = torch.rand(v, n, generator=g) > 0.4
    vis[:, 0] = False  # a point nobody sees
    vis[:, 1] = True  # a point everybody sees
    vis[1:, 2] = False  # a point only the input view sees
    vis[0, 3] = False  # a point the input view misses
    feats = torch.randn(v, n, d, generator=g) * vis[..., None]
    return PointFeatures(feats, vis)


@pytest.mark.parametrize("mode", ["mean", "ga", "da"])
def test_weights_normalised_over_visible_views(mode: str) -> None:
    pf = _random_point_features()
    fused = make_fusion(6, mode=mode)(pf)
    assert fused.features.shape == (64, 6) and fused.weights.shape == (4, 64)
    assert torch.equal(fused.weights[~pf.visible], torch.zeros(int((~pf.visible).sum())))
    if mode == "da":
        # Pseudo views share 1 among the visible ones; the input view carries 1 where it sees.
        pseudo_vis = pf.visible[1:].any(dim=0)
        sums = fused.weights[1:].sum(dim=0)
        torch.testing.assert_close(sums[pseudo_vis], torch.ones(int(pseudo_vis.sum())))
        assert torch.equal(sums[~pseudo_vis], torch.zeros(int((~pseudo_vis).sum())))
        assert torch.equal(fused.weights[0], pf.visible[0].float())
    else:
        any_vis = pf.visible.any(dim=0)
        sums = fused.weights.sum(dim=0)
        torch.testing.assert_close(sums[any_vis], torch.ones(int(any_vis.sum())))
        assert torch.equal(sums[~any_vis], torch.zeros(int((~any_vis).sum())))
    assert torch.equal(fused.features[0], torch.zeros(6))  # nobody sees point 0


def test_relative_ga_starts_as_the_mean_fusion_and_can_learn_to_trust_the_input_view() -> None:
    pf = _random_point_features()
    relative = make_fusion(6, mode="ga", ga_scorer="relative")
    mean = make_fusion(6, mode="mean")(pf)
    start = relative(pf)
    torch.testing.assert_close(start.weights, mean.weights)
    torch.testing.assert_close(start.features, mean.features)
    # Gradients reach both additions (the distance term and the input-view bias).
    start.features.pow(2).sum().backward()
    assert relative.relative.weight.grad.abs().sum() > 0
    assert relative.input_bias.grad.abs() > 0
    with torch.no_grad():
        relative.input_bias.fill_(20.0)
    trusting = relative(pf).weights
    seen_by_input = pf.visible[0]
    assert (trusting[0, seen_by_input] > 0.99).all()
    # Points the input view misses still fuse their visible pseudo views (sum 1, input 0).
    missed = ~pf.visible[0] & pf.visible.any(dim=0)
    torch.testing.assert_close(trusting[:, missed].sum(0), torch.ones(int(missed.sum())))
    assert torch.equal(trusting[0, missed], torch.zeros(int(missed.sum())))


def test_relative_ga_scores_views_by_their_distance_to_the_input_view() -> None:
    # Two pseudo views, one equal to the input view and one far from it: a negative weight on
    # the distance term prefers the close one.
    f_in = torch.ones(1, 6)
    feats = torch.stack([f_in, f_in.clone(), f_in + 3.0])
    pf = PointFeatures(feats, torch.ones(3, 1, dtype=torch.bool))
    fusion = make_fusion(6, mode="ga", ga_scorer="relative")
    with torch.no_grad():
        fusion.relative.weight.fill_(-1.0)
    w = fusion(pf).weights[:, 0].detach()
    assert w[1] > 0.99 * (w[1] + w[2]) and float(w[0]) == pytest.approx(float(w[1]))


def test_unknown_ga_scorer_fails() -> None:
    with pytest.raises(ValueError, match="GA scorer 'paired'"):
        make_fusion(6, mode="ga", ga_scorer="paired")


@pytest.mark.parametrize(
    ("mode", "combine", "scorer"),
    [
        ("mean", None, None),
        ("ga", None, "own"),
        ("ga", None, "relative"),
        ("da", "sum", None),
        ("da", "concat", None),
    ],
)
def test_occluded_view_features_do_not_matter(
    mode: str, combine: str | None, scorer: str | None
) -> None:
    torch.manual_seed(0)
    fusion = make_fusion(6, mode=mode, combine=combine, ga_scorer=scorer)
    if getattr(fusion, "relative", None) is not None:
        # Non-zero scorer weights, so the test would see occluded features leaking in.
        nn.init.normal_(fusion.relative.weight)
        nn.init.normal_(fusion.score.weight)
    pf = _random_point_features()
    tampered = pf.features.clone()
    tampered[~pf.visible] = 100.0 * torch.randn(int((~pf.visible).sum()), 6)
    a = fusion(pf)
    b = fusion(PointFeatures(tampered, pf.visible))
    torch.testing.assert_close(a.features, b.features)
    torch.testing.assert_close(a.weights, b.weights)


def test_da_prefers_the_pseudo_view_closer_to_the_input() -> None:
    f0 = torch.ones(1, 4)
    feats = torch.stack([f0, f0 + 0.1, f0 + 1.0])  # (V=3, N=1, D=4)
    pf = PointFeatures(feats, torch.ones(3, 1, dtype=torch.bool))
    for tau in (1.0, 0.2):
        fused = make_fusion(4, mode="da", tau=tau)(pf)
        w = torch.softmax(-torch.tensor([0.1, 1.0]) / tau, dim=0)
        torch.testing.assert_close(fused.weights[:, 0], torch.cat([torch.ones(1), w]))
        assert fused.weights[1, 0] > fused.weights[2, 0]
        torch.testing.assert_close(fused.features, f0 + w[0] * (f0 + 0.1) + w[1] * (f0 + 1.0))
    # A colder temperature trusts the closer view more.
    warm = make_fusion(4, mode="da", tau=1.0)(pf).weights[1, 0]
    cold = make_fusion(4, mode="da", tau=0.2)(pf).weights[1, 0]
    assert cold > warm


def test_da_edge_cases() -> None:
    feats = torch.tensor([[[1.0, 1.0]], [[2.0, 0.0]], [[9.0, 9.0]]])  # (3, 1, 2)
    fusion = make_fusion(2, mode="da")
    # Input view unseen: uniform over the visible pseudo views.
    vis = torch.tensor([[False], [True], [True]])
    fused = fusion(PointFeatures(feats * vis[..., None], vis))
    torch.testing.assert_close(fused.weights[:, 0], torch.tensor([0.0, 0.5, 0.5]))
    torch.testing.assert_close(fused.features[0], torch.tensor([5.5, 4.5]))
    # No pseudo view: the input view's feature alone.
    vis = torch.tensor([[True], [False], [False]])
    fused = fusion(PointFeatures(feats * vis[..., None], vis))
    torch.testing.assert_close(fused.features[0], feats[0, 0])
    torch.testing.assert_close(fused.weights[:, 0], torch.tensor([1.0, 0.0, 0.0]))


def test_da_with_another_input_view() -> None:
    pf = _random_point_features()
    fused = make_fusion(6, mode="da")(pf, input_view=2)
    assert torch.equal(fused.weights[2], pf.visible[2].float())
    others = fused.weights[[0, 1, 3]].sum(dim=0)
    seen = pf.visible[[0, 1, 3]].any(dim=0)
    torch.testing.assert_close(others[seen], torch.ones(int(seen.sum())))


@pytest.mark.parametrize("mode", ["mean", "ga", "da"])
def test_no_visible_view_gives_zeros(mode: str) -> None:
    pf = PointFeatures(torch.zeros(3, 5, 4), torch.zeros(3, 5, dtype=torch.bool))
    for combine in ("sum", "concat") if mode == "da" else (None,):
        fused = make_fusion(4, mode=mode, combine=combine)(pf)
        assert torch.equal(fused.features, torch.zeros(5, 4))
        assert torch.equal(fused.weights, torch.zeros(3, 5))
    fused = InputViewOnly(4)(pf)
    assert torch.equal(fused.features, torch.zeros(5, 4))


def test_mean_of_identical_views_is_that_view() -> None:
    f = torch.randn(1, 7, 5).expand(4, 7, 5)
    vis = torch.ones(4, 7, dtype=torch.bool)
    vis[2, :3] = False
    fused = make_fusion(5, mode="mean")(PointFeatures(f * vis[..., None], vis))
    torch.testing.assert_close(fused.features, f[0])


def test_ga_gradient_reaches_its_scoring_layer() -> None:
    torch.manual_seed(0)
    fusion = make_fusion(6, mode="ga")
    assert fusion.score is not None
    fusion(_random_point_features()).features.pow(2).sum().backward()
    assert fusion.score.weight.grad is not None and fusion.score.weight.grad.abs().sum() > 0


def test_concat_combine_is_learnable_and_shaped() -> None:
    fusion = make_fusion(6, mode="da", combine="concat")
    assert fusion.merge is not None and fusion.merge.in_features == 12
    assert fusion.merge.out_features == 6 == fusion.out_dim
    assert make_fusion(6, mode="da").merge is None
    fused = fusion(_random_point_features())
    assert fused.features.shape == (64, 6)
    fused.features.sum().backward()
    assert fusion.merge.weight.grad.abs().sum() > 0


def test_input_view_only() -> None:
    pf = _random_point_features()
    for iv in (0, 2):
        fused = InputViewOnly(6)(pf, input_view=iv)
        assert torch.equal(fused.features, pf.features[iv])
        expected = torch.zeros(4, 64)
        expected[iv] = pf.visible[iv].float()
        assert torch.equal(fused.weights, expected)
    assert InputViewOnly(6).out_dim == 6


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="mean.*ga.*da"):
        make_fusion(4, mode="max")
    with pytest.raises(ValueError, match="sum.*concat"):
        make_fusion(4, combine="add")
    with pytest.raises(ValueError, match="only applies"):
        make_fusion(4, mode="mean", combine="concat")
    # A mode-specific knob given to another mode is an error, not silently ignored.
    with pytest.raises(ValueError, match="only applies.*'da'"):
        make_fusion(4, mode="ga", combine="sum")
    with pytest.raises(ValueError, match="ga_scorer.*only applies"):
        make_fusion(4, mode="da", ga_scorer="relative")
    for tau in (0.0, -1.0):
        with pytest.raises(ValueError, match="tau"):
            make_fusion(4, tau=tau)
    pf = _random_point_features(d=4)
    with pytest.raises(ValueError, match="input_view"):
        make_fusion(4)(pf, input_view=4)
    with pytest.raises(ValueError):
        make_fusion(5)(pf)
    assert (
        make_fusion(4, mode="ga").out_dim
        == make_fusion(4, mode="da", combine="concat").out_dim
        == 4
    )


def test_sampling_then_fusion_end_to_end() -> None:
    cams = orbit_cameras([0.0, 30.0, -20.0, 30.0], [0.0, 30.0, 90.0, 150.0], 32, 32)
    feats = DSFD(3)(torch.randn(4, 3, 3, 4, 4))[:, 1]  # (V, 2C, h, w) at frame 1
    pts = torch.randn(200, 3) * 0.3
    depth = torch.full((4, 16, 16), 2.0)
    pf = sample_point_features(pts, cams, feats, depth)
    for fusion in (
        make_fusion(6, "mean"),
        make_fusion(6, "ga"),
        make_fusion(6, "da"),
        InputViewOnly(6),
    ):
        fused = fusion(pf)
        assert fused.features.shape == (200, 6) and torch.isfinite(fused.features).all()


def test_fresh_ga_fusion_starts_as_the_mean_fusion() -> None:
    """GA's scoring layer is zero-initialised, so before training it equals TSSF-mean."""
    from ds4d_pl.conditioning.tssf import PointFeatures

    g = torch.Generator().manual_seed(3)
    feats = torch.randn(4, 30, 6, generator=g)
    visible = torch.rand(4, 30, generator=g) > 0.3
    pf = PointFeatures(feats * visible[..., None], visible)
    ga = make_fusion(6, mode="ga")(pf)
    mean = make_fusion(6, mode="mean")(pf)
    torch.testing.assert_close(ga.features, mean.features)
    torch.testing.assert_close(ga.weights, mean.weights)
