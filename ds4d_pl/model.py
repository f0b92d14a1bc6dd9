"""The 4D asset as a plain ``nn.Module``: canonical Gaussians moved over time by a deformation
field (or, with ``representation="nerf"``, a dynamic NeRF), optionally conditioned on frozen
frame features (DS4D's DSFD + TSSF).

:class:`DS4DModel` owns everything the asset needs to produce "the Gaussians at time t": the
canonical tables, the field, the conditioner, the frozen frame encoder (kept out of the module
tree, so it is neither checkpointed nor handed to the optimiser), and the conditioner's state:
the training cameras it projects into, the depth renders of its occlusion test and the last
deformed positions. The Lightning system (``system.py``) only wires it to data, losses, the
optimiser and densification; a script, the viewer or a notebook can use the model without
Lightning::

    model = DS4DModel(init, field, ablation, conditioning)
    model.initialise(scene, torch.Generator().manual_seed(0))
    model.prepare_conditioning(scene.train)
    out = model.render(cameras, t=0.5)          # RenderOutput
    params = model.at(0.5)                      # GaussianParams at t = 0.5

With ``representation="nerf"`` the asset is a :class:`~ds4d_pl.fields.nerf.NeRFField` rendered by
the :class:`~ds4d_pl.render.volume.VolumeRenderer`: :meth:`DS4DModel.at` then returns the field at
time t (a :class:`~ds4d_pl.fields.nerf.NeRFAtTime`, conditioned at its ray samples) and
:meth:`DS4DModel.render` the same :class:`RenderOutput`, so losses, SDS, videos and the test
protocol read both representations alike.

Spec: ``tests/test_model.py``, ``tests/test_nerf_fit.py``.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from ds4d_pl.cameras import Cameras
from ds4d_pl.conditioning.build import build_conditioner, init_source
from ds4d_pl.conditioning.encoders import encode_views
from ds4d_pl.config import (
    REPRESENTATIONS,
    AblationConfig,
    ConditioningConfig,
    FieldConfig,
    GaussianInit,
    Representation,
)
from ds4d_pl.data.sampler import step_generator
from ds4d_pl.data.types import Scene4D, ViewSet
from ds4d_pl.fields import build_field
from ds4d_pl.fields.nerf import NeRFAtTime, NeRFConfig, NeRFField
from ds4d_pl.gaussians.canonical import CanonicalGaussians
from ds4d_pl.gaussians.hull import hull_points_from_views
from ds4d_pl.gaussians.placement import DepthPlacement
from ds4d_pl.render import build_renderer
from ds4d_pl.render.base import GaussianParams, RenderOutput
from ds4d_pl.render.scale import Render, at_fitted_scale
from ds4d_pl.render.volume import VolumeRenderer

#: The time at which a NeRF is evaluated when it is not deforming (coarse stage, a run without a
#: fine stage, the occlusion test's depth renders): the middle of the clip, where the coarse
#: stage's middle frame lies. A NeRF has no time-free canonical state to fall back on.
NERF_STATIC_TIME = 0.5

# Seed of the NeRF renderer's jitter stream; with the global step it fixes every training
# render's samples (resumed == uninterrupted), apart from the frame sampler's own stream.
_JITTER_SEED = 4_242


class DS4DModel(nn.Module):
    """Canonical Gaussians + deformation field, or a dynamic NeRF (+ frame-feature conditioning).

    Args:
        init: Sizes of the canonical Gaussians at the start. For a NeRF only the initial points
            (``ablation.init``, ``init.path``, ``init.radius``) are used, to fit the field's box;
            the Gaussian sizes (``num`` of a random init aside, ``sh_degree``,
            ``init_opacity``) do not apply.
        field: Deformation-field encoding and MLP (Gaussians only; a NeRF's encoding is
            ``nerf.grid``).
        ablation: Which parts of DS4D are on (read only through ``conditioning/build.py``).
        conditioning: Settings of the frame-feature conditioning.
        renderer: ``auto``, ``torch`` or ``gsplat`` (see :func:`ds4d_pl.render.build_renderer`);
            a NeRF is always volume-rendered and ignores it.
        background: RGB background colour in ``[0, 1]`` the model renders over.
        deformable: Whether the field is used at all; a run without a fine stage stays static,
            and :meth:`at` then returns the canonical Gaussians (a NeRF: the field at
            :data:`NERF_STATIC_TIME`).
        representation: ``gaussians`` or ``nerf``.
        nerf: The NeRF's field and sampling settings (``None``: the defaults); only with
            ``representation="nerf"``.

    Raises:
        ValueError: An unknown representation, ``nerf`` settings for Gaussians, or a setting
            that means nothing for a NeRF (``conditioning.deformed_positions``,
            ``conditioning.reference_space: point``).

    Attributes:
        gaussians: The canonical Gaussians; empty for a NeRF (its Gaussian count reads 0).
        field: The deformation field, or the :class:`~ds4d_pl.fields.nerf.NeRFField`.
        renderer: The Gaussian rasteriser, or the
            :class:`~ds4d_pl.render.volume.VolumeRenderer` (a submodule, so ``train()`` /
            ``eval()`` switch its jitter).
    """

    def __init__(
        self,
        init: GaussianInit,
        field: FieldConfig,
        ablation: AblationConfig,
        conditioning: ConditioningConfig,
        renderer: str = "auto",
        background: tuple[float, float, float] = (1.0, 1.0, 1.0),
        deformable: bool = True,
        representation: Representation = "gaussians",
        nerf: NeRFConfig | None = None,
    ) -> None:
        super().__init__()
        if representation not in REPRESENTATIONS:
            raise ValueError(
                f"model.representation must be one of {REPRESENTATIONS}, got {representation!r}"
            )
        if representation == "gaussians" and nerf is not None:
            raise ValueError(
                "model.nerf is set but model.representation is 'gaussians'; set "
                "model.representation: nerf (configs/model/nerf.yaml) or drop model.nerf"
            )
        if representation == "nerf" and conditioning.deformed_positions:
            raise ValueError(
                "conditioning.deformed_positions projects the deformed Gaussians of the previous "
                "forward; a NeRF is conditioned at its ray samples, which are already where the "
                "object is at time t: set conditioning.deformed_positions: false"
            )
        self.representation = representation
        self.init_cfg = init
        self.cond_cfg = conditioning
        self.init_source = init_source(ablation)
        self.deformable = deformable
        self.register_buffer("background", torch.tensor(background, dtype=torch.float32))
        # The scene scale drives learning rates and densification thresholds; a buffer, so a
        # resumed run uses the value of the original initialisation.
        self.register_buffer("extent", torch.tensor(0.0))
        self.gaussians = CanonicalGaussians.empty(init.sh_degree)
        self.conditioner, encoder = build_conditioner(ablation, conditioning)
        if (
            representation == "nerf"
            and self.conditioner is not None
            and self.conditioner.point_reference
        ):
            raise ValueError(
                "conditioning.reference_space='point' keeps one reference feature per Gaussian; "
                "a NeRF is conditioned at ray samples that change every step, so it has no "
                "points to keep them for: set conditioning.reference_space: pixel"
            )
        # The frozen encoder is used once, by prepare_conditioning; outside the module tree.
        self._encoder = [encoder] if encoder is not None else []
        cond_dim = self.conditioner.out_dim if self.conditioner is not None else 0
        if representation == "nerf":
            self.nerf_cfg = nerf if nerf is not None else NeRFConfig()
            self.field = NeRFField(self.nerf_cfg, cond_dim=cond_dim)
            # Raises a clear ImportError when nerfacc (the [cuda] / [dev] extra) is missing.
            self.renderer = VolumeRenderer(self.nerf_cfg)
        else:
            self.field = build_field(field, cond_dim=cond_dim)
            self.renderer = build_renderer(renderer)
        # Conditioner state: the training camera table its maps belong to, the canonical depth
        # renders of its occlusion test, and the last deformed positions (with the Gaussians'
        # table version they belong to) for ``conditioning.deformed_positions``.
        self._cameras: Cameras | None = None
        self.visibility: Tensor | None = None
        self._last_deformed: tuple[int, Tensor] | None = None
        # Point references of a checkpoint, adopted at the first conditioned forward (once the
        # Gaussians are loaded); see restore_point_reference().
        self._pending_reference: Tensor | None = None
        #: ``(V, N)`` TSSF view weights of the last conditioned forward (for logging).
        self.last_fusion_weights: Tensor | None = None
        #: ``(V, N)`` visibility that goes with :attr:`last_fusion_weights`
        #: (``loss.pseudo_weighting: tssf`` needs both).
        self.last_fusion_visible: Tensor | None = None
        #: The object's learned depth about the input camera (``model.framing.depth``);
        #: ``None`` unless :meth:`enable_depth` made it.
        self.placement: DepthPlacement | None = None
        #: Which points the Gaussians started from (``sphere``, ``mesh:<path>``,
        #: ``scene_points``, ``hull``); ``None`` until :meth:`initialise` (and after loading a
        #: checkpoint, which restores it from the checkpoint).
        self.init_record: str | None = None

    # ------------------------------------------------------------------ set-up
    @property
    def encoder(self) -> nn.Module | None:
        """The frozen frame encoder (``None`` without frame features)."""
        return self._encoder[0] if self._encoder else None

    @property
    def is_nerf(self) -> bool:
        """Whether the asset is a dynamic NeRF (else canonical Gaussians)."""
        return self.representation == "nerf"

    @property
    def is_initialised(self) -> bool:
        if self.is_nerf:
            # The extent is set by initialise() and restored from checkpoints.
            return bool(self.extent > 0)
        return self.gaussians.num_gaussians > 0

    @property
    def placed_independently(self) -> bool:
        """Whether the start (points or a mesh) placed the object without the generated views.

        A hull is carved from the pseudo views and inherits their common framing error; a sphere
        places nothing. Decides the framing's gauge under ``model.framing.gauge: auto``.
        """
        return (self.init_record or "").startswith(("scene_points", "mesh"))

    def object_centre(self) -> Tensor:
        """``(3,)`` centre of the object: the field's box for a NeRF, else the Gaussians' mean."""
        if self.is_nerf:
            return self.field.aabb.mean(0)
        return self._placed_points(self.gaussians.means.detach()).mean(0)

    def enable_depth(self, max_log_scale: float) -> DepthPlacement:
        """Give the asset a learned depth about the input camera
        (:mod:`ds4d_pl.gaussians.placement`).

        Called before a checkpoint is loaded (its state holds the learned scale and the pivot);
        :meth:`place_depth_pivot` sets the pivot from a scene.

        Raises:
            ValueError: A NeRF (it has no Gaussians to place).
        """
        if self.is_nerf:
            raise ValueError(
                "model.framing.depth scales the Gaussians about the input camera; a NeRF has "
                "none: set model.framing.depth: false"
            )
        if self.placement is None:
            self.placement = DepthPlacement(max_log_scale).to(self.extent.device)
        return self.placement

    def place_depth_pivot(self, scene: Scene4D) -> None:
        """Pivot the learned depth about the input camera's centre at the clip's middle frame.

        Raises:
            ValueError: A scene with other than one input view (two or more real views see the
                object's depth: there is nothing for the pseudo views to place).
        """
        if self.placement is None:
            return
        if scene.num_input_views != 1:
            raise ValueError(
                f"model.framing.depth places the object along the one input view's rays; scene "
                f"{scene.name!r} has {scene.num_input_views} input views, which see its depth "
                "themselves: set model.framing.depth: false"
            )
        cams = scene.train.cameras_at(scene.train.num_frames // 2)
        self.placement.set_pivot(cams.c2w[0, :3, 3])

    def _placed(self, params: GaussianParams) -> GaussianParams:
        return params if self.placement is None else self.placement(params)

    def _placed_points(self, points: Tensor) -> Tensor:
        return points if self.placement is None else self.placement.points(points)

    def initialise(self, scene: Scene4D, generator: torch.Generator) -> None:
        """Place the canonical Gaussians for ``scene`` and fit the field's box to them.

        ``random`` init (ablation row A) samples a sphere. ``points`` init takes the points
        ``model.init.source`` names (see :class:`~ds4d_pl.config.GaussianInit`); which ones were
        used is :attr:`init_record`. A NeRF keeps no Gaussians: the same initial points fit its
        box (``nerf.bounds_margin``), unless ``nerf.aabb`` fixes it.

        Raises:
            ValueError: A source that cannot be used for this scene or ablation row.
        """
        cfg = self.init_cfg
        source = self._resolve_source(scene)
        if source == "sphere":
            gaussians = CanonicalGaussians.random_in_sphere(
                cfg.num, cfg.radius, cfg.sh_degree, cfg.init_opacity, generator=generator
            )
        elif source == "mesh":
            gaussians = CanonicalGaussians.from_file(
                cfg.path,
                cfg.num,
                cfg.sh_degree,
                init_opacity=cfg.init_opacity,
                normalize_radius=cfg.radius if cfg.normalize else None,
                generator=generator,
            )
        elif source == "scene_points":
            gaussians = CanonicalGaussians.from_points(
                scene.init_points, scene.init_colors, cfg.sh_degree, cfg.init_opacity
            )
        else:
            seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
            hull_cfg = dataclasses.replace(cfg.hull, num_points=cfg.num, seed=seed)
            points, colors = hull_points_from_views(
                scene.train, None, hull_cfg, num_input_views=scene.num_input_views
            )
            gaussians = CanonicalGaussians.from_points(
                points, colors, cfg.sh_degree, cfg.init_opacity
            )
        self._check_anchor(scene)
        self.init_record = f"mesh:{cfg.path}" if source == "mesh" else source
        if self.is_nerf:
            self.extent.fill_(max(float(gaussians.extent()), 1e-3))
            if self.nerf_cfg.aabb is None:
                means = gaussians.means.detach().to(self.extent.device)
                self.field.set_bounds(means, self.nerf_cfg.bounds_margin)
            return
        self.gaussians = gaussians.to(self.extent.device)
        self.extent.fill_(max(float(self.gaussians.extent()), 1e-3))
        self.field.set_bounds(self.gaussians.means.detach())

    def _check_anchor(self, scene: Scene4D) -> None:
        """Refuse ``conditioning.anchor: best`` for a scene with pseudo views.

        DA trusts its anchor: the anchor's feature enters at full weight and every other view
        is weighted by its similarity to it. In an object video only view 0 is an observation;
        the pseudo views are a prior's guesses, inconsistent over time, and letting one of them
        anchor a Gaussian would rank the real video by its likeness to a guess.
        """
        if self.conditioner is None or self.cond_cfg.anchor != "best":
            return
        pseudo = scene.train.num_views - scene.num_input_views
        if pseudo > 0:
            raise ValueError(
                f"conditioning.anchor='best': scene {scene.name!r} has {pseudo} pseudo views "
                "(generated, not observed); the anchor must stay the input video there: set "
                "conditioning.anchor: input (best is for camera rigs, where every view is real)"
            )

    def _resolve_source(self, scene: Scene4D) -> str:
        """``sphere``, ``mesh``, ``scene_points`` or ``hull`` for this scene."""
        source = self.init_cfg.source
        if self.init_source == "random":
            if source not in ("auto", "sphere"):
                raise ValueError(
                    f"model.ablation.init='random' starts from a sphere; model.init.source="
                    f"{source!r} needs model.ablation.init='points'"
                )
            return "sphere"
        if source == "auto":
            if self.init_cfg.path is not None:
                return "mesh"
            if scene.init_points is not None:
                return "scene_points"
            if scene.train.num_views < 2 or scene.train.per_frame_cameras:
                # One view, or one view per instant, carves no hull (a cone, not an object).
                warnings.warn(
                    f"model.init.source='auto': scene {scene.name!r} has no mesh, no points and "
                    "a single view of each instant, so no visual hull can be carved; starting "
                    "from a random sphere (give model.init.path for a better start)",
                    stacklevel=2,
                )
                return "sphere"
            source = "hull"
        if source == "hull" and scene.train.per_frame_cameras:
            raise ValueError(
                f"model.init.source='hull': scene {scene.name!r} is seen by a moving camera "
                "(one view per instant), which cannot carve a visual hull; give "
                "model.init.path (e.g. COLMAP points) or use model.init.source='sphere'"
            )
        return source

    @property
    def needs_features(self) -> bool:
        """Whether :meth:`prepare_conditioning` still has to run."""
        return self.conditioner is not None and not self.conditioner.ready

    def prepare_conditioning(
        self,
        views: ViewSet,
        cache_dir: str | Path | None = None,
        show_progress: bool | None = False,
    ) -> None:
        """Encode every (view, frame) of the training views once and hand the features to the
        conditioner; remember the camera table they were seen from.

        Args:
            views: The training views (view 0 the input video).
            cache_dir: Disk cache of encoder features (``None``: no disk cache).
            show_progress: A progress bar while encoding (``None``: when stderr is a terminal).

        Raises:
            ValueError: ``conditioning.feature_dropout`` with a camera per frame.
        """
        if self.conditioner is None:
            return
        if self.cond_cfg.feature_dropout > 0 and views.per_frame_cameras:
            raise ValueError(
                "conditioning.feature_dropout needs fixed cameras: with a camera per frame, one "
                "frame's features do not belong to the other frames' cameras (set it to 0)"
            )
        device = self.extent.device
        feats = encode_views(
            self.encoder,
            views,
            self.background.cpu(),
            cache_dir=cache_dir,
            show_progress=show_progress,
        )
        self.conditioner.set_features(
            feats.to(device), views.times.to(device), per_frame_cameras=views.per_frame_cameras
        )
        self._cameras = views.cameras

    @property
    def energy(self) -> Tensor | None:
        """DSFD's dynamic-energy maps ``(V, T, h, w)`` (``None`` without DSFD features)."""
        if self.conditioner is None or not self.conditioner.decouples:
            return None
        return self.conditioner.energy

    # ------------------------------------------------------------------ time
    def begin_step(self, step: int, deform: bool) -> None:
        """Per-step upkeep: refresh the occlusion test's depth renders every
        ``conditioning.visibility_every`` steps of the stages that condition (the deforming
        stage; a conditioned NeRF conditions in both), and reseed a NeRF's sample jitter from
        the step."""
        if self.is_nerf:
            self.renderer.generator = step_generator(_JITTER_SEED, step)
        conditions = deform or self.is_nerf
        if (
            conditions
            and self.conditioner is not None
            and step % self.cond_cfg.visibility_every == 0
        ):
            self.refresh_visibility()
        if (
            conditions
            and self.conditioner is not None
            and step % self.cond_cfg.reference_refresh == 0
        ):
            # Recomputed lazily at the next conditioned forward, from the depth renders above.
            self.conditioner.invalidate_reference()
            self._pending_reference = None

    @torch.no_grad()
    def refresh_visibility(self) -> Tensor:
        """Render the canonical Gaussians' depth in every training view, at low resolution.

        Canonical positions do not depend on time, so one render per view serves every frame
        until the next refresh; a view where a Gaussian lies behind the rendered surface gives
        it a zero feature (occlusion test of the point features). A NeRF has no canonical
        state: its depth is rendered at :data:`NERF_STATIC_TIME` without jitter, conditioned
        with the previous depth renders (none at the first refresh).
        """
        res = self.cond_cfg.visibility_resolution
        cams = self._training_cameras().resized(res, res)
        if self.is_nerf:
            volume = self._volume(NERF_STATIC_TIME, self.visibility)
            was_training = self.renderer.training
            self.renderer.eval()
            try:
                out = self.renderer(volume, cams, self.background)
            finally:
                self.renderer.train(was_training)
        else:
            out = self.renderer(self._placed(self.gaussians.activated()), cams, self.background)
        self.visibility = out.depth[..., 0].detach()
        return self.visibility

    def refresh_reference(self, force: bool = False) -> Tensor | None:
        """Recompute the point-space references of the canonical Gaussians when they are stale.

        They are stale after :meth:`prepare_conditioning`, whenever the Gaussian table changes
        (densification, pruning, a loaded state: :attr:`CanonicalGaussians.version` moves, and
        the table object or its size is part of the key too), and every
        ``conditioning.reference_refresh`` steps of a conditioning stage (:meth:`begin_step`), so
        that positions and depth renders that drifted since are taken into account.

        Args:
            force: Recompute even if the references look current.

        Returns:
            The ``(N, C)`` references, or ``None`` without a point-space reference.
        """
        cond = self.conditioner
        if cond is None or not cond.point_reference:
            return None
        gs = self.gaussians
        key = self._reference_key()
        pending, self._pending_reference = self._pending_reference, None
        if pending is not None and not force and pending.shape[0] == gs.num_gaussians:
            return cond.set_reference(pending, key)
        if force or cond.reference_key != key:
            if self.visibility is None:
                self.refresh_visibility()
            points = self._placed_points(gs.means)
            cond.refresh_reference(points, self._training_cameras(), self.visibility, key)
        return cond.reference

    def _reference_key(self) -> tuple[int, int, int]:
        gs = self.gaussians
        return (id(gs), gs.version, gs.num_gaussians)

    def point_reference_state(self) -> Tensor | None:
        """The point references for a checkpoint: ``(N, C)`` when they are current for the
        Gaussians, else ``None`` (a resumed run then recomputes them, as the uninterrupted run
        would at its next conditioned forward). Like the occlusion test's depth renders, they
        are derived state a resumed run must not recompute from later positions."""
        cond = self.conditioner
        if cond is None or not cond.point_reference or cond.reference_key != self._reference_key():
            return None
        return cond.reference.detach().clone()

    def restore_point_reference(self, reference: Tensor | None) -> None:
        """Adopt a checkpoint's :meth:`point_reference_state` at the next conditioned forward
        (when the Gaussians it belongs to are loaded; ignored if their count differs or a
        scheduled refresh comes first)."""
        self._pending_reference = None if reference is None else reference.detach()

    def _training_cameras(self) -> Cameras:
        if self._cameras is None:
            raise RuntimeError("DS4DModel.prepare_conditioning() has not been called")
        return self._cameras.to(self.extent.device)

    def at(self, t: float | Tensor, deform: bool | None = None) -> GaussianParams | NeRFAtTime:
        """The activated Gaussians at normalised time ``t`` in ``[0, 1]`` (a NeRF: the field at
        ``t``, a :class:`~ds4d_pl.fields.nerf.RadianceVolume` for the volume renderer and the
        density exports).

        Args:
            t: Time.
            deform: Apply the field (default: whenever the model is deformable); ``False`` gives
                the canonical Gaussians (coarse stage, ``canonical.ply``), for a NeRF the field
                at :data:`NERF_STATIC_TIME` whatever ``t``.
        """
        if self.is_nerf:
            static = not (self.deformable if deform is None else deform)
            t_field = NERF_STATIC_TIME if static else t
            if self.conditioner is not None and self.visibility is None:
                self.refresh_visibility()
            return self._volume(t_field, self.visibility)
        gs = self.gaussians
        if not (self.deformable if deform is None else deform):
            return self._placed(gs.activated())
        tt = torch.as_tensor(t, dtype=gs.means.dtype, device=gs.means.device)
        tt = tt.reshape(1, 1).expand(gs.num_gaussians, 1)
        cond = self._condition(t) if self.conditioner is not None else None
        params = self._placed(gs.deformed(self.field(gs.means, tt, cond)))
        if self.cond_cfg.deformed_positions:
            self._last_deformed = (gs.version, params.means.detach())
        return params

    def _condition(self, t: float | Tensor) -> Tensor:
        points = self._placed_points(self.gaussians.means)
        if self.cond_cfg.deformed_positions and self._last_deformed is not None:
            version, last = self._last_deformed
            # Where the Gaussians were at the previous forward (stop-grad): a better guess of
            # their image position in each frame than the canonical one. Only while the table
            # is the one those positions belong to: a densification event invalidates it even
            # when it clones as many Gaussians as it prunes. The occlusion test still uses the
            # canonical depth renders.
            if version == self.gaussians.version:
                points = last
        if self.visibility is None:
            self.refresh_visibility()
        if self.conditioner.point_reference:
            self.refresh_reference()
        cond, fused = self.conditioner(points, t, self._training_cameras(), self.visibility)
        self.last_fusion_weights = fused.weights.detach()
        self.last_fusion_visible = self.conditioner.last_visible
        return cond

    def _volume(self, t: float | Tensor, depth_maps: Tensor | None) -> NeRFAtTime:
        """The NeRF at ``t``, conditioned at its query points with ``depth_maps`` as the
        occlusion test (``None``: none)."""
        if self.conditioner is None:
            return self.field.at(t)
        cameras = self._training_cameras()
        conditioner = self.conditioner

        def condition(points: Tensor) -> Tensor:
            # Runs once per batch of ray samples (and per proposal pass): the NeRF's main cost.
            feats, fused = conditioner(points, t, cameras, depth_maps)
            self.last_fusion_weights = fused.weights.detach()
            self.last_fusion_visible = conditioner.last_visible
            return feats

        return self.field.at(t, condition)

    def render(
        self, cameras: Cameras, t: float | Tensor, deform: bool | None = None
    ) -> RenderOutput:
        """Render the model at time ``t`` from ``cameras`` over :attr:`background`."""
        params = self.at(t, deform)
        return self.renderer(params, cameras.to(self.extent.device), self.background)

    def drawn_at(self, fitted_focal: float | None) -> Render:
        """:meth:`render` drawing the Gaussians at the pixel scale they were fitted at,
        ``fitted_focal`` (the training views' focal length in pixels), whatever the cameras'
        resolution (:mod:`ds4d_pl.render.scale`). ``None``, or a NeRF (its volume rendering
        samples the field per pixel at any resolution): :meth:`render` as it is."""
        if fitted_focal is None or self.is_nerf:
            return self.render
        return at_fitted_scale(self.render, self.renderer, fitted_focal)

    # ------------------------------------------------------------------ optimisation
    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters by optimiser-table group (see :mod:`ds4d_pl.optim`)."""
        tables = () if self.is_nerf else self.gaussians.TABLES
        groups = {name: [getattr(self.gaussians, name)] for name in tables}
        groups["field"] = list(self.field.encoding_parameters())
        groups["mlp"] = list(self.field.mlp_parameters())
        if self.conditioner is not None:
            groups["cond"] = list(self.conditioner.parameters())
        return groups
