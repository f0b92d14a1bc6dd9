"""Spec of benchmarks/post_fit.py's placement analysis.

* it reads the object's depth from the input camera against the truth: a start scaled by ``k``
  about the camera's centre (the one error a single input view cannot see) reads ``k``.
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
# post_fit imports nothing from benchmarks/, so it loads from its file alone.
_spec = importlib.util.spec_from_file_location("post_fit", REPO / "benchmarks" / "post_fit.py")
post_fit = importlib.util.module_from_spec(_spec)
sys.modules["post_fit"] = post_fit
_spec.loader.exec_module(post_fit)


@pytest.mark.parametrize("k", [1.0, 0.9, 1.1])
def test_placement_reads_a_depth_scaled_start(k: float) -> None:
    scene = make_synthetic_scene(
        SyntheticConfig(num_frames=4, resolution=32, eval_resolution=32, num_init_points=500)
    )
    field = FieldConfig(plane_resolution=8, time_resolution=2, feature_dim=8, hidden=16)
    row_b = AblationConfig("points", False, False, "off")
    model = DS4DModel(GaussianInit(), field, row_b, ConditioningConfig(cache_dir=""), "torch")
    model.initialise(scene, torch.Generator().manual_seed(0))  # the scene's own points
    centre = scene.train.cameras_at(scene.train.num_frames // 2).c2w[0, :3, 3]
    with torch.no_grad():
        means = model.gaussians.means
        means.copy_(centre + k * (means - centre))
    # A fresh model is the identity at every time, so this is the start as placed.
    assert post_fit.placement(model, scene)["depth_ratio"] == pytest.approx(k, abs=1e-4)
