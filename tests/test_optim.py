"""Spec of the optimiser table (ds4d_pl.optim): one entry per group builds, schedules, logs."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ds4d_pl.compat import UPGRADED_HPARAMS, upgrade_hparams
from ds4d_pl.config import OptimConfig
from ds4d_pl.gaussians.canonical import CanonicalGaussians
from ds4d_pl.optim import GroupSpec, build_optimizer, check_table, group_table, set_learning_rates


def _groups() -> dict[str, list[nn.Parameter]]:
    g = CanonicalGaussians.random_in_sphere(8, 0.5)
    groups = {name: [getattr(g, name)] for name in g.TABLES}
    groups["field"] = [nn.Parameter(torch.zeros(3))]
    groups["mlp"] = [nn.Parameter(torch.zeros(2))]
    return groups


def test_table_names_every_group_once_and_only_positions_scale_with_extent() -> None:
    table = group_table(OptimConfig())
    names = [spec.name for spec in table]
    assert names == [*CanonicalGaussians.TABLES, "field", "mlp", "cond", "framing"]
    assert [s.name for s in table if s.scales_with_extent] == ["means"]
    decaying = {s.name for s in table if s.lr_final is not None}
    assert decaying == {"means", "field", "mlp", "cond", "framing"}
    # The pseudo views' framing is wrong from step 0: its schedule spans the whole run.
    assert not next(s for s in table if s.name == "framing").restarts_at_fine


def test_build_optimizer_uses_initial_rates_and_skips_absent_groups() -> None:
    cfg = OptimConfig()
    opt = build_optimizer(_groups(), group_table(cfg), extent=2.5, eps=1e-15)
    rates = {group["name"]: group["lr"] for group in opt.param_groups}
    assert "cond" not in rates and "framing" not in rates  # absent groups are skipped
    assert math.isclose(rates["means"], cfg.means_lr * 2.5)
    assert rates["log_scales"] == cfg.scales_lr and rates["field"] == cfg.field_lr
    assert opt.defaults["eps"] == 1e-15


def test_unscheduled_group_is_refused() -> None:
    groups = {**_groups(), "mystery": [nn.Parameter(torch.zeros(1))]}
    with pytest.raises(KeyError, match="mystery"):
        build_optimizer(groups, group_table(OptimConfig()), 1.0, 1e-15)


def test_rates_decay_log_linearly_to_the_final_rate_and_constants_stay() -> None:
    cfg = OptimConfig(restart_at_fine=False)
    table = group_table(cfg)
    opt = build_optimizer(_groups(), table, extent=2.0, eps=1e-15)
    start = set_learning_rates(opt, table, 0, 100, 400, 2.0)
    half = set_learning_rates(opt, table, 200, 100, 400, 2.0)
    end = set_learning_rates(opt, table, 400, 100, 400, 2.0)
    assert math.isclose(start["means"], cfg.means_lr * 2.0)
    assert math.isclose(half["field"], math.sqrt(cfg.field_lr * cfg.field_lr_final))
    assert math.isclose(end["mlp"], cfg.mlp_lr_final)
    assert start["quats"] == half["quats"] == end["quats"] == cfg.quats_lr
    assert set_learning_rates(opt, table, 7000, 100, 400, 2.0) == end  # clamped past the end
    assert {g["name"]: g["lr"] for g in opt.param_groups} == end


def test_restart_at_fine_starts_field_mlp_and_cond_at_their_initial_rates() -> None:
    cfg = OptimConfig(restart_at_fine=True)
    table = group_table(cfg)
    assert {s.name for s in table if s.restarts_at_fine} == {"field", "mlp", "cond"}
    groups = {**_groups(), "cond": [nn.Parameter(torch.zeros(1))]}
    opt = build_optimizer(groups, table, extent=2.0, eps=1e-15)
    coarse, total = 100, 400
    in_coarse = set_learning_rates(opt, table, 50, coarse, total, 2.0)
    fine_start = set_learning_rates(opt, table, coarse, coarse, total, 2.0)
    for name in ("field", "mlp", "cond"):
        assert math.isclose(fine_start[name], getattr(cfg, f"{name}_lr"), rel_tol=1e-12)
    assert math.isclose(in_coarse["field"], cfg.field_lr, rel_tol=1e-12)  # unused; held
    # Positions still decay over the whole run: a quarter of it has passed.
    assert fine_start["means"] < cfg.means_lr * 2.0
    half_fine = set_learning_rates(opt, table, 250, coarse, total, 2.0)
    assert math.isclose(half_fine["field"], math.sqrt(cfg.field_lr * cfg.field_lr_final))
    assert math.isclose(
        set_learning_rates(opt, table, total, coarse, total, 2.0)["cond"], cfg.cond_lr_final
    )
    # Without the flag the same step is a quarter into one decay over coarse + fine.
    plain = group_table(OptimConfig(restart_at_fine=False))
    opt_plain = build_optimizer(groups, plain, extent=2.0, eps=1e-15)
    rate = set_learning_rates(opt_plain, plain, coarse, coarse, total, 2.0)["field"]
    assert math.isclose(rate, cfg.field_lr**0.75 * cfg.field_lr_final**0.25)


def test_restart_is_the_default_but_checkpoints_from_before_it_keep_one_decay() -> None:
    assert OptimConfig().restart_at_fine
    assert upgrade_hparams({"optim": {"field_lr": 0.01}})["optim"] == {
        "field_lr": 0.01,
        "restart_at_fine": False,
    }
    # Stored as null: "the defaults of the version that wrote it", which had no restart.
    assert upgrade_hparams({"optim": None})["optim"] == {"restart_at_fine": False}
    current = {"optim": {"restart_at_fine": True}}
    assert upgrade_hparams(current) == current
    assert "optim" in UPGRADED_HPARAMS


@pytest.mark.parametrize("bad", [0.0, -1e-3, float("nan"), float("inf")])
def test_zero_negative_or_non_finite_rates_are_refused_naming_the_group(bad: float) -> None:
    with pytest.raises(ValueError, match="'field' group's lr_final"):
        check_table(group_table(OptimConfig(field_lr_final=bad)))
    with pytest.raises(ValueError, match="'quats' group's lr "):
        check_table([GroupSpec("quats", bad)])
