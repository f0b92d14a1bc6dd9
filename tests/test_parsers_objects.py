"""Spec of the object-dataset parsers: Consistent4D, Objaverse renders, Zero123++ sequences.

Fixtures are written in the real on-disk formats (RGBA / RGB PNGs, single-channel masks,
camera.json files, videos) at 16 px with 3-4 frames.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from ds4d_pl.cameras import (
    Cameras,
    consistent4d_eval_cameras,
    intrinsics_from_fov,
    opengl_to_opencv,
    orbit_cameras,
    zero123pp_cameras,
)
from ds4d_pl.data.io import write_rgb, write_rgba
from ds4d_pl.data.parsers.consistent4d import Consistent4DConfig, load_consistent4d
from ds4d_pl.data.parsers.multiview_sequence import (
    MultiviewSequenceConfig,
    load_multiview_sequence,
)
from ds4d_pl.data.parsers.objaverse import ObjaverseConfig, load_objaverse, read_camera_json
from ds4d_pl.data.parsers.synthetic import (
    SyntheticConfig,
    make_synthetic_scene,
    render_synthetic,
    write_synthetic,
)
from ds4d_pl.data.types import ViewSet
from ds4d_pl.export.video import write_video

S = 16  # image size of the hand-written fixtures
SYNTH = SyntheticConfig(name="obj", num_frames=3, resolution=S, eval_resolution=S)
TOL = {"atol": 1.0 / 255 + 1e-6, "rtol": 0.0}


def _rand(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


def _frames(folder: Path, t: int, size: int = S, name: str = "{t}.png", seed: int = 0) -> None:
    for i in range(t):
        write_rgba(folder / name.format(t=i), _rand((size, size, 4), seed + i))


def _write_c4d(root: Path, t: int = 3, eval_frames: int | None = None) -> None:
    _frames(root / "obj", t)
    for k in range(4):
        _frames(root / "eval_gt" / "obj" / f"eval_{k}", t if eval_frames is None else eval_frames)


def _write_zero123(folder: Path, t: int, views: int = 6, size: int = S) -> None:
    for i in range(t):
        _frames(folder / f"{i}_rgba", views, size, seed=10 * i)


def _rgba(vs: ViewSet) -> torch.Tensor:
    return torch.cat([vs.rgb, vs.alpha], dim=-1)


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic object written in the Consistent4D layout (with ``obj_mv/``)."""
    root = tmp_path_factory.mktemp("synth")
    write_synthetic(SYNTH, root)
    return root


# ------------------------------------------------------------------------------ Consistent4D


def test_consistent4d_reads_input_and_eval_views(tmp_path: Path) -> None:
    _write_c4d(tmp_path)
    scene = load_consistent4d(tmp_path, "obj")
    assert scene.train.rgb.shape == (1, 3, S, S, 3)
    assert scene.eval.rgb.shape == (4, 3, S, S, 3)
    assert scene.train.source == "gt" and scene.num_input_views == 1
    assert torch.allclose(scene.train.times, torch.tensor([0.0, 0.5, 1.0]))
    small = load_consistent4d(tmp_path, "obj", Consistent4DConfig(resolution=8, eval_resolution=4))
    assert small.train.rgb.shape[2:4] == (8, 8) and small.eval.rgb.shape[2:4] == (4, 4)
    assert (small.train.cameras.width, small.eval.cameras.width) == (8, 4)


def test_consistent4d_without_eval_folder_has_no_eval_views(tmp_path: Path) -> None:
    _frames(tmp_path / "obj", 2)
    assert load_consistent4d(tmp_path, "obj").eval is None


@pytest.mark.parametrize("name", ["{t}.png", "{t:04d}.png"])
def test_consistent4d_frames_sort_numerically(tmp_path: Path, name: str) -> None:
    for i in range(12):
        write_rgba(tmp_path / "obj" / name.format(t=i), torch.full((4, 4, 4), i / 11))
    scene = load_consistent4d(tmp_path, "obj")
    assert torch.allclose(scene.train.rgb[0, :, 0, 0, 0], torch.arange(12) / 11, atol=1 / 255)


def test_consistent4d_round_trip_of_the_synthetic_writer(synth_root: Path) -> None:
    scene = load_consistent4d(synth_root, "obj")
    ref = make_synthetic_scene(SYNTH)
    assert scene.train.source == "zero123pp" and scene.train.num_views == 7
    assert scene.meta["background"] == (1.0, 1.0, 1.0)  # the protocol's white
    torch.testing.assert_close(_rgba(scene.train), _rgba(ref.train), **TOL)
    torch.testing.assert_close(_rgba(scene.eval), _rgba(ref.eval), **TOL)
    torch.testing.assert_close(scene.train.cameras.c2w, ref.train.cameras.c2w)
    torch.testing.assert_close(scene.eval.cameras.c2w, consistent4d_eval_cameras(S, S).c2w)
    torch.testing.assert_close(scene.train.times, ref.train.times)


def test_consistent4d_eval_cameras_match_the_rendered_ground_truth(synth_root: Path) -> None:
    # The loaded cameras must see what the files show: re-rendering the analytic object from
    # them reproduces the evaluation images (a wrong azimuth sign would mirror them).
    scene = load_consistent4d(synth_root, "obj")
    r = render_synthetic(SYNTH, scene.eval.cameras, scene.eval.times, aux=False)
    torch.testing.assert_close(r.alpha, scene.eval.alpha, **TOL)
    # Mirrored order (-az) would not match.
    mirrored = orbit_cameras([0.0] * 4, [75.0, -15.0, -105.0, -195.0], S, S)
    m = render_synthetic(SYNTH, mirrored, scene.eval.times[:1], aux=False)
    assert (m.rgb[:, 0] - scene.eval.rgb[:, 0]).abs().max() > 0.1


def test_object_protocol_cameras_look_at_the_origin(synth_root: Path) -> None:
    scene = load_consistent4d(synth_root, "obj")
    for cams in (scene.train.cameras, scene.eval.cameras):
        uv, depth = cams.project(torch.zeros(1, 3))
        torch.testing.assert_close(uv[:, 0], torch.full((len(cams), 2), S / 2))
        torch.testing.assert_close(depth[:, 0], torch.full((len(cams),), 2.0))


def test_consistent4d_max_frames_and_pseudo_version(synth_root: Path) -> None:
    cfg = Consistent4DConfig(max_frames=2, pseudo_version="v1.2")
    scene = load_consistent4d(synth_root, "obj", cfg)
    assert scene.train.num_frames == 2 and scene.eval.num_frames == 2
    assert torch.allclose(scene.train.times, torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(scene.train.cameras.c2w[1:], zero123pp_cameras(S, S, "v1.2").c2w)
    off = Consistent4DConfig(pseudo_dir=None, eval_dir=None)
    bare = load_consistent4d(synth_root, "obj", off)
    assert bare.train.num_views == 1 and bare.eval is None


def test_consistent4d_reads_an_rgba_video(tmp_path: Path) -> None:
    # PNG-in-MOV keeps the alpha channel, so no masks are needed.
    frames = (_rand((3, S, S, 4), 0) * 255).round().to(torch.uint8).numpy()
    with av.open(str(tmp_path / "obj.mov"), "w", format="mov") as c:
        stream = c.add_stream("png", rate=10)
        stream.width, stream.height, stream.pix_fmt = S, S, "rgba"
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgba")):
                c.mux(packet)
        for packet in stream.encode():
            c.mux(packet)
    scene = load_consistent4d(tmp_path, "obj", Consistent4DConfig(input_video="{obj}.mov"))
    torch.testing.assert_close(scene.train.alpha[0], torch.from_numpy(frames[..., 3:]) / 255.0)


def test_consistent4d_video_without_alpha_takes_masks_from_alpha_dir(tmp_path: Path) -> None:
    write_video(tmp_path / "clip.mp4", _rand((3, S, S, 3), 0))
    for i in range(3):
        Image.fromarray(np.full((S, S), 60 * i, np.uint8), mode="L").save(tmp_path / f"{i}.png")
    cfg = Consistent4DConfig(input_video=str(tmp_path / "clip.mp4"), alpha_dir=".")
    scene = load_consistent4d(tmp_path, "obj", cfg)
    assert scene.train.rgb.shape == (1, 3, S, S, 3)
    torch.testing.assert_close(scene.train.alpha[0, :, 0, 0, 0], torch.tensor([0, 60, 120]) / 255)


def test_consistent4d_rgb_frames_with_masks(tmp_path: Path) -> None:
    (tmp_path / "masks").mkdir()
    for i in range(2):
        write_rgb(tmp_path / "obj" / f"{i}.png", _rand((S, S, 3), i))
        Image.fromarray(np.full((S, S), 255, np.uint8), mode="L").save(tmp_path / f"masks/{i}.png")
    scene = load_consistent4d(tmp_path, "obj", Consistent4DConfig(alpha_dir="masks"))
    assert bool((scene.train.alpha == 1).all())


# Bad input: each error names the offending file or folder.


def test_consistent4d_missing_root_names_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_consistent4d(tmp_path / "nowhere", "obj")


def test_consistent4d_gap_in_frame_numbers(tmp_path: Path) -> None:
    _write_c4d(tmp_path)
    (tmp_path / "obj" / "1.png").unlink()
    with pytest.raises(ValueError, match=r"obj: frame numbers .* missing \[1\]"):
        load_consistent4d(tmp_path, "obj")


def test_consistent4d_two_names_for_one_frame(tmp_path: Path) -> None:
    _frames(tmp_path / "obj", 2)
    write_rgba(tmp_path / "obj" / "01.png", _rand((S, S, 4), 0))
    with pytest.raises(ValueError, match=r"01\.png and 1\.png are both frame 1"):
        load_consistent4d(tmp_path, "obj")


@pytest.mark.parametrize("eval_frames", [2, 4])
def test_consistent4d_eval_view_frame_count_must_match(tmp_path: Path, eval_frames: int) -> None:
    _write_c4d(tmp_path, eval_frames=eval_frames)
    with pytest.raises(ValueError, match=rf"eval_0: .* {eval_frames} frames but the input .* 3"):
        load_consistent4d(tmp_path, "obj")


def test_consistent4d_pseudo_view_folder_with_extra_frames(tmp_path: Path) -> None:
    _write_c4d(tmp_path)
    _write_zero123(tmp_path / "obj_mv" / "zero123", 4)
    with pytest.raises(ValueError, match=r"zero123: .* 4 frames .* 3 \(extra frames\)"):
        load_consistent4d(tmp_path, "obj")


def test_consistent4d_inconsistent_image_sizes(tmp_path: Path) -> None:
    _write_c4d(tmp_path)
    write_rgba(tmp_path / "obj" / "2.png", _rand((6, 6, 4), 0))
    with pytest.raises(ValueError, match=r"2\.png: image is 6x6 but .*0\.png is 16x16"):
        load_consistent4d(tmp_path, "obj")


def test_consistent4d_eval_views_of_different_sizes(tmp_path: Path) -> None:
    _write_c4d(tmp_path)
    _frames(tmp_path / "eval_gt" / "obj" / "eval_3", 3, size=8)
    with pytest.raises(ValueError, match=r"eval_3.0\.png: image is 8x8"):
        load_consistent4d(tmp_path, "obj")
    load_consistent4d(tmp_path, "obj", Consistent4DConfig(eval_resolution=8))


def test_consistent4d_rgb_input_frame_has_no_alpha(tmp_path: Path) -> None:
    _write_c4d(tmp_path)
    write_rgb(tmp_path / "obj" / "1.png", _rand((S, S, 3), 0))
    with pytest.raises(ValueError, match=r"obj.1\.png: image has no alpha channel.*alpha_dir"):
        load_consistent4d(tmp_path, "obj")


def test_consistent4d_video_without_alpha_needs_rgba_or_masks(tmp_path: Path) -> None:
    write_video(tmp_path / "obj.mp4", _rand((3, S, S, 3), 0))
    with pytest.raises(ValueError, match=r"obj\.mp4: video has no alpha channel.*RGBA"):
        load_consistent4d(tmp_path, "obj", Consistent4DConfig(input_video="{obj}.mp4"))


def test_consistent4d_unreadable_video(tmp_path: Path) -> None:
    (tmp_path / "obj.mp4").write_bytes(b"not a video at all")
    with pytest.raises(ValueError, match=r"obj\.mp4: cannot decode video"):
        load_consistent4d(tmp_path, "obj", Consistent4DConfig(input_video="{obj}.mp4"))


def test_consistent4d_missing_eval_view_folder(tmp_path: Path) -> None:
    _write_c4d(tmp_path)
    shutil.rmtree(tmp_path / "eval_gt" / "obj" / "eval_2")
    with pytest.raises(FileNotFoundError, match=r"eval_2: evaluation view folder missing"):
        load_consistent4d(tmp_path, "obj")


def test_consistent4d_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="max_frames"):
        Consistent4DConfig(max_frames=0)
    with pytest.raises(ValueError, match="pseudo_version"):
        Consistent4DConfig(pseudo_version="v2")


# ------------------------------------------------------------------------------ Objaverse


def _camera_json(folder: Path, data: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "camera.json").write_text(json.dumps(data))


def _gl_c2w(el: float, az: float, radius: float = 2.0) -> list[list[float]]:
    cam = orbit_cameras([el], [az], S, S, radius=radius)
    # The OpenCV<->OpenGL axis flip is its own inverse.
    return opengl_to_opencv(cam.c2w)[0].tolist()


def _write_render(root: Path, t: int = 3) -> None:
    """Three views of ``uid``: RGBA + angles, RGB + masks + OpenGL c2w, RGBA + OpenCV c2w + K."""
    obj = root / "uid"
    _frames(obj / "0" / "img", t)
    _camera_json(obj / "0", {"elevation_deg": 0.0, "azimuth_deg": 0.0})
    for i in range(t):
        write_rgb(obj / "1" / "img" / f"{i}.png", _rand((S, S, 3), i))
        (obj / "1" / "mask").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((S, S), 40 * i, np.uint8), mode="L").save(
            obj / "1" / "mask" / f"{i}.png"
        )
    _camera_json(obj / "1", {"c2w": _gl_c2w(0.0, 90.0), "fov_deg": 49.1})
    _frames(obj / "2" / "img", t, seed=5)
    cv = orbit_cameras([20.0], [180.0], S, S).c2w[0].tolist()
    k = intrinsics_from_fov(49.1, S, S).tolist()
    _camera_json(obj / "2", {"c2w": cv, "convention": "opencv", "K": k})


def test_objaverse_protocol_layout_reuses_the_consistent4d_reader(synth_root: Path) -> None:
    for layout in ("protocol", "auto"):
        scene = load_objaverse(synth_root, "obj", ObjaverseConfig(layout=layout))
        assert scene.meta["dataset"] == "objaverse" and scene.meta["layout"] == "protocol"
        assert scene.train.num_views == 7 and scene.eval.num_views == 4
        torch.testing.assert_close(scene.eval.cameras.c2w, consistent4d_eval_cameras(S, S).c2w)


def test_objaverse_render_layout(tmp_path: Path) -> None:
    _write_render(tmp_path)
    scene = load_objaverse(tmp_path, "uid")
    assert scene.meta["layout"] == "render" and scene.meta["input_view"] == "0"
    assert scene.meta["eval_views"] == ["1", "2"]
    assert scene.train.rgb.shape == (1, 3, S, S, 3) and scene.eval.rgb.shape == (2, 3, S, S, 3)
    # View 1 is RGB: its alpha comes from the masks.
    torch.testing.assert_close(scene.eval.alpha[0, :, 0, 0, 0], torch.tensor([0, 40, 80]) / 255)
    expected = orbit_cameras([0.0, 20.0], [90.0, 180.0], S, S)
    torch.testing.assert_close(scene.eval.cameras.c2w, expected.c2w, atol=1e-5, rtol=0)
    torch.testing.assert_close(scene.eval.cameras.K, expected.K)
    torch.testing.assert_close(torch.tensor(scene.meta["world_from_files"]), torch.eye(4))
    small = load_objaverse(tmp_path, "uid", ObjaverseConfig(resolution=8, eval_views=[2]))
    assert small.train.rgb.shape[2:4] == (8, 8) and small.eval.num_views == 1
    torch.testing.assert_close(small.train.cameras.K[0], intrinsics_from_fov(49.1, 8, 8))


def test_objaverse_angle_and_matrix_camera_files_agree(tmp_path: Path) -> None:
    el, az, radius, fov = 25.0, -40.0, 1.7, 35.0
    forms = {
        "angles": {"elevation_deg": el, "azimuth_deg": az, "radius": radius, "fov_deg": fov},
        "opengl": {"c2w": _gl_c2w(el, az, radius), "fov_deg": fov},
        "opencv": {
            "c2w": orbit_cameras([el], [az], S, S, radius=radius).c2w[0].tolist(),
            "convention": "opencv",
            "K": intrinsics_from_fov(fov, 24, 20).tolist(),
        },
    }
    cams = {}
    for name, data in forms.items():
        _camera_json(tmp_path / name, data)
        cams[name] = read_camera_json(tmp_path / name / "camera.json", 24, 20)
    for name in ("opengl", "opencv"):
        torch.testing.assert_close(cams[name].c2w, cams["angles"].c2w, atol=1e-5, rtol=0)
        torch.testing.assert_close(cams[name].K, cams["angles"].K)


def test_objaverse_render_cameras_match_rendered_images(tmp_path: Path) -> None:
    # Blender-style renders: OpenGL c2w in a world where the input camera is not the front one.
    # Aligned to the protocol, the loaded cameras must still reproduce every view's pixels.
    poses = {"0": (15.0, 30.0), "1": (0.0, 120.0), "2": (-10.0, 250.0)}
    times = SYNTH.times
    for name, (el, az) in poses.items():
        cam = orbit_cameras([el], [az], S, S, radius=2.5)
        r = render_synthetic(SYNTH, cam, times, aux=False)
        for i in range(len(times)):
            rgba = torch.cat([r.rgb[0, i], r.alpha[0, i]], -1)
            write_rgba(tmp_path / "uid" / name / "img" / f"{i}.png", rgba)
        _camera_json(tmp_path / "uid" / name, {"c2w": _gl_c2w(el, az, 2.5), "fov_deg": 49.1})
    scene = load_objaverse(tmp_path, "uid")
    front = orbit_cameras([0.0], [0.0], S, S)
    torch.testing.assert_close(scene.train.cameras.c2w, front.c2w, atol=1e-5, rtol=0)
    # Rendering the object moved by the same similarity is not available, so check the relative
    # geometry instead: input-to-eval poses are kept (translation scaled by 2 / 2.5).
    for k, name in enumerate(("1", "2")):
        el, az = poses[name]
        raw = orbit_cameras([poses["0"][0], el], [poses["0"][1], az], S, S, radius=2.5).c2w
        rel_raw = torch.linalg.inv(raw[0]) @ raw[1]
        rel = torch.linalg.inv(scene.train.cameras.c2w[0]) @ scene.eval.cameras.c2w[k]
        torch.testing.assert_close(rel[:3, :3], rel_raw[:3, :3], atol=1e-5, rtol=0)
        torch.testing.assert_close(rel[:3, 3], rel_raw[:3, 3] * 0.8, atol=1e-5, rtol=0)
    # Without alignment the files' world is kept, and it reproduces the rendered pixels.
    kept = load_objaverse(tmp_path, "uid", ObjaverseConfig(align_to_input=False))
    r = render_synthetic(SYNTH, kept.eval.cameras, times, aux=False)
    torch.testing.assert_close(r.alpha, kept.eval.alpha, **TOL)


def test_objaverse_pseudo_views_need_the_input_at_the_front(tmp_path: Path) -> None:
    _write_render(tmp_path)
    _camera_json(tmp_path / "uid" / "0", {"elevation_deg": 10.0, "azimuth_deg": 0.0})
    _write_zero123(tmp_path / "uid_mv" / "zero123", 3)
    scene = load_objaverse(tmp_path, "uid")
    assert scene.train.num_views == 7 and scene.train.source == "zero123pp"
    with pytest.raises(ValueError, match=r"0.camera\.json: pseudo views .*align_to_input"):
        load_objaverse(tmp_path, "uid", ObjaverseConfig(align_to_input=False))


def test_objaverse_missing_camera_json(tmp_path: Path) -> None:
    _write_render(tmp_path)
    (tmp_path / "uid" / "2" / "camera.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"2.camera\.json: camera file missing"):
        load_objaverse(tmp_path, "uid")


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{not json", "malformed JSON"),
        ('{"c2w": [[1, 0], [0, 1]], "fov_deg": 40}', "4x4"),
        ('{"c2w": [[2,0,0,0],[0,1,0,0],[0,0,1,0],[0,0,0,1]], "fov_deg": 40}', "not a rotation"),
        ('{"c2w": [[1,0,0,0],[0,1,0,0],[0,0,1,2],[0,0,0,1]]}', "'fov_deg' or 'K'"),
        ('{"azimuth_deg": 10, "c2w": []}', "exactly one camera form"),
        ('{"elevation_deg": 0, "azimuth_deg": "x"}', "finite number"),
    ],
)
def test_objaverse_malformed_camera_json(tmp_path: Path, content: str, problem: str) -> None:
    _write_render(tmp_path)
    (tmp_path / "uid" / "1" / "camera.json").write_text(content)
    with pytest.raises(ValueError, match=rf"1.camera\.json: .*{problem}"):
        load_objaverse(tmp_path, "uid")


def test_objaverse_mask_and_image_counts_must_match(tmp_path: Path) -> None:
    _write_render(tmp_path)
    (tmp_path / "uid" / "1" / "mask" / "2.png").unlink()
    with pytest.raises(ValueError, match=r"1.mask: 2 masks but .*img has 3 images"):
        load_objaverse(tmp_path, "uid")


def test_objaverse_image_size_mismatch(tmp_path: Path) -> None:
    _write_render(tmp_path)
    write_rgba(tmp_path / "uid" / "2" / "img" / "1.png", _rand((8, 8, 4), 0))
    with pytest.raises(ValueError, match=r"2.img.1\.png: image is 8x8 but"):
        load_objaverse(tmp_path, "uid")


def test_objaverse_rgb_image_without_mask(tmp_path: Path) -> None:
    _write_render(tmp_path)
    shutil.rmtree(tmp_path / "uid" / "1" / "mask")
    with pytest.raises(ValueError, match=r"1.img.0\.png: image has no alpha.*mask"):
        load_objaverse(tmp_path, "uid")


def test_objaverse_views_must_have_the_same_frames(tmp_path: Path) -> None:
    _write_render(tmp_path)
    write_rgba(tmp_path / "uid" / "2" / "img" / "3.png", _rand((S, S, 4), 0))
    with pytest.raises(ValueError, match=r"2.img: view has 4 frames but the input view"):
        load_objaverse(tmp_path, "uid")


def test_objaverse_unknown_view(tmp_path: Path) -> None:
    _write_render(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"uid.7: view folder .*\(views: 0, 1, 2\)"):
        load_objaverse(tmp_path, "uid", ObjaverseConfig(input_view="7"))


# ------------------------------------------------------------------------------ Zero123++ sequences


def _write_sequence(root: Path, t: int = 3) -> None:
    _frames(root / "seq" / "ref", t, name="{t}_rgba.png")
    _write_zero123(root / "seq" / "zero123", t, size=2 * S)


def test_multiview_sequence_round_trip_of_the_synthetic_writer(synth_root: Path) -> None:
    scene = load_multiview_sequence(synth_root, "obj_mv")
    ref = make_synthetic_scene(SYNTH)
    assert scene.name == "obj" and scene.num_input_views == 1
    assert scene.train.source == "zero123pp" and scene.train.num_views == 7
    torch.testing.assert_close(_rgba(scene.train), _rgba(ref.train), **TOL)
    torch.testing.assert_close(scene.train.cameras.c2w, ref.train.cameras.c2w)
    torch.testing.assert_close(_rgba(scene.eval), _rgba(ref.eval), **TOL)
    torch.testing.assert_close(scene.eval.cameras.c2w, consistent4d_eval_cameras(S, S).c2w)


def test_multiview_sequence_versions_sizes_and_eval_root(tmp_path: Path) -> None:
    _write_sequence(tmp_path)
    cfg = MultiviewSequenceConfig(zero123pp_version="v1.2", max_frames=2)
    scene = load_multiview_sequence(tmp_path, "seq", cfg)
    # Pseudo views (32 px) are resized to the input view's size.
    assert scene.train.rgb.shape == (7, 2, S, S, 3) and scene.eval is None
    torch.testing.assert_close(scene.train.cameras.c2w[1:], zero123pp_cameras(S, S, "v1.2").c2w)
    torch.testing.assert_close(scene.train.cameras.c2w[:1], orbit_cameras([0], [0], S, S).c2w)
    eyes = scene.train.cameras.c2w[1:, :3, 3]
    el = [math.degrees(math.asin(float(e[1] / e.norm()))) for e in eyes]
    assert el == pytest.approx([20, -10, 20, -10, 20, -10], abs=1e-3)
    with pytest.raises(FileNotFoundError, match=r"elsewhere.eval_gt.seq: evaluation folder"):
        load_multiview_sequence(
            tmp_path, "seq", MultiviewSequenceConfig(eval_root=str(tmp_path / "elsewhere"))
        )


def test_multiview_sequence_missing_ref_frame(tmp_path: Path) -> None:
    _write_sequence(tmp_path)
    (tmp_path / "seq" / "ref" / "1_rgba.png").unlink()
    with pytest.raises(ValueError, match=r"ref: frame numbers .* missing \[1\]"):
        load_multiview_sequence(tmp_path, "seq")


def test_multiview_sequence_missing_ref_folder(tmp_path: Path) -> None:
    _write_sequence(tmp_path)
    shutil.rmtree(tmp_path / "seq" / "ref")
    with pytest.raises(FileNotFoundError, match=r"seq.ref: frame folder does not exist"):
        load_multiview_sequence(tmp_path, "seq")


def test_multiview_sequence_frame_folder_with_fewer_than_six_views(tmp_path: Path) -> None:
    _write_sequence(tmp_path)
    (tmp_path / "seq" / "zero123" / "1_rgba" / "5.png").unlink()
    with pytest.raises(ValueError, match=r"1_rgba: holds 5 views .* Zero123\+\+ gives 6"):
        load_multiview_sequence(tmp_path, "seq")


def test_multiview_sequence_gap_in_pseudo_frames(tmp_path: Path) -> None:
    _write_sequence(tmp_path)
    shutil.rmtree(tmp_path / "seq" / "zero123" / "1_rgba")
    with pytest.raises(ValueError, match=r"zero123: frame numbers .* missing \[1\]"):
        load_multiview_sequence(tmp_path, "seq")


def test_multiview_sequence_fewer_pseudo_frames_than_ref(tmp_path: Path) -> None:
    _write_sequence(tmp_path)
    shutil.rmtree(tmp_path / "seq" / "zero123" / "2_rgba")
    with pytest.raises(ValueError, match=r"zero123: .* 2 frames .* 3 \(missing frames\)"):
        load_multiview_sequence(tmp_path, "seq")


def test_multiview_sequence_size_mismatch(tmp_path: Path) -> None:
    _write_sequence(tmp_path)
    write_rgba(tmp_path / "seq" / "zero123" / "2_rgba" / "3.png", _rand((8, 8, 4), 0))
    with pytest.raises(ValueError, match=r"2_rgba.3\.png: image is 8x8 but"):
        load_multiview_sequence(tmp_path, "seq")


def test_multiview_sequence_pseudo_view_of_another_aspect_ratio(tmp_path: Path) -> None:
    _write_sequence(tmp_path)
    for i in range(3):
        write_rgba(tmp_path / "seq" / "zero123" / f"{i}_rgba" / "0.png", _rand((8, 12, 4), 0))
    with pytest.raises(ValueError, match=r"0_rgba.0\.png: image is 12x8; resizing it to 16x16"):
        load_multiview_sequence(tmp_path, "seq")


def test_multiview_sequence_ref_frame_without_alpha(tmp_path: Path) -> None:
    _write_sequence(tmp_path)
    write_rgb(tmp_path / "seq" / "ref" / "0_rgba.png", _rand((S, S, 3), 0))
    with pytest.raises(ValueError, match=r"0_rgba\.png: image has no alpha channel"):
        load_multiview_sequence(tmp_path, "seq")


def test_camera_batches_share_the_loaded_image_size(tmp_path: Path) -> None:
    _write_sequence(tmp_path)
    scene = load_multiview_sequence(tmp_path, "seq", MultiviewSequenceConfig(resolution=8))
    assert isinstance(scene.train.cameras, Cameras)
    assert (scene.train.cameras.width, scene.train.cameras.height) == (8, 8)


# ------------------------------------------------------------------------------ generated views


def _opaque_view(seed: int, size: int = 2 * S) -> torch.Tensor:
    """An opaque Zero123++-style view: grey 0.5 background, an object with a grey hole."""
    img = torch.full((size, size, 3), 0.5)
    lo, hi = size // 4, 3 * size // 4
    img[lo:hi, lo:hi] = _rand((hi - lo, hi - lo, 3), seed) * 0.3 + torch.tensor([0.6, 0.0, 0.0])
    img[size // 2 - 2 : size // 2 + 2, size // 2 - 2 : size // 2 + 2] = 0.5  # stays foreground
    return img


def _expected_alpha(size: int = 2 * S) -> torch.Tensor:
    a = torch.zeros(size, size, 1)
    a[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 1.0
    return a


def _write_opaque_sequence(root: Path, t: int = 2, rgba_opaque: bool = False) -> None:
    _frames(root / "seq" / "ref", t, name="{t}_rgba.png")
    for i in range(t):
        for k in range(6):
            path = root / "seq" / "zero123" / f"{i}_rgba" / f"{k}.png"
            img = _opaque_view(10 * i + k)
            if rgba_opaque:  # an RGBA file whose alpha says nothing (all 255)
                write_rgba(path, torch.cat([img, torch.ones(2 * S, 2 * S, 1)], -1))
            else:
                write_rgb(path, img)


@pytest.mark.parametrize("rgba_opaque", [False, True])
def test_opaque_pseudo_views_get_their_alpha_from_the_grey_background(
    tmp_path: Path, rgba_opaque: bool
) -> None:
    _write_opaque_sequence(tmp_path, rgba_opaque=rgba_opaque)
    cfg = MultiviewSequenceConfig(align_pseudo_views=False)
    scene = load_multiview_sequence(tmp_path, "seq", cfg)
    # Derived at the files' 32 px, then area-resized to the input's 16 px: exact here.
    expected = F.interpolate(_expected_alpha().permute(2, 0, 1)[None], (S, S), mode="area")
    for v in range(1, 7):
        torch.testing.assert_close(
            scene.train.alpha[v], expected[0].permute(1, 2, 0).expand(2, -1, -1, -1)
        )
    assert scene.meta["pseudo_alpha"] == "auto"


def test_pseudo_alpha_file_refuses_opaque_views_and_background_ignores_the_file(
    tmp_path: Path,
) -> None:
    _write_opaque_sequence(tmp_path)
    with pytest.raises(ValueError, match=r"0_rgba.0\.png: pseudo view has no alpha .*'file'"):
        load_multiview_sequence(tmp_path, "seq", MultiviewSequenceConfig(pseudo_alpha="file"))
    # A file alpha that disagrees with the background is ignored under "background".
    for i in range(2):
        for k in range(6):
            path = tmp_path / "seq" / "zero123" / f"{i}_rgba" / f"{k}.png"
            write_rgba(path, torch.cat([_opaque_view(k), torch.full((2 * S, 2 * S, 1), 0.3)], -1))
    cfg = MultiviewSequenceConfig(pseudo_alpha="background", align_pseudo_views=False)
    scene = load_multiview_sequence(tmp_path, "seq", cfg)
    assert set(scene.train.alpha[1:].unique().tolist()) <= {0.0, 0.25, 0.5, 1.0}
    auto = load_multiview_sequence(
        tmp_path, "seq", MultiviewSequenceConfig(align_pseudo_views=False)
    )
    torch.testing.assert_close(
        auto.train.alpha[1:], torch.full_like(auto.train.alpha[1:], 0.3), **TOL
    )


def test_a_white_background_is_a_setting(tmp_path: Path) -> None:
    _frames(tmp_path / "seq" / "ref", 1, name="{t}_rgba.png")
    for k in range(6):
        img = _opaque_view(k)
        img[img == 0.5] = 1.0
        write_rgb(tmp_path / "seq" / "zero123" / "0_rgba" / f"{k}.png", img)
    cfg = MultiviewSequenceConfig(pseudo_background=1.0, align_pseudo_views=False, resolution=32)
    scene = load_multiview_sequence(tmp_path, "seq", cfg)
    torch.testing.assert_close(scene.train.alpha[1, 0], _expected_alpha())


def test_objaverse_reads_opaque_pseudo_views_in_both_layouts(tmp_path: Path) -> None:
    _write_render(tmp_path)
    _write_opaque_sequence(tmp_path, t=3)
    shutil.move(tmp_path / "seq" / "zero123", tmp_path / "uid_mv" / "zero123")
    scene = load_objaverse(tmp_path, "uid", ObjaverseConfig(align_pseudo_views=False))
    assert scene.train.num_views == 7 and scene.meta["pseudo_alignment"]["per"] == "off"
    assert scene.train.alpha[1:].amax() == 1.0 and scene.train.alpha[1:, :, 0, 0].amax() == 0.0
    with pytest.raises(ValueError, match="pseudo view has no alpha"):
        load_objaverse(tmp_path, "uid", ObjaverseConfig(pseudo_alpha="file"))
    # Protocol layout: the options pass through to the Consistent4D reader.
    _frames(tmp_path / "obj", 3)
    shutil.copytree(tmp_path / "uid_mv", tmp_path / "obj_mv")
    with pytest.raises(ValueError, match="pseudo view has no alpha"):
        load_objaverse(tmp_path, "obj", ObjaverseConfig(layout="protocol", pseudo_alpha="file"))
    scene = load_objaverse(tmp_path, "obj", ObjaverseConfig(layout="protocol"))
    assert scene.meta["pseudo_alignment"]["per"] == "view"  # generated views: aligned


@pytest.mark.parametrize("owner", [Consistent4DConfig, MultiviewSequenceConfig, ObjaverseConfig])
def test_reader_configs_reject_bad_pseudo_view_options(owner: type) -> None:
    name = owner.__name__
    with pytest.raises(ValueError, match=f"{name}.pseudo_alpha must be one of auto, file"):
        owner(pseudo_alpha="magic")
    with pytest.raises(ValueError, match=rf"{name}.pseudo_background must be in \[0.0, 1.0\]"):
        owner(pseudo_background=2.0)
    with pytest.raises(ValueError, match=f"{name}.pseudo_alpha_threshold must be > 0"):
        owner(pseudo_alpha_threshold=0.0)
    with pytest.raises(ValueError, match=f"{name}.align_pseudo_views must be true, false or null"):
        owner(align_pseudo_views="yes")
