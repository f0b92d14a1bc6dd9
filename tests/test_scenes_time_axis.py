"""``benchmarks/scenes.py``'s HexPlane time axis on the N3DV benchmark: as many samples as frames
by default, set in one place, stated as frames per sample, recorded with the results, never
mixed by ``--merge``."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "scenes.py"


@pytest.fixture
def scenes(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    spec = importlib.util.spec_from_file_location("scenes_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _parse(scenes, monkeypatch, argv: list[str]):
    """``scenes.main``'s parsing and checks, stopped before it writes or fits anything."""
    seen = {}

    def stop(root, a):
        seen["a"] = a
        raise SystemExit(0)

    monkeypatch.setattr(scenes, "write_scene", stop)
    monkeypatch.setattr(sys, "argv", ["scenes.py", *argv])
    with pytest.raises(SystemExit):
        scenes.main()
    return seen.get("a")


def test_n3dv_fits_as_many_time_samples_as_frames_unless_told(scenes, monkeypatch, tmp_path):
    keep = ["--keep_runs", str(tmp_path / "k")]
    a = _parse(scenes, monkeypatch, ["--format", "n3dv", "--frames", "12", *keep])
    assert a.time_resolution == 12
    args = scenes.scene_args(a, tmp_path / "scene")
    assert [x for x in args if "time_resolution" in x] == ["--model.field.time_resolution=12"]
    a = _parse(scenes, monkeypatch, ["--format", "n3dv", "--frames", "12", "--time_resolution=6"])
    assert "--model.field.time_resolution=6" in scenes.scene_args(a, tmp_path / "scene")
    # The D-NeRF preset keeps its own time axis: nothing is added to its fits.
    a = _parse(scenes, monkeypatch, ["--format", "dnerf"])
    assert a.time_resolution is None
    assert scenes.scene_args(a, tmp_path / "s") == [f"--data.root={tmp_path / 's'}"]


def test_frames_per_sample_counts_the_half_of_the_axis_the_clip_spans(scenes):
    """The N3DV preset puts the clip on half of the time axis (4D-GS's ``t`` in [0, 1] on a
    [-1, 1] grid): 4D-GS's 150 samples for 300 frames are one every 4 frames, not every 2."""
    assert scenes.frames_per_sample("n3dv", 300, 150) == pytest.approx(4.013, abs=1e-3)
    assert scenes.frames_per_sample("n3dv", 12, 12) == pytest.approx(2.0)
    assert scenes.frames_per_sample("n3dv", 12, 6) == pytest.approx(4.4)
    # 2 F - 1 samples put one exactly on every frame.
    assert scenes.frames_per_sample("n3dv", 12, 23) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--format", "n3dv", "--override=--model.field.time_resolution=12"],
            "with --time_resolution, not --override",
        ),
        (["--format", "dnerf", "--time_resolution", "4"], "--time_resolution is for --format n3dv"),
        (["--format", "n3dv", "--time_resolution", "1"], "at least 2 samples, got 1"),
    ],
)
def test_time_axis_settings_that_would_mislabel_results_are_refused(argv, message):
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *argv], capture_output=True, text=True, cwd=REPO
    )
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def _results(path: Path, seed: int, time_resolution: int | None) -> str:
    run = {
        "seed": seed,
        "psnr": 40.0 + seed,
        "ssim": 0.99,
        "dyn_psnr": 30.0 + seed,
        "lpips": None,
        "step_ms": 400.0,
        "wall_s": 600.0,
        "num_gaussians": 6000,
    }
    entry = {"seeds": [run], "scene": "Scene: the room.", "budget": 1.0}
    if time_resolution is not None:
        entry["time_resolution"] = time_resolution
    path.write_text(json.dumps({"baseline": entry}))
    return str(path)


def _merge(tmp_path: Path, files: list[str]) -> subprocess.CompletedProcess:
    out = tmp_path / "merged.json"
    cmd = [sys.executable, str(SCRIPT), "--format", "n3dv", "--frames", "12", "--out", str(out)]
    return subprocess.run([*cmd, "--merge", *files], capture_output=True, text=True, cwd=REPO)


def test_merge_refuses_fits_of_different_time_axes(tmp_path):
    files = [_results(tmp_path / "a.json", 0, 12), _results(tmp_path / "b.json", 1, 6)]
    proc = _merge(tmp_path, files)
    assert proc.returncode != 0
    assert "different time samples" in proc.stderr and "b.json: 6" in proc.stderr


def test_merged_table_states_its_time_axis_or_that_a_file_lacks_it(tmp_path):
    files = [_results(tmp_path / "a.json", 0, 12), _results(tmp_path / "b.json", 1, 12)]
    assert _merge(tmp_path, files).returncode == 0
    merged = json.loads((tmp_path / "merged.json").read_text())
    assert merged["baseline"]["time_resolution"] == 12
    assert merged["baseline"]["n_seeds"] == 2
    assert (
        "HexPlane time samples: 12 (over the 12-frame clip one every 2.0 frames"
        in (tmp_path / "merged.md").read_text()
    )
    # A file from before the setting was recorded: merged, and the header says it is unknown.
    files[1] = _results(tmp_path / "old.json", 1, None)
    assert _merge(tmp_path, files).returncode == 0
    assert "time_resolution" not in json.loads((tmp_path / "merged.json").read_text())["baseline"]
    assert "not recorded in every merged file" in (tmp_path / "merged.md").read_text()
