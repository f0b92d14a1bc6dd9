"""DS4DSystem: the LightningModule that wires the 4D model to data, losses and the optimiser.

The asset itself (canonical Gaussians, deformation field, conditioning) is the plain
``nn.Module`` :class:`~ds4d_pl.model.DS4DModel`; losses live in ``losses.py``, the optimiser
table in ``optim.py``, densification in ``gaussians/densify.py``, protocol scoring in
``metrics/protocol.py``, and what a run writes in ``callbacks/``. This module holds set-up, the
training step, evaluation steps, checkpoint compatibility and the DDP glue. Optimisation is
manual because densification changes the set of parameters mid-run, which Lightning's automatic
loop (and its cached optimizer state) does not expect.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.core.optimizer import LightningOptimizer
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor, nn

from ds4d_pl import distributed
from ds4d_pl.callbacks.predictions import EvalViewWriter, straight_rgba
from ds4d_pl.callbacks.progress import shows_progress
from ds4d_pl.callbacks.run_info import RunInfo
from ds4d_pl.cameras import Cameras
from ds4d_pl.compat import UPGRADED_HPARAMS, upgrade_hparams, upgrade_state_dict
from ds4d_pl.conditioning.build import feature_cache_dir
from ds4d_pl.config import (
    AblationConfig,
    ConditioningConfig,
    DensifyConfig,
    FieldConfig,
    FramingConfig,
    GaussianInit,
    LossWeights,
    OptimConfig,
    Representation,
    StageSchedule,
)
from ds4d_pl.data.datamodule import SPLITS
from ds4d_pl.data.sampler import FrameSampler, step_generator
from ds4d_pl.data.types import FrameBatch, Scene4D, composite
from ds4d_pl.divergence import find_divergence
from ds4d_pl.errors import DivergenceError
from ds4d_pl.fields.nerf import NeRFConfig
from ds4d_pl.gaussians.densify import DensifyStrategy
from ds4d_pl.logging import fusion_statistics
from ds4d_pl.losses import (
    PseudoViewLoss,
    check_pseudo_weighting,
    photometric_terms,
    pseudo_view_trust,
    scale_ratio_term,
    weigh,
)
from ds4d_pl.metrics.noref import (
    flicker_scores,
    novel_view_clip,
    real_view_lpips,
    unavailable_metrics,
)
from ds4d_pl.metrics.protocol import (
    NO_EVAL_VIEWS,
    BenchmarkConfig,
    score_model,
    unavailable_protocol,
    write_report,
)
from ds4d_pl.metrics.stage import StageMetrics
from ds4d_pl.model import DS4DModel
from ds4d_pl.optim import build_optimizer, check_table, group_table, set_learning_rates
from ds4d_pl.priors.sds import SDSConfig, SDSOutput, Zero123Guidance, Zero123SDS
from ds4d_pl.render.base import GaussianParams, RenderOutput
from ds4d_pl.render.framing import FramingCorrection, framing_gauge
from ds4d_pl.render.scale import (
    SCALE_TOLERANCE,
    ScalePlan,
    fitted_focal,
    focal_px,
)
from ds4d_pl.resume import data_fingerprint

# Offset of the feature-dropout stream's seed: its own stream (without the rank, so DDP ranks
# agree), so turning dropout on does not change which frames and views are drawn.
_DROPOUT_SEED = 9_091
# What drawing natively (benchmark.render_scale: native) at another pixel scale than the fit's
# cost on the synthetic object (row B, 3 seeds, against the same runs drawn at the fitted scale:
# benchmarks/render_scale.py, benchmarks/results/render_scale.md).
RENDER_SCALE_COST = (
    "on the synthetic object, fitted at 64² and drawn at 128²: 24.1 instead of 30.3 dB; fitted "
    "at 128² and drawn at 64²: 22.4 instead of 34.0 dB"
)


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
        renderer: ``auto`` (gsplat on CUDA, else the torch reference), ``torch``, ``gsplat``.
        background: RGB background colour in ``[0, 1]`` (white for the Consistent4D protocol).
        seed: Seed of the Gaussian initialisation and of the per-step sampling.
        representation: ``gaussians`` (canonical Gaussians + deformation field) or ``nerf`` (a
            dynamic NeRF, volume-rendered; ``configs/model/nerf.yaml``). A NeRF is not densified
            and has no scale-ratio term.
        nerf: The NeRF's field and sampling settings (``None``: defaults); only for ``nerf``.
        framing: Learned per-view framing of the pseudo views (scale and shift about the image
            centre, applied to renders before the loss); off by default.
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
        renderer: Literal["auto", "torch", "gsplat"] = "auto",
        background: tuple[float, float, float] = (1.0, 1.0, 1.0),
        seed: int = 0,
        representation: Representation = "gaussians",
        nerf: NeRFConfig | None = None,
        framing: FramingConfig | None = None,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        legacy = upgrade_hparams(
            {"loss": loss, "ablation": ablation, "conditioning": conditioning, "renderer": renderer}
        )
        configs = {
            "init": _typed(GaussianInit, init),
            "field": _typed(FieldConfig, field),
            "loss": _typed(LossWeights, legacy["loss"]),
            "optim": _typed(OptimConfig, optim),
            "schedule": _typed(StageSchedule, schedule),
            "densify": _typed(DensifyConfig, densify),
            "ablation": _typed(AblationConfig, ablation),
            "conditioning": _typed(ConditioningConfig, legacy["conditioning"]),
            "benchmark": _typed(BenchmarkConfig, benchmark),
            "sds": _typed(SDSConfig, sds),
            "framing": _typed(FramingConfig, framing),
        }
        self.init_cfg, self.field_cfg = configs["init"], configs["field"]
        self.loss_cfg, self.optim_cfg = configs["loss"], configs["optim"]
        self.schedule, self.densify_cfg = configs["schedule"], configs["densify"]
        self.ablation, self.cond_cfg = configs["ablation"], configs["conditioning"]
        self.benchmark_cfg, self.sds_cfg = configs["benchmark"], configs["sds"]
        self.framing_cfg = configs["framing"]
        self.seed = seed
        if len(background) != 3 or not all(0.0 <= c <= 1.0 for c in background):
            raise ValueError(f"model.background must be 3 values in [0, 1], got {background}")
        self.optim_table = group_table(self.optim_cfg)
        check_table(self.optim_table)
        self.save_hyperparameters()
        # Every resolved value, defaults included, so a checkpoint (and the loggers' config)
        # records the learning rates and loss weights a run actually used.
        self.hparams.update({name: asdict(cfg) for name, cfg in configs.items()})
        self.hparams.update(renderer=legacy["renderer"], background=list(background))
        nerf_cfg = None if nerf is None and representation != "nerf" else _typed(NeRFConfig, nerf)
        self.hparams.update(nerf=None if nerf_cfg is None else asdict(nerf_cfg))
        self.model = DS4DModel(
            self.init_cfg,
            self.field_cfg,
            self.ablation,
            self.cond_cfg,
            renderer=legacy["renderer"],
            background=tuple(background),
            deformable=self.schedule.fine_steps > 0,
            representation=representation,
            nerf=nerf_cfg,
        )
        check_pseudo_weighting(
            self.loss_cfg, self.model.conditioner is not None, self.ablation.tssf, representation
        )
        #: ``(V,)`` pseudo-view trusts of the last conditioned timestep (for logging).
        self._last_trust: Tensor | None = None
        #: The pseudo views' learned framing (``model.framing.learn``), sized in setup().
        self.framing = FramingCorrection(self.framing_cfg) if self.framing_cfg.learn else None
        if self.framing is not None and self.framing_cfg.depth:
            # Before any checkpoint is loaded: its state holds the learned depth and pivot.
            self.model.enable_depth(self.framing_cfg.max_scale)
        # "auto" resolves at setup, once the initial Gaussians' source is known.
        self.framing_gauge: str = self.framing_cfg.gauge
        self.metrics = nn.ModuleDict(
            {f"{stage}_{split}": StageMetrics() for stage in ("val", "test") for split in SPLITS}
        )
        # The frozen Zero123 is loaded in setup() when loss.sds > 0; outside the module tree
        # (never checkpointed, never handed to the optimiser or DDP).
        self._sds: list[Zero123SDS] = []
        self._last_sds: SDSOutput | None = None
        self.strategy: DensifyStrategy | None = None
        self.sampler: FrameSampler | None = None
        self.scene = None
        self._step_started = 0.0
        self._densify_totals = {"cloned": 0, "split": 0, "pruned": 0}
        #: Under DDP, average the Gaussian gradients over ranks every step and reduce the
        #: densification statistics at event steps (see :mod:`ds4d_pl.distributed`). Only the
        #: negative control of ``tests/test_ddp.py`` turns it off, to show that the ranks then
        #: drift apart.
        self.sync_gaussians = True

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, *args: Any, **kwargs: Any) -> DS4DSystem:
        """Lightning's loader, with the checkpoint's hyper-parameters brought to today's names
        first (:func:`upgrade_hparams`); explicit keyword arguments still win."""
        checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
        saved = checkpoint.get("hyper_parameters", {})
        upgraded = upgrade_hparams({k: saved[k] for k in UPGRADED_HPARAMS if k in saved})
        return super().load_from_checkpoint(checkpoint_path, *args, **{**upgraded, **kwargs})

    @property
    def sds_enabled(self) -> bool:
        return bool(self._sds)

    # ------------------------------------------------------------------ set-up
    def setup(self, stage: str) -> None:
        dm = self.trainer.datamodule if self.trainer is not None else None
        if dm is None or getattr(dm, "scene", None) is None:
            raise RuntimeError("DS4DSystem needs a DataModule whose setup() produced a scene")
        self.scene = dm.scene
        self._check_background()
        if self.loss_cfg.pseudo_weighting == "tssf" and self.scene.train.per_frame_cameras:
            raise ValueError(
                "model.loss.pseudo_weighting='tssf' needs fixed cameras (the fused view v is "
                f"training view v); scene {self.scene.name!r} has a camera per frame"
            )
        if not self.model.is_initialised:
            self.model.initialise(self.scene, torch.Generator().manual_seed(self.seed))
            self.model.place_depth_pivot(self.scene)
        if self.framing is not None:
            self._setup_framing()
        self.sampler = FrameSampler(
            self.scene.train, self.scene.num_input_views, self.model.background.cpu()
        )
        self.strategy = DensifyStrategy(self.densify_cfg, float(self.model.extent))
        if self.model.needs_features:
            # Under DDP every rank encodes the same frames; the cache file is written atomically.
            show = self.trainer.is_global_zero and shows_progress(self.trainer)
            self.model.prepare_conditioning(
                self.scene.train, feature_cache_dir(self.cond_cfg), show
            )
        if stage in ("fit", "test"):
            # A weights path given for a benchmark network must exist: fail now, not after
            # hours of training; and say in one line what this scene cannot be scored on.
            self.benchmark_cfg.check_weights()
            missing = unavailable_metrics(self.scene, self.benchmark_cfg)
            rank_zero_info(
                "ds4d: unavailable metrics: " + "; ".join(missing)
                if missing
                else "ds4d: every metric is available"
            )
        if stage == "fit" and self.loss_cfg.sds > 0 and not self._sds:
            # Fails here, before any step, when the weights are missing (MissingWeightsError).
            guidance = Zero123Guidance.from_pretrained(self.sds_cfg, device=self.device)
            self._sds = [Zero123SDS(guidance, self.scene.train)]
        # Read by DistributedDataParallel when the strategy wraps the module, which happens after
        # this hook (and after a checkpoint restore); without DDP nothing reads it.
        self._ddp_params_and_buffers_to_ignore = self.ddp_ignored_names()
        if stage == "fit" and distributed.require_unused_parameter_detection(self.trainer.strategy):
            # The strategy wraps the model only after setup, so the flag still takes effect.
            rank_zero_info(
                "DS4DSystem: DDP set to find_unused_parameters=True (the deformation field is "
                "unused in coarse steps)"
            )

    def _setup_framing(self) -> None:
        train = self.scene.train
        if train.num_views == self.scene.num_input_views:
            # A preset for generated views may meet a clip without any: nothing to learn.
            rank_zero_info(
                f"ds4d: model.framing.learn is on but scene {self.scene.name!r} has no pseudo "
                "views (every training view is a real observation); nothing to learn"
            )
            self.framing = None
            return
        if not self.framing.is_built:
            self.framing.build(train.num_views, train.num_frames)
        elif self.framing.params.shape[0] != train.num_views:
            raise ValueError(
                f"the checkpoint's pseudo-view framing has {self.framing.params.shape[0]} views, "
                f"scene {self.scene.name!r} has {train.num_views}"
            )
        self.framing_gauge = self.framing_cfg.gauge
        if self.framing_gauge == "auto":
            # A learned depth is placed by the views (FramingConfig refuses it with "init").
            independent = self.model.placed_independently and not self.framing_cfg.depth
            self.framing_gauge = "init" if independent else "views"
        if self.framing_gauge == "views":
            self.framing.set_gauge(
                framing_gauge(
                    train.cameras_at(train.num_frames // 2),
                    self.scene.num_input_views,
                    self.model.object_centre(),
                    float(self.model.extent),
                )
            )
        self.framing.to(self.device)

    def _check_background(self) -> None:
        intended = self.scene.intended_background()
        if intended is not None and not torch.allclose(intended, self.model.background.cpu()):
            # Composited targets and renders then disagree with the dataset's own protocol
            # (e.g. D-NeRF scenes scored on white), which shifts PSNR without any error.
            rank_zero_warn(
                f"model.background={self.model.background.tolist()} differs from the background "
                f"{intended.tolist()} that dataset scene {self.scene.name!r} is meant to be "
                "composited on"
            )

    def configure_callbacks(self) -> list[pl.Callback]:
        """What every run writes besides checkpoints: ``run_info.json`` and energy maps, and the
        prediction PNGs of ``ds4d predict``. Skipped when the trainer has them already (a test
        after fit asks again)."""
        present = {type(cb) for cb in self.trainer.callbacks} if self._trainer else set()
        return [cb for cb in (RunInfo(), EvalViewWriter()) if type(cb) not in present]

    def ddp_ignored_names(self) -> list[str]:
        """What DistributedDataParallel must leave alone: the Gaussian tables (densification
        replaces them by Parameters of another size, which DDP's reducer cannot follow; they are
        kept identical across ranks by :mod:`ds4d_pl.distributed`) and the conditioner's feature
        maps (derived identically on every rank at set-up)."""
        names = [n for n, _ in self.named_parameters() if n.startswith("model.gaussians.")]
        names += [n for n, _ in self.named_buffers() if n.startswith("model.conditioner.")]
        return names

    def configure_optimizers(self) -> torch.optim.Optimizer:
        groups = self.model.parameter_groups()
        if self.framing is not None:
            groups["framing"] = [self.framing.params]
            if self.model.placement is not None:
                # The depth is a framing of the whole object: the same schedule.
                groups["framing"].append(self.model.placement.raw)
        return build_optimizer(
            groups,
            self.optim_table,
            float(self.model.extent),
            self.optim_cfg.eps,
        )

    # --------------------------------------------------------------- the model
    def is_coarse(self, step: int) -> bool:
        return step < self.schedule.coarse_steps

    def render(
        self, cameras: Cameras, t: float | Tensor, deform: bool | None = None
    ) -> RenderOutput:
        """Render the model at time ``t`` from ``cameras``."""
        return self.model.render(cameras, t, deform)

    # --------------------------------------------------------------- training
    def training_step(self, step_index: int, batch_idx: int) -> Tensor:
        # The "batch" of the endless step stream (data/datamodule.py) is just the step index;
        # the sampler draws the actual frames from (seed, global step, rank).
        step = self.global_step
        # Lightning counts global steps through its optimizer wrapper's step(); the schedule and
        # densification work on the torch optimizer inside it.
        wrapper = self.optimizers()
        optimizer = wrapper.optimizer
        rates = set_learning_rates(
            optimizer,
            self.optim_table,
            step,
            self.schedule.coarse_steps,
            self.schedule.total_steps,
            float(self.model.extent),
        )
        deform = self.model.deformable and not self.is_coarse(step)
        self.model.begin_step(step, deform)
        if self.model.conditioner is not None and self.cond_cfg.feature_dropout > 0:
            self.model.conditioner.draw_feature_dropout(
                step_generator(self.seed + _DROPOUT_SEED, step)
            )
        sched = self.schedule
        samples = self.sampler.sample(
            step_generator(self.seed, step, self.global_rank),
            sched.frames_per_step,
            sched.pseudo_views_per_step,
            frames=[self.sampler.middle_frame]
            if self.is_coarse(step) and sched.coarse_frames == "middle"
            else None,
            input_views_per_step=sched.input_views_per_step,
        )
        terms, renders, first = self._photometric(samples, deform)
        if self._sds and step >= self.sds_cfg.start_step:
            terms["sds"] = self._sds_term(samples[0], first, step, renders)
        if deform:
            for name, value in self.model.field.regularizers().items():
                if getattr(self.loss_cfg, name) > 0:
                    terms[name] = value
        if self.loss_cfg.scale_ratio > 0 and not self.model.is_nerf:
            terms["scale_ratio"] = scale_ratio_term(
                self.model.gaussians.log_scales, self.loss_cfg.max_scale_ratio
            )
        total, weights = weigh(terms, self.loss_cfg, step)
        self._stop_if_not_finite(total, terms, step)

        optimizer.zero_grad(set_to_none=True)
        # Under DDP the fixed-size field's gradients are averaged over ranks by DDP's reducer
        # during this backward; the Gaussians are outside the reducer (ddp_ignored_names).
        self.manual_backward(total)
        self._densify(step, wrapper, renders)
        self.log("loss", total.detach(), prog_bar=True, logger=False, batch_size=1)
        # Lightning logs every step's values but writes only every log_every_n_steps; building
        # the ~20 logged scalars only then saves ~20 ms per step on CPU.
        if (step + 1) % max(self.trainer.log_every_n_steps, 1) == 0:
            self._log_step(terms, weights, total, rates, deform)
        return total.detach()

    @property
    def pseudo_view_loss(self) -> PseudoViewLoss:
        """The pseudo-view loss (LPIPS loaded when asked for and found), built on first use and
        kept outside the module tree (never checkpointed, never handed to the optimiser)."""
        if getattr(self, "_pseudo_view_loss", None) is None:
            self._pseudo_view_loss = PseudoViewLoss.build(self.loss_cfg)
        return self._pseudo_view_loss

    def _photometric(
        self, samples: list[FrameBatch], deform: bool
    ) -> tuple[dict[str, Tensor], list[tuple[RenderOutput, int, int]], GaussianParams]:
        """Render every sampled timestep and average the photometric terms over them.

        Returns:
            The terms, every render with its image size (densification statistics are
            normalised by it) and the Gaussians of the first timestep (SDS renders them).
        """
        terms: dict[str, Tensor] = {}
        renders: list[tuple[RenderOutput, int, int]] = []
        first: GaussianParams | None = None
        lpips = self.pseudo_view_loss.to(self.device).lpips
        for fb in samples:
            fb = fb.to(self.device)
            params = self.model.at(fb.times[0], deform)
            first = params if first is None else first
            out = self.model.renderer(params, fb.cameras, self.model.background)
            renders.append((out, fb.cameras.width, fb.cameras.height))
            if self.framing is not None:
                out = self.framing(
                    out, fb.view_ids, fb.frame_ids, fb.is_input, self.model.background
                )
            frame_terms = photometric_terms(
                out.rgb,
                out.alpha,
                fb.rgb,
                fb.alpha,
                fb.is_input,
                self.loss_cfg,
                lpips,
                self._pseudo_weights(fb, deform),
            )
            for name, value in frame_terms.items():
                terms[name] = terms.get(name, 0.0) + value / len(samples)
        return terms, renders, first

    def _pseudo_weights(self, fb: FrameBatch, deform: bool) -> Tensor | None:
        """Per-image weights of ``fb`` from TSSF's trust in each pseudo view at its time
        (``loss.pseudo_weighting: tssf``), read from the conditioning that :meth:`DS4DModel.at`
        just ran for it; ``None`` (all alike) otherwise, and in the unconditioned coarse stage."""
        if self.loss_cfg.pseudo_weighting != "tssf" or not deform or bool(fb.is_input.all()):
            return None
        model = self.model
        if model.last_fusion_weights is None or model.last_fusion_visible is None:
            raise RuntimeError("loss.pseudo_weighting='tssf' but the step was not conditioned")
        trust = pseudo_view_trust(
            model.last_fusion_weights,
            model.last_fusion_visible,
            self.scene.num_input_views,
            self.loss_cfg.pseudo_trust_power,
        )
        self._last_trust = trust
        # Fixed cameras: the fusion's view v is training view v, the FrameBatch's view id.
        return trust[fb.view_ids.to(trust.device)]

    def _stop_if_not_finite(self, total: Tensor, terms: dict[str, Tensor], step: int) -> None:
        # Decided by all ranks together under DDP: one rank raising while the others enter the
        # gradient all-reduce would leave them waiting until the collective times out.
        if distributed.any_rank(not bool(torch.isfinite(total))):
            bad = {k: float(v.detach()) for k, v in terms.items()}
            raise DivergenceError(
                f"non-finite loss at step {step} (terms: {bad}"
                + (f", rank {self.global_rank}" if distributed.is_distributed() else "")
                + "); stopping before the parameters or any checkpoint are touched. "
                + self._last_good()
            )

    def _stop_if_diverged(self, step: int, saving: bool = False) -> None:
        """Stop when the parameters ran away (non-finite, or Gaussians far beyond the scene):
        checked after every optimiser step and (with the buffers) before every checkpoint, so
        no diverged state is ever saved, exported or scored."""
        problem = find_divergence(self.model, buffers=saving)
        if distributed.any_rank(problem is not None):
            raise DivergenceError(
                f"training diverged at step {step}: {problem or 'on another rank'}; stopping "
                f"without saving this state. {self._last_good()} Lower the learning rates "
                "(model.optim.*)."
            )

    def _last_good(self) -> str:
        callback = self.trainer.checkpoint_callback if self._trainer else None
        # A resumed run has saved nothing yet: its good state is the checkpoint it started from.
        path = getattr(callback, "last_model_path", "") or (
            self.trainer.ckpt_path if self._trainer else None
        )
        return f"The last good checkpoint {path} is intact." if path else "Nothing was saved."

    def _densify(
        self,
        step: int,
        wrapper: LightningOptimizer,
        renders: list[tuple[RenderOutput, int, int]],
    ) -> None:
        """Optimiser step and densification, with the Gaussians kept identical across ranks."""
        if self.model.is_nerf:
            # Nothing to densify or to sync by hand: the NeRF's fixed-size field is averaged
            # over ranks by DDP's reducer like the deformation field.
            wrapper.step()
            return
        gaussians = self.model.gaussians
        sync = self.sync_gaussians and distributed.is_distributed()
        if sync:
            # Mean over ranks, as DDP does for the field: every rank takes the same Adam step.
            distributed.all_reduce_mean_grads_(gaussians.parameters())
        for out, width, height in renders:
            # View-space gradients of this rank's own renders: per-render magnitudes as in a
            # single-process run, so densify.grad_threshold keeps its meaning under DDP.
            self.strategy.accumulate(out, width, height)
        wrapper.step()
        if sync and self.strategy.is_event(step):
            # Sum (gradient norms, visible counts) and max (screen radii) over ranks, only at an
            # event: every rank then clones, splits and prunes exactly the same Gaussians.
            self.strategy.reduce_statistics(distributed.all_reduce_sum, distributed.all_reduce_max)
        # Split samples come from a generator of (seed, step) alone, so a resumed run makes the
        # same densification decisions as an uninterrupted one, and every DDP rank draws the
        # same split offsets.
        events = self.strategy.step(
            step, gaussians, wrapper.optimizer, step_generator(self.seed, step)
        )
        for key in ("cloned", "split", "pruned"):
            self._densify_totals[key] += int(events.get(key, 0)) if events else 0

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
            return self.model.renderer(params, cameras.to(self.device), self.model.background)

        sds_step = step - self.sds_cfg.start_step
        result, out = prior(
            render, self.model.background, int(fb.frame_ids[0]), sds_step, generator
        )
        renders.append((out, prior.cfg.resolution, prior.cfg.resolution))
        self._last_sds = result
        return result.loss

    def _log_step(
        self,
        terms: dict[str, Tensor],
        weights: dict[str, float],
        total: Tensor,
        rates: dict[str, float],
        deform: bool,
    ) -> None:
        log = {f"train/loss/{k}": v.detach() for k, v in terms.items()}
        log.update({f"train/weight/{k}": w for k, w in weights.items()})
        log["train/loss"] = total.detach()
        log["train/num_gaussians"] = float(self.model.gaussians.num_gaussians)
        log["train/stage_fine"] = float(deform)
        log.update({f"train/lr/{name}": lr for name, lr in rates.items()})
        # Cumulative counts: events happen every densify.interval steps, and a running total
        # survives the logger's sampling where a one-step value would be missed or repeated.
        log.update({f"train/densify/{k}_total": float(v) for k, v in self._densify_totals.items()})
        if deform and self.model.last_fusion_weights is not None:
            log.update(fusion_statistics(self.model.last_fusion_weights))
        if deform and self._last_trust is not None:
            n_in = self.scene.num_input_views
            trusts = self._last_trust.tolist()[n_in:]
            log.update({f"train/pseudo_trust/view_{n_in + k}": w for k, w in enumerate(trusts)})
        conditioner = self.model.conditioner
        if conditioner is not None and self.cond_cfg.feature_dropout > 0:
            log["train/cond/features_dropped"] = float(conditioner.features_dropped)
        if self.framing is not None:
            n_in = self.scene.num_input_views
            for key, values in self.framing.summary(n_in).items():
                log.update({f"train/framing/{key}_{n_in + k}": x for k, x in enumerate(values)})
            if self.model.placement is not None:
                log["train/framing/depth_scale"] = float(self.model.placement.scale)
        if "sds" in terms and self._last_sds is not None:
            log["train/sds/timestep"] = float(self._last_sds.timesteps.float().mean())
            log["train/sds/grad_norm"] = float(self._last_sds.grad_norm)
        self.log_dict(log, batch_size=1)

    def on_train_start(self) -> None:
        # Initialisation is seeded and identical on every rank already; copying rank 0's tables
        # also covers inputs that are not bit-reproducible across devices, and fails with a
        # clear message if the ranks disagree on the Gaussian count (e.g. different checkpoints).
        gaussians = self.model.gaussians
        if self.model.is_nerf:
            return  # no Gaussian tables; DDP broadcasts the field's parameters itself
        distributed.broadcast_([getattr(gaussians, n) for n in gaussians.TABLES])

    def on_train_batch_start(self, batch: int, batch_idx: int) -> None:
        self._step_started = time.perf_counter()

    def on_train_batch_end(self, outputs, batch: int, batch_idx: int) -> None:
        self.log("train/step_ms", 1e3 * (time.perf_counter() - self._step_started), batch_size=1)
        self._stop_if_diverged(self.global_step)

    # ------------------------------------------------------------- evaluation
    def _evaluate(self, batch: dict, stage: str) -> None:
        split = batch["split"]
        views = self.trainer.datamodule.split_views(split)
        with torch.no_grad():
            out = self.draw(views.cameras_at(int(batch["frame"])), batch["time"])
        target = composite(batch["rgb"], batch["alpha"], self.model.background)
        self.metrics[f"{stage}_{split}"].update(
            out.rgb.clamp(0.0, 1.0), target, batch["dyn_mask"], batch["alpha"] > 0.5
        )

    def _finish(self, stage: str) -> dict[str, float]:
        """Log and return the stage's values: ``psnr`` etc. for the evaluation views (the keys
        runs have always logged) and ``<split>/psnr`` etc. for the other splits."""
        values = {}
        for split in self.trainer.datamodule.splits(stage):
            for key, value in self.metrics[f"{stage}_{split}"].compute_and_reset().items():
                values[key if split == "eval" else f"{split}/{key}"] = value
        # The metrics are already gathered over ranks by torchmetrics, so every rank holds the
        # same values; averaging them again only silences Lightning's DDP warning.
        self.log_dict({f"{stage}/{k}": v for k, v in values.items()}, batch_size=1, sync_dist=True)
        return values

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluate(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._finish("val")

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluate(batch, "test")

    def on_test_epoch_end(self) -> None:
        values = self._finish("test")
        if not self.trainer.is_global_zero:
            return
        scene = self.scene
        if scene.eval is not None:
            scale = self._render_scale(scene)
            results = score_model(
                self.draw,
                scene.eval,
                self.benchmark_cfg,
                self.model.background,
                scene.name,
                device=self.device,
                show_progress=shows_progress(self.trainer),
            )
            results["num_frames"] = scene.eval.num_frames
            results["num_views"] = scene.eval.num_views
            if scale is not None:
                results["render_scale"] = scale
        else:
            results = unavailable_protocol(NO_EVAL_VIEWS.format(name=scene.name))
        results.update({k: v for k, v in values.items() if "/" in k})
        bg, dm = self.model.background, self.trainer.datamodule
        for split in ("holdout", "input"):
            if split in dm.splits("test"):
                views = dm.split_views(split)
                cfg = self.benchmark_cfg
                results.update(real_view_lpips(self.draw, views, cfg, bg, split, self.device))
        results.update(flicker_scores(self.draw, scene, bg))
        results.update(novel_view_clip(self.draw, scene, self.benchmark_cfg, bg, self.device))
        results["num_gaussians"] = self.model.gaussians.num_gaussians
        results["init_source"] = self.model.init_record
        write_report(self.trainer.default_root_dir, results, title=scene.name)

    def _render_scale(self, scene: Scene4D) -> dict[str, object] | None:
        """How the protocol draws the Gaussians against the pixel scale they were fitted at
        (``metrics.json``'s ``render_scale``; ``None`` for a NeRF, whose volume rendering
        samples the field per pixel at any resolution). Drawn natively at another scale, the
        scores measure the drawing as much as the model: say so."""
        if self.model.is_nerf:
            return None
        h, w = scene.eval.image_size
        if self.benchmark_cfg.resolution:
            h = w = self.benchmark_cfg.resolution
        ratio = focal_px(scene.eval.cameras_at(0).resized(w, h)) / fitted_focal(scene)
        mode = self.benchmark_cfg.render_scale
        plan = ScalePlan.for_ratio(ratio) if mode == "fitted" else ScalePlan(ratio)
        record = {"mode": mode, **plan.record()}
        if mode == "native":
            if 1 / SCALE_TOLERANCE <= ratio <= SCALE_TOLERANCE:
                return record
            th, tw = scene.train.image_size
            rank_zero_warn(
                f"ds4d test: scene {scene.name!r} is evaluated at {w}x{h}, {ratio:.2g}x the "
                f"pixel scale its training views ({tw}x{th}) fitted the Gaussians at, and "
                "model.benchmark.render_scale is 'native': drawn "
                + ("larger they show gaps" if ratio > 1 else "smaller they alias")
                + f" ({RENDER_SCALE_COST}), so the scores measure that too. Leave render_scale "
                "at 'fitted' or evaluate at the training resolution"
            )
        elif not plan.identity:
            rank_zero_info(
                f"ds4d test: {scene.name!r} is evaluated at {w}x{h}, {ratio:.2g}x the pixel "
                f"scale the Gaussians were fitted at; drawn at the fitted scale "
                f"({plan.describe()})"
            )
        return record

    def draw(self, cameras: Cameras, t: float | Tensor) -> RenderOutput:
        """Render for evaluation: as :meth:`render`, at the pixel scale the Gaussians were
        fitted at whatever the cameras' resolution (``benchmark.render_scale``; see
        :mod:`ds4d_pl.render.scale`)."""
        native = self.benchmark_cfg.render_scale == "native"
        return self.model.drawn_at(None if native else fitted_focal(self.scene))(cameras, t)

    def predict_step(self, batch: dict, batch_idx: int) -> tuple[int, Tensor]:
        """Every evaluation view at one frame as straight RGBA (written by
        :class:`~ds4d_pl.callbacks.predictions.EvalViewWriter`)."""
        with torch.no_grad():
            out = self.draw(self.scene.eval.cameras_at(int(batch["frame"])), batch["time"])
        return int(batch["frame"]), straight_rgba(out, self.model.background).cpu()

    # ------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # Runs before the file is written: a diverged state never replaces a good checkpoint.
        self._stop_if_diverged(int(checkpoint.get("global_step", self.global_step)), saving=True)
        checkpoint["densify_state"] = self.strategy.state_dict() if self.strategy else None
        checkpoint["ds4d"] = {
            "num_gaussians": self.model.gaussians.num_gaussians,
            "densify_totals": dict(self._densify_totals),
            "visibility_depth": self.model.visibility,
            "renderer": self.model.renderer.name,
            "init_source": self.model.init_record,
            "scene": self.scene.name if self.scene else None,
            # Resuming onto other data is refused by comparing this (ds4d_pl/resume.py).
            "data_fingerprint": data_fingerprint(self.scene) if self.scene else None,
            # Derived from positions at the last refresh: a resumed run must reuse them, not
            # recompute them from later positions (as for the occlusion depth renders).
            "point_reference": self.model.point_reference_state(),
            "configs": {
                "init": asdict(self.init_cfg),
                "ablation": asdict(self.ablation),
                "schedule": asdict(self.schedule),
            },
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # Runs before the state dict is copied in: rename the keys of checkpoints written before
        # the asset moved into DS4DModel, then take the extent from the checkpoint itself.
        upgrade_state_dict(checkpoint["state_dict"])
        extent = float(checkpoint["state_dict"]["model.extent"])
        self.strategy = DensifyStrategy(self.densify_cfg, extent)
        if checkpoint.get("densify_state") is not None:
            self.strategy.load_state_dict(checkpoint["densify_state"])
        self._densify_totals.update(checkpoint.get("ds4d", {}).get("densify_totals", {}))
        self.model.visibility = checkpoint.get("ds4d", {}).get("visibility_depth")
        self.model.init_record = checkpoint.get("ds4d", {}).get("init_source")
        self.model.restore_point_reference(checkpoint.get("ds4d", {}).get("point_reference"))
