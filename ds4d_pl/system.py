"""DS4DSystem: the LightningModule that wires Gaussians, field, renderer and losses.

It owns no maths of its own: each piece lives in its module and is read here in the order of
DESIGN §4. Optimisation is manual because densification changes the set of parameters mid-run,
which Lightning's automatic loop (and its cached optimizer state) does not expect.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor

from ds4d_pl import distributed
from ds4d_pl.atomic import write_json
from ds4d_pl.cameras import Cameras
from ds4d_pl.conditioning.build import build_conditioner, feature_cache_dir
from ds4d_pl.conditioning.encoders import encode_views, encoder_record
from ds4d_pl.config import (
    AblationConfig,
    ConditioningConfig,
    DensifyConfig,
    FieldConfig,
    GaussianInit,
    LossWeights,
    OptimConfig,
    StageSchedule,
)
from ds4d_pl.data.io import write_rgb, write_rgba
from ds4d_pl.data.sampler import FrameSampler, step_generator
from ds4d_pl.data.types import FrameBatch, Scene4D, composite
from ds4d_pl.fields import build_field
from ds4d_pl.fields.deformation import apply_deltas
from ds4d_pl.gaussians.canonical import CanonicalGaussians
from ds4d_pl.gaussians.densify import DensifyStrategy
from ds4d_pl.losses import photometric_terms, scale_ratio_term, weigh
from ds4d_pl.metrics.image import ImagePSNR, ImageSSIM, MaskedPSNR
from ds4d_pl.metrics.protocol import BenchmarkConfig, ProtocolScorer, resize_frames, write_report
from ds4d_pl.priors.sds import SDSConfig, SDSOutput, Zero123Guidance, Zero123SDS
from ds4d_pl.render import build_renderer
from ds4d_pl.render.base import GaussianParams, RenderOutput

#: Keys of ``metrics.json`` written by ``ds4d test``.
METRIC_KEYS = ("psnr", "ssim", "dyn_psnr")


def _typed(cls: type, value: object) -> object:
    """A config dataclass from itself, ``None`` (defaults) or a plain dict (hyper-parameters
    stored in a checkpoint), so ``DS4DSystem.load_from_checkpoint`` works outside the CLI."""
    if value is None:
        return cls()
    if isinstance(value, dict):
        return cls(**value)
    if not isinstance(value, cls):
        raise TypeError(f"expected {cls.__name__}, got {type(value).__name__}")
    return value


def log_images(logger: object, key: str, images: list, step: int) -> None:
    """Send ``(H, W, 3)`` images in ``[0, 1]`` to a logger that takes images (W&B through
    ``log_image``, TensorBoard through ``add_image``); other loggers are skipped."""
    if logger is None or not images:
        return
    if hasattr(logger, "log_image"):
        captions = [f"view {j}" for j in range(len(images))]
        logger.log_image(key=key, images=images, caption=captions, step=step)
    elif hasattr(getattr(logger, "experiment", None), "add_image"):
        for j, image in enumerate(images):
            logger.experiment.add_image(f"{key}/view_{j}", image, step, dataformats="HWC")


def _is_colour(value: object) -> bool:
    """An RGB triple of numbers (parsers record the background their data is meant for)."""
    return (
        isinstance(value, (tuple, list))
        and len(value) == 3
        and all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in value)
    )


def fusion_statistics(weights: Tensor) -> dict[str, float]:
    """Summary of TSSF view weights ``(V, N)``: how much the input view (view 0) and the pseudo
    views count, averaged over Gaussians with any weight, and the fraction of Gaussians that no
    view sees. Logged to check whether a fusion mode buries the input view."""
    seen = weights.sum(0) > 0
    stats = {"train/fusion/unseen_fraction": float(1.0 - seen.float().mean())}
    if seen.any():
        w = weights[:, seen]
        stats["train/fusion/input_weight"] = float(w[0].mean())
        stats["train/fusion/pseudo_weight"] = float(w[1:].sum(0).mean())
    return stats


class DS4DSystem(pl.LightningModule):
    """Fits canonical 3D Gaussians and a deformation field to a video (DS4D).

    Args:
        init: How the canonical Gaussians start (random sphere or points).
        field: Deformation-field encoding and MLP.
        loss: Weight of every loss term.
        optim: Learning rates per parameter group.
        schedule: Coarse (static) and fine (deforming) stage lengths and per-step sampling.
        densify: Clone / split / prune schedule.
        ablation: Which parts of DS4D are on (init, frame features, DSFD, TSSF); presets in
            ``configs/ablation/``.
        conditioning: Settings of the frame-feature conditioning (encoder, DSFD reference, TSSF
            temperature, projection width, occlusion test).
        benchmark: Metrics of ``ds4d test`` (CLIP, LPIPS, FVD, FID-VID besides PSNR / SSIM /
            dynamic PSNR), their variants, weight paths and the protocol resolution.
        sds: Zero123 score distillation (local weights, guidance scale, timestep annealing,
            w(t), conditioning image); applied when ``loss.sds > 0``.
        renderer: ``auto`` (gsplat on CUDA, else the torch reference), ``torch_tiled``, ``gsplat``.
        background: RGB background colour in ``[0, 1]`` (white for the Consistent4D protocol).
        seed: Seed of the Gaussian initialisation and of the per-step sampling.
    """

    def __init__(
        self,
        init: GaussianInit | None = None,
        field: FieldConfig | None = None,
        loss: LossWeights | None = None,
        optim: OptimConfig | None = None,
        schedule: StageSchedule | None = None,
        densify: DensifyConfig | None = None,
        ablation: AblationConfig | None = None,
        conditioning: ConditioningConfig | None = None,
        benchmark: BenchmarkConfig | None = None,
        sds: SDSConfig | None = None,
        renderer: str = "auto",
        background: tuple[float, float, float] = (1.0, 1.0, 1.0),
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.init_cfg = _typed(GaussianInit, init)
        self.field_cfg = _typed(FieldConfig, field)
        self.loss_cfg = _typed(LossWeights, loss)
        self.optim_cfg = _typed(OptimConfig, optim)
        self.schedule = _typed(StageSchedule, schedule)
        self.densify_cfg = _typed(DensifyConfig, densify)
        self.ablation = _typed(AblationConfig, ablation)
        self.cond_cfg = _typed(ConditioningConfig, conditioning)
        self.benchmark_cfg = _typed(BenchmarkConfig, benchmark)
        self.sds_cfg = _typed(SDSConfig, sds)
        self.seed = seed
        if len(background) != 3 or not all(0.0 <= c <= 1.0 for c in background):
            raise ValueError(f"model.background must be 3 values in [0, 1], got {background}")
        self.save_hyperparameters()
        self.register_buffer("background", torch.tensor(background, dtype=torch.float32))
        # The scene scale drives learning rates and densification thresholds; it is a buffer so
        # a resumed run uses the value of the original initialisation.
        self.register_buffer("extent", torch.tensor(0.0))
        self.gaussians = CanonicalGaussians.empty(self.init_cfg.sh_degree)
        self.conditioner, encoder = build_conditioner(self.ablation, self.cond_cfg)
        # The frozen encoder is only used once at set-up; kept out of the module tree so it is
        # neither checkpointed nor moved between devices with the trainable parts.
        self._encoder = [encoder] if encoder is not None else []
        # The frozen Zero123 is loaded in setup() when loss.sds > 0; like the encoder it stays
        # out of the module tree (never checkpointed, never handed to the optimiser or DDP).
        self._sds: list[Zero123SDS] = []
        self._last_sds: SDSOutput | None = None
        cond_dim = self.conditioner.out_dim if self.conditioner is not None else 0
        self.field = build_field(self.field_cfg, cond_dim=cond_dim)
        # Rendered depth of the canonical Gaussians in every training view (occlusion test of
        # the point features); refreshed every conditioning.visibility_every steps.
        self._visibility: Tensor | None = None
        self._last_deformed: Tensor | None = None
        self._last_fusion_weights: Tensor | None = None
        self.renderer = build_renderer(renderer)
        self.strategy: DensifyStrategy | None = None
        self.sampler: FrameSampler | None = None
        self.scene: Scene4D | None = None
        for stage in ("val", "test"):
            setattr(self, f"{stage}_psnr", ImagePSNR(data_range=1.0))
            setattr(self, f"{stage}_ssim", ImageSSIM(data_range=1.0))
            setattr(self, f"{stage}_dyn_psnr", MaskedPSNR(data_range=1.0))
        self._step_started = 0.0
        self._densify_totals = {"cloned": 0, "split": 0, "pruned": 0}
        #: Under DDP, average the Gaussian gradients over ranks every step and reduce the
        #: densification statistics at event steps (see :mod:`ds4d_pl.distributed`). Only the
        #: negative control of ``tests/test_ddp.py`` turns it off, to show that the ranks then
        #: drift apart.
        self.sync_gaussians = True

    # ------------------------------------------------------------------ set-up
    def setup(self, stage: str) -> None:
        dm = self.trainer.datamodule if self.trainer is not None else None
        if dm is None or getattr(dm, "scene", None) is None:
            raise RuntimeError("DS4DSystem needs a DataModule whose setup() produced a scene")
        self.scene = dm.scene
        intended = self.scene.meta.get("background")
        if _is_colour(intended) and not torch.allclose(
            torch.as_tensor(intended, dtype=torch.float32), self.background.cpu()
        ):
            # Composited targets and renders then disagree with the dataset's own protocol
            # (e.g. D-NeRF scenes scored on white), which shifts PSNR without any error.
            rank_zero_warn(
                f"model.background={self.background.tolist()} differs from the background "
                f"{list(intended)} that dataset scene {self.scene.name!r} is meant to be "
                "composited on"
            )
        if self.gaussians.num_gaussians == 0:
            self._init_gaussians(self.scene)
        self.sampler = FrameSampler(
            self.scene.train, self.scene.num_input_views, self.background.cpu()
        )
        self.strategy = DensifyStrategy(self.densify_cfg, float(self.extent))
        if self.conditioner is not None and not self.conditioner.ready:
            self._prepare_features()
        if stage == "fit" and self.loss_cfg.sds > 0 and not self._sds:
            # Fails here, before any step, when the weights are missing (MissingWeightsError).
            guidance = Zero123Guidance.from_pretrained(self.sds_cfg, device=self.device)
            self._sds = [Zero123SDS(guidance, self.scene.train)]
        # Read by DistributedDataParallel when the strategy wraps the module, which happens after
        # this hook (and after a checkpoint restore); without DDP nothing reads it.
        self._ddp_params_and_buffers_to_ignore = self.ddp_ignored_names()
        if stage == "fit":
            self._require_unused_parameter_detection()
        if stage == "fit" and self.trainer.is_global_zero:
            self._write_run_info()

    def ddp_ignored_names(self) -> list[str]:
        """Parameters and buffers that DistributedDataParallel must leave alone.

        * The Gaussian tables: densification replaces them by new Parameters of another size,
          while DDP's reducer keeps the Parameters it registered when wrapping the model. They
          are replicated on every rank and kept identical by :mod:`ds4d_pl.distributed`
          (gradients averaged after backward, densification statistics reduced before events,
          rank 0's tables broadcast at the start of training).
        * The conditioner's decoupled feature maps: every rank derives them from the same frozen
          encoder features at set-up, so broadcasting them at every forward would only cost time.

        Everything else (deformation field, conditioning projection, small buffers) is fixed in
        size and goes through DDP as usual.
        """
        names = [n for n, _ in self.named_parameters() if n.startswith("gaussians.")]
        names += [n for n, _ in self.named_buffers() if n.startswith("conditioner.")]
        return names

    def _require_unused_parameter_detection(self) -> None:
        """Make a DDP strategy detect unused parameters (``strategy: ddp`` then just works).

        The field and the conditioning take no part in coarse steps, so DDP's reducer must be
        told which parameters a step did not use, or its next step fails with "Expected to have
        finished reduction in the prior iteration". ``configs/trainer/ddp.yaml`` names the
        ``ddp_find_unused_parameters_true`` strategy explicitly; this covers a plain ``ddp``.
        The strategy wraps the model only after ``setup``, so the flag still takes effect.
        """
        kwargs = getattr(self.trainer.strategy, "_ddp_kwargs", None)
        if isinstance(kwargs, dict) and not kwargs.get("find_unused_parameters"):
            kwargs["find_unused_parameters"] = True
            rank_zero_info(
                "DS4DSystem: DDP set to find_unused_parameters=True (the deformation field is "
                "unused in coarse steps)"
            )

    def _prepare_features(self) -> None:
        """Encode every (view, frame) of the training views once (disk-cached across runs).

        Under DDP every rank encodes the same frames with the same frozen encoder; the cache
        file is written atomically (temp file + rename), so concurrent writers are safe and a
        reader never sees a partial file.
        """
        encoder = self._encoder[0]
        feats = encode_views(
            encoder,
            self.scene.train,
            self.background.cpu(),
            cache_dir=feature_cache_dir(self.cond_cfg),
        )
        self.conditioner.set_features(
            feats.to(self.device),
            self.scene.train.times.to(self.device),
            per_frame_cameras=self.scene.train.per_frame_cameras,
        )

    def _write_run_info(self) -> None:
        """Record what this run actually used: encoder and checksum, renderer, supervision."""
        root = Path(self.trainer.default_root_dir)
        info = {
            "ablation": asdict(self.ablation),
            "renderer": self.renderer.name,
            "encoder": encoder_record(self._encoder[0]) if self._encoder else None,
            "scene": self.scene.name,
            "pseudo_views": self.scene.train.source,
            "pseudo_view_loss": "l1+ssim",
            "sds": asdict(self.sds_cfg) if self._sds else None,
            "scene_meta": {k: str(v) for k, v in self.scene.meta.items()},
        }
        write_json(root / "run_info.json", info)
        if self.conditioner is not None and self.ablation.dsfd:
            self._write_energy_maps(root / "diagnostics")

    def _write_energy_maps(self, out: Path) -> None:
        """Dynamic-energy maps ``||dynamic|| / ||f||``: ``dynamic_energy.png`` (one row of
        frames per training view) and ``dynamic_energy/view_{j}.png`` (one image per view),
        also sent to the logger when it takes images (W&B, TensorBoard)."""
        energy = self.conditioner.energy.cpu()
        v, t, h, w = energy.shape
        # One scale for every view, so views can be compared by brightness.
        energy = energy / energy.max().clamp_min(1e-6)
        rows = energy.permute(0, 2, 1, 3).reshape(v, h, t * w)
        write_rgb(
            out / "dynamic_energy.png", rows.reshape(v * h, t * w)[..., None].expand(-1, -1, 3)
        )
        images = []
        for j in range(v):
            image = rows[j][..., None].expand(-1, -1, 3)
            write_rgb(out / "dynamic_energy" / f"view_{j}.png", image)
            images.append(image.numpy())
        log_images(self.logger, "diagnostics/dynamic_energy", images, self.global_step)

    def _init_gaussians(self, scene: Scene4D) -> None:
        cfg = self.init_cfg
        g = torch.Generator().manual_seed(self.seed)
        if self.ablation.init == "random":
            gaussians = CanonicalGaussians.random_in_sphere(
                cfg.num, cfg.radius, cfg.sh_degree, cfg.init_opacity, generator=g
            )
        elif cfg.path is not None:
            gaussians = CanonicalGaussians.from_file(
                cfg.path,
                cfg.num,
                cfg.sh_degree,
                init_opacity=cfg.init_opacity,
                normalize_radius=cfg.radius if cfg.normalize else None,
                generator=g,
            )
        elif scene.init_points is not None:
            gaussians = CanonicalGaussians.from_points(
                scene.init_points, scene.init_colors, cfg.sh_degree, cfg.init_opacity
            )
        else:
            raise ValueError(
                f"model.ablation.init='points' but scene {scene.name!r} has no init points and "
                "model.init.path is not set; give a point cloud or mesh file"
            )
        self.gaussians = gaussians.to(self.device)
        self.extent.fill_(max(float(self.gaussians.extent()), 1e-3))
        self.field.set_bounds(self.gaussians.means.detach())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        o = self.optim_cfg
        groups = self.gaussians.param_groups(o, float(self.extent))
        groups.append(
            {"params": list(self.field.encoding_parameters()), "lr": o.field_lr, "name": "field"}
        )
        groups.append({"params": list(self.field.mlp_parameters()), "lr": o.mlp_lr, "name": "mlp"})
        if self.conditioner is not None:
            groups.append(
                {"params": list(self.conditioner.parameters()), "lr": o.cond_lr, "name": "cond"}
            )
        return torch.optim.Adam(groups, lr=0.0, eps=o.eps)

    # -------------------------------------------------------------- the model
    @property
    def deforms(self) -> bool:
        """Whether the field is in use at all (a run with no fine stage stays static)."""
        return self.schedule.fine_steps > 0

    def is_coarse(self, step: int) -> bool:
        return step < self.schedule.coarse_steps

    def gaussians_at(self, t: float | Tensor, deform: bool | None = None) -> GaussianParams:
        """Activated Gaussians at normalised time ``t`` in ``[0, 1]``."""
        gs = self.gaussians
        if not (self.deforms if deform is None else deform):
            return gs.activated()
        tt = torch.as_tensor(t, dtype=gs.means.dtype, device=gs.means.device)
        tt = tt.reshape(1, 1).expand(gs.num_gaussians, 1)
        cond = None
        if self.conditioner is not None:
            points = gs.means
            last = self._last_deformed
            if self.cond_cfg.deformed_positions and last is not None and len(last) == len(points):
                # Knob: where the Gaussians were at the previous forward (stop-grad), a better
                # guess of their image position in each frame than the canonical one. The
                # occlusion test still uses the canonical depth renders.
                points = last
            cond, fused = self.conditioner(
                points, t, self.scene.train.cameras.to(self.device), self._visibility_depth()
            )
            self._last_fusion_weights = fused.weights.detach()
        deltas = self.field(gs.means, tt, cond)
        means, quats, log_scales, logit_opacities, sh_dc = apply_deltas(
            gs.means, gs.quats, gs.log_scales, gs.logit_opacities, gs.sh_dc, deltas
        )
        if self.cond_cfg.deformed_positions:
            self._last_deformed = means.detach()
        return gs.activated(
            means=means,
            quats=quats,
            log_scales=log_scales,
            logit_opacities=logit_opacities,
            sh_dc=sh_dc,
        )

    @torch.no_grad()
    def _visibility_depth(self, refresh: bool = False) -> Tensor:
        """Depth of the canonical Gaussians in every training view, at low resolution.

        Canonical positions do not depend on time, so one render per view serves every frame
        until the next refresh (DESIGN §5: occluded views get zero features).
        """
        if self._visibility is None or refresh:
            res = self.cond_cfg.visibility_resolution
            cams = self.scene.train.cameras.resized(res, res).to(self.device)
            out = self.renderer(self.gaussians.activated(), cams, self.background)
            self._visibility = out.depth[..., 0].detach()
        return self._visibility

    def render(
        self, cameras: Cameras, t: float | Tensor, deform: bool | None = None
    ) -> RenderOutput:
        """Render the model at time ``t`` from ``cameras``."""
        return self.renderer(self.gaussians_at(t, deform), cameras.to(self.device), self.background)

    # --------------------------------------------------------------- training
    def _update_learning_rates(self, optimizer: torch.optim.Optimizer, step: int) -> None:
        o, total = self.optim_cfg, max(self.schedule.total_steps, 1)
        frac = min(step / total, 1.0)
        extent = float(self.extent)

        def decay(a: float, b: float) -> float:
            return math.exp((1 - frac) * math.log(a) + frac * math.log(b))

        for group in optimizer.param_groups:
            name = group.get("name")
            if name == "means":
                group["lr"] = decay(o.means_lr, o.means_lr_final) * extent
            elif name == "field":
                group["lr"] = decay(o.field_lr, o.field_lr_final)
            elif name == "mlp":
                group["lr"] = decay(o.mlp_lr, o.mlp_lr_final)
            elif name == "cond":
                group["lr"] = decay(o.cond_lr, o.cond_lr_final)

    def training_step(self, batch: int, batch_idx: int) -> Tensor:
        step = self.global_step
        optimizer = self.optimizers()
        self._update_learning_rates(optimizer.optimizer, step)
        coarse = self.is_coarse(step)
        deform = self.deforms and not coarse
        if deform and self.conditioner is not None and step % self.cond_cfg.visibility_every == 0:
            self._visibility_depth(refresh=True)
        sched = self.schedule
        samples = self.sampler.sample(
            step_generator(self.seed, step, self.global_rank),
            sched.frames_per_step,
            sched.pseudo_views_per_step,
            frames=[self.sampler.middle_frame]
            if coarse and sched.coarse_frames == "middle"
            else None,
            input_views_per_step=sched.input_views_per_step,
        )

        terms: dict[str, Tensor] = {}
        # Every render with its image size: densification statistics are normalised by it.
        renders: list[tuple[RenderOutput, int, int]] = []
        first: GaussianParams | None = None
        for fb in samples:
            fb = fb.to(self.device)
            params = self.gaussians_at(fb.times[0], deform)
            first = params if first is None else first
            out = self.renderer(params, fb.cameras, self.background)
            renders.append((out, fb.cameras.width, fb.cameras.height))
            frame_terms = photometric_terms(
                out.rgb, out.alpha, fb.rgb, fb.alpha, fb.is_input, self.loss_cfg
            )
            for name, value in frame_terms.items():
                terms[name] = terms.get(name, 0.0) + value / len(samples)
        if self._sds and step >= self.sds_cfg.start_step:
            terms["sds"] = self._sds_term(samples[0], first, step, renders)
        if deform:
            for name, value in self.field.regularizers().items():
                if getattr(self.loss_cfg, name) > 0:
                    terms[name] = value
        if self.loss_cfg.scale_ratio > 0:
            terms["scale_ratio"] = scale_ratio_term(
                self.gaussians.log_scales, self.loss_cfg.max_scale_ratio
            )
        total, weights = weigh(terms, self.loss_cfg, step)
        # Decided by all ranks together under DDP: one rank raising while the others enter the
        # gradient all-reduce would leave them waiting until the collective times out.
        if distributed.any_rank(not bool(torch.isfinite(total))):
            bad = {k: float(v) for k, v in terms.items()}
            raise FloatingPointError(
                f"non-finite loss at step {step} (terms: {bad}"
                + (f", rank {self.global_rank}" if distributed.is_distributed() else "")
                + "); stopping before the parameters or any checkpoint are touched. The last "
                "good checkpoint is intact."
            )

        optimizer.zero_grad(set_to_none=True)
        # Under DDP the fixed-size field's gradients are averaged over ranks by DDP's reducer
        # during this backward; the Gaussians are outside the reducer (ddp_ignored_names).
        self.manual_backward(total)
        sync = self.sync_gaussians and distributed.is_distributed()
        if sync:
            # Mean over ranks, as DDP does for the field: every rank takes the same Adam step.
            distributed.all_reduce_mean_grads_(self.gaussians.parameters())
        for out, width, height in renders:
            # View-space gradients of this rank's own renders: per-render magnitudes as in a
            # single-process run, so densify.grad_threshold keeps its meaning under DDP.
            self.strategy.accumulate(out, width, height)
        optimizer.step()
        if sync and self.strategy.is_event(step):
            # Sum (gradient norms, visible counts) and max (screen radii) over ranks, only at an
            # event: every rank then clones, splits and prunes exactly the same Gaussians.
            self.strategy.reduce_statistics(distributed.all_reduce_sum, distributed.all_reduce_max)
        # Split samples come from a generator of (seed, step) alone, so a resumed run makes the
        # same densification decisions as an uninterrupted one, and every DDP rank draws the
        # same split offsets.
        self.strategy.generator = step_generator(self.seed, step)
        events = self.strategy.step(step, self.gaussians, optimizer.optimizer)

        for key in ("cloned", "split", "pruned"):
            self._densify_totals[key] += int(events.get(key, 0)) if events else 0
        self.log("loss", total.detach(), prog_bar=True, logger=False, batch_size=1)
        # Lightning logs every step's values but writes only every log_every_n_steps; building
        # the ~20 logged scalars only then saves ~20 ms per step on CPU.
        if (step + 1) % max(self.trainer.log_every_n_steps, 1) == 0:
            self._log_step(terms, weights, total, optimizer.optimizer, deform)
        return total.detach()

    def _sds_term(
        self,
        fb: FrameBatch,
        params: GaussianParams,
        step: int,
        renders: list[tuple[RenderOutput, int, int]],
    ) -> Tensor:
        """Zero123 SDS on random views at the first sampled frame (the same deformed
        Gaussians as its photometric render), conditioned as ``model.sds.condition`` says."""
        prior = self._sds[0]
        if prior.guidance.device != self.device:
            prior.guidance.to(self.device)
        # A stream of its own, so turning SDS on does not change which frames are drawn.
        generator = step_generator(self.seed + 7_777, step, self.global_rank)

        def render(cameras: Cameras) -> RenderOutput:
            return self.renderer(params, cameras.to(self.device), self.background)

        sds_step = step - self.sds_cfg.start_step
        result, out = prior(render, self.background, int(fb.frame_ids[0]), sds_step, generator)
        renders.append((out, prior.cfg.resolution, prior.cfg.resolution))
        self._last_sds = result
        return result.loss

    def _log_step(
        self,
        terms: dict[str, Tensor],
        weights: dict[str, float],
        total: Tensor,
        optimizer: torch.optim.Optimizer,
        deform: bool,
    ) -> None:
        log = {f"train/loss/{k}": v.detach() for k, v in terms.items()}
        log.update({f"train/weight/{k}": w for k, w in weights.items()})
        log["train/loss"] = total.detach()
        log["train/num_gaussians"] = float(self.gaussians.num_gaussians)
        log["train/stage_fine"] = float(deform)
        for group in optimizer.param_groups:
            if group.get("name") in ("means", "field", "mlp", "cond"):
                log[f"train/lr/{group['name']}"] = group["lr"]
        # Cumulative counts: events happen every densify.interval steps, and a running total
        # survives the logger's sampling where a one-step value would be missed or repeated.
        log.update({f"train/densify/{k}_total": float(v) for k, v in self._densify_totals.items()})
        if deform and self._last_fusion_weights is not None:
            log.update(fusion_statistics(self._last_fusion_weights))
        if "sds" in terms and self._last_sds is not None:
            log["train/sds/timestep"] = float(self._last_sds.timesteps.float().mean())
            log["train/sds/grad_norm"] = float(self._last_sds.grad_norm)
        self.log_dict(log, batch_size=1)

    def on_train_start(self) -> None:
        # Initialisation is seeded and identical on every rank already; copying rank 0's tables
        # also covers inputs that are not bit-reproducible across devices, and fails with a
        # clear message if the ranks disagree on the Gaussian count (e.g. different checkpoints).
        distributed.broadcast_([getattr(self.gaussians, n) for n in self.gaussians.TABLES])

    def on_train_batch_start(self, batch: int, batch_idx: int) -> None:
        self._step_started = time.perf_counter()

    def on_train_batch_end(self, outputs, batch: int, batch_idx: int) -> None:
        self.log("train/step_ms", 1e3 * (time.perf_counter() - self._step_started), batch_size=1)

    # ------------------------------------------------------------- evaluation
    def _evaluate(self, batch: dict, stage: str) -> None:
        views = self.scene.eval
        with torch.no_grad():
            out = self.render(views.cameras_at(int(batch["frame"])), batch["time"])
        bg = self.background
        target = composite(batch["rgb"], batch["alpha"], bg)
        pred = out.rgb.clamp(0.0, 1.0)
        getattr(self, f"{stage}_psnr").update(pred, target)
        getattr(self, f"{stage}_ssim").update(pred, target)
        getattr(self, f"{stage}_dyn_psnr").update(pred, target, batch["dyn_mask"])

    def _finish(self, stage: str) -> dict[str, float]:
        values = {}
        for key in METRIC_KEYS:
            metric = getattr(self, f"{stage}_{key}")
            values[key] = float(metric.compute())
            metric.reset()
        # The metrics are already gathered over ranks by torchmetrics, so every rank holds the
        # same values; averaging them again only silences Lightning's DDP warning.
        self.log_dict({f"{stage}/{k}": v for k, v in values.items()}, batch_size=1, sync_dist=True)
        return values

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._finish("val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._finish("test")
        if self.trainer.is_global_zero:
            results = self.protocol_results()
            results["num_gaussians"] = self.gaussians.num_gaussians
            results["num_frames"] = self.scene.eval.num_frames
            results["num_views"] = self.scene.eval.num_views
            write_report(self.trainer.default_root_dir, results, title=self.scene.name)

    @torch.no_grad()
    def protocol_results(self) -> dict:
        """Every evaluation view rendered for every frame, scored on the benchmark protocol
        (``metrics/protocol.py``): the numbers of ``metrics.json`` and ``metrics.md``."""
        cfg = self.benchmark_cfg
        views = self.scene.eval
        scorer = ProtocolScorer(cfg, device=self.device)
        h, w = views.image_size
        size = (cfg.resolution, cfg.resolution) if cfg.resolution else (h, w)
        bg = torch.ones(3) if cfg.white_background else self.background.cpu()
        dyn = views.dynamic_mask()
        for k in range(views.num_views):
            preds = []
            for f in range(views.num_frames):
                cam = views.cameras_at(f)[k].resized(size[1], size[0])
                out = self.render(cam, views.times[f])
                # Renders are composited on the model background; re-composite on the
                # protocol's background through the rendered alpha.
                rgb = out.rgb_on(bg, self.background)
                preds.append(rgb[0].clamp(0.0, 1.0).cpu())
            target = composite(views.rgb[k], views.alpha[k], bg)
            mask = dyn[k].float()
            if size != (h, w):
                target = resize_frames(target, size)
                mask = resize_frames(mask, size)
            scorer.add_clip(self.scene.name, k, torch.stack(preds), target, mask > 0.5)
        results = scorer.results()
        results["resolution"] = list(size)
        return results

    def predict_step(self, batch: dict, batch_idx: int) -> Tensor:
        """Render every evaluation view at one frame and write it as RGBA PNGs.

        Files land in ``<run_dir>/predictions/<scene>/eval_{k}/{t}.png``, the layout of the
        Consistent4D ground truth, so predictions and GT can be compared file by file.
        """
        with torch.no_grad():
            out = self.render(self.scene.eval.cameras_at(int(batch["frame"])), batch["time"])
        rgba = torch.cat([out.rgb.clamp(0.0, 1.0), out.alpha.clamp(0.0, 1.0)], dim=-1).cpu()
        root = Path(self.trainer.default_root_dir) / "predictions" / self.scene.name
        for k, image in enumerate(rgba):
            write_rgba(root / f"eval_{k}" / f"{int(batch['frame'])}.png", image)
        return rgba

    # ------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["densify_state"] = self.strategy.state_dict() if self.strategy else None
        checkpoint["ds4d"] = {
            "num_gaussians": self.gaussians.num_gaussians,
            "densify_totals": dict(self._densify_totals),
            "visibility_depth": self._visibility,
            "renderer": self.renderer.name,
            "scene": self.scene.name if self.scene else None,
            "configs": {
                "init": asdict(self.init_cfg),
                "ablation": asdict(self.ablation),
                "schedule": asdict(self.schedule),
            },
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # Runs before the state dict is copied in, so take the extent from the checkpoint itself.
        extent = float(checkpoint["state_dict"]["extent"])
        self.strategy = DensifyStrategy(self.densify_cfg, extent)
        if checkpoint.get("densify_state") is not None:
            self.strategy.load_state_dict(checkpoint["densify_state"])
        self._densify_totals.update(checkpoint.get("ds4d", {}).get("densify_totals", {}))
        self._visibility = checkpoint.get("ds4d", {}).get("visibility_depth")
