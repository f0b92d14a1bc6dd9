"""The benchmark protocol: averaging order, missing weights reported as n/a, the report files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_random_metric_weights

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


def test_explicit_weights_paths_are_never_swallowed_into_na(
    no_weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from ds4d_pl.cli import main
    from ds4d_pl.commands.evaluate import main as eval_main
    from ds4d_pl.weights import MissingWeightsError

    missing = tmp_path / "nonexistent" / "i3d.pt"
    with pytest.raises(MissingWeightsError, match=f"{missing}: the weights path given for 'i3d'"):
        ProtocolScorer(BenchmarkConfig(weights={"i3d": str(missing)}))
    # Networks nobody asked for by path still fall back to "n/a".
    r = ProtocolScorer(BenchmarkConfig(fvd=False)).results()
    assert r["lpips"].startswith("n/a (missing weights")
    # A path for a network no enabled metric needs is not checked.
    ProtocolScorer(BenchmarkConfig(fvd=False, weights={"i3d": str(missing)}))
    _write_tree(tmp_path / "gt", {"a": [_rgba(2, 0.5)]})
    argv = ["--pred", str(tmp_path / "gt"), "--gt", str(tmp_path / "gt")]
    with pytest.raises(MissingWeightsError, match=str(missing)):
        eval_main([*argv, "--weights", f"i3d={missing}"])
    # Through the ds4d entry point, the same error is one line and exit status 2.
    with pytest.raises(SystemExit) as exc:
        main(["eval", *argv, "--weights", f"i3d={missing}"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and str(missing) in err and "Traceback" not in err
    assert not (tmp_path / "gt" / "metrics.json").exists()


def test_damaged_weights_found_by_default_are_errors_not_na(no_weights: Path) -> None:
    from ds4d_pl.weights import BadWeightsError

    (no_weights / "weights" / "i3d_pretrained_400.pt").write_bytes(b"")
    with pytest.raises(BadWeightsError, match="i3d_pretrained_400.pt: the weights file is empty"):
        ProtocolScorer(BenchmarkConfig(clip=False, lpips=False, fid_vid=False))


def test_eval_layout_errors_are_one_message_and_exit_code_2(
    no_weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from ds4d_pl.cli import main

    _write_tree(tmp_path / "gt", {"a": [_rgba(3, 0.5)], "b": [_rgba(3, 0.5)]})
    _write_tree(tmp_path / "short", {"a": [_rgba(2, 0.5)], "b": [_rgba(3, 0.5)]})
    cases = [
        (["--pred", str(tmp_path / "short")], "short/a/eval_0: 2 frames but the ground truth"),
        (["--pred", str(tmp_path / "nowhere")], "nowhere: prediction directory does not exist"),
        # An object's own folder instead of the root holding the objects.
        (["--pred", str(tmp_path / "gt" / "a")], "this is one object's folder"),
        (["--pred", str(tmp_path / "gt"), "--objects", "a", "a"], "listed more than once"),
    ]
    for extra, named in cases:
        with pytest.raises(SystemExit) as exc:
            main(["eval", "--gt", str(tmp_path / "gt"), *extra])
        err = capsys.readouterr().err
        assert exc.value.code == 2, err
        assert err.startswith("ds4d eval: error: ") and named in err, err
        assert "Traceback" not in err


def test_a_clip_is_scored_once(no_weights: Path) -> None:
    scorer = ProtocolScorer(BenchmarkConfig(clip=False, lpips=False, fvd=False, fid_vid=False))
    scorer.add_clip("obj", 0, _clip(2, 0.5), _clip(2, 0.5))
    with pytest.raises(ValueError, match="obj/eval_0: this clip was already scored"):
        scorer.add_clip("obj", 0, _clip(2, 0.4), _clip(2, 0.5))


def _dark_object_clip(t: int = 4, size: int = 16) -> torch.Tensor:
    """A black opaque square sliding over an empty (transparent) background, RGBA."""
    rgba = torch.zeros(t, size, size, 4)
    for f in range(t):
        rgba[f, 4:10, 2 + 2 * f : 8 + 2 * f, 3] = 1.0  # colour stays 0: black
    return rgba


def test_dark_object_over_empty_background_has_one_dynamic_region_in_test_and_eval(
    no_weights: Path, tmp_path: Path
) -> None:
    """ds4d test took the mask from premultiplied colour (0 moving pixels here), ds4d eval from
    the white composite (the square's trail); both now use data.types.motion_mask."""
    from ds4d_pl.cameras import orbit_cameras
    from ds4d_pl.data.types import ViewSet
    from ds4d_pl.metrics.evaluate import evaluate_dirs, gt_dynamic_mask

    gt = _dark_object_clip()
    views = ViewSet(
        rgb=gt[None, ..., :3],
        alpha=gt[None, ..., 3:],
        cameras=orbit_cameras([0.0], [0.0], 16, 16),
        times=torch.linspace(0, 1, 4),
    )
    test_mask = views.dynamic_mask()[0]  # what ds4d test scores
    _write_tree(tmp_path / "gt", {"obj": [gt]})
    from ds4d_pl.data.io import read_rgba

    read = torch.stack(
        [read_rgba(tmp_path / "gt" / "obj" / "eval_0" / f"{t}.png") for t in range(4)]
    )
    eval_mask = gt_dynamic_mask(read)  # what ds4d eval scores
    assert torch.equal(test_mask, eval_mask)
    # The square's whole trail: rows 4-9, columns 2-13, in every frame.
    expected = torch.zeros(4, 16, 16, 1, dtype=torch.bool)
    expected[:, 4:10, 2:14] = True
    assert torch.equal(eval_mask, expected)
    # The former call motion_mask(frames, threshold) must not silently read 0.05 as alpha.
    from ds4d_pl.data.types import motion_mask

    with pytest.raises(TypeError, match="alpha must be a tensor"):
        motion_mask(gt[None, ..., :3], 0.05)  # type: ignore[arg-type]
    pred = gt.clone()
    pred[..., 3] = 0.0  # the object vanished: wrong inside the trail only
    _write_tree(tmp_path / "pred", {"obj": [pred]})
    cfg = BenchmarkConfig(clip=False, lpips=False, fvd=False, fid_vid=False)
    r = evaluate_dirs(tmp_path / "pred", tmp_path / "gt", cfg)
    # On white, the square is black in the GT and white in the prediction: error 1 where the
    # square is (36 of the 72 trail pixels per frame), so the dynamic MSE is 0.5 (3.01 dB).
    assert r["dyn_psnr"] == pytest.approx(10 * torch.log10(torch.tensor(2.0)).item(), abs=1e-4)


def _textured(seed: int, t: int = 2, size: int = 48) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    base = torch.stack([torch.sin(9 * xx + 4 * yy), torch.cos(7 * yy), torch.sin(5 * xx * yy)], -1)
    frames = 0.5 + 0.4 * base[None] + 0.1 * torch.rand(t, size, size, 3, generator=g)
    return frames.clamp(0, 1)


def _ssim_reference(a: np.ndarray, b: np.ndarray, padding: str) -> float:
    """SSIM written out with scipy: Gaussian window 11 / σ 1.5, C1 = 0.01², C2 = 0.03², the whole
    map averaged. ``reflect``: mirror padding, variances clamped at 0 (torchmetrics >= 1.5);
    ``zeros``: zero padding (3D-GS / 4D-GS's ``ssim``)."""
    from scipy.signal import correlate2d

    x = np.arange(11) - 5
    g = np.exp(-(x**2) / (2 * 1.5**2))
    g /= g.sum()
    k = np.outer(g, g)
    maps = []
    for c in range(3):
        u, v = a[..., c], b[..., c]
        if padding == "reflect":
            u, v = np.pad(u, 5, mode="reflect"), np.pad(v, 5, mode="reflect")
            mode = "valid"
        else:
            mode = "same"

        def blur(z: np.ndarray, mode: str = mode) -> np.ndarray:
            return correlate2d(z, k, mode=mode, boundary="fill", fillvalue=0.0)

        mu, mv = blur(u), blur(v)
        vu, vv, cuv = blur(u * u) - mu**2, blur(v * v) - mv**2, blur(u * v) - mu * mv
        if padding == "reflect":
            vu, vv = np.maximum(vu, 0), np.maximum(vv, 0)
        c1, c2 = 0.01**2, 0.03**2
        maps.append((2 * mu * mv + c1) * (2 * cuv + c2) / ((mu**2 + mv**2 + c1) * (vu + vv + c2)))
    return float(np.mean(maps))


def test_standard_ssim_is_torchmetrics_since_1_5_bit_for_bit() -> None:
    """The standard SSIM is computed in the package (torchmetrics cropped the border before 1.5
    and does not since); where torchmetrics >= 1.5 is installed the two agree exactly."""
    import torchmetrics
    from torchmetrics.functional.image import structural_similarity_index_measure as tm_ssim

    from ds4d_pl.metrics.image import ssim

    major, minor = (int(v) for v in torchmetrics.__version__.split(".")[:2])
    if (major, minor) < (1, 5):
        pytest.skip("torchmetrics < 1.5 crops the SSIM border")
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(2, 40, 56, 3, generator=g), torch.rand(2, 40, 56, 3, generator=g)
    ref = tm_ssim(a.permute(0, 3, 1, 2), b.permute(0, 3, 1, 2), data_range=1.0, reduction="none")
    assert torch.equal(ssim(a, b), ref)


@pytest.mark.parametrize("protocol", ["standard", "4dgs"])
def test_scene_protocols_match_independent_formulas_and_are_recorded(
    protocol: str, random_weights: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from ds4d_pl.metrics.lpips import LPIPSNet

    monkeypatch.setenv("DS4D_WEIGHTS_DIR", str(random_weights))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch_hub"))
    gt = _textured(0)
    pred = (gt + 0.15 * (_textured(1) - 0.5)).clamp(0, 1)
    cfg = BenchmarkConfig(clip=False, fvd=False, fid_vid=False, scene_protocol=protocol)
    scorer = ProtocolScorer(cfg)
    scorer.add_clip("scene", 0, pred, gt)
    r = scorer.results()
    assert r["scene_protocol"] == protocol
    # 4D-GS scores the PNGs torchvision's save_image wrote: floor(255 x + 0.5).
    p, t = pred.double(), gt.double()
    if protocol == "4dgs":
        p, t = torch.floor(p * 255 + 0.5) / 255, torch.floor(t * 255 + 0.5) / 255
    padding = "zeros" if protocol == "4dgs" else "reflect"
    ssims = [_ssim_reference(p[i].numpy(), t[i].numpy(), padding) for i in range(len(gt))]
    assert r["ssim"] == pytest.approx(np.mean(ssims), abs=2e-5)
    psnrs = [-10 * np.log10(((p[i] - t[i]) ** 2).mean().item()) for i in range(len(gt))]
    assert r["psnr"] == pytest.approx(np.mean(psnrs), abs=1e-3)
    net = LPIPSNet.from_pretrained(random_weights, random_weights)
    x, y = p.float().permute(0, 3, 1, 2), t.float().permute(0, 3, 1, 2)
    # The standard protocol feeds LPIPS [-1, 1] as it was trained; 4D-GS fed it [0, 1].
    lp = net(x, y) if protocol == "4dgs" else net(2 * x - 1, 2 * y - 1)
    assert r["lpips"] == pytest.approx(lp.mean().item(), rel=1e-4)
    other = {"standard": "zeros", "4dgs": "reflect"}[protocol]
    assert (
        abs(
            np.mean(ssims)
            - np.mean([_ssim_reference(p[i].numpy(), t[i].numpy(), other) for i in range(len(gt))])
        )
        > 1e-3
    )


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
    return write_random_metric_weights(tmp_path_factory.mktemp("weights"), video=True)


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
    # The sample size of the set-level distance is reported with it: 2 clips of 2 frames.
    assert (same["fid_vid_num_clips"], same["fid_vid_num_frames"]) == (2, 2)
    assert same["scene_protocol"] == "standard"
    # A single clip is too few for a set-level distance: reported, not a number.
    one = ProtocolScorer(BenchmarkConfig(clip=False, lpips=False, fvd=False))
    one.add_clip("obj", 0, gt, gt)
    assert one.results()["fid_vid"].startswith("n/a (")
