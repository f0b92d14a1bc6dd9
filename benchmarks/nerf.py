"""NeRF vs Gaussians on the mostly-static synthetic object: quality, step time, peak memory.

    python benchmarks/nerf.py [--seeds 0,1,2] [--variants gaussians_row_b,...] [--jobs 2] \
        [--resolution 32] [--out benchmarks/results/nerf.json]

Every (variant, seed) is one ``ds4d fit`` of the demo's schedule (by default 150 coarse + 600
fine steps; 16 frames, 2 frames x (input + 2 pseudo views) per step) in a subprocess, differing
only in ``model.representation`` (``-c configs/model/nerf.yaml`` for the NeRF) and the ablation
row (B: no frame features; H: DSFD + TSSF-DA). The demo's 128x128 views would cost a NeRF
hours per run on CPU, so every variant trains and is scored at ``--resolution`` (default 32),
and the NeRF shades ``--nerf_samples`` proposal + ``--nerf_samples`` shaded samples per ray (the
preset's 64 + 64 are meant for a GPU); its other settings are the preset's. The conditioning's
occlusion-test renders use the preset's 32x32 for both representations, so the representation
is the only difference between the two rows of a pair.

Reports eval-view PSNR, SSIM and dynamic-region PSNR (mean and std over seeds), the median
fine-stage step time and the peak RSS of the fit process (``os.wait4``), and writes the JSON and
a markdown table next to it (``<stem of --out>.md``). Results of earlier invocations are kept
per (variant, seed), so seeds can be added by later runs. Nothing here is tuned per variant.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fit_runs import QUIET_FIT_ARGS, REPO, checkout_env, fine_step_ms, summarise

VARIANTS = ("gaussians_row_b", "gaussians_row_h", "nerf_row_b", "nerf_row_h")
METRICS = ("psnr", "ssim", "dyn_psnr")
FRAMES = 16  # configs/demo.yaml


def fit_args(a: argparse.Namespace, variant: str, seed: int) -> list[str]:
    """The ``ds4d fit`` arguments of one run (without its run directory)."""
    representation, row = variant.split("_", 1)
    args = ["-c", str(REPO / "configs" / "demo.yaml")]
    if representation == "nerf":
        args += [
            "-c",
            str(REPO / "configs" / "model" / "nerf.yaml"),
            f"--model.nerf.samples_per_ray={a.nerf_samples}",
            f"--model.nerf.proposal_samples={a.nerf_samples}",
        ]
    args += ["-c", str(REPO / "configs" / "ablation" / f"{row}.yaml")]
    return [
        *args,
        f"--model.schedule.coarse_steps={a.coarse_steps}",
        f"--model.schedule.fine_steps={a.fine_steps}",
        f"--data.synthetic.num_frames={FRAMES}",
        f"--data.synthetic.resolution={a.resolution}",
        f"--data.synthetic.eval_resolution={a.resolution}",
        "--data.synthetic.motion=mostly_static",
        f"--data.synthetic.seed={seed}",
        f"--model.seed={seed}",
        f"--seed_everything={seed}",
        # The NeRF preset's occlusion-test resolution, for both representations.
        "--model.conditioning.visibility_resolution=32",
        *QUIET_FIT_ARGS,
    ]


def run_one(a: argparse.Namespace, variant: str, seed: int, tmp: Path) -> dict:
    """One fit in a subprocess: its metrics, wall time, median fine step and peak RSS."""
    run_dir = tmp / f"{variant}_{seed}"
    cmd = [sys.executable, "-m", "ds4d_pl.cli", "fit", *fit_args(a, variant, seed)]
    cmd.append(f"--trainer.default_root_dir={run_dir}")
    # One thread per run: small tensors scale poorly across threads, and concurrent runs
    # would otherwise fight over the cores (benchmarks/fit_runs.py).
    env = checkout_env(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    start = time.perf_counter()
    log = run_dir.with_suffix(".log")
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env)
        # wait4 gives this child's own resource usage (ru_maxrss in KiB on Linux).
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.stderr.write(log.read_text()[-3000:])
        raise SystemExit(f"{variant}/seed {seed} failed (exit {proc.returncode})")
    report = json.loads((run_dir / "metrics.json").read_text())
    return {
        **{k: report[k] for k in METRICS},
        "seed": seed,
        "wall_s": round(wall, 1),
        "step_ms": fine_step_ms(run_dir, a.coarse_steps),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
        "num_gaussians": report.get("num_gaussians"),
    }


def _num(r: dict, key: str, spec: str, std: bool = False) -> str:
    """``mean`` (``± std``) of a summarised key, ``n/a`` where no run measured it (a run too
    short for the step-time warm-up)."""
    if r.get(key) is None:
        return "n/a"
    text = format(r[key], spec)
    return f"{text} ± {format(r[key + '_std'], spec)}" if std else text


def markdown(results: dict, a: argparse.Namespace) -> str:
    lines = [
        "# NeRF vs Gaussians on the mostly-static synthetic object",
        "",
        f"Schedule: {a.coarse_steps} coarse + {a.fine_steps} fine steps, {FRAMES} frames, "
        f"{a.resolution}² training and evaluation views; NeRF: configs/model/nerf.yaml with "
        f"{a.nerf_samples} proposal + {a.nerf_samples} shaded samples per ray. Mean ± std over "
        "seeds (n per row); step time is the median fine-stage step, peak RSS the fit process's"
        + (f"; {a.jobs} runs shared the CPU, one thread each." if a.jobs > 1 else "."),
        "",
        "| variant | n | PSNR | SSIM | dyn PSNR | step ms | peak RSS MiB | wall s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for variant in VARIANTS:
        if variant not in results:
            continue
        r = results[variant]
        lines.append(
            f"| {variant} | {r['n_seeds']} | {_num(r, 'psnr', '.2f', std=True)} | "
            f"{_num(r, 'ssim', '.4f')} | {_num(r, 'dyn_psnr', '.2f', std=True)} | "
            f"{_num(r, 'step_ms', '.0f')} | {_num(r, 'peak_rss_mib', '.0f')} | "
            f"{_num(r, 'wall_s', '.0f')} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "nerf.json"))
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--coarse_steps", type=int, default=150, help="the demo's")
    p.add_argument("--fine_steps", type=int, default=600, help="the demo's")
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--nerf_samples", type=int, default=24)
    p.add_argument("--jobs", type=int, default=1, help="runs in parallel (one thread each)")
    a = p.parse_args()
    variants = a.variants.split(",")
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        p.error(f"unknown variants {unknown}; choose from {VARIANTS}")
    seeds = [int(s) for s in a.seeds.split(",")]
    out_path = Path(a.out)
    stored: dict = json.loads(out_path.read_text()) if out_path.exists() else {}
    runs: dict[str, dict[str, dict]] = {
        v: {str(s["seed"]): s for s in r["seeds"]} for v, r in stored.items()
    }
    # Seed-major order: every variant sees the same mix of co-running jobs.
    tasks = [(v, s) for s in seeds for v in variants]
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(max_workers=a.jobs) as pool:
        futures = [(t, pool.submit(run_one, a, *t, Path(tmp))) for t in tasks]
        for (variant, seed), fut in futures:
            result = fut.result()
            print(variant, result, flush=True)
            runs.setdefault(variant, {})[str(seed)] = result
            results = {
                v: summarise(
                    sorted(runs[v].values(), key=lambda s: s["seed"]),
                    (*METRICS, "step_ms", "peak_rss_mib", "wall_s"),
                )
                for v in VARIANTS
                if v in runs
            }
            out_path.parent.mkdir(parents=True, exist_ok=True)
            out_path.write_text(json.dumps(results, indent=2) + "\n")
            out_path.with_suffix(".md").write_text(markdown(results, a) + "\n")
    print(out_path.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
