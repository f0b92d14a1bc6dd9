"""Turntable and fixed-view videos of the trained model, written at the end of ``fit``."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import torch

from ds4d_pl.callbacks.progress import shows_progress
from ds4d_pl.export.assets import OrbitSettings, render_orbit_videos, render_view_videos
from ds4d_pl.export.video import write_video
from ds4d_pl.render.scale import fitted_focal


class RenderVideos(pl.Callback):
    """Writes ``renders/turntable.mp4``, ``renders/{front,back,left,right}.mp4`` and
    ``renders/eval_{k}.mp4``.

    The turntable makes one full orbit while time runs through every frame of the clip once; the
    four named views are fixed orbit cameras playing the whole clip; ``eval_{k}`` plays the clip
    from the dataset's evaluation camera ``k`` (for a moving evaluation camera, from each
    frame's own camera), at the dataset's resolution.

    Args:
        enabled: Turn the videos off (e.g. in sweeps).
        resolution: Square resolution of the orbit videos in pixels.
        turntable_frames: Frames of the orbit (at least the clip length is used).
        fps: Frames per second of every video.
        elevation: Camera elevation in degrees of the orbit videos.
        radius: Orbit radius (2.0 is the object protocol; larger for scenes such as D-NeRF).
        orbit: Write the orbit videos; off for forward-facing scenes (Neural 3D Video) that
            were never seen from the side.
        eval_views: Write the evaluation-camera videos.
    """

    def __init__(
        self,
        enabled: bool = True,
        resolution: int = 256,
        turntable_frames: int = 48,
        fps: int = 24,
        elevation: float = 0.0,
        radius: float = 2.0,
        orbit: bool = True,
        eval_views: bool = True,
    ) -> None:
        if radius <= 0:
            raise ValueError(f"videos.radius must be > 0, got {radius}")
        self.enabled = enabled
        self.resolution = resolution
        self.turntable_frames = turntable_frames
        self.fps = fps
        self.elevation = elevation
        self.radius = radius
        self.orbit = orbit
        self.eval_views = eval_views
        self._show = False  # a progress bar per video while the trainer shows one

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.enabled or not trainer.is_global_zero:
            return
        out = Path(trainer.default_root_dir) / "renders"
        self._show = shows_progress(trainer)
        for name, frames in self.render(pl_module).items():
            path = write_video(out / f"{name}.mp4", frames, fps=self.fps)
            # Loggers that take videos (W&B) get the files as media next to the metrics.
            if hasattr(trainer.logger, "log_video"):
                trainer.logger.log_video(f"renders/{name}", [str(path)])

    def render(self, pl_module: pl.LightningModule) -> dict[str, torch.Tensor]:
        """Render every video as ``(T, H, W, 3)`` tensors, keyed by name."""
        videos: dict[str, torch.Tensor] = {}
        model, scene = pl_module.model, pl_module.scene
        focal = fitted_focal(scene)
        if self.orbit:
            settings = OrbitSettings(
                self.resolution, self.turntable_frames, self.elevation, self.radius
            )
            videos.update(
                render_orbit_videos(
                    model, scene.train.times, settings, show_progress=self._show, fitted_focal=focal
                )
            )
        if self.eval_views and scene.eval is not None:
            videos.update(
                render_view_videos(model, scene.eval, show_progress=self._show, fitted_focal=focal)
            )
        return videos
