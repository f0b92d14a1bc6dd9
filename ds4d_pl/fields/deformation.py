"""The deformation field: space-time encoding (+ optional conditioning) → per-Gaussian deltas.

``encoding(x, t)`` (HexPlane or 4D hash grid) is optionally concatenated with a per-Gaussian
conditioning feature (DS4D's fused frame feature) and mapped by a learnable linear fusion layer to
the MLP width (with ``fusion_norm: layernorm`` each of the two inputs is layer-normalised first, so
the HexPlane's small features are not drowned by the conditioning); a shared ReLU MLP follows,
then one small head per deformed table of
:class:`~ds4d_pl.gaussians.canonical.CanonicalGaussians` (the delta keys are the table names):

* ``means``: Δposition ``(N, 3)``;
* ``quats``: Δrotation ``(N, 4)``, added to the raw (unnormalised) quaternion;
* ``log_scales``: Δlog-scale ``(N, 3)``;
* ``logit_opacities``: Δlogit-opacity ``(N,)`` (only with ``deform_opacity``);
* ``sh_dc``: ΔSH-DC colour ``(N, 1, 3)`` (only with ``deform_color``).

The last layer of every head is zero-initialised (weights and bias), so a fresh field returns
exactly zero deltas and ``CanonicalGaussians.deformed`` is then the identity: training starts from
"no motion". Locked by ``tests/test_fields.py::test_fresh_field_is_identity``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ds4d_pl.config import FieldConfig
from ds4d_pl.fields.hashgrid import HashGrid4D
from ds4d_pl.fields.hexplane import BoundedEncoding, HexPlane
from ds4d_pl.fields.trunk import check_cond, relu_stack

#: Output width of every head, by delta key.
HEAD_DIMS: dict[str, int] = {
    "means": 3,
    "quats": 4,
    "log_scales": 3,
    "logit_opacities": 1,
    "sh_dc": 3,
}
_HOW = "build it with build_field(cfg, cond_dim=...) to condition it"
#: Delta keys of checkpoints written before the keys took the table names.
LEGACY_HEAD_KEYS: dict[str, str] = {"scales": "log_scales", "opacities": "logit_opacities"}


def build_encoding(cfg: FieldConfig, bounds: Tensor | None = None) -> BoundedEncoding:
    """The space-time encoding named by ``cfg.encoding``."""
    if cfg.encoding == "hexplane":
        return HexPlane.from_config(cfg, bounds)
    if cfg.encoding == "hashgrid":
        return HashGrid4D.from_config(cfg, bounds)
    raise ValueError(f"FieldConfig.encoding must be 'hexplane' or 'hashgrid', got {cfg.encoding!r}")


def _head(width: int, out: int) -> nn.Sequential:
    head = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, out))
    nn.init.zeros_(head[-1].weight)
    nn.init.zeros_(head[-1].bias)
    return head


class DeformationField(nn.Module):
    """Predicts per-Gaussian attribute deltas at time ``t``.

    Args:
        cfg: Encoding and MLP sizes.
        cond_dim: Width of the optional per-Gaussian conditioning feature (0: none).
        bounds: Optional ``(2, 3)`` box ``[min; max]`` of the encoding; usually set later from
            the initial points with :meth:`set_bounds`.

    Attributes:
        encoding: :class:`~ds4d_pl.fields.hexplane.HexPlane` or
            :class:`~ds4d_pl.fields.hashgrid.HashGrid4D`.
        fusion: ``Linear(encoding.out_dim + cond_dim, hidden)`` when ``cond_dim > 0``, else
            ``None`` (the MLP reads the encoding directly).
        fusion_norms: With ``cfg.fusion_norm == "layernorm"`` and ``cond_dim > 0``, the
            LayerNorms of the encoding and conditioning branches (``encoding``, ``cond``); else
            ``None``.
        cond_gate: With ``cfg.cond_gate`` and ``cond_dim > 0``, the ``(cond_dim,)`` gate the
            conditioning branch is multiplied by (zero at init); else ``None``.
        mlp: ``depth`` × (``Linear`` → ``ReLU``) of width ``hidden``.
        heads: One MLP per delta key, last layer zero-initialised.
        cond_dim: Expected conditioning width.
        keys: Delta keys this field predicts, in order.
    """

    def __init__(self, cfg: FieldConfig, cond_dim: int = 0, bounds: Tensor | None = None) -> None:
        super().__init__()
        if cond_dim < 0:
            raise ValueError(f"DeformationField: cond_dim must be >= 0, got {cond_dim}")
        if cfg.hidden < 1 or cfg.depth < 0:
            raise ValueError(
                f"DeformationField: need hidden >= 1 and depth >= 0, got {cfg.hidden}, {cfg.depth}"
            )
        self.cfg = cfg
        self.cond_dim = cond_dim
        self.encoding = build_encoding(cfg, bounds)
        width = self.encoding.out_dim
        self.fusion_norms: nn.ModuleDict | None = None
        self.cond_gate: nn.Parameter | None = None
        if cond_dim > 0:
            self.fusion: nn.Linear | None = nn.Linear(width + cond_dim, cfg.hidden)
            if cfg.fusion_norm == "layernorm":
                # HexPlane features are products of three planes (~0.03 at init) while the
                # conditioning projection reads unit-RMS image features: one LayerNorm per
                # branch puts both at unit scale (its affine gain then lets training weigh them).
                self.fusion_norms = nn.ModuleDict(
                    {"encoding": nn.LayerNorm(width), "cond": nn.LayerNorm(cond_dim)}
                )
            if cfg.cond_gate:
                # Zero: a fresh field reads its encoding alone and opens the feature branch
                # only as far as the loss asks (the gate's gradient is not zero at zero).
                self.cond_gate = nn.Parameter(torch.zeros(cond_dim))
            width = cfg.hidden
        else:
            self.fusion = None
        self.mlp, width = relu_stack(width, cfg.hidden, cfg.depth)
        self.keys = ["means", "quats", "log_scales"]
        if cfg.deform_opacity:
            self.keys.append("logit_opacities")
        if cfg.deform_color:
            self.keys.append("sh_dc")
        self.heads = nn.ModuleDict({k: _head(width, HEAD_DIMS[k]) for k in self.keys})

    @property
    def out_dim(self) -> int:
        """Width of the encoding feature (before fusion)."""
        return self.encoding.out_dim

    def set_bounds(self, points: Tensor, margin: float = 0.1) -> None:
        """Fit the encoding's box to a point cloud (usually the initial Gaussian centres)."""
        self.encoding.set_bounds(points, margin)

    def regularizers(self) -> dict[str, Tensor]:
        """The encoding's regularisers (``plane_tv``, ``time_smooth``, ``time_l1`` or none)."""
        return self.encoding.regularizers()

    def encoding_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the encoding (planes / hash tables)."""
        return self.encoding.parameters()

    def mlp_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the fusion layer (with its input norms and gate), shared MLP and
        heads."""
        if self.cond_gate is not None:
            yield self.cond_gate
        for module in (self.fusion_norms, self.fusion, self.mlp, self.heads):
            if module is not None:
                yield from module.parameters()

    def fusion_inputs(self, feat: Tensor, cond: Tensor) -> tuple[Tensor, Tensor]:
        """The two inputs of the fusion layer: the encoding and conditioning features, each
        layer-normalised when ``fusion_norm`` is ``layernorm``, the latter gated when
        ``cond_gate`` is on."""
        cond = cond.to(feat.dtype)
        if self.fusion_norms is not None:
            feat, cond = self.fusion_norms["encoding"](feat), self.fusion_norms["cond"](cond)
        if self.cond_gate is not None:
            cond = cond * self.cond_gate
        return feat, cond

    def forward(
        self, means: Tensor, t: Tensor | float, cond: Tensor | None = None
    ) -> dict[str, Tensor]:
        """Attribute deltas of the Gaussians at time ``t``.

        Args:
            means: ``(N, 3)`` canonical centres (gradients flow back to them).
            t: Time in ``[0, 1]``: a float, a one-element tensor, ``(N,)`` or ``(N, 1)``.
            cond: ``(N, cond_dim)`` conditioning feature; required iff ``cond_dim > 0``.

        Returns:
            Deltas keyed by table name: ``means (N, 3)``, ``quats (N, 4)``, ``log_scales (N, 3)``
            and, when enabled, ``logit_opacities (N,)`` and ``sh_dc (N, 1, 3)``.
        """
        feat = self.encoding(means, t)  # validates means and t
        n = means.shape[0]
        check_cond("DeformationField", cond, n, self.cond_dim, _HOW)
        if self.fusion is not None:
            feat = self.fusion(torch.cat(self.fusion_inputs(feat, cond), dim=-1))
        hidden = self.mlp(feat)
        out = {k: head(hidden) for k, head in self.heads.items()}
        if "logit_opacities" in out:
            out["logit_opacities"] = out["logit_opacities"].reshape(n)
        if "sh_dc" in out:
            out["sh_dc"] = out["sh_dc"].reshape(n, 1, 3)
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
        # Heads were keyed "scales" / "opacities" before they took the tables' names.
        for old, new in LEGACY_HEAD_KEYS.items():
            old_prefix, new_prefix = f"{prefix}heads.{old}.", f"{prefix}heads.{new}."
            for key in [k for k in state_dict if k.startswith(old_prefix)]:
                state_dict[new_prefix + key[len(old_prefix) :]] = state_dict.pop(key)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def extra_repr(self) -> str:
        return f"cond_dim={self.cond_dim}, keys={self.keys}, fusion_norm={self.cfg.fusion_norm}"
