"""The pseudo views' learned framing: a per-view similarity applied to renders before the loss.

A generator's view ``v`` shows the object at ``A_v(x) = c + s_v (x - c) + d_v`` of where the
protocol's camera puts it (``c`` the image centre). Rather than guess ``A_v`` from the input
silhouette alone (:mod:`ds4d_pl.data.align`, whose object model leaves up to 7.5 % of scale
error), the model's own render of view ``v`` is moved by ``A_v`` before it is compared with the
view, and ``A_v`` is learned with everything else. The real input views are never moved: they
fix the gauge (the object's size and position) that the pseudo views are explained against,
and the other views constrain the depth the input cannot see.

One motion of the whole object is invisible in the input view: scaling the scene about the
input camera's centre (the object further away and larger, or nearer and smaller). Seen from the
pseudo views it is a change of scale and shift per view, which the framing could absorb, so
nothing would hold the object's depth: from a visual hull carved off the true place the model
then stays there, and the true novel views see it shifted. :func:`framing_gauge` finds such
motions from the cameras (those of a scene similarity that leave every input view unchanged),
and the correction never takes their component: the object's depth is the reconstruction's to
fit, the framing keeps what differs between views.

The render is moved premultiplied (colour times coverage, and coverage), bilinearly, so what
enters from outside the image is empty and is composited over the background again; at the
identity the warp reads every pixel at its own centre and returns the render unchanged (to
float rounding).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ds4d_pl.cameras import Cameras
from ds4d_pl.config import FramingConfig
from ds4d_pl.data.align import similarity_resample
from ds4d_pl.render.base import RenderOutput


def warp_render(
    out: RenderOutput, scale: Tensor, shift: Tensor, background: Tensor
) -> RenderOutput:
    """Move every image of ``out`` by ``x' = c + scale (x - c) + shift``.

    Args:
        out: ``C`` rendered images, composited over ``background``.
        scale: ``(C,)`` scales about the image centre.
        shift: ``(C, 2)`` shifts in pixels ``(dx, dy)``.
        background: ``(3,)`` colour the render was composited over.

    Returns:
        The moved render: colour (re-composited over ``background``), coverage and depth;
        ``means2d`` and ``radii`` are the original ones (densification reads the gradient that
        reaches the unmoved projection).
    """
    bg = background.to(out.rgb)
    premult = out.rgb - (1.0 - out.alpha) * bg
    stacked = torch.cat([premult, out.alpha, out.depth * out.alpha], dim=-1)
    moved = similarity_resample(stacked, scale.to(out.rgb), shift.to(out.rgb))
    alpha = moved[..., 3:4].clamp(0.0, 1.0)
    rgb = moved[..., :3] + (1.0 - alpha) * bg
    depth = torch.where(
        alpha > 1e-4, moved[..., 4:5] / alpha.clamp_min(1e-4), torch.zeros_like(alpha)
    )
    return RenderOutput(rgb=rgb, alpha=alpha, depth=depth, means2d=out.means2d, radii=out.radii)


def _emulating_framing(cams: Cameras, centre: Tensor, g: Tensor) -> Tensor:
    """``(N, 3)`` framing (log-scale, shift as fractions of the side) that reproduces, in each
    camera, the image motion of the scene similarity ``g = (dx, dy, dz, log k)`` (translation
    and scale about ``centre``), to first order about the projection of ``centre``."""
    uv0, z0 = cams.project(centre[None])
    uv1, z1 = cams.project((centre + g[:3])[None])
    scale = g[3] + torch.log(z0[:, 0] / z1[:, 0])
    c_img = torch.tensor([cams.width / 2.0, cams.height / 2.0], dtype=uv0.dtype)
    # The object's image moves as p -> p1 + s (p - p0): about the image centre that is a scale
    # s and a shift p1 - c - s (p0 - c).
    shift = uv1[:, 0] - c_img - torch.exp(scale)[:, None] * (uv0[:, 0] - c_img)
    side = torch.tensor([float(cams.width), float(cams.height)], dtype=uv0.dtype)
    return torch.cat([scale[:, None], shift / side], dim=-1)


def framing_gauge(
    cameras: Cameras, num_input_views: int, centre: Tensor, extent: float = 1.0
) -> Tensor:
    """Orthonormal basis ``(3 V, k)`` of the framing motions that a similarity of the whole
    scene explains while leaving every input view unchanged.

    Args:
        cameras: The ``V`` training cameras of one frame, input views first.
        num_input_views: How many leading cameras are real observations.
        centre: ``(3,)`` the object's centre (the similarity's scale is about it).
        extent: The object's size, the step of the finite differences.

    Returns:
        Columns over the flattened ``(V, 3)`` table of (log-scale, shift x, shift y); the input
        views' rows are zero. ``k`` is 1 for one perspective input view (scale about its centre),
        0 when the input views see every such motion.
    """
    cams = Cameras(cameras.c2w.double(), cameras.K.double(), cameras.width, cameras.height)
    c = centre.detach().double().cpu()
    cams = cams.to("cpu")
    h = 1e-4 * max(float(extent), 1e-6)
    steps = torch.eye(4, dtype=torch.float64) * torch.tensor([h, h, h, 1e-4], dtype=torch.float64)
    # Response of every camera's framing to each of the 4 similarity parameters (central
    # differences, per unit of the parameter).
    jac = torch.stack(
        [
            (_emulating_framing(cams, c, d) - _emulating_framing(cams, c, -d)).reshape(-1)
            / (2 * d.abs().max())
            for d in steps
        ],
        dim=1,
    )  # (3 V, 4)
    inputs = jac[: 3 * num_input_views]
    _, sv, vh = torch.linalg.svd(inputs, full_matrices=True)
    rank = int((sv > 1e-6 * max(float(sv.max()), 1e-12)).sum()) if len(sv) else 0
    null = vh[rank:].T  # (4, k) similarities the input views do not see
    gauge = jac @ null
    gauge[: 3 * num_input_views] = 0.0
    if gauge.shape[1] == 0:
        return gauge.float()
    u, sg, _ = torch.linalg.svd(gauge, full_matrices=False)
    keep = sg > 1e-6 * max(float(sg.max()), 1e-12)
    return u[:, keep].float()


class FramingCorrection(nn.Module):
    """One learned similarity per training view (or per view and frame), for pseudo views.

    Parameters are bounded: ``log s = max_scale * tanh(p_0)`` and ``d = max_shift * tanh(p_1:3)``
    (times the image side), zero-initialised (the identity). The table holds a row for every
    training view so view ids index it directly; the rows of real views are never used and stay
    zero. Per frame, ``p`` of view ``v`` at frame ``f`` is the view's shared entry plus the
    frame's residual minus the mean residual of the view: the residuals can only describe how
    frames differ, so the common part (a generator's per-view error) sits in the shared entry,
    which every frame of the view trains, as fast as per view.
    (A table of independent per-frame entries, each updated only when its frame is drawn,
    recovered about half the framing error in the steps that per view recovers three quarters.)

    Args:
        cfg: The framing settings.

    Attributes:
        params: ``(V, K, 3)`` raw parameters: ``K = 1`` per view; per frame ``K = 1 + F``, the
            view's shared entry then one residual per frame. ``(0, 1, 3)`` until :meth:`build`
            (or a loaded state dict) sizes it.
    """

    gauge: Tensor

    def __init__(self, cfg: FramingConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.params = nn.Parameter(torch.zeros(0, 1, 3))
        # Derived from the cameras at every setup, so not saved.
        self.register_buffer("gauge", torch.zeros(0, 0), persistent=False)

    def set_gauge(self, basis: Tensor) -> None:
        """The ``(3 V, k)`` orthonormal directions (:func:`framing_gauge`) the correction never
        takes; ``k = 0``: none."""
        if self.is_built and basis.shape[0] != 3 * self.params.shape[0]:
            raise ValueError(
                f"FramingCorrection.set_gauge: basis for {basis.shape[0] // 3} views, the table "
                f"has {self.params.shape[0]}"
            )
        self.gauge = basis.to(self.params.device, self.params.dtype)

    def build(self, num_views: int, num_frames: int) -> None:
        """Size the table for a scene with ``num_views`` training views of ``num_frames``."""
        rows = 1 + num_frames if self.cfg.per == "frame" else 1
        self.params = nn.Parameter(torch.zeros(num_views, rows, 3, device=self.params.device))

    @property
    def is_built(self) -> bool:
        return self.params.shape[0] > 0

    def transform(self, view_ids: Tensor, frame_ids: Tensor) -> tuple[Tensor, Tensor]:
        """Scales ``(B,)`` and shifts ``(B, 2)`` (fractions of the image side) of samples."""
        views = view_ids.to(self.params.device)
        log_scale, shift = self._view_table()
        log_scale, shift = log_scale[views], shift[views]
        if self.cfg.per == "frame":
            residuals = self.params[views, 1:]
            frames = 1 + frame_ids.to(self.params.device)
            d_log_scale, d_shift = self._bound(self.params[views, frames] - residuals.mean(1))
            log_scale, shift = log_scale + d_log_scale, shift + d_shift
        return torch.exp(log_scale), shift

    def _bound(self, p: Tensor) -> tuple[Tensor, Tensor]:
        """Log-scales ``(...)`` and shifts ``(..., 2)`` of raw parameters ``(..., 3)``."""
        return self.cfg.max_scale * torch.tanh(p[..., 0]), self.cfg.max_shift * torch.tanh(
            p[..., 1:]
        )

    def _view_table(self) -> tuple[Tensor, Tensor]:
        """Log-scales ``(V,)`` and shifts ``(V, 2)`` of every view's shared entry, without
        their component along the gauge."""
        log_scale, shift = self._bound(self.params[:, 0])
        table = torch.cat([log_scale[:, None], shift], dim=-1)
        if self.gauge.numel():
            flat = table.reshape(-1)
            flat = flat - self.gauge @ (self.gauge.T @ flat)
            table = flat.reshape(-1, 3)
        return table[:, 0], table[:, 1:]

    def forward(
        self,
        out: RenderOutput,
        view_ids: Tensor,
        frame_ids: Tensor,
        is_input: Tensor,
        background: Tensor,
    ) -> RenderOutput:
        """``out`` with its pseudo-view images moved by their learned framing (real views,
        and a batch without pseudo views, are returned as they are)."""
        pseudo = (~is_input.to(torch.bool)).nonzero()[:, 0].cpu()
        if len(pseudo) == 0:
            return out
        h, w = out.rgb.shape[1:3]
        scale, shift = self.transform(view_ids.cpu()[pseudo], frame_ids.cpu()[pseudo])
        px = torch.tensor([float(w), float(h)], dtype=shift.dtype, device=shift.device)
        idx = pseudo.to(out.rgb.device)
        sub = RenderOutput(
            rgb=out.rgb[idx],
            alpha=out.alpha[idx],
            depth=out.depth[idx],
            means2d=out.means2d,
            radii=out.radii,
        )
        moved = warp_render(sub, scale, shift * px, background)
        # Real views keep their render exactly, without a resampling pass of their own.
        rgb, alpha, depth = out.rgb.clone(), out.alpha.clone(), out.depth.clone()
        rgb[idx], alpha[idx], depth[idx] = moved.rgb, moved.alpha, moved.depth
        return RenderOutput(rgb=rgb, alpha=alpha, depth=depth, means2d=out.means2d, radii=out.radii)

    def summary(self, num_input_views: int) -> dict[str, list[float]]:
        """Per pseudo view (mean over frames): ``scale`` and ``shift_x``/``shift_y`` as
        fractions of the image side, for logs and ``run_info.json``."""
        if not self.is_built:
            return {"scale": [], "shift_x": [], "shift_y": []}
        with torch.no_grad():
            log_scale, shift = self._view_table()
            log_scale, shift = log_scale[num_input_views:], shift[num_input_views:]
            if self.cfg.per == "frame":
                raw = self.params[num_input_views:, 1:]
                d_log_scale, d_shift = self._bound(raw - raw.mean(1, keepdim=True))
                log_scale, shift = log_scale + d_log_scale.mean(1), shift + d_shift.mean(1)
            scale = torch.exp(log_scale)
        return {
            "scale": [float(x) for x in scale],
            "shift_x": [float(x) for x in shift[:, 0]],
            "shift_y": [float(x) for x in shift[:, 1]],
        }

    def _load_from_state_dict(
        self,
        state_dict: Mapping[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        # The table's size is the scene's: take it from the checkpoint, as the Gaussians do.
        src = state_dict.get(prefix + "params")
        if src is not None and src.ndim == 3 and tuple(src.shape) != tuple(self.params.shape):
            self.params = nn.Parameter(torch.empty(src.shape, device=self.params.device))
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        if src is None and not self.is_built and prefix + "params" in missing_keys:
            # A run whose scene had no pseudo views never sized (or saved) the table.
            missing_keys.remove(prefix + "params")
