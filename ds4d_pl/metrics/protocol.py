"""The video-to-4D benchmark protocol: which metrics, how clips are averaged, how it is reported.

One :class:`ProtocolScorer` is fed ``(object, view)`` clips of predicted and ground-truth frames
(composited on the protocol's white background by the caller) and reports

* per-image metrics (CLIP similarity, LPIPS, PSNR, SSIM, dynamic-region PSNR) averaged over
  frames, then views, then objects (docs/design.md §7), so a long clip does not outweigh a
  short one;
* the pooled dynamic-region PSNR: the squared error over every moving pixel of an object's
  clips (all views and frames) pooled into one PSNR, then averaged over objects; views that see
  no motion drop out instead of weighing as much as the views that do;
* per-clip FVD (``consistent4d`` mode, averaged over views then objects) or set FVD;
* FID-VID pooled over every clip of every object (``frame_fid`` or ``r3d50``; what exactly is
  pooled is in :mod:`ds4d_pl.metrics.fid_vid`), with the number of clips (and frames) it used.

Each ``(object, view)`` clip may be added once: a clip listed twice would count twice in the
averages and, worse, in FID-VID's covariances.

A metric whose network weights are not on the machine is reported as
``"n/a (missing weights: FILE)"``, never as a number, *unless* its weights path was given
explicitly (``BenchmarkConfig.weights``): a path the user asked for that does not exist is an
error naming it, and so is a weights file that exists but is damaged. ``ds4d test`` (through the
system) and ``ds4d eval`` (two directories of PNGs) use this same scorer and write the same
``metrics.json`` + ``metrics.md``.

``scene_protocol`` chooses how PSNR / SSIM / LPIPS are computed: ``standard`` (torchmetrics
SSIM, LPIPS on ``[-1, 1]``) or ``4dgs``, which reproduces 4D-GS's ``metrics.py`` (images
through its 8-bit PNG round trip, zero-padded whole-map SSIM, LPIPS fed ``[0, 1]``); it is
recorded in the results.

Tests: ``tests/test_metrics_protocol.py``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from ds4d_pl.atomic import atomic_path, write_json
from ds4d_pl.cameras import Cameras
from ds4d_pl.data.types import ViewSet, composite
from ds4d_pl.metrics.image import psnr_from_mse, ssim, ssim_zero_padded, to_8bit
from ds4d_pl.progress import progress
from ds4d_pl.render.base import RenderOutput
from ds4d_pl.render.scale import ScalePlan
from ds4d_pl.weights import REGISTRY, MissingWeightsError, resolve

__all__ = [
    "COLUMNS",
    "NO_EVAL_VIEWS",
    "BenchmarkConfig",
    "ProtocolScorer",
    "resize_frames",
    "missing_weights",
    "pretrained_metric",
    "score_model",
    "unavailable_protocol",
    "write_report",
]

#: Report columns in the order of the paper's tables, with the better direction.
COLUMNS = (
    ("clip", "CLIP↑"),
    ("lpips", "LPIPS↓"),
    ("fvd", "FVD↓"),
    ("fid_vid", "FID-VID↓"),
    ("psnr", "PSNR↑"),
    ("ssim", "SSIM↑"),
    ("dyn_psnr", "dyn PSNR↑"),
    ("dyn_psnr_pooled", "dyn PSNR pooled↑"),
)


#: How PSNR / SSIM / LPIPS are computed (see the module docstring).
SceneProtocol = Literal["standard", "4dgs"]


@dataclass
class BenchmarkConfig:
    """Benchmark metrics computed by ``ds4d test`` and ``ds4d eval``.

    Attributes:
        clip: CLIP ViT-B/32 image-embedding cosine similarity (pred vs GT).
        lpips: LPIPS (VGG), inputs in ``[-1, 1]``.
        fvd: Fréchet video distance with I3D (Kinetics-400).
        fid_vid: FID-VID.
        fvd_mode: ``consistent4d`` (the per-clip distance behind published numbers) or ``set``
            (Fréchet distance of the sets of clips; needs at least two clips).
        fid_vid_variant: ``frame_fid`` (per-frame Inception FID averaged over frames, STAG4D)
            or ``r3d50`` (3D-ResNet-50 video FID, DisCo).
        resolution: Square resolution the evaluation views are rendered and compared at
            (``None``: the ground truth's own, 512² for Consistent4D).
        white_background: Composite prediction and ground truth on white (the Consistent4D
            protocol); ``False`` keeps the model's background (scenes such as N3DV).
        weights: Explicit weight paths by network name (``vgg16``, ``lpips_vgg``, ``i3d``,
            ``inception_fid``, ``r3d50``, ``clip_vit_b32``); others are resolved from
            ``$DS4D_WEIGHTS_DIR`` and the caches (see ``ds4d weights``). A path given here for
            a network an enabled metric needs must exist: it is never reported as "n/a".
        scene_protocol: ``standard`` or ``4dgs`` (reproduces 4D-GS's ``metrics.py``: 8-bit
            round trip, zero-padded SSIM, LPIPS on ``[0, 1]``), for comparing scene numbers
            with 4D-GS-style tables.
        render_scale: How Gaussians are drawn when the protocol's resolution is not the one
            they were fitted at: ``fitted`` (rendered at the fitted pixel scale and averaged
            down when smaller; the low-pass dilation scaled with the resolution when larger;
            the image that was fitted, sampled at the protocol's pixels) or ``native`` (drawn
            at the protocol's pixels with the training dilation, as most research code does:
            gaps when larger, aliasing when smaller). NeRF models are always drawn natively.
    """

    clip: bool = True
    lpips: bool = True
    fvd: bool = True
    fid_vid: bool = True
    fvd_mode: Literal["consistent4d", "set"] = "consistent4d"
    fid_vid_variant: Literal["frame_fid", "r3d50"] = "frame_fid"
    resolution: int | None = None
    white_background: bool = True
    weights: dict[str, str] = field(default_factory=dict)
    scene_protocol: SceneProtocol = "standard"
    render_scale: Literal["fitted", "native"] = "fitted"

    def __post_init__(self) -> None:
        if self.render_scale not in ("fitted", "native"):
            raise ValueError(
                f"render_scale must be 'fitted' or 'native', got {self.render_scale!r}"
            )
        if self.fvd_mode not in ("consistent4d", "set"):
            raise ValueError(f"fvd_mode must be 'consistent4d' or 'set', got {self.fvd_mode!r}")
        if self.fid_vid_variant not in ("frame_fid", "r3d50"):
            raise ValueError(
                f"fid_vid_variant must be 'frame_fid' or 'r3d50', got {self.fid_vid_variant!r}"
            )
        if self.scene_protocol not in ("standard", "4dgs"):
            raise ValueError(
                f"scene_protocol must be 'standard' or '4dgs', got {self.scene_protocol!r}"
            )
        if self.resolution is not None and self.resolution < 16:
            raise ValueError(f"resolution must be >= 16 or None, got {self.resolution}")
        unknown = set(self.weights) - set(REGISTRY)
        if unknown:
            raise ValueError(
                f"weights: unknown networks {sorted(unknown)}; known: {sorted(REGISTRY)}"
            )

    def networks(self) -> dict[str, tuple[str, ...]]:
        """Registry names of the networks each enabled pretrained metric needs."""
        wanted = {
            "clip": ("clip_vit_b32",),
            "lpips": ("vgg16", "lpips_vgg"),
            "fvd": ("i3d",),
            "fid_vid": ("inception_fid",) if self.fid_vid_variant == "frame_fid" else ("r3d50",),
        }
        return {k: v for k, v in wanted.items() if getattr(self, k)}

    def check_weights(self) -> None:
        """Fail now if a weights path given in :attr:`weights` for a network an enabled metric
        needs does not exist (cheap: no file is read). Call it before a long run; the scorer
        checks again when it loads.

        Raises:
            MissingWeightsError: Naming the path given and the network.
        """
        for names in self.networks().values():
            for name in names:
                if self.weights.get(name):
                    resolve(name, self.weights[name])


def resize_frames(frames: Tensor, size: tuple[int, int]) -> Tensor:
    """``(T, H, W, C)`` frames resized to ``size`` ``(H, W)`` for comparison at the protocol
    resolution: area averaging when shrinking, bilinear otherwise."""
    x = frames.permute(0, 3, 1, 2)
    mode = "area" if size[0] < x.shape[2] else "bilinear"
    kwargs = {} if mode == "area" else {"align_corners": False}
    return torch.nn.functional.interpolate(x, size, mode=mode, **kwargs).permute(0, 2, 3, 1)


def _missing_files(networks: tuple[str, ...], explicit: dict[str, str]) -> list[str]:
    """Published file names of the networks not found, for the "n/a" report. A network whose
    path was given explicitly is never "missing": its absence raises."""
    missing = []
    for name in networks:
        if explicit.get(name):
            resolve(name, explicit[name])  # raises MissingWeightsError naming that path
            continue
        try:
            resolve(name)
        except MissingWeightsError:
            missing.append(REGISTRY[name].filename)
    return missing


def _load_metric(cfg: BenchmarkConfig, key: str) -> Any:
    w = cfg.weights
    if key == "clip":
        from ds4d_pl.metrics.clip import CLIPSimilarity

        return CLIPSimilarity.from_pretrained(w.get("clip_vit_b32"))
    if key == "lpips":
        from ds4d_pl.metrics.lpips import LPIPS

        # 4D-GS's metrics.py feeds LPIPS [0, 1] images; reproduced only in that protocol.
        rescale = cfg.scene_protocol == "standard"
        return LPIPS.from_pretrained(w.get("vgg16"), w.get("lpips_vgg"), rescale=rescale)
    if key == "fvd":
        from ds4d_pl.metrics.fvd import FVD

        return FVD.from_pretrained(w.get("i3d"), mode=cfg.fvd_mode)
    from ds4d_pl.metrics.fid_vid import FIDVID

    variant = cfg.fid_vid_variant
    path = w.get("inception_fid" if variant == "frame_fid" else "r3d50")
    return FIDVID.from_pretrained(variant, path)


def missing_weights(cfg: BenchmarkConfig, key: str) -> str | None:
    """Why the pretrained metric ``key`` (``clip``, ``lpips``, ``fvd``, ``fid_vid``) cannot be
    computed (``"n/a (missing weights: FILE)"``), or ``None`` when its weights are found. An
    explicit path that does not exist raises instead (it is never reported as "n/a")."""
    missing = _missing_files(cfg.networks()[key], cfg.weights)
    return f"n/a (missing weights: {', '.join(missing)})" if missing else None


def pretrained_metric(
    cfg: BenchmarkConfig, key: str, device: str | torch.device = "cpu"
) -> tuple[Any | None, str | None]:
    """The pretrained metric ``key`` loaded on ``device``, or ``None`` and why it is not
    available. The metric scores on one process (no DDP gathering): callers score every item
    themselves."""
    reason = missing_weights(cfg, key)
    if reason is not None:
        return None, reason
    net = _load_metric(cfg, key).to(device)
    # A scorer sees every clip itself (under DDP, ``ds4d test`` scores on rank 0 alone), so its
    # metrics must not gather states from other ranks: they would never answer.
    net.sync_on_compute = False
    net._to_sync = False
    return net, None


class ProtocolScorer:
    """Scores ``(object, view)`` clips on the benchmark protocol.

    Args:
        cfg: Which metrics, their variants and weight paths.
        device: Where the metric networks run.
    """

    def __init__(self, cfg: BenchmarkConfig | None = None, device: str | torch.device = "cpu"):
        self.cfg = cfg or BenchmarkConfig()
        self.device = torch.device(device)
        #: Metric name → reason it is not computed (``"n/a (missing weights: FILE)"``).
        self.unavailable: dict[str, str] = {}
        #: Metric name → sha256 of every weights file it loaded.
        self.checksums: dict[str, Any] = {}
        self._nets: dict[str, Any] = {}
        self._build()
        # metric → object → view → list of per-frame (or per-clip) values
        self._values: dict[str, dict[str, dict[int, list[float]]]] = defaultdict(
            lambda: defaultdict(lambda: defaultdict(list))
        )
        # object → [summed squared error over moving pixels, number of values summed]
        self._pooled: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
        self._num_clips = 0
        self._clips: set[tuple[str, int]] = set()

    # ------------------------------------------------------------------ set-up
    def _build(self) -> None:
        self.cfg.check_weights()  # every explicit path first, before any network is loaded
        for key in self.cfg.networks():
            net, reason = pretrained_metric(self.cfg, key, self.device)
            if net is None:
                self.unavailable[key] = reason
                continue
            self._nets[key] = net
            self.checksums[key] = getattr(net, "weights_sha256", None)

    # ---------------------------------------------------------------- scoring
    @torch.no_grad()
    def add_clip(
        self,
        obj: str,
        view: int,
        pred: Tensor,
        target: Tensor,
        dyn_mask: Tensor | None = None,
        chunk: int = 8,
    ) -> None:
        """Score one clip.

        Args:
            obj: Object name.
            view: Evaluation view index.
            pred: ``(T, H, W, 3)`` predicted frames in ``[0, 1]``, on the protocol background.
            target: ``(T, H, W, 3)`` ground-truth frames, same size and background.
            dyn_mask: Optional ``(T, H, W, 1)`` boolean moving-region mask.
            chunk: Frames per network batch.

        Raises:
            ValueError: Shapes differ, or this ``(obj, view)`` clip was already added.
        """
        if pred.shape != target.shape or pred.ndim != 4 or pred.shape[-1] != 3:
            raise ValueError(
                f"{obj}/eval_{view}: prediction {tuple(pred.shape)} and ground truth "
                f"{tuple(target.shape)} must both be (T, H, W, 3)"
            )
        if (obj, view) in self._clips:
            raise ValueError(
                f"{obj}/eval_{view}: this clip was already scored; each (object, view) counts "
                "once (a duplicate would bias the averages and FID-VID's covariances)"
            )
        if dyn_mask is not None and dyn_mask.shape[:3] != pred.shape[:3]:
            raise ValueError(f"{obj}/eval_{view}: dynamic mask {tuple(dyn_mask.shape)} mismatch")
        pred = pred.float().clamp(0.0, 1.0)
        target = target.float().clamp(0.0, 1.0)
        self._clips.add((obj, view))
        values = self._values
        scene_4dgs = self.cfg.scene_protocol == "4dgs"
        for s in range(0, pred.shape[0], chunk):
            p = pred[s : s + chunk].to(self.device)
            t = target[s : s + chunk].to(self.device)
            if scene_4dgs:
                # 4D-GS scores PNG files it wrote with torchvision's save_image.
                p, t = to_8bit(p), to_8bit(t)
            mse = (p - t).pow(2).mean(dim=(1, 2, 3))
            values["psnr"][obj][view] += psnr_from_mse(mse).tolist()
            values["ssim"][obj][view] += (ssim_zero_padded if scene_4dgs else ssim)(p, t).tolist()
            if dyn_mask is not None:
                m = dyn_mask[s : s + chunk].to(self.device).float()
                n = m.sum(dim=(1, 2, 3)) * 3
                err = ((p - t).pow(2) * m).sum(dim=(1, 2, 3))
                # Frames whose mask is empty have no dynamic region to score.
                values["dyn_psnr"][obj][view] += [
                    psnr_from_mse(e / c).item() for e, c in zip(err, n, strict=True) if c > 0
                ]
                self._pooled[obj][0] += float(err.double().sum())
                self._pooled[obj][1] += float(n.double().sum())
            for key in ("clip", "lpips"):
                if key in self._nets:
                    values[key][obj][view] += self._nets[key].scores(p, t).tolist()
        if "fvd" in self._nets:
            fvd = self._nets["fvd"]
            if self.cfg.fvd_mode == "consistent4d":
                from ds4d_pl.metrics.fvd import consistent4d_fvd

                # Per-clip distance kept per (object, view), so clips average over views and
                # then objects as the published evaluation does.
                logits = fvd.logits(torch.stack([pred, target]).to(self.device))
                values["fvd"][obj][view].append(float(consistent4d_fvd(logits[0], logits[1])))
            else:
                fvd.update(pred.to(self.device), target.to(self.device))
        if "fid_vid" in self._nets:
            self._nets["fid_vid"].update(pred.to(self.device), target.to(self.device))
        self._num_clips += 1

    def results(self) -> dict[str, Any]:
        """Every requested metric: a number, ``None`` (nothing to score, e.g. no moving pixels)
        or ``"n/a (missing weights: FILE)"``; plus ``num_objects``, ``num_clips``,
        ``scene_protocol``, the sample counts of the set-level distances
        (``fid_vid_num_clips``, ``fid_vid_num_frames`` for ``frame_fid``, ``fvd_num_clips`` in
        ``set`` mode) and the weights' checksums."""
        out: dict[str, Any] = {}
        for key, _ in COLUMNS:
            if key in self.unavailable:
                out[key] = self.unavailable[key]
            elif key in self._nets and (key == "fid_vid" or self.cfg.fvd_mode == "set"):
                # Set-level metrics: one number over all clips, which needs at least two.
                try:
                    out[key] = float(self._nets[key].compute())
                except ValueError as err:
                    out[key] = f"n/a ({err})"
            elif key == "dyn_psnr_pooled":
                out[key] = _pooled_psnr(self._pooled)
            elif key in self._values:
                out[key] = _hierarchical_mean(self._values[key])
            elif key in ("psnr", "ssim", "dyn_psnr") or key in self._nets:
                out[key] = None
        out["num_objects"] = len(self._values["psnr"])
        out["num_clips"] = self._num_clips
        out["scene_protocol"] = self.cfg.scene_protocol
        if self.cfg.fvd and "fvd" in self._nets:
            out["fvd_mode"] = self.cfg.fvd_mode
            if self.cfg.fvd_mode == "set":
                out["fvd_num_clips"] = self._nets["fvd"].last_num_clips
        if self.cfg.fid_vid and "fid_vid" in self._nets:
            out["fid_vid_variant"] = self.cfg.fid_vid_variant
            # Set-level distances depend on the sample size; report it with the value.
            out["fid_vid_num_clips"] = self._nets["fid_vid"].num_clips()
            if self.cfg.fid_vid_variant == "frame_fid":
                out["fid_vid_num_frames"] = self._nets["fid_vid"].num_frames()
        out["weights_sha256"] = self.checksums
        return out


def _hierarchical_mean(values: dict[str, dict[int, list[float]]]) -> float | None:
    """Mean over frames, then views, then objects (empty views and objects are skipped)."""
    per_object = []
    for views in values.values():
        per_view = [sum(v) / len(v) for v in views.values() if v]
        if per_view:
            per_object.append(sum(per_view) / len(per_view))
    if not per_object:
        return None
    return sum(per_object) / len(per_object)


def _pooled_psnr(pooled: dict[str, list[float]]) -> float | None:
    """PSNR of each object's pooled squared error, averaged over objects with moving pixels."""
    per_object = [float(psnr_from_mse(torch.tensor(e / n))) for e, n in pooled.values() if n > 0]
    return sum(per_object) / len(per_object) if per_object else None


def _cell(value: Any, digits: int) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, str):
        return value
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    return f"{value:.{digits}f}"


#: Why the benchmark columns are empty for a scene without evaluation views.
NO_EVAL_VIEWS = (
    "no evaluation views: scene {name!r} has no ground truth of novel views (e.g. no eval_gt "
    "folder), as for any video of your own"
)

#: Per-split scores shown below the benchmark row: held-out frames and input reconstruction.
SPLIT_COLUMNS = (
    ("psnr", "PSNR↑"),
    ("masked_psnr", "object PSNR↑"),
    ("ssim", "SSIM↑"),
    ("dyn_psnr", "dyn PSNR↑"),
    ("lpips", "LPIPS↓"),
)
_SPLIT_LABELS = {"holdout": "held-out frames (input view)", "input": "training frames (input view)"}


def unavailable_protocol(reason: str) -> dict[str, Any]:
    """The benchmark columns, each ``"n/a (<reason>)"``: what ``metrics.json`` says when the
    protocol cannot be scored at all."""
    out: dict[str, Any] = {key: f"n/a ({reason})" for key, _ in COLUMNS}
    out.update(num_objects=0, num_clips=0)
    return out


def _split_table(results: dict[str, Any]) -> str:
    digits = {"psnr": 2, "masked_psnr": 2, "ssim": 4, "dyn_psnr": 2, "lpips": 4}
    rows = []
    for split, label in _SPLIT_LABELS.items():
        if not any(k.startswith(f"{split}/") for k in results):
            continue
        cells = [_cell(results.get(f"{split}/{k}"), digits[k]) for k, _ in SPLIT_COLUMNS]
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    if not rows:
        return ""
    head = "| views | " + " | ".join(label for _, label in SPLIT_COLUMNS) + " |"
    sep = "|---|" + "---|" * len(SPLIT_COLUMNS)
    return "\n" + "\n".join([head, sep, *rows]) + "\n"


def markdown_table(results: dict[str, Any], title: str) -> str:
    """The paper's columns as a one-row markdown table (an unavailable metric reads ``n/a`` in
    its cell and its reason once below the table), then the per-split scores."""
    digits = {"clip": 4, "lpips": 4, "fvd": 2, "fid_vid": 2, "psnr": 2, "ssim": 4, "dyn_psnr": 2}
    digits["dyn_psnr_pooled"] = 2
    keys = [k for k, _ in COLUMNS if k in results]
    labels = dict(COLUMNS)
    head = "| " + " | ".join(labels[k] for k in keys) + " |"
    sep = "|" + "---|" * len(keys)
    reasons: dict[str, list[str]] = {}
    cells = []
    for k in keys:
        value = results[k]
        if isinstance(value, str) and value.startswith("n/a ("):
            reasons.setdefault(value, []).append(labels[k].rstrip("↑↓"))
            value = "n/a"
        cells.append(_cell(value, digits[k]))
    row = "| " + " | ".join(cells) + " |"
    notes = []
    if "fvd_mode" in results:
        notes.append(f"FVD mode: {results['fvd_mode']}")
    if "fid_vid_variant" in results:
        notes.append(f"FID-VID variant: {results['fid_vid_variant']}")
    notes.append(f"{results.get('num_objects', 0)} object(s), {results.get('num_clips', 0)} clips")
    scale = results.get("render_scale")
    if isinstance(scale, dict) and scale.get("ratio", 1.0) != 1.0:
        notes.append(_scale_note(scale))
    unavailable = "".join(f"\n- {', '.join(cols)}: {reason}" for reason, cols in reasons.items())
    body = f"# {title}\n\n{head}\n{sep}\n{row}\n\n" + "; ".join(notes) + "\n" + unavailable
    return body + ("\n" if unavailable else "") + _split_table(results)


def _scale_note(scale: dict[str, Any]) -> str:
    """How the Gaussians were drawn against the pixel scale they were fitted at."""
    if scale.get("mode") == "native":
        done = "drawn natively: splats " + ("alias" if scale["ratio"] < 1 else "show gaps")
    else:
        done = ScalePlan(scale["ratio"], scale["supersample"], scale["dilation"]).describe()
    return f"drawn at {scale['ratio']:.3g}x the pixel scale the model was fitted at ({done})"


def write_report(out_dir: str | Path, results: dict[str, Any], title: str = "Metrics") -> None:
    """Write ``metrics.json`` and ``metrics.md`` into ``out_dir`` atomically."""
    out_dir = Path(out_dir)
    write_json(out_dir / "metrics.json", results)
    with atomic_path(out_dir / "metrics.md") as tmp:
        tmp.write_text(markdown_table(results, title))


@torch.no_grad()
def score_model(
    render: Callable[[Cameras, Tensor], RenderOutput],
    views: ViewSet,
    cfg: BenchmarkConfig,
    rendered_on: Tensor,
    name: str,
    device: str | torch.device = "cpu",
    show_progress: bool | None = False,
) -> dict[str, Any]:
    """Every evaluation view rendered for every frame and scored on the benchmark protocol:
    the numbers of ``metrics.json`` and ``metrics.md`` of ``ds4d test``.

    Args:
        render: ``render(cameras, t)`` of the model.
        views: The evaluation views (ground truth).
        cfg: Metrics, variants, weights and the protocol resolution.
        rendered_on: ``(3,)`` background the model renders over; renders are re-composited on
            the protocol's background through their alpha.
        name: Object name (the outer level of the average).
        device: Where the metric networks run.
        show_progress: A progress bar over the views (``None``: when stderr is a terminal).
    """
    scorer = ProtocolScorer(cfg, device=device)
    h, w = views.image_size
    size = (cfg.resolution, cfg.resolution) if cfg.resolution else (h, w)
    bg = torch.ones(3) if cfg.white_background else rendered_on.cpu()
    dyn = views.dynamic_mask()
    for k in progress(range(views.num_views), f"score {name}", enabled=show_progress):
        preds = []
        for f in range(views.num_frames):
            cam = views.cameras_at(f)[k].resized(size[1], size[0])
            out = render(cam, views.times[f])
            preds.append(out.rgb_on(bg, rendered_on)[0].clamp(0.0, 1.0).cpu())
        target = composite(views.rgb[k], views.alpha[k], bg)
        mask = dyn[k].float()
        if size != (h, w):
            target = resize_frames(target, size)
            mask = resize_frames(mask, size)
        scorer.add_clip(name, k, torch.stack(preds), target, mask > 0.5)
    results = scorer.results()
    results["resolution"] = list(size)
    return results
