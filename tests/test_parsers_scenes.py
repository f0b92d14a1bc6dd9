"""D-NeRF and N3DV readers, checked against the synthetic object written in those layouts."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from ds4d_pl.cameras import Cameras
from ds4d_pl.data.io import read_rgba, read_video, write_rgb, write_rgba
from ds4d_pl.data.parsers.dnerf import DNeRFConfig, blender_to_opencv, load_dnerf
from ds4d_pl.data.parsers.n3dv import (
    NUM_INIT_POINTS,
    N3DVConfig,
    frustum_points,
    llff_to_opencv,
    load_n3dv,
)
from ds4d_pl.data.parsers.synthetic import SyntheticConfig, render_synthetic
from ds4d_pl.data.parsers.synthetic_scenes import (
    dnerf_split_times,
    synthetic_dnerf_cameras,
    synthetic_n3dv_cameras,
    write_dnerf,
    write_n3dv,
)
from ds4d_pl.export.video import write_video

CFG = SyntheticConfig(motion="mostly_static")
# 8-bit PNGs round each value to the nearest 1/255.
QUANT = 0.5 / 255 + 1e-6
N_TRAIN, N_VAL, N_TEST, RES = 5, 2, 3, 32
N_CAMS, N_FRAMES, W, H = 4, 4, 32, 24


@pytest.fixture(scope="module")
def dnerf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dnerf") / "creature"
    return write_dnerf(CFG, root, num_train=N_TRAIN, num_val=N_VAL, num_test=N_TEST, resolution=RES)


@pytest.fixture(scope="module")
def n3dv_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("n3dv") / "rig"
    return write_n3dv(
        CFG, root, num_cameras=N_CAMS, num_frames=N_FRAMES, resolution=(W, H), background="none"
    )


@pytest.fixture(scope="module")
def n3dv_video_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("n3dv_video") / "rig"
    return write_n3dv(
        CFG,
        root,
        num_cameras=N_CAMS,
        num_frames=N_FRAMES,
        resolution=(W, H),
        as_video=True,
        background="none",
    )


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / src.name
    shutil.copytree(src, dst)
    return dst


def _pinhole(focal: float, w: int, h: int) -> torch.Tensor:
    return torch.tensor([[[focal, 0.0, w / 2], [0.0, focal, h / 2], [0.0, 0.0, 1.0]]])


# ------------------------------------------------------------------------------------------
# Camera conventions


def test_blender_pose_sees_the_world_the_right_way_up() -> None:
    # A Blender camera at +z with identity rotation looks down -z, +x to its right, +y up.
    m = torch.eye(4)
    m[2, 3] = 4.0
    f = 20.0
    cams = Cameras(blender_to_opencv(m.tolist())[None], _pinhole(f, W, H), W, H)
    uv, z = cams.project(torch.tensor([[0.0, 0, 0], [1.0, 0, 0], [0.0, 1, 0]]))
    assert torch.allclose(uv[0, 0], torch.tensor([W / 2, H / 2]))
    assert torch.allclose(z[0], torch.full((3,), 4.0))
    assert torch.allclose(uv[0, 1], torch.tensor([W / 2 + f / 4, H / 2]))  # +x: right half
    assert torch.allclose(uv[0, 2], torch.tensor([W / 2, H / 2 - f / 4]))  # +y: upper half

    # A z-up Blender scene: camera on +x looking at the origin, local axes right = +y world,
    # up = +z world, backwards = +x world.
    m = torch.tensor([[0.0, 0, 1, 4], [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1]])
    cams = Cameras(blender_to_opencv(m)[None], _pinhole(f, W, H), W, H)
    uv, z = cams.project(torch.tensor([[0.0, 0, 0], [0.0, 1, 0], [0.0, 0, 1]]))
    assert torch.allclose(uv[0, 0], torch.tensor([W / 2, H / 2])) and z[0, 0] == 4.0
    assert uv[0, 1, 0] > W / 2 and uv[0, 2, 1] < H / 2


def test_llff_pose_sees_the_world_the_right_way_up() -> None:
    # LLFF columns are (down, right, backwards): a camera at +z looking at the origin, y up.
    f = 20.0
    pose = np.zeros((1, 3, 5))
    pose[0, :, 0] = [0, -1, 0]
    pose[0, :, 1] = [1, 0, 0]
    pose[0, :, 2] = [0, 0, 1]
    pose[0, :, 3] = [0, 0, 4]
    pose[0, :, 4] = [H, W, f]
    for poses in (pose, torch.from_numpy(pose), pose[0]):
        c2w = llff_to_opencv(poses)
        assert c2w.shape == (1, 4, 4) and c2w.dtype == torch.float32
        assert torch.allclose(torch.linalg.det(c2w[:, :3, :3]), torch.ones(1))
    cams = Cameras(llff_to_opencv(pose), _pinhole(f, W, H), W, H)
    uv, z = cams.project(torch.tensor([[0.0, 0, 0], [1.0, 0, 0], [0.0, 1, 0]]))
    assert torch.allclose(uv[0, 0], torch.tensor([W / 2, H / 2])) and z[0, 0] == 4.0
    assert torch.allclose(uv[0, 1], torch.tensor([W / 2 + f / 4, H / 2]))
    assert torch.allclose(uv[0, 2], torch.tensor([W / 2, H / 2 - f / 4]))


def test_frustum_points_lie_in_some_frustum_between_the_bounds() -> None:
    cams = synthetic_n3dv_cameras(3, W, H)
    pts = frustum_points(cams, 1.5, 4.0, 2000, torch.Generator().manual_seed(1))
    again = frustum_points(cams, 1.5, 4.0, 2000, torch.Generator().manual_seed(1))
    assert pts.shape == (2000, 3) and torch.equal(pts, again)
    uv, z = cams.project(pts)
    eps = 1e-3
    inside = (
        (uv[..., 0] >= -eps)
        & (uv[..., 0] <= W + eps)
        & (uv[..., 1] >= -eps)
        & (uv[..., 1] <= H + eps)
        & (z >= 1.5 - eps)
        & (z <= 4.0 + eps)
    )
    assert bool(inside.any(dim=0).all())
    with pytest.raises(ValueError, match="near < far"):
        frustum_points(cams, 2.0, 1.0, 10)


# ------------------------------------------------------------------------------------------
# D-NeRF round trips


def test_dnerf_round_trip_gives_one_view_with_a_camera_per_frame(dnerf_dir: Path) -> None:
    scene = load_dnerf(dnerf_dir)
    assert scene.name == "creature" and scene.num_input_views == 1
    # No point cloud in D-NeRF: random points in the init cube, as 4D-GS does.
    assert scene.init_points.shape == (2000, 3) and scene.init_points.abs().max() <= 1.3
    assert scene.meta["background"] == (1.0, 1.0, 1.0)
    assert scene.meta["split_sizes"] == {"train": N_TRAIN, "test": N_TEST}
    for vs, split, n in ((scene.train, "train", N_TRAIN), (scene.eval, "test", N_TEST)):
        assert vs.rgb.shape == (1, n, RES, RES, 3) and vs.alpha.shape == (1, n, RES, RES, 1)
        assert len(vs.cameras) == n and vs.per_frame_cameras
        assert torch.equal(vs.times, dnerf_split_times(split, n))
        expected = synthetic_dnerf_cameras(split, n, RES)
        assert torch.allclose(vs.cameras.c2w, expected.c2w, atol=1e-6)
        assert torch.allclose(vs.cameras.K, expected.K)
        # Frame f is seen by its own camera.
        assert torch.equal(vs.cameras_at(2).c2w, expected.c2w[2:3])
        # Cameras look at the object: its centre projects to the image centre, inside it.
        uv, _ = vs.cameras.project(torch.zeros(1, 3))
        assert torch.allclose(uv[:, 0], torch.full((n, 2), RES / 2), atol=1e-4)
        assert bool((vs.alpha[0, :, RES // 2, RES // 2] > 0.99).all())
    assert bool((scene.eval.times > 0).all() and (scene.eval.times < 1).all())

    # Images and the reloaded cameras agree: re-rendering from them reproduces the files.
    vs = scene.train
    for f in (0, N_TRAIN - 1):
        r = render_synthetic(CFG, vs.cameras[f], vs.times[f : f + 1], aux=False)
        assert torch.allclose(vs.rgb[0, f], r.rgb[0, 0], atol=QUANT)
        assert torch.allclose(vs.alpha[0, f], r.alpha[0, 0], atol=QUANT)
        # The written dynamic mask is the moving part's pixels in that very image.
        assert torch.equal(vs.dyn_mask[0, f], r.moving[0, 0])
    assert vs.dynamic_mask().any()


def test_dnerf_dynamic_masks_are_all_or_none_and_must_exist(
    dnerf_dir: Path, tmp_path: Path
) -> None:
    root = _copy(dnerf_dir, tmp_path)
    path = root / "transforms_train.json"
    data = json.loads(path.read_text())
    del data["frames"][1]["dyn_mask_path"]
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"transforms_train.json.*4 of 5 frames.*dyn_mask_path"):
        load_dnerf(root)
    for fr in data["frames"]:
        fr.pop("dyn_mask_path", None)
    path.write_text(json.dumps(data))
    assert load_dnerf(root).train.dyn_mask is None
    data["frames"][0]["dyn_mask_path"] = "./train/nope"
    path.write_text(json.dumps(data))
    with pytest.raises(FileNotFoundError, match=r"nope.png: dynamic mask"):
        load_dnerf(root)


def test_dnerf_sorts_frames_by_time_stably(dnerf_dir: Path, tmp_path: Path) -> None:
    root = _copy(dnerf_dir, tmp_path)
    path = root / "transforms_train.json"
    data = json.loads(path.read_text())
    frames = data["frames"]
    frames[3]["time"] = frames[1]["time"]  # a tie: file order must decide
    data["frames"] = [frames[3], frames[4], frames[1], frames[0], frames[2]]
    path.write_text(json.dumps(data))
    vs = load_dnerf(root).train
    assert torch.equal(vs.times, torch.tensor([f["time"] for f in frames])[[0, 3, 1, 2, 4]])
    expected = synthetic_dnerf_cameras("train", N_TRAIN, RES).c2w[[0, 3, 1, 2, 4]]
    assert torch.allclose(vs.cameras.c2w, expected, atol=1e-6)
    first = read_rgba(root / "train" / "r_003.png")
    assert torch.equal(vs.rgb[0, 1], first[..., :3])


def test_dnerf_downscale_and_val_split(dnerf_dir: Path) -> None:
    full = load_dnerf(dnerf_dir)
    half = load_dnerf(dnerf_dir, DNeRFConfig(downscale=2, eval_split="val"))
    assert half.train.rgb.shape == (1, N_TRAIN, RES // 2, RES // 2, 3)
    assert torch.allclose(half.train.cameras.K[:, :2], full.train.cameras.K[:, :2] / 2)
    assert torch.equal(half.train.cameras.c2w, full.train.cameras.c2w)

    def pool(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.avg_pool2d(x[0].permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1)

    # Area average of premultiplied colour and of alpha.
    assert torch.allclose(half.train.alpha[0], pool(full.train.alpha), atol=1e-6)
    premult = half.train.rgb[0] * half.train.alpha[0]
    assert torch.allclose(premult, pool(full.train.rgb * full.train.alpha), atol=1e-5)
    assert half.eval.num_frames == N_VAL and half.meta["eval_split"] == "val"
    assert torch.allclose(
        half.eval.cameras.c2w, synthetic_dnerf_cameras("val", N_VAL, RES).c2w, atol=1e-6
    )


# ------------------------------------------------------------------------------------------
# N3DV round trips


def test_n3dv_round_trip_holds_out_cam00(n3dv_dir: Path) -> None:
    scene = load_n3dv(n3dv_dir, N3DVConfig(downscale=1))
    rig = synthetic_n3dv_cameras(N_CAMS, W, H, background="none")
    train, ev = scene.train, scene.eval
    assert scene.name == "rig" and scene.num_input_views == N_CAMS - 1
    assert train.rgb.shape == (N_CAMS - 1, N_FRAMES, H, W, 3)
    assert ev.rgb.shape == (1, N_FRAMES, H, W, 3)
    assert not train.per_frame_cameras and len(train.cameras) == N_CAMS - 1
    assert torch.allclose(ev.cameras.c2w, rig.c2w[:1], atol=1e-6)
    assert torch.allclose(train.cameras.c2w, rig.c2w[1:], atol=1e-6)
    assert torch.allclose(train.cameras.K, rig.K[1:], atol=1e-4)
    assert bool((train.alpha == 1).all() and (ev.alpha == 1).all())
    assert torch.allclose(train.times, torch.linspace(0, 1, N_FRAMES))
    assert scene.meta["test_cameras"] == ["cam00"]
    assert set(scene.meta["bounds"]) == {f"cam{i:02d}" for i in range(N_CAMS)}
    near, far = scene.meta["near"], scene.meta["far"]
    assert 0 < near < 2.6 - 0.62 and far > 2.6 + 0.62

    # The held-out frames are the object composited on white, seen from cam00's pose.
    r = render_synthetic(CFG, ev.cameras, ev.times, aux=False)
    on_white = r.rgb * r.alpha + (1 - r.alpha)
    assert torch.allclose(ev.rgb, on_white, atol=QUANT)

    # The moving part's masks written next to the frames are the views' dynamic masks.
    assert torch.equal(ev.dyn_mask, r.moving)
    assert scene.meta["dyn_masks"] == "dataset (dyn_masks/)"

    # Initial points: by default the scene's point file (4D-GS's COLMAP name), with colours.
    assert scene.meta["init_points"].endswith("points3D_downsample2.ply")
    assert scene.init_points.shape == (NUM_INIT_POINTS, 3)
    assert float(scene.init_points.norm(dim=-1).max()) < 0.65  # the object's surface
    assert float(scene.init_colors.std()) > 0.05
    # Frustum samples on request: deterministic, inside the training frusta between the bounds.
    frustum = load_n3dv(n3dv_dir, N3DVConfig(downscale=1, init_points="frustum"))
    assert frustum.init_points.shape == (NUM_INIT_POINTS, 3)
    assert torch.equal(frustum.init_colors, torch.full((NUM_INIT_POINTS, 3), 0.5))
    again = load_n3dv(n3dv_dir, N3DVConfig(downscale=1, init_points="frustum"))
    assert torch.equal(again.init_points, frustum.init_points)
    _, z = train.cameras.project(frustum.init_points[:500])
    assert bool(((z >= near - 1e-3) & (z <= far + 1e-3)).any(dim=0).all())


def test_n3dv_downscale_stride_and_test_cameras(n3dv_dir: Path) -> None:
    full = load_n3dv(n3dv_dir, N3DVConfig(downscale=1))
    half = load_n3dv(n3dv_dir)  # default downscale=2
    assert half.train.rgb.shape == (N_CAMS - 1, N_FRAMES, H // 2, W // 2, 3)
    assert torch.allclose(half.train.cameras.K[:, :2], full.train.cameras.K[:, :2] / 2)
    pooled = torch.nn.functional.avg_pool2d(full.train.rgb.flatten(0, 1).permute(0, 3, 1, 2), 2)
    assert torch.allclose(half.train.rgb.flatten(0, 1), pooled.permute(0, 2, 3, 1), atol=1e-6)

    sub = load_n3dv(n3dv_dir, N3DVConfig(downscale=1, frame_stride=2, num_frames=2))
    assert torch.equal(sub.train.rgb, full.train.rgb[:, [0, 2]])
    assert torch.equal(sub.train.times, torch.tensor([0.0, 1.0]))

    none = load_n3dv(n3dv_dir, N3DVConfig(downscale=1, test_cameras=[]))
    assert none.eval is None and none.num_input_views == N_CAMS
    two = load_n3dv(n3dv_dir, N3DVConfig(downscale=1, test_cameras=[3, 1]))
    assert two.meta["test_cameras"] == ["cam03", "cam01"]
    assert torch.equal(two.eval.rgb[1], full.train.rgb[0])


def test_n3dv_video_input_matches_png_input(n3dv_dir: Path, n3dv_video_dir: Path) -> None:
    png = load_n3dv(n3dv_dir, N3DVConfig(downscale=1))
    vid = load_n3dv(n3dv_video_dir, N3DVConfig(downscale=1))
    assert set(vid.meta["sources"].values()) == {"video"}
    assert vid.train.rgb.shape == png.train.rgb.shape
    assert float((vid.train.rgb - png.train.rgb).abs().mean()) < 0.03
    assert float((vid.eval.rgb - png.eval.rgb).abs().mean()) < 0.03
    assert torch.equal(vid.train.cameras.c2w, png.train.cameras.c2w)
    sub = load_n3dv(n3dv_video_dir, N3DVConfig(downscale=2, frame_stride=3, num_frames=2))
    assert sub.train.rgb.shape == (N_CAMS - 1, 2, H // 2, W // 2, 3)


def test_n3dv_frame_layouts_and_pose_size(
    n3dv_dir: Path, n3dv_video_dir: Path, tmp_path: Path
) -> None:
    ref = load_n3dv(n3dv_dir, N3DVConfig(downscale=1))
    root = _copy(n3dv_dir, tmp_path)
    # Frames directly in the camera folder, named with a prefix.
    for f in sorted((root / "cam01" / "images").iterdir()):
        f.rename(root / "cam01" / f"frame_{int(f.stem)}.png")
    (root / "cam01" / "images").rmdir()
    # A video next to extracted frames: the frames are used.
    shutil.copy(n3dv_video_dir / "cam02.mp4", root / "cam02.mp4")
    # Poses made for images twice the size of the frames: the focal length follows the frames.
    pb = np.load(root / "poses_bounds.npy")
    hwf = pb[:, :15].reshape(-1, 3, 5)[:, :, 4].copy()
    scaled = pb.copy()
    scaled[:, 4:15:5] = hwf * 2
    _save_npy(root / "poses_bounds.npy", scaled)
    scene = load_n3dv(root, N3DVConfig(downscale=1))
    assert scene.meta["sources"]["cam02"] == "images"
    assert torch.equal(scene.train.rgb, ref.train.rgb)
    assert torch.allclose(scene.train.cameras.K, ref.train.cameras.K, atol=1e-4)
    squashed = pb.copy()
    squashed[1, 9] = hwf[1, 1] * 2  # row 1's width doubled: another aspect ratio
    _save_npy(root / "poses_bounds.npy", squashed)
    with pytest.raises(ValueError, match=r"poses_bounds\.npy: row 1 \(camera cam01\) is for 64x24"):
        load_n3dv(root, N3DVConfig(downscale=1))


def test_write_n3dv_replaces_an_earlier_write_of_the_other_format(tmp_path: Path) -> None:
    root = tmp_path / "rig"
    write_n3dv(CFG, root, num_cameras=3, num_frames=3, resolution=(16, 16))
    write_n3dv(CFG, root, num_cameras=2, num_frames=2, resolution=(16, 16), as_video=True)
    scene = load_n3dv(root, N3DVConfig(downscale=1))
    assert scene.meta["cameras"] == ["cam00", "cam01"]
    assert set(scene.meta["sources"].values()) == {"video"}
    # The masks stay PNGs next to the videos, trimmed to the new clip.
    assert sorted(p.name for p in (root / "cam01").iterdir()) == ["dyn_masks"]
    assert len(list((root / "cam01" / "dyn_masks").iterdir())) == 2
    assert scene.train.dyn_mask is not None and scene.train.dyn_mask.shape[1] == 2


# ------------------------------------------------------------------------------------------
# D-NeRF bad inputs


def _edit_json(root: Path, split: str, edit) -> None:
    path = root / f"transforms_{split}.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def test_dnerf_config_is_validated() -> None:
    with pytest.raises(ValueError, match="downscale"):
        DNeRFConfig(downscale=0)
    with pytest.raises(ValueError, match="eval_split"):
        DNeRFConfig(eval_split="train")
    with pytest.raises(ValueError, match="background"):
        DNeRFConfig(background=(2.0, 0.0, 0.0))
    assert DNeRFConfig(background=[0, 0, 0]).background == (0.0, 0.0, 0.0)


def test_dnerf_missing_root(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere.*does not exist"):
        load_dnerf(tmp_path / "nowhere")


@pytest.mark.parametrize(
    ("split", "cfg"), [("train", DNeRFConfig()), ("test", DNeRFConfig()), ("val", None)]
)
def test_dnerf_missing_transforms(dnerf_dir: Path, tmp_path: Path, split: str, cfg) -> None:
    root = _copy(dnerf_dir, tmp_path)
    (root / f"transforms_{split}.json").unlink()
    with pytest.raises(FileNotFoundError, match=rf"transforms_{split}\.json.*does not exist"):
        load_dnerf(root, cfg or DNeRFConfig(eval_split=split))


def test_dnerf_malformed_json_names_file_and_line(dnerf_dir: Path, tmp_path: Path) -> None:
    root = _copy(dnerf_dir, tmp_path)
    (root / "transforms_test.json").write_text('{\n  "camera_angle_x": 0.7,\n  "frames": [\n')
    with pytest.raises(ValueError, match=r"transforms_test\.json: malformed JSON at line 4"):
        load_dnerf(root)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.pop("camera_angle_x"), "missing key 'camera_angle_x'"),
        (lambda d: d.pop("frames"), "missing key 'frames'"),
        (lambda d: d["frames"][2].pop("file_path"), r"frames\[2\]: missing key 'file_path'"),
        (lambda d: d["frames"][1].pop("time"), r"frames\[1\]: missing key 'time'"),
        (
            lambda d: d["frames"][0].pop("transform_matrix"),
            r"frames\[0\]: missing key 'transform_matrix'",
        ),
        (
            lambda d: d["frames"][3].update(transform_matrix=[[1, 0, 0, 0]] * 3),
            r"frames\[3\]: 'transform_matrix' must be 4x4, got shape \(3, 4\)",
        ),
        (lambda d: d["frames"][4].update(time=1.5), r"frames\[4\]: 'time' must be .*\[0, 1\]"),
        (lambda d: d["frames"][4].update(time=-0.1), r"frames\[4\]: 'time' must be .*\[0, 1\]"),
        (lambda d: d.update(camera_angle_x="wide"), "'camera_angle_x' must be"),
        (lambda d: d.update(frames=[]), "'frames' must be a non-empty list"),
    ],
)
def test_dnerf_bad_transforms(dnerf_dir: Path, tmp_path: Path, edit, message: str) -> None:
    root = _copy(dnerf_dir, tmp_path)
    _edit_json(root, "train", edit)
    with pytest.raises(ValueError, match=r"transforms_train\.json.*" + message):
        load_dnerf(root)


def test_dnerf_missing_image(dnerf_dir: Path, tmp_path: Path) -> None:
    root = _copy(dnerf_dir, tmp_path)
    (root / "test" / "r_002.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"r_002\.png: image referenced by .*test\.json"):
        load_dnerf(root)


def test_dnerf_inconsistent_image_sizes(dnerf_dir: Path, tmp_path: Path) -> None:
    root = _copy(dnerf_dir, tmp_path)
    write_rgba(root / "train" / "r_001.png", torch.ones(16, 16, 4))
    with pytest.raises(ValueError, match=r"r_001\.png: image is 16x16 but .*r_000\.png.* 32x32"):
        load_dnerf(root)


def test_dnerf_image_without_alpha(dnerf_dir: Path, tmp_path: Path) -> None:
    root = _copy(dnerf_dir, tmp_path)
    write_rgb(root / "train" / "r_001.png", torch.full((RES, RES, 3), 0.25))
    with pytest.raises(ValueError, match=r"r_001\.png: image has no alpha channel"):
        load_dnerf(root)
    scene = load_dnerf(root, DNeRFConfig(require_alpha=False))
    assert bool((scene.train.alpha[0, 1] == 1).all())


def test_dnerf_downscale_must_divide_the_size(dnerf_dir: Path) -> None:
    with pytest.raises(ValueError, match=r"r_000\.png: image size 32x32 .*downscale=3"):
        load_dnerf(dnerf_dir, DNeRFConfig(downscale=3))


# ------------------------------------------------------------------------------------------
# N3DV bad inputs


def _save_npy(path: Path, arr: np.ndarray) -> None:
    with open(path, "wb") as fh:
        np.save(fh, arr)


def test_n3dv_config_is_validated() -> None:
    for kwargs, name in (
        ({"downscale": 0}, "downscale"),
        ({"frame_stride": 0}, "frame_stride"),
        ({"num_frames": 0}, "num_frames"),
        ({"test_cameras": [-1]}, "test_cameras"),
        ({"test_cameras": [1, 1]}, "test_cameras"),
    ):
        with pytest.raises(ValueError, match=name):
            N3DVConfig(**kwargs)


def test_n3dv_missing_root_and_poses(n3dv_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere.*does not exist"):
        load_n3dv(tmp_path / "nowhere")
    root = _copy(n3dv_dir, tmp_path)
    (root / "poses_bounds.npy").unlink()
    with pytest.raises(FileNotFoundError, match=r"poses_bounds\.npy.*does not exist"):
        load_n3dv(root)


def test_n3dv_unreadable_poses(n3dv_dir: Path, tmp_path: Path) -> None:
    root = _copy(n3dv_dir, tmp_path)
    (root / "poses_bounds.npy").write_bytes(b"not an array")
    with pytest.raises(ValueError, match=r"poses_bounds\.npy: cannot read"):
        load_n3dv(root)


def test_n3dv_poses_of_the_wrong_shape(n3dv_dir: Path, tmp_path: Path) -> None:
    root = _copy(n3dv_dir, tmp_path)
    pb = np.load(root / "poses_bounds.npy")
    _save_npy(root / "poses_bounds.npy", pb[:, :15])
    with pytest.raises(ValueError, match=r"poses_bounds\.npy: expected shape \(N, 17\).*\(4, 15\)"):
        load_n3dv(root)
    _save_npy(root / "poses_bounds.npy", pb[:3])
    with pytest.raises(ValueError, match=r"poses_bounds\.npy: has 3 rows .*4 cameras"):
        load_n3dv(root)
    bad = pb.copy()
    bad[2, 15] = bad[2, 16] + 1.0
    _save_npy(root / "poses_bounds.npy", bad)
    with pytest.raises(ValueError, match=r"poses_bounds\.npy: row 2: bounds"):
        load_n3dv(root)


def test_n3dv_without_cameras(n3dv_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "empty"
    root.mkdir()
    shutil.copy(n3dv_dir / "poses_bounds.npy", root)
    with pytest.raises(FileNotFoundError, match="empty: no cameras found"):
        load_n3dv(root)


def test_n3dv_unreadable_video(n3dv_video_dir: Path, tmp_path: Path) -> None:
    root = _copy(n3dv_video_dir, tmp_path)
    (root / "cam02.mp4").write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match=r"cam02\.mp4: cannot decode video"):
        load_n3dv(root)


def test_n3dv_camera_with_another_frame_count(
    n3dv_dir: Path, n3dv_video_dir: Path, tmp_path: Path
) -> None:
    root = _copy(n3dv_dir, tmp_path / "png")
    (root / "cam02" / "images" / f"{N_FRAMES - 1:04d}.png").unlink()
    with pytest.raises(ValueError, match=rf"cam02: camera cam02 has {N_FRAMES - 1} frames but"):
        load_n3dv(root)
    # Fine once the clip is cut to the shortest camera.
    assert load_n3dv(root, N3DVConfig(num_frames=N_FRAMES - 1)).train.num_frames == N_FRAMES - 1

    root = _copy(n3dv_video_dir, tmp_path / "video")
    write_video(root / "cam02.mp4", read_video(root / "cam02.mp4")[:2])
    with pytest.raises(ValueError, match=r"cam02\.mp4: camera cam02 has 2 frames but cam01 has 4"):
        load_n3dv(root)


def test_n3dv_frames_must_be_consecutive(n3dv_dir: Path, tmp_path: Path) -> None:
    root = _copy(n3dv_dir, tmp_path)
    (root / "cam01" / "images" / "0001.png").unlink()
    with pytest.raises(ValueError, match=r"cam01/images: frame numbers are not consecutive"):
        load_n3dv(root)


def test_n3dv_camera_with_another_image_size(n3dv_dir: Path, tmp_path: Path) -> None:
    root = _copy(n3dv_dir, tmp_path)
    for f in range(N_FRAMES):
        write_rgb(root / "cam03" / "images" / f"{f:04d}.png", torch.ones(H // 2, W // 2, 3))
    with pytest.raises(ValueError, match=r"cam03.*camera cam03 frames are 8x6 but cam01"):
        load_n3dv(root)
    write_rgb(root / "cam01" / "images" / "0002.png", torch.ones(H // 2, W // 2, 3))
    with pytest.raises(ValueError, match=r"0002\.png: camera cam01 frame is 16x12"):
        load_n3dv(root, N3DVConfig(downscale=1))


def test_n3dv_test_camera_out_of_range(n3dv_dir: Path) -> None:
    with pytest.raises(ValueError, match=r"rig: test camera position\(s\) \[7\] out of range"):
        load_n3dv(n3dv_dir, N3DVConfig(test_cameras=[0, 7]))
    with pytest.raises(ValueError, match="none is left for training"):
        load_n3dv(n3dv_dir, N3DVConfig(test_cameras=list(range(N_CAMS))))


def test_n3dv_downscale_must_divide_the_size(n3dv_dir: Path) -> None:
    with pytest.raises(ValueError, match=r"0000\.png: frame size 32x24 .*downscale=5"):
        load_n3dv(n3dv_dir, N3DVConfig(downscale=5))
    assert math.isclose(load_n3dv(n3dv_dir, N3DVConfig(downscale=4)).train.cameras.width, W / 4)
