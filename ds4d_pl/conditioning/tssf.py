"""Point features and temporal-spatial similarity fusion (TSSF, docs/design.md §5).

:func:`sample_point_features` gathers a feature for every point (Gaussian centre) from every view
by projecting it and sampling the view's feature map bilinearly, with a visibility flag from the
image bounds and an optional depth test against a rendered depth map. One small module per TSSF
mode fuses the per-view features of each point into one: :class:`MeanFusion`,
:class:`GlobalAwareFusion`, :class:`DistanceAwareFusion`, and :class:`InputViewOnly` for the
"TSSF off" ablation; :func:`make_fusion` picks one.

The fusions that single out an input view (DA's anchor, GA's ``relative`` scorer, the input-view
only ablation) take it either as one index for every point (the object video's view 0) or as one
index per point: :func:`best_views` picks, per point, the camera of a rig that sees it best.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ds4d_pl.cameras import Cameras

TSSF_MODES = ("mean", "ga", "da")
COMBINE_MODES = ("sum", "concat")
GA_SCORERS = ("own", "relative")

#: Points at or closer than this camera depth count as behind the camera.
NEAR = 1e-3
# Normalised coordinate beyond the sampling footprint of any feature map (all taps padded).
_OUTSIDE = 3.0


@dataclass
class PointFeatures:
    """Per-view features of a point set.

    Attributes:
        features: ``(V, N, D)`` features; exactly zero where ``visible`` is False.
        visible: ``(V, N)`` bool, True where the point is in front of the camera, inside the
            image and (when depth maps were given) not occluded.
        depth: ``(V, N)`` camera depth of every point in every view, or ``None`` (features built
            by hand); :func:`sample_point_features` fills it, :func:`best_views` reads it.
    """

    features: Tensor
    visible: Tensor
    depth: Tensor | None = None


@dataclass
class Fused:
    """Output of a fusion module.

    Attributes:
        features: ``(N, D)`` fused feature per point.
        weights: ``(V, N)`` weight each view received (see the module's docstring for the exact
            meaning per mode); always exactly 0 for views where the point is not visible.
    """

    features: Tensor
    weights: Tensor


def pixel_to_grid(uv: Tensor, width: int, height: int) -> Tensor:
    """Map pixel coordinates to ``grid_sample``'s normalised coordinates (``align_corners=False``).

    With ``align_corners=False`` the normalised range ``[-1, 1]`` spans the *edges* of the
    feature map, not the centres of its corner cells. A token grid of ``w`` columns covering an
    image ``width`` pixels wide has token ``j`` centred at pixel ``(j + 0.5) * width / w``; the
    map ``x = 2 u / width - 1`` sends that to ``(2j + 1) / w - 1``, which is exactly where
    ``grid_sample`` puts cell ``j``'s centre. Hence sampling the token grid here equals
    upsampling it to image size (bilinear, ``align_corners=False``) and reading pixel ``uv``.

    Args:
        uv: ``(..., 2)`` pixel coordinates (OpenCV, pixel centres at ``+0.5``).
        width: Image width in pixels.
        height: Image height in pixels.

    Returns:
        ``(..., 2)`` normalised ``(x, y)`` coordinates.
    """
    scale = uv.new_tensor([2.0 / width, 2.0 / height])
    return uv * scale - 1.0


def sample_point_features(
    points: Tensor,
    cameras: Cameras,
    feature_maps: Tensor,
    depth_maps: Tensor | None = None,
    depth_tolerance: float = 0.05,
) -> PointFeatures:
    """Project points into every view and bilinearly sample that view's feature map.

    A point is visible in a view iff its camera depth is ``> NEAR``, its pixel lies inside the
    image (``0 <= u < width``, ``0 <= v < height``) and, when ``depth_maps`` are given, it is not
    behind the rendered surface: ``depth <= rendered * (1 + depth_tolerance)``. The tolerance is
    *relative* so one value works for objects at radius 2 and for scenes tens of units deep; the
    rendered depth is read at the pixel containing the point (nearest, never interpolated across a
    silhouette). A rendered depth that is not ``> 0`` (0, negative or NaN) means nothing was
    rendered there, and the point counts as visible.

    Features are sampled at sub-pixel precision with ``grid_sample`` (bilinear, border clamping,
    ``align_corners=False``; see :func:`pixel_to_grid`). Invisible points get exactly zero
    features. The result is differentiable with respect to ``feature_maps``; the geometry is not
    (``points`` are detached).

    Args:
        points: ``(N, 3)`` world coordinates.
        cameras: V cameras, one per feature map.
        feature_maps: ``(V, D, h, w)`` feature maps, each covering its whole camera image.
        depth_maps: Optional ``(V, H', W')`` (or ``(V, H', W', 1)``) rendered depth, at the camera
            resolution or any other (pixel coordinates are rescaled).
        depth_tolerance: Relative depth slack of the occlusion test, ``>= 0``.

    Returns:
        :class:`PointFeatures` with ``(V, N, D)`` features and ``(V, N)`` visibility.
    """
    V = len(cameras)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must be (N, 3), got {tuple(points.shape)}")
    if feature_maps.ndim != 4 or feature_maps.shape[0] != V:
        raise ValueError(f"feature_maps must be ({V}, D, h, w), got {tuple(feature_maps.shape)}")
    if depth_tolerance < 0:
        raise ValueError(f"depth_tolerance must be >= 0, got {depth_tolerance}")
    W, H = cameras.width, cameras.height
    with torch.no_grad():
        uv, z = cameras.project(points.detach().to(cameras.c2w.dtype))
        u, v = uv[..., 0], uv[..., 1]
        visible = (z > NEAR) & (u >= 0) & (u < W) & (v >= 0) & (v < H)
        if depth_maps is not None:
            visible &= _depth_test(depth_maps, u, v, z, W, H, depth_tolerance, V)
        h, w = feature_maps.shape[-2:]
        # Clamping to the outermost token centres is exactly grid_sample's border padding; doing
        # it by hand frees the padding mode: with zero padding, invisible points parked far
        # outside the map sample exact zeros, which saves a masking pass over (V, N, D).
        grid = pixel_to_grid(uv, W, H)
        lo = grid.new_tensor([1.0 / w - 1.0, 1.0 / h - 1.0])
        grid = torch.maximum(torch.minimum(grid, -lo), lo)
        grid = torch.where(visible[..., None], grid, _OUTSIDE)
    grid = grid.to(feature_maps.dtype)[:, None]  # (V, 1, N, 2)
    sampled = F.grid_sample(
        feature_maps, grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )  # (V, D, 1, N)
    # Made contiguous as (V, N, D) once here, so fusion reads D-contiguous rows; reductions over
    # the transposed view are several times slower.
    features = sampled[:, :, 0].transpose(1, 2).contiguous()
    return PointFeatures(features=features, visible=visible, depth=z)


def best_views(pf: PointFeatures, cameras: Cameras) -> Tensor:
    """Per point, the view that sees it best: ``(N,)`` long indices into ``cameras``.

    "Best" is the largest projected footprint among the views where the point is visible: the
    image-space size of a small object at the point, ``sqrt(fx * fy) / depth`` pixels per world
    unit. The footprint is how many pixels (and hence feature tokens, since every view's map
    covers its whole image at one resolution) describe the point's neighbourhood, so the best
    view's feature is the least blurred by the bilinear sampling and by the encoder's receptive
    field; the visibility flag already says it is in the image and not occluded. Ties go to the
    lower index; a point no view sees gets view 0 (every view gives it a zero feature anyway).

    Args:
        pf: Point features from :func:`sample_point_features` (``pf.depth`` must be set).
        cameras: The V cameras ``pf`` was sampled with.

    Returns:
        ``(N,)`` int64 view indices.

    Raises:
        ValueError: ``pf`` without depth, or a camera count that does not match.
    """
    if pf.depth is None:
        raise ValueError("best_views needs PointFeatures.depth (use sample_point_features)")
    if len(cameras) != pf.visible.shape[0]:
        raise ValueError(
            f"best_views: {len(cameras)} cameras for features of {pf.visible.shape[0]} views"
        )
    focal = (cameras.K[:, 0, 0] * cameras.K[:, 1, 1]).sqrt().to(pf.depth.dtype)
    footprint = focal[:, None] / pf.depth.clamp_min(NEAR)
    # -1 below every real footprint (> 0): an unseen view never wins over a visible one.
    score = torch.where(pf.visible, footprint, torch.full_like(footprint, -1.0))
    # argmax returns the first maximum: ties go to the lower view index.
    return score.argmax(dim=0)


def _depth_test(
    depth_maps: Tensor,
    u: Tensor,
    v: Tensor,
    z: Tensor,
    width: int,
    height: int,
    tolerance: float,
    num_views: int,
) -> Tensor:
    """``(V, N)`` True where a point is not behind the rendered surface (see caller)."""
    if depth_maps.ndim == 4 and depth_maps.shape[-1] == 1:
        depth_maps = depth_maps[..., 0]
    if depth_maps.ndim != 3 or depth_maps.shape[0] != num_views:
        raise ValueError(f"depth_maps must be ({num_views}, H', W'), got {tuple(depth_maps.shape)}")
    Hd, Wd = depth_maps.shape[-2:]
    # Pixel (i, j) of a map Hd x Wd covers image pixels [j, j+1) * width / Wd horizontally.
    px = (u * (Wd / width)).nan_to_num(0.0).floor().clamp(0, Wd - 1).long()
    py = (v * (Hd / height)).nan_to_num(0.0).floor().clamp(0, Hd - 1).long()
    rendered = depth_maps.reshape(num_views, -1).to(z.dtype).gather(1, py * Wd + px)
    nothing_rendered = ~(rendered > 0)
    return nothing_rendered | (z <= rendered * (1.0 + tolerance))


def _masked_softmax(logits: Tensor, mask: Tensor) -> Tensor:
    """Softmax over dim 0 restricted to ``mask``; exactly 0 off the mask, all-0 columns if empty.

    Masked entries get the most negative finite logit rather than ``-inf`` so a column without
    any allowed entry stays finite (uniform) before the final multiplication zeroes it.
    """
    filled = logits.masked_fill(~mask, torch.finfo(logits.dtype).min)
    return torch.softmax(filled, dim=0) * mask.to(logits.dtype)


def _weighted_sum(weights: Tensor, features: Tensor) -> Tensor:
    """``sum_v weights[v, n] * features[v, n, :]`` → ``(N, D)``."""
    return torch.einsum("vn,vnd->nd", weights, features)


#: The input view of a fusion: one view index for every point, or an ``(N,)`` index per point.
InputView = int | Tensor


def _check_inputs(pf: PointFeatures, in_dim: int, input_view: InputView) -> None:
    f, vis = pf.features, pf.visible
    if f.ndim != 3 or f.shape[-1] != in_dim:
        raise ValueError(f"features must be (V, N, {in_dim}), got {tuple(f.shape)}")
    if vis.shape != f.shape[:2]:
        raise ValueError(f"visible must be {tuple(f.shape[:2])}, got {tuple(vis.shape)}")
    if isinstance(input_view, Tensor):
        if input_view.shape != f.shape[1:2] or input_view.dtype != torch.long:
            raise ValueError(
                f"a per-point input_view must be an int64 tensor of shape ({f.shape[1]},), got "
                f"{input_view.dtype} {tuple(input_view.shape)}"
            )
        if input_view.numel() and (
            int(input_view.min()) < 0 or int(input_view.max()) >= f.shape[0]
        ):
            raise ValueError(f"input_view indices must be in [0, {f.shape[0]})")
    elif not 0 <= input_view < f.shape[0]:
        raise ValueError(f"input_view must be in [0, {f.shape[0]}), got {input_view}")


def _per_point_input(pf: PointFeatures, input_view: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The input view's rows when it differs per point.

    Returns:
        ``f_in`` ``(N, D)`` (zero where that view does not see the point), ``vis_in`` ``(N,)``
        and ``is_input`` ``(V, N)`` bool, True at each point's input view.
    """
    f, vis = pf.features, pf.visible
    points = torch.arange(f.shape[1], device=f.device)
    iv = input_view.to(f.device)
    vis_in = vis[iv, points]
    f_in = f[iv, points].masked_fill(~vis_in[:, None], 0.0)
    is_input = torch.arange(f.shape[0], device=f.device)[:, None] == iv[None]
    return f_in, vis_in, is_input


class MeanFusion(nn.Module):
    """TSSF ``mean`` (ablation row F): the average of the views that see each point.

    Weights are ``1 / #visible`` on visible views, so they sum to 1 per point (0 if no view sees
    the point). Parameter-free.

    Args:
        in_dim: Feature width D (``out_dim`` equals it).
    """

    mode = "mean"

    def __init__(self, in_dim: int) -> None:
        super().__init__()
        self.in_dim = self.out_dim = in_dim

    def forward(self, pf: PointFeatures, input_view: InputView = 0) -> Fused:
        """Fuse ``pf`` (``(V, N, D)`` features) into ``(N, D)``; ``input_view`` plays no part."""
        _check_inputs(pf, self.in_dim, input_view)
        f, vis = pf.features, pf.visible
        visf = vis.to(f.dtype)
        weights = visf / visf.sum(dim=0).clamp_min(1.0)
        return Fused(_weighted_sum(weights, f), weights)


class GlobalAwareFusion(nn.Module):
    """TSSF ``ga`` (DS4D-GA, row G): a learned score per view, softmax over the visible views.

    A shared ``Linear(D, 1)`` scores every view's feature; the softmax over the views that see a
    point gives its weights (sum 1 per point, 0 if no view sees it). ``scorer="relative"`` adds
    to view ``j``'s logit a learned ``v·|f_j − f_input|`` and a learned bias on the input view.
    The paper's scorer sees each view alone, so it cannot tell the real observation from the
    pseudo views; a linear score of the pair ``[f_j, f_input]`` would not help either, because
    its ``f_input`` term is the same for every view and cancels in the softmax. Every scoring
    layer starts at zero, so GA starts as the mean fusion.

    Args:
        in_dim: Feature width D (``out_dim`` equals it).
        scorer: ``own`` (the paper) or ``relative``.
    """

    mode = "ga"

    def __init__(self, in_dim: int, scorer: str = "own") -> None:
        super().__init__()
        if scorer not in GA_SCORERS:
            raise ValueError(f"unknown GA scorer {scorer!r}; expected one of {GA_SCORERS}")
        self.in_dim = self.out_dim = in_dim
        self.ga_scorer = scorer
        self.score = nn.Linear(in_dim, 1)
        # Start from the mean fusion (all logits 0). A random init gives arbitrary, confident
        # per-view weights that often bury the input view, and in the ablation benchmark
        # (benchmarks/results/ablation.md) GA then trailed even the input-view-only row;
        # learning away from uniform keeps what the views agree on.
        nn.init.zeros_(self.score.weight)
        nn.init.zeros_(self.score.bias)
        self.relative = None
        self.input_bias = None
        if scorer == "relative":
            self.relative = nn.Linear(in_dim, 1, bias=False)
            nn.init.zeros_(self.relative.weight)
            self.input_bias = nn.Parameter(torch.zeros(()))

    def forward(self, pf: PointFeatures, input_view: InputView = 0) -> Fused:
        """Fuse ``pf`` (``(V, N, D)`` features) into ``(N, D)``.

        ``input_view`` (one index, or one per point) matters only to the ``relative`` scorer.
        """
        _check_inputs(pf, self.in_dim, input_view)
        f, vis = pf.features, pf.visible
        logits = self.score(f).squeeze(-1)  # (V, N)
        if self.relative is not None and isinstance(input_view, Tensor):
            f_in, _, is_input = _per_point_input(pf, input_view)
            logits = logits + self.relative((f - f_in).abs()).squeeze(-1)
            logits = logits + self.input_bias * is_input.to(logits.dtype)
        elif self.relative is not None:
            f_in = f[input_view].masked_fill(~vis[input_view][:, None], 0.0)
            logits = logits + self.relative((f - f_in).abs()).squeeze(-1)
            logits[input_view] = logits[input_view] + self.input_bias
        weights = _masked_softmax(logits, vis)
        return Fused(_weighted_sum(weights, f), weights)


class DistanceAwareFusion(nn.Module):
    """TSSF ``da`` (DS4D-DA, row H, the paper's best): pseudo views weighted by their feature
    distance to the input view, on top of the input view itself.

    The input view is kept as is and the pseudo views ``j != input`` are fused with
    ``softmax(-d_j / tau)`` over the *visible pseudo views*, where ``d_j = ‖f_j - f_input‖₁ / D``.
    ``combine="sum"`` outputs ``f_input + fused_pseudo``; ``combine="concat"`` outputs
    ``Linear(2D, D)(concat(f_input, fused_pseudo))``.

    Weights: the pseudo views carry their softmax weights (sum 1 over visible pseudo views) and
    the input view carries its coefficient in the sum, 1 if visible else 0 (the same value is
    reported for ``concat``, where the layer mixes it); a point seen by the input view and at
    least one pseudo view therefore has weights summing to 2. Edge cases: if the input view does
    not see the point, its feature is zero and distances to it are meaningless, so the visible
    pseudo views are averaged uniformly; if no pseudo view sees it, ``fused_pseudo = 0``; if no
    view at all sees it, the output is exactly 0 (also for ``concat``, whose bias would otherwise
    leak in).

    The input view (the anchor) is one index for every point, or an ``(N,)`` index per point
    (``conditioning.anchor: best``, :func:`best_views`); the rules above then hold per point. An
    anchor that does not see its point falls back as an unseen input view does: the visible
    other views are averaged uniformly.

    Args:
        in_dim: Feature width D (``out_dim`` equals it).
        tau: Softmax temperature, ``> 0``.
        combine: ``sum`` or ``concat``.
    """

    mode = "da"

    def __init__(self, in_dim: int, tau: float = 1.0, combine: str = "sum") -> None:
        super().__init__()
        if combine not in COMBINE_MODES:
            raise ValueError(f"unknown TSSF combine {combine!r}; expected one of {COMBINE_MODES}")
        if not tau > 0:
            raise ValueError(f"tau must be > 0, got {tau}")
        self.in_dim = self.out_dim = in_dim
        self.tau = float(tau)
        self.combine = combine
        self.merge = nn.Linear(2 * in_dim, in_dim) if combine == "concat" else None

    def forward(self, pf: PointFeatures, input_view: InputView = 0) -> Fused:
        """Fuse ``pf`` (``(V, N, D)`` features) into ``(N, D)``.

        Args:
            pf: Per-view point features.
            input_view: The anchor: one view index, or an ``(N,)`` int64 index per point.
        """
        _check_inputs(pf, self.in_dim, input_view)
        f, vis, iv = pf.features, pf.visible, input_view
        if isinstance(iv, Tensor):
            f_in, vis_in, is_input = _per_point_input(pf, iv)
            return self._fuse(f, vis, f_in, vis_in, vis & ~is_input, is_input.to(f.dtype))
        vis_in = vis[iv]
        # PointFeatures promise zeros where unseen; enforcing it on this (N, D) slice is cheap
        # and keeps an unseen input view out of the sum even if a caller broke the promise.
        f_in = f[iv].masked_fill(~vis_in[:, None], 0.0)
        pseudo = vis.clone()
        pseudo[iv] = False
        one_hot = F.one_hot(torch.tensor(iv), f.shape[0]).to(f)[:, None]
        return self._fuse(f, vis, f_in, vis_in, pseudo, one_hot)

    def _fuse(
        self, f: Tensor, vis: Tensor, f_in: Tensor, vis_in: Tensor, pseudo: Tensor, one_hot: Tensor
    ) -> Fused:
        """DA given the anchor's rows: ``f_in`` ``(N, D)``, ``vis_in`` ``(N,)``, the other
        visible views ``pseudo`` ``(V, N)`` and the anchor's indicator ``one_hot`` (``(V, 1)``
        or ``(V, N)``, float)."""
        # Distances over all V views (the input's own is masked out below) avoid copying the
        # pseudo views; cdist's batched L1 is ~1.5x faster than an explicit |f - f_in| tensor.
        dist = torch.cdist(f.transpose(0, 1), f_in[:, None], p=1)[..., 0].T / f.shape[-1]
        logits = torch.where(vis_in, -dist / self.tau, torch.zeros_like(dist))
        w_pseudo = _masked_softmax(logits, pseudo)
        fused_pseudo = _weighted_sum(w_pseudo, f)
        if self.merge is None:
            out = f_in + fused_pseudo
        else:
            out = self.merge(torch.cat([f_in, fused_pseudo], dim=-1))
            out = out * vis.any(dim=0, keepdim=True).T.to(out.dtype)
        w_input = one_hot * vis_in.to(f.dtype)
        return Fused(out, w_pseudo + w_input)


class InputViewOnly(nn.Module):
    """The "TSSF off" ablation: each point takes the input view's feature (0 where unseen).

    ``out_dim`` equals ``in_dim`` like the fusions. Weights are one-hot on the input view where
    it sees the point and all zero elsewhere.

    With a per-point input view (``conditioning.anchor: best``) each point takes its own view's
    feature: on a camera rig, the "TSSF off" row then keeps the best camera, not camera 0.

    Args:
        in_dim: Feature width D.
    """

    mode = "off"

    def __init__(self, in_dim: int) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.out_dim = in_dim

    def forward(self, pf: PointFeatures, input_view: InputView = 0) -> Fused:
        """Return the input view's ``(N, D)`` features and one-hot ``(V, N)`` weights."""
        _check_inputs(pf, self.in_dim, input_view)
        f, vis = pf.features, pf.visible
        if isinstance(input_view, Tensor):
            f_in, vis_in, is_input = _per_point_input(pf, input_view)
            return Fused(f_in, is_input.to(f.dtype) * vis_in.to(f.dtype))
        out = f[input_view].masked_fill(~vis[input_view, :, None], 0.0)
        weights = torch.zeros(vis.shape, dtype=f.dtype, device=f.device)
        weights[input_view] = vis[input_view].to(f.dtype)
        return Fused(out, weights)


Fusion = MeanFusion | GlobalAwareFusion | DistanceAwareFusion | InputViewOnly


def make_fusion(
    in_dim: int,
    mode: str = "da",
    tau: float = 1.0,
    combine: str | None = None,
    ga_scorer: str | None = None,
) -> Fusion:
    """The fusion module of a TSSF mode, chosen once here instead of a switch in ``forward``.

    Args:
        in_dim: Feature width D.
        mode: ``off`` (input view only), ``mean``, ``ga`` or ``da``.
        tau: DA's softmax temperature.
        combine: DA's merge (``sum`` / ``concat``; ``None``: ``sum``). An error for other modes.
        ga_scorer: GA's scorer (``own`` / ``relative``; ``None``: ``own``). An error for other
            modes.

    Raises:
        ValueError: Unknown mode, or a mode-specific option given to another mode.
    """
    if mode not in ("off", *TSSF_MODES):
        raise ValueError(f"unknown TSSF mode {mode!r}; expected one of {('off', *TSSF_MODES)}")
    if combine is not None and mode != "da":
        raise ValueError(
            f"combine={combine!r} only applies to TSSF mode 'da' (model.conditioning.da_combine), "
            f"got mode {mode!r}"
        )
    if ga_scorer is not None and mode != "ga":
        raise ValueError(
            f"ga_scorer={ga_scorer!r} only applies to TSSF mode 'ga' "
            f"(model.conditioning.ga_scorer), got mode {mode!r}"
        )
    if mode == "off":
        return InputViewOnly(in_dim)
    if mode == "mean":
        return MeanFusion(in_dim)
    if mode == "ga":
        return GlobalAwareFusion(in_dim, ga_scorer or "own")
    return DistanceAwareFusion(in_dim, tau, combine or "sum")
