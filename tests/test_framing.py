"""The pseudo views' learned framing (``model.framing``): the warp, its learning, its bounds."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from ds4d_pl.cameras import Cameras, orbit_cameras, zero123pp_cameras
from ds4d_pl.config import FramingConfig
from ds4d_pl.data.align import similarity_warp
from ds4d_pl.render.base import RenderOutput
from ds4d_pl.render.framing import (
    FramingCorrection,
    _emulating_framing,
    framing_gauge,
    warp_render,
)
from ds4d_pl.system import DS4DSystem

BG = torch.tensor([1.0, 1.0, 1.0])


def _object(h: int = 40, w: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    """A textured, off-centre ellipse with a soft edge: ``(1, H, W, 3)`` colour and alpha."""
    y, x = torch.meshgrid(
        torch.arange(h, dtype=torch.float32) + 0.5,
        torch.arange(w, dtype=torch.float32) + 0.5,
        indexing="ij",
    )
    r = ((x - 0.55 * w) / (0.22 * w)) ** 2 + ((y - 0.45 * h) / (0.3 * h)) ** 2
    alpha = torch.sigmoid(6.0 * (1.0 - r))[None, ..., None]
    rgb = torch.stack(
        [0.5 + 0.4 * torch.sin(x / 3.0), 0.5 + 0.4 * torch.cos(y / 4.0), 0.3 + 0.0 * x], dim=-1
    )[None]
    return rgb, alpha


def _render(rgb: torch.Tensor, alpha: torch.Tensor) -> RenderOutput:
    """A render of the straight-alpha image over :data:`BG`."""
    n = rgb.shape[0]
    return RenderOutput(
        rgb=rgb * alpha + (1 - alpha) * BG,
        alpha=alpha,
        depth=torch.where(alpha > 1e-4, 2.0, 0.0),  # 0 where empty, as the renderers
        means2d=torch.zeros(n, 1, 2),
        radii=torch.zeros(n, 1, dtype=torch.int32),
    )


def test_the_identity_returns_the_render() -> None:
    out = _render(*_object())
    moved = warp_render(out, torch.ones(1), torch.zeros(1, 2), BG)
    assert torch.allclose(moved.rgb, out.rgb, atol=1e-5)
    assert torch.allclose(moved.alpha, out.alpha, atol=1e-5)
    assert torch.allclose(moved.depth, out.depth, atol=1e-4)


def test_a_moved_render_is_the_moved_image_composited() -> None:
    """The same similarity as the degradation's (:func:`similarity_warp`), so a learned
    correction equal to a view's error reproduces that view."""
    rgb, alpha = _object()
    scale, shift = torch.tensor([1.1]), torch.tensor([[2.5, -1.5]])
    moved = warp_render(_render(rgb, alpha), scale, shift, BG)
    want_rgb, want_alpha = similarity_warp(rgb, alpha, scale, shift)
    assert torch.allclose(moved.alpha, want_alpha, atol=1e-5)
    assert torch.allclose(moved.rgb, want_rgb * want_alpha + (1 - want_alpha) * BG, atol=1e-4)
    # Not a no-op: the object did move.
    assert (moved.alpha - alpha).abs().max() > 0.3


@pytest.mark.parametrize("per", ["view", "frame"])
def test_learning_recovers_a_known_framing(per: str) -> None:
    """Gradient descent on the photometric loss finds the scale and shift of a mis-framed view."""
    rgb, alpha = _object()
    h, w = alpha.shape[1:3]
    true_scale, true_shift = 1.07, torch.tensor([[1.5, -2.0]])
    t_rgb, t_alpha = similarity_warp(rgb, alpha, torch.tensor([true_scale]), true_shift)
    target = t_rgb * t_alpha + (1 - t_alpha) * BG
    framing = FramingCorrection(FramingConfig(learn=True, per=per))
    framing.build(num_views=2, num_frames=3)
    opt = torch.optim.Adam(framing.parameters(), lr=0.02)
    render = _render(rgb, alpha)
    view, frame, is_input = torch.tensor([1]), torch.tensor([2]), torch.tensor([False])
    for _ in range(300):
        moved = framing(render, view, frame, is_input, BG)
        loss = (moved.rgb - target).abs().mean() + (moved.alpha - t_alpha).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        scale, shift = framing.transform(view, frame)
    assert abs(float(scale) - true_scale) < 0.01
    px = torch.tensor([w, h], dtype=torch.float32)
    assert torch.allclose(shift * px, true_shift, atol=0.3)
    # Only the view that was used moved (per frame: its shared entry and its residuals, which
    # are centred over the frames); the input view's rows stay put.
    moved_rows = (framing.params.detach().abs().sum(-1) > 0).nonzero().tolist()
    assert moved_rows == ([[1, k] for k in range(4)] if per == "frame" else [[1, 0]])


def test_per_frame_learns_a_shared_error_from_every_frame_and_the_jitter_per_frame() -> None:
    """A view framed too large in every frame, with a different small shift in each: the
    shared entry takes the common scale from all frames, the residuals the per-frame shifts."""
    rgb, alpha = _object()
    h, w = alpha.shape[1:3]
    scales = torch.tensor([1.06, 1.06, 1.06])
    shifts = torch.tensor([[1.0, 0.0], [-1.0, 0.5], [0.0, -1.0]])
    targets = []
    for f in range(3):
        t_rgb, t_alpha = similarity_warp(rgb, alpha, scales[f : f + 1], shifts[f : f + 1])
        targets.append((t_rgb * t_alpha + (1 - t_alpha) * BG, t_alpha))
    framing = FramingCorrection(FramingConfig(learn=True, per="frame"))
    framing.build(num_views=2, num_frames=3)
    opt = torch.optim.Adam(framing.parameters(), lr=0.02)
    render = _render(rgb, alpha)
    view, is_input = torch.tensor([1]), torch.tensor([False])
    for step in range(600):
        f = step % 3
        moved = framing(render, view, torch.tensor([f]), is_input, BG)
        loss = (moved.rgb - targets[f][0]).abs().mean() + (moved.alpha - targets[f][1]).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    px = torch.tensor([w, h], dtype=torch.float32)
    with torch.no_grad():
        for f in range(3):
            scale, shift = framing.transform(view, torch.tensor([f]))
            assert abs(float(scale) - 1.06) < 0.01
            assert torch.allclose(shift * px, shifts[f : f + 1], atol=0.3)
        shared_scale = torch.exp(framing._view_table()[0][1])
    # The common error sits in the shared entry; the centred residuals only hold the jitter.
    assert abs(float(shared_scale) - 1.06) < 0.01
    summary = framing.summary(num_input_views=1)
    assert abs(summary["scale"][0] - 1.06) < 0.01


def test_real_views_are_never_moved() -> None:
    rgb, alpha = _object()
    render = _render(rgb.expand(2, -1, -1, -1), alpha.expand(2, -1, -1, -1))
    framing = FramingCorrection(FramingConfig(learn=True))
    framing.build(num_views=2, num_frames=1)
    with torch.no_grad():
        framing.params.fill_(0.5)
    moved = framing(
        render, torch.tensor([0, 1]), torch.tensor([0, 0]), torch.tensor([True, False]), BG
    )
    assert torch.equal(moved.rgb[0], render.rgb[0])
    assert not torch.allclose(moved.rgb[1], render.rgb[1], atol=1e-3)
    moved.rgb.sum().backward()
    assert framing.params.grad[0].abs().sum() == 0
    assert framing.params.grad[1].abs().sum() > 0
    # A batch of real views only is returned as it is.
    same = framing(
        render, torch.tensor([0, 0]), torch.tensor([0, 0]), torch.tensor([True, True]), BG
    )
    assert same is render


def test_the_correction_is_bounded() -> None:
    cfg = FramingConfig(learn=True, max_scale=0.2, max_shift=0.1)
    framing = FramingCorrection(cfg)
    framing.build(num_views=2, num_frames=1)
    with torch.no_grad():
        framing.params.fill_(1e4)
    with torch.no_grad():
        scale, shift = framing.transform(torch.tensor([1]), torch.tensor([0]))
    assert float(scale) <= torch.exp(torch.tensor(0.2)) + 1e-6
    assert float(shift.abs().max()) <= 0.1 + 1e-6
    summary = framing.summary(num_input_views=1)
    assert list(summary) == ["scale", "shift_x", "shift_y"] and len(summary["scale"]) == 1


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"per": "pixel"}, "per"),
        ({"gauge": "hull"}, "gauge"),
        ({"max_scale": 0.0}, "max_scale"),
        ({"max_shift": 2.0}, "max_shift"),
    ],
)
def test_bad_settings_are_refused_by_name(kwargs: dict, key: str) -> None:
    with pytest.raises(ValueError, match=f"model.framing.{key}"):
        FramingConfig(**kwargs)


def test_the_table_takes_its_size_from_a_checkpoint() -> None:
    saved = FramingCorrection(FramingConfig(learn=True, per="frame"))
    saved.build(num_views=7, num_frames=12)
    with torch.no_grad():
        saved.params.normal_()
    fresh = FramingCorrection(FramingConfig(learn=True, per="frame"))
    assert not fresh.is_built
    fresh.load_state_dict(saved.state_dict())
    assert torch.equal(fresh.params, saved.params)


def test_a_scene_without_pseudo_views_trains_without_it() -> None:
    """A preset for generated views may meet a clip without any: off (said in one line); a
    model saved that way loads again with the setting still on."""
    system = DS4DSystem(framing=FramingConfig(learn=True))
    system.scene = SimpleNamespace(
        name="rig", num_input_views=3, train=SimpleNamespace(num_views=3, num_frames=5)
    )
    system._setup_framing()
    assert system.framing is None
    assert not any(k.startswith("framing.") for k in system.state_dict())
    DS4DSystem(framing=FramingConfig(learn=True)).load_state_dict(system.state_dict())


def test_off_by_default_and_its_optimiser_group_only_when_on() -> None:
    assert DS4DSystem().framing is None
    # (The gauge needs the scene's cameras and initial points: the fit below covers it.)
    system = DS4DSystem(framing=FramingConfig(learn=True, gauge="init"))
    system.scene = SimpleNamespace(
        name="object", num_input_views=1, train=SimpleNamespace(num_views=7, num_frames=4)
    )
    system._setup_framing()
    assert tuple(system.framing.params.shape) == (7, 1, 3)
    assert system.hparams["framing"]["learn"] is True


@pytest.mark.parametrize(
    ("init_source", "gauge", "directions"),
    [
        # The synthetic object's own points place it independently of the pseudo views.
        ("auto", "init", 0),
        # A hull is carved from the pseudo views: their average fixes the depth instead.
        ("hull", "views", 1),
    ],
)
def test_a_fit_learns_logs_and_records_the_framing(
    run_dir, init_source: str, gauge: str, directions: int
) -> None:
    import csv
    import json

    from conftest import logged_tiny_fit

    log = logged_tiny_fit(
        run_dir,
        "row_b",
        4,
        "--data.synthetic.pseudo_views=degraded",
        "--model.framing.learn=true",
        f"--model.init.source={init_source}",
    )
    rows = [r for r in csv.DictReader(log.open()) if r.get("train/framing/scale_1")]
    assert rows and rows[-1].get("train/lr/framing")
    # Adam's first steps move every pseudo view that was rendered off the identity.
    assert any(float(rows[-1][f"train/framing/scale_{k}"]) != 1.0 for k in range(1, 7))
    info = json.loads((run_dir / "run_info.json").read_text())
    record = info["pseudo_view_framing"]
    assert record["gauge"] == gauge and record["gauge_directions"] == directions
    assert record["per"] == "view" and sorted(record["views"], key=int) == [
        str(k) for k in range(1, 7)
    ]
    assert set(record["views"]["1"]) == {"scale", "shift_x", "shift_y"}
    ckpt = next(iter((run_dir / "checkpoints").glob("*.ckpt")))
    state = __import__("torch").load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    assert tuple(state["framing.params"].shape) == (7, 1, 3)


def _rig(num_inputs: int) -> Cameras:
    """Input camera(s) in front (and, with two, one at 90 degrees), then six Zero123++ views."""
    inputs = orbit_cameras([0.0, 0.0][:num_inputs], [0.0, 90.0][:num_inputs], 64, 64)
    return Cameras.cat([inputs, zero123pp_cameras(64, 64)])


def test_the_gauge_is_the_one_motion_the_input_view_cannot_see() -> None:
    """With one input view the gauge is one direction: the framing that moving the object
    along the input's axis and scaling it about the input camera would cause; the input view's
    own framing is untouched by it. A second input view from the side sees that motion too."""
    cams = _rig(1)
    basis = framing_gauge(cams, 1, torch.zeros(3), extent=1.0)
    assert basis.shape == (21, 1)
    assert torch.allclose(basis.T @ basis, torch.eye(1), atol=1e-5)
    assert basis[:3].abs().max() == 0
    # Scaling the scene about the input camera's centre by 5 %: the input image is unchanged,
    # the pseudo views' framing changes, and all of that change lies in the gauge.
    centre = cams.centers[0]
    points = torch.randn(200, 3) * 0.3
    moved = centre + 1.05 * (points - centre)
    uv0, _ = cams.project(points)
    uv1, _ = cams.project(moved)
    assert (uv1[0] - uv0[0]).abs().max() < 1e-3
    emulated = _emulating_framing(
        cams, torch.zeros(3), torch.cat([0.05 * -centre, torch.tensor([math.log(1.05)])])
    )
    flat = emulated.reshape(-1)
    flat[:3] = 0.0
    residual = flat - basis @ (basis.T @ flat)
    assert residual.norm() < 0.05 * flat.norm()
    assert framing_gauge(_rig(2), 2, torch.zeros(3)).shape[1] == 0


def test_the_correction_never_takes_the_gauge() -> None:
    """Parameters pushed along the gauge give the identity; a single view's own error is kept
    (mostly: only its small component along the gauge goes)."""
    cams = _rig(1)
    framing = FramingCorrection(FramingConfig(learn=True))
    framing.build(num_views=7, num_frames=1)
    framing.set_gauge(framing_gauge(cams, 1, torch.zeros(3)))
    views, frames = torch.arange(7), torch.zeros(7, dtype=torch.long)
    with torch.no_grad():
        # Raw parameters whose bounded values are 0.2 x the gauge direction.
        bounds = torch.tensor([0.25, 0.15, 0.15])  # max_scale, max_shift
        framing.params[:, 0] = torch.atanh(0.2 * framing.gauge[:, 0].reshape(7, 3) / bounds)
        scale, shift = framing.transform(views, frames)
    assert torch.allclose(scale, torch.ones(7), atol=1e-3)
    assert shift.abs().max() < 1e-3
    with torch.no_grad():
        framing.params.zero_()
        framing.params[2, 0, 0] = 0.2  # view 2 framed 5 % too large
        scale, _ = framing.transform(views, frames)
    assert float(scale[2]) > 1.03 and (scale[[0, 1, 3, 4, 5, 6]] - 1).abs().max() < 0.01
    with pytest.raises(ValueError, match="basis for 8 views"):
        framing.set_gauge(torch.zeros(24, 1))


def test_a_checkpoint_from_before_the_gauge_keeps_its_free_framing() -> None:
    from ds4d_pl.compat import upgrade_hparams

    old = upgrade_hparams({"framing": {"learn": True, "per": "view"}})
    assert old["framing"]["gauge"] == "init"
    assert upgrade_hparams({"framing": {"fix_gauge": True}})["framing"] == {"gauge": "views"}
    current = upgrade_hparams({"framing": {"learn": True, "gauge": "views"}})
    assert current["framing"]["gauge"] == "views"
