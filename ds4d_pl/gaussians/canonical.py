"""Canonical (time-independent) 3D Gaussians and their initialisation.

The module stores *raw* per-Gaussian tables (unconstrained values that Adam optimises) and turns
them into activated :class:`~ds4d_pl.render.base.GaussianParams` on demand. Every table has the
Gaussian count as its first dimension, which is what lets the densification strategy
(:mod:`ds4d_pl.gaussians.densify`) resize them all in lock-step.

Invariants are locked by ``tests/test_gaussians.py``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ds4d_pl.gaussians.mesh_io import read_mesh, sample_surface
from ds4d_pl.render.base import GaussianParams, rgb_to_sh0

# Smallest isotropic scale an initial Gaussian gets, so coincident points do not give log(0).
_MIN_INIT_SCALE = 1e-7


def knn_mean_distance(points: Tensor, k: int = 3, chunk: int = 2048) -> Tensor:
    """Mean distance of every point to its ``k`` nearest other points.

    Computed in row chunks with :func:`torch.cdist`, so memory stays ``O(chunk · P)`` and 30k
    points are fine on CPU.

    Args:
        points: ``(P, 3)`` positions, ``P >= 2``.
        k: Neighbours to average (clamped to ``P - 1``).
        chunk: Rows of the distance matrix held at once.

    Returns:
        ``(P,)`` mean neighbour distances.
    """
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"knn_mean_distance: points must be (P, 3), got {tuple(points.shape)}")
    p = points.shape[0]
    if p < 2:
        raise ValueError("knn_mean_distance needs at least 2 points")
    k = min(k, p - 1)
    pts = points.detach().float()
    out = torch.empty(p, dtype=pts.dtype, device=pts.device)
    for start in range(0, p, chunk):
        block = pts[start : start + chunk]
        d = torch.cdist(block, pts)
        # The point itself is at distance 0; take k+1 smallest and drop the first.
        nearest = torch.topk(d, k + 1, dim=1, largest=False).values[:, 1:]
        out[start : start + chunk] = nearest.mean(dim=1)
    return out


def normalize_points(points: Tensor, target_radius: float) -> Tensor:
    """Centre points on their bounding-box centre and rescale them into a ball.

    After the call the farthest point lies exactly ``target_radius`` from the origin, which is
    where objects sit in the Zero123 protocol, so an arbitrary mesh lands inside the object's
    bounds.

    Args:
        points: ``(P, 3)`` positions.
        target_radius: Radius of the ball to fit into (> 0).

    Returns:
        ``(P, 3)`` normalised positions (a new tensor).
    """
    if points.ndim != 2 or points.shape[1] != 3 or points.shape[0] == 0:
        raise ValueError(f"normalize_points: points must be (P>0, 3), got {tuple(points.shape)}")
    if target_radius <= 0:
        raise ValueError(f"normalize_points: target_radius must be > 0, got {target_radius}")
    centre = (points.amin(dim=0) + points.amax(dim=0)) / 2
    centred = points - centre
    radius = centred.norm(dim=1).max()
    if radius <= 0:
        return centred
    return centred * (target_radius / radius)


class CanonicalGaussians(nn.Module):
    """Per-Gaussian parameter tables of the canonical (time-independent) Gaussians.

    Tables (all raw, first dimension ``N``):
        ``means (N, 3)``, ``quats (N, 4)`` as ``(w, x, y, z)`` not normalised,
        ``log_scales (N, 3)``, ``logit_opacities (N,)``, ``sh_dc (N, 1, 3)``,
        ``sh_rest (N, K - 1, 3)`` with ``K = (sh_degree + 1) ** 2``.

    Loading a state dict resizes the tables to the checkpoint's shapes first, so a module built
    with any count can resume a densified run.

    Args:
        means: ``(N, 3)`` initial centres.
        quats: ``(N, 4)`` initial rotations (w, x, y, z).
        log_scales: ``(N, 3)`` initial log standard deviations.
        logit_opacities: ``(N,)`` initial logit opacities.
        sh_dc: ``(N, 1, 3)`` initial DC colour coefficients.
        sh_rest: ``(N, K - 1, 3)`` initial higher-band coefficients.
    """

    TABLES: tuple[str, ...] = (
        "means",
        "quats",
        "log_scales",
        "logit_opacities",
        "sh_dc",
        "sh_rest",
    )
    #: Tables a deformation field may offset (:meth:`deformed`); the field's delta keys.
    DEFORMABLE: tuple[str, ...] = ("means", "quats", "log_scales", "logit_opacities", "sh_dc")

    def __init__(
        self,
        means: Tensor,
        quats: Tensor,
        log_scales: Tensor,
        logit_opacities: Tensor,
        sh_dc: Tensor,
        sh_rest: Tensor,
    ) -> None:
        super().__init__()
        tables = {
            "means": means,
            "quats": quats,
            "log_scales": log_scales,
            "logit_opacities": logit_opacities,
            "sh_dc": sh_dc,
            "sh_rest": sh_rest,
        }
        self._check_tables(tables)
        for name, value in tables.items():
            self.register_parameter(name, nn.Parameter(value.detach().clone().float()))
        #: Bumped whenever the tables are replaced or loaded. Per-Gaussian side tables kept
        #: elsewhere (e.g. last deformed positions) record the version they were computed at, so
        #: a densification event that clones as many Gaussians as it prunes, leaving N unchanged,
        #: still invalidates them.
        self.version = 0

    # ------------------------------------------------------------------ validation
    @staticmethod
    def _check_tables(tables: Mapping[str, Tensor]) -> None:
        n = tables["means"].shape[0]
        trailing = {
            "means": (3,),
            "quats": (4,),
            "log_scales": (3,),
            "logit_opacities": (),
            "sh_dc": (1, 3),
        }
        for name, tail in trailing.items():
            shape = tuple(tables[name].shape)
            if shape != (n, *tail):
                raise ValueError(f"CanonicalGaussians.{name} must be {(n, *tail)}, got {shape}")
        rest = tuple(tables["sh_rest"].shape)
        if len(rest) != 3 or rest[0] != n or rest[2] != 3:
            raise ValueError(f"CanonicalGaussians.sh_rest must be (N, K-1, 3), got {rest}")
        k = rest[1] + 1
        if math.isqrt(k) ** 2 != k:
            raise ValueError(f"CanonicalGaussians.sh_rest has {rest[1]} bands; K={k} not a square")

    # ------------------------------------------------------------------ properties
    @property
    def num_gaussians(self) -> int:
        """Current number of Gaussians ``N``."""
        return self.means.shape[0]

    def __len__(self) -> int:
        return self.num_gaussians

    @property
    def sh_degree(self) -> int:
        """Spherical-harmonics degree implied by ``sh_rest``."""
        return math.isqrt(self.sh_rest.shape[1] + 1) - 1

    def extent(self) -> float:
        """Scene scale: largest distance of a centre from the centres' mean.

        Used to scale the position learning rate and the densification size thresholds.
        Returns 1.0 for a degenerate set (fewer than 2 distinct centres) so thresholds stay finite.
        """
        with torch.no_grad():
            if self.num_gaussians == 0:
                return 1.0
            m = self.means.detach()
            r = float((m - m.mean(dim=0)).norm(dim=1).max())
        return r if r > 0 and math.isfinite(r) else 1.0

    # ------------------------------------------------------------------ activation
    def activated(
        self,
        means: Tensor | None = None,
        quats: Tensor | None = None,
        log_scales: Tensor | None = None,
        logit_opacities: Tensor | None = None,
        sh_dc: Tensor | None = None,
    ) -> GaussianParams:
        """Activated Gaussians; any raw table can be overridden (e.g. by deformed values).

        Args:
            means: Optional raw ``(N, 3)`` centres instead of ``self.means``.
            quats: Optional raw ``(N, 4)`` rotations instead of ``self.quats``.
            log_scales: Optional ``(N, 3)`` log-scales instead of ``self.log_scales``.
            logit_opacities: Optional ``(N,)`` logits instead of ``self.logit_opacities``.
            sh_dc: Optional ``(N, 1, 3)`` DC colour instead of ``self.sh_dc``.

        Returns:
            Normalised quaternions, ``exp`` scales, ``sigmoid`` opacities and ``sh_dc`` /
            ``sh_rest`` concatenated into ``(N, K, 3)``.
        """
        means = self.means if means is None else means
        quats = self.quats if quats is None else quats
        log_scales = self.log_scales if log_scales is None else log_scales
        logit_opacities = self.logit_opacities if logit_opacities is None else logit_opacities
        sh_dc = self.sh_dc if sh_dc is None else sh_dc
        return GaussianParams(
            means=means,
            quats=nn.functional.normalize(quats, dim=-1, eps=1e-12),
            scales=torch.exp(log_scales),
            opacities=torch.sigmoid(logit_opacities),
            sh=torch.cat([sh_dc, self.sh_rest], dim=1),
        )

    def deformed(self, deltas: Mapping[str, Tensor]) -> GaussianParams:
        """Activated Gaussians after offsetting raw tables by a deformation field's deltas.

        Args:
            deltas: Table name (one of :attr:`DEFORMABLE`) → raw-space offset of that table's
                shape: positions, unnormalised quaternions, log-scales, logit-opacities and the
                SH DC colour are each offset additively; tables without a delta are unchanged.

        Returns:
            :meth:`activated` of the offset tables.

        Raises:
            KeyError: A key that is not a deformable table.
            ValueError: A delta whose shape differs from its table's.
        """
        unknown = set(deltas) - set(self.DEFORMABLE)
        if unknown:
            raise KeyError(
                f"deformed: unknown delta keys {sorted(unknown)}; deformable tables are "
                f"{self.DEFORMABLE}"
            )
        raw = {}
        for name, delta in deltas.items():
            base = getattr(self, name)
            if delta.shape != base.shape:
                raise ValueError(
                    f"deformed: delta {name!r} has shape {tuple(delta.shape)}, expected "
                    f"{tuple(base.shape)}"
                )
            raw[name] = base + delta
        return self.activated(**raw)

    def raw_tables(self) -> dict[str, Tensor]:
        """Detached copies of the raw tables, keyed by :attr:`TABLES` (e.g. for PLY export)."""
        return {name: getattr(self, name).detach().clone() for name in self.TABLES}

    # ------------------------------------------------------------------ densification
    def replace_tables(self, new: Mapping[str, Tensor]) -> dict[str, nn.Parameter]:
        """Swap some or all tables for new tensors (which may have a different ``N``).

        Tensors that are not already Parameters are wrapped in new ones, keeping each table's
        ``requires_grad``. The optimizer is *not* touched; the densification strategy does that.

        Args:
            new: Table name → replacement tensor.

        Returns:
            The new Parameters, keyed like ``new``.

        Raises:
            KeyError: On an unknown table name.
            ValueError: If the tables would not all share one ``N`` or have wrong trailing shapes.
        """
        unknown = set(new) - set(self.TABLES)
        if unknown:
            raise KeyError(f"replace_tables: unknown tables {sorted(unknown)}; known {self.TABLES}")
        merged = {name: new.get(name, getattr(self, name)) for name in self.TABLES}
        counts = {name: int(t.shape[0]) for name, t in merged.items()}
        if len(set(counts.values())) != 1:
            raise ValueError(f"replace_tables: tables would disagree on N: {counts}")
        self._check_tables(merged)
        out: dict[str, nn.Parameter] = {}
        for name, value in new.items():
            old = getattr(self, name)
            if isinstance(value, nn.Parameter):
                param = value
            else:
                param = nn.Parameter(value.detach(), requires_grad=old.requires_grad)
            self._parameters[name] = param
            out[name] = param
        self.version += 1
        return out

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
        # Resize first so the default copy_ succeeds whatever N (or SH degree) the checkpoint has.
        for name in self.TABLES:
            key = prefix + name
            if key not in state_dict:
                continue
            src = state_dict[key]
            old = self._parameters[name]
            if old is not None and tuple(src.shape) != tuple(old.shape) and src.ndim == old.ndim:
                self._parameters[name] = nn.Parameter(
                    torch.empty(src.shape, dtype=old.dtype, device=old.device),
                    requires_grad=old.requires_grad,
                )
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        self.version += 1

    # ------------------------------------------------------------------ constructors
    @classmethod
    def empty(cls, sh_degree: int = 0) -> CanonicalGaussians:
        """Zero Gaussians: a placeholder whose tables take their size from a loaded state dict.

        Args:
            sh_degree: SH degree (0..3); a checkpoint of another degree still loads.

        Returns:
            Gaussians with ``N = 0``.
        """
        if not 0 <= sh_degree <= 3:
            raise ValueError(f"empty: sh_degree must be in 0..3, got {sh_degree}")
        k = (sh_degree + 1) ** 2
        return cls(
            means=torch.zeros(0, 3),
            quats=torch.zeros(0, 4),
            log_scales=torch.zeros(0, 3),
            logit_opacities=torch.zeros(0),
            sh_dc=torch.zeros(0, 1, 3),
            sh_rest=torch.zeros(0, k - 1, 3),
        )

    @classmethod
    def from_points(
        cls,
        points: Tensor,
        colors: Tensor | None = None,
        sh_degree: int = 0,
        init_opacity: float = 0.1,
    ) -> CanonicalGaussians:
        """Isotropic Gaussians centred on points.

        Each scale is the mean distance to the 3 nearest neighbours (3DGS rule), so Gaussians
        just cover the gaps between points. Rotations are identity, higher SH bands zero.

        Args:
            points: ``(P, 3)`` centres, ``P >= 1``.
            colors: Optional ``(P, 3)`` colours in ``[0, 1]``; mid grey when absent.
            sh_degree: SH degree (0..3).
            init_opacity: Starting opacity in ``(0, 1)``.

        Returns:
            The Gaussians.
        """
        if points.ndim != 2 or points.shape[1] != 3 or points.shape[0] == 0:
            raise ValueError(f"from_points: points must be (P>0, 3), got {tuple(points.shape)}")
        if not torch.isfinite(points).all():
            raise ValueError("from_points: points contain NaN or inf")
        if colors is not None and tuple(colors.shape) != tuple(points.shape):
            raise ValueError(
                f"from_points: colors must be {tuple(points.shape)}, got {tuple(colors.shape)}"
            )
        if not 0 <= sh_degree <= 3:
            raise ValueError(f"from_points: sh_degree must be in 0..3, got {sh_degree}")
        if not 0.0 < init_opacity < 1.0:
            raise ValueError(f"from_points: init_opacity must be in (0, 1), got {init_opacity}")
        points = points.detach().float()
        n = points.shape[0]
        # A single point has no neighbours; give it unit size (callers may rescale).
        scale = knn_mean_distance(points, k=3) if n >= 2 else torch.ones(1)
        scale = scale.clamp_min(_MIN_INIT_SCALE)
        if colors is None:
            colors = torch.full_like(points, 0.5)
        colors = colors.detach().float().clamp(0.0, 1.0)
        k = (sh_degree + 1) ** 2
        quats = torch.zeros(n, 4)
        quats[:, 0] = 1.0
        return cls(
            means=points,
            quats=quats,
            log_scales=scale.log()[:, None].repeat(1, 3),
            logit_opacities=torch.full((n,), math.log(init_opacity / (1 - init_opacity))),
            sh_dc=rgb_to_sh0(colors)[:, None, :],
            sh_rest=torch.zeros(n, k - 1, 3),
        )

    @classmethod
    def random_in_sphere(
        cls,
        n: int,
        radius: float,
        sh_degree: int = 0,
        init_opacity: float = 0.1,
        generator: torch.Generator | None = None,
    ) -> CanonicalGaussians:
        """Gaussians uniform in a ball around the origin with random colours.

        Scales follow the same nearest-neighbour rule as :meth:`from_points` (for a uniform ball
        that is about ``radius / n^(1/3)``), so both inits start equally "solid".

        Args:
            n: Number of Gaussians (>= 1).
            radius: Ball radius (> 0).
            sh_degree: SH degree (0..3).
            init_opacity: Starting opacity in ``(0, 1)``.
            generator: Random generator; equal seeds give equal Gaussians.

        Returns:
            The Gaussians.
        """
        if n < 1:
            raise ValueError(f"random_in_sphere: n must be >= 1, got {n}")
        if radius <= 0:
            raise ValueError(f"random_in_sphere: radius must be > 0, got {radius}")
        direction = nn.functional.normalize(torch.randn(n, 3, generator=generator), dim=1)
        # Uniform in volume: the radius CDF is (r/R)^3.
        r = radius * torch.rand(n, 1, generator=generator).pow(1.0 / 3.0)
        points = direction * r
        colors = torch.rand(n, 3, generator=generator)
        gaussians = cls.from_points(points, colors, sh_degree=sh_degree, init_opacity=init_opacity)
        if n == 1:
            with torch.no_grad():
                gaussians.log_scales.fill_(math.log(radius))
        return gaussians

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        num_samples: int,
        sh_degree: int = 0,
        init_opacity: float = 0.1,
        normalize_radius: float | None = None,
        generator: torch.Generator | None = None,
    ) -> CanonicalGaussians:
        """Gaussians from a point cloud or a mesh file.

        * A mesh (``.ply`` with a ``face`` element, ``.obj`` with ``f`` lines, ``.glb``) is
          sampled area-uniformly with ``num_samples`` points; vertex colours are interpolated,
          a GLB's base-colour texture is looked up at each sample (``gaussians/mesh_io.py``).
        * A point cloud uses its points; if it has more than ``num_samples``, a random subset of
          ``num_samples`` is kept.
        * Colours: PLY ``red/green/blue`` (uchar 0..255 or float 0..1), OBJ ``v x y z r g b``;
          mid grey when absent.

        Args:
            path: ``.ply``, ``.obj`` or ``.glb`` file.
            num_samples: Surface samples for a mesh, upper bound for a point cloud.
            sh_degree: SH degree (0..3).
            init_opacity: Starting opacity.
            normalize_radius: If set, recentre and rescale the points into a ball of this radius
                (:func:`normalize_points`).
            generator: Random generator for the samples.

        Returns:
            The Gaussians.

        Raises:
            FileNotFoundError: The file does not exist.
            ValueError: The content cannot be parsed (the message names the file).
            NotImplementedError: Unsupported format (e.g. ``.fbx``).
        """
        path = Path(path)
        if num_samples < 1:
            raise ValueError(f"from_file: num_samples must be >= 1, got {num_samples}")
        mesh = read_mesh(path)
        if mesh.faces is not None:
            try:
                points, colors = sample_surface(mesh, num_samples, generator)
            except ValueError as err:
                raise ValueError(f"{path}: {err}") from err
        else:
            points, colors = mesh.verts, mesh.colors
            if points.shape[0] > num_samples:
                keep = torch.randperm(points.shape[0], generator=generator)[:num_samples]
                points = points[keep]
                colors = colors[keep] if colors is not None else None
        if normalize_radius is not None:
            points = normalize_points(points, normalize_radius)
        return cls.from_points(points, colors, sh_degree=sh_degree, init_opacity=init_opacity)
