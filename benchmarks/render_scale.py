"""What drawing a fit's Gaussians at another pixel scale than they were fitted at costs, and
what ``ds4d test`` recovers by drawing them at the fitted scale (``benchmark.render_scale``).

    python benchmarks/render_scale.py RUN_DIR [RUN_DIR ...] \\
        --override=--data.synthetic.eval_resolution=64 --out benchmarks/results/X.json

For every finished ``ds4d fit`` run directory, ``ds4d test`` runs twice on a copy of it (the
run's own ``metrics.json`` is never rewritten) with the ``--override`` arguments, once with
``model.benchmark.render_scale=fitted`` and once ``native``. Writes the JSON and a markdown
table next to it: PSNR and pooled dynamic-region PSNR per run and mode, mean ± std over the runs
of each row (the run directory's name without its trailing ``_<seed>``), and the paired
difference fitted − native.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fit_runs import REPO, checkout_env, mean_pm, paired_seeds, summarise

MODES = ("fitted", "native")
KEYS = ("psnr", "dyn_psnr_pooled")


def tested_copy(run_dir: Path, mode: str, overrides: list[str], scratch: Path) -> dict:
    """``ds4d test`` of ``run_dir`` drawn ``mode``, on a copy in ``scratch``; its metrics."""
    copy = scratch / f"{run_dir.name}_{mode}"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("lightning_logs", "metrics.*"))
    cmd = [
        sys.executable,
        "-m",
        "ds4d_pl.cli",
        "test",
        "-c",
        str(copy / "config.yaml"),
        f"--trainer.default_root_dir={copy}",
        f"--ckpt_path={copy / 'checkpoints' / 'last.ckpt'}",
        *overrides,
        f"--model.benchmark.render_scale={mode}",
    ]
    proc = subprocess.run(
        cmd, cwd=REPO, capture_output=True, text=True, env=checkout_env(OMP_NUM_THREADS="1")
    )
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-3000:])
        raise SystemExit(f"ds4d test of {run_dir} ({mode}) failed (exit {proc.returncode})")
    report = json.loads((copy / "metrics.json").read_text())
    return {**{k: report[k] for k in KEYS}, "render_scale": report.get("render_scale")}


def row_of(run_dir: Path) -> tuple[str, int]:
    """``(row, seed)`` from a run directory named ``<row>_<seed>`` (seed 0 when unnumbered)."""
    match = re.fullmatch(r"(.+)_(\d+)", run_dir.name)
    return (match[1], int(match[2])) if match else (run_dir.name, 0)


def markdown(result: dict) -> str:
    lines = [
        "# Drawing at the fitted pixel scale vs natively",
        "",
        f"Command: `python benchmarks/render_scale.py {' '.join(result['command'])}`",
        "",
        "| row | runs | ratio | PSNR fitted | PSNR native | pooled fitted | pooled native |"
        " Δ PSNR | Δ pooled |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row, r in result["rows"].items():
        ratio = r["fitted"]["seeds"][0]["render_scale"]["ratio"]
        lines.append(
            f"| {row} | {r['fitted']['n_seeds']} | {ratio:g} | {mean_pm(r['fitted'], 'psnr')} | "
            f"{mean_pm(r['native'], 'psnr')} | {mean_pm(r['fitted'], 'dyn_psnr_pooled')} | "
            f"{mean_pm(r['native'], 'dyn_psnr_pooled')} | {mean_pm(r, 'd_psnr')} | "
            f"{mean_pm(r, 'd_dyn_psnr_pooled')} |"
        )
    lines += ["", "Δ: fitted − native, paired by run.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dirs", type=Path, nargs="+")
    p.add_argument("--override", action="append", default=[], help="an argument of ds4d test")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    for run_dir in a.run_dirs:
        if not (run_dir / "checkpoints" / "last.ckpt").is_file():
            raise SystemExit(f"{run_dir}: not a finished run (no checkpoints/last.ckpt)")
    jobs = [(d, m) for d in a.run_dirs for m in MODES]
    with (
        tempfile.TemporaryDirectory(prefix="render_scale_") as tmp,
        ThreadPoolExecutor(max(1, a.jobs)) as pool,
    ):
        done = list(pool.map(lambda j: tested_copy(j[0], j[1], a.override, Path(tmp)), jobs))
    runs: dict[str, dict[str, list[dict]]] = {}
    for (run_dir, mode), metrics in zip(jobs, done, strict=True):
        row, seed = row_of(run_dir)
        runs.setdefault(row, {m: [] for m in MODES})[mode].append({"seed": seed, **metrics})
    rows = {}
    for row, by_mode in runs.items():
        r = {m: summarise(by_mode[m], KEYS) for m in MODES}
        for key in KEYS:
            pair = paired_seeds(by_mode["native"], by_mode["fitted"], key)
            r[f"d_{key}"], r[f"d_{key}_std"] = pair
        rows[row] = r
    command = [str(d) for d in a.run_dirs] + [f"--override={o}" for o in a.override]
    result = {"command": command + ["--out", str(a.out)], "rows": rows}
    a.out.write_text(json.dumps(result, indent=2) + "\n")
    a.out.with_suffix(".md").write_text(markdown(result))
    sys.stdout.write(markdown(result))


if __name__ == "__main__":
    main()
