"""What a trained model is turned into: orbit and fixed-view videos, evaluation-camera videos and
per-frame Gaussian files. Plain functions of a :class:`~ds4d_pl.model.DS4DModel`, used by the
end-of-fit callbacks and by ``ds4d render`` / ``ds4d export`` on a finished run."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from ds4d_pl.cameras import NAMED_VIEWS, OBJECT_RADIUS, orbit_cameras, turntable_cameras
from ds4d_pl.data.types import ViewSet
from ds4d_pl.export.density import export_density
from ds4d_pl.export.ply import save_ply
from ds4d_pl.export.splat import write_splat
from ds4d_pl.model import DS4DModel
from ds4d_pl.progress import progress

#: Gaussian file formats :func:`export_frames` writes.
ExportFormat = Literal["ply", "splat"]


@dataclass(frozen=True)
class OrbitSettings:
    """How the orbit videos are rendered.

    Attributes:
        resolution: Square size in pixels.
        turntable_frames: Frames of the 360° orbit (at least the clip length is used).
        elevation: Camera elevation in degrees.
        radius: Orbit radius (2.0 is the object protocol).
        loops: How many times the clip plays during the turntable's one orbit, and in the
            fixed-view videos.
    """

    resolution: int = 256
    turntable_frames: int = 48
    elevation: float = 0.0
    radius: float = OBJECT_RADIUS
    loops: int = 1

    def __post_init__(self) -> None:
        for name in ("resolution", "turntable_frames", "loops"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.radius > 0:
            raise ValueError(f"radius must be > 0, got {self.radius}")


def _looped(times: Tensor, loops: int) -> Tensor:
    """``times`` played ``loops`` times, each pass complete."""
    return times.repeat(loops)


@torch.no_grad()
def render_orbit_videos(
    model: DS4DModel,
    times: Tensor,
    settings: OrbitSettings,
    views: Sequence[str] | None = None,
    show_progress: bool | None = False,
    fitted_focal: float | None = None,
) -> dict[str, Tensor]:
    """The turntable (one orbit while the clip plays) and the fixed named views.

    Args:
        model: The 4D asset.
        times: The clip's frame times.
        settings: Resolution, elevation, radius, orbit length, loops.
        views: Which videos: ``turntable`` and any of ``front``/``right``/``back``/``left``
            (``None``: all).
        show_progress: A progress bar per video (``None``: when stderr is a terminal).
        fitted_focal: Focal length in pixels of the views the model was fitted to: the
            Gaussians are drawn at that pixel scale whatever the video's resolution
            (:mod:`ds4d_pl.render.scale`; ``None``: drawn natively).

    Returns:
        ``(T, H, W, 3)`` frames in ``[0, 1]`` by video name.
    """
    res, s = settings.resolution, settings
    render = model.drawn_at(fitted_focal)
    wanted = ("turntable", *NAMED_VIEWS) if views is None else tuple(views)
    unknown = set(wanted) - {"turntable", *NAMED_VIEWS}
    if unknown:
        known = ", ".join(("turntable", *NAMED_VIEWS))
        raise ValueError(f"unknown orbit videos {sorted(unknown)}; known: {known}")
    clip = _looped(times.cpu(), s.loops)
    videos: dict[str, Tensor] = {}
    if "turntable" in wanted:
        n = max(s.turntable_frames, len(clip))
        cams = turntable_cameras(n, res, res, s.elevation, radius=s.radius)
        orbit_times = torch.linspace(0.0, 1.0, n // s.loops).repeat(s.loops + 1)[:n]
        videos["turntable"] = torch.cat(
            [
                render(cams[i], orbit_times[i]).rgb.cpu()
                for i in progress(range(n), "video turntable", enabled=show_progress)
            ]
        )
    for name, azimuth in NAMED_VIEWS.items():
        if name in wanted:
            cam = orbit_cameras([s.elevation], [azimuth], res, res, radius=s.radius)
            steps = progress(clip, f"video {name}", total=len(clip), enabled=show_progress)
            videos[name] = torch.cat([render(cam, t).rgb.cpu() for t in steps])
    return {k: v.clamp(0.0, 1.0) for k, v in videos.items()}


@torch.no_grad()
def render_view_videos(
    model: DS4DModel,
    views: ViewSet,
    prefix: str = "eval",
    show_progress: bool | None = False,
    fitted_focal: float | None = None,
) -> dict[str, Tensor]:
    """Every view of ``views`` playing its frames from its own camera(s), at its resolution
    (with a progress bar per video when ``show_progress``; ``None``: when stderr is a
    terminal), drawn at the pixel scale ``fitted_focal`` as :func:`render_orbit_videos`."""
    render = model.drawn_at(fitted_focal)
    videos = {}
    for k in range(views.num_views):
        steps = progress(range(views.num_frames), f"video {prefix}_{k}", enabled=show_progress)
        frames = [render(views.cameras_at(f)[k], views.times[f]).rgb.cpu() for f in steps]
        videos[f"{prefix}_{k}"] = torch.cat(frames).clamp(0.0, 1.0)
    return videos


@torch.no_grad()
def export_frames(
    model: DS4DModel,
    times: Tensor,
    out: str | Path,
    formats: Sequence[ExportFormat] = ("ply",),
    per_frame: bool = True,
    show_progress: bool | None = False,
) -> list[Path]:
    """``canonical.<fmt>`` and ``frame_XXXX.<fmt>`` for every frame time, in each format.

    PLY is the standard 3DGS layout most tools open; ``.splat`` is the 32-byte layout web splat
    viewers load (``export/splat.py``). Frames are evaluated one at a time, with a progress bar
    when ``show_progress`` (``None``: when stderr is a terminal).
    A NeRF has no Gaussians to write: use :func:`export_density_frames` for it.
    """
    if model.is_nerf:
        raise ValueError(
            "a NeRF run has no Gaussians to write as PLY/.splat; its export is the density "
            "surface of each frame (export_density_frames)"
        )
    out = Path(out)
    unknown = set(formats) - {"ply", "splat"}
    if unknown:
        raise ValueError(f"unknown export formats {sorted(unknown)}; choose from ply, splat")
    writers = {"ply": save_ply, "splat": write_splat}
    paths = []
    canonical = model.at(0.0, deform=False)
    for fmt in formats:
        paths.append(out / f"canonical.{fmt}")
        writers[fmt](paths[-1], canonical)
    if per_frame:
        steps = progress(enumerate(times), "export", total=len(times), enabled=show_progress)
        for i, t in steps:
            params = model.at(t)
            for fmt in formats:
                paths.append(out / f"frame_{i:04d}.{fmt}")
                writers[fmt](paths[-1], params)
    return paths


@torch.no_grad()
def export_density_frames(
    model: DS4DModel,
    times: Tensor,
    out: str | Path,
    per_frame: bool = True,
    level: float = 10.0,
    resolution: int = 64,
    kind: Literal["auto", "points", "mesh"] = "auto",
    show_progress: bool | None = False,
) -> list[Path]:
    """A NeRF's density surface at every frame time (only the middle frame without
    ``per_frame``): ``density_points_XXXX.ply`` or ``density_mesh_XXXX.ply`` (see
    :func:`ds4d_pl.export.density.export_density`), with a progress bar when ``show_progress``
    (``None``: when stderr is a terminal)."""
    frames = range(len(times)) if per_frame else [len(times) // 2]
    return [
        export_density(
            model.at(times[i]), Path(out), i, level=level, resolution=resolution, kind=kind
        )
        for i in progress(frames, "export density", enabled=show_progress)
    ]
