"""W&B sweep specs: every swept key is a CLI key and every cell's command parses and builds a
valid ablation (docs/design.md §9: lightning-hydra-template's test_sweeps)."""

from __future__ import annotations

import contextlib
import io
import itertools
import os
from pathlib import Path

import pytest
import yaml
from conftest import CONFIGS, REPO

from ds4d_pl.cli import main
from ds4d_pl.config import AblationConfig

SWEEPS = sorted((CONFIGS / "sweeps").glob("*.yaml"))


def cells(spec: dict) -> list[list[str]]:
    """The ``${args}`` of every grid cell, rendered as W&B renders them (``--key=value``)."""
    names = sorted(spec["parameters"])
    values = [spec["parameters"][n]["values"] for n in names]
    return [
        [f"--{n}={v}" for n, v in zip(names, combo, strict=True)]
        for combo in itertools.product(*values)
    ]


def command(spec: dict, args: list[str]) -> list[str]:
    """The cell's argv after the program name (``${env}`` dropped, ``${args}`` expanded)."""
    cmd = [c for c in spec["command"] if c != "${env}"]
    assert cmd[0] == spec["program"] == "ds4d"
    out: list[str] = []
    for c in cmd[1:]:
        out += args if c == "${args}" else [c]
    return out


@pytest.mark.parametrize("sweep", SWEEPS, ids=lambda p: p.name)
def test_every_cell_of_the_sweep_parses(sweep: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = yaml.safe_load(sweep.read_text())
    assert spec["method"] == "grid" and "${args}" in spec["command"]
    monkeypatch.chdir(REPO)  # the commands use repo-relative preset paths
    grid = cells(spec)
    assert len(grid) == len({tuple(c) for c in grid}) > 1
    for args in grid:
        out = io.StringIO()
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exc:
            main([*command(spec, args), "--print_config"])
        assert exc.value.code == 0, args
        cfg = yaml.safe_load(out.getvalue())
        # The swept values arrived, and the ablation they describe is a valid one.
        for arg in args:
            key, value = arg[2:].split("=", 1)
            if key == "config":
                preset = yaml.safe_load((REPO / value).read_text())["model"]["ablation"]
                assert cfg["model"]["ablation"] == {**cfg["model"]["ablation"], **preset}
                continue
            node = cfg
            for part in key.split("."):
                node = node[part]
            assert str(node).lower() == value.lower(), (key, node, value)
        AblationConfig(**cfg["model"]["ablation"])
    assert os.environ.get("WANDB_MODE") == "offline"  # conftest: no sweep test reaches W&B
