"""No-reference scores of ds4d_pl.metrics.noref: flicker of static-camera videos."""

from __future__ import annotations

import pytest
import torch
from conftest import write_random_metric_weights

from ds4d_pl.data.parsers.synthetic import SyntheticConfig, make_synthetic_scene
from ds4d_pl.metrics.noref import flicker_scores, frame_change, is_object_capture
from ds4d_pl.render.base import RenderOutput


def test_frame_change_is_the_mean_absolute_step() -> None:
    frames = torch.zeros(3, 2, 2, 3)
    frames[1] += 0.5
    assert frame_change(frames) == pytest.approx(0.5)  # 0 → 0.5 → 0
    with pytest.raises(ValueError, match="2 frames"):
        frame_change(frames[:1])


def _oracle(scene, noise: float = 0.0):
    """A 'model' that renders the true object from the input camera and a constant grey
    elsewhere, optionally with per-frame noise (flicker)."""
    g = torch.Generator().manual_seed(0)

    def render(cameras, t):
        f = int(torch.argmin((scene.train.times - float(t)).abs()))
        if bool(torch.equal(cameras.c2w, scene.train.cameras[0].c2w)):
            rgb = scene.train.composite(torch.ones(3))[0, f][None]
            alpha = scene.train.alpha[0, f][None]
        else:
            rgb = torch.full((1, cameras.height, cameras.width, 3), 0.5)
            alpha = torch.ones(1, cameras.height, cameras.width, 1)
        rgb = rgb + noise * torch.rand(rgb.shape, generator=g)
        return RenderOutput(rgb, alpha, alpha, torch.zeros(1, 0, 2), torch.zeros(1, 0))

    return render


def test_a_perfect_input_view_matches_the_real_video_and_flicker_shows() -> None:
    scene = make_synthetic_scene(SyntheticConfig(num_frames=4, resolution=16, eval_resolution=16))
    assert is_object_capture(scene)
    clean = flicker_scores(_oracle(scene), scene, torch.ones(3))
    assert clean["flicker/input_view"] == pytest.approx(clean["flicker/input_video"], abs=1e-6)
    assert clean["flicker/input_video"] > 0  # the arm moves
    assert clean["flicker/novel_views"] == 0.0 and clean["flicker/novel_ratio"] == 0.0
    noisy = flicker_scores(_oracle(scene, noise=0.2), scene, torch.ones(3))
    assert noisy["flicker/novel_views"] > 0.05 and noisy["flicker/novel_ratio"] > 1.0


def test_a_still_video_has_no_ratio_and_one_frame_no_flicker() -> None:
    still = make_synthetic_scene(
        SyntheticConfig(motion="static_only", num_frames=3, resolution=16, eval_resolution=16)
    )
    scores = flicker_scores(_oracle(still), still, torch.ones(3))
    assert scores["flicker/novel_ratio"].startswith("n/a (the input video does not change")
    one = make_synthetic_scene(SyntheticConfig(num_frames=1, resolution=16, eval_resolution=16))
    assert flicker_scores(_oracle(one), one, torch.ones(3))["flicker/input_video"].startswith("n/a")


@pytest.fixture(scope="module")
def clip_lpips_weights(tmp_path_factory: pytest.TempPathFactory):
    """Random networks of the real architectures, saved under the published names."""
    return write_random_metric_weights(tmp_path_factory.mktemp("weights"), video=False)


def test_novel_clip_and_real_view_lpips_with_and_without_weights(
    clip_lpips_weights, no_weights, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ds4d_pl.metrics.noref import novel_view_clip, real_view_lpips, unavailable_metrics
    from ds4d_pl.metrics.protocol import BenchmarkConfig

    scene = make_synthetic_scene(SyntheticConfig(num_frames=3, resolution=16, eval_resolution=16))
    render, cfg, white = _oracle(scene), BenchmarkConfig(), torch.ones(3)
    inputs = scene.train.select(views=[0])
    # No weights anywhere: each score says which file it misses.
    assert novel_view_clip(render, scene, cfg, white)["novel/clip"] == (
        "n/a (missing weights: clip-vit-base-patch32)"
    )
    assert real_view_lpips(render, inputs, cfg, white, "input")["input/lpips"].startswith(
        "n/a (missing weights: vgg16-397923af.pth"
    )
    said = "; ".join(unavailable_metrics(scene, cfg))
    assert "holdout/* (no frames held out" in said and "novel/clip (missing weights" in said
    assert "benchmark columns" not in said  # the synthetic scene has evaluation views
    # With the networks: a perfect reconstruction scores LPIPS 0; novel views get a similarity.
    monkeypatch.setenv("DS4D_WEIGHTS_DIR", str(clip_lpips_weights))
    assert real_view_lpips(render, inputs, cfg, white, "input")["input/lpips"] == pytest.approx(
        0.0, abs=1e-6
    )
    sim = novel_view_clip(render, scene, cfg, white)["novel/clip"]
    assert isinstance(sim, float) and -1.0 <= sim <= 1.0
    assert "novel/clip" not in "; ".join(unavailable_metrics(scene, cfg))
    # A scene (not an object) has no orbit of novel views.
    scene.meta["dataset"] = "n3dv"
    assert novel_view_clip(render, scene, cfg, white)["novel/clip"].startswith("n/a (not an")
