"""The one adapter from a run (directory or checkpoint) to a :class:`ViewerSource`.

Everything the viewer needs from the model goes through :class:`RunSource`: the Gaussians at time
t, the DSFD energy maps of the conditioner and the dataset's cameras. Only :func:`_attach_scene`
and :meth:`RunSource._params_at` reach into :class:`~ds4d_pl.system.DS4DSystem`, so when the
system's 4D asset moves behind another interface only those lines change.

A run directory (DESIGN §8) holds ``config.yaml`` (the resolved LightningCLI config, whose
``model:`` and ``data:`` sections rebuild the system and the data module) and
``checkpoints/last.ckpt``.
"""

from __future__ import annotations

import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

from ds4d_pl.cameras import Cameras
from ds4d_pl.data.types import Scene4D
from ds4d_pl.render.base import GaussianParams
from ds4d_pl.viewer.energy import energy_at_points
from ds4d_pl.viewer.source import CameraGroup, Splats, camera_group, splats_from_gaussians


class RunLoadError(Exception):
    """A path the viewer cannot show; the message is one line naming the file and the problem."""


@dataclass(frozen=True)
class RunFiles:
    """The two files a viewer session reads.

    Attributes:
        config: The run's ``config.yaml``.
        checkpoint: The checkpoint whose weights are shown.
    """

    config: Path
    checkpoint: Path


def find_run_files(
    path: str | Path, checkpoint: str | Path | None = None, config: str | Path | None = None
) -> RunFiles:
    """Locate the config and the checkpoint of a run.

    Args:
        path: A run directory (``config.yaml`` + ``checkpoints/last.ckpt``) or a checkpoint file
            inside one (``RUN/checkpoints/step000250.ckpt``).
        checkpoint: Another checkpoint to show with the run's config.
        config: Another config to rebuild the model from.

    Returns:
        The files.

    Raises:
        RunLoadError: When a file is missing, naming what was looked for.
    """
    path = Path(path)
    if not path.exists():
        raise RunLoadError(f"{path}: no such file or directory")
    if path.is_dir():
        cfg = Path(config) if config is not None else path / "config.yaml"
        if config is None and not cfg.is_file():
            raise RunLoadError(
                f"{path} is not a ds4d run directory: it has no config.yaml (ds4d fit writes one)"
            )
        ckpt = Path(checkpoint) if checkpoint is not None else path / "checkpoints" / "last.ckpt"
        if checkpoint is None and not ckpt.is_file():
            raise RunLoadError(
                f"{path} is a run directory without checkpoints/last.ckpt (did ds4d fit finish "
                "a step?); pass --ckpt"
            )
    else:
        if checkpoint is not None:
            raise RunLoadError(f"{path} is a file: give either a checkpoint path or --ckpt")
        ckpt = path
        candidates = [path.parent / "config.yaml", path.parent.parent / "config.yaml"]
        found = [c for c in candidates if c.is_file()]
        if config is not None:
            cfg = Path(config)
        elif found:
            cfg = found[0]
        else:
            raise RunLoadError(
                f"{path}: no config.yaml next to the checkpoint or in its run directory; "
                "pass --config"
            )
    for name, file in (("config", cfg), ("checkpoint", ckpt)):
        if not file.is_file():
            raise RunLoadError(f"{file}: {name} file not found")
    return RunFiles(config=cfg, checkpoint=ckpt)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def _config_problem(error: BaseException) -> str:
    """One line from a (multi-line) config parser error: the key it names and the most specific
    complaint (e.g. ``Parser key "model.field": Option 'encodingg' is not accepted``)."""
    lines = [line.strip(" -") for line in str(error).splitlines() if line.strip(" -")]
    if len(lines) < 2:
        return _first_line(error)
    generic = ("Does not validate against", "Subtypes:", "Errors:", "Given value", "NoneType")
    details = [line for line in lines[1:] if not any(g in line for g in generic)]
    specific = [line for line in details if not line.startswith("Problem with given")]
    detail = (specific or details or lines[1:])[0]
    return f"{lines[0].rstrip(':')}: {detail}"


def _build(config: Path) -> tuple[object, object]:
    """The run's system and data module, rebuilt from the ``model:`` and ``data:`` sections of
    its config with the same typed parser LightningCLI uses (so every key is validated)."""
    from jsonargparse import ArgumentParser

    from ds4d_pl.data.datamodule import DS4DDataModule
    from ds4d_pl.system import DS4DSystem

    try:
        raw = yaml.safe_load(config.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise RunLoadError(f"{config}: not a readable YAML file ({_first_line(e)})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("model"), dict) or "data" not in raw:
        raise RunLoadError(f"{config}: not a ds4d run config (needs 'model:' and 'data:' sections)")
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(DS4DSystem, "model")
    parser.add_class_arguments(DS4DDataModule, "data")
    try:
        cfg = parser.parse_object({"model": raw["model"], "data": raw["data"] or {}})
        init = parser.instantiate(cfg)
    except Exception as e:  # noqa: BLE001 - any failure to rebuild is reported as one line
        raise RunLoadError(f"{config}: cannot rebuild the run ({_config_problem(e)})") from None
    return init.model, init.data


def _load_weights(system: torch.nn.Module, files: RunFiles) -> dict:
    """Copy the checkpoint's weights into ``system``; a checkpoint of another configuration
    (other field sizes, other ablation) is refused, naming the first disagreeing tensor."""
    try:
        # The checkpoint holds the run's typed hyper-parameters (dataclasses), which the
        # tensor-only unpickler refuses; it is the user's own run file.
        ckpt = torch.load(files.checkpoint, map_location="cpu", weights_only=False)
    except (OSError, EOFError, RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile) as e:
        raise RunLoadError(
            f"{files.checkpoint}: not a readable checkpoint ({_first_line(e)})"
        ) from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise RunLoadError(f"{files.checkpoint}: not a Lightning checkpoint (no state_dict)")
    try:
        system.load_state_dict(ckpt["state_dict"], strict=True)
    except RuntimeError as e:
        details = [
            line.strip()
            for line in str(e).splitlines()
            if line.strip().startswith(("size mismatch", "Missing key", "Unexpected key"))
        ]
        raise RunLoadError(
            f"{files.checkpoint} does not match the model of {files.config}: "
            f"{details[0] if details else _first_line(e)}"
        ) from None
    return ckpt


def _attach_scene(system: object, scene: Scene4D, ckpt: dict) -> None:
    """What ``DS4DSystem.setup`` does for a loaded run, without a Trainer: restore the state
    kept outside the state dict and derive the conditioner's feature maps (and energy) from the
    frozen encoder's features of the training views (disk-cached by ``ds4d fit``)."""
    system.on_load_checkpoint(ckpt)
    system.scene = scene
    if system.conditioner is not None and not system.conditioner.ready:
        system._prepare_features()


class RunSource:
    """A trained run as a :class:`~ds4d_pl.viewer.source.ViewerSource`.

    The deformation field is evaluated on demand at whatever time the GUI asks for; the last
    result is kept, so the splats and the energy of one time cost one evaluation.

    Args:
        system: The loaded :class:`~ds4d_pl.system.DS4DSystem` (scene attached).
        scene: Its scene.
        max_image_size: Longest side of the frustum images.
    """

    def __init__(self, system: object, scene: Scene4D, max_image_size: int = 128) -> None:
        self._system = system
        self.name = scene.name
        train = scene.train
        self.times = train.times.float().cpu().numpy()
        self._times = train.times.float().cpu()
        background = system.background.detach().cpu()
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
        cond = system.conditioner
        self._energy = None
        if cond is not None and system.ablation.dsfd:
            self._energy = cond.energy[0].detach().float()
        self.energy_scale = float(self._energy.max()) if self._energy is not None else None
        if self.energy_scale is not None and not self.energy_scale > 0:
            self.energy_scale = None  # all-zero maps: nothing to colour
        cams = train.cameras
        self._input_cameras: Cameras = (
            cams[: train.num_frames] if train.per_frame_cameras else cams[0]
        )
        self._depth_tolerance = float(system.cond_cfg.depth_tolerance)
        self._depth_resolution = int(system.cond_cfg.visibility_resolution)
        self._cached: tuple[float, GaussianParams] | None = None

    @property
    def num_frames(self) -> int:
        return len(self.times)

    @torch.no_grad()
    def _params_at(self, t: float) -> GaussianParams:
        t = float(min(max(t, 0.0), 1.0))
        if self._cached is None or self._cached[0] != t:
            self._cached = (t, self._system.gaussians_at(t))
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
        depth = self._system.renderer(params, small, self._system.background).depth[0, ..., 0]
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
        path: Run directory or checkpoint file (see :func:`find_run_files`).
        checkpoint: Another checkpoint to show with the run's config.
        config: Another config to rebuild the model from.
        device: Where the deformation field is evaluated (``cpu`` is enough at demo size).
        max_image_size: Longest side of the frustum images sent to the browser.

    Returns:
        The source.

    Raises:
        RunLoadError: On a path that is not a run, an unreadable file or a checkpoint that does
            not fit the config; the message is one line.
    """
    files = find_run_files(path, checkpoint, config)
    system, datamodule = _build(files.config)
    ckpt = _load_weights(system, files)
    try:
        datamodule.setup("test")
    except (OSError, ValueError) as e:
        raise RunLoadError(
            f"{files.config}: cannot load the run's data ({_first_line(e)})"
        ) from None
    system.to(device)
    system.eval()
    _attach_scene(system, datamodule.scene, ckpt)
    return RunSource(system, datamodule.scene, max_image_size=max_image_size)
