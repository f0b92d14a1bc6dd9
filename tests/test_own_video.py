"""A user's own video, end to end: no evaluation ground truth, generated pseudo views with
defects, no mesh.

Spec:
  * ``data.holdout_every`` takes every k-th frame out of training (all views) and keeps its real
    view for scoring, with the moving-pixel mask of the whole clip; times keep their values;
  * evaluation splits: evaluation views when the dataset has them, held-out frames, input
    reconstruction (always); ``ds4d predict`` without evaluation views says so;
  * ``fit`` on a prepared folder without ``eval_gt`` (Consistent4D layout and multi-view sequence
    layout, opaque grey Zero123++-like pseudo views) trains, writes checkpoints, videos and PLYs,
    and ``test`` writes a ``metrics.json`` with what can be measured and the reason for the rest;
  * ``ds4d prepare`` → ``ds4d fit`` → ``ds4d test`` works as a user would run it;
  * initial points come from ``model.init.source``: the visual hull of the views by default when
    there is no mesh and no point cloud, a sphere (with a warning) when one view cannot carve.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from conftest import CONFIGS, tiny_overrides

from ds4d_pl.cameras import orbit_cameras
from ds4d_pl.cli import main
from ds4d_pl.config import AblationConfig, ConditioningConfig, FieldConfig, GaussianInit
from ds4d_pl.data.datamodule import DS4DDataModule, hold_out_frames
from ds4d_pl.data.io import read_rgba, write_rgba
from ds4d_pl.data.parsers.degrade import DegradeConfig
from ds4d_pl.data.parsers.synthetic import (
    SyntheticConfig,
    make_synthetic_scene,
    write_synthetic,
)
from ds4d_pl.data.types import ViewSet
from ds4d_pl.model import DS4DModel


def _scene(frames: int = 7):
    return make_synthetic_scene(
        SyntheticConfig(num_frames=frames, resolution=32, eval_resolution=32, num_init_points=200)
    )


# ----------------------------------------------------------------------------- held-out frames


def test_hold_out_frames_keeps_every_kth_inner_frame_out_of_every_view() -> None:
    scene = _scene(7)
    times = scene.train.times.clone()
    split = hold_out_frames(scene, 3)
    assert split.meta["holdout_frames"] == [3]  # frame 6 is the last: never held out
    assert split.train.num_frames == 6 and split.train.num_views == scene.train.num_views
    assert torch.equal(split.train.times, times[[0, 1, 2, 4, 5, 6]])  # not re-spaced
    assert split.holdout.num_views == scene.num_input_views == 1
    assert torch.equal(split.holdout.times, times[[3]])
    assert torch.equal(split.holdout.rgb[0, 0], scene.train.rgb[0, 3])
    # The moving-pixel mask is the whole clip's, not that of the lone held-out frame.
    full = scene.train.select(views=[0]).dynamic_mask()
    assert torch.equal(split.holdout.dyn_mask, full[:, [3]]) and full.any()
    assert split.eval is scene.eval
    assert hold_out_frames(_scene(9), 2).meta["holdout_frames"] == [2, 4, 6]


@pytest.mark.parametrize(("every", "frames", "match"), [(1, 7, ">= 2"), (5, 5, "too few")])
def test_hold_out_frames_refuses_what_it_cannot_do(every: int, frames: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        hold_out_frames(_scene(frames), every)
    if every == 1:
        with pytest.raises(ValueError, match="holdout_every"):
            DS4DDataModule(holdout_every=1)


def test_select_keeps_each_frames_own_camera_for_a_moving_camera() -> None:
    t = 4
    cams = orbit_cameras([0.0] * t, [10.0 * i for i in range(t)], 8, 8)
    views = ViewSet(
        torch.rand(1, t, 8, 8, 3), torch.rand(1, t, 8, 8, 1), cams, torch.linspace(0, 1, t)
    )
    sub = views.select(frames=[1, 3])
    assert sub.per_frame_cameras and sub.num_frames == 2
    assert torch.equal(sub.cameras.c2w, cams.c2w[[1, 3]])
    assert torch.equal(sub.rgb[0, 1], views.rgb[0, 3])


def test_splits_follow_what_the_scene_has() -> None:
    dm = DS4DDataModule(
        synthetic=SyntheticConfig(num_frames=7, resolution=16, eval_resolution=16),
        holdout_every=3,
    )
    dm.setup("fit")
    assert dm.splits("val") == ["eval", "holdout"] and dm.splits("test") == [
        "eval",
        "holdout",
        "input",
    ]
    assert [b.dataset.split for b in dm.val_dataloader()] == ["eval", "holdout"]
    dm.scene = dm.scene.__class__(**{**dm.scene.__dict__, "eval": None, "holdout": None})
    assert dm.splits("val") == ["input"] and dm.splits("test") == ["input"]
    assert next(iter(dm.val_dataloader()[0]))["split"] == "input"
    with pytest.raises(ValueError, match="no evaluation views to predict.*ds4d render"):
        dm.predict_dataloader()


# ----------------------------------------------------------------------------- initial points


def _model(init: GaussianInit, ablation: AblationConfig | None = None) -> DS4DModel:
    field = FieldConfig(plane_resolution=8, time_resolution=2, feature_dim=8, hidden=16)
    return DS4DModel(
        init, field, ablation or AblationConfig("points", False, False, "off"), ConditioningConfig()
    )


def test_auto_init_carves_the_hull_of_the_views_when_there_are_no_points() -> None:
    scene = _scene(3)
    scene.init_points = scene.init_colors = None
    model = _model(GaussianInit(num=300))
    model.initialise(scene, torch.Generator().manual_seed(0))
    assert model.init_record == "hull" and model.gaussians.num_gaussians == 300
    # The hull lies around the object (radius ~0.6 at the protocol's scale), not in a sphere.
    assert float(model.gaussians.means.norm(dim=1).max()) < 1.2
    again = _model(GaussianInit(num=300))
    again.initialise(scene, torch.Generator().manual_seed(0))
    assert torch.equal(again.gaussians.means, model.gaussians.means)  # seeded


def test_auto_init_prefers_a_mesh_then_the_scene_points() -> None:
    scene = _scene(3)
    model = _model(GaussianInit(num=300))
    model.initialise(scene, torch.Generator().manual_seed(0))
    assert model.init_record == "scene_points"


def test_one_view_cannot_carve_and_says_so() -> None:
    scene = _scene(3)
    scene.init_points = scene.init_colors = None
    scene.train = scene.train.select(views=[0])
    model = _model(GaussianInit(num=100))
    with pytest.warns(UserWarning, match="no visual hull can be carved"):
        model.initialise(scene, torch.Generator().manual_seed(0))
    assert model.init_record == "sphere"
    row_a = AblationConfig("random", False, False, "off")
    with pytest.raises(ValueError, match="needs model.ablation.init='points'"):
        _model(GaussianInit(source="hull"), row_a).initialise(scene, torch.Generator())
    with pytest.raises(ValueError, match="source='mesh' needs model.init.path"):
        GaussianInit(source="mesh")


# ----------------------------------------------------------------------------- fits


@pytest.fixture(scope="module")
def own_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A video like a user's: no eval_gt, pseudo views stored the way Zero123++ writes them
    (opaque RGB on grey) with its defects (framing errors, flicker, an invented back side, one
    wrong view)."""
    root = tmp_path_factory.mktemp("own")
    cfg = SyntheticConfig(
        num_frames=5,
        resolution=32,
        eval_resolution=32,
        name="bird",
        pseudo_views="degraded",
        degrade=DegradeConfig(seed=3),
    )
    write_synthetic(cfg, root, pseudo_background=0.5)
    shutil.rmtree(root / "eval_gt")
    return root


def _fit(args: list[str], run_dir: Path, steps: int = 3) -> dict:
    overrides = [a for a in tiny_overrides(run_dir, steps) if "init.num" not in a]
    main(["fit", "-c", str(CONFIGS / "base.yaml"), *args, *overrides, "--model.init.num=300"])
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.mark.parametrize("layout", ["consistent4d", "multiview_sequence"])
def test_fit_without_evaluation_views_writes_everything_it_can(
    own_root: Path, tmp_path: Path, layout: str, no_weights: Path, caplog
) -> None:
    run = tmp_path / "run"
    caplog.set_level("INFO")
    name = "bird" if layout == "consistent4d" else "bird_mv"
    metrics = _fit(
        [
            "-c",
            str(CONFIGS / "data" / f"{layout}.yaml"),
            f"--data.root={own_root}",
            f"--data.object_name={name}",
            f"--data.{layout}.resolution=32",
            "--data.holdout_every=2",
        ],
        run,
    )
    for key in ("holdout/psnr", "holdout/ssim", "holdout/masked_psnr", "input/psnr"):
        assert isinstance(metrics[key], float), key
    assert metrics["psnr"].startswith("n/a (no evaluation views")
    assert metrics["init_source"] == "hull"
    for key in ("flicker/input_video", "flicker/novel_views", "flicker/novel_ratio"):
        assert isinstance(metrics[key], float), key
    assert metrics["novel/clip"] == "n/a (missing weights: clip-vit-base-patch32)"
    assert metrics["holdout/lpips"].startswith("n/a (missing weights: vgg16")
    # One line at start-up says what cannot be measured and why.
    said = [r.getMessage() for r in caplog.records if "unavailable metrics" in r.getMessage()]
    assert said and "no evaluation views" in said[0] and "novel/clip (missing weights" in said[0]
    assert (run / "checkpoints" / "last.ckpt").is_file()
    for video in ("turntable", "front", "back", "left", "right"):
        assert (run / "renders" / f"{video}.mp4").is_file(), video
    assert (run / "export" / "canonical.ply").is_file()
    assert (run / "export" / "frame_0001.ply").is_file()
    info = json.loads((run / "run_info.json").read_text())
    assert info["init_source"] == "hull" and info["pseudo_views"] == "zero123pp"
    # The opaque grey pseudo views got their alpha from the background colour.
    assert "pseudo_alpha" in info["scene_meta"]


def test_prepare_fit_test_as_a_user_would(tmp_path: Path) -> None:
    """A folder of RGBA frames → ds4d prepare → ds4d fit → ds4d test."""
    src = tmp_path / "frames"
    write_synthetic(
        SyntheticConfig(num_frames=4, resolution=48, eval_resolution=32, name="x"), tmp_path / "s"
    )
    for i in range(4):
        # Off-centre in a larger canvas, as a phone video's segmented frames would be.
        frame = torch.zeros(64, 80, 4)
        frame[4:52, 20:68] = read_rgba(tmp_path / "s" / "x" / f"{i}.png")
        write_rgba(src / f"frame_{i:03d}.png", frame)
    with pytest.raises(SystemExit) as exc:
        main(["prepare", "--input", str(src), "--out", str(tmp_path / "data"), "--name", "cat",
              "--size", "32"])  # fmt: skip
    assert exc.value.code == 0
    data = [
        "-c",
        str(CONFIGS / "data" / "consistent4d.yaml"),
        f"--data.root={tmp_path / 'data'}",
        "--data.object_name=cat",
        "--data.consistent4d.resolution=32",
    ]
    run = tmp_path / "run"
    overrides = [a for a in tiny_overrides(run, 2) if "init.num" not in a]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one view: the sphere fallback warns
        main(["fit", "-c", str(CONFIGS / "base.yaml"), *data, *overrides,
              "--model.init.num=200", "--test_after_fit=false"])  # fmt: skip
    assert (run / "checkpoints" / "last.ckpt").is_file() and not (run / "metrics.json").exists()
    main(["test", "-c", str(CONFIGS / "base.yaml"), *data, f"--trainer.default_root_dir={run}",
          "--trainer.logger=false", "--trainer.enable_progress_bar=false"])  # fmt: skip
    metrics = json.loads((run / "metrics.json").read_text())
    assert isinstance(metrics["input/psnr"], float) and metrics["input/psnr"] > 5
    assert "holdout/psnr" not in metrics
    assert metrics["clip"].startswith("n/a (no evaluation views")
    assert "training frames (input view)" in (run / "metrics.md").read_text()
