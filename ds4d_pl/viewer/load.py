"""The one adapter from a run (directory or checkpoint) to a :class:`ViewerSource`.

Everything the viewer needs from the model goes through :class:`RunSource`: the Gaussians at time
t (``DS4DModel.at``), the DSFD energy maps of the conditioner and the dataset's cameras. Loading
the run itself is :func:`ds4d_pl.run.load_run`, shared with ``ds4d render`` and ``ds4d export``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ds4d_pl.cameras import Cameras
from ds4d_pl.render.base import GaussianParams
from ds4d_pl.run import LoadedRun, RunLoadError, find_run_files, load_run
from ds4d_pl.viewer.energy import energy_at_points
from ds4d_pl.viewer.source import CameraGroup, Splats, camera_group, splats_from_gaussians

__all__ = ["RunLoadError", "RunSource", "find_run_files", "load_source"]


class RunSource:
    """A trained run as a :class:`~ds4d_pl.viewer.source.ViewerSource`.

    The deformation field is evaluated on demand at whatever time the GUI asks for; the last
    result is kept, so the splats and the energy of one time cost one evaluation.

    Args:
        run: The loaded run (model, scene and configs).
        max_image_size: Longest side of the frustum images.
    """

    def __init__(self, run: LoadedRun, max_image_size: int = 128) -> None:
        scene, model = run.scene, run.model
        if model.is_nerf:
            # The viewer draws splats; a radiance field would need a volume renderer per frame.
            raise RunLoadError(
                f"{run.files.config}: a NeRF run (model.representation: nerf); the viewer shows "
                "Gaussians only, watch its renders/*.mp4 and export/density_*.ply instead"
            )
        self._model = model
        self.name = scene.name
        train = scene.train
        self.times = train.times.float().cpu().numpy()
        self._times = train.times.float().cpu()
        background = model.background.detach().cpu()
        n_in = scene.num_input_views
        groups = [camera_group("input", train, list(range(n_in)), background, max_image_size)]
        if train.num_views > n_in:
            pseudo = list(range(n_in, train.num_views))
            groups.append(camera_group("pseudo", train, pseudo, background, max_image_size))
        if scene.eval is not None:
            views = list(range(scene.eval.num_views))
            groups.append(camera_group("eval", scene.eval, views, background, max_image_size))
        self.camera_groups: list[CameraGroup] = groups
        # The input view (training view 0) is the real observation: its energy is what DSFD
        # decoupled from the video itself, not from a prior's pseudo view.
        energy = model.energy
        self._energy = None if energy is None else energy[0].detach().float()
        self.energy_scale = float(self._energy.max()) if self._energy is not None else None
        if self.energy_scale is not None and not self.energy_scale > 0:
            self.energy_scale = None  # all-zero maps: nothing to colour
        cams = train.cameras
        self._input_cameras: Cameras = (
            cams[: train.num_frames] if train.per_frame_cameras else cams[0]
        )
        self._depth_tolerance = float(model.cond_cfg.depth_tolerance)
        self._depth_resolution = int(model.cond_cfg.visibility_resolution)
        self._cached: tuple[float, GaussianParams] | None = None

    @property
    def num_frames(self) -> int:
        return len(self.times)

    @torch.no_grad()
    def _params_at(self, t: float) -> GaussianParams:
        t = float(min(max(t, 0.0), 1.0))
        if self._cached is None or self._cached[0] != t:
            self._cached = (t, self._model.at(t))
        return self._cached[1]

    def gaussians_at(self, t: float) -> Splats:
        """The deformed Gaussians at time ``t`` (clamped to ``[0, 1]``)."""
        return splats_from_gaussians(self._params_at(t))

    @torch.no_grad()
    def energy_at(self, t: float) -> np.ndarray | None:
        """Input-view energy at each deformed Gaussian at time ``t``; NaN where the input view
        does not see it (outside the image, or behind the deformed Gaussians' own depth)."""
        if self._energy is None:
            return None
        params = self._params_at(t)
        device = params.means.device
        frame = int((self._times - float(t)).abs().argmin())
        cam = self._input_cameras
        cam_t = cam if len(cam) == 1 else cam[frame]
        res = self._depth_resolution
        small = cam_t.resized(res, max(1, round(res * cam_t.height / cam_t.width))).to(device)
        depth = self._model.renderer(params, small, self._model.background).depth[0, ..., 0]
        values = energy_at_points(
            self._energy, self._times, t, cam, params.means, depth, self._depth_tolerance
        )
        return values.float().cpu().numpy()


def load_source(
    path: str | Path,
    *,
    checkpoint: str | Path | None = None,
    config: str | Path | None = None,
    device: str = "cpu",
    max_image_size: int = 128,
) -> RunSource:
    """Build the viewer source of a run.

    Args:
        path: Run directory or checkpoint file (see :func:`ds4d_pl.run.find_run_files`).
        checkpoint: Another checkpoint to show with the run's config.
        config: Another config to rebuild the model from.
        device: Where the deformation field is evaluated (``cpu`` is enough at demo size).
        max_image_size: Longest side of the frustum images sent to the browser.

    Raises:
        RunLoadError: On a path that is not a run, an unreadable file, a checkpoint that does
            not fit the config, or a NeRF run (the viewer shows Gaussians); the message is one
            line.
    """
    run = load_run(path, checkpoint=checkpoint, config=config, device=device)
    return RunSource(run, max_image_size=max_image_size)
