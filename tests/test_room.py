"""The room-like N3DV scene (``ds4d synth --format n3dv``): a fixed rig in a textured room in
which only the object's arm moves, read back through the real N3DV reader."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from ds4d_pl.cameras import Cameras
from ds4d_pl.cli import main
from ds4d_pl.data.io import write_rgb
from ds4d_pl.data.parsers.n3dv import N3DVConfig, load_n3dv
from ds4d_pl.data.parsers.synthetic import SyntheticConfig, render_synthetic
from ds4d_pl.data.parsers.synthetic_room import (
    ROOM_MAX,
    ROOM_MIN,
    render_room,
    render_room_scene,
    sample_room_scene_points,
)
from ds4d_pl.data.parsers.synthetic_scenes import (
    N3DV_BACKGROUNDS,
    POINTS_FILE,
    synthetic_n3dv_cameras,
    write_n3dv,
)
from ds4d_pl.export.ply import save_ply
from ds4d_pl.gaussians.canonical import CanonicalGaussians

CFG = SyntheticConfig(motion="mostly_static")
N_CAMS, N_FRAMES, W, H = 7, 4, 64, 48
N_POINTS = 3000
# Largest share of a frame the moving arm may cover for the scene to count as "mostly static".
SMALL = 0.05


@pytest.fixture(scope="module")
def room_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("room") / "living_room"
    return write_n3dv(
        CFG, root, num_cameras=N_CAMS, num_frames=N_FRAMES, resolution=(W, H), num_points=N_POINTS
    )


@pytest.fixture(scope="module")
def scene(room_dir: Path):
    return load_n3dv(room_dir, N3DVConfig(downscale=1))


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / src.name
    shutil.copytree(src, dst)
    return dst


def _on_room_surface(points: torch.Tensor, tol: float = 1e-3) -> torch.Tensor:
    lo, hi = torch.tensor(ROOM_MIN), torch.tensor(ROOM_MAX)
    inside = ((points >= lo - tol) & (points <= hi + tol)).all(dim=-1)
    on_face = ((points - lo).abs() < tol) | ((points - hi).abs() < tol)
    return inside & on_face.any(dim=-1)


# ------------------------------------------------------------------------------------------
# The room's ray caster


def test_room_depth_lands_on_the_walls() -> None:
    cams = synthetic_n3dv_cameras(3, W, H)
    r = render_room(cams, supersample=1)
    assert r.rgb.shape == (3, H, W, 3) and r.depth.shape == (3, H, W, 1)
    assert bool(torch.isfinite(r.rgb).all() and (r.rgb >= 0).all() and (r.rgb <= 1).all())
    # Back-projecting every pixel centre by its depth gives a point on the box's boundary.
    v, u = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
    for i in range(3):
        K, c2w, z = cams.K[i], cams.c2w[i], r.depth[i, ..., 0]
        local = torch.stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z], -1)
        world = local.reshape(-1, 3) @ c2w[:3, :3].T + c2w[:3, 3]
        assert bool(_on_room_surface(world).all())
    # Textured, not flat: neighbouring pixels differ across the image.
    assert float(r.rgb.std()) > 0.05


def test_room_refuses_cameras_outside_it() -> None:
    cams = synthetic_n3dv_cameras(2, W, H)
    far = Cameras(cams.c2w.clone(), cams.K, W, H)
    far.c2w[1, 2, 3] = 10.0
    with pytest.raises(ValueError, match=r"camera 1 at .* is outside the room"):
        render_room(far)
    with pytest.raises(ValueError, match="supersample"):
        render_room(cams, supersample=0)


def test_object_composited_over_the_room_is_opaque_and_only_the_arm_moves() -> None:
    cams = synthetic_n3dv_cameras(3, W, H)
    times = torch.linspace(0, 1, 5)
    r = render_room_scene(CFG, cams, times)
    obj = render_synthetic(CFG, cams, times, aux=False)
    assert r.rgb.shape == (3, 5, H, W, 3) and torch.equal(r.moving, obj.moving)
    # Where the object covers the pixel fully, the pixel is the object's; elsewhere the room.
    full = obj.alpha[..., 0] == 1
    assert torch.allclose(r.rgb[full], obj.rgb[full])
    room = render_room(cams)
    empty = obj.alpha[..., 0] == 0
    assert torch.allclose(r.rgb[empty], room.rgb[:, None].expand_as(r.rgb)[empty])
    # Outside the pixels the arm ever covers, every frame is identical; inside they change.
    ever = r.moving.any(dim=1, keepdim=True).expand_as(r.moving)[..., 0]
    static = r.rgb[:, :1].expand_as(r.rgb)
    assert torch.equal(r.rgb[~ever], static[~ever])
    assert float((r.rgb[ever] - static[ever]).abs().amax()) > 0.1


# ------------------------------------------------------------------------------------------
# The written scene, through the real N3DV reader


def test_room_scene_loads_through_the_n3dv_reader(room_dir: Path, scene) -> None:
    train, ev = scene.train, scene.eval
    assert scene.num_input_views == N_CAMS - 1
    assert train.rgb.shape == (N_CAMS - 1, N_FRAMES, H, W, 3)
    assert ev.rgb.shape == (1, N_FRAMES, H, W, 3)
    assert bool((train.alpha == 1).all())
    assert scene.meta["test_cameras"] == ["cam00"]
    # Full frame: the room fills every pixel the object leaves (no white background).
    white = (torch.cat([train.rgb, ev.rgb]) > 0.99).all(dim=-1)
    assert float(white.float().mean()) < 0.01
    # The held-out frames are the object in the room seen from cam00.
    rig = synthetic_n3dv_cameras(N_CAMS, W, H)
    truth = render_room_scene(CFG, rig[[0]], ev.times)
    assert torch.allclose(ev.rgb, truth.rgb, atol=0.5 / 255 + 1e-6)
    # The moving-part masks are the exact, per-frame analytic ones.
    assert torch.equal(ev.dyn_mask, truth.moving)
    assert train.dyn_mask.shape == (N_CAMS - 1, N_FRAMES, H, W, 1)
    assert scene.meta["dyn_masks"] == "dataset (dyn_masks/)"


def test_moving_part_is_small_but_present_in_every_frame(room_dir: Path, scene) -> None:
    masks = torch.cat([scene.eval.dyn_mask, scene.train.dyn_mask])
    per_frame = masks.float().mean(dim=(2, 3, 4))  # (V, T)
    assert bool((per_frame > 0).all()), per_frame
    assert float(per_frame.max()) < SMALL, per_frame
    # The writer reports the same shares.
    info = json.loads((room_dir / "synthetic.json").read_text())
    reported = info["moving_fraction"]
    assert info["background"] == "room" and info["test_camera"] == "cam00"
    assert math.isclose(reported["per_frame_mean"], float(per_frame.mean()), rel_tol=1e-5)
    assert math.isclose(reported["per_frame_max"], float(per_frame.max()), rel_tol=1e-5)
    assert set(reported["per_camera_mean"]) == {f"cam{i:02d}" for i in range(N_CAMS)}


def test_downscaled_masks_keep_every_moving_pixel(room_dir: Path, scene) -> None:
    half = load_n3dv(room_dir, N3DVConfig(downscale=2, num_frames=2))
    full = scene.train.dyn_mask[:, :2, ..., 0].float()
    pooled = torch.nn.functional.max_pool2d(full.flatten(0, 1)[:, None], 2)[:, 0] > 0
    assert torch.equal(half.train.dyn_mask[..., 0].flatten(0, 1), pooled)


def test_cam00_is_held_out_in_the_middle_of_the_arc(scene) -> None:
    rig = synthetic_n3dv_cameras(N_CAMS, W, H)
    assert torch.allclose(scene.eval.cameras.c2w[0], rig.c2w[0], atol=1e-6)
    centres = rig.centers
    azimuth = torch.rad2deg(torch.atan2(centres[:, 0], centres[:, 2]))
    train_az = azimuth[1:]
    assert abs(float(azimuth[0])) < 1e-4
    assert math.isclose(float(train_az.min()), -float(train_az.max()), abs_tol=1e-4)
    assert float(train_az.min()) < -10 and float(train_az.max()) > 10  # a real arc
    # Left to right, and cam00 between the two rows of the rig.
    assert bool((train_az[1:] > train_az[:-1]).all())
    heights = centres[:, 1]
    assert float(heights[1:].min()) < float(heights[0]) < float(heights[1:].max())


def test_every_camera_looks_at_the_object_from_inside_the_room() -> None:
    for background in N3DV_BACKGROUNDS:
        rig = synthetic_n3dv_cameras(12, W, H, background)
        # The object's centre projects near the middle of every image, in front of the camera.
        uv, z = rig.project(torch.tensor([[0.0, 0.0, 0.0]]))
        assert bool((z > 1.5).all())
        assert bool(((uv[..., 0] - W / 2).abs() < W / 8).all())
        assert bool(((uv[..., 1] - H / 2).abs() < H / 4).all())
        lo, hi = torch.tensor(ROOM_MIN), torch.tensor(ROOM_MAX)
        assert bool(((rig.centers > lo) & (rig.centers < hi)).all())


def test_poses_bounds_bracket_what_each_camera_sees(room_dir: Path) -> None:
    pb = np.load(room_dir / "poses_bounds.npy")
    rig = synthetic_n3dv_cameras(N_CAMS, W, H)
    depth = render_room(rig, supersample=1).depth
    near, far = torch.tensor(pb[:, 15]), torch.tensor(pb[:, 16])
    assert bool((far > depth.amax(dim=(1, 2, 3)).double()).all())
    assert bool((near < depth.amin(dim=(1, 2, 3)).double()).all())
    assert bool((near < rig.centers.norm(dim=-1).double() - 0.65).all())


def test_the_written_scene_is_deterministic(room_dir: Path, tmp_path: Path) -> None:
    again = write_n3dv(
        CFG,
        tmp_path / "again",
        num_cameras=N_CAMS,
        num_frames=N_FRAMES,
        resolution=(W, H),
        num_points=N_POINTS,
    )
    files = sorted(p.relative_to(room_dir) for p in room_dir.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for rel in files:
        assert (room_dir / rel).read_bytes() == (again / rel).read_bytes(), rel
    # Another seed changes the room's patterns too, not only the object.
    other = render_room(synthetic_n3dv_cameras(2, W, H), seed=1).rgb
    assert not torch.allclose(other, render_room(synthetic_n3dv_cameras(2, W, H)).rgb)


# ------------------------------------------------------------------------------------------
# Initial points


def test_default_initial_points_are_the_rooms_visible_surface(room_dir: Path, scene) -> None:
    assert scene.meta["init_points"] == f"{N_POINTS} points of {room_dir / POINTS_FILE}"
    pts, cols = scene.init_points, scene.init_colors
    assert pts.shape == (N_POINTS, 3) and cols.shape == (N_POINTS, 3)
    # Each point is on a wall or on the object; both kinds are there.
    on_room = _on_room_surface(pts, tol=2e-3)
    on_object = pts.norm(dim=-1) < 0.65
    assert bool((on_room | on_object).all())
    assert 0.02 < float(on_object.float().mean()) < 0.5
    # The PLY stores colours as 8-bit; they are the scene's varied colours, not grey.
    ref_pts, ref_cols = sample_room_scene_points(
        CFG, synthetic_n3dv_cameras(N_CAMS, W, H)[1:], 2 / 3, N_POINTS
    )
    assert torch.allclose(pts, ref_pts, atol=1e-5)
    assert torch.allclose(cols, ref_cols, atol=0.5 / 255 + 1e-6)
    assert float(cols.std(dim=0).min()) > 0.05
    # The front wall behind the rig is never seen, so it gets no points.
    assert not bool((pts[:, 2] > ROOM_MAX[2] - 1e-2).any())


def test_initial_point_options(room_dir: Path, tmp_path: Path) -> None:
    few = load_n3dv(room_dir, N3DVConfig(downscale=4, num_frames=1, num_init_points=500))
    full = load_n3dv(room_dir, N3DVConfig(downscale=4, num_frames=1))
    assert few.init_points.shape == (500, 3)
    # A subset of the file's points, with their colours.
    d = torch.cdist(
        few.init_points, full.init_points, compute_mode="donot_use_mm_for_euclid_dist"
    ).min(dim=1)
    assert float(d.values.max()) < 1e-6
    assert torch.equal(few.init_colors, full.init_colors[d.indices])
    frustum = load_n3dv(room_dir, N3DVConfig(downscale=4, num_frames=1, init_points="frustum"))
    assert frustum.meta["init_points"].startswith("20000 samples in the training cameras")
    assert torch.equal(frustum.init_colors, torch.full((20000, 3), 0.5))

    # Without the file: auto falls back to the frusta, file says what is missing.
    root = _copy(room_dir, tmp_path)
    (root / POINTS_FILE).unlink()
    auto = load_n3dv(root, N3DVConfig(downscale=4, num_frames=1, num_init_points=100))
    assert "frusta" in auto.meta["init_points"]
    with pytest.raises(FileNotFoundError, match=r"points3D_downsample2\.ply: point file not found"):
        load_n3dv(root, N3DVConfig(init_points="file"))
    # Any PLY path can be given; a mesh is refused, naming the file.
    cloud = tmp_path / "elsewhere.ply"
    save_ply(cloud, CanonicalGaussians.from_points(torch.rand(50, 3)))
    other = load_n3dv(root, N3DVConfig(downscale=4, num_frames=1, points_file=str(cloud)))
    assert other.init_points.shape == (50, 3)
    mesh = tmp_path / "mesh.obj"
    mesh.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    with pytest.raises(ValueError, match=r"mesh\.obj: is a mesh"):
        load_n3dv(root, N3DVConfig(init_points="file", points_file=str(mesh)))
    with pytest.raises(ValueError, match="init_points must be one of auto, file, frustum"):
        N3DVConfig(init_points="colmap")
    with pytest.raises(ValueError, match="points_file must be a non-empty path"):
        N3DVConfig(points_file="")


# ------------------------------------------------------------------------------------------
# Masks in the reader: bad input


def test_masks_must_be_given_for_every_camera(room_dir: Path, tmp_path: Path) -> None:
    root = _copy(room_dir, tmp_path)
    shutil.rmtree(root / "cam03" / "dyn_masks")
    with pytest.raises(ValueError, match=r"have moving-part masks \(dyn_masks/\) but cam03 do"):
        load_n3dv(root)
    # Without any masks, the dynamic region is derived from motion as before.
    for i in range(N_CAMS):
        shutil.rmtree(root / f"cam{i:02d}" / "dyn_masks", ignore_errors=True)
    bare = load_n3dv(root, N3DVConfig(downscale=1))
    assert bare.train.dyn_mask is None and bare.meta["dyn_masks"] == "none (derived from motion)"


def test_masks_must_cover_every_frame_at_its_size(room_dir: Path, tmp_path: Path) -> None:
    root = _copy(room_dir, tmp_path)
    (root / "cam02" / "dyn_masks" / f"{N_FRAMES - 1:04d}.png").unlink()
    with pytest.raises(ValueError, match=rf"cam02 has {N_FRAMES - 1} masks but {N_FRAMES} frames"):
        load_n3dv(root)
    # Fine when the clip is cut to the frames that have masks.
    assert load_n3dv(root, N3DVConfig(num_frames=N_FRAMES - 1)).train.num_frames == N_FRAMES - 1
    write_rgb(root / "cam02" / "dyn_masks" / f"{N_FRAMES - 1:04d}.png", torch.zeros(8, 8, 3))
    with pytest.raises(ValueError, match=r"0003\.png: mask is 8x8 but camera cam02's frames"):
        load_n3dv(root)
    for f in (root / "cam02" / "dyn_masks").iterdir():
        f.unlink()
    with pytest.raises(FileNotFoundError, match="cam02 has a mask folder without numbered masks"):
        load_n3dv(root)


# ------------------------------------------------------------------------------------------
# Options of the writer and of ds4d synth


def test_bad_writer_options_raise_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="background must be one of room, none, got 'garden'"):
        write_n3dv(CFG, tmp_path / "a", background="garden")
    with pytest.raises(ValueError, match="num_cameras must be an integer >= 2, got 1"):
        write_n3dv(CFG, tmp_path / "b", num_cameras=1)
    with pytest.raises(ValueError, match="num_points must be an integer >= 1, got 0"):
        write_n3dv(CFG, tmp_path / "c", num_points=0)
    with pytest.raises(ValueError, match="num_points"):
        sample_room_scene_points(CFG, synthetic_n3dv_cameras(2, W, H), 0.5, 0)
    assert not any(tmp_path.iterdir())  # nothing written before the options were checked


def test_synth_command_writes_the_room_by_default(tmp_path: Path, capsys) -> None:
    args = ["synth", "--format", "n3dv", "--num_frames=2", "--resolution=32"]
    with pytest.raises(SystemExit) as exc:
        main([*args, "--out", str(tmp_path / "room"), "--num_cameras=3"])
    assert exc.value.code == 0
    info = json.loads((tmp_path / "room" / "synthetic.json").read_text())
    assert info["background"] == "room" and info["num_cameras"] == 3
    with pytest.raises(SystemExit) as exc:
        main([*args, "--out", str(tmp_path / "plain"), "--background=none", "--num_cameras=3"])
    assert exc.value.code == 0
    plain = load_n3dv(tmp_path / "plain", N3DVConfig(downscale=1))
    assert float((plain.train.rgb > 0.99).all(dim=-1).float().mean()) > 0.5  # white around
    with pytest.raises(SystemExit) as exc:
        main([*args, "--out", str(tmp_path / "x"), "--background=garden"])
    assert exc.value.code == 2
    assert "invalid choice: 'garden'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main([*args, "--out", str(tmp_path / "y"), "--num_cameras=1"])
    assert exc.value.code == 2
    assert "num_cameras must be an integer >= 2, got 1" in capsys.readouterr().err
