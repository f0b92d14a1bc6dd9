"""``ds4d prepare``: alpha from the input or masks, one centred crop for the clip, errors that
name the file, and output the Consistent4D reader loads."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ds4d_pl.data.io import read_rgba, write_rgb, write_rgba
from ds4d_pl.data.parsers.consistent4d import load_consistent4d
from ds4d_pl.data.prepare import prepare_video
from ds4d_pl.export.video import write_video


def _clip(t: int = 3, h: int = 40, w: int = 60) -> torch.Tensor:
    """An off-centre red box that moves right by 4 px per frame, on a transparent background."""
    frames = torch.zeros(t, h, w, 4)
    for i in range(t):
        frames[i, 5:15, 30 + 4 * i : 40 + 4 * i] = torch.tensor([1.0, 0.0, 0.0, 1.0])
    return frames


def test_rgba_frames_are_centred_over_the_whole_clip_and_loadable(tmp_path: Path) -> None:
    for i, f in enumerate(_clip()):
        write_rgba(tmp_path / "in" / f"{i:04d}.png", f)
    obj = prepare_video(tmp_path / "in", tmp_path / "data", name="box", size=64, fill=0.5)
    out = torch.stack([read_rgba(obj / f"{t}.png") for t in range(3)])
    assert out.shape == (3, 64, 64, 4)
    union = (out[..., 3] > 0.5).any(0)
    rows, cols = union.any(1).nonzero()[:, 0], union.any(0).nonzero()[:, 0]
    # The union box (10 x 18 px) is scaled so its longer side is half the frame, centred.
    assert int(cols[-1] - cols[0] + 1) == 32 and abs((cols[0] + cols[-1]) / 2 - 31.5) <= 1
    assert abs((rows[0] + rows[-1]) / 2 - 31.5) <= 1
    # Motion inside the frame is kept: the box moves right from frame to frame.
    first, last = out[0, ..., 3].sum(0).nonzero()[:, 0], out[2, ..., 3].sum(0).nonzero()[:, 0]
    assert last.float().mean() > first.float().mean() + 5
    assert torch.allclose(
        out[1][out[1, ..., 3] > 0.99][:, :3], torch.tensor([1.0, 0, 0]), atol=0.02
    )
    scene = load_consistent4d(tmp_path / "data", "box")
    assert scene.train.rgb.shape == (1, 3, 64, 64, 3)
    # A shorter re-run leaves exactly its own frames.
    prepare_video(tmp_path / "in", tmp_path / "data", name="box", size=64, max_frames=2)
    assert sorted(p.name for p in obj.glob("*.png")) == ["0.png", "1.png"]


def test_input_without_alpha_needs_masks(tmp_path: Path) -> None:
    clip = _clip()
    for i, f in enumerate(clip):
        write_rgb(tmp_path / "rgb" / f"{i}.png", f[..., :3])
    with pytest.raises(ValueError, match=r"rgb/0.png: the input has no alpha channel.*--masks"):
        prepare_video(tmp_path / "rgb", tmp_path / "out")
    for i, f in enumerate(clip):
        write_rgb(tmp_path / "masks" / f"{i}.png", f[..., 3:].expand(-1, -1, 3))
    obj = prepare_video(tmp_path / "rgb", tmp_path / "out", masks=tmp_path / "masks", size=32)
    assert read_rgba(obj / "2.png")[..., 3].max() == 1.0
    # A video (H.264 has no alpha) works the same way with masks.
    video = write_video(tmp_path / "clip.mp4", clip[..., :3])
    with pytest.raises(ValueError, match="clip.mp4 frame 0: the input has no alpha"):
        prepare_video(video, tmp_path / "out")
    obj = prepare_video(video, tmp_path / "out", masks=tmp_path / "masks", size=32)
    assert obj.name == "clip" and len(list(obj.glob("*.png"))) == 3


def test_prepare_errors_name_the_file(tmp_path: Path) -> None:
    clip = _clip()
    for i, f in enumerate(clip):
        write_rgba(tmp_path / "in" / f"{i}.png", f)
    write_rgb(tmp_path / "m" / "0.png", torch.ones(40, 60, 3))
    with pytest.raises(ValueError, match=r"/m: 1 masks but the input has 3 frames"):
        prepare_video(tmp_path / "in", tmp_path / "o", masks=tmp_path / "m")
    empty = clip.clone()
    empty[1, ..., 3] = 0
    for i, f in enumerate(empty):
        write_rgba(tmp_path / "gap" / f"{i}.png", f)
    with pytest.raises(ValueError, match=r"gap/1.png: the foreground mask is empty"):
        prepare_video(tmp_path / "gap", tmp_path / "o")
    with pytest.raises(FileNotFoundError, match="nothere.mp4"):
        prepare_video(tmp_path / "nothere.mp4", tmp_path / "o")
    with pytest.raises(ValueError, match="fill"):
        prepare_video(tmp_path / "in", tmp_path / "o", fill=2.0)


def test_prepare_subcommand(tmp_path: Path) -> None:
    from ds4d_pl.cli import main

    for i, f in enumerate(_clip()):
        write_rgba(tmp_path / "in" / f"{i}.png", f)
    with pytest.raises(SystemExit) as exc:
        main(["prepare", "--input", str(tmp_path / "in"), "--out", str(tmp_path / "d"),
              "--name", "obj", "--size", "32"])  # fmt: skip
    assert exc.value.code == 0
    assert read_rgba(tmp_path / "d" / "obj" / "0.png").shape == (32, 32, 4)


def _rgb_on_white(tmp_path: Path) -> Path:
    """The clip without alpha: the red box on a white background, as plain RGB frames."""
    for i, f in enumerate(_clip()):
        rgb = f[..., :3] * f[..., 3:] + (1 - f[..., 3:])
        write_rgb(tmp_path / "rgb" / f"{i}.png", rgb)
    return tmp_path / "rgb"


def test_inputs_without_alpha_use_the_segmentation_model(tmp_path: Path) -> None:
    from ds4d_pl.data.segment import SegmenterConfig
    from tests.test_segment import DarkIsForeground, InvertedDarkIsForeground, save_scripted

    src = _rgb_on_white(tmp_path)
    seg = save_scripted(DarkIsForeground(), tmp_path / "seg.pt")
    obj = prepare_video(
        src, tmp_path / "out", size=32, segmenter=seg, segmenter_cfg=SegmenterConfig(64)
    )
    out = read_rgba(obj / "0.png")
    # The box (the only non-white thing) is the foreground, centred as with real alpha.
    ref = prepare_video(tmp_path / "rgb", tmp_path / "ref", size=32, masks=_masks(tmp_path))
    assert ((out[..., 3] > 0.5) == (read_rgba(ref / "0.png")[..., 3] > 0.5)).float().mean() > 0.97
    # Order: the input's alpha, then --masks, then the model (a wrong model changes nothing).
    flip = save_scripted(InvertedDarkIsForeground(), tmp_path / "flip.pt")
    with_masks = prepare_video(src, tmp_path / "m", size=32, masks=_masks(tmp_path), segmenter=flip)
    assert torch.equal(read_rgba(with_masks / "1.png"), read_rgba(ref / "1.png"))
    for i, f in enumerate(_clip()):
        write_rgba(tmp_path / "rgba" / f"{i}.png", f)
    own = prepare_video(tmp_path / "rgba", tmp_path / "a", size=32, segmenter=flip)
    assert torch.equal(read_rgba(own / "1.png")[..., 3], read_rgba(ref / "1.png")[..., 3])
    # A missing model file is named.
    with pytest.raises(FileNotFoundError, match=r"nope\.pt: segmentation model not found"):
        prepare_video(src, tmp_path / "o", segmenter=tmp_path / "nope.pt")


def _masks(tmp_path: Path) -> Path:
    for i, f in enumerate(_clip()):
        write_rgb(tmp_path / "masks" / f"{i}.png", f[..., 3:].expand(-1, -1, 3))
    return tmp_path / "masks"


def test_prepare_cli_segments_and_writes_zero123pp_views_the_reader_loads(tmp_path: Path) -> None:
    from ds4d_pl.cli import main
    from ds4d_pl.data.parsers.multiview_sequence import (
        MultiviewSequenceConfig,
        load_multiview_sequence,
    )
    from ds4d_pl.priors.tiny import write_tiny_zero123pp
    from tests.test_segment import DarkIsForeground, save_scripted

    src = _rgb_on_white(tmp_path)
    seg = save_scripted(DarkIsForeground(), tmp_path / "seg.pt")
    tiny = write_tiny_zero123pp(tmp_path / "zero123plus-v1.2")
    with pytest.raises(SystemExit) as exc:
        main(["prepare", "--input", str(src), "--out", str(tmp_path / "d"), "--name", "box",
              "--size", "32", "--segmenter", str(seg), "--segmenter_size", "64",
              "--zero123pp", str(tiny), "--zero123pp_version", "v1.2",
              "--zero123pp_steps", "2", "--zero123pp_resolution", "16",
              "--zero123pp_seed", "5"])  # fmt: skip
    assert exc.value.code == 0
    # Both readers see the input view plus the six pseudo views: the Consistent4D one picks up
    # <obj>_mv/zero123 next to the clip, the multi-view sequence one reads <obj>_mv alone.
    assert load_consistent4d(tmp_path / "d", "box").train.rgb.shape == (7, 3, 32, 32, 3)
    scene = load_multiview_sequence(tmp_path / "d", "box_mv", MultiviewSequenceConfig("v1.2"))
    assert scene.train.rgb.shape == (7, 3, 32, 32, 3)
    assert scene.train.alpha[1:].amax() == 1.0  # the views carry alpha
    # The reference frames are the prepared clip itself.
    assert torch.equal(
        read_rgba(tmp_path / "d" / "box_mv" / "ref" / "2_rgba.png"),
        read_rgba(tmp_path / "d" / "box" / "2.png"),
    )
    assert read_rgba(tmp_path / "d" / "box_mv" / "zero123" / "0_rgba" / "5.png").shape == (
        16,
        16,
        4,
    )


@pytest.mark.parametrize(
    "names",
    [
        ["0.png", "1.png", "2.png"],
        ["0001.png", "0002.png", "0003.png"],
        ["f_07.JPG", "f_08.JPG", "f_09.JPG"],
    ],
)
def test_frame_folders_as_users_have_them(tmp_path: Path, names: list[str]) -> None:
    """ffmpeg numbers from 1 (``%04d``), cameras add prefixes: any start, one prefix, no gaps."""
    from ds4d_pl.data.prepare import user_frames

    for name in names:
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not a frame")
    assert [p.name for p in user_frames(tmp_path)] == names


@pytest.mark.parametrize(
    ("names", "match"),
    [
        (["1.png", "3.png"], r"skip \[2\]"),
        (["1.png", "01.png"], "both frame 1"),
        (["a1.png", "b2.png"], "several numbered sequences"),
        (["readme.md"], "no frames named like"),
    ],
)
def test_frame_folders_that_are_ambiguous_are_refused(
    tmp_path: Path, names: list[str], match: str
) -> None:
    from ds4d_pl.data.prepare import user_frames

    for name in names:
        (tmp_path / name).write_bytes(b"")
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        user_frames(tmp_path)
