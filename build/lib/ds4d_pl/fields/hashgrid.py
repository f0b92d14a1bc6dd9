"""Multi-resolution 4D hash encoding over ``(x, y, z, t)`` (Instant-NGP style).

Level ``l`` of ``L`` has ``N_l = floor(base · b^l)`` cells per axis with the geometric growth
``b = (max / base)^(1 / (L - 1))``, so ``N_l + 1`` vertices per axis. A level whose ``(N_l + 1)⁴``
vertices fit in its table is indexed densely (no collisions); finer levels hash the integer vertex
``c`` as ``(c_x·1 ⊕ c_y·π_1 ⊕ c_z·π_2 ⊕ c_t·π_3) mod 2^log2_size`` with the usual large primes.
Features are interpolated quadrilinearly from the 16 corners of the cell and concatenated across
levels: ``out_dim = levels · features_per_level``.

Positions are mapped into the unit cube by the same box as the HexPlane (clamped outside it, see
:mod:`ds4d_pl.fields.hexplane`), time ``t ∈ [0, 1]`` is used as is (clamped).

Backends: the pure-PyTorch path is the reference and is what the tests run. With
``backend="auto"`` and both ``tinycudann`` importable and CUDA available at construction time,
the encoding is a ``tcnn.Encoding`` with a ``HashGrid`` config of the same sizes instead (its
per-level resolutions follow tcnn's own rounding, so outputs are not bit-identical to the torch
path). A tcnn-backed grid only accepts CUDA inputs.

Invariants are locked by ``tests/test_fields.py``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from ds4d_pl.config import FieldConfig
from ds4d_pl.fields.hexplane import BoundedEncoding, check_query

#: Per-axis multipliers of the spatial hash (Teschner et al.; Instant-NGP's first four).
HASH_PRIMES: tuple[int, ...] = (1, 2654435761, 805459861, 3674653429)

BACKENDS = ("auto", "torch", "tcnn")

# Instant-NGP initialises the tables with tiny values so the encoding starts near zero.
_INIT_RANGE = 1e-4


def _import_tcnn() -> Any | None:
    try:
        import tinycudann as tcnn  # type: ignore[import-not-found]
    except (ImportError, OSError):  # OSError: wheel present but CUDA libraries missing
        return None
    return tcnn


def level_resolutions(levels: int, base_resolution: int, max_resolution: int) -> list[int]:
    """Cells per axis of every level (geometric growth from base to max).

    Args:
        levels: Number of levels (``>= 1``).
        base_resolution: Cells per axis of the coarsest level (``>= 1``).
        max_resolution: Cells per axis of the finest level (``>= base_resolution``).

    Returns:
        ``levels`` integers, non-decreasing, first ``base_resolution``.
    """
    if levels < 1:
        raise ValueError(f"HashGrid4D: levels must be >= 1, got {levels}")
    if base_resolution < 1 or max_resolution < base_resolution:
        raise ValueError(
            "HashGrid4D: need 1 <= base_resolution <= max_resolution, got "
            f"{base_resolution} and {max_resolution}"
        )
    growth = per_level_scale(levels, base_resolution, max_resolution)
    # The tiny epsilon keeps exact powers (e.g. 8·2³ = 64) from rounding down to 63.
    return [int(math.floor(base_resolution * growth**lvl + 1e-6)) for lvl in range(levels)]


def per_level_scale(levels: int, base_resolution: int, max_resolution: int) -> float:
    """Geometric growth factor ``b`` between consecutive levels."""
    if levels == 1:
        return 1.0
    return math.exp((math.log(max_resolution) - math.log(base_resolution)) / (levels - 1))


class HashGrid4D(BoundedEncoding):
    """4D multi-resolution hash encoding with quadrilinear interpolation.

    Args:
        levels: Number of resolution levels.
        features_per_level: Feature channels per level.
        log2_table_size: log2 of the (maximum) table size per level.
        base_resolution: Cells per axis of the coarsest level.
        max_resolution: Cells per axis of the finest level.
        bounds: Optional ``(2, 3)`` box ``[min; max]``.
        backend: ``"auto"`` (tcnn when importable and CUDA is available), ``"torch"`` or
            ``"tcnn"`` (fails if tinycudann is missing).

    Attributes:
        out_dim: ``levels * features_per_level``.
        backend: The backend actually in use, ``"torch"`` or ``"tcnn"``.
        table: Torch backend only: ``(sum of level table sizes, features_per_level)`` features,
            level ``l`` occupying rows ``offsets[l]:offsets[l + 1]``.
        resolutions: Torch backend only: cells per axis of every level.
        dense: Torch backend only: whether each level is indexed densely (no hashing).
    """

    corners: Tensor
    primes: Tensor

    def __init__(
        self,
        levels: int = 8,
        features_per_level: int = 2,
        log2_table_size: int = 15,
        base_resolution: int = 8,
        max_resolution: int = 128,
        bounds: Tensor | None = None,
        backend: str = "auto",
    ) -> None:
        super().__init__(bounds)
        if backend not in BACKENDS:
            raise ValueError(f"HashGrid4D: backend must be one of {BACKENDS}, got {backend!r}")
        if features_per_level < 1:
            raise ValueError(
                f"HashGrid4D: features_per_level must be >= 1, got {features_per_level}"
            )
        if not 4 <= log2_table_size <= 30:
            raise ValueError(f"HashGrid4D: log2_table_size must be in 4..30, got {log2_table_size}")
        self.levels = levels
        self.features_per_level = features_per_level
        self.log2_table_size = log2_table_size
        self.base_resolution = base_resolution
        self.max_resolution = max_resolution
        self.out_dim = levels * features_per_level
        res = level_resolutions(levels, base_resolution, max_resolution)

        tcnn = _import_tcnn()
        if backend == "tcnn" and tcnn is None:
            raise ImportError(
                "HashGrid4D(backend='tcnn') needs tinycudann (pip install "
                "git+https://github.com/NVlabs/tiny-cuda-nn/#subdirectory=bindings/torch); "
                "use backend='torch' or 'auto' without it"
            )
        use_tcnn = backend == "tcnn" or (
            backend == "auto" and tcnn is not None and torch.cuda.is_available()
        )
        self.backend = "tcnn" if use_tcnn else "torch"
        if use_tcnn:
            self.tcnn_encoding = tcnn.Encoding(
                n_input_dims=4,
                encoding_config={
                    "otype": "HashGrid",
                    "n_dims_to_encode": 4,
                    "n_levels": levels,
                    "n_features_per_level": features_per_level,
                    "log2_hashmap_size": log2_table_size,
                    "base_resolution": base_resolution,
                    "per_level_scale": per_level_scale(levels, base_resolution, max_resolution),
                },
            )
            return

        cap = 2**log2_table_size
        sizes = [min((r + 1) ** 4, cap) for r in res]
        offsets = [0]
        for s in sizes:
            offsets.append(offsets[-1] + s)
        # Plain Python lists: reading them per level must not cost a device sync.
        self.offsets = offsets
        self.resolutions = res
        self.dense = [(r + 1) ** 4 <= cap for r in res]
        bits = [[(k >> d) & 1 for d in range(4)] for k in range(16)]
        self.register_buffer("corners", torch.tensor(bits, dtype=torch.long), persistent=False)
        primes = torch.tensor(HASH_PRIMES, dtype=torch.long)
        self.register_buffer("primes", primes, persistent=False)
        self.table = nn.Parameter(
            torch.empty(offsets[-1], features_per_level).uniform_(-_INIT_RANGE, _INIT_RANGE)
        )

    @classmethod
    def from_config(cls, cfg: FieldConfig, bounds: Tensor | None = None) -> HashGrid4D:
        """Build from a :class:`~ds4d_pl.config.FieldConfig`."""
        return cls(
            levels=cfg.hash_levels,
            features_per_level=cfg.hash_features_per_level,
            log2_table_size=cfg.hash_log2_size,
            base_resolution=cfg.hash_base_resolution,
            max_resolution=cfg.hash_max_resolution,
            bounds=bounds,
            backend=cfg.hash_backend,
        )

    def unit_coords(self, x: Tensor, t: Tensor) -> Tensor:
        """``(N, 4)`` coordinates in ``[0, 1]⁴`` (positions by the box, time as is; clamped)."""
        return torch.cat([(self.normalize_positions(x) + 1.0) * 0.5, t.clamp(0.0, 1.0)], dim=-1)

    def level_indices(self, level: int, vertices: Tensor) -> Tensor:
        """Table rows of integer vertices of one level.

        Args:
            level: Level index.
            vertices: ``(..., 4)`` integer vertex coordinates in ``[0, N_l]``.

        Returns:
            ``(...)`` row indices into :attr:`table` (level offset included).
        """
        if self.dense[level]:
            side = self.resolutions[level] + 1
            strides = torch.tensor(
                [1, side, side**2, side**3], dtype=torch.long, device=vertices.device
            )
            local = (vertices * strides).sum(dim=-1)
        else:
            scaled = vertices * self.primes
            local = scaled[..., 0]
            for d in range(1, 4):
                local = torch.bitwise_xor(local, scaled[..., d])
            local = torch.bitwise_and(local, 2**self.log2_table_size - 1)
        return local + self.offsets[level]

    def _forward_torch(self, u: Tensor) -> Tensor:
        u = u.to(self.table.dtype)
        # A NaN coordinate would become a garbage integer index; look up a valid row instead and
        # return NaN for that point, as the HexPlane does, so the training loop sees the NaN.
        bad = ~torch.isfinite(u).all(dim=-1, keepdim=True)
        u = torch.where(bad, torch.zeros_like(u), u)
        feats = []
        for level in range(self.levels):
            res = self.resolutions[level]
            pos = u * res
            # Clamping the cell to res - 1 puts u = 1 on the far face of the last cell (frac = 1)
            # instead of on a non-existent cell beyond it.
            cell = pos.floor().clamp(0, res - 1)
            frac = pos - cell  # (N, 4) in [0, 1]
            vertices = cell.long()[:, None, :] + self.corners  # (N, 16, 4)
            rows = self.level_indices(level, vertices)  # (N, 16)
            corner_is_far = self.corners.bool()  # (16, 4)
            w = torch.where(corner_is_far, frac[:, None, :], 1.0 - frac[:, None, :]).prod(dim=-1)
            feats.append((self.table[rows] * w[..., None]).sum(dim=1))  # (N, F)
        feat = torch.cat(feats, dim=-1)
        return torch.where(bad, torch.full_like(feat, float("nan")), feat)

    def forward(self, x: Tensor, t: Tensor | float) -> Tensor:
        """Space-time features of points.

        Args:
            x: ``(N, 3)`` world positions.
            t: Time in ``[0, 1]``: a float, a one-element tensor, ``(N,)`` or ``(N, 1)``.

        Returns:
            ``(N, out_dim)`` features (float32 on the tcnn path too).
        """
        x, tt = check_query(x, t, "HashGrid4D.forward")
        u = self.unit_coords(x, tt)
        if self.backend == "tcnn":
            if not u.is_cuda:
                raise ValueError(
                    "HashGrid4D: this grid uses the tcnn backend and needs CUDA inputs, got "
                    f"device {u.device}; build it with backend='torch' for CPU"
                )
            return self.tcnn_encoding(u.float().contiguous()).float()
        return self._forward_torch(u)

    def regularizers(self) -> dict[str, Tensor]:
        """No regularisers for the hash grid (an empty dict, so the loss skips the terms)."""
        return {}

    def extra_repr(self) -> str:
        return (
            f"levels={self.levels}, features_per_level={self.features_per_level}, "
            f"log2_table_size={self.log2_table_size}, base_resolution={self.base_resolution}, "
            f"max_resolution={self.max_resolution}, backend={self.backend!r}, "
            f"out_dim={self.out_dim}"
        )
