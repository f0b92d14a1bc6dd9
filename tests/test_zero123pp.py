"""Zero123++ multi-view generation: loads a hub-layout directory through the real classes,
samples six posed views with alpha, is deterministic per seed, anchors later frames on the first,
and writes the multi-view layout the ``multiview_sequence`` reader loads.

The directory is the tiny random one of :func:`ds4d_pl.priors.tiny.write_tiny_zero123pp`: same
classes, file names and loading code as ``sudo-ai/zero123plus-v1.1``, meaningless outputs.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from ds4d_pl.cameras import ZERO123PP_V11_POSES, ZERO123PP_V12_POSES, zero123pp_cameras
from ds4d_pl.data.alpha import background_alpha
from ds4d_pl.data.parsers.multiview_sequence import load_multiview_sequence
from ds4d_pl.priors.tiny import write_tiny_zero123pp
from ds4d_pl.priors.zero123pp import (
    Zero123pp,
    Zero123ppConfig,
    generate_multiview_sequence,
    load_zero123pp,
    split_grid,
)
from ds4d_pl.weights import BadWeightsError, MissingWeightsError, WeightsError

R = 16  # side of each tiny view; the sampled grid is 32 wide, 48 tall


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_zero123pp(tmp_path_factory.mktemp("zero123pp") / "zero123plus-v1.1")


@pytest.fixture(scope="module")
def model(tiny_dir: Path) -> Zero123pp:
    return load_zero123pp(tiny_dir, Zero123ppConfig(resolution=R, steps=3))


def _frames(t: int = 3, size: int = 40) -> torch.Tensor:
    """A coloured square that moves and changes colour, on a transparent background."""
    g = torch.Generator().manual_seed(0)
    frames = torch.zeros(t, size, size, 4)
    for i in range(t):
        frames[i, 10 + 3 * i : 26 + 3 * i, 12:28, :3] = torch.rand(3, generator=g)
        frames[i, 10 + 3 * i : 26 + 3 * i, 12:28, 3] = 1.0
    return frames


def test_tiny_directory_loads_through_the_real_classes_and_gives_six_posed_views(
    model: Zero123pp, tiny_dir: Path
) -> None:
    from diffusers import AutoencoderKL, EulerAncestralDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPVisionModelWithProjection

    assert isinstance(model.unet, UNet2DConditionModel)
    assert isinstance(model.vae, AutoencoderKL)
    assert isinstance(model.text_encoder, CLIPTextModel)
    assert isinstance(model.vision_encoder, CLIPVisionModelWithProjection)
    assert isinstance(model.scheduler, EulerAncestralDiscreteScheduler)
    assert model.scheduler.config.timestep_spacing == "trailing"
    # The ramp is the one model_index.json carries (where the published pipeline keeps it).
    ramp = json.loads((tiny_dir / "model_index.json").read_text())["ramping_coefficients"]
    assert torch.allclose(model.ramp, torch.tensor(ramp))
    views = model.generate(_frames(1)[0])
    assert views.shape == (6, R, R, 4)
    assert torch.isfinite(views).all() and views.min() >= 0 and views.max() <= 1
    assert set(views[..., 3].unique().tolist()) <= {0.0, 1.0}


def test_same_seed_gives_the_same_views_and_another_seed_other_views(model: Zero123pp) -> None:
    image = _frames(1)[0]
    a = model.sample_grid(image, seed=3)
    assert torch.equal(a, model.sample_grid(image, seed=3))
    assert not torch.allclose(a, model.sample_grid(image, seed=4), atol=1e-3)


def test_temporal_anchor_changes_later_frames_not_the_first(tiny_dir: Path) -> None:
    frames = _frames(3)
    on = load_zero123pp(tiny_dir, Zero123ppConfig(resolution=R, steps=3, temporal_anchor=True))
    off = load_zero123pp(tiny_dir, Zero123ppConfig(resolution=R, steps=3, temporal_anchor=False))
    v_on, v_off = on.generate_clip(frames), off.generate_clip(frames)
    assert v_on.shape == (3, 6, R, R, 4)
    # Frame 0 is sampled as a single image either way (it records the anchor).
    assert torch.equal(v_on[0], v_off[0])
    # Later frames attend to frame 0's reference tokens, which changes their views.
    for t in (1, 2):
        assert not torch.allclose(v_on[t, ..., :3], v_off[t, ..., :3], atol=1e-4)
    # Every self-attention layer read the anchor at every step of frames 1 and 2.
    n_attn1 = sum(k.endswith("attn1.processor") for k in on.unet.attn_processors)
    assert on.state.anchor_reads == 2 * 3 * n_attn1
    assert off.state.anchor_reads == 0
    # The anchor is dropped after the clip (it holds every step's tokens).
    assert on._anchor is None


def test_anchor_records_the_reference_tokens_of_every_step_and_layer(tiny_dir: Path) -> None:
    m = load_zero123pp(tiny_dir, Zero123ppConfig(resolution=R, steps=2))
    frames = _frames(2)
    m.sample_grid(frames[0], anchor="record")
    layers = [k for k in m.unet.attn_processors if k.endswith("attn1.processor")]
    assert sorted(m._anchor) == sorted((i, k) for i in range(2) for k in layers)
    # CFG batch (unconditional, conditional) of the reference pass, on the CPU.
    assert all(v.shape[0] == 2 and v.device.type == "cpu" for v in m._anchor.values())
    with_anchor = m.sample_grid(frames[1], anchor="use")
    assert not torch.allclose(with_anchor, m.sample_grid(frames[1]), atol=1e-4)
    m.clear_anchor()
    with pytest.raises(RuntimeError, match="anchor='record'"):
        m.sample_grid(frames[1], anchor="use")


def test_grid_cell_k_is_pose_k_row_by_row() -> None:
    # The published pipeline tiles 320² views as 3 rows x 2 columns (640 wide, 960 tall);
    # consumers (STAG4D, InstantMesh) read them row-major: (row 0, col 0), (row 0, col 1), ...
    h = w = 4
    grid = torch.zeros(3 * h, 2 * w, 3)
    for k in range(6):
        row, col = divmod(k, 2)
        grid[row * h : (row + 1) * h, col * w : (col + 1) * w] = k / 10
    views = split_grid(grid)
    assert views.shape == (6, h, w, 3)
    for k in range(6):
        assert torch.all(views[k] == k / 10)
    # ... and pose k is azimuth 30 + 60 k, elevation alternating (v1.1 +30/-20, v1.2 +20/-10).
    assert [p[1] for p in ZERO123PP_V11_POSES] == [30.0 + 60.0 * k for k in range(6)]
    assert [p[0] for p in ZERO123PP_V11_POSES] == [30.0, -20.0] * 3
    assert [p[0] for p in ZERO123PP_V12_POSES] == [20.0, -10.0] * 3
    # Camera k of the pseudo views sits above the object for positive elevation (y-up).
    centres = zero123pp_cameras(8, 8, "v1.1").c2w[:, :3, 3]
    assert all((centres[k, 1] > 0) == (k % 2 == 0) for k in range(6))


@pytest.mark.parametrize("background", [0.5, 1.0])  # the published models' grey; white
def test_background_threshold_keeps_background_coloured_parts_inside_the_object(
    background: float,
) -> None:
    img = torch.full((32, 32, 3), background)
    img += (torch.rand(32, 32, 3, generator=torch.Generator().manual_seed(0)) - 0.5) * 0.06
    img[8:24, 8:24] = torch.tensor([0.2, 0.9, 0.1])  # the object
    img[14:18, 14:18] = background  # a background-coloured patch inside it (stays foreground)
    img[2, 28] = torch.tensor([0.0, 0.0, 0.0])  # a one-pixel speck on the background
    alpha = background_alpha(img.clamp(0, 1), threshold=0.08, background=background)
    expected = torch.zeros(32, 32)
    expected[8:24, 8:24] = 1.0
    assert torch.equal(alpha, expected)


def test_background_alpha_fills_a_batch_like_one_image_at_a_time() -> None:
    g = torch.Generator().manual_seed(1)
    imgs = torch.full((3, 24, 24, 3), 0.5) + (torch.rand(3, 24, 24, 3, generator=g) - 0.5) * 0.04
    imgs[0, 4:12, 4:20] = torch.tensor([0.9, 0.2, 0.2])
    imgs[1, 10:23, 0:9] = torch.tensor([0.1, 0.1, 0.8])  # reaches the left border
    imgs[2] = 0.5  # nothing at all
    batch = background_alpha(imgs)
    assert batch.shape == (3, 24, 24)
    for k in range(3):
        assert torch.equal(batch[k], background_alpha(imgs[k]))
    assert batch[2].sum() == 0 and batch[0].sum() == 8 * 16
    with pytest.raises(ValueError, match=r"needs \(\.\.\., H, W, 3\) colour"):
        background_alpha(torch.zeros(24, 24))


@pytest.mark.parametrize(
    "damage, named",
    [
        ("nodir", "Zero123++ directory does not exist"),
        ("model_index.json", "model_index.json is missing"),
        ("unet", "component folder unet/ is missing"),
        ("vision_encoder/model.safetensors", "vision_encoder/ has no weights file"),
        ("tokenizer/vocab.json", "tokenizer/vocab.json is missing"),
        ("ramp", "no ramping_coefficients"),
        ("truncated", "component vae/ failed to load"),
    ],
)
def test_missing_or_incomplete_directory_names_the_part_and_the_source(
    tiny_dir: Path, tmp_path: Path, damage: str, named: str
) -> None:
    d = tmp_path / "z"
    if damage != "nodir":
        shutil.copytree(tiny_dir, d)
    if damage == "ramp":
        index = json.loads((d / "model_index.json").read_text())
        del index["ramping_coefficients"]
        (d / "model_index.json").write_text(json.dumps(index))
    elif damage == "truncated":
        (d / "vae" / "diffusion_pytorch_model.safetensors").write_bytes(b"\0" * 10)
    elif damage != "nodir":
        target = d / damage
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(WeightsError) as err:
        load_zero123pp(d, Zero123ppConfig(resolution=R, version="v1.2"))
    # A damaged file is "bad weights", an absent part "missing weights".
    kind = BadWeightsError if damage == "truncated" else MissingWeightsError
    assert isinstance(err.value, kind)
    msg = str(err.value)
    assert str(d) in msg and named in msg
    assert "huggingface.co/sudo-ai/zero123plus-v1.2" in msg


def test_written_sequence_loads_as_a_multiview_sequence(model: Zero123pp, tmp_path: Path) -> None:
    frames = _frames(2, size=32)
    seq = generate_multiview_sequence(frames, tmp_path / "data" / "box_mv", model)
    assert sorted(p.name for p in (seq / "zero123" / "1_rgba").iterdir()) == [
        f"{k}.png" for k in range(6)
    ]
    scene = load_multiview_sequence(tmp_path / "data", "box_mv")
    assert scene.name == "box" and scene.train.rgb.shape == (7, 2, 32, 32, 3)
    # A re-run with a shorter clip replaces the whole sequence (no stale frames, no temp dirs).
    generate_multiview_sequence(frames[:1], seq, model)
    assert sorted(p.name for p in (seq / "ref").iterdir()) == ["0_rgba.png"]
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["box_mv"]
