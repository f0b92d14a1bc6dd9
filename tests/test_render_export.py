"""``ds4d render`` and ``ds4d export`` on a finished run: videos at other settings and per-frame
Gaussian files without training again; errors are one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import CONFIGS, tiny_overrides, tiny_synthetic

from ds4d_pl.cli import main
from ds4d_pl.data.io import read_video
from ds4d_pl.export.assets import OrbitSettings
from ds4d_pl.export.ply import load_ply
from ds4d_pl.export.splat import read_splat


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("render") / "run"
    main(["fit", "-c", str(CONFIGS / "demo.yaml"), *tiny_synthetic(), *tiny_overrides(run, 3),
          "--test_after_fit=false", "--videos.enabled=false"])  # fmt: skip
    return run


def _cli(args: list[str]) -> int:
    with pytest.raises(SystemExit) as exc:
        main(args)
    return exc.value.code


def test_render_writes_the_asked_videos_at_the_asked_settings(run_dir: Path, tmp_path) -> None:
    out = tmp_path / "videos"
    code = _cli(["render", str(run_dir), "--out", str(out), "--resolution", "24",
                 "--turntable_frames", "6", "--loops", "2", "--fps", "12",
                 "--videos", "turntable,back,eval", "--elevation", "20"])  # fmt: skip
    assert code == 0
    assert sorted(p.stem for p in out.glob("*.mp4")) == ["back", *[f"eval_{k}" for k in range(4)],
                                                        "turntable"]  # fmt: skip
    back = read_video(out / "back.mp4")
    assert back.shape == (2 * 4, 24, 24, 3)  # the 4-frame clip played twice
    assert read_video(out / "turntable.mp4").shape[0] == 8  # at least the looped clip
    # The checkpoint is rendered: not a blank frame.
    assert back.std() > 0.01


def test_export_writes_ply_and_splat_for_every_frame(run_dir: Path, tmp_path) -> None:
    out = tmp_path / "export"
    assert _cli(["export", str(run_dir), "--out", str(out), "--format", "ply",
                 "--format", "splat"]) == 0  # fmt: skip
    names = sorted(p.name for p in out.iterdir())
    assert names[:2] == ["canonical.ply", "canonical.splat"] and len(names) == 2 + 2 * 4
    ply, splat = load_ply(out / "frame_0002.ply"), read_splat(out / "frame_0002.splat")
    assert splat["means"].shape == ply["means"].shape
    # Same frame, same Gaussians: positions agree (order differs: .splat sorts by size).
    assert torch.allclose(splat["means"].sum(0), ply["means"].sum(0), atol=1e-3)


@pytest.mark.parametrize("command", ["render", "export"])
def test_not_a_run_is_one_line(command: str, tmp_path: Path, capsys) -> None:
    assert _cli([command, str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    # The message, then the hint (--debug for the traceback); never a traceback.
    assert len(err) == 2 and err[0].startswith(f"ds4d {command}: error: ")
    assert "not a ds4d run directory" in err[0] and "--debug" in err[1]


def test_orbit_settings_refuse_nonsense() -> None:
    with pytest.raises(ValueError, match="loops"):
        OrbitSettings(loops=0)
    with pytest.raises(ValueError, match="radius"):
        OrbitSettings(radius=0.0)


def test_videos_and_exports_show_progress_when_asked(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from ds4d_pl.export.assets import export_frames, render_orbit_videos
    from ds4d_pl.progress import progress
    from ds4d_pl.run import load_run

    run = load_run(run_dir)
    settings = OrbitSettings(resolution=16, turntable_frames=4)
    times = run.scene.train.times
    render_orbit_videos(run.model, times, settings, ["turntable", "back"], show_progress=True)
    export_frames(run.model, times, tmp_path / "a", show_progress=True)
    err = capsys.readouterr().err
    assert "video turntable" in err and "video back" in err and "export" in err
    # Off by default, and "when stderr is a terminal" (None) is off under pytest's capture.
    render_orbit_videos(run.model, times, settings, ["back"])
    export_frames(run.model, times, tmp_path / "b", show_progress=None)
    assert list(progress(range(3), "quiet", enabled=None)) == [0, 1, 2]
    assert capsys.readouterr().err == ""
