"""The ablation switchboard: the only place :class:`AblationConfig` is read.

It turns (init, frame_features, dsfd, tssf) into an initialisation source and modules. A
component that is switched off becomes a pass-through of the same ``out_dim``, so every "without
X" row keeps every shape and every other module unchanged (``docs/design.md``, "The method").
Mode-specific conditioning knobs (``da_combine``, ``ga_scorer``) set under another fusion mode
are refused here, at build time.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

from ds4d_pl.cameras import Cameras
from ds4d_pl.conditioning.dsfd import DSFD, PassThroughDSFD, decouple
from ds4d_pl.conditioning.encoders import build_encoder
from ds4d_pl.conditioning.tssf import (
    Fused,
    InputView,
    PointFeatures,
    best_views,
    make_fusion,
    sample_point_features,
)
from ds4d_pl.config import AblationConfig, ConditioningConfig

#: Frame times closer than this to ``t`` count as taken at ``t`` (times are normalised to [0, 1];
#: a clip would need 10^6 frames for neighbours to be this close).
_SAME_TIME = 1e-6

#: Sampled feature values per chunk when the point references are accumulated over a camera
#: per frame (D-NeRF: 60+ cameras x tens of thousands of Gaussians x C channels).
_REFERENCE_CHUNK = 1 << 24


class Conditioner(nn.Module):
    """Per-Gaussian frame-feature conditioning (``docs/design.md`` §5, "Point features" on).

    Cached encoder features of every (view, frame) go through DSFD once; at each query the
    decoupled maps of the two frames around ``t`` are interpolated, sampled at the Gaussians'
    projections in every view (occluded views zeroed), fused across views by TSSF and projected
    to ``out_dim`` channels by a learnable low-rank layer that feeds the deformation field.

    With ``cfg.reference_space == "point"`` (and DSFD on) the stored maps are the normalised raw
    features instead, and the decoupling happens per point after sampling, against each point's
    own reference (:meth:`refresh_reference`, cached; the caller recomputes it when the point
    set changes, see :attr:`reference_key`). With ``cfg.anchor == "best"`` the fusion's input
    view is, per point, the view that sees it best (:func:`~ds4d_pl.conditioning.tssf.best_views`).

    Args:
        encoder_dim: Channels ``C`` of the frame encoder.
        cfg: Conditioning settings.
        dsfd: Decouple static/dynamic (else a pass-through with the same ``2C`` width).
        tssf: ``off`` (input view only), ``mean``, ``ga`` or ``da``.
    """

    def __init__(self, encoder_dim: int, cfg: ConditioningConfig, dsfd: bool, tssf: str) -> None:
        super().__init__()
        self.cfg = cfg
        self.decoupler = (
            DSFD(encoder_dim, cfg.reference, cfg.reference_alpha)
            if dsfd
            else PassThroughDSFD(encoder_dim)
        )
        width = self.decoupler.out_dim
        self.fusion = make_fusion(
            width, tssf, tau=cfg.tau, combine=cfg.da_combine, ga_scorer=cfg.ga_scorer
        )
        self.proj = nn.Linear(self.fusion.out_dim, cfg.width)
        self.out_dim = cfg.width
        # Decoupled maps (V, T, 2C, h, w): derived from frozen features, recomputed at set-up,
        # so they stay out of checkpoints.
        self.register_buffer("maps", torch.zeros(0), persistent=False)
        self.register_buffer("times", torch.zeros(0), persistent=False)
        self.register_buffer("energy", torch.zeros(0), persistent=False)
        self.per_frame_cameras = False
        # Point-space reference (cfg.reference_space == "point"): (N, C) per-point references,
        # derived from the maps and the point set, so never checkpointed either.
        self.point_reference = cfg.reference_space == "point" and dsfd
        self.register_buffer("reference", torch.zeros(0), persistent=False)
        #: What :attr:`reference` was computed for (the caller's key, e.g. the Gaussians'
        #: version); ``None`` after :meth:`invalidate_reference`.
        self.reference_key: object | None = None
        self._reference_fresh = False
        #: ``(K, N)`` ``‖dynamic‖ / ‖f‖`` of the last point-space query (diagnostics).
        self.last_point_energy: Tensor | None = None
        #: ``(K, N)`` visibility of the points in the views fused by the last query (image
        #: bounds and occlusion test), in the order of its fusion weights.
        self.last_visible: Tensor | None = None

    #: Whether the current training step conditions on the time-constant maps
    #: (``feature_dropout``; set by :meth:`draw_feature_dropout`, read only in training mode).
    features_dropped: bool = False

    @property
    def ready(self) -> bool:
        return self.maps.numel() > 0

    def draw_feature_dropout(self, generator: torch.Generator) -> bool:
        """Decide whether this training step drops the real features (``feature_dropout``).

        Args:
            generator: The step's generator; the system seeds it from (seed, step) alone, so a
                resumed run draws what the uninterrupted one did and every DDP rank agrees.

        Returns:
            Whether the step conditions on the time-constant maps. With ``feature_dropout: 0``
            nothing is drawn and the answer is ``False``.
        """
        p = self.cfg.feature_dropout
        self.features_dropped = p > 0 and bool(torch.rand((), generator=generator) < p)
        return self.features_dropped

    @property
    def decouples(self) -> bool:
        """Whether DSFD splits the features into per-pixel maps (its dynamic-energy maps then
        mean something); with a point-space reference the split happens per point instead."""
        return isinstance(self.decoupler, DSFD) and not self.point_reference

    @torch.no_grad()
    def set_features(
        self, features: Tensor, times: Tensor, per_frame_cameras: bool = False
    ) -> None:
        """Decouple and store the encoder features of the training views.

        Args:
            features: ``(V, T, C, h, w)`` frozen encoder features.
            times: ``(T,)`` normalised frame times.
            per_frame_cameras: Every frame has its own camera (camera table of ``V * T``
                entries, view-major) instead of one fixed camera per view.
        """
        if features.ndim != 5 or features.shape[1] != times.shape[0]:
            raise ValueError(
                f"features must be (V, T, C, h, w) with T={times.shape[0]}, got "
                f"{tuple(features.shape)}"
            )
        # Point space: the raw features are stored and decoupled per point at query time.
        maps = features if self.point_reference else self.decoupler(features)
        # Encoder channels differ in scale by orders of magnitude; one RMS per encoder channel,
        # applied to both halves of [f, dynamic], brings them to unit scale without changing the
        # decoupling (done before) or the ratio between f and its dynamic part.
        c = features.shape[2]
        rms = features.pow(2).mean(dim=(0, 1, 3, 4)).sqrt().clamp_min(1e-6)
        scale = rms.repeat(maps.shape[2] // c)
        maps = maps / scale.view(1, 1, -1, 1, 1)
        if self.cfg.placebo == "time_constant":
            if per_frame_cameras:
                raise ValueError(
                    "conditioning.placebo='time_constant' needs fixed cameras: with a camera per "
                    "frame, one frame's features do not belong to the other frames' cameras"
                )
            # After the decoupling and normalisation, so the placebo has the real features'
            # distribution (dynamic half included) and only their change over time is removed.
            maps = maps[:, maps.shape[1] // 2].unsqueeze(1).expand_as(maps).contiguous()
        self.maps = maps
        self.times = times.to(maps)
        self.per_frame_cameras = per_frame_cameras
        self.energy = self.decoupler.dynamic_energy(features)
        self.invalidate_reference()

    def maps_at(self, t: float | Tensor) -> Tensor:
        """Decoupled maps ``(V, 2C, h, w)`` at time ``t``, linear between neighbouring frames."""
        times = self.times
        if len(times) == 1:
            return self.maps[:, 0]
        if self.features_dropped and self.training:
            # Feature dropout: the middle frame's maps, those the time-constant placebo gives.
            return self.maps[:, self.maps.shape[1] // 2]
        t = torch.as_tensor(t, dtype=times.dtype, device=times.device).reshape(1)
        t = t.clamp(times[0], times[-1])
        hi = int(torch.searchsorted(times, t).clamp(1, len(times) - 1))
        lo = hi - 1
        w = ((t - times[lo]) / (times[hi] - times[lo]).clamp_min(1e-12)).clamp(0.0, 1.0)
        return self.maps[:, lo] * (1 - w) + self.maps[:, hi] * w

    def views_at(self, t: float | Tensor) -> tuple[Tensor, Tensor]:
        """The views fused at time ``t``: maps ``(K, 2C, h, w)`` and their camera-table indices.

        Fixed cameras: every view, its maps interpolated in time, camera ``v``. A camera per
        frame: each view's ``temporal_views`` frames nearest to ``t`` (maps are not interpolated
        across frames, which were seen from different cameras), nearest first so that view 0 of
        the fusion, DA's anchor, is the observation closest in time. Frames taken at ``t``
        itself are left out unless ``exclude_own_frame`` is off, so training (at the training
        frames' times) and testing (new cameras, no image at ``t``) see the same kind of views.
        """
        v, n_t = self.maps.shape[:2]
        if not self.per_frame_cameras:
            return self.maps_at(t), torch.arange(v, device=self.maps.device)
        t = torch.as_tensor(t, dtype=self.times.dtype, device=self.times.device)
        distance = (self.times - t).abs()
        available = n_t
        if self.cfg.exclude_own_frame and n_t > 1:
            # The frames taken at t itself go last and are never picked (see the config).
            own = distance < _SAME_TIME
            distance = distance.masked_fill(own, float("inf"))
            available = n_t - int(own.sum())
        k = min(self.cfg.temporal_views, max(available, 1))
        # Stable sort: ties (equal distance) keep the earlier frame first, deterministically.
        order = torch.sort(distance, stable=True).indices[:k]
        frames = order.repeat(v)
        views = torch.arange(v, device=order.device).repeat_interleave(k)
        return self.maps[views, frames], views * n_t + frames

    def invalidate_reference(self) -> None:
        """Mark the point references stale: the next query needs :meth:`refresh_reference`."""
        self.reference_key = None
        self._reference_fresh = False

    @torch.no_grad()
    def refresh_reference(
        self,
        points: Tensor,
        cameras: Cameras,
        depth_maps: Tensor | None = None,
        key: object | None = None,
    ) -> Tensor:
        """Recompute the point-space references: per point, the mean of its sampled features
        over every (camera, frame) pair that sees it.

        Fixed cameras: sampling is linear in the map, so the mean over frames of a view's
        samples is one sample of the view's time-averaged map (``V`` samples, not ``V * T``).
        A camera per frame: every frame is sampled with its own camera, in chunks. A point no
        pair sees gets a zero reference: all of its feature then counts as dynamic, until a
        refresh finds it.

        Args:
            points: ``(N, 3)`` positions, the canonical ones (the references describe the
                points, not a time).
            cameras: The full training camera table (``V``, or ``V * T`` view-major).
            depth_maps: ``(len(cameras), h', w')`` rendered depth for the occlusion test, or
                ``None``.
            key: Stored as :attr:`reference_key`, so the caller can tell when to refresh.

        Returns:
            ``(N, C)`` references (also kept as :attr:`reference`).
        """
        if not self.point_reference:
            raise RuntimeError(
                "refresh_reference needs conditioning.reference_space='point' with DSFD on"
            )
        if not self.ready:
            raise RuntimeError("Conditioner.set_features() has not been called")
        v, n_t, c = self.maps.shape[:3]
        n_cams = v * n_t if self.per_frame_cameras else v
        if len(cameras) != n_cams:
            raise ValueError(
                f"Conditioner holds maps of {(v, n_t)} (views, frames) but got {len(cameras)} "
                "cameras"
            )
        points = points.detach()
        if self.per_frame_cameras:
            maps = self.maps.reshape(v * n_t, *self.maps.shape[2:])
        else:
            maps = self.maps.mean(dim=1)
        total = points.new_zeros(points.shape[0], c, dtype=maps.dtype)
        count = points.new_zeros(points.shape[0], dtype=maps.dtype)
        step = max(1, _REFERENCE_CHUNK // max(1, points.shape[0] * c))
        for start in range(0, n_cams, step):
            idx = torch.arange(start, min(start + step, n_cams), device=maps.device)
            pf = sample_point_features(
                points,
                cameras[idx],
                maps[idx],
                None if depth_maps is None else depth_maps[idx],
                self.cfg.depth_tolerance,
            )
            total += pf.features.sum(dim=0)  # zero where unseen
            count += pf.visible.sum(dim=0).to(count.dtype)
        return self.set_reference(total / count.clamp_min(1.0)[:, None], key)

    def set_reference(self, reference: Tensor, key: object | None = None) -> Tensor:
        """Adopt ``(N, C)`` point references computed earlier (a resumed run takes those of its
        checkpoint, so it continues as the uninterrupted run did) and mark them current."""
        c = self.maps.shape[2] if self.ready else reference.shape[-1]
        if reference.ndim != 2 or reference.shape[1] != c:
            raise ValueError(f"reference must be (N, {c}), got {tuple(reference.shape)}")
        self.reference = reference.to(self.maps.device, self.maps.dtype)
        self.reference_key = key
        self._reference_fresh = True
        return self.reference

    def _decouple_points(self, pf: PointFeatures) -> PointFeatures:
        """``(K, N, C)`` sampled raw features → ``(K, N, 2C)`` ``[f, dynamic]`` against each
        point's reference, exactly DSFD's per-token projection with a token per point."""
        n = pf.features.shape[1]
        if not self._reference_fresh or self.reference.shape[0] != n:
            raise RuntimeError(
                f"the point references are stale or missing (have {self.reference.shape[0]} for "
                f"{n} points): call Conditioner.refresh_reference() after the points change"
            )
        # decouple() projects over axis -3 of (..., C, h, w): one 1 x 1 "token" per point.
        d = decouple(pf.features[..., None, None], self.reference[None, :, :, None, None])
        self.last_point_energy = d.energy[..., 0, 0].detach()
        if self.cfg.point_static_half == "feature":
            return PointFeatures(d.decoupled[..., 0, 0], pf.visible, pf.depth)
        # The reference in place of f: the same for every view and frame, so a camera-driven
        # change can reach the field only through the dynamic half. Zero where unseen, as the
        # sampled features are.
        first = self.reference[None] * pf.visible[..., None].to(self.reference.dtype)
        return PointFeatures(torch.cat([first, d.dynamic[..., 0, 0]], -1), pf.visible, pf.depth)

    def forward(
        self,
        points: Tensor,
        t: float | Tensor,
        cameras: Cameras,
        depth_maps: Tensor | None = None,
    ) -> tuple[Tensor, Fused]:
        """Conditioning features of ``points`` at time ``t``.

        Args:
            points: ``(N, 3)`` positions (detached: features steer the field, not the points).
            t: Normalised time.
            cameras: The training camera table in the order of the stored maps: ``V`` fixed
                cameras, or ``V * T`` (view-major) when every frame has its own camera.
            depth_maps: ``(len(cameras), h', w')`` rendered depth for the occlusion test, or
                ``None``.

        Returns:
            ``(N, out_dim)`` features and the fusion result (per-view weights for logging).

        Raises:
            RuntimeError: Before :meth:`set_features`, or, with a point-space reference, when
                the references do not belong to ``points`` (see :meth:`refresh_reference`).
        """
        if not self.ready:
            raise RuntimeError("Conditioner.set_features() has not been called")
        maps, idx = self.views_at(t)
        v, n_t = self.maps.shape[:2]
        if len(cameras) != (v * n_t if self.per_frame_cameras else v):
            raise ValueError(
                f"Conditioner holds maps of {tuple(self.maps.shape[:2])} (views, frames) but got "
                f"{len(cameras)} cameras"
            )
        cams = cameras[idx]
        pf = sample_point_features(
            points.detach(),
            cams,
            maps,
            None if depth_maps is None else depth_maps[idx],
            self.cfg.depth_tolerance,
        )
        self.last_visible = pf.visible
        if self.point_reference:
            pf = self._decouple_points(pf)
        anchor: InputView = best_views(pf, cams) if self.cfg.anchor == "best" else 0
        fused = self.fusion(pf, input_view=anchor)
        return self.proj(fused.features), fused


def init_source(ablation: AblationConfig) -> Literal["random", "points"]:
    """Where the canonical Gaussians start: a random sphere or points of the middle frame."""
    return ablation.init


def build_conditioner(
    ablation: AblationConfig, cfg: ConditioningConfig
) -> tuple[Conditioner | None, nn.Module | None]:
    """Modules for an ablation row.

    Returns:
        ``(conditioner, encoder)``; both ``None`` when ``frame_features`` is off (rows A, B).
        The encoder is frozen and kept out of the conditioner (and out of checkpoints).
    """
    if not ablation.frame_features:
        return None, None
    # Encoder-specific options; an unknown encoder name is reported by build_encoder.
    options = {
        "efficientnet_lite0": {"stage": cfg.encoder_stage},
        "dinov2": {"variant": cfg.dinov2_variant},
    }.get(cfg.encoder, {})
    encoder = build_encoder(
        cfg.encoder, weights=cfg.encoder_weights, input_size=cfg.encoder_input_size, **options
    )
    return Conditioner(encoder.out_dim, cfg, ablation.dsfd, ablation.tssf), encoder


def feature_cache_dir(cfg: ConditioningConfig) -> Path | None:
    """Disk cache for encoder features (``None`` when disabled with ``cache_dir: ""``)."""
    if cfg.cache_dir == "":
        return None
    if cfg.cache_dir is not None:
        return Path(cfg.cache_dir)
    root = os.environ.get("DS4D_CACHE_DIR") or Path.home() / ".cache" / "ds4d_pl"
    return Path(root) / "features"
