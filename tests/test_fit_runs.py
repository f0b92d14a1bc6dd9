"""Resuming a benchmark sweep (``benchmarks/fit_runs.py``): reuse, redo, refuse."""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("fit_runs", REPO / "benchmarks" / "fit_runs.py")
fit_runs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fit_runs)

ARGS = ["-c", str(REPO / "configs" / "base.yaml"), "--model.seed=0"]


@pytest.fixture
def fake_fit(monkeypatch):
    """``subprocess.run`` replaced by a fit that writes a run's files; returns the commands run."""
    calls: list[list[str]] = []

    def run(cmd, **kwargs):
        calls.append(cmd)
        run_dir = Path(
            next(c for c in cmd if c.startswith("--trainer.default_root_dir=")).split("=", 1)[1]
        )
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text("model:\n  schedule:\n    coarse_steps: 10\n")
        psnr = 20.0 + len(calls)  # each fit scores differently, so a reuse is visible
        (run_dir / "metrics.json").write_text(json.dumps({"psnr": psnr, "num_gaussians": 7}))
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(fit_runs.subprocess, "run", run)
    return calls


def test_portable_args_name_no_checkout():
    assert fit_runs.portable(ARGS)[1] == "<checkout>/configs/base.yaml"
    assert fit_runs.portable(ARGS)[2] == "--model.seed=0"


def test_resume_reuses_a_finished_fit_of_the_same_arguments(tmp_path, fake_fit):
    first = fit_runs.run_fit(ARGS, tmp_path / "run", 1, "r", ("psnr",), resume=True)
    again = fit_runs.run_fit(ARGS, tmp_path / "run", 1, "r", ("psnr",), resume=True)
    assert len(fake_fit) == 1
    assert again == first and first["psnr"] == 21.0 and first["num_gaussians"] == 7
    record = json.loads((tmp_path / "run" / fit_runs.RECORD).read_text())
    assert record["args"] == fit_runs.portable(ARGS)


def test_without_resume_every_call_fits(tmp_path, fake_fit):
    fit_runs.run_fit(ARGS, tmp_path / "run", 1, "r", ("psnr",))
    second = fit_runs.run_fit(ARGS, tmp_path / "run2", 1, "r", ("psnr",))
    assert len(fake_fit) == 2 and second["psnr"] == 22.0
    assert all("--overwrite" not in cmd for cmd in fake_fit)


def test_resume_redoes_an_interrupted_fit_with_overwrite(tmp_path, fake_fit):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("partial\n")  # killed before metrics.json
    result = fit_runs.run_fit(ARGS, run_dir, 1, "r", ("psnr",), resume=True)
    assert len(fake_fit) == 1 and "--overwrite" in fake_fit[0]
    assert result["psnr"] == 21.0


def test_resume_refuses_a_finished_run_of_other_arguments(tmp_path, fake_fit):
    fit_runs.run_fit(ARGS, tmp_path / "run", 1, "r", ("psnr",), resume=True)
    other = [*ARGS[:2], "--model.seed=1"]
    with pytest.raises(fit_runs.SweepMismatchError, match=r"other fit arguments.*--model.seed="):
        fit_runs.run_fit(other, tmp_path / "run", 1, "r", ("psnr",), resume=True)
    assert len(fake_fit) == 1  # the finished run was neither reused nor destroyed
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["psnr"] == 21.0


def test_resume_refuses_a_finished_run_without_a_record(tmp_path, fake_fit):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("x\n")
    (run_dir / "metrics.json").write_text("{}")
    with pytest.raises(fit_runs.SweepMismatchError, match=f"{fit_runs.RECORD}"):
        fit_runs.run_fit(ARGS, run_dir, 1, "r", ("psnr",), resume=True)
    assert fake_fit == []


def test_resume_continues_an_interrupted_fit_from_its_checkpoint(tmp_path, fake_fit):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "config.yaml").write_text("partial\n")
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"x")  # --checkpoint_every wrote it
    result = fit_runs.run_fit(ARGS, run_dir, 1, "r", ("psnr",), resume=True)
    assert "--ckpt_path=last" in fake_fit[0] and "--overwrite" not in fake_fit[0]
    assert result["continued"] is True
    again = fit_runs.run_fit(ARGS, run_dir, 1, "r", ("psnr",), resume=True)
    assert len(fake_fit) == 1 and again == result


def _sweep_parser():
    p = argparse.ArgumentParser()
    fit_runs.add_sweep_arguments(p)
    return p


def test_sweep_arguments_add_periodic_checkpoints_only_when_asked():
    p = _sweep_parser()
    assert fit_runs.sweep_fit_args(p.parse_args([])) == []
    a = p.parse_args(["--keep_runs", "k", "--resume", "--checkpoint_every", "500"])
    fit_runs.check_sweep_arguments(p, a)
    assert fit_runs.sweep_fit_args(a) == ["--checkpoint.every_n_train_steps=500"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["--resume"], "--resume needs --keep_runs"), (["--checkpoint_every", "0"], "positive")],
)
def test_sweep_arguments_refuse_what_cannot_work(argv, message, capsys):
    p = _sweep_parser()
    with pytest.raises(SystemExit):
        fit_runs.check_sweep_arguments(p, p.parse_args(argv))
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("script", ["ablation.py", "scenes.py", "mesh_start.py", "framing.py"])
def test_every_sweep_of_ablation_fits_takes_the_sweep_options(script):
    """The sweeps that build ``ablation.fit_args`` / ``scenes.py`` fits all parse (and check) the
    sweep options, so a lost session's runs of any of them can be resumed."""
    proc = subprocess.run(
        [fit_runs.sys.executable, str(REPO / "benchmarks" / script), "--resume"],
        capture_output=True,
        text=True,
        env=fit_runs.checkout_env(),
    )
    assert proc.returncode == 2
    assert "--resume needs --keep_runs" in proc.stderr


def test_a_kept_scene_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    """scenes.py writes its scene beside the kept folder and renames it into place, so a scene
    found by --resume is complete; a partial write of an interrupted session is replaced."""
    import sys
    from types import SimpleNamespace

    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    monkeypatch.setitem(sys.modules, "fit_runs", fit_runs)
    spec = importlib.util.spec_from_file_location("scenes", REPO / "benchmarks" / "scenes.py")
    scenes = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(scenes)
    written = []

    def synth(cmd, **kwargs):
        out = Path(cmd[cmd.index("--out") + 1])
        assert not out.exists(), "the stale partial write was not removed"
        out.mkdir()
        (out / "transforms_train.json").write_text("{}")
        written.append(out)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(scenes.subprocess, "run", synth)
    root = tmp_path / "scene"
    (tmp_path / "scene.partial").mkdir()  # left by a session killed mid-write
    a = SimpleNamespace(format="dnerf", motion="mostly_static", frames=4, resolution=32)
    scenes.write_scene(root, a)
    assert written == [tmp_path / "scene.partial"]
    assert (root / "transforms_train.json").is_file() and not written[0].exists()
