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
    assert scenes.frames_per_sample(300, 150, True) == pytest.approx(4.013, abs=1e-3)
    assert scenes.frames_per_sample(12, 12, True) == pytest.approx(2.0)
    assert scenes.frames_per_sample(12, 6, True) == pytest.approx(4.4)
    # 2 F - 1 samples put one exactly on every frame; so do F on the whole axis.
    assert scenes.frames_per_sample(12, 23, True) == pytest.approx(1.0)
    assert scenes.frames_per_sample(12, 12, False) == pytest.approx(1.0)


def test_an_override_of_the_half_axis_is_what_the_header_and_results_state(
    scenes, monkeypatch, tmp_path
):
    keep = ["--keep_runs", str(tmp_path / "k"), "--format", "n3dv", "--frames", "12"]
    a = _parse(scenes, monkeypatch, keep)
    assert a.half_time_range is True  # the preset's
    assert "one every 2.0 frames" in scenes.time_text(a)
    assert scenes.time_record(a) == {"time_resolution": 12, "frames": 12, "half_time_range": True}
    over = ["--override=--model.field.half_time_range=true"]
    over.append("--override=--model.field.half_time_range=false")  # the last one is applied
    a = _parse(scenes, monkeypatch, [*keep, *over])
    assert a.half_time_range is False
    assert "one every 1.0 frames" in scenes.time_text(a)
    assert scenes.time_record(a)["half_time_range"] is False


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--format", "n3dv", "--override=--model.field.time_resolution=12"],
            "with --time_resolution, not --override",
        ),
        (["--format", "dnerf", "--time_resolution", "4"], "--time_resolution is for --format n3dv"),
        (["--format", "n3dv", "--time_resolution", "1"], "at least 2 samples, got 1"),
        (
            ["--format", "n3dv", "--override=--model.field.half_time_range=sometimes"],
            "takes true or false, got 'sometimes'",
        ),
        (
            ["--format", "n3dv", "--override=--model.field.half_time_range", "--override=true"],
            "as one --override",
        ),
    ],
)
def test_time_axis_settings_that_would_mislabel_results_are_refused(argv, message):
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *argv], capture_output=True, text=True, cwd=REPO
    )
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def _results(
    path: Path,
    seed: int,
    time_resolution: int | None,
    half: bool | None = None,
    scene: str = "Scene: the room.",
) -> str:
    """A results file of one baseline seed; ``half`` set: it records the clip's frames (12)
    and time axis as results do today, unset: as they did before."""
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
    entry = {"seeds": [run], "scene": scene, "budget": 1.0}
    if time_resolution is not None:
        entry["time_resolution"] = time_resolution
    if half is not None:
        entry.update(frames=12, half_time_range=half)
    path.write_text(json.dumps({"baseline": entry}))
    return str(path)


def _merge(
    tmp_path: Path, files: list[str], frames: str = "12", extra: tuple[str, ...] = ()
) -> subprocess.CompletedProcess:
    out = tmp_path / "merged.json"
    cmd = [sys.executable, str(SCRIPT), "--format", "n3dv", "--frames", frames, "--out", str(out)]
    cmd += extra
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


def test_merged_table_takes_the_clip_and_its_axis_from_the_files_not_the_command_line(tmp_path):
    files = [
        _results(tmp_path / "a.json", 0, 12, half=True),
        _results(tmp_path / "b.json", 1, 12, half=True),
    ]
    assert _merge(tmp_path, files, frames="20").returncode == 0
    md = (tmp_path / "merged.md").read_text()
    assert "over the 12-frame clip one every 2.0 frames" in md
    merged = json.loads((tmp_path / "merged.json").read_text())["baseline"]
    assert (merged["frames"], merged["half_time_range"]) == (12, True)
    # Files from before the frames were recorded: the count in their scene line.
    scene = "Scene: `ds4d synth --format n3dv` (12 cameras, 12 frames at 128x96; cam00 held out)."
    files = [_results(tmp_path / f"o{s}.json", s, 12, scene=scene) for s in (0, 1)]
    assert _merge(tmp_path, files, frames="20").returncode == 0
    assert "over the 12-frame clip one every 2.0 frames" in (tmp_path / "merged.md").read_text()


def test_merge_refuses_fits_on_different_halves_of_the_time_axis(tmp_path):
    files = [
        _results(tmp_path / "a.json", 0, 12, half=True),
        _results(tmp_path / "b.json", 1, 12, half=False),
    ]
    proc = _merge(tmp_path, files)
    assert proc.returncode != 0
    assert "different half_time_range" in proc.stderr and "b.json: False" in proc.stderr


def test_merge_states_the_time_axis_of_unrecorded_files_only_where_told_and_consistent(tmp_path):
    files = [_results(tmp_path / "a.json", 0, 6), _results(tmp_path / "old.json", 1, None)]
    assert _merge(tmp_path, files, extra=("--time_resolution", "6")).returncode == 0
    merged = json.loads((tmp_path / "merged.json").read_text())["baseline"]
    assert merged["time_resolution"] == 6
    assert merged["time_resolution_stated_for"] == [files[1]]
    md = (tmp_path / "merged.md").read_text()
    assert "HexPlane time samples: 6 (over the 12-frame clip one every 4.4 frames" in md
    assert "`--time_resolution` of the merge for the files that do not record it" in md
    # A statement that contradicts a file's record is refused, naming both.
    proc = _merge(tmp_path, files, extra=("--time_resolution", "12"))
    assert proc.returncode != 0
    assert "different time samples" in proc.stderr
    assert "--time_resolution: 12" in proc.stderr and "a.json: 6" in proc.stderr
    # Every file recorded: the header says nothing was stated.
    files[1] = _results(tmp_path / "b.json", 1, 6)
    assert _merge(tmp_path, files, extra=("--time_resolution", "6")).returncode == 0
    assert (
        "time_resolution_stated_for"
        not in json.loads((tmp_path / "merged.json").read_text())["baseline"]
    )
    assert "of the merge" not in (tmp_path / "merged.md").read_text()
