"""LPIPS (VGG) and CLIP similarity: strict checkpoint loading of the real architectures, metric
properties on random-init networks, missing-weights errors, and DDP-style state merging."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import CLIPConfig, CLIPModel, CLIPVisionConfig, CLIPVisionModelWithProjection

from ds4d_pl.metrics.clip import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    CLIPSimilarity,
    clip_preprocess,
    load_clip_vision,
)
from ds4d_pl.metrics.lpips import LPIPS, LPIPSHeads, LPIPSNet, VGG16Features
from ds4d_pl.weights import BadWeightsError, MissingWeightsError, load_strict, sha256_file

# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def lpips_net() -> LPIPSNet:
    """Random VGG16 (torchvision init) with positive random heads, so the distance is a proper
    non-negative weighted sum."""
    torch.manual_seed(0)
    net = LPIPSNet()
    with torch.no_grad():
        for p in net.heads.parameters():
            p.copy_(torch.randn_like(p).abs())
    return net.eval()


@pytest.fixture(scope="module")
def lpips_files(lpips_net: LPIPSNet, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The two networks saved as the public files are laid out: torchvision's full VGG16
    checkpoint (features + a classifier) and the LPIPS heads' state dict."""
    d = tmp_path_factory.mktemp("lpips")
    full = dict(lpips_net.backbone.state_dict())
    # Stand-ins for torchvision's classifier keys (real shapes are irrelevant: never loaded).
    full.update({f"classifier.{i}.weight": torch.zeros(2, 2) for i in (0, 3, 6)})
    full.update({f"classifier.{i}.bias": torch.zeros(2) for i in (0, 3, 6)})
    paths = {"vgg16": d / "vgg16-397923af.pth", "lpips_vgg": d / "lpips_vgg_v0.1.pth"}
    torch.save(full, paths["vgg16"])
    torch.save(lpips_net.heads.state_dict(), paths["lpips_vgg"])
    return paths


def tiny_clip(seed: int = 0) -> CLIPVisionModelWithProjection:
    """The real CLIP image-tower architecture at toy size (64 px input, two 32 px patches)."""
    torch.manual_seed(seed)
    cfg = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=64,
        patch_size=32,
        projection_dim=16,
    )
    return CLIPVisionModelWithProjection(cfg).eval()


@pytest.fixture(scope="module")
def clip_model() -> CLIPVisionModelWithProjection:
    return tiny_clip()


def images(b: int = 4, size: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, size, size, 3, generator=g)


# ---------------------------------------------------------------- LPIPS: networks and loading


def test_vgg16_features_have_torchvision_names_and_the_five_lpips_taps() -> None:
    torch.manual_seed(0)
    vgg = VGG16Features()
    keys = list(vgg.state_dict())
    convs = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
    assert keys == [f"features.{i}.{p}" for i in convs for p in ("weight", "bias")]
    assert vgg.state_dict()["features.28.weight"].shape == (512, 512, 3, 3)
    assert len(vgg.features) == 31  # the final pool is kept, like torchvision's
    with torch.no_grad():
        taps = vgg(torch.randn(2, 3, 32, 32))
    assert [tuple(t.shape) for t in taps] == [
        (2, 64, 32, 32),
        (2, 128, 16, 16),
        (2, 256, 8, 8),
        (2, 512, 4, 4),
        (2, 512, 2, 2),
    ]
    assert all((t >= 0).all() for t in taps)  # ReLU outputs


def test_lpips_heads_have_the_official_v01_names_and_shapes() -> None:
    shapes = {k: tuple(v.shape) for k, v in LPIPSHeads().state_dict().items()}
    assert shapes == {
        "lin0.model.1.weight": (1, 64, 1, 1),
        "lin1.model.1.weight": (1, 128, 1, 1),
        "lin2.model.1.weight": (1, 256, 1, 1),
        "lin3.model.1.weight": (1, 512, 1, 1),
        "lin4.model.1.weight": (1, 512, 1, 1),
    }
    # The LPIPS net's own state dict is exactly backbone + heads (scaling constants are not
    # checkpoint content).
    assert not [k for k in LPIPSNet().state_dict() if not k.startswith(("backbone.", "heads."))]


def test_full_torchvision_checkpoint_loads_strictly_into_features_classifier_ignored(
    lpips_net: LPIPSNet, lpips_files: dict[str, Path], tmp_path: Path
) -> None:
    vgg = VGG16Features()
    sha = vgg.load_checkpoint(lpips_files["vgg16"])
    assert sha == sha256_file(lpips_files["vgg16"])
    for k, v in lpips_net.backbone.state_dict().items():
        assert torch.equal(vgg.state_dict()[k], v)
    # A features-only file is the same module state: the plain strict loader accepts it.
    only = tmp_path / "features.pth"
    torch.save(lpips_net.backbone.state_dict(), only)
    assert load_strict(VGG16Features(), only) == sha256_file(only)


def test_vgg_checkpoint_with_a_missing_or_extra_features_key_fails_naming_it(
    lpips_files: dict[str, Path], tmp_path: Path
) -> None:
    state = torch.load(lpips_files["vgg16"], weights_only=True)
    missing = {k: v for k, v in state.items() if k != "features.28.bias"}
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(BadWeightsError, match=r"missing\.pth.*missing \['features\.28\.bias'\]"):
        VGG16Features().load_checkpoint(tmp_path / "missing.pth")
    extra = {**state, "features.31.weight": torch.zeros(1)}
    torch.save(extra, tmp_path / "extra.pth")
    with pytest.raises(BadWeightsError, match=r"unexpected \['features\.31\.weight'\]"):
        VGG16Features().load_checkpoint(tmp_path / "extra.pth")
    wrong = {**state, "features.0.bias": torch.zeros(3)}
    torch.save(wrong, tmp_path / "wrong.pth")
    with pytest.raises(BadWeightsError, match=r"shape mismatch \['features\.0\.bias'\]"):
        VGG16Features().load_checkpoint(tmp_path / "wrong.pth")


def test_heads_round_trip_and_reject_missing_or_extra_keys(
    lpips_net: LPIPSNet, lpips_files: dict[str, Path], tmp_path: Path
) -> None:
    heads = LPIPSHeads()
    assert load_strict(heads, lpips_files["lpips_vgg"]) == sha256_file(lpips_files["lpips_vgg"])
    assert torch.equal(heads.lin3.model[1].weight, lpips_net.heads.lin3.model[1].weight)
    state = torch.load(lpips_files["lpips_vgg"], weights_only=True)
    torch.save({k: v for k, v in state.items() if not k.startswith("lin4")}, tmp_path / "m.pth")
    with pytest.raises(BadWeightsError, match=r"missing \['lin4\.model\.1\.weight'\]"):
        load_strict(LPIPSHeads(), tmp_path / "m.pth")
    torch.save({**state, "lin5.model.1.weight": torch.ones(1, 8, 1, 1)}, tmp_path / "x.pth")
    with pytest.raises(BadWeightsError, match=r"unexpected \['lin5\.model\.1\.weight'\]"):
        load_strict(LPIPSHeads(), tmp_path / "x.pth")


def test_from_pretrained_loads_both_files_and_records_their_checksums(
    lpips_net: LPIPSNet, lpips_files: dict[str, Path]
) -> None:
    metric = LPIPS.from_pretrained(lpips_files["vgg16"], lpips_files["lpips_vgg"].parent)
    assert metric.weights_sha256 == {k: sha256_file(p) for k, p in lpips_files.items()}
    assert not metric.net.training
    x, y = images(2, seed=1), images(2, seed=2)
    ref = lpips_net(x.permute(0, 3, 1, 2) * 2 - 1, y.permute(0, 3, 1, 2) * 2 - 1)
    torch.testing.assert_close(metric.scores(x, y), ref)


# ---------------------------------------------------------------- LPIPS: metric properties


def test_lpips_is_zero_on_identical_images_symmetric_and_grows_with_noise(
    lpips_net: LPIPSNet,
) -> None:
    metric = LPIPS(lpips_net)
    x, y = images(2, seed=1), images(2, seed=2)
    d_xy = metric.scores(x, y)
    assert d_xy.shape == (2,)
    assert (d_xy > 0).all()
    torch.testing.assert_close(metric.scores(y, x), d_xy)
    torch.testing.assert_close(metric.scores(x, x), torch.zeros(2), atol=1e-6, rtol=0)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    levels = [metric.scores(x, x + s * noise) for s in (0.01, 0.03, 0.1, 0.3)]
    for lo, hi in zip(levels, levels[1:], strict=False):
        assert (hi > lo).all(), (lo, hi)
    metric.update(x, y)
    metric.update(x, x)
    torch.testing.assert_close(metric.compute(), d_xy.sum() / 4)
    assert LPIPS.higher_is_better is False


def test_lpips_rejects_channels_first_input(lpips_net: LPIPSNet) -> None:
    x = images(1).permute(0, 3, 1, 2)
    with pytest.raises(ValueError, match=r"\(B, H, W, 3\)"):
        LPIPS(lpips_net).update(x, x)


# ---------------------------------------------------------------- CLIP


def test_clip_preprocess_resizes_shortest_side_crops_centre_and_normalises() -> None:
    x = torch.rand(2, 3, 48, 96)
    out = clip_preprocess(x, size=32)
    assert out.shape == (2, 3, 32, 32)
    # An image already at the model size is only quantised to 8 bits and normalised.
    y = torch.rand(1, 3, 32, 32)
    mean = torch.tensor(OPENAI_CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_CLIP_STD).view(1, 3, 1, 1)
    y8 = (y * 255).round() / 255
    torch.testing.assert_close(clip_preprocess(y, size=32), (y8 - mean) / std)
    # Centre crop: a wide image keeps its middle columns.
    z = torch.zeros(1, 3, 32, 64)
    z[..., 16:48] = 1.0
    assert torch.allclose(clip_preprocess(z, 32, (0, 0, 0), (1, 1, 1)), torch.ones(1, 3, 32, 32))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        clip_preprocess(torch.rand(1, 32, 32, 3))


def _real_looking(seed: int, h: int, w: int) -> torch.Tensor:
    """An object-like render: smooth shaded discs with hard edges and fine texture on white."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    img = torch.ones(3, h, w)
    for _ in range(12):
        cy, cx, r = torch.rand(3, generator=g) * torch.tensor([1.0, 1.0, 0.3])
        colour = torch.rand(3, 1, 1, generator=g)
        inside = ((yy - cy) ** 2 + (xx - cx) ** 2) < r**2
        shade = 0.6 + 0.4 * torch.cos(20 * xx + 13 * yy)  # texture finer than the 224 grid
        img = torch.where(inside, (colour * shade).clamp(0, 1), img)
    return img[None]


@pytest.mark.parametrize(
    ("kind", "h", "w"),
    [("random", 100, 150), ("random", 512, 512), ("render", 512, 512), ("render", 300, 480)],
)
def test_clip_preprocess_is_the_reference_processor_bit_for_bit(kind: str, h: int, w: int) -> None:
    """Equal to transformers' CLIPImageProcessor (PIL backend) run on the 8-bit PNG of the
    image, as the reference evaluation does; a float torch resize differed by up to 0.038."""
    from PIL import Image

    from ds4d_pl.data.io import write_rgb
    from ds4d_pl.metrics.clip import _pil_processor_class

    x = (
        torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(h))
        if kind == "random"
        else _real_looking(w, h, w)
    )
    with tempfile.TemporaryDirectory() as tmp:
        write_rgb(Path(tmp) / "frame.png", x[0].permute(1, 2, 0))
        with Image.open(Path(tmp) / "frame.png") as png:
            reference = _pil_processor_class()()(images=png.convert("RGB"), return_tensors="np")
    ours = clip_preprocess(x)
    assert ours.shape == (1, 3, 224, 224)
    assert torch.equal(ours, torch.from_numpy(reference["pixel_values"]))


def test_clip_processor_follows_the_model_directory_config(tmp_path: Path) -> None:
    from ds4d_pl.metrics.clip import clip_processor

    (tmp_path / "preprocessor_config.json").write_text(
        '{"crop_size": {"height": 32, "width": 32}, "size": {"shortest_edge": 40}, '
        '"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}'
    )
    proc = clip_processor(tmp_path)
    out = clip_preprocess(torch.full((1, 3, 64, 80), 0.75), processor=proc)
    assert out.shape == (1, 3, 32, 32)
    torch.testing.assert_close(out, torch.full_like(out, (191 / 255 - 0.5) / 0.5))
    (tmp_path / "preprocessor_config.json").write_text("{size: 3")
    with pytest.raises(
        BadWeightsError, match="preprocessor_config.json: the preprocessor config is not valid JSON"
    ):
        clip_processor(tmp_path)


def test_clip_round_trip_records_checksum_and_reads_the_preprocessor_config(
    clip_model: CLIPVisionModelWithProjection, tmp_path: Path
) -> None:
    clip_model.save_pretrained(tmp_path / "clip")
    (tmp_path / "clip" / "preprocessor_config.json").write_text(
        '{"image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25], '
        '"size": {"shortest_edge": 64}, "crop_size": {"height": 64, "width": 64}}'
    )
    metric = CLIPSimilarity.from_pretrained(tmp_path / "clip")
    assert metric.weights_sha256 == {
        "clip_vit_b32": sha256_file(tmp_path / "clip" / "model.safetensors")
    }
    assert metric.image_mean == (0.5, 0.5, 0.5) and metric.image_std == (0.25, 0.25, 0.25)
    assert metric.image_size == 64
    for k, v in clip_model.state_dict().items():
        assert torch.equal(metric.net.state_dict()[k], v), k


def test_clip_checkpoint_with_missing_or_extra_key_fails_naming_it(
    clip_model: CLIPVisionModelWithProjection, tmp_path: Path
) -> None:
    clip_model.save_pretrained(tmp_path / "ok")
    state = load_file(tmp_path / "ok" / "model.safetensors")
    for name, bad, pattern in (
        ("missing", {k: v for k, v in state.items() if k != "visual_projection.weight"},
         r"missing \['visual_projection\.weight'\]"),
        ("extra", {**state, "bogus.weight": torch.zeros(2)}, r"unexpected \['bogus\.weight'\]"),
        ("shape", {**state, "visual_projection.weight": torch.zeros(8, 32)},
         r"shape mismatch \['visual_projection\.weight'\]"),
    ):  # fmt: skip
        d = tmp_path / name
        d.mkdir()
        (d / "config.json").write_text((tmp_path / "ok" / "config.json").read_text())
        save_file(bad, d / "model.safetensors", metadata={"format": "pt"})
        with pytest.raises(BadWeightsError, match=pattern):
            load_clip_vision(d)


def test_full_clip_checkpoint_loads_the_image_tower_text_tower_ignored(tmp_path: Path) -> None:
    torch.manual_seed(0)
    vision = dict(
        hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        image_size=64, patch_size=32,
    )  # fmt: skip
    text = dict(
        hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=4,
        vocab_size=100, bos_token_id=0, eos_token_id=1, pad_token_id=1,
    )  # fmt: skip
    full = CLIPModel(CLIPConfig(vision_config=vision, text_config=text, projection_dim=16))
    full.save_pretrained(tmp_path / "full")
    model = load_clip_vision(tmp_path / "full")
    assert torch.equal(model.visual_projection.weight, full.visual_projection.weight)
    assert torch.equal(
        model.vision_model.post_layernorm.weight, full.vision_model.post_layernorm.weight
    )


def test_clip_similarity_is_one_on_identical_images_symmetric_and_falls_with_noise(
    clip_model: CLIPVisionModelWithProjection,
) -> None:
    metric = CLIPSimilarity(clip_model)
    x, y = images(4, 48, seed=1), images(4, 48, seed=2)
    s_xy = metric.scores(x, y)
    assert s_xy.shape == (4,)
    torch.testing.assert_close(metric.scores(x, x), torch.ones(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(metric.scores(y, x), s_xy, atol=1e-5, rtol=0)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    # Averaged over images and on widely spaced levels: a random network is only expected to
    # move away from the clean embedding on average, not pixel-perfectly monotonically.
    means = [metric.scores(x, x + s * noise).mean().item() for s in (0.05, 0.3, 1.5)]
    assert 1.0 > means[0] > means[1] > means[2], means
    assert CLIPSimilarity.higher_is_better is True
    # torchmetrics' forward: the batch value, accumulated into the running mean.
    torch.testing.assert_close(metric(x, y), s_xy.mean())
    metric.update(x, x)
    torch.testing.assert_close(metric.compute(), (s_xy.sum() + 4) / 8)


# ---------------------------------------------------------------- missing weights


def test_from_pretrained_without_weights_raises_naming_the_files(no_weights: Path) -> None:
    with pytest.raises(MissingWeightsError) as err:
        LPIPS.from_pretrained()
    # Both LPIPS files are reported at once.
    assert "vgg16-397923af.pth" in str(err.value)
    assert "lpips_vgg_v0.1.pth" in str(err.value)
    with pytest.raises(MissingWeightsError, match="clip-vit-base-patch32"):
        CLIPSimilarity.from_pretrained()


# ---------------------------------------------------------------- DDP-friendliness


@pytest.mark.parametrize("kind", ["lpips", "clip"])
def test_merged_half_batch_states_equal_the_whole_batch(
    kind: str, lpips_net: LPIPSNet, clip_model: CLIPVisionModelWithProjection
) -> None:
    def make() -> LPIPS | CLIPSimilarity:
        return LPIPS(lpips_net) if kind == "lpips" else CLIPSimilarity(clip_model)

    # 16 px is the smallest input VGG16's relu5_3 accepts: keeps the test cheap.
    x, y = images(4, 16, seed=5), images(4, 16, seed=6)
    whole, a, b = make(), make(), make()
    whole.update(x, y)
    a.update(x[:2], y[:2])
    b.update(x[2:], y[2:])
    a.merge_state(b)
    assert a.count == whole.count == 4
    torch.testing.assert_close(a.compute(), whole.compute())
    # The same by summing the states, as the DDP "sum" reduction does.
    c, d = make(), make()
    c.update(x[:2], y[:2])
    d.update(x[2:], y[2:])
    torch.testing.assert_close((c.total + d.total) / (c.count + d.count), whole.total / 4)


def test_the_network_stays_out_of_the_owner_state_dict_and_in_eval_mode(
    lpips_net: LPIPSNet, clip_model: CLIPVisionModelWithProjection
) -> None:
    owner = nn.Module()
    owner.lpips = LPIPS(lpips_net)
    owner.clip = CLIPSimilarity(clip_model)
    owner.layer = nn.Linear(2, 2)
    assert set(owner.state_dict()) == {"layer.weight", "layer.bias"}
    assert [n for n, _ in owner.named_parameters()] == ["layer.weight", "layer.bias"]
    owner.train()
    assert not lpips_net.training and not clip_model.training
    # Device moves follow the metric; dtype casts leave the network in float32.
    owner.to("cpu").half()
    assert next(lpips_net.parameters()).dtype == torch.float32
    owner.float()
