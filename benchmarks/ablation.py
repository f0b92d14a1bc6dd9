"""DS4D ablation rows on the synthetic objects: quality and step time, several seeds.

    python benchmarks/ablation.py --out benchmarks/results/ablation.json \
        [--motion mostly_static] [--seeds 3] [--rows row_b,row_d,...] [--jobs 2] \
        [--pseudo_views degraded]

Every (motion, row, seed) is one ``ds4d fit`` in a subprocess with the same step budget, on the
same synthetic object; the row's ablation preset is the only difference between rows. Reports
eval-view PSNR, SSIM and dynamic-region PSNR (mean and std over seeds) and the median fine-stage
step time. Writes the JSON and a markdown table next to it (``<stem of --out>.md``).
The numbers are what was measured: nothing here is tuned per row.

``--pseudo_views degraded`` trains every run on the degraded pseudo views (the defects of real
Zero123++ output at the default severities of ``DegradeConfig``, drawn with the run's seed)
instead of the oracle renders, and defaults ``--out`` to
``benchmarks/results/ablation_degraded.json`` (same structure as ``ablation.json``).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fit_runs import QUIET_FIT_ARGS, REPO, run_fit, summarise

MOTIONS = ("static_only", "mostly_static", "dynamic_only")
ROWS = ("row_b", "row_d", "row_e", "row_f", "row_g", "row_h")
METRICS = ("psnr", "ssim", "dyn_psnr")


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


def run_one(a: argparse.Namespace, motion: str, row: str, seed: int, tmp: Path) -> dict:
    args = [
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
        *a.override,
    ]
    run_dir = tmp / f"{motion}_{row}_{seed}"
    result = run_fit(args, run_dir, a.jobs, f"{motion}/{row}/seed {seed}", METRICS)
    return {**result, "seed": seed}


def markdown(results: dict, a: argparse.Namespace) -> str:
    lines = [
        "# DS4D ablation on the synthetic objects",
        "",
        f"Budget per run: {a.coarse_steps} coarse + {a.fine_steps} fine steps, {a.frames} frames,"
        f" {a.resolution}² training and evaluation views, {a.pseudo_views} pseudo views. Mean ± "
        "std over seeds (n per row in the table); step time is the median fine-stage step"
        + (
            f", measured with {a.jobs} runs sharing the CPU (one thread each)."
            if a.jobs > 1
            else "."
        ),
        "",
    ]
    for motion, rows in results.items():
        base = rows.get("row_b")
        lines += [
            f"## {motion}",
            "",
            "| row | n | PSNR | SSIM | dyn PSNR | Δdyn vs B | step ms | ×B time |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for row, r in rows.items():
            if r["dyn_psnr"] is not None and base and base["dyn_psnr"] is not None:
                ddyn = f"{r['dyn_psnr'] - base['dyn_psnr']:+.2f}"
            else:
                ddyn = "n/a"
            ratio = (
                f"{r['step_ms'] / base['step_ms']:.2f}"
                if base and r["step_ms"] and base["step_ms"]
                else "n/a"
            )
            dyn = (
                "n/a" if r["dyn_psnr"] is None else f"{r['dyn_psnr']:.2f} ± {r['dyn_psnr_std']:.2f}"
            )
            step = "n/a" if r["step_ms"] is None else f"{r['step_ms']:.0f}"
            lines.append(
                f"| {row} | {r.get('n_seeds', len(r['seeds']))} | "
                f"{r['psnr']:.2f} ± {r['psnr_std']:.2f} | {r['ssim']:.4f} | {dyn} | "
                f"{ddyn} | {step} | {ratio} |"
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
    p.add_argument("--rows", default=",".join(ROWS))
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
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="runs in parallel; seeds are the outer loop so contention hits all rows alike",
    )
    a = p.parse_args()
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
        futures = [(t, pool.submit(run_one, a, *t, Path(tmp))) for t in tasks]
        for (motion, row, _seed), fut in futures:
            result = fut.result()
            print(motion, row, result, flush=True)
            done.setdefault((motion, row), []).append(result)
            if len(done[(motion, row)]) == a.seeds:
                seeds = sorted(done[(motion, row)], key=lambda s: s["seed"])
                results[motion][row] = summarise(seeds, (*METRICS, "step_ms"))
                # Rows in the requested order, whatever order they finished in.
                results[motion] = {r: results[motion][r] for r in rows if r in results[motion]}
                out_path.parent.mkdir(parents=True, exist_ok=True)
                out_path.write_text(json.dumps(results, indent=2) + "\n")
    md_path = out_path.with_suffix(".md")
    md_path.write_text(markdown(results, a) + "\n")
    print(markdown(results, a))


if __name__ == "__main__":
    main()
