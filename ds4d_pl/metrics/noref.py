"""Scores that need no ground truth of novel views: what can be measured on a user's own video.

* ``flicker/*``: the mean absolute change between consecutive frames of a static-camera video,
  for the real input video (``flicker/input_video``: the motion itself), the model rendered from
  the input camera (``flicker/input_view``) and from the four Consistent4D evaluation azimuths
  (``flicker/novel_views``). A model that flickers changes its novel views from frame to frame
  more than the real video changes; ``flicker/novel_ratio`` is novel views over input video.
* ``novel/clip``: CLIP similarity of the novel-view renders to the input frame at the same time,
  the image-to-4D papers' no-reference score (needs the CLIP weights; ``n/a`` with the reason
  otherwise).

Held-out frames (``holdout/*``) and the input reconstruction (``input/*``) are scored like the
evaluation views, by the system's test loop. Object captures only for the novel views: a scene
(N3DV, D-NeRF) has no orbit to look from. Spec: ``tests/test_noref.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ds4d_pl.cameras import CONSISTENT4D_EVAL_AZIMUTHS, Cameras, orbit_cameras
from ds4d_pl.data.types import Scene4D, ViewSet, composite
from ds4d_pl.metrics.protocol import BenchmarkConfig, missing_weights, pretrained_metric
from ds4d_pl.render.base import RenderOutput

#: Datasets whose scenes are one object seen from around (novel views exist on an orbit).
OBJECT_DATASETS = ("synthetic", "consistent4d", "objaverse", "multiview_sequence")

Render = Callable[[Cameras, Tensor], RenderOutput]


def frame_change(frames: Tensor) -> float:
    """Mean absolute difference between consecutive frames of ``(T, H, W, C)`` images."""
    if frames.shape[0] < 2:
        raise ValueError(f"frame_change needs at least 2 frames, got {frames.shape[0]}")
    return float((frames[1:] - frames[:-1]).abs().mean())


def is_object_capture(scene: Scene4D) -> bool:
    """Whether ``scene`` is one object the novel-view orbit can look at."""
    return scene.meta.get("dataset") in OBJECT_DATASETS and not scene.train.per_frame_cameras


@torch.no_grad()
def render_clip(render: Render, camera: Cameras, times: Tensor, on: Tensor, bg: Tensor) -> Tensor:
    """``(T, H, W, 3)`` renders of one camera over ``times``, re-composited from the model
    background ``on`` onto ``bg``."""
    return torch.cat([render(camera, t).rgb_on(bg, on).clamp(0.0, 1.0).cpu() for t in times])


def novel_cameras(like: Cameras) -> Cameras:
    """The four Consistent4D evaluation azimuths at the input camera's size (object protocol)."""
    return orbit_cameras(
        [0.0] * len(CONSISTENT4D_EVAL_AZIMUTHS),
        list(CONSISTENT4D_EVAL_AZIMUTHS),
        like.width,
        like.height,
    )


@torch.no_grad()
def flicker_scores(render: Render, scene: Scene4D, rendered_on: Tensor) -> dict[str, Any]:
    """The ``flicker/*`` scores of a scene (see the module docstring), on white.

    The input video is the real view 0 of the training frames (held-out frames are left out of
    every video here, so all of them play the same instants).
    """
    views = scene.train
    white = torch.ones(3)
    if views.num_frames < 2:
        reason = "n/a (a single frame has no frame-to-frame change)"
        return {"flicker/input_video": reason}
    if views.per_frame_cameras:
        return {"flicker/input_video": "n/a (the camera moves every frame)"}
    real = composite(views.rgb[0], views.alpha[0], white)
    scores: dict[str, Any] = {"flicker/input_video": frame_change(real)}
    scores["flicker/input_view"] = frame_change(
        render_clip(render, views.cameras[0], views.times, rendered_on, white)
    )
    if is_object_capture(scene):
        cams = novel_cameras(views.cameras[0])
        novel = [
            frame_change(render_clip(render, cams[k], views.times, rendered_on, white))
            for k in range(len(cams))
        ]
        scores["flicker/novel_views"] = sum(novel) / len(novel)
        base = scores["flicker/input_video"]
        scores["flicker/novel_ratio"] = (
            scores["flicker/novel_views"] / base
            if base > 1e-6
            else "n/a (the input video does not change)"
        )
    return scores


#: At most this many frames of the clip are scored by ``novel/clip`` (CLIP is the slow part).
NOVEL_CLIP_FRAMES = 8


@torch.no_grad()
def novel_view_clip(
    render: Render, scene: Scene4D, cfg: BenchmarkConfig, rendered_on: Tensor, device: str = "cpu"
) -> dict[str, Any]:
    """``novel/clip``: mean CLIP similarity of the renders from the four evaluation azimuths to
    the input frame at the same time (both on white), over up to :data:`NOVEL_CLIP_FRAMES`
    frames spread over the clip."""
    if not is_object_capture(scene):
        return {"novel/clip": "n/a (not an object capture: no orbit of novel views)"}
    if not cfg.clip:
        return {"novel/clip": "n/a (model.benchmark.clip is off)"}
    clip, reason = pretrained_metric(cfg, "clip", device)
    if clip is None:
        return {"novel/clip": reason}
    views, white = scene.train, torch.ones(3)
    frames = torch.linspace(0, views.num_frames - 1, min(NOVEL_CLIP_FRAMES, views.num_frames))
    cams = novel_cameras(views.cameras[0])
    scores = []
    for f in frames.round().long().unique().tolist():
        target = composite(views.rgb[0, f], views.alpha[0, f], white)
        preds = torch.cat(
            [render(cams[k], views.times[f]).rgb_on(white, rendered_on).clamp(0, 1).cpu()
             for k in range(len(cams))]
        )  # fmt: skip
        scores.append(clip.scores(preds.to(device), target.expand_as(preds).to(device)))
    return {"novel/clip": float(torch.cat(scores).mean())}


@torch.no_grad()
def real_view_lpips(
    render: Render,
    views: ViewSet,
    cfg: BenchmarkConfig,
    rendered_on: Tensor,
    prefix: str,
    device: str = "cpu",
) -> dict[str, Any]:
    """``<prefix>/lpips``: LPIPS of the model against real views (held-out or training frames),
    averaged over frames and views, composited on the protocol's background."""
    key = f"{prefix}/lpips"
    if not cfg.lpips:
        return {key: "n/a (model.benchmark.lpips is off)"}
    lpips, reason = pretrained_metric(cfg, "lpips", device)
    if lpips is None:
        return {key: reason}
    bg = torch.ones(3) if cfg.white_background else rendered_on.cpu()
    for f in range(views.num_frames):
        out = render(views.cameras_at(f), views.times[f])
        pred = out.rgb_on(bg, rendered_on).clamp(0, 1)
        target = composite(views.rgb[:, f], views.alpha[:, f], bg).to(pred)
        lpips.update(pred, target)
    return {key: float(lpips.compute())}


def unavailable_metrics(scene: Scene4D, cfg: BenchmarkConfig) -> list[str]:
    """What ``ds4d test`` cannot measure for ``scene`` and why, one phrase each (the start-up
    line of a run)."""
    out = []
    if scene.eval is None:
        out.append("benchmark columns (no evaluation views: no ground truth of novel views)")
    else:
        for key in cfg.networks():
            reason = missing_weights(cfg, key)
            if reason is not None:
                out.append(f"{key} ({reason[len('n/a (') : -1]})")
    if scene.holdout is None:
        out.append("holdout/* (no frames held out: data.holdout_every is 0)")
    if cfg.lpips and (reason := missing_weights(cfg, "lpips")) is not None:
        out.append(f"holdout/lpips, input/lpips ({reason[len('n/a (') : -1]})")
    if not is_object_capture(scene):
        out.append("novel/*, flicker/novel_* (not an object capture)")
    elif cfg.clip and (reason := missing_weights(cfg, "clip")) is not None:
        out.append(f"novel/clip ({reason[len('n/a (') : -1]})")
    return out
