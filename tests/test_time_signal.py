"""Spec of benchmarks/time_signal.py: where the conditioning changes over time.

* on the mostly-static object the frame features change more at the moving arm's tip than at
  the static Gaussians, before any training (the encoder's features follow the motion);
* a static object (nothing to compare) and a run without frame features are refused.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from ds4d_pl.config import AblationConfig, ConditioningConfig, FieldConfig, GaussianInit
from ds4d_pl.data.parsers.synthetic import SyntheticConfig, make_synthetic_scene
from ds4d_pl.model import DS4DModel

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))  # time_signal imports post_fit from there
_spec = importlib.util.spec_from_file_location(
    "time_signal", REPO / "benchmarks" / "time_signal.py"
)
time_signal = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(time_signal)

SMALL = {"num_frames": 5, "resolution": 48, "eval_resolution": 32, "num_init_points": 1500}


def _model(scene, tssf: str) -> DS4DModel:
    field = FieldConfig(plane_resolution=8, time_resolution=2, feature_dim=8, hidden=16)
    row = AblationConfig("points", True, True, tssf)
    model = DS4DModel(GaussianInit(), field, row, ConditioningConfig(cache_dir=""), "torch")
    model.initialise(scene, torch.Generator().manual_seed(0))
    model.prepare_conditioning(scene.train)
    return model


@pytest.mark.parametrize("tssf", ["off", "mean"])
def test_features_change_most_where_the_object_moves(tssf: str) -> None:
    cfg = SyntheticConfig(**SMALL)
    scene = make_synthetic_scene(cfg)
    got = time_signal.time_signal(_model(scene, tssf), cfg, scene.train.times)
    assert got["num_tip"] > 0
    assert got["contrast"] == pytest.approx(got["tip"] / got["rest"])
    assert got["contrast"] > 2.0


def test_a_static_object_is_refused() -> None:
    cfg = SyntheticConfig(motion="static_only", **SMALL)
    scene = make_synthetic_scene(cfg)
    with pytest.raises(ValueError, match="nothing moves"):
        time_signal.time_signal(_model(scene, "off"), cfg, scene.train.times)


def test_a_run_without_features_is_refused(tmp_path: Path, monkeypatch) -> None:
    class System:
        class model:  # noqa: N801 - stands in for the attribute of a DS4DSystem
            conditioner = None

    monkeypatch.setattr(time_signal, "load_run", lambda run_dir: (System(), None, None))
    with pytest.raises(SystemExit, match="no frame features"):
        time_signal.analyse(tmp_path)
