"""Spec of the embedded synthetic dataset (ds4d_pl.data.parsers.synthetic) and image io."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from ds4d_pl.cameras import (
    Cameras,
    consistent4d_eval_cameras,
    orbit_cameras,
    zero123pp_cameras,
)
from ds4d_pl.data.io import read_rgba, write_rgb, write_rgba
from ds4d_pl.data.parsers import synthetic
from ds4d_pl.data.parsers.synthetic import (
    MOTIONS,
    SyntheticConfig,
    make_synthetic_scene,
    moving_part_end,
    render_synthetic,
    sample_synthetic_surface,
    write_consistent4d,
    write_synthetic,
)
from ds4d_pl.data.types import Scene4D, ViewSet

SMALL = {"num_frames": 4, "resolution": 32, "eval_resolution": 24, "num_init_points": 200}


@pytest.fixture(scope="module")
def scenes() -> dict[str, Scene4D]:
    return {m: make_synthetic_scene(SyntheticConfig(motion=m)) for m in MOTIONS}


def _dyn_fraction(vs: ViewSet, view: int = 0) -> float:
    """Share of the view's silhouette (union over time) covered by the dynamic mask."""
    silhouette = (vs.alpha[view] > 0).any(dim=0)
    return float(vs.dyn_mask[view, 0].sum() / silhouette.sum())


def _nearest_pixel(uv: torch.Tensor, cams: Cameras) -> tuple[torch.Tensor, torch.Tensor]:
    col = uv[..., 0].floor().long().clamp(0, cams.width - 1)
    row = uv[..., 1].floor().long().clamp(0, cams.height - 1)
    return row, col


def _unproject(cams: Cameras, view: int, depth: torch.Tensor) -> torch.Tensor:
    """World points ``(H, W, 3)`` of a depth map ``(H, W)`` (camera z) at pixel centres."""
    h, w = depth.shape
    v, u = torch.meshgrid(
        torch.arange(h, dtype=torch.float32) + 0.5,
        torch.arange(w, dtype=torch.float32) + 0.5,
        indexing="ij",
    )
    K, c2w = cams.K[view], cams.c2w[view]
    cam = torch.stack(
        [(u - K[0, 2]) / K[0, 0] * depth, (v - K[1, 2]) / K[1, 1] * depth, depth], dim=-1
    )
    return cam @ c2w[:3, :3].T + c2w[:3, 3]


# ------------------------------------------------------------------------------ layout / types


def test_default_scene_shapes_dtypes_ranges(scenes: dict[str, Scene4D]) -> None:
    scene = scenes["mostly_static"]
    assert scene.name == "synthetic_mostly_static"
    assert scene.num_input_views == 1
    train, ev = scene.train, scene.eval
    assert ev is not None
    assert train.source == "oracle" and ev.source == "gt"
    assert (
        "oracle" in scene.meta["pseudo_views"]
        and "not a generative prior" in (scene.meta["pseudo_views"])
    )
    assert scene.meta["motion"] == "mostly_static" and scene.meta["seed"] == 0
    for vs, v, res in ((train, 7, 128), (ev, 4, 128)):
        assert vs.rgb.shape == (v, 16, res, res, 3)
        assert vs.alpha.shape == (v, 16, res, res, 1)
        assert vs.dyn_mask is not None and vs.dyn_mask.shape == (v, 16, res, res, 1)
        assert vs.rgb.dtype == vs.alpha.dtype == torch.float32
        assert vs.dyn_mask.dtype == torch.bool
        for x in (vs.rgb, vs.alpha):
            assert torch.isfinite(x).all() and x.min() >= 0.0 and x.max() <= 1.0
        torch.testing.assert_close(vs.times, torch.linspace(0, 1, 16))
        # Soft alpha: anti-aliased edges exist but are a thin rim, not a haze.
        soft = ((vs.alpha > 0) & (vs.alpha < 1)).float().mean()
        assert 0 < soft < 0.05
    assert scene.init_points.shape == (4000, 3) and scene.init_colors.shape == (4000, 3)
    assert scene.init_colors.min() >= 0 and scene.init_colors.max() <= 1


def test_cameras_follow_the_protocol(scenes: dict[str, Scene4D]) -> None:
    scene = scenes["mostly_static"]
    front = orbit_cameras([0.0], [0.0], 128, 128)
    expected_train = Cameras.cat([front, zero123pp_cameras(128, 128, "v1.1")])
    torch.testing.assert_close(scene.train.cameras.c2w, expected_train.c2w)
    torch.testing.assert_close(scene.train.cameras.K, expected_train.K)
    torch.testing.assert_close(scene.eval.cameras.c2w, consistent4d_eval_cameras(128, 128).c2w)
    v12 = make_synthetic_scene(SyntheticConfig(pseudo_version="v1.2", **SMALL))
    torch.testing.assert_close(v12.train.cameras.c2w[1:], zero123pp_cameras(32, 32, "v1.2").c2w)
    assert v12.eval.image_size == (24, 24)


def test_seed_determinism_and_fresh_copies() -> None:
    cfg = SyntheticConfig(seed=3, **SMALL)
    a = make_synthetic_scene(cfg)
    synthetic._scene_tensors.cache_clear()
    b = make_synthetic_scene(cfg)
    for x, y in ((a.train.rgb, b.train.rgb), (a.eval.alpha, b.eval.alpha)):
        assert torch.equal(x, y)
    assert torch.equal(a.init_points, b.init_points)
    other = make_synthetic_scene(dataclasses.replace(cfg, seed=4))
    assert (other.train.rgb - a.train.rgb).abs().max() > 0.1
    assert not torch.equal(other.init_points, a.init_points)
    # The cache must not leak mutations between callers.
    a.train.rgb.zero_()
    assert torch.equal(make_synthetic_scene(cfg).train.rgb, b.train.rgb)


# ------------------------------------------------------------------------------ motion kinds


def test_static_only_is_frozen(scenes: dict[str, Scene4D]) -> None:
    scene = scenes["static_only"]
    for vs in (scene.train, scene.eval):
        assert torch.equal(vs.rgb, vs.rgb[:, :1].expand_as(vs.rgb))
        assert torch.equal(vs.alpha, vs.alpha[:, :1].expand_as(vs.alpha))
        assert not vs.dyn_mask.any()


def test_mostly_static_moves_only_inside_dyn_mask(scenes: dict[str, Scene4D]) -> None:
    scene = scenes["mostly_static"]
    assert 0.05 <= _dyn_fraction(scene.train) <= 0.20
    assert scene.meta["dyn_fraction_front"] == pytest.approx(_dyn_fraction(scene.train))
    for vs in (scene.train, scene.eval):
        mask = vs.dyn_mask
        assert torch.equal(mask, mask[:, :1].expand_as(mask)), "mask is a union over time"
        static = ~mask
        first_rgb, first_alpha = (
            vs.rgb[:, :1].expand_as(vs.rgb),
            vs.alpha[:, :1].expand_as(vs.alpha),
        )
        assert torch.equal((vs.rgb * static)[...], first_rgb * static)
        assert torch.equal(vs.alpha * static, first_alpha * static)
    # The arm really moves in the input view.
    front = scene.train.rgb[0] * scene.train.alpha[0]
    assert (front - front[:1]).abs().amax() > 0.3


def test_dynamic_only_moves_the_whole_object(scenes: dict[str, Scene4D]) -> None:
    dyn, mostly = scenes["dynamic_only"], scenes["mostly_static"]
    assert _dyn_fraction(dyn.train) > 0.9
    assert _dyn_fraction(dyn.train) > 3 * _dyn_fraction(mostly.train)
    # The body (image centre) changes colour over time, unlike in mostly_static.
    centre = dyn.train.rgb[0, :, 56:72, 56:72]
    assert (centre - centre[:1]).abs().amax() > 0.1
    still = mostly.train.rgb[0, :, 56:72, 56:72]
    assert torch.equal(still, still[:1].expand_as(still))


# ------------------------------------------------------------------------------ geometry


def test_ray_caster_agrees_with_camera_projection() -> None:
    cfg = SyntheticConfig()
    # Odd size, one ray per pixel: the centre pixel's ray is exactly the optical axis.
    cams = orbit_cameras([0.0], [0.0], 65, 65)
    r = render_synthetic(cfg, cams, torch.tensor([0.5]), supersample=1)
    uv, z = cams.project(torch.zeros(1, 3))
    torch.testing.assert_close(uv[0, 0], torch.tensor([32.5, 32.5]))
    assert z[0, 0] == pytest.approx(2.0)
    # The optical axis hits the body ellipsoid at z = c * sqrt(1 - (y0 / b)^2).
    (_, y0, _), (_, b, c) = synthetic._BODY_CENTER, synthetic._BODY_RADII
    hit_z = c * (1 - (y0 / b) ** 2) ** 0.5
    assert r.alpha[0, 0, 32, 32, 0] == 1.0
    assert float(r.depth[0, 0, 32, 32, 0]) == pytest.approx(2.0 - hit_z, abs=1e-4)


def test_moving_part_projects_inside_its_silhouette(scenes: dict[str, Scene4D]) -> None:
    vs = scenes["mostly_static"].train
    cfg = SyntheticConfig()
    centres, radius = moving_part_end(cfg, vs.times)
    cam = vs.cameras[0]
    # The hand's surface point nearest to the input camera, at every frame.
    to_cam = torch.nn.functional.normalize(cam.centers - centres, dim=-1)
    surface = centres + radius * to_cam
    uv, z = cam.project(surface)
    row, col = _nearest_pixel(uv[0], cam)
    frames = torch.arange(vs.num_frames)
    assert (vs.alpha[0, frames, row, col, 0] > 0.99).all()
    assert vs.dyn_mask[0, frames, row, col, 0].all()
    r = render_synthetic(cfg, cam, vs.times)
    torch.testing.assert_close(r.depth[0, frames, row, col, 0], z[0], atol=0.01, rtol=0)
    assert r.moving[0, frames, row, col, 0].all()
    # The hand travels across the image, leaving pixels it covered at frame 0.
    assert (uv[0].amax(0) - uv[0].amin(0)).norm() > 10
    r0, c0 = row[0], col[0]
    assert (vs.alpha[0, :, r0, c0, 0] - vs.alpha[0, 0, r0, c0, 0]).abs().max() > 0.5


def test_multiview_consistency_through_cameras_project() -> None:
    """Points seen in the front view land, via Cameras.project, on the same colour elsewhere."""
    cfg = SyntheticConfig(motion="static_only")
    cams = orbit_cameras([0.0, 10.0], [0.0, 20.0], 96, 96)
    r = render_synthetic(cfg, cams, torch.tensor([0.0]), supersample=1)
    solid = r.alpha[0, 0, ..., 0] == 1
    pts = _unproject(cams, 0, r.depth[0, 0, ..., 0])[solid]
    colors = r.rgb[0, 0][solid]
    uv, z = cams[1].project(pts)
    row, col = _nearest_pixel(uv[0], cams)
    visible = (r.alpha[1, 0, row, col, 0] == 1) & ((r.depth[1, 0, row, col, 0] - z[0]).abs() < 0.02)
    assert visible.float().mean() > 0.7
    diff = (r.rgb[1, 0, row, col] - colors)[visible].abs().amax(-1)
    assert diff.median() < 0.03


def test_positive_elevation_looks_down(scenes: dict[str, Scene4D]) -> None:
    """Zero123++ v1.1 view 1 is at +30° (camera above), view 2 at -20° (camera below)."""
    vs = scenes["static_only"].train
    r = render_synthetic(SyntheticConfig(motion="static_only"), vs.cameras, vs.times[:1])
    up, down = 1, 2
    assert vs.cameras.centers[up, 1] > 0 > vs.cameras.centers[down, 1]

    def visible_world(view: int) -> tuple[torch.Tensor, torch.Tensor]:
        solid = r.alpha[view, 0, ..., 0] == 1
        pts = _unproject(vs.cameras, view, r.depth[view, 0, ..., 0])[solid]
        return pts, r.normal[view, 0][solid]

    pts_up, n_up = visible_world(up)
    pts_down, n_down = visible_world(down)
    # From above the visible surface faces up and sits higher; from below the opposite.
    assert n_up[:, 1].mean() > 0.2 and n_down[:, 1].mean() < -0.1
    assert (n_up[:, 1] > 0.5).float().mean() > 0.25 and (n_down[:, 1] > 0.5).float().mean() < 0.1
    assert pts_up[:, 1].mean() > pts_down[:, 1].mean() + 0.1


def test_whole_object_in_view_for_every_camera(scenes: dict[str, Scene4D]) -> None:
    for scene in scenes.values():
        for vs in (scene.train, scene.eval):
            a = vs.alpha[..., 0]
            coverage = (a > 0.5).float().mean(dim=(2, 3))
            assert (coverage > 0.08).all()
            border = torch.cat([a[..., 0, :], a[..., -1, :], a[..., :, 0], a[..., :, -1]], -1)
            assert border.max() == 0, "the object touches the image border"


@pytest.mark.parametrize("motion", ["mostly_static", "dynamic_only"])
def test_init_points_lie_on_the_surface(scenes: dict[str, Scene4D], motion: str) -> None:
    """Samples and renders agree at the middle frame, also for a rotated/translated body."""
    scene = scenes[motion]
    cfg = SyntheticConfig(motion=motion)
    vs, mid = scene.train, scene.train.num_frames // 2
    pts, cols = scene.init_points, scene.init_colors
    assert pts.norm(dim=-1).max() < 0.7
    uv, z = vs.cameras[0].project(pts)
    row, col = _nearest_pixel(uv[0], vs.cameras)
    # Rim points project within a pixel of the outline: allow one pixel of slack.
    near = torch.nn.functional.max_pool2d(vs.alpha[0, mid, None, ..., 0], 3, 1, padding=1)[0]
    assert (near[row, col] > 0.5).float().mean() > 0.995
    assert (vs.alpha[0, mid, row, col, 0] > 0.5).float().mean() > 0.85
    # Front-visible points sit at the rendered depth and carry the rendered colour.
    r = render_synthetic(cfg, vs.cameras[0], vs.times[mid : mid + 1])
    front = (r.depth[0, 0, row, col, 0] - z[0]).abs() < 0.01
    assert front.float().mean() > 0.3
    diff = (r.rgb[0, 0, row, col] - cols)[front].abs().amax(-1)
    assert diff.median() < 0.05
    # Sampling is deterministic and changes with its seed.
    again, _ = sample_synthetic_surface(cfg, float(vs.times[mid]), 4000)
    assert torch.equal(again, pts)
    other, _ = sample_synthetic_surface(cfg, float(vs.times[mid]), 4000, seed=1)
    assert not torch.equal(other, pts)


# ------------------------------------------------------------------------------ files


def _tree(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_write_consistent4d_tree_and_round_trip(tmp_path: Path) -> None:
    scene = make_synthetic_scene(SyntheticConfig(name="obj", **SMALL))
    out = write_consistent4d(scene, tmp_path)
    assert out == tmp_path / "obj"
    t_range = range(4)
    expected = {f"obj/{t}.png" for t in t_range}
    expected |= {f"eval_gt/obj/eval_{k}/{t}.png" for k in range(4) for t in t_range}
    expected |= {f"obj_mv/ref/{t}_rgba.png" for t in t_range}
    expected |= {f"obj_mv/zero123/{t}_rgba/{j}.png" for t in t_range for j in range(6)}
    assert _tree(tmp_path) == expected | {"obj_mv/zero123/provenance.json"}
    # The provenance says these are exact renders (readers then leave their framing alone).
    provenance = json.loads((tmp_path / "obj_mv/zero123/provenance.json").read_text())
    assert provenance["pseudo_views"] == "oracle" and provenance["stored_as"] == "rgba"
    for rel in expected:
        with Image.open(tmp_path / rel) as img:
            assert img.mode == "RGBA"
            assert img.size == ((24, 24) if rel.startswith("eval_gt") else (32, 32))

    def rgba(vs: ViewSet, v: int, t: int) -> torch.Tensor:
        return torch.cat([vs.rgb[v, t], vs.alpha[v, t]], -1)

    tol = {"atol": 0.5 / 255 + 1e-6, "rtol": 0}
    torch.testing.assert_close(read_rgba(out / "2.png"), rgba(scene.train, 0, 2), **tol)
    torch.testing.assert_close(
        read_rgba(tmp_path / "eval_gt/obj/eval_3/1.png"), rgba(scene.eval, 3, 1), **tol
    )
    torch.testing.assert_close(
        read_rgba(tmp_path / "obj_mv/ref/3_rgba.png"), rgba(scene.train, 0, 3), **tol
    )
    for j in range(6):
        torch.testing.assert_close(
            read_rgba(tmp_path / f"obj_mv/zero123/1_rgba/{j}.png"),
            rgba(scene.train, 1 + j, 1),
            **tol,
        )


def test_rewrite_with_fewer_frames_removes_stale_frames(tmp_path: Path) -> None:
    write_synthetic(SyntheticConfig(name="obj", **{**SMALL, "num_frames": 5}), tmp_path)
    (tmp_path / "obj" / "notes.txt").write_text("user file")
    write_synthetic(SyntheticConfig(name="obj", **{**SMALL, "num_frames": 3}), tmp_path)
    tree = _tree(tmp_path)
    assert {p for p in tree if p.startswith("obj/")} == {
        "obj/0.png",
        "obj/1.png",
        "obj/2.png",
        "obj/notes.txt",
    }
    assert len([p for p in tree if p.startswith("eval_gt/")]) == 4 * 3
    assert len([p for p in tree if p.startswith("obj_mv/zero123/") and p.endswith(".png")]) == 6 * 3
    assert not (tmp_path / "obj_mv/zero123/4_rgba").exists()


def test_write_without_pseudo_views(tmp_path: Path) -> None:
    out = write_synthetic(SyntheticConfig(**SMALL), tmp_path, write_pseudo=False)
    assert out.name == "synthetic_mostly_static"
    assert not any(p.name.endswith("_mv") for p in tmp_path.iterdir())


def test_read_rgba_errors(tmp_path: Path) -> None:
    rgb_file = tmp_path / "opaque_frame.png"
    write_rgb(rgb_file, torch.rand(8, 6, 3))
    with pytest.raises(ValueError, match="opaque_frame.png.*alpha"):
        read_rgba(rgb_file)
    img = read_rgba(rgb_file, require_alpha=False)
    assert img.shape == (8, 6, 4) and torch.equal(img[..., 3], torch.ones(8, 6))
    with pytest.raises(FileNotFoundError, match="missing.png"):
        read_rgba(tmp_path / "missing.png")
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="junk.png"):
        read_rgba(junk)


def test_write_rgba_is_atomic_and_validates(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "img.png"
    x = torch.rand(5, 7, 4)
    write_rgba(target, x)
    write_rgba(target, x.flip(0))  # overwrite in place
    assert sorted(p.name for p in target.parent.iterdir()) == ["img.png"], "no temp file left"
    torch.testing.assert_close(read_rgba(target), x.flip(0), atol=0.5 / 255 + 1e-6, rtol=0)
    with pytest.raises(ValueError, match="H, W, 4"):
        write_rgba(target, torch.rand(5, 7, 3))
    with pytest.raises(ValueError, match="NaN"):
        write_rgba(target, torch.full((2, 2, 4), float("nan")))


# ------------------------------------------------------------------------------ config


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="static_only, mostly_static, dynamic_only"):
        SyntheticConfig(motion="wobbly")
    for bad in (
        {"num_frames": 0},
        {"resolution": 4},
        {"eval_resolution": 2.5},
        {"seed": -1},
        {"num_init_points": 0},
        {"pseudo_version": "v2"},
        {"name": "a/b"},
        {"name": ""},
        {"motion_cycles": 0},
        {"motion_cycles": -1.0},
        {"motion_cycles": True},
        {"motion_cycles": "2"},
        {"motion_cycles": float("inf")},
        {"motion_cycles": float("nan")},
    ):
        with pytest.raises(ValueError, match=next(iter(bad))):
            SyntheticConfig(**bad)
    assert SyntheticConfig(motion="dynamic_only").name == "synthetic_dynamic_only"
    assert SyntheticConfig(seed=2).name == "synthetic_mostly_static_seed2"
    assert SyntheticConfig(name="my_obj").name == "my_obj"
    assert SyntheticConfig(motion_cycles=2).name == "synthetic_mostly_static_cycles2"


def test_motion_cycles_replays_the_same_swing_faster() -> None:
    """k cycles at time t are one cycle at time k·t: the same motion, k times over the clip,
    recorded in the scene's provenance; the default (1) is the one smooth swing."""
    t = torch.linspace(0.0, 1.0, 9)
    one, _ = moving_part_end(SyntheticConfig(), t)
    for k in (2.0, 3.5):
        fast, _ = moving_part_end(SyntheticConfig(motion_cycles=k), t)
        assert torch.allclose(fast, moving_part_end(SyntheticConfig(), k * t)[0], atol=1e-5)
        assert not torch.allclose(fast, one, atol=1e-3)
    # Two cycles: back where it started at mid-clip.
    two, _ = moving_part_end(SyntheticConfig(motion_cycles=2), torch.tensor([0.0, 0.5]))
    assert torch.allclose(two[0], two[1], atol=1e-5)
    scene = make_synthetic_scene(SyntheticConfig(motion_cycles=2, **SMALL))
    assert scene.meta["motion_cycles"] == 2
    assert make_synthetic_scene(SyntheticConfig(**SMALL)).meta["motion_cycles"] == 1.0
