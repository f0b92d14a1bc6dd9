"""DS4D ablation rows on the synthetic objects: quality and step time, several seeds.

    python benchmarks/ablation.py --out benchmarks/results/ablation.json \
        [--motion mostly_static] [--seeds 3] [--rows row_b,row_d,...] [--jobs 2] \
        [--pseudo_views degraded]

Every (motion, row, seed) is one ``ds4d fit`` in a subprocess with the same step budget, on the
same synthetic object; the row's ablation preset is the only difference between rows. Reports
eval-view PSNR, SSIM and dynamic-region PSNR, as the per-image mean (``dyn_psnr``, the earlier
tables' number) and pooled over every moving pixel (``dyn_psnr_pooled``) at the budget's
resolution and at 128² (``dyn_psnr_pooled_128``), the arm tip's tracking error as a fraction of
its displacement and the fraction of its motion reached, the dynamic PSNR of the trained model
with time-constant features at test time (``placebo_dyn_psnr_pooled``), how far the fusion
weights are from uniform, and the median fine-stage step time (``benchmarks/post_fit.py`` makes
all but the first three after each fit). Mean and std over seeds, and the difference to row B
paired by seed. Writes the JSON and a markdown table next to it (``<stem of --out>.md``).
The numbers are what was measured: nothing here is tuned per row.

``--pseudo_views degraded`` trains every run on the degraded pseudo views (the defects of real
Zero123++ output at the default severities of ``DegradeConfig``, drawn with the run's seed)
instead of the oracle renders, and defaults ``--out`` to
``benchmarks/results/ablation_degraded.json`` (same structure as ``ablation.json``).

A sweep of hours that stops part-way (a lost session, a reboot) resumes with the same command
plus ``--resume``, given ``--keep_runs``: finished fits of the same arguments are reused (each
records its arguments in ``benchmark_fit.json``), interrupted ones are fitted again.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fit_runs import (
    QUIET_FIT_ARGS,
    REPO,
    add_sweep_arguments,
    check_sweep_arguments,
    checkout_env,
    mean_pm,
    paired_seeds,
    run_fit,
    summarise,
    sweep_fit_args,
)

MOTIONS = ("static_only", "mostly_static", "dynamic_only")
ROWS = ("row_b", "row_d", "row_e", "row_f", "row_g", "row_h")
METRICS = ("psnr", "ssim", "dyn_psnr", "dyn_psnr_pooled")
#: Keys taken from benchmarks/post_fit.py's JSON, flattened (``section.key`` → name).
POST_FIT = {
    "eval_128.psnr": "psnr_128",
    "eval_128.dyn_psnr": "dyn_psnr_128",
    "eval_128.dyn_psnr_pooled": "dyn_psnr_pooled_128",
    "arm.error_ratio": "arm_error",
    "arm.reach": "arm_reach",
    "placebo_test.dyn_psnr": "placebo_dyn_psnr",
    "placebo_test.dyn_psnr_pooled": "placebo_dyn_psnr_pooled",
    "fusion.tv": "fusion_tv",
    "fusion.input_share": "fusion_input_share",
    "placement.depth_ratio": "depth_ratio",
}
SUMMARY_KEYS = (*METRICS, *POST_FIT.values(), "num_gaussians", "step_ms")


def add_budget_arguments(p: argparse.ArgumentParser) -> None:
    """The shared budget's options (read by :func:`budget_args`) and ``--override``."""
    p.add_argument("--coarse_steps", type=int, default=150)
    p.add_argument("--fine_steps", type=int, default=450)
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--frames", type=int, default=12)
    p.add_argument(
        "--override",
        action="append",
        default=[],
        help="extra ds4d fit argument for every run, e.g. --override=--model.optim.cond_lr=0.016",
    )


def budget_args(a: argparse.Namespace) -> list[str]:
    """The shared budget: identical for every row."""
    return [
        f"--model.schedule.coarse_steps={a.coarse_steps}",
        f"--model.schedule.fine_steps={a.fine_steps}",
        f"--data.synthetic.resolution={a.resolution}",
        f"--data.synthetic.eval_resolution={a.resolution}",
        f"--data.synthetic.num_frames={a.frames}",
        *QUIET_FIT_ARGS,
    ]


def pseudo_view_args(a: argparse.Namespace, seed: int) -> list[str]:
    """Which pseudo views supervise the run (the defects of degraded views follow the seed)."""
    if a.pseudo_views == "oracle":
        return []
    return ["--data.synthetic.pseudo_views=degraded", f"--data.synthetic.degrade.seed={seed}"]


def fit_args(a: argparse.Namespace, motion: str, row: str, seed: int) -> list[str]:
    """The ``ds4d fit`` arguments of one (motion, row, seed) at the shared budget."""
    return [
        "-c",
        str(REPO / "configs" / "base.yaml"),
        "-c",
        str(REPO / "configs" / "ablation" / f"{row}.yaml"),
        f"--data.synthetic.motion={motion}",
        f"--data.synthetic.seed={seed}",
        f"--model.seed={seed}",
        f"--seed_everything={seed}",
        *budget_args(a),
        *pseudo_view_args(a, seed),
        *sweep_fit_args(a),
    ]


def run_one(a: argparse.Namespace, motion: str, row: str, seed: int, tmp: Path) -> dict:
    args = [*fit_args(a, motion, row, seed), *a.override]
    run_dir = tmp / f"{motion}_{row}_{seed}"
    label = f"{motion}/{row}/seed {seed}"
    result = run_fit(args, run_dir, a.jobs, label, METRICS, resume=a.resume)
    return {**result, **post_fit(run_dir, label, reuse=a.resume), "seed": seed}


def post_fit(run_dir: Path, label: str, reuse: bool = False) -> dict:
    """``benchmarks/post_fit.py`` on a finished run, flattened to :data:`POST_FIT`'s names.

    Args:
        run_dir: The finished run.
        label: Names the run in the error when it fails.
        reuse: Keep a complete ``post_fit.json`` written after the run's metrics (a resumed
            sweep); a stale or unreadable one is recomputed.
    """
    out = run_dir / "post_fit.json"
    if reuse and _fresh_report(out, run_dir / "metrics.json"):
        return _flatten(json.loads(out.read_text()))
    cmd = [
        sys.executable,
        str(REPO / "benchmarks" / "post_fit.py"),
        str(run_dir),
        "--out",
        str(out),
    ]
    env = checkout_env(OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-3000:])
        raise SystemExit(f"{label}: post_fit failed (exit {proc.returncode})")
    return _flatten(json.loads(out.read_text()))


def _fresh_report(report: Path, metrics: Path) -> bool:
    """Whether ``report`` is complete JSON written after ``metrics`` (the fit it analyses)."""
    if not report.is_file() or report.stat().st_mtime < metrics.stat().st_mtime:
        return False
    try:
        json.loads(report.read_text())
    except json.JSONDecodeError:
        return False
    return True


def _flatten(report: dict) -> dict:
    """``post_fit.json``'s sections flattened to :data:`POST_FIT`'s names."""
    flat = {}
    for path, name in POST_FIT.items():
        section, key = path.split(".")
        flat[name] = report.get(section, {}).get(key)
    return flat


def paired_difference(rows: dict, row: str, key: str) -> tuple[float, float] | None:
    """Mean and std over seeds of ``row − row_b`` in ``key``, paired by seed."""
    base = rows.get("row_b")
    if base is None or row not in rows:
        return None
    return paired_seeds(base["seeds"], rows[row]["seeds"], key)


def _paired(rows: dict, row: str, key: str) -> str:
    d = paired_difference(rows, row, key)
    return "n/a" if d is None else f"{d[0]:+.2f} ± {d[1]:.2f}"


def markdown(results: dict, a: argparse.Namespace) -> str:
    lines = [
        "# DS4D ablation on the synthetic objects",
        "",
        f"Budget per run: {a.coarse_steps} coarse + {a.fine_steps} fine steps, {a.frames} frames,"
        f" {a.resolution}² training and evaluation views, {a.pseudo_views} pseudo views"
        + (f", overrides {' '.join(a.override)}" if a.override else "")
        + ". Mean ± std over seeds (n per row); Δ columns are differences to row B paired by "
        "seed (mean ± std). dyn = dynamic-region PSNR as the per-image mean; pooled = squared "
        "error pooled over every moving pixel of all views and frames, at the budget's "
        "resolution and at 128²; arm err = the arm tip's position error / its displacement; "
        "reach = fraction of the tip's motion the model makes; placebo = pooled dynamic PSNR "
        "with time-constant features at test time; GA tv = distance of the fusion weights from "
        "uniform. Step time is the median fine-stage step"
        + (
            f", measured with {a.jobs} runs sharing the CPU (one thread each)."
            if a.jobs > 1
            else "."
        ),
        "",
    ]
    for motion, rows in results.items():
        lines += [
            f"## {motion}",
            "",
            "| row | n | PSNR | dyn | pooled | pooled 128² | Δpooled vs B | Δdyn vs B | arm err "
            "| reach | placebo | fusion tv | Gaussians | step ms |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for row, r in rows.items():
            step = "n/a" if r.get("step_ms") is None else f"{r['step_ms']:.0f}"
            gaussians = "n/a" if r.get("num_gaussians") is None else f"{r['num_gaussians']:.0f}"
            lines.append(
                f"| {row} | {r.get('n_seeds', len(r['seeds']))} | {mean_pm(r, 'psnr')} | "
                f"{mean_pm(r, 'dyn_psnr')} | {mean_pm(r, 'dyn_psnr_pooled')} | "
                f"{mean_pm(r, 'dyn_psnr_pooled_128')} | {_paired(rows, row, 'dyn_psnr_pooled')} | "
                f"{_paired(rows, row, 'dyn_psnr')} | {mean_pm(r, 'arm_error', 3)} | "
                f"{mean_pm(r, 'arm_reach', 3)} | {mean_pm(r, 'placebo_dyn_psnr_pooled')} | "
                f"{mean_pm(r, 'fusion_tv', 3)} | {gaussians} | {step} |"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--out",
        default=None,
        help="result JSON (default benchmarks/results/ablation.json, or ablation_degraded.json "
        "with --pseudo_views degraded); the markdown table is written next to it",
    )
    p.add_argument("--pseudo_views", default="oracle", choices=["oracle", "degraded"])
    p.add_argument("--motion", action="append", choices=MOTIONS, help="repeatable; default all")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument(
        "--rows",
        default=",".join(ROWS),
        help="comma-separated presets of configs/ablation/ (the paper's rows, or e.g. ga_relative, "
        "row_h_trust, row_h_dropout)",
    )
    add_budget_arguments(p)
    add_sweep_arguments(p)
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="runs in parallel; seeds are the outer loop so contention hits all rows alike",
    )
    a = p.parse_args()
    check_sweep_arguments(p, a)
    motions = a.motion or list(MOTIONS)
    rows = a.rows.split(",")
    stem = "ablation" if a.pseudo_views == "oracle" else "ablation_degraded"
    out_path = Path(a.out) if a.out else REPO / "benchmarks" / "results" / f"{stem}.json"
    results: dict = json.loads(out_path.read_text()) if out_path.exists() else {}
    for motion in motions:
        results[motion] = {}
    # Seed-major order: every row sees the same mix of co-running jobs and CPU throttling.
    tasks = [(m, r, s) for m in motions for s in range(a.seeds) for r in rows]
    done: dict[tuple[str, str], list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(max_workers=a.jobs) as pool:
        root = Path(a.keep_runs) if a.keep_runs else Path(tmp)
        futures = [(t, pool.submit(run_one, a, *t, root)) for t in tasks]
        for (motion, row, _seed), fut in futures:
            result = fut.result()
            print(motion, row, result, flush=True)
            done.setdefault((motion, row), []).append(result)
            if len(done[(motion, row)]) == a.seeds:
                seeds = sorted(done[(motion, row)], key=lambda s: s["seed"])
                results[motion][row] = summarise(seeds, SUMMARY_KEYS)
                # Rows in the requested order, whatever order they finished in.
                results[motion] = {r: results[motion][r] for r in rows if r in results[motion]}
                out_path.parent.mkdir(parents=True, exist_ok=True)
                out_path.write_text(json.dumps(results, indent=2) + "\n")
    md_path = out_path.with_suffix(".md")
    md_path.write_text(markdown(results, a) + "\n")
    print(markdown(results, a))


if __name__ == "__main__":
    main()
