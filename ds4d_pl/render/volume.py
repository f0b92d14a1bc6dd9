"""Volume rendering of a radiance field (a dynamic NeRF at one instant) with nerfacc.

Returns the same :class:`~ds4d_pl.render.base.RenderOutput` as the Gaussian rasterisers, so losses,
SDS, videos, metrics and the test protocol read a NeRF render exactly like a splatted one:

* ``rgb`` is the accumulated (premultiplied) colour plus ``(1 - alpha) * background``, i.e.
  :func:`~ds4d_pl.data.types.composite` of the straight colour, as the Gaussian renderers do, so
  :meth:`RenderOutput.rgb_on` re-composites it over another background;
* ``alpha`` is the accumulated weight ``1 - T_final``;
* ``depth`` is the weight-averaged **camera z** (not the distance along the ray), divided by
  ``alpha`` and 0 where ``alpha <= 1e-6``, the Gaussian renderers' convention;
* ``means2d`` ``(C, 0, 2)`` and ``radii`` ``(C, 0)`` are empty: there are no primitives to densify.

Pipeline per batch of cameras: one ray per pixel centre (``+0.5``), clipped to the field's box
(and the optional ball ``sphere_radius``) and to ``[near, far]``; rays that miss render the
background with alpha 0 and cost nothing. Hit rays are shaded in chunks of ``ray_chunk`` (each
chunk optionally under activation checkpointing). Samples come from

* ``uniform``: ``samples_per_ray`` equal intervals between entry and exit, one sample per
  interval (jittered inside it in training mode with ``stratified``, the midpoint otherwise);
* ``proposal``: the field's own density at ``proposal_samples`` midpoints, without gradient, gives
  weights whose CDF (mixed with ``proposal_uniform`` of uniform mass) is inverted at
  ``samples_per_ray + 1`` quantiles: new interval edges that still tile the ray, denser where the
  weights are. This is NeRF's hierarchical sampling with a shared network; no separate proposal
  network is trained, so no extra loss term is needed;
* ``occupancy``: nerfacc's :class:`~nerfacc.OccGridEstimator` marches through occupied cells
  (CUDA only); its grid is updated from the rendered field every ``occupancy_every`` training
  renders (density at the rendered instant, EMA-max over renders, so it covers every instant
  seen) and is a buffer of this module, saved with it.

nerfacc on CPU (0.5.3): its *batched* (dense ``(rays, samples)``) volume-rendering helpers
(``render_weight_from_density``, ``render_transmittance_*``, ``accumulate_along_rays``, the dense
``exclusive_sum``/``exclusive_prod``) are plain PyTorch and are what the ``uniform`` and
``proposal`` paths use. Its packed (flattened) scans, ``ray_aabb_intersect``,
``importance_sampling``, ``searchsorted`` and grid traversal are CUDA kernels only; hence the
ray-box/ball intersection and the proposal's inverse-CDF sampling are written here in PyTorch, and
the ``occupancy`` path (which needs them) requires CUDA. That path is not exercised by the CPU
tests.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ds4d_pl.cameras import Cameras
from ds4d_pl.fields.nerf import NeRFConfig, RadianceVolume
from ds4d_pl.render.base import RenderOutput

# Pixels whose accumulated alpha is at most this get depth 0 (the Gaussian renderers' rule).
_ALPHA_EPS = 1e-6


def import_nerfacc() -> Any:
    """nerfacc, or an ImportError that says how to get it (it is an optional dependency)."""
    try:
        import nerfacc
    except ImportError as err:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            "the NeRF representation renders with nerfacc, which is not installed; install it "
            "with `pip install 'ds4d_pl[cuda]'` (or `pip install nerfacc>=0.5.3`)"
        ) from err
    return nerfacc


def camera_rays(cameras: Cameras) -> tuple[Tensor, Tensor, Tensor]:
    """One ray per pixel centre of every camera.

    Args:
        cameras: ``C`` cameras of size ``H x W``.

    Returns:
        ``origins`` ``(C*H*W, 3)``, unit ``directions`` ``(C*H*W, 3)`` (camera-major, then row,
        then column) and ``z_per_t`` ``(C*H*W,)``: camera z gained per unit of distance along the
        ray (``cos`` of the angle to the optical axis), to turn ray distances into depth.
    """
    c, h, w = len(cameras), cameras.height, cameras.width
    dtype, device = cameras.c2w.dtype, cameras.device
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=dtype, device=device) + 0.5,
        torch.arange(w, dtype=dtype, device=device) + 0.5,
        indexing="ij",
    )
    K = cameras.K.to(dtype)
    fx, fy = K[:, 0, 0, None, None], K[:, 1, 1, None, None]
    cx, cy = K[:, 0, 2, None, None], K[:, 1, 2, None, None]
    d_cam = torch.stack(
        [(xs - cx) / fx, (ys - cy) / fy, torch.ones(c, h, w, dtype=dtype, device=device)], -1
    )  # (C, H, W, 3), z = 1
    norm = d_cam.norm(dim=-1, keepdim=True)
    rot = cameras.c2w[:, :3, :3]
    dirs = torch.einsum("cij,chwj->chwi", rot, d_cam / norm).reshape(-1, 3)
    origins = cameras.c2w[:, None, None, :3, 3].expand(c, h, w, 3).reshape(-1, 3)
    return origins, dirs, (1.0 / norm).reshape(-1)


def ray_box_intersect(origins: Tensor, dirs: Tensor, aabb: Tensor) -> tuple[Tensor, Tensor]:
    """Slab-method entry and exit distances of rays through an axis-aligned box.

    Args:
        origins: ``(R, 3)`` ray origins.
        dirs: ``(R, 3)`` ray directions (any length; distances are in its units).
        aabb: ``(2, 3)`` box ``[min; max]``.

    Returns:
        ``t_in, t_out`` ``(R,)``; the ray misses the box where ``t_out <= max(t_in, 0)``.
    """
    # A zero direction component gives +-inf slab distances, which min/max handle; an origin
    # exactly on that slab's plane gives 0 * inf = NaN, which must not constrain the interval.
    inv = 1.0 / dirs
    t0 = (aabb[0].to(origins) - origins) * inv
    t1 = (aabb[1].to(origins) - origins) * inv
    t_in = torch.minimum(t0, t1).nan_to_num(nan=-math.inf).amax(dim=-1)
    t_out = torch.maximum(t0, t1).nan_to_num(nan=math.inf).amin(dim=-1)
    return t_in, t_out


def ray_sphere_intersect(
    origins: Tensor, dirs: Tensor, center: Tensor, radius: float
) -> tuple[Tensor, Tensor]:
    """Entry and exit distances of rays with *unit* directions through a ball.

    Returns:
        ``t_in, t_out`` ``(R,)``; a ray that misses gets ``t_in = +inf, t_out = -inf``.
    """
    oc = origins - center.to(origins)
    b = (oc * dirs).sum(-1)
    disc = b * b - ((oc * oc).sum(-1) - radius * radius)
    hit = disc > 0
    root = torch.where(hit, disc, torch.zeros_like(disc)).sqrt()
    inf = torch.full_like(b, math.inf)
    return torch.where(hit, -b - root, inf), torch.where(hit, -b + root, -inf)


def sample_pdf_edges(
    edges: Tensor, weights: Tensor, n: int, uniform_mix: float, jitter: Tensor | None = None
) -> Tensor:
    """Interval edges placed by inverting the CDF of piecewise-constant weights.

    Args:
        edges: ``(R, B + 1)`` increasing bin edges per ray.
        weights: ``(R, B)`` non-negative weight of every bin.
        n: Intervals to return.
        uniform_mix: Fraction of the probability mass spread uniformly over the bins' length
            (so a ray whose weights vanish gets uniform intervals).
        jitter: Optional ``(R, 1)`` offset in ``[0, 1)``, in units of one quantile step, shifting
            the interior quantiles (stratified sampling, one jitter per ray).

    Returns:
        ``(R, n + 1)`` non-decreasing edges from ``edges[:, 0]`` to ``edges[:, -1]``; each new
        interval holds ``1 / n`` of the mixed probability mass.
    """
    widths = (edges[:, 1:] - edges[:, :-1]).clamp_min(0.0)
    total = weights.sum(-1, keepdim=True)
    length = widths.sum(-1, keepdim=True).clamp_min(1e-12)
    pdf = torch.where(total > 0, weights / total.clamp_min(1e-12), widths / length)
    pdf = (1.0 - uniform_mix) * pdf + uniform_mix * widths / length
    cdf = torch.cat([torch.zeros_like(pdf[:, :1]), pdf.cumsum(-1)], -1)
    cdf = cdf / cdf[:, -1:].clamp_min(1e-12)
    u = torch.linspace(0.0, 1.0, n + 1, dtype=edges.dtype, device=edges.device).expand(
        edges.shape[0], n + 1
    )
    if jitter is not None:
        inner = (u[:, 1:-1] + (jitter - 0.5) / n).clamp(0.0, 1.0)
        u = torch.cat([u[:, :1], inner, u[:, -1:]], -1)
    u = u.contiguous()
    # Bin b holds u with cdf[b] <= u < cdf[b + 1]; linear inside it.
    idx = torch.searchsorted(cdf.contiguous(), u, right=True).clamp(1, cdf.shape[1] - 1)
    c0, c1 = cdf.gather(1, idx - 1), cdf.gather(1, idx)
    e0, e1 = edges.gather(1, idx - 1), edges.gather(1, idx)
    frac = ((u - c0) / (c1 - c0).clamp_min(1e-12)).clamp(0.0, 1.0)
    out = e0 + frac * (e1 - e0)
    # Pin the ends exactly: the intervals must tile [t_in, t_out] for the quadrature.
    out = torch.cat([edges[:, :1], out[:, 1:-1], edges[:, -1:]], -1)
    return torch.cummax(out, dim=1).values


class VolumeRenderer(nn.Module):
    """Renders a :class:`~ds4d_pl.fields.nerf.RadianceVolume` for a batch of cameras.

    A plain module (no learnable parameters; with the ``occupancy`` sampler it holds nerfacc's
    occupancy grid as buffers): its ``training`` flag switches stratified jitter and occupancy
    updates on, so it should live inside the model that ``train()`` / ``eval()`` toggle.

    Args:
        cfg: Sampling and chunking settings (:class:`~ds4d_pl.fields.nerf.NeRFConfig`).

    Attributes:
        generator: Optional CPU generator of the stratified jitter (``None``: torch's global
            stream). The model reseeds it from the global step every training step, so a
            resumed run draws the same samples as an uninterrupted one.

    Raises:
        ImportError: nerfacc is not installed.
        RuntimeError: ``occupancy`` sampler without CUDA.
        ValueError: ``occupancy`` sampler without a fixed ``cfg.aabb``.
    """

    name = "nerfacc_volume"

    def __init__(self, cfg: NeRFConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self._nerfacc = import_nerfacc()
        self.occupancy: nn.Module | None = None
        self.generator: torch.Generator | None = None
        self._training_renders = 0
        if cfg.sampler == "occupancy":
            if not torch.cuda.is_available():
                raise RuntimeError(
                    "NeRFConfig.sampler='occupancy' uses nerfacc's CUDA occupancy-grid kernels, "
                    "but torch.cuda.is_available() is False; use sampler 'uniform' or 'proposal' "
                    "on CPU"
                )
            if cfg.aabb is None:
                raise ValueError(
                    "NeRFConfig.sampler='occupancy' needs a fixed NeRFConfig.aabb (the grid is "
                    "built over it at construction); set aabb or use sampler 'uniform'/'proposal'"
                )
            self.occupancy = self._nerfacc.OccGridEstimator(
                roi_aabb=list(cfg.aabb), resolution=cfg.occupancy_resolution, levels=1
            )

    def _rand(self, like: Tensor) -> Tensor:
        """Uniform ``[0, 1)`` noise shaped like ``like``, from :attr:`generator` when set."""
        if self.generator is None:
            return torch.rand_like(like)
        # Drawn on the CPU generator's device and moved: a CPU stream serves a CUDA render too.
        noise = torch.rand(like.shape, generator=self.generator, dtype=like.dtype)
        return noise.to(like.device)

    # ------------------------------------------------------------------ rays
    def ray_bounds(
        self, volume: RadianceVolume, origins: Tensor, dirs: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Where each unit-direction ray is inside the sampled region.

        Returns:
            ``t_in, t_out, hit``: distances ``(R,)`` and whether the ray crosses the region.
        """
        aabb = volume.aabb  # raises for a field without bounds
        t_in, t_out = ray_box_intersect(origins, dirs, aabb)
        if self.cfg.sphere_radius is not None:
            s_in, s_out = ray_sphere_intersect(
                origins, dirs, 0.5 * (aabb[0] + aabb[1]), self.cfg.sphere_radius
            )
            t_in, t_out = torch.maximum(t_in, s_in), torch.minimum(t_out, s_out)
        t_in = t_in.clamp_min(self.cfg.near)
        t_out = t_out.clamp_max(self.cfg.far)
        return t_in, t_out, t_out > t_in

    @torch.no_grad()
    def sample_intervals(
        self, volume: RadianceVolume, origins: Tensor, dirs: Tensor, t_in: Tensor, t_out: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Sample intervals along rays with the ``uniform`` or ``proposal`` sampler.

        Args:
            volume: The field (the proposal pass reads its density).
            origins: ``(R, 3)`` ray origins.
            dirs: ``(R, 3)`` unit directions.
            t_in: ``(R,)`` entry distances.
            t_out: ``(R,)`` exit distances (``> t_in``).

        Returns:
            ``t_starts, t_ends, t_samples``, each ``(R, samples_per_ray)``: the intervals tile
            ``[t_in, t_out]`` and ``t_samples`` lies inside each interval.
        """
        cfg = self.cfg
        stratified = self.training and cfg.stratified
        n = cfg.samples_per_ray
        if cfg.sampler == "proposal":
            m = cfg.proposal_samples
            s = torch.linspace(0.0, 1.0, m + 1, dtype=t_in.dtype, device=t_in.device)
            coarse = t_in[:, None] + (t_out - t_in)[:, None] * s
            mid = 0.5 * (coarse[:, 1:] + coarse[:, :-1])
            pts = origins[:, None] + dirs[:, None] * mid[..., None]
            sigma = volume.density(pts.reshape(-1, 3)).reshape(mid.shape).float()
            weights, _, _ = self._nerfacc.render_weight_from_density(
                coarse[:, :-1], coarse[:, 1:], sigma
            )
            jitter = self._rand(t_in[:, None]) if stratified else None
            edges = sample_pdf_edges(coarse, weights.to(coarse), n, cfg.proposal_uniform, jitter)
        else:
            s = torch.linspace(0.0, 1.0, n + 1, dtype=t_in.dtype, device=t_in.device)
            edges = t_in[:, None] + (t_out - t_in)[:, None] * s
        t_starts, t_ends = edges[:, :-1], edges[:, 1:]
        frac = self._rand(t_starts) if stratified else torch.full_like(t_starts, 0.5)
        return t_starts, t_ends, t_starts + frac * (t_ends - t_starts)

    # ------------------------------------------------------------- shading
    def _shade(
        self,
        volume: RadianceVolume,
        origins: Tensor,
        dirs: Tensor,
        z_per_t: Tensor,
        t_starts: Tensor,
        t_ends: Tensor,
        t_samples: Tensor,
    ) -> Tensor:
        """``(R, 5)`` = premultiplied rgb, alpha, alpha-weighted camera z of dense samples."""
        nerfacc = self._nerfacc
        pts = origins[:, None] + dirs[:, None] * t_samples[..., None]
        sigma, rgb = volume.query(pts.reshape(-1, 3))
        sigma = sigma.reshape(t_samples.shape)
        rgb = rgb.reshape(*t_samples.shape, 3)
        weights, _, _ = nerfacc.render_weight_from_density(
            t_starts.to(sigma), t_ends.to(sigma), sigma
        )
        color = nerfacc.accumulate_along_rays(weights, rgb)
        alpha = nerfacc.accumulate_along_rays(weights, None)
        z = (t_samples * z_per_t[:, None]).to(sigma)
        depth = nerfacc.accumulate_along_rays(weights, z[..., None])
        return torch.cat([color, alpha, depth], -1)

    def _run_chunk(
        self, shade: Callable[..., Tensor], volume: RadianceVolume, *ts: Tensor
    ) -> Tensor:
        """``shade(volume, *ts)``, under activation checkpointing when configured."""
        if self.cfg.checkpoint_chunks and torch.is_grad_enabled():
            # Non-reentrant checkpointing also reaches the parameters captured by ``volume``.
            return checkpoint(lambda *xs: shade(volume, *xs), *ts, use_reentrant=False)
        return shade(volume, *ts)

    @torch.no_grad()
    def _occupancy_intervals(
        self, volume: RadianceVolume, origins: Tensor, dirs: Tensor, t_in: Tensor, t_out: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Packed ``(ray_indices, t_starts, t_ends)`` from the occupancy grid (CUDA)."""
        assert self.occupancy is not None
        cfg = self.cfg
        aabb = volume.aabb
        step = float((aabb[1] - aabb[0]).norm()) / cfg.samples_per_ray
        if self.training:
            self._training_renders += 1

            def occ_eval_fn(x: Tensor) -> Tensor:
                return volume.density(x) * step

            self.occupancy.update_every_n_steps(
                step=self._training_renders - 1,
                occ_eval_fn=occ_eval_fn,
                occ_thre=cfg.occupancy_threshold,
                n=cfg.occupancy_every,
            )

        def sigma_fn(t0: Tensor, t1: Tensor, ray_idx: Tensor) -> Tensor:
            mid = 0.5 * (t0 + t1)
            return volume.density(origins[ray_idx] + dirs[ray_idx] * mid[:, None])

        return self.occupancy.sampling(
            origins,
            dirs,
            sigma_fn=sigma_fn,
            t_min=t_in,
            t_max=t_out,
            render_step_size=step,
            stratified=self.training and cfg.stratified,
        )

    def _shade_packed(
        self,
        volume: RadianceVolume,
        origins: Tensor,
        dirs: Tensor,
        z_per_t: Tensor,
        ray_idx: Tensor,
        t_starts: Tensor,
        t_ends: Tensor,
    ) -> Tensor:
        nerfacc, n = self._nerfacc, origins.shape[0]
        mid = 0.5 * (t_starts + t_ends)
        sigma, rgb = volume.query(origins[ray_idx] + dirs[ray_idx] * mid[:, None])
        weights, _, _ = nerfacc.render_weight_from_density(
            t_starts, t_ends, sigma, ray_indices=ray_idx, n_rays=n
        )
        color = nerfacc.accumulate_along_rays(weights, rgb, ray_idx, n)
        alpha = nerfacc.accumulate_along_rays(weights, None, ray_idx, n)
        z = (mid * z_per_t[ray_idx])[:, None].to(sigma)
        depth = nerfacc.accumulate_along_rays(weights, z, ray_idx, n)
        return torch.cat([color, alpha, depth], -1)

    # -------------------------------------------------------------- render
    def forward(self, volume: RadianceVolume, cameras: Cameras, background: Tensor) -> RenderOutput:
        """Render ``volume`` from every camera.

        Args:
            volume: The radiance field at one instant (e.g. ``NeRFField.at(t, cond)``).
            cameras: ``C`` cameras sharing one image size.
            background: ``(3,)`` background colour in ``[0, 1]``.

        Returns:
            :class:`RenderOutput` with ``rgb`` ``(C, H, W, 3)``, ``alpha`` and ``depth``
            ``(C, H, W, 1)`` and empty ``means2d`` / ``radii``.

        Raises:
            RuntimeError: The field has no bounds yet.
            ValueError: ``background`` is not ``(3,)``.
        """
        if not isinstance(volume, RadianceVolume):
            raise TypeError(
                "VolumeRenderer renders a radiance field at one instant (NeRFField.at(t)), got "
                f"{type(volume).__name__}; Gaussians go through the Gaussian renderers"
            )
        background = torch.as_tensor(background)
        if background.shape != (3,):
            raise ValueError(
                f"VolumeRenderer: background must have shape (3,), got {tuple(background.shape)}"
            )
        c, h, w = len(cameras), cameras.height, cameras.width
        origins, dirs, z_per_t = camera_rays(cameras)
        t_in, t_out, hit = self.ray_bounds(volume, origins, dirs)
        dtype = volume.aabb.dtype
        idx = hit.nonzero().squeeze(1)
        acc = torch.zeros(origins.shape[0], 5, dtype=dtype, device=origins.device)
        if idx.numel() > 0:
            o, d, zt = origins[idx], dirs[idx], z_per_t[idx]
            ti, to = t_in[idx], t_out[idx]
            chunk = self.cfg.ray_chunk
            parts = []
            for s in range(0, idx.numel(), chunk):
                sl = slice(s, s + chunk)
                if self.occupancy is not None:
                    ray_idx, t0, t1 = self._occupancy_intervals(
                        volume, o[sl], d[sl], ti[sl], to[sl]
                    )
                    part = self._run_chunk(
                        self._shade_packed, volume, o[sl], d[sl], zt[sl], ray_idx, t0, t1
                    )
                else:
                    t0, t1, ts = self.sample_intervals(volume, o[sl], d[sl], ti[sl], to[sl])
                    part = self._run_chunk(self._shade, volume, o[sl], d[sl], zt[sl], t0, t1, ts)
                parts.append(part)
            shaded = torch.cat(parts) if len(parts) > 1 else parts[0]
            acc = acc.index_put((idx,), shaded.to(dtype))
        acc = acc.reshape(c, h, w, 5)
        alpha = acc[..., 3:4]
        rgb = acc[..., :3] + (1.0 - alpha) * background.to(acc)
        has_alpha = alpha > _ALPHA_EPS
        depth = torch.where(
            has_alpha, acc[..., 4:5] / torch.where(has_alpha, alpha, torch.ones_like(alpha)), 0.0
        )
        empty = torch.zeros(c, 0, dtype=dtype, device=acc.device)
        return RenderOutput(
            rgb=rgb,
            alpha=alpha,
            depth=depth,
            means2d=empty[..., None].expand(c, 0, 2),
            radii=empty.to(torch.int32),
        )

    def extra_repr(self) -> str:
        cfg = self.cfg
        return (
            f"sampler={cfg.sampler!r}, samples_per_ray={cfg.samples_per_ray}, "
            f"ray_chunk={cfg.ray_chunk}, checkpoint_chunks={cfg.checkpoint_chunks}"
        )
