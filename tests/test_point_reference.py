"""Point-space DSFD reference (``conditioning.reference_space: point``, docs/design.md §5).

Spec:
  * a static point seen by a moving camera has (almost) no dynamic part against its point
    reference, while the per-pixel reference gives it a large one: the pixel reference assumes
    pixel-aligned frames, and a moving camera breaks that;
  * each point's reference is the mean of its sampled features over the (camera, frame) pairs
    that see it, the occlusion test included;
  * shapes, ``out_dim`` and the checkpointed parameters are those of the pixel reference;
  * the model recomputes the references when the Gaussians change (densify / prune, same count
    or not) and every ``reference_refresh`` steps, and never uses stale ones;
  * ``pixel`` (the default) is the per-pixel DSFD pipeline, unchanged;
  * bad values are refused, naming the key.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from ds4d_pl.cameras import (
    OBJECT_FOV_Y_DEG,
    Cameras,
    intrinsics_from_fov,
    look_at,
    orbit_cameras,
)
from ds4d_pl.conditioning.build import Conditioner
from ds4d_pl.conditioning.dsfd import DSFD
from ds4d_pl.conditioning.tssf import make_fusion, sample_point_features
from ds4d_pl.config import AblationConfig, ConditioningConfig, FieldConfig, GaussianInit
from ds4d_pl.data.parsers.synthetic import SyntheticConfig, make_synthetic_scene
from ds4d_pl.model import DS4DModel

C, T, IMG, TOKENS = 6, 6, 32, 16


def _moving_cameras(n: int = T) -> Cameras:
    """One video whose camera pans and slides sideways, a new pose every frame (a camera that
    only orbits the origin would keep the middle of the scene on the same pixels)."""
    x = torch.linspace(-0.6, 0.6, n)
    eye = torch.stack([x, torch.full_like(x, 0.3), torch.full_like(x, 2.0)], dim=-1)
    target = torch.stack([0.5 * x, torch.zeros_like(x), torch.zeros_like(x)], dim=-1)
    K = intrinsics_from_fov(OBJECT_FOV_Y_DEG, IMG, IMG).expand(n, 3, 3).clone()
    return Cameras(look_at(eye, target), K, IMG, IMG)


def _plane(cams: Cameras) -> tuple[torch.Tensor, torch.Tensor]:
    """A plane through the origin facing the cameras: its unit normal and two in-plane axes."""
    normal = torch.nn.functional.normalize(cams.centers.mean(dim=0), dim=0)
    a = torch.nn.functional.normalize(
        torch.linalg.cross(normal, torch.tensor([0.0, 1.0, 0.0])), dim=0
    )
    b = torch.linalg.cross(normal, a)
    return normal, torch.stack([a, b])


def _texture(x: torch.Tensor) -> torch.Tensor:
    """A smooth C-channel feature attached to world positions ``(..., 3)`` → ``(..., C)``."""
    g = torch.Generator().manual_seed(3)
    freq = torch.randn(3, C, generator=g) * 2.0
    phase = torch.rand(C, generator=g) * 2 * math.pi
    return 0.3 + torch.sin(x @ freq + phase)


def _world_anchored_maps(cams: Cameras) -> torch.Tensor:
    """``(1, T, C, h, w)`` maps of a textured plane seen by each camera: every token holds the
    feature of the plane point its pixel ray hits, so features move across the image with the
    camera while a point on the plane keeps its feature."""
    normal, _ = _plane(cams)
    j = (torch.arange(TOKENS) + 0.5) * IMG / TOKENS
    v, u = torch.meshgrid(j, j, indexing="ij")
    maps = []
    for k in range(len(cams)):
        K, c2w = cams.K[k], cams.c2w[k]
        d_cam = torch.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], torch.ones_like(u)])
        d = torch.einsum("ij,jhw->hwi", c2w[:3, :3], d_cam)
        o = c2w[:3, 3]
        hit = o + (-(o @ normal) / (d @ normal))[..., None] * d
        maps.append(_texture(hit).permute(2, 0, 1))
    return torch.stack(maps)[None]


def _points_on_plane(cams: Cameras, n: int = 60) -> torch.Tensor:
    _, axes = _plane(cams)
    coords = (torch.rand(n, 2, generator=torch.Generator().manual_seed(4)) - 0.5) * 0.8
    return coords @ axes


def _conditioner(space: str, dsfd: bool = True, tssf: str = "da", **kw) -> Conditioner:
    cfg = ConditioningConfig(width=5, reference_space=space, **kw)
    return Conditioner(C, cfg, dsfd=dsfd, tssf=tssf)


def test_static_point_has_no_dynamic_part_under_a_moving_camera_only_in_point_space() -> None:
    cams = _moving_cameras()
    maps, times = _world_anchored_maps(cams), torch.linspace(0, 1, T)
    points = _points_on_plane(cams)
    # Every frame fused at once (own frame included), so one query sees every camera.
    kw = {"temporal_views": T, "exclude_own_frame": False}
    point = _conditioner("point", **kw)
    point.set_features(maps, times, per_frame_cameras=True)
    point.refresh_reference(points, cams, key="static")
    point(points, 0.0, cams)
    point_energy = point.last_point_energy
    assert point_energy.shape == (T, len(points))
    pixel = _conditioner("pixel", **kw)
    pixel.set_features(maps, times, per_frame_cameras=True)
    # The per-pixel DSFD energy map of each frame, read where the point lands in that frame.
    sampled = sample_point_features(points, cams, pixel.energy[0][:, None])
    assert sampled.visible.all() and point.last_point_energy is not None
    pixel_energy = sampled.features[..., 0]
    # ‖dynamic‖ / ‖f‖: ~0.001 in point space (bilinear sampling error), ~0.2 per pixel.
    assert point_energy.mean() < 0.01 and point_energy.max() < 0.03
    assert pixel_energy.mean() > 0.1 and pixel_energy.mean() > 20 * point_energy.mean()


def test_reference_half_keeps_the_first_half_constant_over_frames_and_cameras() -> None:
    """``point_static_half: reference`` (the default): the first half is the point's reference
    in every view and frame (zero where unseen); the dynamic half is the same as with
    ``feature``."""
    cams = _moving_cameras()
    maps, times = _world_anchored_maps(cams), torch.linspace(0, 1, T)
    points = torch.cat([_points_on_plane(cams, 20), torch.tensor([[0.0, 0.0, 50.0]])])
    kw = {"temporal_views": 3, "tssf": "mean"}
    feature = _conditioner("point", point_static_half="feature", **kw)
    reference = _conditioner("point", **kw)
    assert ConditioningConfig().point_static_half == "reference"
    for cond in (feature, reference):
        cond.set_features(maps, times, per_frame_cameras=True)
        cond.refresh_reference(points, cams)
    for t in (0.0, 0.45, 1.0):
        a, b = feature(points, t, cams)[1].features, reference(points, t, cams)[1].features
        torch.testing.assert_close(b[:, C:], a[:, C:])
        torch.testing.assert_close(b[:20, :C], reference.reference[:20])
        assert not torch.allclose(a[:20, :C], b[:20, :C], atol=1e-3)
        assert torch.equal(b[20], torch.zeros(2 * C))  # seen by no view: zero, as sampled
    with pytest.raises(ValueError, match="point_static_half"):
        ConditioningConfig(point_static_half="mean")


def test_reference_is_the_mean_over_the_camera_frame_pairs_that_see_the_point() -> None:
    # Fixed cameras (a rig): the time average is taken before sampling; that must equal the
    # mean of the per-(camera, frame) samples, over the cameras that pass the occlusion test.
    cams = orbit_cameras([0.0, 0.0, 20.0], [-30.0, 0.0, 30.0], IMG, IMG)
    g = torch.Generator().manual_seed(5)
    feats = torch.rand(3, T, C, 8, 8, generator=g) + 0.1
    points = torch.randn(40, 3, generator=g) * 0.3
    depth = torch.full((3, 8, 8), 10.0)
    depth[1, :, :4] = 0.5  # camera 1 sees a surface in front of the left half of its image
    cond = _conditioner("point")
    cond.set_features(feats, torch.linspace(0, 1, T))
    ref = cond.refresh_reference(points, cams, depth, key=1)
    total, count = torch.zeros(40, C), torch.zeros(40)
    for v in range(3):
        for t in range(T):
            pf = sample_point_features(points, cams[v], cond.maps[v, t][None], depth[v][None])
            total += pf.features[0]
            count += pf.visible[0]
    assert count.min() > 0 and (count < 3 * T).any()  # the occlusion test removed some pairs
    torch.testing.assert_close(ref, total / count[:, None])
    assert cond.reference_key == 1


def test_a_point_no_view_sees_has_a_zero_reference() -> None:
    cams = orbit_cameras([0.0], [0.0, 40.0], IMG, IMG)
    cond = _conditioner("point")
    cond.set_features(torch.rand(2, T, C, 8, 8) + 0.1, torch.linspace(0, 1, T))
    ref = cond.refresh_reference(torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 50.0]]), cams)
    assert ref[0].abs().sum() > 0 and torch.equal(ref[1], torch.zeros(C))


@pytest.mark.parametrize("tssf", ["da", "ga", "mean", "off"])
def test_point_space_keeps_shapes_out_dim_and_checkpoint_layout(tssf: str) -> None:
    cams = orbit_cameras([0.0, 0.0, 20.0], [-30.0, 0.0, 30.0], IMG, IMG)
    feats = torch.rand(3, T, C, 8, 8, generator=torch.Generator().manual_seed(6)) + 0.1
    pixel, point = _conditioner("pixel", tssf=tssf), _conditioner("point", tssf=tssf)
    for cond in (pixel, point):
        cond.set_features(feats, torch.linspace(0, 1, T))
    assert point.maps.shape[2] == C and pixel.maps.shape[2] == 2 * C
    assert point.out_dim == pixel.out_dim == 5
    assert {k: v.shape for k, v in point.state_dict().items()} == {
        k: v.shape for k, v in pixel.state_dict().items()
    }
    points = torch.randn(30, 3) * 0.3
    point.refresh_reference(points, cams)
    out, fused = point(points, 0.4, cams)
    assert out.shape == (30, 5) and torch.isfinite(out).all()
    assert fused.features.shape == (30, 2 * C) and fused.weights.shape == (3, 30)
    out.square().sum().backward()
    for name, p in point.named_parameters():
        if tssf == "ga" and name.startswith("fusion."):
            continue  # GA's scorer starts at zero: its first gradient is checked in its tests
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_forward_refuses_missing_or_stale_references() -> None:
    cams = orbit_cameras([0.0], [0.0, 40.0], IMG, IMG)
    cond = _conditioner("point")
    cond.set_features(torch.rand(2, T, C, 8, 8) + 0.1, torch.linspace(0, 1, T))
    points = torch.randn(10, 3) * 0.2
    with pytest.raises(RuntimeError, match="refresh_reference"):
        cond(points, 0.5, cams)
    cond.refresh_reference(points, cams)
    cond(points, 0.5, cams)
    with pytest.raises(RuntimeError, match="refresh_reference"):
        cond(points[:7], 0.5, cams)  # another point set
    cond.invalidate_reference()
    with pytest.raises(RuntimeError, match="refresh_reference"):
        cond(points, 0.5, cams)
    # New features (a re-encoded scene) make the references stale too.
    cond.refresh_reference(points, cams)
    cond.set_features(torch.rand(2, T, C, 8, 8) + 0.1, torch.linspace(0, 1, T))
    assert cond.reference_key is None
    with pytest.raises(ValueError, match="cameras"):
        cond.refresh_reference(points, cams[:1])
    with pytest.raises(RuntimeError, match="reference_space"):
        _conditioner("pixel").refresh_reference(points, cams)


def test_pixel_space_is_the_per_pixel_dsfd_pipeline() -> None:
    """The default: DSFD maps normalised per encoder channel, sampled, fused with view 0 as the
    anchor and projected; spelled out here by hand."""
    cams = orbit_cameras([0.0, 0.0, 20.0], [-30.0, 0.0, 30.0], IMG, IMG)
    feats = torch.rand(3, T, C, 8, 8, generator=torch.Generator().manual_seed(7)) + 0.1
    times = torch.linspace(0, 1, T)
    cond = _conditioner("pixel")
    assert ConditioningConfig().reference_space == "pixel"
    cond.set_features(feats, times)
    points = torch.randn(25, 3) * 0.3
    out, fused = cond(points, times[2], cams)
    rms = feats.pow(2).mean(dim=(0, 1, 3, 4)).sqrt().repeat(2)
    maps = DSFD(C)(feats)[:, 2] / rms.view(1, -1, 1, 1)
    pf = sample_point_features(points, cams, maps)
    expected = make_fusion(2 * C, "da")(pf, 0)
    assert torch.equal(fused.features, expected.features)
    assert torch.equal(out, cond.proj(expected.features))
    assert cond.decouples and cond.reference.numel() == 0


def test_point_space_without_dsfd_is_the_pass_through() -> None:
    """w/o DSFD has nothing to decouple: the knob changes nothing, so one preset serves every
    ablation row."""
    cams = orbit_cameras([0.0], [0.0, 40.0], IMG, IMG)
    feats = torch.rand(2, T, C, 8, 8) + 0.1
    a, b = _conditioner("pixel", dsfd=False), _conditioner("point", dsfd=False)
    b.load_state_dict(a.state_dict())
    for cond in (a, b):
        cond.set_features(feats, torch.linspace(0, 1, T))
    assert not b.point_reference
    points = torch.randn(12, 3) * 0.2
    assert torch.equal(a(points, 0.3, cams)[0], b(points, 0.3, cams)[0])


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"reference_space": "voxel"}, "reference_space"),
        ({"reference_refresh": 0}, "reference_refresh"),
        ({"reference_refresh": True}, "reference_refresh"),
    ],
)
def test_bad_values_are_refused_naming_the_key(kwargs: dict, key: str) -> None:
    with pytest.raises(ValueError, match=key):
        ConditioningConfig(**kwargs)


# ------------------------------------------------------------------------------ in the model


@pytest.fixture(scope="module")
def scene():
    return make_synthetic_scene(
        SyntheticConfig(num_frames=4, resolution=32, eval_resolution=32, num_init_points=200)
    )


def _model(scene, **cond_kw) -> DS4DModel:
    cond = ConditioningConfig(
        encoder_input_size=64,
        visibility_resolution=16,
        cache_dir="",
        reference_space="point",
        reference_refresh=20,
        **cond_kw,
    )
    field = FieldConfig(plane_resolution=8, time_resolution=2, feature_dim=8, hidden=16)
    ablation = AblationConfig("points", True, True, "da")
    model = DS4DModel(GaussianInit(), field, ablation, cond, renderer="torch")
    model.initialise(scene, torch.Generator().manual_seed(0))
    model.prepare_conditioning(scene.train)
    return model


def test_model_recomputes_references_when_the_gaussians_change(scene) -> None:
    model = _model(scene)
    cond = model.conditioner
    assert model.energy is None  # no per-pixel maps to show
    model._condition(0.5)
    first, key = cond.reference.clone(), cond.reference_key
    assert first.shape == (200, cond.maps.shape[2])
    model._condition(0.7)
    assert cond.reference_key == key  # cached between steps
    # Densification that keeps the count (clone as many as it prunes): other rows, same N.
    g = model.gaussians
    g.replace_tables({n: getattr(g, n).detach().flip(0).clone() for n in g.TABLES})
    model._condition(0.5)
    assert cond.reference_key != key
    torch.testing.assert_close(cond.reference, first.flip(0))
    # Pruning: fewer rows.
    g.replace_tables({n: getattr(g, n).detach()[:150].clone() for n in g.TABLES})
    model.at(0.5)
    assert cond.reference.shape[0] == 150
    # On schedule while conditioning, never in between or in the coarse stage.
    key = cond.reference_key
    model.begin_step(7, deform=True)
    model.begin_step(20, deform=False)
    assert cond.reference_key == key
    model.begin_step(40, deform=True)
    assert cond.reference_key is None
    model._condition(0.5)
    assert cond.reference_key == key  # same Gaussians: recomputed with the same key


def test_nerf_refuses_point_space() -> None:
    from ds4d_pl.fields.nerf import NeRFConfig

    cond = ConditioningConfig(reference_space="point")
    with pytest.raises(ValueError, match="reference_space"):
        DS4DModel(
            GaussianInit(),
            FieldConfig(),
            AblationConfig("points", True, True, "da"),
            cond,
            representation="nerf",
            nerf=NeRFConfig(),
        )


def test_moving_camera_scene_trains_a_step_with_point_space(scene) -> None:
    # One training image per instant with its own camera (D-NeRF layout), point references on.
    train = scene.train
    per_frame = dataclasses.replace(
        train,
        rgb=train.rgb[:1],
        alpha=train.alpha[:1],
        cameras=orbit_cameras([0.0] * 4, [-30.0, -10.0, 10.0, 30.0], 32, 32),
        dyn_mask=None,
    )
    assert per_frame.per_frame_cameras
    moving = dataclasses.replace(scene, train=per_frame, num_input_views=1)
    model = _model(moving, temporal_views=2)
    params = model.at(0.4)
    assert model.conditioner.reference.shape[0] == 200
    loss = params.means.square().sum() + model._condition(0.4).square().sum()
    loss.backward()
    assert model.conditioner.proj.weight.grad.abs().sum() > 0


def test_a_resumed_model_adopts_the_checkpointed_references(scene) -> None:
    """Between refreshes the references lag the positions; a resumed run must use those of its
    checkpoint, not recompute them from the later positions (resumed == uninterrupted)."""
    a = _model(scene)
    a._condition(0.5)
    with torch.no_grad():
        a.gaussians.means.add_(0.05)  # optimiser steps: positions move, the table stays
    state = a.point_reference_state()
    assert state is not None and torch.equal(state, a.conditioner.reference)
    b = _model(scene)
    b.load_state_dict(a.state_dict())
    b.visibility = a.visibility
    b.restore_point_reference(state)
    b._condition(0.5)
    assert torch.equal(b.conditioner.reference, state)
    fresh = b.refresh_reference(force=True)
    assert not torch.allclose(fresh, state)  # so the adoption above was not a recomputation
    # Stale references are not saved; a scheduled refresh wins over a pending adoption.
    g = a.gaussians
    g.replace_tables({n: getattr(g, n).detach().clone() for n in g.TABLES})
    assert a.point_reference_state() is None
    b.restore_point_reference(state)
    b.begin_step(20, deform=True)
    b._condition(0.5)
    assert not torch.equal(b.conditioner.reference, state)
    with pytest.raises(ValueError, match="reference must be"):
        b.conditioner.set_reference(torch.zeros(5, 3))
