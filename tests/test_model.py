"""Spec of ds4d_pl.model.DS4DModel, the 4D asset without Lightning.

* a fresh model is the identity: the Gaussians at any time are the canonical ones;
* conditioned forwards give per-Gaussian features of the projection width and per-view weights;
* the occlusion test's depth renders are made on demand and refreshed on schedule;
* per-Gaussian side tables never outlive a densification event, even one that clones as many
  Gaussians as it prunes;
* every trainable parameter is in exactly one optimiser group;
* the model says whether its start placed the object without the generated views, and where;
* checkpoints written before the model existed still load and score identically.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ds4d_pl.cli import main
from ds4d_pl.compat import upgrade_hparams
from ds4d_pl.config import AblationConfig, ConditioningConfig, FieldConfig, GaussianInit
from ds4d_pl.data.parsers.synthetic import SyntheticConfig, make_synthetic_scene
from ds4d_pl.model import DS4DModel
from ds4d_pl.render import cpu_raster
from ds4d_pl.system import DS4DSystem

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def scene():
    return make_synthetic_scene(
        SyntheticConfig(num_frames=4, resolution=32, eval_resolution=32, num_init_points=200)
    )


#: Ablation rows by TSSF mode; ``none`` is row B (no frame features at all).
ROWS = {
    "none": AblationConfig("points", False, False, "off"),
    "off": AblationConfig("points", True, True, "off"),
    "ga": AblationConfig("points", True, True, "ga"),
    "da": AblationConfig("points", True, True, "da"),
}


def make_model(scene, tssf: str = "da", deformed_positions: bool = False) -> DS4DModel:
    ablation = ROWS[tssf]
    cond = ConditioningConfig(
        encoder_input_size=64,
        visibility_resolution=16,
        visibility_every=5,
        deformed_positions=deformed_positions,
        cache_dir="",
    )
    field = FieldConfig(plane_resolution=8, time_resolution=2, feature_dim=8, hidden=16)
    model = DS4DModel(GaussianInit(), field, ablation, cond, renderer="torch")
    model.initialise(scene, torch.Generator().manual_seed(0))
    model.prepare_conditioning(scene.train)
    return model


def _same(a, b) -> bool:
    return all(
        torch.equal(getattr(a, k), getattr(b, k))
        for k in ("means", "quats", "scales", "opacities", "sh")
    )


@pytest.mark.parametrize("tssf", ["none", "off", "ga", "da"])
def test_fresh_model_is_the_identity(scene, tssf: str) -> None:
    model = make_model(scene, tssf)
    assert model.gaussians.num_gaussians == 200
    canonical = model.at(0.0, deform=False)
    for t in (0.0, 0.37, 1.0):
        assert _same(model.at(t), canonical)
    assert model.extent > 0
    out = model.render(scene.train.cameras[:1], 0.5)
    assert out.rgb.shape == (1, 32, 32, 3) and torch.isfinite(out.rgb).all()


def test_conditioned_forward_shapes(scene) -> None:
    model = make_model(scene, "da")
    assert model.visibility is None
    cond = model._condition(0.5)
    n, v = model.gaussians.num_gaussians, scene.train.num_views
    assert cond.shape == (n, model.conditioner.out_dim)
    assert model.last_fusion_weights.shape == (v, n)
    # The occlusion test's depth renders were made on demand, one per training view.
    assert model.visibility.shape == (v, 16, 16)
    assert model.energy.shape[:2] == (v, scene.train.num_frames)


def test_visibility_is_refreshed_on_schedule_only_while_deforming(scene) -> None:
    model = make_model(scene, "da")
    model.refresh_visibility()
    first = model.visibility
    model.begin_step(3, deform=True)  # not a multiple of visibility_every = 5
    assert model.visibility is first
    model.begin_step(5, deform=False)  # coarse stage: the field is not in use
    assert model.visibility is first
    with torch.no_grad():
        model.gaussians.means.mul_(0.5)  # the canonical geometry changed
    model.begin_step(10, deform=True)
    assert model.visibility is not first
    assert not torch.equal(model.visibility, first)


def test_side_tables_do_not_survive_a_densify_event_that_keeps_the_count(scene) -> None:
    model = make_model(scene, "da", deformed_positions=True)
    with torch.no_grad():
        for head in model.field.heads.values():
            head[-1].bias.normal_()  # a field that moves every Gaussian
    deformed = model.at(0.5).means.detach()
    # A densification event that clones as many Gaussians as it prunes: N is unchanged but the
    # rows are other Gaussians, so the last deformed positions must not be reused.
    g = model.gaussians
    tables = {name: getattr(g, name).detach().flip(0).clone() for name in g.TABLES}
    g.replace_tables(tables)
    assert g.num_gaussians == deformed.shape[0]
    seen = []
    original = model.conditioner.forward

    def spy(points, *args, **kwargs):
        seen.append(points.detach().clone())
        return original(points, *args, **kwargs)

    model.conditioner.forward = spy
    model.at(0.5)
    assert torch.equal(seen[-1], g.means.detach())  # canonical, not the stale table
    model.at(0.5)
    assert not torch.equal(seen[-1], g.means.detach())  # the fresh positions are used again


def test_parameter_groups_hold_every_trainable_parameter_once(scene) -> None:
    model = make_model(scene, "ga")
    groups = model.parameter_groups()
    assert set(groups) == {*model.gaussians.TABLES, "field", "mlp", "cond"}
    grouped = [id(p) for params in groups.values() for p in params]
    assert len(grouped) == len(set(grouped))
    assert set(grouped) == {id(p) for p in model.parameters() if p.requires_grad}


@pytest.mark.parametrize(("source", "independent"), [("auto", True), ("hull", False)])
def test_start_says_whether_it_placed_the_object_itself(scene, source, independent) -> None:
    # The synthetic scene carries its surface points, so ``auto`` starts from them; a hull is
    # carved from the pseudo views and so inherits their framing.
    field = FieldConfig(plane_resolution=8, time_resolution=2, feature_dim=8, hidden=16)
    init = GaussianInit(num=300, source=source)
    model = DS4DModel(init, field, ROWS["none"], ConditioningConfig(cache_dir=""), "torch")
    assert not model.placed_independently  # nothing placed yet
    model.initialise(scene, torch.Generator().manual_seed(0))
    assert model.init_record == ("scene_points" if source == "auto" else "hull")
    assert model.placed_independently is independent
    means = model.gaussians.means.detach()
    assert torch.allclose(model.object_centre(), means.mean(0))


def test_prepare_conditioning_is_required_before_conditioned_forwards(scene) -> None:
    field = FieldConfig(plane_resolution=8, time_resolution=2, feature_dim=8, hidden=16)
    model = DS4DModel(
        GaussianInit(), field, AblationConfig(), ConditioningConfig(encoder_input_size=64)
    )
    model.initialise(scene, torch.Generator().manual_seed(0))
    assert model.needs_features
    with pytest.raises(RuntimeError, match="prepare_conditioning|set_features"):
        model.at(0.5)


def test_upgrade_hparams_renames_and_drops_stale_mode_knobs() -> None:
    old = {
        "loss": {"rgb": 2.0, "mask": 0.5},
        "ablation": {"init": "points", "frame_features": True, "dsfd": True, "tssf": "ga"},
        "conditioning": {"da_combine": "sum", "ga_scorer": "own"},
        "renderer": "torch_tiled",
    }
    new = upgrade_hparams(old)
    assert new["loss"] == {"rgb_mse": 2.0, "mask": 0.5}
    assert new["conditioning"] == {
        "da_combine": None,
        "ga_scorer": "own",
        "exclude_own_frame": False,
    }
    assert new["renderer"] == "torch"
    assert old["loss"] == {"rgb": 2.0, "mask": 0.5}  # the input is not modified
    assert upgrade_hparams(new) == new


def test_checkpoint_written_before_the_model_existed_loads() -> None:
    system = DS4DSystem.load_from_checkpoint(DATA / "checkpoint_v0_row_h.pt", map_location="cpu")
    assert system.model.gaussians.num_gaussians == 330
    assert float(system.model.extent) > 0
    assert system.model.visibility is not None and system.strategy.num_tracked == 330
    assert set(system.hparams["loss"]) >= {"rgb_mse", "pseudo_l1"}  # complete, today's names


def test_old_run_loads_with_the_knobs_it_was_trained_with() -> None:
    """A config written before ``field.cond_gate`` and ``optim.restart_at_fine`` existed is read
    as that version meant it (no gate, one decay), so its checkpoint loads strictly."""
    from ds4d_pl.run import load_run

    run = load_run(DATA / "checkpoint_v0_row_h.pt", config=DATA / "checkpoint_v0_row_h.yaml")
    assert run.system.model.field.cond_gate is None
    assert run.system.optim_cfg.restart_at_fine is False
    assert run.system.model.gaussians.num_gaussians == 330


@pytest.mark.parametrize("kernel", ["torch", "compiled"])
def test_old_checkpoint_scores_exactly_as_it_did(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kernel: str
) -> None:
    """``ds4d test`` on a checkpoint and config written before the refactor into DS4DModel
    reproduces that run's metrics.json to the last digit with the renderer that wrote it (the
    PyTorch compositing), and to float rounding with the compiled CPU compositing."""
    if kernel == "compiled" and cpu_raster._compiler() is None:
        pytest.skip("no C++ compiler for the compiled CPU compositing")
    monkeypatch.setenv("DS4D_CPU_KERNEL", kernel)
    main(
        [
            "test",
            "-c",
            str(DATA / "checkpoint_v0_row_h.yaml"),
            f"--ckpt_path={DATA / 'checkpoint_v0_row_h.pt'}",
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.logger=false",
            "--trainer.enable_progress_bar=false",
        ]
    )
    now = json.loads((tmp_path / "metrics.json").read_text())
    then = json.loads((DATA / "checkpoint_v0_row_h.metrics.json").read_text())
    for key in ("psnr", "ssim", "dyn_psnr", "num_gaussians", "num_clips"):
        if kernel == "torch":
            assert now[key] == then[key], key
        else:
            assert now[key] == pytest.approx(then[key], rel=1e-6, abs=1e-6), key
