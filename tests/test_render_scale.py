"""Spec of drawing fitted Gaussians at another resolution (``ds4d_pl.render.scale``).

* the plan: the fitted scale is left alone; below it the nearest integer supersampling, above
  it (or where supersampling overshoots) the dilation grows with the square of the scale;
* drawn larger, the image is the fitted one sampled more densely: every third pixel of a 3x
  render is the fitted render, and a cloud of sub-pixel splats keeps its coverage (drawn
  natively it loses three quarters of it at 2x);
* drawn smaller, the render is the fitted-scale render averaged in blocks (checked against an
  independent block mean, on a non-square image);
* the renderer's own dilation is restored afterwards, also when the render raises;
* `metrics.md` says how the Gaussians were drawn when not at the fitted scale;
* the videos draw at the fitted scale when it is given (at the evaluation views' own scale
  nothing changes).
"""

from __future__ import annotations

import pytest
import torch

from ds4d_pl.cameras import Cameras, orbit_cameras
from ds4d_pl.config import AblationConfig, ConditioningConfig, FieldConfig, GaussianInit
from ds4d_pl.data.parsers.synthetic import SyntheticConfig, make_synthetic_scene
from ds4d_pl.export.assets import OrbitSettings, render_orbit_videos, render_view_videos
from ds4d_pl.metrics.protocol import markdown_table
from ds4d_pl.model import DS4DModel
from ds4d_pl.render.base import GaussianParams, rgb_to_sh0
from ds4d_pl.render.scale import (
    ScalePlan,
    at_fitted_scale,
    dilated,
    fitted_focal,
    focal_px,
    supersampled,
)
from ds4d_pl.render.torch_raster import TorchRasterizer

BG = torch.tensor([0.1, 0.2, 0.3])


def cloud(n: int, scale: float, seed: int = 0) -> GaussianParams:
    gen = torch.Generator().manual_seed(seed)
    return GaussianParams(
        means=0.5 * (2 * torch.rand(n, 3, generator=gen) - 1),
        quats=torch.randn(n, 4, generator=gen),
        scales=torch.full((n, 3), scale) * (0.5 + torch.rand(n, 3, generator=gen)),
        opacities=0.5 + 0.4 * torch.rand(n, generator=gen),
        sh=rgb_to_sh0(0.2 + 0.6 * torch.rand(n, 3, generator=gen))[:, None],
    )


def drawer(renderer: TorchRasterizer, g: GaussianParams):
    return lambda cams, t: renderer(g, cams, BG)


def camera(width: int, height: int) -> Cameras:
    return orbit_cameras([10.0], [30.0], width, height)


@pytest.mark.parametrize(
    ("ratio", "supersample", "dilation"),
    [(1.0, 1, 1.0), (0.5, 2, 1.0), (0.25, 4, 1.0), (2.0, 1, 4.0), (0.6, 2, 1.44), (1.2, 1, 1.44)],
)
def test_plan(ratio: float, supersample: int, dilation: float) -> None:
    plan = ScalePlan.for_ratio(ratio)
    assert plan.supersample == supersample
    assert plan.dilation == pytest.approx(dilation)
    assert plan.identity == (ratio == 1.0)


@pytest.mark.parametrize("ratio", [0.0, -1.0, float("nan"), float("inf")])
def test_plan_rejects_a_meaningless_ratio(ratio: float) -> None:
    with pytest.raises(ValueError, match="ratio"):
        ScalePlan.for_ratio(ratio)


def test_drawn_larger_the_image_is_the_fitted_one_sampled_more_densely() -> None:
    renderer = TorchRasterizer(kernel="torch")
    g = cloud(300, 0.01)
    fitted = camera(32, 24)
    coarse = renderer(g, fitted, BG)
    fine = at_fitted_scale(drawer(renderer, g), renderer, focal_px(fitted))(
        fitted.resized(96, 72), 0.0
    )
    # Pixel centres at +0.5: coarse pixel j sits on fine pixel 3j + 1.
    assert torch.allclose(fine.rgb[:, 1::3, 1::3], coarse.rgb, atol=1e-4)
    assert torch.allclose(fine.alpha[:, 1::3, 1::3], coarse.alpha, atol=1e-4)
    # Drawn natively the same pixels are not the fitted image.
    native = renderer(g, fitted.resized(96, 72), BG)
    assert (native.alpha[:, 1::3, 1::3] - coarse.alpha).abs().max() > 0.05
    assert renderer.eps2d == 0.3


def test_drawn_larger_sub_pixel_splats_keep_their_coverage() -> None:
    renderer = TorchRasterizer(kernel="torch")
    g = cloud(150, 1e-4, seed=1)  # far below a pixel: the dilation alone draws them
    fitted = camera(48, 48)
    coverage = renderer(g, fitted, BG).alpha.mean()
    larger = fitted.resized(96, 96)
    kept = at_fitted_scale(drawer(renderer, g), renderer, focal_px(fitted))(larger, 0.0)
    native = renderer(g, larger, BG)
    assert float(kept.alpha.mean() / coverage) == pytest.approx(1.0, abs=0.1)
    assert float(native.alpha.mean() / coverage) < 0.4


def test_drawn_smaller_the_render_is_the_fitted_render_averaged_in_blocks() -> None:
    renderer = TorchRasterizer(kernel="torch")
    g = cloud(200, 0.03, seed=2)
    fitted = camera(72, 48)  # not square: catches swapped axes
    fine = renderer(g, fitted, BG)
    small = fitted.resized(24, 16)
    coarse = at_fitted_scale(drawer(renderer, g), renderer, focal_px(fitted))(small, 0.0)
    blocks = fine.rgb.reshape(1, 16, 3, 24, 3, 3).mean(dim=(2, 4))
    assert coarse.rgb.shape == (1, 16, 24, 3)
    assert torch.allclose(coarse.rgb, blocks, atol=1e-6)
    assert torch.allclose(coarse.alpha, fine.alpha.reshape(1, 16, 3, 24, 3, 1).mean((2, 4)))
    assert bool((coarse.alpha > 0.01).any()), "the cloud is in view"
    # Projected centres are reported in the output's pixels.
    assert torch.allclose(coarse.means2d, fine.means2d / 3)
    assert supersampled(drawer(renderer, g), 1)(small, 0.0).rgb.shape == (1, 16, 24, 3)


def test_the_renderers_dilation_is_restored_when_the_render_raises() -> None:
    renderer = TorchRasterizer(kernel="torch", eps2d=0.25)

    def broken(cams: Cameras, t: float):
        assert renderer.eps2d == pytest.approx(0.25 * 4)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        fitted = camera(20, 20)
        at_fitted_scale(broken, renderer, focal_px(fitted))(fitted.resized(40, 40), 0.0)
    assert renderer.eps2d == 0.25
    with dilated(object(), 3.0):  # a renderer without a dilation is left alone
        pass


@pytest.mark.parametrize(
    ("scale", "note"),
    [
        ({"mode": "fitted", "ratio": 0.5, "supersample": 2, "dilation": 1.0}, "2x larger"),
        ({"mode": "fitted", "ratio": 4.0, "supersample": 1, "dilation": 16.0}, "dilation x16"),
        ({"mode": "native", "ratio": 4.0, "supersample": 1, "dilation": 1.0}, "show gaps"),
        ({"mode": "fitted", "ratio": 1.0, "supersample": 1, "dilation": 1.0}, None),
    ],
)
def test_metrics_md_says_how_the_gaussians_were_drawn(scale: dict, note: str | None) -> None:
    text = markdown_table({"psnr": 30.0, "render_scale": scale}, "object")
    assert ("pixel scale the model was fitted at" in text) is (note is not None)
    if note is not None:
        assert note in text


def test_videos_draw_the_gaussians_at_the_fitted_scale_when_it_is_known() -> None:
    scene = make_synthetic_scene(
        SyntheticConfig(num_frames=2, resolution=32, eval_resolution=32, num_init_points=400)
    )
    field = FieldConfig(plane_resolution=8, time_resolution=2, feature_dim=8, hidden=16)
    row_b = AblationConfig("points", False, False, "off")
    model = DS4DModel(GaussianInit(), field, row_b, ConditioningConfig(cache_dir=""), "torch")
    model.initialise(scene, torch.Generator().manual_seed(0))
    settings = OrbitSettings(resolution=64, turntable_frames=2)  # twice the training scale
    times, focal = scene.train.times, fitted_focal(scene)
    fitted = render_orbit_videos(model, times, settings, ["front"], fitted_focal=focal)
    native = render_orbit_videos(model, times, settings, ["front"])
    eps2d = model.renderer.eps2d
    model.renderer.eps2d = eps2d * 4  # the footprint of a training pixel, in video pixels
    by_hand = render_orbit_videos(model, times, settings, ["front"])
    model.renderer.eps2d = eps2d
    assert torch.allclose(fitted["front"], by_hand["front"])
    assert (fitted["front"] - native["front"]).abs().max() > 0.02
    views = render_view_videos(model, scene.eval, fitted_focal=focal)
    assert torch.allclose(views["eval_0"], render_view_videos(model, scene.eval)["eval_0"])
