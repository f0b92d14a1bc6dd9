"""Turntable and fixed-view videos of the trained model, written at the end of ``fit``."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import torch

from ds4d_pl.cameras import NAMED_VIEWS, orbit_cameras, turntable_cameras
from ds4d_pl.export.video import write_video


class RenderVideos(pl.Callback):
    """Writes ``renders/turntable.mp4`` and ``renders/{front,back,left,right}.mp4``.

    The turntable makes one full orbit while time runs through every frame of the clip once; the
    four named views are fixed cameras playing the whole clip.

    Args:
        enabled: Turn the videos off (e.g. in sweeps).
        resolution: Square video resolution in pixels.
        turntable_frames: Frames of the orbit (at least the clip length is used).
        fps: Frames per second of every video.
        elevation: Camera elevation in degrees for all videos.
    """

    def __init__(
        self,
        enabled: bool = True,
        resolution: int = 256,
        turntable_frames: int = 48,
        fps: int = 24,
        elevation: float = 0.0,
    ) -> None:
        self.enabled = enabled
        self.resolution = resolution
        self.turntable_frames = turntable_frames
        self.fps = fps
        self.elevation = elevation

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.enabled or not trainer.is_global_zero:
            return
        out = Path(trainer.default_root_dir) / "renders"
        for name, frames in self.render(pl_module).items():
            write_video(out / f"{name}.mp4", frames, fps=self.fps)

    @torch.no_grad()
    def render(self, pl_module: pl.LightningModule) -> dict[str, torch.Tensor]:
        """Render every video as ``(T, H, W, 3)`` tensors, keyed by name."""
        res = self.resolution
        times = pl_module.scene.train.times
        n = max(self.turntable_frames, len(times))
        cams = turntable_cameras(n, res, res, self.elevation)
        orbit_times = torch.linspace(0.0, 1.0, n)
        videos = {
            "turntable": torch.cat(
                [pl_module.render(cams[i], orbit_times[i]).rgb.cpu() for i in range(n)]
            )
        }
        for name, azimuth in NAMED_VIEWS.items():
            cam = orbit_cameras([self.elevation], [azimuth], res, res)
            videos[name] = torch.cat([pl_module.render(cam, t).rgb.cpu() for t in times])
        return {k: v.clamp(0.0, 1.0) for k, v in videos.items()}
