"""End-to-end CLI behaviour: every preset fits, runs round-trip, bad input fails cleanly.

Spec:
  * every YAML preset under ``configs/`` fits 2 steps on CPU (1 coarse + 1 fine);
  * ``fit`` writes the run directory of docs/design.md §8; ``test`` reloads the checkpoint and
    reproduces the metrics; ``--ckpt_path last`` resumes;
  * the test draws the Gaussians at the pixel scale they were fitted at whatever the evaluation
    resolution, records how, and warns when told to draw them natively at another scale;
  * a wrong key, a wrong type, a missing data root and a NaN loss each fail with a message naming
    the culprit, and a NaN loss leaves the last good checkpoint byte-identical.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import pytest
import torch
from conftest import CONFIGS, tiny_nerf, tiny_overrides, tiny_synthetic

from ds4d_pl.cli import main
from ds4d_pl.data.io import read_rgba
from ds4d_pl.data.parsers.synthetic import SyntheticConfig, write_synthetic
from ds4d_pl.data.parsers.synthetic_scenes import write_dnerf, write_n3dv
from ds4d_pl.export.ply import save_ply
from ds4d_pl.gaussians.canonical import CanonicalGaussians
from ds4d_pl.priors.tiny import write_tiny_zero123

PARTIAL_PRESETS = sorted(
    p.relative_to(CONFIGS).as_posix()
    for p in CONFIGS.rglob("*.yaml")
    if p.parent != CONFIGS and p.parent.name != "sweeps"
)
FULL_PRESETS = sorted(p.name for p in CONFIGS.glob("*.yaml"))


def run(args: list[str]) -> None:
    main(args)


def fails(args: list[str], capsys: pytest.CaptureFixture) -> str:
    """Run a command expected to stop with a one-line error (exit 2); return its stderr."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    return capsys.readouterr().err


@pytest.fixture(scope="module")
def c4d_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("c4d")
    write_synthetic(
        SyntheticConfig(num_frames=4, resolution=32, eval_resolution=32, name="toy"), root
    )
    return root


@pytest.fixture(scope="module")
def dnerf_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dnerf") / "toy"
    return write_dnerf(SyntheticConfig(), root, num_train=6, num_val=2, num_test=3, resolution=32)


@pytest.fixture(scope="module")
def n3dv_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("n3dv") / "toy"
    return write_n3dv(SyntheticConfig(), root, num_cameras=4, num_frames=4, resolution=(32, 24))


def preset_args(preset: str, roots: dict[str, Path]) -> list[str]:
    """A preset with the tiny fixture of its dataset format."""
    args = ["-c", str(CONFIGS / "base.yaml"), "-c", str(CONFIGS / preset)]
    c4d = [f"--data.root={roots['c4d']}", "--data.object_name=toy"]
    if "consistent4d" in preset:
        return (
            args
            + c4d
            + [
                "--data.consistent4d.resolution=32",
                "--data.consistent4d.eval_resolution=32",
            ]
        )
    if "objaverse" in preset:
        return (
            args
            + c4d
            + [
                "--data.objaverse.resolution=32",
                "--data.objaverse.eval_resolution=32",
            ]
        )
    if "multiview_sequence" in preset:
        return args + [
            f"--data.root={roots['c4d']}",
            "--data.object_name=toy_mv",
            "--data.multiview_sequence.resolution=32",
            "--data.multiview_sequence.eval_resolution=32",
        ]
    if "dnerf" in preset:
        return args + [f"--data.root={roots['dnerf']}", "--data.dnerf.num_init_points=300"]
    if "n3dv" in preset:
        return args + [
            f"--data.root={roots['n3dv']}",
            "--data.n3dv.downscale=1",
            "--data.n3dv.num_init_points=300",
        ]
    if "zero123_sds" in preset:
        return args + tiny_synthetic() + [f"--model.sds.path={roots['zero123']}", _SDS_SIZE]
    if preset == "model/nerf.yaml":
        return args + tiny_synthetic() + tiny_nerf()
    return args + tiny_synthetic()


_SDS_SIZE = "--model.sds.resolution=32"


@pytest.fixture(scope="module")
def zero123_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_zero123(tmp_path_factory.mktemp("zero123") / "tiny")


@pytest.fixture(scope="module")
def roots(c4d_root: Path, dnerf_root: Path, n3dv_root: Path, zero123_root: Path) -> dict[str, Path]:
    return {"c4d": c4d_root, "dnerf": dnerf_root, "n3dv": n3dv_root, "zero123": zero123_root}


@pytest.mark.parametrize("preset", PARTIAL_PRESETS)
def test_every_partial_preset_fits_two_steps(
    preset: str, run_dir: Path, roots: dict[str, Path]
) -> None:
    run(["fit", *preset_args(preset, roots), *tiny_overrides(run_dir)])
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert all(torch.isfinite(torch.tensor(metrics[k])) for k in ("psnr", "ssim"))


@pytest.mark.parametrize(
    ("scene", "ablation"),
    [("dnerf", "wo_dsfd"), ("dnerf", "row_b"), ("n3dv", "wo_tssf")],
)
def test_scene_presets_take_ablations_on_top_and_test_on_the_held_out_split(
    scene: str, ablation: str, run_dir: Path, roots: dict[str, Path]
) -> None:
    args = preset_args(f"scene/{scene}.yaml", roots)
    args += ["-c", str(CONFIGS / "ablation" / f"{ablation}.yaml")]
    run(["fit", *args, *tiny_overrides(run_dir), "--test_after_fit=false"])
    run(["test", *args, f"--trainer.default_root_dir={run_dir}", "--trainer.logger=false"])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    # D-NeRF: the 3 test images (one moving camera); N3DV: cam00 over the 4 frames.
    assert (metrics["num_views"], metrics["num_frames"]) == ((1, 3) if scene == "dnerf" else (1, 4))
    assert all(math.isfinite(metrics[k]) for k in ("psnr", "ssim", "dyn_psnr"))
    info = json.loads((run_dir / "run_info.json").read_text())
    assert info["scene_meta"]["dataset"] == scene
    assert (info["encoder"] is None) == (ablation == "row_b")


@pytest.mark.parametrize("preset", FULL_PRESETS)
def test_every_full_preset_fits_two_steps(preset: str, run_dir: Path) -> None:
    run(["fit", "-c", str(CONFIGS / preset), *tiny_synthetic(), *tiny_overrides(run_dir)])
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()


def test_fit_writes_the_run_directory_contract(run_dir: Path) -> None:
    run(["fit", "-c", str(CONFIGS / "demo.yaml"), *tiny_synthetic(), *tiny_overrides(run_dir)])
    for rel in [
        "config.yaml",
        "checkpoints/last.ckpt",
        "renders/turntable.mp4",
        "renders/front.mp4",
        "renders/back.mp4",
        "renders/left.mp4",
        "renders/right.mp4",
        "renders/eval_0.mp4",
        "renders/eval_3.mp4",
        "export/canonical.ply",
        "export/frame_0000.ply",
        "export/frame_0003.ply",
        "metrics.json",
    ]:
        assert (run_dir / rel).is_file(), rel
    assert not (run_dir / "export" / "frame_0004.ply").exists()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics) >= {"psnr", "ssim", "dyn_psnr", "clip", "lpips", "fvd", "fid_vid"}
    for key in ("clip", "lpips", "fvd", "fid_vid"):
        # Without the networks' weights (CI) a metric says so; it never makes up a number.
        value = metrics[key]
        assert isinstance(value, float) or value.startswith("n/a (missing weights: "), value
    assert "| CLIP↑ | LPIPS↓ | FVD↓ | FID-VID↓ |" in (run_dir / "metrics.md").read_text()
    # The run records what it used: encoder and its weights' checksum, renderer, supervision.
    info = json.loads((run_dir / "run_info.json").read_text())
    assert info["encoder"]["name"] == "efficientnet_lite0"
    assert len(info["encoder"]["weights_sha256"]) == 64
    row_h = {"init": "points", "frame_features": True, "dsfd": True, "tssf": "da"}
    assert info["ablation"] == row_h
    assert info["pseudo_views"] == "oracle"
    # A labelled figure (7 views x 4 frames of 64-pixel tiles, labels, colour bar) and per-view
    # strips of colour overlays on the frames (32-pixel frames are shown at 64 pixels).
    energy = read_rgba(run_dir / "diagnostics" / "dynamic_energy.png", require_alpha=False)
    assert energy.shape[0] > 7 * 64 and energy.shape[1] > 4 * 64
    per_view = read_rgba(run_dir / "diagnostics" / "dynamic_energy" / "view_6.png", False)
    assert per_view.shape[:2] == (64, 4 * 64)
    assert (run_dir / "loss_curve.png").is_file()
    # No temp files of the atomic writers are left behind.
    assert not [p for p in run_dir.rglob(".*") if p.is_file()]
    # The saved config is a complete, valid config: it reruns as is.
    again = run_dir.parent / "again"
    run(["fit", "-c", str(run_dir / "config.yaml"), f"--trainer.default_root_dir={again}"])
    assert (again / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.parametrize(
    ("eval_resolution", "mode", "supersample", "dilation"),
    [
        (64, "fitted", 1, 4.0),
        (16, "fitted", 2, 1.0),
        (64, "native", 1, 1.0),
        (16, "native", 1, 1.0),
    ],
)
def test_evaluation_at_another_scale_draws_the_fitted_scale_or_says_why_not(
    run_dir: Path, eval_resolution: int, mode: str, supersample: int, dilation: float
) -> None:
    args = [
        "fit",
        "-c",
        str(CONFIGS / "demo.yaml"),
        "--data.synthetic.num_frames=4",
        "--data.synthetic.resolution=32",
        f"--data.synthetic.eval_resolution={eval_resolution}",
        f"--model.benchmark.render_scale={mode}",
        *tiny_overrides(run_dir),
        "--videos.enabled=false",
        "--export.enabled=false",
    ]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run(args)
    record = json.loads((run_dir / "metrics.json").read_text())["render_scale"]
    assert record["mode"] == mode
    assert record["ratio"] == pytest.approx(eval_resolution / 32)
    assert (record["supersample"], record["dilation"]) == (supersample, pytest.approx(dilation))
    flagged = [str(w.message) for w in caught if "pixel scale" in str(w.message)]
    assert bool(flagged) is (mode == "native" and eval_resolution != 32)
    if flagged:
        side = f"{eval_resolution}x{eval_resolution}"
        assert f"evaluated at {side}" in flagged[0] and "(32x32)" in flagged[0]
        assert ("gaps" if eval_resolution > 32 else "alias") in flagged[0]


def test_test_subcommand_reloads_checkpoint_and_reproduces_metrics(run_dir: Path) -> None:
    base = ["-c", str(CONFIGS / "demo.yaml"), *tiny_synthetic(), *tiny_overrides(run_dir)]
    run(["fit", *base])
    fitted = json.loads((run_dir / "metrics.json").read_text())
    (run_dir / "metrics.json").unlink()
    run(["test", *[a for a in base if not a.startswith("--checkpoint")]])
    tested = json.loads((run_dir / "metrics.json").read_text())
    for key in ("psnr", "ssim", "dyn_psnr"):
        assert tested[key] == pytest.approx(fitted[key], abs=1e-4), key
    assert tested["num_gaussians"] == fitted["num_gaussians"]


def test_predict_writes_eval_view_pngs_in_the_ground_truth_layout(run_dir: Path) -> None:
    base = ["-c", str(CONFIGS / "demo.yaml"), *tiny_synthetic(), *tiny_overrides(run_dir)]
    run(["fit", *base])
    run(["predict", *[a for a in base if not a.startswith("--checkpoint")]])
    root = run_dir / "predictions" / "synthetic_mostly_static"
    for k in range(4):
        files = sorted(p.name for p in (root / f"eval_{k}").glob("*.png"))
        assert files == ["0.png", "1.png", "2.png", "3.png"]
    image = read_rgba(root / "eval_1" / "2.png")
    assert image.shape == (32, 32, 4)
    assert 0.0 < image[..., 3].mean() < 1.0  # the object covers part of the frame


def test_points_init_from_a_file_and_a_clear_error_when_it_is_missing(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    cloud = tmp_path / "cloud.ply"
    g = torch.Generator().manual_seed(0)
    save_ply(cloud, CanonicalGaussians.random_in_sphere(500, 0.4, generator=g))
    common = [
        "-c",
        str(CONFIGS / "demo.yaml"),
        *tiny_synthetic(),
        *tiny_overrides(run_dir),
        "--model.ablation.init=points",
    ]
    run(["fit", *common, f"--model.init.path={cloud}"])
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["ds4d"]["num_gaussians"] > 0
    # The file's points (radius 0.4) are normalised into the demo's object radius (0.6).
    radius = ckpt["state_dict"]["model.gaussians.means"].norm(dim=1).max()
    assert 0.55 < radius < 0.65
    err = fails(["fit", *common, f"--model.init.path={tmp_path / 'nothere.ply'}"], capsys)
    assert "nothere.ply" in err.splitlines()[0]


def test_test_without_a_checkpoint_fails_clearly(
    run_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    args = ["-c", str(CONFIGS / "demo.yaml"), *tiny_synthetic(), *tiny_overrides(run_dir)]
    err = fails(["test", *[a for a in args if not a.startswith("--checkpoint")]], capsys)
    assert "last.ckpt: no checkpoint to evaluate" in err.splitlines()[0]


def test_resume_from_last_continues_to_max_steps(run_dir: Path) -> None:
    base = ["-c", str(CONFIGS / "demo.yaml"), *tiny_synthetic(), *tiny_overrides(run_dir, 2)]
    run(["fit", *base])
    first = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert first["global_step"] == 2
    more = [a for a in base if not a.startswith("--trainer.max_steps")]
    run(["fit", *more, "--trainer.max_steps=4", "--ckpt_path=last"])
    resumed = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert resumed["global_step"] == 4


def test_unknown_key_fails_at_parse_time_naming_it(
    run_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit):
        run(["fit", "-c", str(CONFIGS / "demo.yaml"), "--model.schedule.coarse_stepz=3"])
    assert "coarse_stepz" in capsys.readouterr().err
    assert not run_dir.exists()


def test_unknown_key_in_a_config_file_fails_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  lossweights:\n    rgb: 1.0\n")
    with pytest.raises(SystemExit):
        run(["fit", "-c", str(CONFIGS / "demo.yaml"), "-c", str(bad)])
    assert "lossweights" in capsys.readouterr().err


def test_wrong_type_fails_at_parse_time_naming_the_key(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        run(["fit", "-c", str(CONFIGS / "demo.yaml"), "--model.schedule.fine_steps=many"])
    assert "fine_steps" in capsys.readouterr().err


def test_later_config_files_win(run_dir: Path, tmp_path: Path) -> None:
    over = tmp_path / "over.yaml"
    over.write_text("data:\n  synthetic:\n    motion: dynamic_only\n")
    run(
        [
            "fit",
            "-c",
            str(CONFIGS / "demo.yaml"),
            "-c",
            str(over),
            *tiny_synthetic(),
            *tiny_overrides(run_dir),
        ]
    )
    assert "motion: dynamic_only" in (run_dir / "config.yaml").read_text()


def test_missing_data_root_names_the_path(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    missing = tmp_path / "nowhere"
    args = ["-c", str(CONFIGS / "base.yaml"), "-c", str(CONFIGS / "data" / "consistent4d.yaml")]
    err = fails(["fit", *args, f"--data.root={missing}", *tiny_overrides(run_dir)], capsys)
    assert "nowhere" in err.splitlines()[0] and len(err.splitlines()) == 2
    assert not (run_dir / "checkpoints").exists()


def test_nan_loss_stops_with_a_clear_error_and_keeps_last_checkpoint(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    base = ["-c", str(CONFIGS / "demo.yaml"), *tiny_synthetic(), *tiny_overrides(run_dir, 2)]
    run(["fit", *base])
    last = run_dir / "checkpoints" / "last.ckpt"
    before = last.read_bytes()

    import ds4d_pl.system as system

    real = system.photometric_terms

    def poisoned(*args, **kwargs):
        terms = real(*args, **kwargs)
        return {k: v * float("nan") for k, v in terms.items()}

    monkeypatch.setattr(system, "photometric_terms", poisoned)
    more = [a for a in base if not a.startswith("--trainer.max_steps")]
    err = fails(["fit", *more, "--trainer.max_steps=4", "--ckpt_path=last"], capsys)
    assert "non-finite loss at step 2" in err and "last.ckpt is intact" in err
    assert last.read_bytes() == before


def test_synth_subcommand_writes_consistent4d_layout(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        main(
            [
                "synth",
                "--out",
                str(tmp_path),
                "--num_frames=3",
                "--resolution=24",
                "--eval_resolution=24",
                "--name=obj",
            ]
        )
    assert exc.value.code == 0
    assert sorted(p.name for p in (tmp_path / "obj").glob("*.png")) == ["0.png", "1.png", "2.png"]
    for k in range(4):
        assert len(list((tmp_path / "eval_gt" / "obj" / f"eval_{k}").glob("*.png"))) == 3


def test_synth_subcommand_writes_the_scene_formats_that_their_readers_load(
    tmp_path: Path,
) -> None:
    from ds4d_pl.data.parsers.dnerf import load_dnerf
    from ds4d_pl.data.parsers.n3dv import N3DVConfig, load_n3dv

    for fmt, extra in (("dnerf", ["--num_test=2"]), ("n3dv", ["--num_cameras=3"])):
        args = ["synth", "--format", fmt, "--out", str(tmp_path / fmt), "--num_frames=3"]
        with pytest.raises(SystemExit) as exc:
            main([*args, "--resolution=16", *extra])
        assert exc.value.code == 0
    dnerf = load_dnerf(tmp_path / "dnerf")
    assert (dnerf.train.num_frames, dnerf.eval.num_frames) == (3, 2)
    n3dv = load_n3dv(tmp_path / "n3dv", N3DVConfig(downscale=1))
    assert (n3dv.train.num_views, n3dv.train.num_frames) == (2, 3)
    assert n3dv.train.image_size == (12, 16)  # 4:3, even sizes


def _straight_and_resumed(tmp_path: Path, extra: list[str]) -> tuple[dict, dict]:
    """The last checkpoints of a 5-step demo fit run straight through and of the same fit
    stopped after 3 steps and resumed from ``last``."""

    def args(run_dir: Path, steps: int) -> list[str]:
        return [
            "-c",
            str(CONFIGS / "demo.yaml"),
            *tiny_synthetic(),
            *tiny_overrides(run_dir, steps),
            *extra,
            "--test_after_fit=false",
            "--videos.enabled=false",
            "--export.enabled=false",
        ]

    straight, split = tmp_path / "straight", tmp_path / "split"
    run(["fit", *args(straight, 5)])
    run(["fit", *args(split, 3)])
    run(["fit", *args(split, 5), "--ckpt_path=last"])
    a = torch.load(straight / "checkpoints" / "last.ckpt", weights_only=False)
    b = torch.load(split / "checkpoints" / "last.ckpt", weights_only=False)
    return a, b


@pytest.mark.parametrize("sds", [False, True], ids=["plain", "with_sds"])
def test_resumed_run_matches_the_uninterrupted_run(
    tmp_path: Path, sds: bool, zero123_root: Path
) -> None:
    """Kill-and-resume through densification events gives the same parameters and Gaussian
    count as training straight through (docs/design.md §8: a resumed run continues
    identically), also with SDS, whose views, timesteps, noise and annealing derive from the
    global step; the pseudo views' learned framing (model.framing) is on in both."""
    prior = ["-c", str(CONFIGS / "model" / "zero123_sds.yaml"), f"--model.sds.path={zero123_root}"]
    prior += [_SDS_SIZE, "--model.sds.anneal_steps=4"]
    densify = [
        *(prior if sds else []),
        "--model.densify.start_step=1",
        "--model.densify.interval=2",
        "--model.densify.grad_threshold=0.0",
        "--model.densify.grad_top_percent=0.2",
    ]
    # The pseudo views' learned framing resumes with its Adam state too.
    a, b = _straight_and_resumed(tmp_path, [*densify, "--model.framing.learn=true"])
    assert a["state_dict"]["framing.params"].abs().sum() > 0, "the framing never moved"
    assert a["global_step"] == b["global_step"] == 5
    assert a["ds4d"]["densify_totals"] == b["ds4d"]["densify_totals"]
    assert sum(a["ds4d"]["densify_totals"].values()) > 0, "densification never ran"
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][key], value, msg=key)


def test_a_resumed_point_reference_run_matches_the_uninterrupted_run(tmp_path: Path) -> None:
    """The point-space references are computed from the Gaussians' positions at a refresh; a
    resumed run takes them from its checkpoint instead of recomputing them from the positions it
    resumes at, so it continues exactly as the uninterrupted run (no refresh falls in between)."""
    a, b = _straight_and_resumed(
        tmp_path,
        [
            "--model.conditioning.reference_space=point",
            "--model.conditioning.reference_refresh=1000",
            "--model.densify.start_step=1000",
        ],
    )
    assert a["ds4d"]["point_reference"] is not None
    torch.testing.assert_close(b["ds4d"]["point_reference"], a["ds4d"]["point_reference"])
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][key], value, msg=key)


def test_conditioning_knobs_fit(run_dir: Path) -> None:
    """Non-default conditioning settings (deformed positions, DA concat, mean reference) run."""
    run(
        [
            "fit",
            "-c",
            str(CONFIGS / "demo.yaml"),
            *tiny_synthetic(),
            *tiny_overrides(run_dir, 3),
            "--model.conditioning.deformed_positions=true",
            "--model.conditioning.da_combine=concat",
            "--model.conditioning.reference=mean",
            "--model.conditioning.visibility_every=1",
        ]
    )
    assert (run_dir / "metrics.json").is_file()


def test_every_loss_term_weight_and_fusion_statistic_is_logged(run_dir: Path) -> None:
    overrides = [a for a in tiny_overrides(run_dir, 3) if not a.startswith("--trainer.logger")]
    run(
        [
            "fit",
            "-c",
            str(CONFIGS / "demo.yaml"),
            "-c",
            str(CONFIGS / "ablation" / "row_g.yaml"),
            *tiny_synthetic(),
            *overrides,
            "--trainer.log_every_n_steps=1",
            "--test_after_fit=false",
        ]
    )
    header = next(iter((run_dir / "lightning_logs").rglob("metrics.csv"))).read_text()
    header = header.splitlines()[0].split(",")
    for key in (
        "train/loss/rgb_mse",
        "train/weight/rgb_mse",
        "train/loss/pseudo_l1",
        "train/loss/plane_tv",
        "train/lr/cond",
        "train/fusion/input_weight",
        "train/fusion/pseudo_weight",
        "train/step_ms",
    ):
        assert key in header, key


def test_run_length_defaults_to_the_stage_schedule(run_dir: Path) -> None:
    overrides = [a for a in tiny_overrides(run_dir) if not a.startswith("--trainer.max_steps")]
    run(
        [
            "fit",
            "-c",
            str(CONFIGS / "demo.yaml"),
            *tiny_synthetic(),
            *overrides,
            "--trainer.max_steps=-1",
            "--model.schedule.fine_steps=2",
            "--test_after_fit=false",
        ]
    )
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 3  # 1 coarse + 2 fine


def test_energy_maps_go_to_loggers_that_take_images() -> None:
    from ds4d_pl.logging import log_images

    class WandbLike:
        def __init__(self) -> None:
            self.calls: list = []

        def log_image(self, **kwargs) -> None:
            self.calls.append(kwargs)

    class TensorBoardLike:
        def __init__(self) -> None:
            self.experiment = self
            self.tags: list = []

        def add_image(self, tag, image, step, dataformats) -> None:
            self.tags.append((tag, step, dataformats))

    images = [torch.rand(4, 6, 3).numpy() for _ in range(2)]
    wb, tb = WandbLike(), TensorBoardLike()
    log_images(wb, "diagnostics/dynamic_energy", images, 7)
    log_images(tb, "diagnostics/dynamic_energy", images, 7)
    log_images(object(), "diagnostics/dynamic_energy", images, 7)  # CSV-like: skipped
    assert wb.calls[0]["key"] == "diagnostics/dynamic_energy" and len(wb.calls[0]["images"]) == 2
    assert wb.calls[0]["caption"] == ["view 0", "view 1"] and wb.calls[0]["step"] == 7
    assert tb.tags == [
        ("diagnostics/dynamic_energy/view_0", 7, "HWC"),
        ("diagnostics/dynamic_energy/view_1", 7, "HWC"),
    ]


def test_wandb_preset_logs_the_energy_maps_as_media_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    args = [
        "fit",
        "-c",
        str(CONFIGS / "demo.yaml"),
        "-c",
        str(CONFIGS / "logger" / "wandb.yaml"),
        *tiny_synthetic(),
        *[a for a in tiny_overrides(tmp_path / "run") if not a.startswith("--trainer.logger")],
        f"--trainer.logger.init_args.save_dir={tmp_path}",
    ]
    try:
        run(args)
    finally:
        wandb.finish()
    media = list(tmp_path.glob("wandb/offline-run-*/files/media/images/diagnostics/*.png"))
    # W&B stores a list of same-sized images as sprites, so the file count is not the view count.
    assert media and all(p.name.startswith("dynamic_energy") for p in media)
    videos = {
        p.name.split("_")[0]
        for p in tmp_path.glob("wandb/offline-run-*/files/media/videos/renders/*.mp4")
    }
    assert videos >= {"turntable", "front", "back", "left", "right"}
