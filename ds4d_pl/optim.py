"""The optimiser table: every parameter group named once, with its learning-rate schedule.

One :class:`GroupSpec` per group says where the group's learning rate starts, where it ends and
whether it is multiplied by the scene extent (positions, as in 3DGS). The same table builds the
Adam groups (:func:`build_optimizer`), sets their rates every step (:func:`set_learning_rates`)
and names what is logged (``train/lr/<group>``), so a new group cannot be built without also being
scheduled and logged.

Rates decay log-linearly from ``lr`` to ``lr_final`` (``lr_final=None`` keeps the rate constant),
over the whole run, or, for a group flagged ``restarts_at_fine``, over the fine stage alone: the
deformation field, its MLP and the conditioning are unused in the coarse stage, so a schedule that
already decayed there would start them on an exhausted rate (4D-GS restarts every schedule at its
fine stage). Locked by ``tests/test_optim.py``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ds4d_pl.config import OptimConfig


@dataclass(frozen=True)
class GroupSpec:
    """One parameter group of the optimiser.

    Attributes:
        name: Group name (the key of the model's parameter groups and of ``train/lr/<name>``).
        lr: Initial learning rate.
        lr_final: Final learning rate (log-linear decay), or ``None`` for a constant rate.
        scales_with_extent: Multiply the rate by the scene extent (Gaussian positions).
        restarts_at_fine: Decay over the fine stage only (from ``lr`` at its first step), instead
            of over the whole run; constant at ``lr`` through the coarse stage.
    """

    name: str
    lr: float
    lr_final: float | None = None
    scales_with_extent: bool = False
    restarts_at_fine: bool = False

    def fraction(self, step: int, coarse_steps: int, total_steps: int) -> float:
        """Where ``step`` lies in this group's schedule, in ``[0, 1]``."""
        if self.restarts_at_fine:
            return max(step - coarse_steps, 0) / max(total_steps - coarse_steps, 1)
        return step / max(total_steps, 1)

    def rate(self, frac: float, extent: float = 1.0) -> float:
        """Learning rate at fraction ``frac`` in ``[0, 1]`` of the schedule."""
        frac = min(max(frac, 0.0), 1.0)
        lr = self.lr
        if self.lr_final is not None:
            lr = math.exp((1.0 - frac) * math.log(self.lr) + frac * math.log(self.lr_final))
        return lr * extent if self.scales_with_extent else lr


def group_table(cfg: OptimConfig) -> tuple[GroupSpec, ...]:
    """Every parameter group the model may have, in a fixed order.

    Gaussian tables are named like :attr:`CanonicalGaussians.TABLES`; ``field`` holds the
    encoding (planes / hash tables), ``mlp`` the field's fusion layer, MLP and heads, ``cond`` the
    learnable conditioning layers (TSSF scoring / merge and the low-rank projection), ``framing``
    the pseudo views' learned framing (:mod:`ds4d_pl.render.framing`; present only when
    ``model.framing.learn``, decaying over the whole run: the views are wrong from step 0). With
    ``cfg.restart_at_fine`` the last three restart their schedule at the fine stage.
    """
    restart = cfg.restart_at_fine
    return (
        GroupSpec("means", cfg.means_lr, cfg.means_lr_final, scales_with_extent=True),
        GroupSpec("quats", cfg.quats_lr),
        GroupSpec("log_scales", cfg.scales_lr),
        GroupSpec("logit_opacities", cfg.opacities_lr),
        GroupSpec("sh_dc", cfg.sh_dc_lr),
        GroupSpec("sh_rest", cfg.sh_rest_lr),
        GroupSpec("field", cfg.field_lr, cfg.field_lr_final, restarts_at_fine=restart),
        GroupSpec("mlp", cfg.mlp_lr, cfg.mlp_lr_final, restarts_at_fine=restart),
        GroupSpec("cond", cfg.cond_lr, cfg.cond_lr_final, restarts_at_fine=restart),
        GroupSpec("framing", cfg.framing_lr, cfg.framing_lr_final),
    )


def check_table(table: Sequence[GroupSpec]) -> None:
    """Raise unless every rate is finite and positive (a zero or negative rate would fail later
    inside the log-linear decay, or silently freeze a group)."""
    for spec in table:
        for key, value in (("lr", spec.lr), ("lr_final", spec.lr_final)):
            if value is None:
                continue
            if not (math.isfinite(value) and value > 0):
                raise ValueError(
                    f"model.optim: the {spec.name!r} group's {key} must be a finite number > 0, "
                    f"got {value}"
                )


def build_optimizer(
    groups: Mapping[str, list[nn.Parameter]],
    table: Sequence[GroupSpec],
    extent: float,
    eps: float,
) -> torch.optim.Adam:
    """Adam over the model's parameter groups, each at its table's initial rate.

    Args:
        groups: Group name → parameters (from the model). Names must be in ``table``; groups of
            the table the model does not have (e.g. ``cond`` without conditioning) are skipped.
        table: The optimiser table.
        extent: Scene extent (positions' rate multiplier).
        eps: Adam epsilon.

    Raises:
        KeyError: A model group that the table does not schedule.
    """
    specs = {spec.name: spec for spec in table}
    unknown = set(groups) - set(specs)
    if unknown:
        raise KeyError(f"parameter groups without an entry in the optimiser table: {unknown}")
    param_groups = [
        {
            "params": list(groups[spec.name]),
            "lr": spec.lr * extent if spec.scales_with_extent else spec.lr,
            "name": spec.name,
        }
        for spec in table
        if spec.name in groups and len(groups[spec.name]) > 0
    ]
    return torch.optim.Adam(param_groups, lr=0.0, eps=eps)


def set_learning_rates(
    optimizer: torch.optim.Optimizer,
    table: Sequence[GroupSpec],
    step: int,
    coarse_steps: int,
    total_steps: int,
    extent: float,
) -> dict[str, float]:
    """Set every group's rate for global ``step``; return them by group name.

    Args:
        optimizer: Optimiser built by :func:`build_optimizer`.
        table: The optimiser table.
        step: Global step.
        coarse_steps: Length of the coarse stage (where ``restarts_at_fine`` schedules begin).
        total_steps: Coarse plus fine steps (where every schedule ends).
        extent: Scene extent (positions' rate multiplier).
    """
    specs = {spec.name: spec for spec in table}
    rates = {}
    for group in optimizer.param_groups:
        spec = specs[group["name"]]
        frac = spec.fraction(step, coarse_steps, total_steps)
        group["lr"] = rates[spec.name] = spec.rate(frac, extent)
    return rates
