"""The ablation switchboard and the Conditioner that wires encoder features → DSFD → TSSF.

Spec:
  * presets in ``configs/ablation/`` are exactly the paper's rows, and nonsense combinations
    fail at start-up with a message;
  * "off" components keep every shape: all rows with frame features give the same ``out_dim``;
  * a fresh conditioned field is still the identity; gradients reach the learnable layers;
  * time interpolation of the feature maps hits the frames exactly at frame times.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest
import torch
import yaml
from conftest import CONFIGS

from ds4d_pl.cameras import orbit_cameras, zero123pp_cameras
from ds4d_pl.conditioning.build import Conditioner, build_conditioner, feature_cache_dir
from ds4d_pl.config import ABLATION_PRESETS, AblationConfig, ConditioningConfig, FieldConfig
from ds4d_pl.fields import build_field
from ds4d_pl.gaussians.canonical import CanonicalGaussians

C, V, T, H = 8, 3, 4, 6


def _features() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(V, T, C, H, H, generator=g) + 0.1


def _cameras():
    front = orbit_cameras([0.0], [0.0], 32, 32)
    return front.cat([front, zero123pp_cameras(32, 32)[:2]])


def _conditioner(dsfd: bool = True, tssf: str = "da") -> Conditioner:
    cond = Conditioner(C, ConditioningConfig(width=5), dsfd=dsfd, tssf=tssf)
    cond.set_features(_features(), torch.linspace(0, 1, T))
    return cond


def test_preset_files_are_the_paper_rows() -> None:
    for name, expected in ABLATION_PRESETS.items():
        data = yaml.safe_load((CONFIGS / "ablation" / f"{name}.yaml").read_text())
        assert AblationConfig(**data["model"]["ablation"]) == expected, name
    rows = {k: asdict(v) for k, v in ABLATION_PRESETS.items()}
    assert rows["row_a"]["init"] == "random" and not rows["row_a"]["frame_features"]
    assert rows["row_h"] == {"init": "points", "frame_features": True, "dsfd": True, "tssf": "da"}
    assert rows["row_g"]["tssf"] == "ga" and rows["row_f"]["tssf"] == "mean"
    assert rows["wo_dsfd"]["dsfd"] is False and rows["wo_tssf"]["tssf"] == "off"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"frame_features": False, "dsfd": True, "tssf": "off"}, "frame_features"),
        ({"frame_features": False, "dsfd": False, "tssf": "da"}, "frame_features"),
        ({"tssf": "max"}, "tssf"),
        ({"init": "mesh"}, "init"),
    ],
)
def test_nonsense_combinations_fail_at_startup(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        AblationConfig(**kwargs)


def test_rows_without_frame_features_build_no_conditioner() -> None:
    cond, enc = build_conditioner(ABLATION_PRESETS["row_b"], ConditioningConfig())
    assert cond is None and enc is None


def test_every_feature_row_has_the_same_out_dim_and_pass_throughs_keep_shapes() -> None:
    dims = set()
    for name in ("row_d", "row_e", "row_f", "row_g", "row_h", "wo_dsfd", "wo_tssf"):
        cond, encoder = build_conditioner(ABLATION_PRESETS[name], ConditioningConfig(width=7))
        assert encoder is not None and cond.out_dim == 7
        dims.add((cond.decoupler.out_dim, cond.fusion.out_dim))
        assert all(not p.requires_grad for p in encoder.parameters())
    assert len(dims) == 1


def test_conditioner_output_shape_finiteness_and_gradient_reach() -> None:
    cond = _conditioner(tssf="ga")
    points = torch.randn(50, 3) * 0.2
    out, fused = cond(points, 0.3, _cameras())
    assert out.shape == (50, 5) and torch.isfinite(out).all()
    assert fused.weights.shape == (V, 50)
    out.square().sum().backward()
    for name, p in cond.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_maps_at_frame_times_are_the_frames_and_in_between_is_linear() -> None:
    cond = _conditioner()
    times = cond.times
    for i in range(T):
        torch.testing.assert_close(cond.maps_at(times[i]), cond.maps[:, i])
    mid = 0.5 * (times[1] + times[2])
    torch.testing.assert_close(cond.maps_at(mid), 0.5 * (cond.maps[:, 1] + cond.maps[:, 2]))
    torch.testing.assert_close(cond.maps_at(-1.0), cond.maps[:, 0])


def test_features_are_rms_normalised_per_encoder_channel() -> None:
    feats = _features()
    feats[:, :, 0] *= 1000.0  # one channel orders of magnitude louder than the others
    cond = Conditioner(C, ConditioningConfig(), dsfd=True, tssf="mean")
    cond.set_features(feats, torch.linspace(0, 1, T))
    rms = cond.maps[:, :, :C].pow(2).mean(dim=(0, 1, 3, 4)).sqrt()
    torch.testing.assert_close(rms, torch.ones(C), atol=1e-4, rtol=1e-4)


def test_time_constant_placebo_gives_every_frame_the_middle_frames_features() -> None:
    real = _conditioner()
    cfg = ConditioningConfig(width=5, placebo="time_constant")
    placebo = Conditioner(C, cfg, dsfd=True, tssf="da")
    placebo.set_features(_features(), torch.linspace(0, 1, T))
    assert placebo.maps.shape == real.maps.shape
    for i in range(T):
        torch.testing.assert_close(placebo.maps[:, i], real.maps[:, T // 2], rtol=0, atol=0)
    points = torch.randn(30, 3) * 0.3
    placebo.load_state_dict(real.state_dict())
    first, _ = placebo(points, 0.0, _cameras())
    for t in (0.3, 0.61, 1.0):
        torch.testing.assert_close(placebo(points, t, _cameras())[0], first, rtol=0, atol=1e-6)
    # The real features do change over time, so the test above can fail.
    assert not torch.allclose(real(points, 0.0, _cameras())[0], real(points, 1.0, _cameras())[0])
    with pytest.raises(ValueError, match="placebo"):
        placebo.set_features(_features(), torch.linspace(0, 1, T), per_frame_cameras=True)
    with pytest.raises(ValueError, match="placebo"):
        ConditioningConfig(placebo="shuffled")


def test_fresh_conditioned_field_is_identity() -> None:
    cond = _conditioner()
    field = build_field(FieldConfig(), cond_dim=cond.out_dim)
    means = torch.randn(40, 3) * 0.3
    field.set_bounds(means)
    c, _ = cond(means, 0.7, _cameras())
    deltas = field(means, 0.7, c)
    gaussians = CanonicalGaussians(
        means,
        torch.randn(40, 4),
        torch.randn(40, 3),
        torch.randn(40),
        torch.randn(40, 1, 3),
        torch.zeros(40, 0, 3),
    )
    before, after = gaussians.activated(), gaussians.deformed(deltas)
    for name in ("means", "quats", "scales", "opacities", "sh"):
        assert torch.equal(getattr(before, name), getattr(after, name))


def test_set_features_and_forward_validate() -> None:
    cond = Conditioner(C, ConditioningConfig(), dsfd=True, tssf="da")
    with pytest.raises(RuntimeError, match="set_features"):
        cond(torch.zeros(2, 3), 0.0, _cameras())
    with pytest.raises(ValueError, match="T=5"):
        cond.set_features(_features(), torch.linspace(0, 1, 5))


def test_moving_camera_capture_fuses_the_nearest_frames_each_with_its_own_camera() -> None:
    # One video whose camera moves every frame (D-NeRF): T frames, T cameras.
    feats = torch.rand(1, 5, C, H, H, generator=torch.Generator().manual_seed(1)) + 0.1
    times = torch.linspace(0, 1, 5)
    cams = orbit_cameras([0.0] * 5, [20.0 * i for i in range(5)], 32, 32)
    cond = Conditioner(C, ConditioningConfig(width=5, temporal_views=3), dsfd=True, tssf="da")
    cond.set_features(feats, times, per_frame_cameras=True)
    maps, idx = cond.views_at(0.74)
    # Nearest first: frame 3 (t=0.75), then 2 (0.5) and 4 (1.0) at distances 0.24 and 0.26.
    assert idx.tolist() == [3, 2, 4]
    torch.testing.assert_close(maps, cond.maps[0, [3, 2, 4]])
    points = torch.randn(30, 3) * 0.2
    out, fused = cond(points, 0.74, cams, torch.full((5, 8, 8), 10.0))
    assert out.shape == (30, 5) and fused.weights.shape == (3, 30)
    assert torch.isfinite(out).all()
    with pytest.raises(ValueError, match="cameras"):
        cond(points, 0.5, cams[:3])


def test_a_moving_camera_frame_never_conditions_its_own_time() -> None:
    """At a training frame's time its own image is left out (it would anchor DA in training and
    never at test time, when the test camera has no image); between frames nothing changes."""
    feats = torch.rand(1, 5, C, H, H, generator=torch.Generator().manual_seed(2)) + 0.1
    times = torch.linspace(0, 1, 5)
    cond = Conditioner(C, ConditioningConfig(width=5, temporal_views=3), dsfd=True, tssf="da")
    cond.set_features(feats, times, per_frame_cameras=True)
    assert cond.views_at(0.5)[1].tolist() == [1, 3, 0]  # frame 2 (t=0.5) is left out
    assert cond.views_at(0.74)[1].tolist() == [3, 2, 4]
    # All other frames when fewer remain than temporal_views.
    cond5 = Conditioner(C, ConditioningConfig(width=5, temporal_views=5), dsfd=True, tssf="da")
    cond5.set_features(feats, times, per_frame_cameras=True)
    assert sorted(cond5.views_at(1.0)[1].tolist()) == [0, 1, 2, 3]
    # The old behaviour (checkpoints from before the knob): the own frame comes first.
    old = Conditioner(
        C, ConditioningConfig(width=5, temporal_views=3, exclude_own_frame=False), True, "da"
    )
    old.set_features(feats, times, per_frame_cameras=True)
    assert old.views_at(0.5)[1].tolist() == [2, 1, 3]
    # Fixed cameras (an object video, a camera rig) are untouched: every view at every time.
    fixed = Conditioner(C, ConditioningConfig(width=5), dsfd=True, tssf="da")
    fixed.set_features(torch.rand(3, 5, C, H, H) + 0.1, times)
    assert fixed.views_at(0.5)[1].tolist() == [0, 1, 2]


def test_checkpoints_from_before_the_knob_keep_their_own_frame() -> None:
    from ds4d_pl.compat import upgrade_hparams

    assert upgrade_hparams({"conditioning": {"width": 8}})["conditioning"] == {
        "width": 8,
        "exclude_own_frame": False,
    }
    kept = upgrade_hparams({"conditioning": {"exclude_own_frame": True}})
    assert kept["conditioning"]["exclude_own_frame"] is True


def test_feature_cache_dir_resolution(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert feature_cache_dir(ConditioningConfig(cache_dir="")) is None
    assert feature_cache_dir(ConditioningConfig(cache_dir=str(tmp_path))) == tmp_path
    monkeypatch.setenv("DS4D_CACHE_DIR", str(tmp_path))
    assert feature_cache_dir(ConditioningConfig()) == tmp_path / "features"


def test_switchboard_builds_dinov2_from_a_local_directory_and_rejects_unknown_encoders(
    tmp_path: Path,
) -> None:
    from transformers import Dinov2Config, Dinov2Model

    config = Dinov2Config(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        patch_size=14,
        image_size=56,
    )
    Dinov2Model(config).save_pretrained(tmp_path / "dino")
    cfg = ConditioningConfig(
        encoder="dinov2", encoder_weights=str(tmp_path / "dino"), encoder_input_size=56
    )
    cond, encoder = build_conditioner(ABLATION_PRESETS["row_h"], cfg)
    assert encoder.name == "dinov2" and encoder.out_dim == 16
    assert cond.decoupler.out_dim == 32
    feats = encoder(torch.rand(2, 40, 40, 3))
    assert feats.shape == (2, 16, 4, 4)
    with pytest.raises(ValueError, match="efficientnet_lite0"):
        build_conditioner(ABLATION_PRESETS["row_h"], ConditioningConfig(encoder="clip"))
