"""Bad inputs and faults: every one ends in one clear line (or a warning), never a traceback,
a silent acceptance or a run directory that lies.

Spec (README "Reliability" counts the cases of this module):
  * ``CASES``: an input a user can get wrong makes ``ds4d`` print ``ds4d CMD: error: ...`` naming
    the file, key or value, plus one hint line, and exit with status 2; no traceback;
  * ``WARNINGS``: data that loads but is probably not what was meant warns (``DataWarning``);
  * the run directory keeps one checkpoint of record (``last.ckpt``) through two fits, a smoke
    run, an overwrite and a resume in a copy, and a lock stops two fits sharing it;
  * a checkpoint fixes its model (differing keys are named), evaluation keys given win;
  * a diverged fit never saves (nor exports, nor scores) its state;
  * files are written with the user's umask; temp files of a killed write go at the next start;
  * presets interpolate (``${model.schedule...}``) after every override;
  * ``config.yaml`` and the W&B config hold every value; images reach W&B as colour, not black.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import CONFIGS, tiny_overrides, tiny_synthetic

from ds4d_pl.cli import main
from ds4d_pl.data.io import read_rgba
from ds4d_pl.data.parsers.synthetic import SyntheticConfig, write_synthetic
from ds4d_pl.data.parsers.synthetic_scenes import write_dnerf
from ds4d_pl.errors import DataWarning

BASE = str(CONFIGS / "base.yaml")


def tiny(run_dir: Path, steps: int = 2) -> list[str]:
    """The cheapest fit that still runs both stages: no encoder, no videos, no exports, no
    test after fit, 300 Gaussians on 4 frames of 32 pixels."""
    return [
        *tiny_overrides(run_dir, steps),
        *tiny_synthetic(),
        "--model.renderer=torch",
        "--model.ablation.frame_features=false",
        "--model.ablation.dsfd=false",
        "--model.ablation.tssf=off",
        "--data.synthetic.num_init_points=300",
        "--videos.enabled=false",
        "--export.enabled=false",
        "--test_after_fit=false",
    ]


def fit(run_dir: Path, *extra: str, steps: int = 2) -> None:
    main(["fit", "-c", BASE, *tiny(run_dir, steps), *extra])


def error_line(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    """Run ``ds4d ARGV`` expecting a one-line error; return that line."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2, err
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ": error: " in ln]
    assert len(lines) == 1, err
    at = err.splitlines().index(lines[0])
    hint = err.splitlines()[at + 1]
    assert hint.startswith("(") and "--" in hint, err  # the second line points at --help/--debug
    return lines[0]


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 2-step HexPlane run (read-only: cases copy it before writing)."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    fit(run_dir)
    return run_dir


def copy_run(finished: Path, tmp: Path) -> Path:
    return Path(shutil.copytree(finished, tmp / "run"))


# ------------------------------------------------------------------------------- the cases
@dataclass
class Case:
    """A bad input: ``make(tmp, finished)`` returns ``ds4d`` arguments; the error line must
    hold every fragment."""

    name: str
    make: Callable[[Path, Path], list[str]]
    fragments: tuple[str, ...]


def _file(tmp: Path, name: str, text: str) -> str:
    path = tmp / name
    path.write_text(text)
    return str(path)


def _fit(*extra: str) -> Callable[[Path, Path], list[str]]:
    return lambda tmp, fin: ["fit", "-c", BASE, *tiny(tmp / "run"), *extra]


def _with_file(name: str, text: str, *extra: str) -> Callable[[Path, Path], list[str]]:
    def make(tmp: Path, fin: Path) -> list[str]:
        return ["fit", "-c", BASE, "-c", _file(tmp, name, text), *tiny(tmp / "run"), *extra]

    return make


def _c4d(tmp: Path, frames: int = 4) -> Path:
    root = tmp / "c4d"
    write_synthetic(
        SyntheticConfig(num_frames=frames, resolution=32, eval_resolution=32, name="toy"), root
    )
    return root


def _c4d_args(root: Path, tmp: Path, *extra: str) -> list[str]:
    c4d = str(CONFIGS / "data" / "consistent4d.yaml")
    data = [f"--data.root={root}", "--data.object_name=toy", "--data.consistent4d.resolution=32"]
    args = [a for a in tiny(tmp / "run") if not a.startswith("--data.synthetic")]
    return ["fit", "-c", BASE, "-c", c4d, *args, *data, *extra]


def _misnamed_frames(tmp: Path, fin: Path) -> list[str]:
    root = _c4d(tmp)
    shutil.copy(root / "toy" / "3.png", root / "toy" / "4.PNG")
    shutil.copy(root / "toy" / "3.png", root / "toy" / "5.jpg")
    return _c4d_args(root, tmp)


def _dnerf(tmp: Path, edit: Callable[[dict], None]) -> list[str]:
    root = write_dnerf(SyntheticConfig(), tmp / "dnerf", num_train=4, num_val=1, num_test=2,
                       resolution=16)  # fmt: skip
    path = root / "transforms_train.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    args = [a for a in tiny(tmp / "run") if not a.startswith("--data.synthetic")]
    return ["fit", "-c", BASE, "--data.dataset=dnerf", f"--data.root={root}", *args]


def _singular(data: dict) -> None:
    data["frames"][2]["transform_matrix"] = [[1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 1, 2], [0, 0, 0, 1]]


def _escaping(data: dict) -> None:
    data["frames"][1]["file_path"] = "../../outside/r_001"


def _resume(*extra: str) -> Callable[[Path, Path], list[str]]:
    def make(tmp: Path, fin: Path) -> list[str]:
        run_dir = copy_run(fin, tmp)
        return ["fit", "-c", BASE, *tiny(run_dir), "--ckpt_path=last", *extra]

    return make


def _run_dir(setup: Callable[[Path], None], *extra: str) -> Callable[[Path, Path], list[str]]:
    def make(tmp: Path, fin: Path) -> list[str]:
        run_dir = copy_run(fin, tmp)
        setup(run_dir)
        return ["fit", "-c", BASE, *tiny(run_dir, 4), *extra]

    return make


def _lock_by_parent(run_dir: Path) -> None:
    import socket

    owner = {"pid": os.getppid(), "host": socket.gethostname(), "command": "ds4d fit"}
    (run_dir / ".ds4d.lock").write_text(json.dumps(owner))


def _only_step_checkpoints(run_dir: Path) -> None:
    (run_dir / "checkpoints" / "last.ckpt").unlink()


def _finished_copy(
    setup: Callable[[Path], None], command: str, *extra: str
) -> Callable[[Path, Path], list[str]]:
    """``ds4d COMMAND`` on a copy of the finished run, after ``setup`` damaged it."""

    def make(tmp: Path, fin: Path) -> list[str]:
        run_dir = copy_run(fin, tmp)
        setup(run_dir)
        return [command, str(run_dir), *extra]

    return make


def _test_on(*extra: str) -> Callable[[Path, Path], list[str]]:
    def make(tmp: Path, fin: Path) -> list[str]:
        args = [a for a in tiny(fin) if not a.startswith(("--checkpoint", "--test_after"))]
        return ["test", "-c", BASE, *args, *extra]

    return make


def _prepare(*extra: str) -> Callable[[Path, Path], list[str]]:
    def make(tmp: Path, fin: Path) -> list[str]:
        clip = _c4d(tmp) / "toy"
        return ["prepare", "--input", str(clip), "--out", str(tmp / "out"), "--size", "32", *extra]

    return make


def _eval_out_file(tmp: Path, fin: Path) -> list[str]:
    return ["eval", "--pred", str(tmp), "--gt", str(tmp), "--out", _file(tmp, "report", "x")]


HASHGRID = str(CONFIGS / "model" / "hashgrid.yaml")

CASES = [
    # Config files and keys (issue 16 item 5, issue 19 item 3).
    Case("yaml_syntax", _with_file("bad.yaml", "model:\n  schedule: [1\n"), ("bad.yaml", "line")),
    Case("yaml_empty", _with_file("empty.yaml", ""), ("empty.yaml", "is empty")),
    Case("yaml_list", _with_file("list.yaml", "- a\n- b\n"), ("list.yaml", "not hold a list")),
    Case("config_missing", lambda t, f: ["fit", "-c", str(t / "no.yaml")], ("no.yaml", "no such")),
    Case(
        "unknown_key",
        _fit("--model.schedule.coarse_stepz=3"),
        ("'model.schedule.coarse_stepz'", "did you mean 'model.schedule.coarse_steps'"),
    ),
    Case(
        "unknown_group_in_file",
        _with_file("typo.yaml", "model:\n  lossweights:\n    rgb: 1\n"),
        ("'model.lossweights'", "did you mean 'model.loss'"),
    ),
    Case("wrong_type", _fit("--model.schedule.fine_steps=many"), ("model.schedule.fine_steps",)),
    Case("bad_choice", _fit("--model.ablation.tssf=foo"), ("model.ablation.tssf", "one of")),
    Case(
        "interpolation_of_wrong_type",
        _with_file("i.yaml", "model:\n  schedule:\n    fine_steps: ${model.renderer}\n"),
        ("model.schedule.fine_steps",),
    ),
    Case("lr_zero", _fit("--model.optim.means_lr=0"), ("'means' group's lr", "> 0")),
    Case("lr_negative", _fit("--model.optim.field_lr=-1e-3"), ("'field' group's lr",)),
    Case("optimizer_flag", _fit("--optimizer=SGD"), ("--optimizer: not offered", "model.optim")),
    Case("lr_scheduler_flag", _fit("--lr_scheduler=StepLR"), ("--lr_scheduler: not offered",)),
    Case("synthetic_with_root", _fit("--data.root=/data/c4d"), ("data.root", "'synthetic'")),
    Case("zero_steps", _fit("--trainer.max_steps=0"), ("max_steps=0", "nothing would be trained")),
    Case(
        "zero_schedule",
        _fit(
            "--trainer.max_steps=-1",
            "--model.schedule.coarse_steps=0",
            "--model.schedule.fine_steps=0",
        ),  # fmt: skip
        ("nothing would be trained",),
    ),
    Case(
        "synthetic_too_costly",
        _fit("--data.synthetic.resolution=8192"),
        ("data.synthetic would take about", "ds4d synth --force"),
    ),
    Case("checkpoint_dirpath", _fit("--checkpoint.dirpath=/tmp/x"), ("checkpoint.dirpath",)),
    Case("no_last_checkpoint", _fit("--checkpoint.save_last=false"), ("checkpoint.save_last",)),
    Case("init_path_missing", _fit("--model.init.path=/no/cloud.ply"), ("model.init.path",)),
    # Data (issue 16 items 5, 6).
    Case(
        "data_root_missing",
        lambda t, f: _c4d_args(t / "nowhere", t),
        ("nowhere: data root does not exist",),
    ),
    Case("misnamed_frames", _misnamed_frames, ("4.PNG, 5.jpg look like frames",)),
    Case(
        "holdout_every_one",
        _fit("--data.holdout_every=1"),
        ("data.holdout_every must be 0 (off) or >= 2, got 1",),
    ),
    Case(
        "holdout_in_a_short_clip",
        _fit("--data.holdout_every=4"),
        ("data.holdout_every=4", "too few to hold one out"),
    ),
    Case(
        "dnerf_singular_camera",
        lambda t, f: _dnerf(t, _singular),
        ("transforms_train.json: frames[2]", "singular"),
    ),
    Case(
        "dnerf_path_escapes_root",
        lambda t, f: _dnerf(t, _escaping),
        ("frames[1]", "outside the dataset folder"),
    ),
    # Checkpoints (issue 16 items 1, 2, 4, 6).
    Case(
        "test_without_checkpoint",
        lambda t, f: ["test", "-c", BASE, f"--trainer.default_root_dir={t}"],
        ("no checkpoint to evaluate",),
    ),  # fmt: skip
    Case(
        "ckpt_file_missing", _fit(f"--ckpt_path={os.sep}no{os.sep}x.ckpt"), ("no such checkpoint",)
    ),
    Case(
        "ckpt_not_a_checkpoint",
        lambda t, f: [
            "fit",
            "-c",
            BASE,
            *tiny(t / "run"),
            f"--ckpt_path={_file(t, 'x.ckpt', 'x')}",
        ],
        ("x.ckpt: not a readable checkpoint",),
    ),
    Case(
        "shape_mismatch_ckpt_file",
        lambda t, f: [
            "fit",
            "-c",
            BASE,
            "-c",
            HASHGRID,
            *tiny(t / "run", 4),
            f"--ckpt_path={f / 'checkpoints' / 'last.ckpt'}",
        ],  # fmt: skip
        ("model.field.encoding: given 'hashgrid', checkpoint 'hexplane'",),
    ),
    Case(
        "shape_mismatch_ckpt_last",
        _resume("-c", HASHGRID, "--trainer.max_steps=4"),
        ("model.field.encoding: given 'hashgrid'",),
    ),
    Case(
        "shape_mismatch_test",
        _test_on("--model.field.plane_resolution=16"),
        ("model.field.plane_resolution: given 16, checkpoint 32",),
    ),
    Case(
        "resume_onto_other_data",
        _resume("--trainer.max_steps=4", "--data.synthetic.motion=dynamic_only"),
        ("trained on other data", "synthetic_mostly_static", "synthetic_dynamic_only"),
    ),
    Case("nothing_left_to_train", _resume(), ("is at step 2", "nothing left to train")),
    Case(
        "run_dir_holds_a_run",
        _run_dir(lambda d: None),
        ("already holds a run", "--ckpt_path last", "--overwrite"),
    ),
    Case("run_dir_locked", _run_dir(_lock_by_parent, "--overwrite"), ("is in use by ds4d fit",)),
    Case(
        "overwrite_the_resumed_checkpoint",
        _resume("--overwrite", "--trainer.max_steps=4"),
        ("--overwrite would delete",),
    ),
    Case(
        "last_missing_but_step_checkpoints",
        _run_dir(_only_step_checkpoints, "--ckpt_path=last"),
        ("last.ckpt is missing", "step000002.ckpt"),
    ),
    # Divergence that stays finite (issue 16 item 3).
    Case(
        "runaway_gaussian_centres",
        _fit("--model.optim.means_lr=1e30", "--model.optim.means_lr_final=1e30"),
        ("training diverged at step", "Gaussian centres reach", "Nothing was saved"),
    ),
    # Weights: part of the same family, one line.
    Case(
        "missing_sds_weights",
        _fit("-c", str(CONFIGS / "model" / "zero123_sds.yaml"), "--model.sds.path=/no/zero123"),
        ("/no/zero123",),
    ),
    # The light commands (issue 16 item 5).
    Case("prepare_max_frames_zero", _prepare("--max_frames", "0"), ("--max_frames must be >= 1",)),
    Case("prepare_max_frames_negative", _prepare("--max_frames=-1"), ("got -1",)),
    Case(
        "prepare_missing_input",
        lambda t, f: ["prepare", "--input", str(t / "nothere.mp4"), "--out", str(t / "o")],
        ("nothere.mp4",),
    ),
    Case("eval_out_is_a_file", _eval_out_file, ("--out", "is a file")),
    Case(
        "synth_too_costly",
        lambda t, f: ["synth", "--out", str(t), "--resolution", "8192", "--num_frames", "64"],
        ("would take about", "--force"),
    ),
    Case(
        "synth_zero_motion_cycles",
        lambda t, f: ["synth", "--out", str(t), "--motion_cycles=0"],
        ("--motion_cycles must be a positive finite number",),
    ),  # fmt: skip
    Case(
        "synth_infinite_motion_cycles",
        lambda t, f: ["synth", "--out", str(t), "--motion_cycles=inf"],
        ("--motion_cycles must be a positive finite number", "inf"),
    ),  # fmt: skip
    Case(
        "synth_zero_frames",
        lambda t, f: ["synth", "--out", str(t), "--num_frames=0"],
        ("--num_frames must be >= 1",),
    ),  # fmt: skip
    # The commands of a finished run: render, export, view; and the weights listing.
    Case(
        "render_missing_run",
        lambda t, f: ["render", str(t / "nowhere")],
        ("nowhere: no such file or directory",),
    ),
    Case(
        "export_run_without_checkpoint",
        _finished_copy(_only_step_checkpoints, "export"),
        ("without checkpoints/last.ckpt", "--ckpt"),
    ),
    Case(
        "render_not_a_checkpoint",
        lambda t, f: ["render", str(f), "--ckpt", _file(t, "x.ckpt", "x")],
        ("x.ckpt: not a readable checkpoint",),
    ),
    Case(
        "render_zero_resolution",
        lambda t, f: ["render", str(f), "--resolution", "0"],
        ("--resolution must be >= 1, got 0",),
    ),
    Case(
        "render_unknown_video",
        lambda t, f: ["render", str(f), "--videos", "turntable,top"],
        ("--videos: top", "choose from"),
    ),
    Case(
        "render_negative_radius",
        lambda t, f: ["render", str(f), "--radius=-1"],
        ("--radius must be > 0",),
    ),
    Case(
        "export_out_is_a_file",
        lambda t, f: ["export", str(f), "--out", _file(t, "exported", "x")],
        ("--out", "is a file"),
    ),
    Case(
        "export_unknown_format",
        lambda t, f: ["export", str(f), "--format", "obj"],
        ("--format", "'obj'"),
    ),
    Case(
        "view_time_outside_the_clip",
        lambda t, f: ["view", str(f), "--port", "0", "--time", "1.5"],
        ("--time must lie in [0, 1], got 1.5",),
    ),
    Case(
        "view_not_a_run",
        lambda t, f: ["view", str(t), "--port", "0"],
        ("is not a ds4d run directory",),
    ),
    Case(
        "view_port_out_of_range",
        lambda t, f: ["view", str(f), "--port", "70000"],
        ("--port must be in 0..65535",),
    ),
    Case(
        "weights_unknown_network",
        lambda t, f: ["weights", "--check", "i3dd"],
        ("--check: unknown network 'i3dd'",),
    ),
    Case(
        "weights_pair_without_path",
        lambda t, f: ["weights", "--weights", "i3d"],
        ("--weights expects NAME=PATH",),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_one_line_error(
    case: Case, tmp_path: Path, finished: Path, capsys: pytest.CaptureFixture
) -> None:
    line = error_line(case.make(tmp_path, finished), capsys)
    assert line.startswith("ds4d "), line
    for fragment in case.fragments:
        assert fragment in line, (fragment, line)


def test_disk_full_names_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """torch.save's 'inline_container.cc ... file write failed' on a full disk is one line
    naming the run directory's folder."""
    import ds4d_pl.commands.train as train
    from ds4d_pl import errors

    def full(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:595] . PytorchStreamWriter failed")

    monkeypatch.setattr(train.torch, "save", full)
    monkeypatch.setattr(errors.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(1, 1, 0))
    line = error_line(["fit", "-c", BASE, *tiny(tmp_path / "run")], capsys)
    assert f"no space left on {tmp_path / 'run' / 'checkpoints'}" in line


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    from ds4d_pl.errors import ConfigError
    from ds4d_pl.run import RunLoadError

    with pytest.raises(ConfigError, match="nothing would be trained"):
        main(["fit", "-c", BASE, *tiny(tmp_path / "run"), "--trainer.max_steps=0", "--debug"])
    with pytest.raises(RunLoadError, match="no such file or directory"):
        main(["render", str(tmp_path / "nowhere"), "--debug"])


# ---------------------------------------------------------------------------- the warnings
def _one_frame(tmp: Path) -> None:
    fit(tmp / "run", "--data.synthetic.num_frames=1")


def _more_frames_than_data(tmp: Path) -> None:
    main(_c4d_args(_c4d(tmp), tmp, "--data.consistent4d.max_frames=10"))


WARNINGS = [
    ("one_frame_clip", _one_frame, "has a single frame"),
    ("max_frames_beyond_the_data", _more_frames_than_data, "max_frames=10 but scene 'toy' has"),
]


@pytest.mark.parametrize(("name", "run", "message"), WARNINGS, ids=[w[0] for w in WARNINGS])
def test_suspicious_data_warns(name: str, run: Callable, message: str, tmp_path: Path) -> None:
    with pytest.warns(DataWarning, match=message):
        run(tmp_path)


# ----------------------------------------------------------------- the run directory's rules
def _last(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)


def _record(run_dir: Path) -> dict:
    return json.loads((run_dir / "run_info.json").read_text())["checkpoint"]


def test_two_fits_into_one_directory_the_second_is_refused_the_first_intact(
    finished: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run_dir = copy_run(finished, tmp_path)
    before = {p.name: p.read_bytes() for p in (run_dir / "checkpoints").iterdir()}
    config = (run_dir / "config.yaml").read_text()
    error_line(["fit", "-c", BASE, *tiny(run_dir, 3)], capsys)
    assert {p.name: p.read_bytes() for p in (run_dir / "checkpoints").iterdir()} == before
    assert (run_dir / "config.yaml").read_text() == config
    assert not (run_dir / ".ds4d.lock").exists()


def test_smoke_run_writes_nothing_into_a_finished_run(
    finished: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run_dir = copy_run(finished, tmp_path)
    before = {p.relative_to(run_dir): p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    fit(run_dir, "--trainer.fast_dev_run=true")
    after = {p.relative_to(run_dir): p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    assert after == before
    assert "smoke run" in capsys.readouterr().err


def test_overwrite_replaces_a_finished_run_with_one_consistent_record(
    finished: Path, tmp_path: Path
) -> None:
    run_dir = copy_run(finished, tmp_path)
    (run_dir / "notes.txt").write_text("mine")
    fit(run_dir, "--overwrite", "--model.init.num=200", steps=3)
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [
        "last.ckpt",
        "step000003.ckpt",
    ]
    assert _last(run_dir)["global_step"] == 3 == _record(run_dir)["global_step"]
    assert _record(run_dir)["path"] == "checkpoints/last.ckpt"
    assert "num: 200" in (run_dir / "config.yaml").read_text()
    assert (run_dir / "notes.txt").read_text() == "mine"  # only the package's own files go


def test_resume_in_a_copied_directory_writes_its_own_last_ckpt(
    finished: Path, tmp_path: Path
) -> None:
    run_dir = copy_run(finished, tmp_path)
    original = (finished / "checkpoints" / "last.ckpt").read_bytes()
    fit(run_dir, "--ckpt_path=last", steps=4)
    names = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert "last.ckpt" in names and not [n for n in names if n.startswith("last-")]
    assert _last(run_dir)["global_step"] == 4 == _record(run_dir)["global_step"]
    assert (finished / "checkpoints" / "last.ckpt").read_bytes() == original


def test_a_stale_lock_is_taken_over(
    finished: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import socket
    import subprocess

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run_dir = copy_run(finished, tmp_path)
    owner = {"pid": dead.pid, "host": socket.gethostname(), "command": "ds4d fit"}
    (run_dir / ".ds4d.lock").write_text(json.dumps(owner))
    fit(run_dir, "--ckpt_path=last", steps=3)
    assert f"taking over the stale lock of pid {dead.pid}" in capsys.readouterr().err
    assert _last(run_dir)["global_step"] == 3 and not (run_dir / ".ds4d.lock").exists()


def test_ckpt_path_last_without_a_checkpoint_says_it_starts_from_scratch(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    fit(tmp_path / "run", "--ckpt_path=last")
    assert "--ckpt_path last: no checkpoint" in capsys.readouterr().err
    assert _last(tmp_path / "run")["global_step"] == 2


# ------------------------------------------------------------- what the checkpoint decides
def test_evaluation_keys_given_win_over_the_checkpoint(
    finished: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run_dir = copy_run(finished, tmp_path)
    args = [a for a in tiny(run_dir) if not a.startswith(("--checkpoint", "--test_after"))]
    main(["test", "-c", BASE, *args, "--model.benchmark.resolution=48"])
    assert json.loads((run_dir / "metrics.json").read_text())["resolution"] == [48, 48]
    assert "model.benchmark.resolution=48" in capsys.readouterr().err


def test_a_resume_takes_the_training_keys_given(finished: Path, tmp_path: Path) -> None:
    run_dir = copy_run(finished, tmp_path)
    fit(run_dir, "--ckpt_path=last", "--model.optim.quats_lr=0.0123", steps=3)
    assert _last(run_dir)["hyper_parameters"]["optim"]["quats_lr"] == 0.0123


# ------------------------------------------------------------------------------- divergence
def test_a_diverging_resume_keeps_the_last_good_checkpoint(
    finished: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run_dir = copy_run(finished, tmp_path)
    before = (run_dir / "checkpoints" / "last.ckpt").read_bytes()
    huge = ["--model.optim.scales_lr=1e30", "--model.optim.opacities_lr=1e30"]
    line = error_line(["fit", "-c", BASE, *tiny(run_dir, 4), "--ckpt_path=last", *huge], capsys)
    assert "last.ckpt is intact" in line
    assert (run_dir / "checkpoints" / "last.ckpt").read_bytes() == before
    state = _last(run_dir)["state_dict"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


# ---------------------------------------------------------------------------------- files
def test_files_get_the_users_umask_and_killed_writes_leave_nothing(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    orphan = run_dir / "checkpoints" / ".last.ckpt.tmp-abc123xy.ckpt"
    orphan.write_bytes(b"half a checkpoint")
    keep = run_dir / ".hidden_user_file"
    keep.write_text("mine")
    old = os.umask(0o027)
    try:
        fit(run_dir, "--ckpt_path=last")
    finally:
        os.umask(old)
    assert not orphan.exists() and keep.exists()
    for rel in ("checkpoints/last.ckpt", "config.yaml", "run_info.json", "loss_curve.png"):
        assert stat.S_IMODE((run_dir / rel).stat().st_mode) == 0o640, rel


# --------------------------------------------------------------------- configs tell the truth
def _printed_config(argv: list[str], capsys: pytest.CaptureFixture) -> dict:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--print_config"])
    assert exc.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


def test_scene_presets_derive_densification_from_the_schedule(
    capsys: pytest.CaptureFixture,
) -> None:
    preset = ["fit", "-c", str(CONFIGS / "scene" / "dnerf.yaml")]
    assert _printed_config(preset, capsys)["model"]["densify"]["stop_step"] == 1800
    shorter = _printed_config([*preset, "--model.schedule.fine_steps=1000"], capsys)
    assert shorter["model"]["densify"]["stop_step"] == 300 + 750
    n3dv = ["fit", "-c", str(CONFIGS / "scene" / "n3dv.yaml"), "--model.schedule.coarse_steps=100"]
    assert _printed_config(n3dv, capsys)["model"]["densify"]["stop_step"] == 100 + 1000


def test_config_yaml_holds_every_value_and_reruns_the_same_run(tmp_path: Path) -> None:
    first, again = tmp_path / "first", tmp_path / "again"
    overrides = [
        "--model.optim.means_lr=0.002",
        "--model.loss.mask=0.3",
        "--model.densify.interval=50",
        "--data.synthetic.motion=dynamic_only",
    ]
    fit(first, *overrides)
    saved = yaml.safe_load((first / "config.yaml").read_text())
    for section in ("model", "data"):
        nulls = [k for k, v in saved[section].items() if v is None]
        # model.nerf is the one group a Gaussian run leaves unused (null).
        assert not [k for k in nulls if k not in ("root", "object_name", "nerf")], (section, nulls)
    assert saved["model"]["optim"]["means_lr"] == 0.002
    assert saved["model"]["conditioning"]["tau"] == 1.0  # a default, written out
    assert saved["data"]["dnerf"]["downscale"] == 1
    assert "optimizer" not in saved and saved["ckpt_path"] is None
    main(["fit", "-c", str(first / "config.yaml"), f"--trainer.default_root_dir={again}"])
    a, b = _last(first), _last(again)
    assert a["hyper_parameters"] == b["hyper_parameters"]
    assert a["ds4d"]["data_fingerprint"] == b["ds4d"]["data_fingerprint"]
    redo = yaml.safe_load((again / "config.yaml").read_text())
    redo["trainer"]["default_root_dir"] = saved["trainer"]["default_root_dir"]
    assert redo == saved
    # The same file scores the run.
    main(["test", "-c", str(first / "config.yaml")])
    assert json.loads((first / "metrics.json").read_text())["num_frames"] == 4


# ------------------------------------------------------------------------ logs and figures
def test_wandb_gets_colour_images_the_whole_config_an_artifact_and_csv_stays(
    tmp_path: Path,
) -> None:
    import wandb

    run_dir = tmp_path / "run"
    args = [a for a in tiny(run_dir) if not a.startswith(("--trainer.logger", "--model.abl"))]
    args += ["--export.enabled=true", "--test_after_fit=true", "--trainer.log_every_n_steps=1"]
    try:
        main(["fit", "-c", BASE, "-c", str(CONFIGS / "logger" / "wandb.yaml"), *args])
        config = dict(wandb.run.config)  # offline runs keep it in their binary log
    finally:
        wandb.finish()
    runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, "the W&B folder is inside the run directory"
    images = [
        read_rgba(p, require_alpha=False)[..., :3].numpy()
        for p in runs[0].glob("files/media/images/diagnostics/*.png")
    ]
    assert images
    for pixels in images:
        assert pixels.std() > 0.05 and pixels.max() > 0.2, "a blank (black) image"
    # Views whose parts do not move show the grey frame only; the moving ones show colour.
    assert max(np.abs(p[..., 0] - p[..., 2]).max() for p in images) > 0.2, "colour, not grey"
    assert config["data"]["synthetic"]["num_frames"] == 4
    assert config["model"]["optim"]["means_lr"] > 0 and config["trainer"]["max_steps"] == 2
    assert list((run_dir / "logs").rglob("metrics.csv")), "CSV logs stay in the run directory"


def test_run_artifact_holds_the_exports_and_metrics(tmp_path: Path) -> None:
    import wandb
    from lightning.pytorch.loggers import WandbLogger

    from ds4d_pl.callbacks.wandb_media import run_files

    (tmp_path / "export").mkdir()
    for name in ("export/canonical.ply", "export/frame_0000.ply", "metrics.json", "config.yaml"):
        (tmp_path / name).write_text("x")
    assert [p.relative_to(tmp_path).as_posix() for p in run_files(tmp_path)] == [
        "config.yaml",
        "export/canonical.ply",
        "export/frame_0000.ply",
        "metrics.json",
    ]
    logged = []
    logger = WandbLogger(save_dir=str(tmp_path), project="t")
    try:
        run = logger.experiment
        run.log_artifact = lambda artifact: logged.append(artifact)
        from ds4d_pl.callbacks.wandb_media import log_run_artifact

        log_run_artifact([logger], tmp_path)
    finally:
        wandb.finish()
    assert len(logged) == 1 and logged[0].type == "ds4d-run"
    assert set(logged[0].manifest.entries) == {
        "config.yaml",
        "export/canonical.ply",
        "export/frame_0000.ply",
        "metrics.json",
    }


def test_progress_names_the_stage_and_the_gaussian_count(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    args = [a for a in tiny(tmp_path / "run", 3) if "progress_bar" not in a]
    main(["fit", "-c", BASE, *args])
    out = capsys.readouterr()
    text = out.out + out.err
    assert "coarse" in text and "fine" in text and "gaussians=300" in text
    assert "Epoch 0" not in text and "3/3" in text


def test_energy_figure_is_a_labelled_colour_overlay(tmp_path: Path) -> None:
    from ds4d_pl.callbacks.run_info import write_energy_maps

    energy = torch.zeros(3, 5, 8, 8)
    energy[:, :, 2:5, 2:5] = torch.linspace(0.1, 1.0, 5).view(1, 5, 1, 1)
    frames = torch.full((3, 5, 40, 40, 3), 0.8)
    strips = write_energy_maps(energy, tmp_path, frames, num_input_views=1)
    assert len(strips) == 3 and strips[0].shape == (64, 5 * 64, 3) and strips[0].dtype == np.uint8
    figure = read_rgba(tmp_path / "dynamic_energy.png", require_alpha=False)[..., :3]
    assert figure.shape[0] > 3 * 64 and figure.shape[1] > 5 * 64 + 30  # labels and colour bar
    assert np.abs(figure[..., 0] - figure[..., 2]).max() > 0.3  # colour, not grey tiles
    strip = strips[2].astype(float)
    assert strip[:, :64].std() < strip[:, -64:].std()  # energy grows over the frames


def test_loss_curve_is_drawn_from_every_step(tmp_path: Path) -> None:
    fit(tmp_path / "run", steps=3)
    curve = read_rgba(tmp_path / "run" / "loss_curve.png", require_alpha=False)
    assert curve.shape[:2] == (360, 640) and curve[..., 0].std() > 0.05


def test_images_sent_to_loggers_are_uint8() -> None:
    from ds4d_pl.logging import log_images

    class WandbLike:
        images: list = []

        def log_image(self, **kwargs) -> None:
            self.images = kwargs["images"]

    logger = WandbLike()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        log_images(logger, "k", [np.full((4, 4, 3), 0.5, dtype=np.float32)], 0)
    assert logger.images[0].dtype == np.uint8 and int(logger.images[0][0, 0, 0]) == 128


def test_a_checkpoint_fixes_the_asset_and_lets_evaluation_and_training_keys_through() -> None:
    from ds4d_pl.errors import CheckpointError
    from ds4d_pl.resume import reconcile

    def model(encoding: str, resolution: int | None, lr: float) -> dict:
        return {
            "field": {"encoding": encoding},
            "benchmark": {"resolution": resolution},
            "optim": {"means_lr": lr},
        }

    defaults, saved = model("hexplane", None, 1e-3), model("hexplane", 32, 2e-3)
    given = model("hexplane", 48, 5e-3)
    resumed = reconcile(given, defaults, saved, fitting=True)
    assert resumed.model == model("hexplane", 48, 5e-3)
    assert resumed.used == {"benchmark.resolution": (48, 32), "optim.means_lr": (5e-3, 2e-3)}
    scored = reconcile(given, defaults, saved, fitting=False)
    assert scored.model == model("hexplane", 48, 2e-3)  # training keys do not touch a test
    assert scored.unused == {"optim.means_lr": (5e-3, 2e-3)}
    untouched = reconcile(defaults, defaults, saved, fitting=True)  # nothing given
    assert untouched.model == saved and not untouched.used
    with pytest.raises(CheckpointError, match="model.field.encoding: given 'hashgrid', checkpo"):
        reconcile(model("hashgrid", None, 1e-3), defaults, saved, fitting=False)


def test_test_time_controls_pass_and_new_asset_keys_are_fixed_by_the_checkpoint() -> None:
    """Keys added after the rules were written: the placebo control and a NeRF's ray chunk are
    evaluation keys (no parameters), initial-point sampling a training key, the conditioning
    gate shapes the asset."""
    from ds4d_pl.errors import CheckpointError
    from ds4d_pl.resume import reconcile

    def model(placebo: str, chunk: int, source: str, gate: bool) -> dict:
        return {
            "conditioning": {"placebo": placebo},
            "nerf": {"ray_chunk": chunk},
            "init": {"source": source},
            "field": {"cond_gate": gate},
        }

    defaults = saved = model("none", 8192, "auto", True)
    scored = reconcile(model("time_constant", 512, "auto", True), defaults, saved, fitting=False)
    assert scored.used == {"conditioning.placebo": ("time_constant", "none"),
                           "nerf.ray_chunk": (512, 8192)}  # fmt: skip
    resumed = reconcile(model("none", 8192, "hull", True), defaults, saved, fitting=True)
    assert resumed.used == {"init.source": ("hull", "auto")}
    with pytest.raises(CheckpointError, match="model.field.cond_gate: given False, checkpoint Tr"):
        reconcile(model("none", 8192, "auto", False), defaults, saved, fitting=False)
