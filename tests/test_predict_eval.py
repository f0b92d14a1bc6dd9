"""``ds4d predict`` → ``ds4d eval`` scores a render identical to the ground truth as perfect.

Renders are composited over the model background; the predict writer must store straight colour
with alpha (PNG's convention), because ``ds4d eval`` composites every RGBA file again. Writing the
composited colour applied the background twice: an exact render scored ~39.5 dB.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from ds4d_pl.callbacks.predictions import straight_rgba
from ds4d_pl.data.io import read_rgba, write_rgba
from ds4d_pl.metrics.evaluate import evaluate_dirs
from ds4d_pl.metrics.protocol import BenchmarkConfig
from ds4d_pl.render.base import RenderOutput

VIEWS, FRAMES, SIZE = 2, 3, 32


def _ground_truth(root: Path) -> None:
    """An object with soft edges: colours anywhere, alpha 0 outside, 1 inside, ramps between."""
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    for k in range(VIEWS):
        for t in range(FRAMES):
            r = ((xx - 16 - t) ** 2 + (yy - 16 + k) ** 2).float().sqrt()
            alpha = ((12.0 - r) / 6.0).clamp(0.0, 1.0)[..., None]
            rgb = torch.rand(SIZE, SIZE, 3, generator=g)
            write_rgba(root / "obj" / f"eval_{k}" / f"{t}.png", torch.cat([rgb, alpha], -1))


def _predict(gt: Path, pred: Path, background: torch.Tensor, straight: bool) -> None:
    """What ``ds4d predict`` writes for a model whose renders equal the ground truth."""
    for k in range(VIEWS):
        for t in range(FRAMES):
            rgba = read_rgba(gt / "obj" / f"eval_{k}" / f"{t}.png")
            rgb, alpha = rgba[..., :3], rgba[..., 3:]
            composited = rgb * alpha + background * (1.0 - alpha)
            out = RenderOutput(
                rgb=composited[None],
                alpha=alpha[None],
                depth=torch.zeros_like(alpha)[None],
                means2d=torch.zeros(1, 0, 2),
                radii=torch.zeros(1, 0, dtype=torch.int32),
            )
            image = (
                straight_rgba(out, background)[0]
                if straight
                else torch.cat([composited, alpha], -1)
            )
            write_rgba(pred / "obj" / f"eval_{k}" / f"{t}.png", image)


@pytest.mark.parametrize("background", [(0.0, 0.0, 0.0), (1.0, 1.0, 1.0), (0.5, 0.5, 0.5)])
def test_a_perfect_render_scores_perfect_through_predict_and_eval(
    tmp_path: Path, background: tuple[float, float, float]
) -> None:
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    _ground_truth(gt)
    bg = torch.tensor(background)
    _predict(gt, pred, bg, straight=True)
    cfg = BenchmarkConfig(clip=False, lpips=False, fvd=False, fid_vid=False)
    res = evaluate_dirs(pred, gt, cfg)
    assert math.isinf(res["psnr"]) or res["psnr"] >= 100.0
    assert res["ssim"] == pytest.approx(1.0, abs=1e-5)  # float32 filter arithmetic
    # Composited as eval reads them, the files are identical to the ground truth pixel for pixel,
    # so LPIPS (or any network metric) is exactly 0 whichever weights it runs with.
    for k in range(VIEWS):
        for t in range(FRAMES):
            a, b = (read_rgba(d / "obj" / f"eval_{k}" / f"{t}.png") for d in (gt, pred))
            over_white = [x[..., :3] * x[..., 3:] + (1.0 - x[..., 3:]) for x in (a, b)]
            assert torch.equal(a[..., 3], b[..., 3])
            assert (over_white[0] - over_white[1]).abs().max() <= 1.0 / 255.0 + 1e-6


def test_writing_the_composited_colour_would_not_score_perfect(tmp_path: Path) -> None:
    """The control: the old writer's files (composited colour as straight colour) lose the
    perfect score on a black model background, so the test above can fail."""
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    _ground_truth(gt)
    _predict(gt, pred, torch.zeros(3), straight=False)
    res = evaluate_dirs(
        pred, gt, BenchmarkConfig(clip=False, lpips=False, fvd=False, fid_vid=False)
    )
    assert res["psnr"] < 45.0 and res["ssim"] < 0.999
