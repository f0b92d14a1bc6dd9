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
from ds4d_pl.data.types import Scene4D, composite
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
