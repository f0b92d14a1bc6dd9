"""Spec of ``benchmarks/gpu_check.py`` on a CPU machine.

* without CUDA it says so, writes nothing and exits 0;
* the comparisons it runs on a GPU pass for two identical backends and fail for a renderer that
  is off in colour, or right in images but wrong in gradients, and for an encoding that cannot
  learn; each check runs alone, a crashing check is a recorded failure, and ``--strict`` turns
  a skipped check into a failure.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from ds4d_pl.fields.hashgrid import HashGrid4D
from ds4d_pl.render import TorchRasterizer
from ds4d_pl.render.base import GaussianParams

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
gpu_check = importlib.util.module_from_spec(_spec)
# Registered before running it: its dataclasses look their module up by name.
sys.modules["gpu_check"] = gpu_check
_spec.loader.exec_module(gpu_check)

SMALL = (gpu_check.SceneSpec("tiny", 120, 1, 2, 40, 32, 3),)


def test_without_cuda_it_says_so_writes_nothing_and_exits_0(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "gpu_check.json"
    assert gpu_check.main(["--out", str(out)]) == 0
    assert "no CUDA device here" in capsys.readouterr().out
    assert not out.exists()


def test_unknown_check_is_refused() -> None:
    with pytest.raises(SystemExit) as exc:
        gpu_check.main(["--only", "bogus"])
    assert exc.value.code == 2


def test_identical_renderers_pass_with_zero_error() -> None:
    result = gpu_check.compare_renderers(TorchRasterizer(), TorchRasterizer(), "cpu", SMALL)
    scene = result["scenes"]["tiny"]
    assert result["status"] == "pass" and scene["status"] == "pass"
    assert scene["rgb_max_abs"] == 0.0 and scene["means2d_max_abs"] == 0.0
    assert set(scene["grads"]) == {"means", "quats", "scales", "opacities", "sh"}
    assert all(g["cosine"] == pytest.approx(1.0) for g in scene["grads"].values())


class _Brighter:
    """Right geometry, colours off by 0.01: an image mismatch."""

    name = "brighter"

    def __call__(self, gaussians, cameras, background):
        out = TorchRasterizer()(gaussians, cameras, background)
        out.rgb = out.rgb + 0.01
        return out


class _FrozenOpacity:
    """Same images, but no gradient reaches the opacities: a gradient mismatch only."""

    name = "frozen_opacity"

    def __call__(self, gaussians, cameras, background):
        g = GaussianParams(
            gaussians.means,
            gaussians.quats,
            gaussians.scales,
            gaussians.opacities.detach(),
            gaussians.sh,
        )
        return TorchRasterizer()(g, cameras, background)


def test_renderer_mismatches_in_images_or_gradients_fail() -> None:
    bright = gpu_check.compare_renderers(TorchRasterizer(), _Brighter(), "cpu", SMALL)
    assert bright["status"] == "fail"
    assert bright["scenes"]["tiny"]["rgb_max_abs"] == pytest.approx(0.01, abs=1e-5)
    frozen = gpu_check.compare_renderers(TorchRasterizer(), _FrozenOpacity(), "cpu", SMALL)
    scene = frozen["scenes"]["tiny"]
    assert frozen["status"] == "fail" and scene["rgb_max_abs"] == 0.0
    assert scene["grads"]["opacities"]["rel_err"] == pytest.approx(1.0)
    assert scene["grads"]["means"]["cosine"] == pytest.approx(1.0)


def _grid() -> HashGrid4D:
    return HashGrid4D(2, 2, 10, base_resolution=4, max_resolution=8, backend="torch")


class _Constant(nn.Module):
    """An 'encoding' whose output ignores its input: it cannot fit anything."""

    out_dim = 8

    def __init__(self) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(8))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.bias.expand(x.shape[0], 8)


def test_encoding_comparison_passes_two_torch_grids_and_fails_one_that_cannot_learn() -> None:
    same = gpu_check.compare_encodings(_grid, _grid, "cpu", steps=30, batch=512)
    assert same["status"] == "pass"
    assert same["candidate"]["mse"] == same["reference"]["mse"]
    # The grid learns: its held-out error is well below the target's variance.
    assert same["reference"]["mse"] < 0.75 * same["reference"]["target_var"]
    broken = gpu_check.compare_encodings(_grid, _Constant, "cpu", steps=30, batch=512)
    assert broken["status"] == "fail" and broken["candidate"]["mse"] > broken["mse_bound"]


def test_ddp_check_skips_with_fewer_than_two_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    result = gpu_check.check_ddp(torch.device("cpu"))
    assert result == {"status": "skipped", "reason": "1 GPU visible; DDP needs 2 or more"}


def test_main_runs_the_selected_checks_and_fails_on_any_mismatch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The driver on a (pretend) CUDA machine, with stand-in checks."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    calls = []

    def fake(status: str):
        def check(device: torch.device) -> dict:
            calls.append(status)
            if status == "crash":
                raise RuntimeError("kernel exploded\nsecond line")
            return {"status": status, **({"reason": "not here"} if status == "skipped" else {})}

        return check

    checks = {"render": fake("pass"), "hashgrid": fake("skipped"), "demo": fake("crash")}
    monkeypatch.setattr(gpu_check, "CHECKS", checks)
    out = tmp_path / "r.json"
    assert gpu_check.main(["--only", "render", "--only", "hashgrid", "--out", str(out)]) == 0
    assert calls == ["pass", "skipped"]
    saved = json.loads(out.read_text())
    assert saved["passed"] and set(saved["checks"]) == {"render", "hashgrid"}
    skipped = saved["checks"]["hashgrid"]
    assert (skipped["status"], skipped["reason"]) == ("skipped", "not here")
    assert "torch" in saved["environment"]
    assert gpu_check.main(["--only", "hashgrid", "--strict", "--out", str(out)]) == 1
    assert gpu_check.main(["--only", "demo", "--out", str(out)]) == 1
    crashed = json.loads(out.read_text())["checks"]["demo"]
    assert crashed["status"] == "fail" and crashed["error"] == "RuntimeError: kernel exploded"
