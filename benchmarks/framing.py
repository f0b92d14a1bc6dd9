"""How well the learned framing (``model.framing``) recovers each degraded view's true error.

    python benchmarks/framing.py [--seeds 3] [--jobs 2] [--row row_b] [--per view]
        [--override=--model.framing.gauge=views ...] [--keep_runs DIR [--resume]]

Fits a row (default B) on the synthetic object's degraded pseudo views at the ablation budget
(``benchmarks/ablation.py``'s arguments, ``--pseudo_views degraded``) with
``model.framing.learn=true``, then compares the framing each run learned
(``run_info.json``'s ``pseudo_view_framing``) with the one the degradation applied (the
scene's provenance, ``scene_meta.degrade``: ``view_scale``, ``view_shift_px``). The view a
"wrong view" defect replaced by the opposite view's images is reported apart: its images
belong to another camera, so no similarity explains them. Per-frame jitter (0.4 % of the side)
is left out of the truth.

Writes ``--out`` (default ``benchmarks/results/framing.json``) and the ``.md`` next to it.
"""

from __future__ import annotations

import argparse
import ast
import json
import statistics
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ablation import add_budget_arguments, fit_args
from fit_runs import REPO, add_sweep_arguments, check_sweep_arguments, run_fit

METRICS = ("psnr", "dyn_psnr_pooled")


def one(a: argparse.Namespace, seed: int, tmp: Path) -> dict:
    args = [
        *fit_args(a, a.motion, a.row, seed),
        "--model.framing.learn=true",
        f"--model.framing.per={a.per}",
        *a.override,
    ]
    run_dir = tmp / f"seed{seed}"
    result = run_fit(args, run_dir, a.jobs, f"{a.row}/seed {seed}", METRICS, resume=a.resume)
    info = json.loads((run_dir / "run_info.json").read_text())
    truth = ast.literal_eval(info["scene_meta"]["degrade"])
    learned = info["pseudo_view_framing"]["views"]
    views = []
    for k, (scale, shift) in enumerate(
        zip(truth["view_scale"], truth["view_shift_px"], strict=True)
    ):
        got = learned[str(k + 1)]
        views.append(
            {
                "view": k + 1,
                "wrong": k + 1 in truth["wrong_view_indices"],
                "true_scale": scale,
                "learned_scale": got["scale"],
                # Shifts as fractions of the image side, like the learned ones.
                "true_shift": [shift[0] / a.resolution, shift[1] / a.resolution],
                "learned_shift": [got["shift_x"], got["shift_y"]],
            }
        )
    return {**result, "seed": seed, "views": views}


def errors(views: list[dict]) -> dict:
    """Mean absolute scale and shift errors without and with the learned framing."""
    scale_before = [abs(v["true_scale"] - 1.0) for v in views]
    scale_after = [abs(v["true_scale"] - v["learned_scale"]) for v in views]
    shift_before = [abs(x) for v in views for x in v["true_shift"]]
    shift_after = [
        abs(t - g) for v in views for t, g in zip(v["true_shift"], v["learned_shift"], strict=True)
    ]
    return {
        "n_views": len(views),
        "scale_error_nominal": statistics.mean(scale_before),
        "scale_error_learned": statistics.mean(scale_after),
        "shift_error_nominal": statistics.mean(shift_before),
        "shift_error_learned": statistics.mean(shift_after),
    }


def markdown(runs: list[dict], a: argparse.Namespace, command: str) -> str:
    good = [v for r in runs for v in r["views"] if not v["wrong"]]
    e = errors(good)
    lines = [
        f"# Learned framing of degraded pseudo views ({a.row}, per {a.per})",
        "",
        f"Command: `{command}`. {len(runs)} seeds, {a.coarse_steps} + {a.fine_steps} steps, "
        f"{a.resolution}², {a.frames} frames, {a.motion}.",
        "",
        "Mean absolute error over the pseudo views (the badly wrong view excluded): the "
        "nominal framing (no correction) against the learned one; scale as a ratio, shift as a "
        "fraction of the image side (per axis).",
        "",
        "| | scale error | shift error |",
        "|---|---|---|",
        f"| nominal (no correction) | {e['scale_error_nominal']:.4f} | "
        f"{e['shift_error_nominal']:.4f} |",
        f"| learned | {e['scale_error_learned']:.4f} | {e['shift_error_learned']:.4f} |",
        "",
        f"{e['n_views']} views. Per run and view (true → learned):",
        "",
        "| seed | view | scale | shift x | shift y | PSNR | pooled dyn |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        for v in r["views"]:
            mark = " (wrong view)" if v["wrong"] else ""
            lines.append(
                f"| {r['seed']} | {v['view']}{mark} | {v['true_scale']:.3f} → "
                f"{v['learned_scale']:.3f} | {v['true_shift'][0]:+.3f} → "
                f"{v['learned_shift'][0]:+.3f} | {v['true_shift'][1]:+.3f} → "
                f"{v['learned_shift'][1]:+.3f} | {r['psnr']:.2f} | {r['dyn_psnr_pooled']:.2f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "framing.json"))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--row", default="row_b")
    p.add_argument("--per", default="view", choices=["view", "frame"])
    p.add_argument("--motion", default="mostly_static")
    add_budget_arguments(p)
    add_sweep_arguments(p)
    a = p.parse_args()
    check_sweep_arguments(p, a)
    a.pseudo_views = "degraded"
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(a.jobs) as pool:
        root = Path(a.keep_runs) if a.keep_runs else Path(tmp)
        futures = [pool.submit(one, a, s, root) for s in range(a.seeds)]
        runs = [f.result() for f in futures]
    good = [v for r in runs for v in r["views"] if not v["wrong"]]
    out = Path(a.out)
    out.write_text(json.dumps({"errors": errors(good), "runs": runs}, indent=2) + "\n")
    command = "python benchmarks/framing.py " + " ".join(
        [f"--{k} {getattr(a, k)}" for k in ("seeds", "jobs", "row", "per")]
        + [f"--override={o}" for o in a.override]
    )
    md = markdown(runs, a, command)
    out.with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
