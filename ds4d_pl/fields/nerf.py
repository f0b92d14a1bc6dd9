"""A dynamic NeRF: a space-time radiance field over ``(x, y, z, t)``.

The field reuses the deformation field's encodings (:func:`~ds4d_pl.fields.deformation.
build_encoding`: HexPlane or 4D hash grid, configured by a :class:`~ds4d_pl.config.FieldConfig`),
optionally concatenates a per-point conditioning feature (DS4D's fused frame feature, evaluated at
the ray samples) and maps it through a small ReLU trunk to

* a **density** ``sigma = act(raw + density_bias)`` (``exp`` with a clamped gradient, ``softplus``
  or ``relu``), in inverse world units, and
* a **colour** ``rgb = sigmoid(colour_head(trunk))`` in ``[0, 1]`` (not view-dependent: DS4D's
  objects are supervised by a handful of views and score-distillation renders, where view-dependent
  colour mostly learns to cheat).

The field is only meaningful inside its box: the encoding clamps queries outside it and the volume
renderer (:mod:`ds4d_pl.render.volume`) only samples inside it. It therefore has no usable bounds
until :meth:`NeRFField.set_bounds` / :meth:`NeRFField.set_aabb` was called (or ``bounds`` /
``NeRFConfig.aabb`` was given), and everything that needs the box raises until then.

:meth:`NeRFField.at` binds the field to one instant (and a conditioning function of that instant)
as a :class:`NeRFAtTime`, which implements the :class:`RadianceVolume` protocol the renderer and the
density exports consume. With ``NeRFConfig.cond_resolution`` set, the conditioning function is
evaluated once per instant on a grid over the box (:class:`GridCondition`) and interpolated at the
ray samples, instead of at every sample. Invariants are locked by ``tests/test_nerf.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from ds4d_pl.config import FieldConfig
from ds4d_pl.fields.deformation import build_encoding
from ds4d_pl.fields.hexplane import aabb_from_points, check_query
from ds4d_pl.fields.trunk import check_cond, relu_stack

DensityActivation = Literal["exp", "softplus", "relu"]
Sampler = Literal["uniform", "proposal", "occupancy"]

DENSITY_ACTIVATIONS: tuple[str, ...] = ("exp", "softplus", "relu")
SAMPLERS: tuple[str, ...] = ("uniform", "proposal", "occupancy")

# exp's gradient is evaluated at most here (and its value too, so densities stay finite): exp(15)
# ~ 3.3e6 per world unit is already opaque over a micrometre.
_EXP_CLAMP = 15.0


@dataclass
class NeRFConfig:
    """Dynamic NeRF: encoding, heads and how rays are sampled.

    Attributes:
        grid: The space-time encoding, read through
            :func:`~ds4d_pl.fields.deformation.build_encoding`: ``encoding`` and its sizes
            (``plane_resolution`` ... ``hash_backend``). The deformation-MLP keys of that
            dataclass (``hidden``, ``depth``, ``fusion_norm``, ``cond_gate``) are not read here
            (a conditioned NeRF concatenates its two inputs as they are); ``deform_opacity`` and
            ``deform_color`` must stay off (they mean nothing for a radiance field).
        hidden: Width of the trunk and of the colour head.
        depth: Hidden layers of the shared trunk (after the optional conditioning fusion).
        color_depth: Hidden layers of the colour head.
        density_activation: ``exp`` (truncated-gradient exponential, the usual choice for grid
            NeRFs: density spans orders of magnitude), ``softplus`` or ``relu``.
        density_bias: Added to the raw density before the activation; sets the initial density
            (``exp(-1) = 0.37`` per world unit: a half-transparent initial box of size ~1).
        samples_per_ray: Samples per ray that are shaded (density and colour).
        sampler: ``uniform`` (stratified while training, midpoints otherwise, between the ray's
            entry into and exit from the bounds), ``proposal`` (a density-only pass of
            ``proposal_samples`` uniform samples without gradient, then ``samples_per_ray``
            samples placed by inverse-CDF sampling of its weights; runs on CPU) or
            ``occupancy`` (nerfacc's occupancy-grid estimator; needs CUDA, a compiled nerfacc and
            a fixed ``aabb``).
        proposal_samples: Samples of the density-only pass of the ``proposal`` sampler.
        proposal_uniform: Fraction of the ``proposal`` sampler's probability mass spread
            uniformly along the ray, so regions the proposal pass thinks empty still get samples
            (and the field can grow density there).
        stratified: Jitter the samples while the renderer is in training mode.
        near: Closest distance along a ray (world units) that is sampled.
        far: Farthest distance along a ray that is sampled.
        aabb: Optional fixed box ``[xmin, ymin, zmin, xmax, ymax, zmax]``; ``None`` (default):
            the box is fitted later with :meth:`NeRFField.set_bounds` (e.g. to the scene's
            initial points).
        bounds_margin: Fraction of the fitted box's size added on each side when the box is
            fitted to initial points (``DS4DModel.initialise``). Wider than the deformation
            field's 0.1: the initial points show one frame, and a NeRF has no density outside
            its box, so parts that move beyond that frame's extent would be cut off.
        sphere_radius: Optional ball, centred on the box, that further restricts sampling (rays
            are sampled where they are inside both); ``None``: the box alone.
        cond_resolution: Vertices per axis of the grid over the box on which a conditioned
            field's features are evaluated once per instant (:class:`GridCondition`) and
            trilinearly interpolated at the ray samples. DS4D's conditioner projects every point
            into every training view, so running it at every sample costs samples / R^3 times
            more (~260k samples per 64x64 camera at 64 samples per ray against 32^3 = 33k
            vertices), while its features vary on the scale of an encoder token (1/16 of the
            image), coarser than a 32^3 grid over the object. ``None``: run the conditioner at
            every sample (exact, for a GPU).
        ray_chunk: Rays shaded at once; bounds the memory of one forward pass.
        checkpoint_chunks: Recompute each chunk's forward pass during backward (activation
            checkpointing): training memory then grows with the image only through the per-ray
            outputs, at the cost of a second forward pass.
        occupancy_resolution: Cells per axis of the occupancy grid (``occupancy`` sampler).
        occupancy_threshold: Occupancy (density x step) below which a cell is skipped.
        occupancy_every: Update the occupancy grid every this many training renders.
    """

    grid: FieldConfig = field(default_factory=FieldConfig)
    hidden: int = 64
    depth: int = 1
    color_depth: int = 1
    density_activation: DensityActivation = "exp"
    density_bias: float = -1.0
    samples_per_ray: int = 64
    sampler: Sampler = "uniform"
    proposal_samples: int = 64
    proposal_uniform: float = 0.1
    stratified: bool = True
    near: float = 0.05
    far: float = 100.0
    aabb: list[float] | None = None
    bounds_margin: float = 0.25
    sphere_radius: float | None = None
    cond_resolution: int | None = 32
    ray_chunk: int = 8192
    checkpoint_chunks: bool = False
    occupancy_resolution: int = 64
    occupancy_threshold: float = 0.01
    occupancy_every: int = 16

    def __post_init__(self) -> None:
        if isinstance(self.grid, dict):  # a plain mapping from YAML / jsonargparse
            self.grid = FieldConfig(**self.grid)
        if self.grid.deform_opacity or self.grid.deform_color:
            raise ValueError(
                "NeRFConfig.grid: deform_opacity / deform_color configure the Gaussian "
                "deformation field and mean nothing for a radiance field; leave them false"
            )
        if self.density_activation not in DENSITY_ACTIVATIONS:
            raise ValueError(
                f"NeRFConfig.density_activation must be one of {DENSITY_ACTIVATIONS}, got "
                f"{self.density_activation!r}"
            )
        if self.sampler not in SAMPLERS:
            raise ValueError(f"NeRFConfig.sampler must be one of {SAMPLERS}, got {self.sampler!r}")
        for name in ("hidden", "samples_per_ray", "proposal_samples", "ray_chunk"):
            if getattr(self, name) < 1:
                raise ValueError(f"NeRFConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("depth", "color_depth"):
            if getattr(self, name) < 0:
                raise ValueError(f"NeRFConfig.{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.proposal_uniform <= 1.0:
            raise ValueError(
                f"NeRFConfig.proposal_uniform must be in [0, 1], got {self.proposal_uniform}"
            )
        if not 0.0 <= self.near < self.far:
            raise ValueError(
                f"NeRFConfig: need 0 <= near < far, got near={self.near}, far={self.far}"
            )
        if self.aabb is not None:
            box = list(self.aabb)
            if len(box) != 6 or not all(box[i] < box[i + 3] for i in range(3)):
                raise ValueError(
                    "NeRFConfig.aabb must be [xmin, ymin, zmin, xmax, ymax, zmax] with min < max, "
                    f"got {self.aabb}"
                )
        if self.cond_resolution is not None and self.cond_resolution < 2:
            raise ValueError(
                "NeRFConfig.cond_resolution must be >= 2 (grid vertices per axis) or null "
                f"(condition every ray sample), got {self.cond_resolution}"
            )
        if self.bounds_margin < 0:
            raise ValueError(f"NeRFConfig.bounds_margin must be >= 0, got {self.bounds_margin}")
        if self.sphere_radius is not None and self.sphere_radius <= 0:
            raise ValueError(f"NeRFConfig.sphere_radius must be > 0, got {self.sphere_radius}")
        if self.occupancy_resolution < 1 or self.occupancy_every < 1:
            raise ValueError(
                "NeRFConfig: occupancy_resolution and occupancy_every must be >= 1, got "
                f"{self.occupancy_resolution} and {self.occupancy_every}"
            )


class _TruncExp(torch.autograd.Function):
    """``exp(x)`` whose value and gradient are evaluated at ``min(x, 15)``.

    A plain exp overflows to inf (and its gradient to NaN) as soon as one raw density strays
    high early in training; clamping the forward value too keeps every density finite.
    """

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: Tensor) -> Tensor:
        out = torch.exp(x.clamp(max=_EXP_CLAMP))
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> Tensor:
        (out,) = ctx.saved_tensors
        # Unlike clamp-then-exp, the gradient does not vanish above the clamp: a density that
        # overshot can still be pulled down.
        return grad * out


def activate_density(raw: Tensor, activation: str) -> Tensor:
    """Non-negative density from a raw network output (see :data:`DENSITY_ACTIVATIONS`)."""
    if activation == "exp":
        return _TruncExp.apply(raw)
    if activation == "softplus":
        return nn.functional.softplus(raw)
    if activation == "relu":
        return torch.relu(raw)
    raise ValueError(f"unknown density activation {activation!r}; use one of {DENSITY_ACTIVATIONS}")


@runtime_checkable
class RadianceVolume(Protocol):
    """What the volume renderer and the density exports read: a radiance field at one instant.

    Attributes:
        aabb: ``(2, 3)`` box ``[min; max]`` outside which the density is taken to be zero.
    """

    @property
    def aabb(self) -> Tensor: ...

    def density(self, x: Tensor) -> Tensor:
        """``(N,)`` non-negative density at ``(N, 3)`` world points."""
        ...

    def query(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Density ``(N,)`` and colour ``(N, 3)`` in ``[0, 1]`` at ``(N, 3)`` world points."""
        ...


class NeRFField(nn.Module):
    """Space-time radiance field: ``(x, t[, cond]) -> (density, rgb)``.

    Args:
        cfg: Encoding, head sizes and density activation.
        cond_dim: Width of the optional per-point conditioning feature (0: none).
        bounds: Optional ``(2, 3)`` box ``[min; max]`` (overrides ``cfg.aabb``); without either,
            call :meth:`set_bounds` before rendering.

    Attributes:
        encoding: :class:`~ds4d_pl.fields.hexplane.HexPlane` or
            :class:`~ds4d_pl.fields.hashgrid.HashGrid4D`.
        fusion: ``Linear(encoding.out_dim + cond_dim, hidden)`` when ``cond_dim > 0``.
        trunk: ``depth`` x (``Linear`` -> ``ReLU``).
        density_head: ``Linear(width, 1)``.
        color_head: ``color_depth`` x (``Linear`` -> ``ReLU``), then ``Linear(., 3)``.
        has_bounds: Boolean buffer, saved in checkpoints: the box was set.
    """

    has_bounds: Tensor

    def __init__(self, cfg: NeRFConfig, cond_dim: int = 0, bounds: Tensor | None = None) -> None:
        super().__init__()
        if cond_dim < 0:
            raise ValueError(f"NeRFField: cond_dim must be >= 0, got {cond_dim}")
        self.cfg = cfg
        self.cond_dim = cond_dim
        if bounds is None and cfg.aabb is not None:
            bounds = torch.tensor(cfg.aabb, dtype=torch.float32).reshape(2, 3)
        self.encoding = build_encoding(cfg.grid, bounds)
        self.register_buffer("has_bounds", torch.tensor(bounds is not None))
        width = self.encoding.out_dim
        if cond_dim > 0:
            self.fusion: nn.Linear | None = nn.Linear(width + cond_dim, cfg.hidden)
            width = cfg.hidden
        else:
            self.fusion = None
        self.trunk, width = relu_stack(width, cfg.hidden, cfg.depth)
        self.density_head = nn.Linear(width, 1)
        color, width = relu_stack(width, cfg.hidden, cfg.color_depth)
        self.color_head = nn.Sequential(*color, nn.Linear(width, 3))
        self.density_activation = cfg.density_activation
        self.density_bias = float(cfg.density_bias)

    @property
    def out_dim(self) -> int:
        """Width of the encoding feature (before fusion)."""
        return self.encoding.out_dim

    @property
    def ready(self) -> bool:
        """Whether the box is set (rendering and exports need it)."""
        return bool(self.has_bounds)

    @property
    def aabb(self) -> Tensor:
        """``(2, 3)`` box ``[min; max]``.

        Raises:
            RuntimeError: The box was never set.
        """
        if not self.ready:
            raise RuntimeError(
                "NeRFField has no bounds yet: call field.set_bounds(points) (e.g. the scene's "
                "initial points), field.set_aabb(box), or set NeRFConfig.aabb, before rendering "
                "or exporting it"
            )
        return self.encoding.aabb

    def set_bounds(self, points: Tensor, margin: float = 0.1) -> None:
        """Fit the box to a point cloud (see :func:`~ds4d_pl.fields.hexplane.aabb_from_points`)."""
        self.set_aabb(aabb_from_points(points, margin))

    @torch.no_grad()
    def set_aabb(self, aabb: Tensor) -> None:
        """Set the box ``(2, 3)`` ``[min; max]`` directly."""
        self.encoding.set_aabb(aabb)
        self.has_bounds.fill_(True)

    def regularizers(self) -> dict[str, Tensor]:
        """The encoding's regularisers (``plane_tv``, ``time_smooth``, ``time_l1`` or none)."""
        return self.encoding.regularizers()

    def encoding_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the encoding (planes / hash tables)."""
        return self.encoding.parameters()

    def mlp_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the fusion layer, trunk and both heads."""
        for module in (self.fusion, self.trunk, self.density_head, self.color_head):
            if module is not None:
                yield from module.parameters()

    def _hidden(self, x: Tensor, t: Tensor | float, cond: Tensor | None) -> Tensor:
        feat = self.encoding(x, t)  # validates x and t
        check_cond(
            "NeRFField",
            cond,
            x.shape[0],
            self.cond_dim,
            "build it with NeRFField(cfg, cond_dim=...)",
        )
        if self.fusion is not None:
            assert cond is not None
            feat = self.fusion(torch.cat([feat, cond.to(feat.dtype)], dim=-1))
        return self.trunk(feat)

    def _density(self, hidden: Tensor) -> Tensor:
        raw = self.density_head(hidden).squeeze(-1) + self.density_bias
        return activate_density(raw, self.density_activation)

    def density(self, x: Tensor, t: Tensor | float, cond: Tensor | None = None) -> Tensor:
        """Density ``(N,)`` at ``(N, 3)`` points and time ``t`` (skips the colour head)."""
        return self._density(self._hidden(x, t, cond))

    def forward(
        self, x: Tensor, t: Tensor | float, cond: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Density and colour of points at time ``t``.

        Args:
            x: ``(N, 3)`` world positions.
            t: Time in ``[0, 1]``: a float, a one-element tensor, ``(N,)`` or ``(N, 1)``.
            cond: ``(N, cond_dim)`` conditioning feature; required iff ``cond_dim > 0``.

        Returns:
            ``sigma`` ``(N,)`` (>= 0, per world unit) and ``rgb`` ``(N, 3)`` in ``[0, 1]``.
        """
        hidden = self._hidden(x, t, cond)
        return self._density(hidden), torch.sigmoid(self.color_head(hidden))

    def at(self, t: Tensor | float, cond: Callable[[Tensor], Tensor] | None = None) -> NeRFAtTime:
        """The field at one instant, as a :class:`RadianceVolume`.

        Args:
            t: Time in ``[0, 1]`` (a float or a one-element tensor).
            cond: Maps ``(N, 3)`` world points to their ``(N, cond_dim)`` conditioning feature at
                time ``t`` (e.g. DS4D's conditioner bound to ``t``); required iff
                ``cond_dim > 0``. With ``cfg.cond_resolution`` set it is evaluated here, once,
                on the grid of :class:`GridCondition` (in the current grad mode), and the
                volume interpolates it.
        """
        if cond is not None and self.cfg.cond_resolution is not None and self.cond_dim > 0:
            cond = GridCondition(cond, self.aabb, self.cfg.cond_resolution)
        return NeRFAtTime(self, t, cond)

    def extra_repr(self) -> str:
        return (
            f"cond_dim={self.cond_dim}, density={self.density_activation}"
            f"(raw{self.density_bias:+g}), ready={self.ready}"
        )


class GridCondition:
    """A point-conditioning function sampled on a regular grid over a box, then interpolated.

    ``condition`` is evaluated once, at construction, at the ``resolution^3`` vertices of a grid
    spanning ``aabb`` (corners included); calling the object trilinearly interpolates those
    features at any points (clamped to the box). Trilinear interpolation reproduces an affine
    function exactly. Gradients reach whatever ``condition`` depends on through the vertex
    features, when it is built with grad enabled.

    Args:
        condition: ``(N, 3)`` points -> ``(N, D)`` features.
        aabb: ``(2, 3)`` box ``[min; max]``.
        resolution: Vertices per axis (``>= 2``).
    """

    def __init__(
        self, condition: Callable[[Tensor], Tensor], aabb: Tensor, resolution: int
    ) -> None:
        if resolution < 2:
            raise ValueError(f"GridCondition: resolution must be >= 2, got {resolution}")
        self.lo, self.hi = aabb[0].detach(), aabb[1].detach()
        self.resolution = resolution
        axes = [
            torch.linspace(float(self.lo[i]), float(self.hi[i]), resolution, device=aabb.device)
            for i in range(3)
        ]
        # Vertices indexed [iz, iy, ix]: grid_sample reads a (D, Z, Y, X) volume with (x, y, z)
        # coordinates.
        zz, yy, xx = torch.meshgrid(axes[2], axes[1], axes[0], indexing="ij")
        vertices = torch.stack([xx, yy, zz], -1).reshape(-1, 3)
        feats = condition(vertices)
        if feats.ndim != 2 or feats.shape[0] != vertices.shape[0]:
            raise ValueError(
                f"GridCondition: condition must map (N, 3) points to (N, D) features, got "
                f"{tuple(feats.shape)} for N={vertices.shape[0]}"
            )
        r = resolution
        self.volume = feats.t().reshape(1, feats.shape[1], r, r, r)

    @property
    def out_dim(self) -> int:
        return self.volume.shape[1]

    def __call__(self, x: Tensor) -> Tensor:
        """``(N, D)`` features interpolated at ``(N, 3)`` points."""
        g = (x.to(self.volume.dtype) - self.lo) / (self.hi - self.lo) * 2.0 - 1.0
        sampled = nn.functional.grid_sample(
            self.volume,
            g.reshape(1, 1, 1, -1, 3),
            mode="bilinear",
            padding_mode="border",
            align_corners=True,
        )  # (1, D, 1, 1, N)
        return sampled.reshape(self.out_dim, -1).t()


@dataclass
class NeRFAtTime:
    """A :class:`NeRFField` bound to one instant: implements :class:`RadianceVolume`.

    Attributes:
        field: The field.
        t: Time in ``[0, 1]``.
        cond: Optional function ``(N, 3) points -> (N, cond_dim)`` conditioning at ``t``.
    """

    field: NeRFField
    t: Tensor | float
    cond: Callable[[Tensor], Tensor] | None = None

    def __post_init__(self) -> None:
        if torch.as_tensor(self.t).numel() != 1:
            raise ValueError(
                f"NeRFAtTime: t must be one instant (a float or one-element tensor), got shape "
                f"{tuple(torch.as_tensor(self.t).shape)}"
            )
        if (self.cond is None) != (self.field.cond_dim == 0):
            raise ValueError(
                f"NeRFAtTime: the field has cond_dim={self.field.cond_dim} but cond is "
                f"{'None' if self.cond is None else 'given'}; pass a conditioning function iff "
                "cond_dim > 0"
            )

    @property
    def aabb(self) -> Tensor:
        return self.field.aabb

    def _cond(self, x: Tensor) -> Tensor | None:
        x, _ = check_query(x, self.t, "NeRFAtTime")
        return None if self.cond is None else self.cond(x)

    def density(self, x: Tensor) -> Tensor:
        return self.field.density(x, self.t, self._cond(x))

    def query(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.field(x, self.t, self._cond(x))
