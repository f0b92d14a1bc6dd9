"""Spec of the NeRF representation inside the model and the CLI (``model.representation: nerf``).

* ``DS4DModel`` with a NeRF: ``at(t)`` is the field at t (a radiance volume), rendered into the
  Gaussians' ``RenderOutput``; gradients reach the field and the learnable conditioning; every
  trainable parameter is in one optimiser group and no Gaussian table is; the box is fitted to
  the initial points (or fixed by ``nerf.aabb``); the static stage is the field at t = 0.5;
  the occlusion test's depth renders are NeRF renders; a step's samples depend only on the step;
  settings that mean nothing for a NeRF are refused;
* ``ds4d fit`` with ``configs/model/nerf.yaml`` trains on CPU under the conditioning ablations
  (rows H, B and without TSSF), writes videos and density exports instead of Gaussian PLYs;
  ``ds4d test`` scores it; ``--ckpt_path last`` resumes exactly as an uninterrupted run; the
  viewer refuses it with one line.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import CONFIGS, tiny_nerf, tiny_overrides, tiny_synthetic
from plyfile import PlyData

from ds4d_pl.cli import main
from ds4d_pl.config import AblationConfig, ConditioningConfig, FieldConfig, GaussianInit
from ds4d_pl.data.parsers.synthetic import SyntheticConfig, make_synthetic_scene
from ds4d_pl.fields.nerf import NeRFAtTime, NeRFConfig, NeRFField
from ds4d_pl.model import NERF_STATIC_TIME, DS4DModel
from ds4d_pl.priors.tiny import write_tiny_zero123
from ds4d_pl.render.volume import VolumeRenderer
from ds4d_pl.run import RunLoadError, load_run
from ds4d_pl.viewer.load import load_source

ROW_H = AblationConfig("points", True, True, "da")
ROW_B = AblationConfig("points", False, False, "off")


@pytest.fixture(scope="module")
def scene():
    return make_synthetic_scene(
        SyntheticConfig(num_frames=4, resolution=16, eval_resolution=16, num_init_points=200)
    )


def small_nerf(**kw) -> NeRFConfig:
    grid = FieldConfig(plane_resolution=8, time_resolution=2, multires=[1], feature_dim=8)
    kw = {
        "grid": grid,
        "hidden": 16,
        "samples_per_ray": 8,
        "proposal_samples": 8,
        "sampler": "proposal",
        "cond_resolution": 6,
        **kw,
    }
    return NeRFConfig(**kw)


def make_model(
    scene, ablation: AblationConfig = ROW_H, nerf: NeRFConfig | None = None, **cond_kw
) -> DS4DModel:
    cond = ConditioningConfig(
        encoder_input_size=64, visibility_resolution=8, visibility_every=5, cache_dir="", **cond_kw
    )
    model = DS4DModel(
        GaussianInit(),
        FieldConfig(),
        ablation,
        cond,
        representation="nerf",
        nerf=nerf or small_nerf(),
    )
    model.initialise(scene, torch.Generator().manual_seed(0))
    model.prepare_conditioning(scene.train)
    return model


# ------------------------------------------------------------------------------- the model
def test_nerf_model_renders_the_field_at_t_with_gradients_to_field_and_conditioning(scene):
    model = make_model(scene)
    assert isinstance(model.field, NeRFField) and isinstance(model.renderer, VolumeRenderer)
    assert model.renderer in list(model.modules()), "train()/eval() must reach the renderer"
    assert model.gaussians.num_gaussians == 0
    volume = model.at(0.3)
    assert isinstance(volume, NeRFAtTime) and float(volume.t) == pytest.approx(0.3)
    out = model.render(scene.train.cameras[:2], 0.3)
    assert out.rgb.shape == (2, 16, 16, 3) and out.depth.shape == (2, 16, 16, 1)
    assert out.means2d.shape == (2, 0, 2) and torch.isfinite(out.rgb).all()
    assert model.last_fusion_weights is not None
    (out.rgb.mean() + out.alpha.mean()).backward()
    groups = model.parameter_groups()
    assert set(groups) == {"field", "mlp", "cond"}
    for name, params in groups.items():
        reached = [p.grad is not None and bool(p.grad.abs().sum() > 0) for p in params]
        assert any(reached), f"no gradient reached the {name!r} group"
        assert all(p.grad is None or torch.isfinite(p.grad).all() for p in params), name
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    grouped = [id(p) for ps in groups.values() for p in ps]
    assert len(grouped) == len(set(grouped)), "a parameter is in two groups"
    gaussian_tables = {id(p) for p in model.gaussians.parameters()}
    assert set(grouped) == trainable - gaussian_tables


def test_box_fits_the_initial_points_with_the_nerf_margin_unless_fixed(scene):
    model = make_model(scene, ROW_B, small_nerf(bounds_margin=0.5))
    points = scene.init_points
    lo, hi = points.min(0).values, points.max(0).values
    torch.testing.assert_close(
        model.field.aabb, torch.stack([lo - 0.5 * (hi - lo), hi + 0.5 * (hi - lo)])
    )
    assert model.is_initialised and float(model.extent) > 0
    fixed = make_model(scene, ROW_B, small_nerf(aabb=[-2, -2, -2, 2, 2, 2]))
    torch.testing.assert_close(fixed.field.aabb, torch.tensor([[-2.0] * 3, [2.0] * 3]))


def test_static_stage_is_the_field_at_the_middle_time(scene):
    model = make_model(scene, ROW_B).eval()
    cams = scene.train.cameras[:1]
    with torch.no_grad():
        middle = model.render(cams, NERF_STATIC_TIME).rgb
        early, late = model.render(cams, 0.0, deform=False), model.render(cams, 1.0, deform=False)
        # The time planes start at 1 (time-independent); perturb them so t matters.
        for p in model.field.encoding_parameters():
            p.add_(0.3 * torch.randn_like(p))
        moved = model.render(cams, 0.0).rgb
    torch.testing.assert_close(early.rgb, middle, atol=0, rtol=0)
    torch.testing.assert_close(late.rgb, middle, atol=0, rtol=0)
    assert not torch.allclose(moved, middle)
    static = DS4DModel(
        GaussianInit(),
        FieldConfig(),
        ROW_B,
        ConditioningConfig(cache_dir=""),
        deformable=False,
        representation="nerf",
        nerf=small_nerf(),
    )
    assert float(static.at(0.9).t) == NERF_STATIC_TIME


def test_occlusion_depth_is_a_nerf_render_refreshed_in_both_stages(scene):
    model = make_model(scene)
    assert model.visibility is None
    model.begin_step(0, deform=False)  # a conditioned NeRF conditions in the static stage too
    first = model.visibility
    assert first.shape == (scene.train.num_views, 8, 8) and torch.isfinite(first).all()
    assert (first > 0).any(), "the initial half-transparent box renders a depth"
    model.begin_step(3, deform=True)
    assert model.visibility is first, "refreshed off schedule"
    with torch.no_grad():
        for p in model.field.mlp_parameters():
            p.add_(0.5 * torch.randn_like(p))
    model.begin_step(5, deform=True)
    assert model.visibility is not first and not torch.equal(model.visibility, first)
    # The depth renders are made without jitter (the renderer stays in training mode): from the
    # same previous maps (they condition the render), a refresh gives the same maps.
    assert model.renderer.training
    previous = model.visibility
    again = model.refresh_visibility().clone()
    model.visibility = previous
    torch.testing.assert_close(model.refresh_visibility(), again, atol=0, rtol=0)
    assert model.renderer.training


def test_a_training_step_samples_depend_only_on_the_step(scene):
    model = make_model(scene, ROW_B).train()
    cams = scene.train.cameras[:1]

    def render(step: int) -> torch.Tensor:
        model.begin_step(step, deform=True)
        with torch.no_grad():
            return model.render(cams, 0.4).rgb

    torch.testing.assert_close(render(7), render(7), atol=0, rtol=0)
    assert not torch.equal(render(7), render(8)), "stratified jitter is off"


def test_settings_that_mean_nothing_for_a_nerf_are_refused(scene):
    base = (GaussianInit(), FieldConfig(), ROW_H)
    with pytest.raises(ValueError, match="deformed_positions"):
        DS4DModel(
            *base,
            ConditioningConfig(deformed_positions=True, cache_dir=""),
            representation="nerf",
        )
    with pytest.raises(ValueError, match="model.representation is 'gaussians'"):
        DS4DModel(*base, ConditioningConfig(cache_dir=""), nerf=NeRFConfig())
    with pytest.raises(ValueError, match="model.representation must be one of"):
        DS4DModel(*base, ConditioningConfig(cache_dir=""), representation="mesh")


# --------------------------------------------------------------------------------- the CLI
def nerf_args(run_dir: Path, *extra: str, steps: int = 2) -> list[str]:
    return [
        "-c",
        str(CONFIGS / "base.yaml"),
        "-c",
        str(CONFIGS / "model" / "nerf.yaml"),
        *extra,
        *tiny_synthetic(),
        *tiny_overrides(run_dir, steps),
        *tiny_nerf(),
    ]


LEAN = ("--test_after_fit=false", "--videos.enabled=false", "--export.enabled=false")


@pytest.fixture(scope="module")
def nerf_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-step fit of the NeRF preset (row H) with its videos and density exports, untested."""
    run_dir = tmp_path_factory.mktemp("nerf") / "run"
    row_h = ["-c", str(CONFIGS / "ablation" / "row_h.yaml")]
    main(["fit", *nerf_args(run_dir, *row_h), "--test_after_fit=false"])
    return run_dir


def test_fit_writes_videos_and_density_exports_instead_of_gaussian_plys(nerf_run: Path) -> None:
    assert (nerf_run / "renders" / "turntable.mp4").is_file()
    assert (nerf_run / "renders" / "eval_0.mp4").is_file()
    export = nerf_run / "export"
    assert not (export / "canonical.ply").exists() and not list(export.glob("frame_*.ply"))
    files = sorted(p.name for p in export.glob("density_*.ply"))
    kind = "mesh" if files and files[0].startswith("density_mesh") else "points"
    assert files == [f"density_{kind}_{i:04d}.ply" for i in range(4)]
    vertex = PlyData.read(str(export / files[0]))["vertex"]
    assert {p.name for p in vertex.properties} >= {"x", "y", "z", "red", "green", "blue"}
    ckpt = torch.load(nerf_run / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["hyper_parameters"]["representation"] == "nerf"
    assert ckpt["hyper_parameters"]["nerf"]["cond_resolution"] == 8
    assert ckpt["ds4d"]["renderer"] == "nerfacc_volume" and ckpt["ds4d"]["num_gaussians"] == 0
    assert ckpt["ds4d"]["visibility_depth"].shape == (7, 16, 16)
    info = json.loads((nerf_run / "run_info.json").read_text())
    assert info["renderer"] == "nerfacc_volume"


def test_test_scores_a_nerf_run_and_load_run_renders_it(nerf_run: Path) -> None:
    args = nerf_args(nerf_run, "-c", str(CONFIGS / "ablation" / "row_h.yaml"))
    main(["test", *[a for a in args if not a.startswith("--checkpoint")]])
    metrics = json.loads((nerf_run / "metrics.json").read_text())
    assert (metrics["num_views"], metrics["num_frames"]) == (4, 4)
    assert all(math.isfinite(metrics[k]) for k in ("psnr", "ssim", "dyn_psnr"))
    run = load_run(nerf_run)
    assert run.model.is_nerf and not run.model.training
    with torch.no_grad():
        out = run.model.render(run.scene.eval.cameras_at(0), run.scene.eval.times[0])
    assert out.rgb.shape == (4, 32, 32, 3) and torch.isfinite(out.rgb).all()


def test_resume_from_last_matches_the_uninterrupted_run(tmp_path: Path) -> None:
    """Kill-and-resume continues exactly: the frames, the ray jitter and the occlusion depth
    renders of a step all derive from the step (docs/design.md §8)."""
    row_h = ("-c", str(CONFIGS / "ablation" / "row_h.yaml"))
    split, straight = tmp_path / "split", tmp_path / "straight"
    main(["fit", *nerf_args(split, *row_h, steps=2), *LEAN])
    main(["fit", *nerf_args(split, *row_h, steps=3), *LEAN, "--ckpt_path=last"])
    main(["fit", *nerf_args(straight, *row_h, steps=3), *LEAN])
    a = torch.load(straight / "checkpoints" / "last.ckpt", weights_only=False)
    b = torch.load(split / "checkpoints" / "last.ckpt", weights_only=False)
    assert a["global_step"] == b["global_step"] == 3
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][key], value, msg=key)


@pytest.mark.parametrize("ablation", ["row_b", "wo_tssf"])
def test_conditioning_ablations_fit_a_nerf(ablation: str, run_dir: Path) -> None:
    preset = ("-c", str(CONFIGS / "ablation" / f"{ablation}.yaml"))
    main(["fit", *nerf_args(run_dir, *preset), *LEAN])
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 2
    conditioned = any(k.startswith("model.conditioner.") for k in ckpt["state_dict"])
    assert conditioned == (ablation != "row_b")
    assert all(
        torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point()
    )


def test_sds_and_the_logged_terms_of_a_nerf_fit(tmp_path: Path, run_dir: Path) -> None:
    """Zero123 SDS renders random views of the field like it renders Gaussians; the fusion
    statistics are logged; the Gaussian-only scale-ratio term is skipped even when weighted."""
    zero123 = write_tiny_zero123(tmp_path / "zero123")
    sds = ["-c", str(CONFIGS / "model" / "zero123_sds.yaml"), f"--model.sds.path={zero123}"]
    sds += ["--model.sds.resolution=32", "--model.sds.start_step=0"]
    args = [a for a in nerf_args(run_dir, *sds) if not a.startswith("--trainer.logger")]
    main(["fit", *args, *LEAN, "--trainer.log_every_n_steps=1", "--model.loss.scale_ratio=0.01"])
    header = next(iter((run_dir / "lightning_logs").rglob("metrics.csv"))).read_text()
    header = header.splitlines()[0].split(",")
    for key in ("train/loss/sds", "train/loss/rgb_mse", "train/fusion/input_weight"):
        assert key in header, key
    assert "train/loss/scale_ratio" not in header
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 2
    assert all(
        torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point()
    )


def test_the_viewer_refuses_a_nerf_run_in_one_line(
    nerf_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(RunLoadError, match="a NeRF run .*the viewer shows Gaussians only"):
        load_source(nerf_run)
    with pytest.raises(SystemExit) as exc:
        main(["view", str(nerf_run), "--port", "0"])
    err = capsys.readouterr().err
    # The message, then the hint (--debug for the traceback).
    assert exc.value.code == 2 and err.startswith("ds4d view: error: ") and err.count("\n") == 2
    assert "Traceback" not in err
    assert "NeRF run" in err
