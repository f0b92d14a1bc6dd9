"""The object's learned depth (``model.framing.depth``): one scale of the asset about the input
camera. Invisible to the input view, seen by the others, learned with the framing, saved."""

from __future__ import annotations

import json
import math

import pytest
import torch

from ds4d_pl.cameras import Cameras, orbit_cameras, zero123pp_cameras
from ds4d_pl.config import FramingConfig
from ds4d_pl.gaussians.placement import DepthPlacement
from ds4d_pl.render import build_renderer
from ds4d_pl.render.base import GaussianParams


def _gaussians(n: int = 300, seed: int = 0) -> GaussianParams:
    g = torch.Generator().manual_seed(seed)
    sh = torch.zeros(n, 1, 3)
    sh[:, 0] = torch.rand(n, 3, generator=g) - 0.5
    return GaussianParams(
        means=(torch.rand(n, 3, generator=g) - 0.5) * 0.6,
        quats=torch.randn(n, 4, generator=g),
        scales=torch.full((n, 3), 0.03),
        opacities=torch.full((n,), 0.8),
        sh=sh,
    )


def _rig() -> Cameras:
    """The input camera in front, then the six Zero123++ views, 48 x 48."""
    return Cameras.cat([orbit_cameras([0.0], [0.0], 48, 48), zero123pp_cameras(48, 48)])


def _placed(k: float, pivot: torch.Tensor) -> DepthPlacement:
    placement = DepthPlacement(max_log_scale=0.25)
    placement.set_pivot(pivot)
    with torch.no_grad():
        placement.raw.fill_(math.atanh(math.log(k) / 0.25))
    return placement


def test_identity_at_start_and_bounded() -> None:
    placement = DepthPlacement(max_log_scale=0.1)
    gs = _gaussians()
    out = placement(gs)
    assert torch.equal(out.means, gs.means) and torch.equal(out.scales, gs.scales)
    with torch.no_grad():
        placement.raw.fill_(1e6)
    assert float(placement.scale) == pytest.approx(float(torch.exp(torch.tensor(0.1))))
    with pytest.raises(ValueError, match="max_log_scale"):
        DepthPlacement(0.0)


def test_the_input_view_cannot_see_the_depth_the_others_can() -> None:
    """Scaled 5 % about the input camera's centre, the object renders the same in the input view
    (to float rounding) and differently in every generated view."""
    cams = _rig()
    renderer = build_renderer("torch")
    bg = torch.ones(3)
    gs = _gaussians()
    before = renderer(gs, cams, bg)
    after = renderer(_placed(1.05, cams.centers[0])(gs), cams, bg)
    diff = (after.rgb - before.rgb).abs().amax(dim=(1, 2, 3))
    assert float(diff[0]) < 1e-4
    assert bool((diff[1:] > 0.05).all())
    # Its depth along the input view's rays grows by the scale.
    seen = before.alpha[0, ..., 0] > 0.5
    ratio = after.depth[0, ..., 0][seen] / before.depth[0, ..., 0][seen]
    assert torch.allclose(ratio, torch.full_like(ratio, 1.05), atol=1e-3)


def test_only_the_generated_views_train_it() -> None:
    cams = _rig()
    renderer = build_renderer("torch")
    gs = _gaussians()
    target = renderer(_placed(1.05, cams.centers[0])(gs), cams, torch.ones(3))
    placement = _placed(1.0, cams.centers[0])
    out = renderer(placement(gs), cams, torch.ones(3))
    (out.rgb[0] - target.rgb[0]).square().mean().backward(retain_graph=True)
    assert abs(float(placement.raw.grad)) < 1e-6
    placement.raw.grad = None
    (out.rgb[1:] - target.rgb[1:]).square().mean().backward()
    assert float(placement.raw.grad) < 0  # the loss falls as the object moves away


def test_settings_that_cannot_work_are_refused() -> None:
    with pytest.raises(ValueError, match="needs model.framing.learn"):
        FramingConfig(depth=True)
    with pytest.raises(ValueError, match="gauge 'init'"):
        FramingConfig(learn=True, depth=True, gauge="init")
    FramingConfig(learn=True, depth=True, gauge="auto")


def test_a_nerf_has_no_gaussians_to_place() -> None:
    from ds4d_pl.system import DS4DSystem

    pytest.importorskip("nerfacc")
    with pytest.raises(ValueError, match="a NeRF has none"):
        DS4DSystem(
            representation="nerf",
            framing={"learn": True, "depth": True},
            ablation={"frame_features": False, "dsfd": False, "tssf": "off"},
        )


def test_a_fit_learns_records_and_saves_the_depth(run_dir) -> None:
    import csv

    from conftest import logged_tiny_fit

    from ds4d_pl.system import DS4DSystem

    log = logged_tiny_fit(
        run_dir,
        "row_b",
        4,
        "--data.synthetic.pseudo_views=degraded",
        "--model.framing.learn=true",
        "--model.framing.depth=true",
    )
    record = json.loads((run_dir / "run_info.json").read_text())["pseudo_view_framing"]
    # The synthetic object's own points would give gauge "init"; a learned depth needs "views".
    assert record["gauge"] == "views" and record["gauge_directions"] == 1
    assert record["depth_scale"] != 1.0  # Adam's first steps move it
    rows = [r for r in csv.DictReader(log.open()) if r.get("train/framing/depth_scale")]
    assert rows and float(rows[-1]["train/framing/depth_scale"]) == pytest.approx(
        record["depth_scale"], abs=1e-4
    )
    system = DS4DSystem.load_from_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    placement = system.model.placement
    assert float(placement.scale) == pytest.approx(record["depth_scale"], abs=1e-5)
    # Pivoted about the input camera (the synthetic protocol's view 0 at the middle frame).
    assert float(placement.pivot.norm()) > 0.5
