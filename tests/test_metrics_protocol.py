"""The benchmark protocol: averaging order, missing weights reported as n/a, the report files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from ds4d_pl.metrics.protocol import BenchmarkConfig, ProtocolScorer, write_report


def _clip(t: int, value: float, size: int = 16) -> torch.Tensor:
    return torch.full((t, size, size, 3), value)


def test_per_image_metrics_average_frames_then_views_then_objects(no_weights: Path) -> None:
    scorer = ProtocolScorer(BenchmarkConfig(clip=False, lpips=False, fvd=False, fid_vid=False))
    gt = _clip(4, 0.5)
    # Object a: one view with error 0.1 (20 dB) and 4 frames, one with 0.01 (40 dB) and 2 frames.
    scorer.add_clip("a", 0, gt + 0.1, gt)
    scorer.add_clip("a", 1, gt[:2] + 0.01, gt[:2])
    # Object b: a single view at 30 dB.
    scorer.add_clip("b", 0, gt + 10**-1.5, gt)
    r = scorer.results()
    # Views count equally within an object, objects equally overall: ((20 + 40) / 2 + 30) / 2.
    assert r["psnr"] == pytest.approx(30.0, abs=1e-3)
    assert (r["num_objects"], r["num_clips"]) == (2, 3)
    assert r["dyn_psnr"] is None  # no masks given


def test_missing_weights_are_reported_as_na_with_the_file_never_as_numbers(
    no_weights: Path, tmp_path: Path
) -> None:
    scorer = ProtocolScorer(BenchmarkConfig())
    gt = _clip(3, 0.5)
    mask = torch.zeros(3, 16, 16, 1, dtype=torch.bool)
    mask[:, 4:8] = True
    scorer.add_clip("obj", 0, gt + 0.1 * mask, gt, mask)
    r = scorer.results()
    assert r["clip"] == "n/a (missing weights: clip-vit-base-patch32)"
    assert r["lpips"] == "n/a (missing weights: vgg16-397923af.pth, lpips_vgg_v0.1.pth)"
    assert r["fvd"] == "n/a (missing weights: i3d_pretrained_400.pt)"
    assert r["fid_vid"] == "n/a (missing weights: pt_inception-2015-12-05-6726825d.pth)"
    assert r["dyn_psnr"] == pytest.approx(20.0, abs=1e-3)
    assert r["psnr"] == pytest.approx(26.02, abs=1e-2)  # a quarter of the pixels at 20 dB
    write_report(tmp_path / "run", r, title="obj")
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["fvd"].startswith("n/a")
    md = (tmp_path / "run" / "metrics.md").read_text()
    assert "| CLIP↑ | LPIPS↓ | FVD↓ | FID-VID↓ | PSNR↑ | SSIM↑ | dyn PSNR↑ |" in md
    assert "n/a (missing weights: i3d_pretrained_400.pt)" in md


def test_pooled_dynamic_psnr_pools_over_views_and_frames_then_averages_objects(
    no_weights: Path,
) -> None:
    scorer = ProtocolScorer(BenchmarkConfig(clip=False, lpips=False, fvd=False, fid_vid=False))
    gt = _clip(2, 0.5, size=8)
    few = torch.zeros(2, 8, 8, 1, dtype=torch.bool)
    few[:, 0, 0] = True  # view 0: one moving pixel per frame, error 0.1 (20 dB)
    many = torch.zeros(2, 8, 8, 1, dtype=torch.bool)
    many[:, :3, :3] = True  # view 1: nine per frame, error 0.01 (40 dB)
    scorer.add_clip("a", 0, gt + 0.1, gt, few)
    scorer.add_clip("a", 1, gt + 0.01, gt, many)
    scorer.add_clip("a", 2, gt + 0.3, gt, torch.zeros_like(few))  # sees no motion: drops out
    r = scorer.results()
    pooled = 10 * math.log10(1.0 / ((2 * 0.1**2 + 18 * 0.01**2) / 20))
    assert r["dyn_psnr_pooled"] == pytest.approx(pooled, abs=1e-3)  # 29.6 dB
    assert r["dyn_psnr"] == pytest.approx(30.0, abs=1e-3)  # per-image mean: (20 + 40) / 2
    static = ProtocolScorer(BenchmarkConfig(clip=False, lpips=False, fvd=False, fid_vid=False))
    static.add_clip("b", 0, gt, gt, torch.zeros_like(few))
    assert static.results()["dyn_psnr_pooled"] is None


def test_r3d50_variant_names_its_own_file_and_bad_settings_fail(no_weights: Path) -> None:
    r = ProtocolScorer(BenchmarkConfig(fid_vid_variant="r3d50")).results()
    assert r["fid_vid"] == "n/a (missing weights: resnet-50-kinetics.pth)"
    with pytest.raises(ValueError, match="fvd_mode"):
        BenchmarkConfig(fvd_mode="clipwise")
    with pytest.raises(ValueError, match="unknown networks"):
        BenchmarkConfig(weights={"vgg19": "x"})


def test_clips_must_match_in_shape(no_weights: Path) -> None:
    scorer = ProtocolScorer(BenchmarkConfig(clip=False, lpips=False, fvd=False, fid_vid=False))
    with pytest.raises(ValueError, match="obj/eval_2"):
        scorer.add_clip("obj", 2, _clip(3, 0.5), _clip(4, 0.5))


def _write_tree(root: Path, objects: dict[str, list[torch.Tensor]]) -> None:
    from ds4d_pl.data.io import write_rgba

    for name, views in objects.items():
        for k, clip in enumerate(views):
            for t, frame in enumerate(clip):
                write_rgba(root / name / f"eval_{k}" / f"{t}.png", frame)


def _rgba(t: int, value: float, size: int = 16) -> torch.Tensor:
    img = torch.full((t, size, size, 4), value)
    img[..., 3] = 1.0
    return img


def test_eval_scores_directories_like_ds4d_test_and_writes_the_report(
    no_weights: Path, tmp_path: Path
) -> None:
    from ds4d_pl.cli import main

    gt = {"a": [_rgba(3, 0.5)] * 2, "b": [_rgba(2, 0.5)] * 2}
    _write_tree(tmp_path / "gt", gt)
    _write_tree(tmp_path / "same", gt)
    with pytest.raises(SystemExit) as exc:
        main(["eval", "--pred", str(tmp_path / "same"), "--gt", str(tmp_path / "gt")])
    assert exc.value.code == 0
    r = json.loads((tmp_path / "same" / "metrics.json").read_text())
    assert r["psnr"] == pytest.approx(120.0, abs=0.5)  # identical images: the 1e-12 MSE floor
    assert r["objects"] == ["a", "b"] and r["num_clips"] == 4
    assert r["lpips"].startswith("n/a (missing weights")
    assert (tmp_path / "same" / "metrics.md").is_file()


def test_eval_rejects_mismatched_frame_counts_sizes_and_missing_objects(
    no_weights: Path, tmp_path: Path
) -> None:
    from ds4d_pl.metrics.evaluate import evaluate_dirs

    cfg = BenchmarkConfig(clip=False, lpips=False, fvd=False, fid_vid=False)
    _write_tree(tmp_path / "gt", {"a": [_rgba(3, 0.5)]})
    _write_tree(tmp_path / "short", {"a": [_rgba(2, 0.5)]})
    with pytest.raises(ValueError, match=r"short/a/eval_0: 2 frames but the ground truth"):
        evaluate_dirs(tmp_path / "short", tmp_path / "gt", cfg)
    _write_tree(tmp_path / "small", {"a": [_rgba(3, 0.5, size=8)]})
    with pytest.raises(ValueError, match=r"small/a/eval_0: frames are 8x8"):
        evaluate_dirs(tmp_path / "small", tmp_path / "gt", cfg)
    # ... unless both sides are compared at one resolution.
    cfg16 = BenchmarkConfig(clip=False, lpips=False, fvd=False, fid_vid=False, resolution=16)
    assert evaluate_dirs(tmp_path / "small", tmp_path / "gt", cfg16)["psnr"] > 60
    _write_tree(tmp_path / "other", {"b": [_rgba(3, 0.5)]})
    with pytest.raises(FileNotFoundError, match=r"other/a: no predictions for object 'a'"):
        evaluate_dirs(tmp_path / "other", tmp_path / "gt", cfg)


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Randomly initialised networks of the real architectures, saved under the published file
    names, so the scorer goes through the real resolution and strict loading code."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from ds4d_pl.metrics.i3d import InceptionI3d
    from ds4d_pl.metrics.inception import InceptionV3
    from ds4d_pl.metrics.lpips import LPIPSHeads, VGG16Features

    wdir = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    torch.save(VGG16Features().state_dict(), wdir / "vgg16-397923af.pth")
    heads = LPIPSHeads()
    with torch.no_grad():
        for p in heads.parameters():
            p.uniform_(0.1, 1.0)  # LPIPS heads are non-negative
    torch.save(heads.state_dict(), wdir / "lpips_vgg_v0.1.pth")
    torch.save(InceptionI3d().state_dict(), wdir / "i3d_pretrained_400.pt")
    torch.save(InceptionV3().state_dict(), wdir / "pt_inception-2015-12-05-6726825d.pth")
    cfg = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=224,
        patch_size=32,
        projection_dim=16,
    )
    CLIPVisionModelWithProjection(cfg).save_pretrained(wdir / "clip-vit-base-patch32")
    return wdir


def test_scorer_runs_the_real_networks_when_their_weights_are_present(
    random_weights: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DS4D_WEIGHTS_DIR", str(random_weights))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch_hub"))
    g = torch.Generator().manual_seed(0)
    gt = torch.rand(2, 32, 32, 3, generator=g)
    noisy = (gt + 0.3 * torch.randn(gt.shape, generator=g)).clamp(0, 1)
    results = {}
    for name, pred in (("same", gt), ("noisy", noisy)):
        scorer = ProtocolScorer(BenchmarkConfig())
        # Two views: the frame FID compares sets of frames and needs at least two clips.
        scorer.add_clip("obj", 0, pred, gt)
        scorer.add_clip("obj", 1, pred.flip(2), gt.flip(2))
        results[name] = scorer.results()
    same, noisy_r = results["same"], results["noisy"]
    assert same["clip"] == pytest.approx(1.0, abs=1e-5)
    assert same["lpips"] == pytest.approx(0.0, abs=1e-6)
    assert same["fvd"] == pytest.approx(0.0, abs=1e-9)
    assert same["fid_vid"] == pytest.approx(0.0, abs=1e-3)
    assert noisy_r["clip"] < 1.0 and noisy_r["lpips"] > 0.0 and noisy_r["fvd"] > 0.0
    assert noisy_r["fid_vid"] > same["fid_vid"]
    assert set(same["weights_sha256"]) == {"clip", "lpips", "fvd", "fid_vid"}
    # A single clip is too few for a set-level distance: reported, not a number.
    one = ProtocolScorer(BenchmarkConfig(clip=False, lpips=False, fvd=False))
    one.add_clip("obj", 0, gt, gt)
    assert one.results()["fid_vid"].startswith("n/a (")
