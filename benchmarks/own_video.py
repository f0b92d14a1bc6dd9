"""A user's own video, measured: the commands from frames to a 4D asset, their times, and the
no-reference scores for rows B and H, next to the ground-truth scores they stand in for.

    python benchmarks/own_video.py --out benchmarks/results/own_video.json [--seeds 3] [--jobs 2]

The "video" is the embedded mostly-static object's input view with Zero123++-like pseudo views
(opaque grey PNGs with the defects of ``DegradeConfig``: framing errors, flicker, an invented
back side, one wrong view), laid out as ``ds4d prepare --zero123pp`` writes them, without
``eval_gt`` (a user has none) and without initial points (the visual hull is carved). Every fit
holds every 4th frame out. After training, each run is also scored on the object's true novel
views (``ds4d test`` on a copy of the data that has ``eval_gt``), so the table shows whether
the no-reference scores move with the ground-truth ones. ``ds4d prepare`` is timed on the same
frames given as a plain RGBA frame folder. Writes the JSON and a markdown report next to it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fit_runs import QUIET_FIT_ARGS, REPO, checkout_env, run_fit

ROWS = ("row_b", "row_h")
#: Scores a user gets without ground truth (metrics.json keys).
NOREF = (
    "holdout/psnr",
    "holdout/masked_psnr",
    "holdout/dyn_psnr",
    "holdout/ssim",
    "input/psnr",
    "input/masked_psnr",
    "flicker/input_video",
    "flicker/novel_views",
    "flicker/novel_ratio",
    "novel/clip",
)
#: Ground-truth scores on the four evaluation views, for comparison.
GT = ("psnr", "dyn_psnr", "ssim")


def _run(cmd: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=checkout_env())
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-3000:])
        raise SystemExit(f"failed: {' '.join(cmd)}")
    return time.perf_counter() - start


def make_data(root: Path, a: argparse.Namespace) -> tuple[Path, Path, float]:
    """The user's dataset (no eval_gt) and a copy with the ground truth; ``ds4d prepare``'s time
    on the input frames as a plain frame folder."""
    gt_root = root / "with_gt"
    synth = [sys.executable, "-m", "ds4d_pl.cli", "synth", "--out", str(gt_root), "--name", "bird",
             "--num_frames", str(a.frames), "--resolution", str(a.resolution),
             "--eval_resolution", str(a.resolution), "--pseudo_views", "degraded",
             "--pseudo_background", "0.5"]  # fmt: skip
    _run(synth)
    user = root / "user"
    shutil.copytree(gt_root, user, ignore=shutil.ignore_patterns("eval_gt"))
    frames = root / "frames"
    frames.mkdir()
    for i, png in enumerate(sorted((gt_root / "bird").glob("*.png"), key=lambda p: int(p.stem))):
        shutil.copy(png, frames / f"frame_{i + 1:04d}.png")  # ffmpeg-style names
    prepare = [sys.executable, "-m", "ds4d_pl.cli", "prepare", "--input", str(frames), "--out",
               str(root / "prepared"), "--name", "bird", "--size", str(a.resolution)]  # fmt: skip
    return user, gt_root, _run(prepare)


def fit_args(a: argparse.Namespace, data: Path, row: str, seed: int) -> list[str]:
    return [
        "-c", str(REPO / "configs" / "base.yaml"),
        "-c", str(REPO / "configs" / "data" / "consistent4d.yaml"),
        "-c", str(REPO / "configs" / "ablation" / f"{row}.yaml"),
        f"--data.root={data}", "--data.object_name=bird",
        f"--data.consistent4d.resolution={a.resolution}", "--data.holdout_every=4",
        f"--model.schedule.coarse_steps={a.coarse_steps}",
        f"--model.schedule.fine_steps={a.fine_steps}",
        f"--seed_everything={seed}", f"--model.seed={seed}",
        *QUIET_FIT_ARGS,
        *a.override,
    ]  # fmt: skip


def gt_scores(run_dir: Path, gt_root: Path, a: argparse.Namespace) -> dict:
    """``ds4d test`` of the trained run on the data that has the true novel views."""
    out = run_dir / "gt_test"
    cmd = [sys.executable, "-m", "ds4d_pl.cli", "test", "-c", str(run_dir / "config.yaml"),
           f"--ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}", f"--data.root={gt_root}",
           f"--data.consistent4d.eval_resolution={a.resolution}",
           f"--trainer.default_root_dir={out}", "--trainer.logger=false",
           "--trainer.enable_progress_bar=false"]  # fmt: skip
    _run(cmd)
    report = json.loads((out / "metrics.json").read_text())
    return {k: report[k] for k in GT}


def one(a, user: Path, gt_root: Path, row: str, seed: int, tmp: Path) -> dict:
    run_dir = tmp / f"{row}_s{seed}"
    result = run_fit(fit_args(a, user, row, seed), run_dir, a.jobs, f"{row}/{seed}", NOREF)
    result["init_source"] = json.loads((run_dir / "metrics.json").read_text())["init_source"]
    result.update({f"gt/{k}": v for k, v in gt_scores(run_dir, gt_root, a).items()})
    result["seed"] = seed
    return result


def _numeric(values: list) -> list[float]:
    return [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]


def summarise(seeds: list[dict]) -> dict:
    keys = [*NOREF, *(f"gt/{k}" for k in GT), "wall_s"]
    out: dict = {"n_seeds": len(seeds), "seeds": seeds}
    for key in keys:
        values = _numeric([s[key] for s in seeds])
        if values:
            out[key] = statistics.mean(values)
            out[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        else:
            out[key] = seeds[0][key]  # the reason it is n/a
    return out


def report(res: dict) -> str:
    rows = res["rows"]
    lines = [
        "# Your own video: no-reference scores vs ground truth (rows B and H)",
        "",
        f"`{res['command']}` · {res['n_seeds']} seeds · {res['budget']}",
        "",
        "## Commands and times",
        "",
        f"- `ds4d prepare` on {res['frames']} RGBA frames ({res['resolution']}²): "
        f"{res['prepare_s']:.1f} s",
        f"- `ds4d fit` per run (median over all runs, {res['jobs']} at a time): "
        f"{res['fit_s_median']:.0f} s",
        "",
        "## Scores (mean ± std over seeds)",
        "",
        "| score | " + " | ".join(rows) + " | H − B (paired) |",
        "|---|" + "---|" * (len(rows) + 1),
    ]
    for key in [*NOREF, *(f"gt/{k}" for k in GT)]:
        cells = []
        for row in rows:
            v = res["rows"][row][key]
            std = res["rows"][row].get(f"{key}_std")
            cells.append(f"{v:.4g} ± {std:.2g}" if isinstance(v, float) else str(v))
        diff = res["paired_h_minus_b"].get(key)
        cells.append(", ".join(f"{d:+.3g}" for d in diff) if diff else "")
        lines.append(f"| `{key}` | " + " | ".join(cells) + " |")
    lines += ["", "Initial points: " + ", ".join(sorted(set(res["init_sources"]))), ""]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "own_video.json"))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--coarse_steps", type=int, default=150)
    p.add_argument("--fine_steps", type=int, default=450)
    p.add_argument("--override", action="append", default=[], help="extra ds4d fit argument")
    a = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="ds4d-own-") as tmp:
        tmp = Path(tmp)
        user, gt_root, prepare_s = make_data(tmp, a)
        jobs = [(row, seed) for row in ROWS for seed in range(a.seeds)]
        with ThreadPoolExecutor(a.jobs) as pool:
            done = list(pool.map(lambda j: one(a, user, gt_root, *j, tmp), jobs))
    by_row = {row: [r for (rw, _), r in zip(jobs, done, strict=True) if rw == row] for row in ROWS}
    paired = {}
    for key in [*NOREF, *(f"gt/{k}" for k in GT)]:
        b, h = by_row["row_b"], by_row["row_h"]
        pairs = [(x[key], y[key]) for x, y in zip(b, h, strict=True)]
        if all(_numeric(list(pair)) == list(pair) for pair in pairs):
            paired[key] = [y - x for x, y in pairs]
    res = {
        "command": "python benchmarks/own_video.py " + " ".join(sys.argv[1:]),
        "n_seeds": a.seeds,
        "jobs": a.jobs,
        "frames": a.frames,
        "resolution": a.resolution,
        "budget": f"{a.coarse_steps} coarse + {a.fine_steps} fine steps, holdout_every 4",
        "prepare_s": round(prepare_s, 1),
        "fit_s_median": statistics.median(r["wall_s"] for r in done),
        "init_sources": [r["init_source"] for r in done],
        "rows": {row: summarise(by_row[row]) for row in ROWS},
        "paired_h_minus_b": paired,
    }
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    out.with_suffix(".md").write_text(report(res))
    print(report(res))


if __name__ == "__main__":
    main()
