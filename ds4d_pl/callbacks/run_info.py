"""What a run used, written into its directory when fitting starts: ``run_info.json`` and the
dynamic-energy maps of DSFD (``diagnostics/``)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ds4d_pl.atomic import write_json
from ds4d_pl.conditioning.encoders import encoder_record
from ds4d_pl.data.io import write_rgb
from ds4d_pl.logging import log_images
from ds4d_pl.plots import colormap, colour_bar, labelled_grid

#: The energy figure shows at most this many frames (evenly spread) and views.
MAX_FIGURE_FRAMES = 16
MAX_FIGURE_VIEWS = 8


class RunInfo(pl.Callback):
    """Writes ``run_info.json`` (encoder and its checksum, renderer, supervision, ablation row,
    scene provenance; the checkpoint of record is added by the checkpoint callback) and, with
    DSFD on, ``diagnostics/dynamic_energy.png`` (a labelled figure: the energy as a colour
    overlay on every training view and frame, with a colour bar) and
    ``diagnostics/dynamic_energy/view_{j}.png`` (one strip of overlays per view); the per-view
    strips also go to loggers that take images (W&B, TensorBoard). With ``model.framing.learn``,
    the pseudo views' learned framing is added to ``run_info.json`` when fitting ends."""

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        root = Path(trainer.default_root_dir)
        info = run_info(pl_module)
        try:  # a resumed run keeps the record of its current checkpoint
            previous = json.loads((root / "run_info.json").read_text())
            if "checkpoint" in previous:
                info["checkpoint"] = previous["checkpoint"]
        except (OSError, ValueError):
            pass
        write_json(root / "run_info.json", info)
        energy = pl_module.model.energy
        if energy is not None:
            train = pl_module.scene.train
            frames = composite_frames(train.rgb, train.alpha, pl_module.model.background.cpu())
            images = write_energy_maps(
                energy.cpu(), root / "diagnostics", frames, pl_module.scene.num_input_views
            )
            log_images(trainer.logger, "diagnostics/dynamic_energy", images, trainer.global_step)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # The learned framing is a finding about the pseudo views ("view 3 was drawn 8 % too
        # large"), known only once training has run.
        framing = getattr(pl_module, "framing", None)
        if framing is None or not trainer.is_global_zero:
            return
        path = Path(trainer.default_root_dir) / "run_info.json"
        info = json.loads(path.read_text()) if path.exists() else run_info(pl_module)
        n_in = pl_module.scene.num_input_views
        summary = framing.summary(n_in)
        info["pseudo_view_framing"] = {
            "per": framing.cfg.per,
            # What fixed the object's depth, and how many motions of the whole object the
            # framing was kept from absorbing (framing_gauge).
            "gauge": pl_module.framing_gauge,
            "gauge_directions": int(framing.gauge.shape[1]),
            # model.framing.depth: the learned scale of the whole object about the input camera
            # (1: where the initial Gaussians put it), else null.
            "depth_scale": (
                None
                if pl_module.model.placement is None
                else round(float(pl_module.model.placement.scale), 5)
            ),
            "views": {
                str(n_in + k): {key: round(values[k], 5) for key, values in summary.items()}
                for k in range(len(summary["scale"]))
            },
        }
        write_json(path, info)


def run_info(pl_module: pl.LightningModule) -> dict:
    """The record of ``run_info.json``."""
    model, scene = pl_module.model, pl_module.scene
    return {
        "ablation": asdict(pl_module.ablation),
        "init_source": model.init_record,
        "renderer": model.renderer.name,
        "encoder": encoder_record(model.encoder) if model.encoder is not None else None,
        "scene": scene.name,
        "pseudo_views": scene.train.source,
        "pseudo_view_loss": pl_module.pseudo_view_loss.description,
        "sds": asdict(pl_module.sds_cfg) if pl_module.sds_enabled else None,
        "scene_meta": {k: str(v) for k, v in scene.meta.items()},
    }


def composite_frames(rgb: Tensor, alpha: Tensor, background: Tensor) -> Tensor:
    """``(V, T, H, W, 3)`` frames over ``background``, as the model sees them."""
    return rgb * alpha + background.view(1, 1, 1, 1, 3) * (1.0 - alpha)


def _tile_size(h: int, w: int) -> tuple[int, int]:
    """Tiles between 64 and 128 pixels tall (small frames are enlarged so labels fit)."""
    th = int(min(max(h, 64), 128))
    return th, max(1, round(w * th / h))


def overlay_tiles(energy: Tensor, frames: Tensor | None) -> np.ndarray:
    """Energy ``(V, T, h, w)`` in ``[0, 1]`` as colour overlays ``(V, T, th, tw, 3)`` (uint8)
    on the greyed frames ``(V, T, H, W, 3)``; without frames, the colour map alone.

    The overlay's opacity grows with the energy, so static parts show the frame and moving
    parts show the colour.
    """
    v, t, h, w = energy.shape
    if frames is not None and tuple(frames.shape[:2]) == (v, t):
        th, tw = _tile_size(frames.shape[2], frames.shape[3])
    else:
        frames = None
        th, tw = _tile_size(h, w)
    e = F.interpolate(energy.reshape(v * t, 1, h, w).float(), size=(th, tw), mode="bilinear")
    e = e.reshape(v, t, th, tw).clamp(0.0, 1.0).numpy()
    colour = colormap(e).astype(np.float64) / 255.0
    if frames is None:
        return (colour * 255.0).round().astype(np.uint8)
    f = frames.reshape(v * t, *frames.shape[2:]).permute(0, 3, 1, 2).float()
    f = F.interpolate(f, size=(th, tw), mode="bilinear", antialias=True).clamp(0.0, 1.0)
    grey = (f * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    grey = grey.expand(-1, 3, -1, -1).permute(0, 2, 3, 1).reshape(v, t, th, tw, 3).numpy()
    a = (0.15 + 0.7 * e)[..., None]
    return ((grey * (1.0 - a) + colour * a) * 255.0).round().astype(np.uint8)


def _spread(n: int, k: int) -> list[int]:
    """At most ``k`` indices spread evenly over ``range(n)``, both ends included."""
    if n <= k:
        return list(range(n))
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})


def write_energy_maps(
    energy: Tensor, out: Path, frames: Tensor | None = None, num_input_views: int = 1
) -> list[np.ndarray]:
    """Write ``energy`` ``(V, T, h, w)`` as a labelled figure and per-view strips.

    Args:
        energy: DSFD's dynamic energy ``‖dynamic‖ / ‖f‖`` per view, frame and token.
        out: The ``diagnostics/`` folder.
        frames: The training frames ``(V, T, H, W, 3)`` to overlay (composited), if any.
        num_input_views: Leading views that are real input (labelled ``input``, the rest
            ``pseudo``).

    Returns:
        The per-view strips ``(th, T * tw, 3)`` as ``uint8`` arrays.
    """
    v, t, h, w = energy.shape
    # One scale for every view and frame, so views can be compared by colour.
    vmax = float(energy.max().clamp_min(1e-6))
    tiles = overlay_tiles(energy / vmax, frames)
    strips = [np.concatenate(list(tiles[j]), axis=1) for j in range(v)]
    for j, strip in enumerate(strips):
        write_rgb(out / "dynamic_energy" / f"view_{j}.png", torch.from_numpy(strip))
    rows, cols = _spread(v, MAX_FIGURE_VIEWS), _spread(t, MAX_FIGURE_FRAMES)
    grid = tiles[rows][:, cols]
    row_labels = [f"view {j} ({'input' if j < num_input_views else 'pseudo'})" for j in rows]
    figure = labelled_grid(
        grid,
        row_labels,
        [f"frame {i}" for i in cols],
        title="DSFD dynamic energy |dynamic| / |f| over the training frames (one scale)",
        bar=colour_bar(grid.shape[0] * (grid.shape[2] + 2) - 2, 0.0, vmax, "dynamic energy"),
    )
    write_rgb(out / "dynamic_energy.png", torch.from_numpy(figure.copy()))
    return strips
