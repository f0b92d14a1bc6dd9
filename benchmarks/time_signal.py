"""How much of the conditioning's change over time lands on the moving part (trained runs).

    python benchmarks/time_signal.py RUN_DIR [RUN_DIR ...] [--out FILE]

For each finished run of the synthetic object with frame features (rows D to H), the
conditioning vector each Gaussian feeds the deformation field is computed at every frame time
(``DS4DModel._condition``, the fused ``[static, dynamic]`` features). Its temporal standard
deviation, summed over channels, is averaged over the Gaussians near the arm's tip at the middle
frame (``post_fit.tip_gaussians``, the arm tracking's selection) and over all
the others, which are static on the mostly-static object:

* ``tip``, ``rest``: those two means;
* ``contrast`` = ``tip / rest``: how much more the features change where the object moves
  than where it does not. A fusion that mixes in views whose features at a point do not follow
  its motion (or change with a motion nearby) lowers it.

Writes ``--out`` (JSON, keyed by each run directory as given) or prints it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from post_fit import load_run, tip_gaussians, write_json
from torch import Tensor

from ds4d_pl.data.parsers.synthetic import SyntheticConfig
from ds4d_pl.model import DS4DModel


@torch.no_grad()
def time_signal(model: DS4DModel, synthetic: SyntheticConfig, times: Tensor) -> dict[str, float]:
    """``tip``, ``rest``, ``contrast`` and ``num_tip`` of a model whose conditioning is
    prepared (see the module doc)."""
    if synthetic.motion == "static_only":
        raise ValueError("nothing moves in motion 'static_only': no tip to compare with the rest")
    conds = torch.stack([model._condition(t) for t in times])  # (T, N, C)
    *_, tip = tip_gaussians(model, synthetic, times)
    if not bool(tip.any()) or bool(tip.all()):
        raise ValueError("the Gaussians near the arm's tip at the middle frame are none or all")
    change = conds.std(dim=0).norm(dim=-1)  # (N,)
    tip_mean, rest_mean = float(change[tip].mean()), float(change[~tip].mean())
    return {
        "tip": tip_mean,
        "rest": rest_mean,
        "contrast": tip_mean / rest_mean,
        "num_tip": int(tip.sum()),
    }


def analyse(run_dir: Path) -> dict[str, float]:
    """:func:`time_signal` of a finished run."""
    system, synthetic, scene = load_run(run_dir)
    if system.model.conditioner is None:
        raise SystemExit(f"{run_dir}: this run has no frame features (row A or B)")
    try:
        return time_signal(system.model, synthetic, scene.train.times)
    except ValueError as err:
        raise SystemExit(f"{run_dir}: {err}") from None


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dirs", type=Path, nargs="+")
    p.add_argument("--out", type=Path, default=None, help="write the JSON here (else stdout)")
    a = p.parse_args(argv)
    write_json({str(run): analyse(run) for run in a.run_dirs}, a.out)


if __name__ == "__main__":
    main()
