"""Shared by the benchmarks that run many ``ds4d fit`` subprocesses (ablation, scenes).

One fit per (variant, seed) in a subprocess, the run's ``metrics.json`` and median fine-stage
step time collected, then mean ± std over seeds.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# This checkout's package, in this process and in every subprocess: an editable install points
# at the checkout it was made from, so a benchmark run from another worktree would otherwise
# fit with one version and analyse with another (a script's sys.path starts at benchmarks/).
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def add_sweep_arguments(p: argparse.ArgumentParser) -> None:
    """Where a sweep keeps its runs and how it survives an interruption (see :func:`run_fit`)."""
    p.add_argument(
        "--keep_runs",
        default=None,
        help="keep every run directory under this folder (default: a temporary one)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="with --keep_runs: reuse the finished fits of the same arguments found there, "
        "continue interrupted ones from their last checkpoint (or fit them again when they have "
        "none): a sweep cut short by a lost session or a reboot",
    )
    p.add_argument(
        "--checkpoint_every",
        type=int,
        default=None,
        metavar="STEPS",
        help="write checkpoints/last.ckpt every STEPS steps (off by default: a benchmark fit "
        "only saves at its end), so that --resume continues a long fit instead of restarting it",
    )


def check_sweep_arguments(p: argparse.ArgumentParser, a: argparse.Namespace) -> None:
    """The errors of :func:`add_sweep_arguments`' options, through ``p.error``."""
    if a.resume and not a.keep_runs:
        p.error("--resume needs --keep_runs (the folder of the sweep to resume)")
    if a.checkpoint_every is not None and a.checkpoint_every < 1:
        p.error(f"--checkpoint_every must be a positive number of steps, got {a.checkpoint_every}")


def sweep_fit_args(a: argparse.Namespace) -> list[str]:
    """``ds4d fit`` arguments of :func:`add_sweep_arguments`' options (after QUIET_FIT_ARGS)."""
    if a.checkpoint_every is None:
        return []
    return [f"--checkpoint.every_n_train_steps={a.checkpoint_every}"]


def checkout_env(**extra: str) -> dict[str, str]:
    """The environment for a subprocess of this checkout: ``PYTHONPATH`` starts at ``REPO``,
    Hugging Face stays offline, plus ``extra``."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **extra}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


#: Arguments that keep a benchmark fit to training and one final test: no periodic validation,
#: videos, exports or intermediate checkpoints.
QUIET_FIT_ARGS = (
    "--trainer.val_check_interval=100000",
    "--trainer.enable_progress_bar=false",
    "--videos.enabled=false",
    "--export.enabled=false",
    "--checkpoint.every_n_train_steps=100000",
)


def fine_step_ms(run_dir: Path, coarse_steps: int) -> float | None:
    """Median logged step time after the coarse stage (20 steps of warm-up skipped), over every
    log of the run (a fit continued from a checkpoint logs into a new version folder)."""
    values = []
    for log in sorted(run_dir.glob("lightning_logs/*/metrics.csv")):
        with open(log) as fh:
            values += [
                float(r["train/step_ms"])
                for r in csv.DictReader(fh)
                if r.get("train/step_ms") and int(r["step"]) > coarse_steps + 20
            ]
    return statistics.median(values) if values else None


#: Written into a run directory after its fit succeeded: the fit's arguments and what
#: :func:`run_fit` returned, so a resumed sweep can tell a finished run of the same fit apart
#: from an interrupted one or from another sweep's run.
RECORD = "benchmark_fit.json"


class SweepMismatchError(SystemExit):
    """A run directory of a resumed sweep holds a finished run of other arguments."""


def portable(args: list[str]) -> list[str]:
    """``args`` with this checkout's path written ``<checkout>``: a sweep started in one
    worktree can be resumed from another (preset paths are absolute)."""
    return [arg.replace(str(REPO), "<checkout>") for arg in args]


def finished_fit(run_dir: Path, args: list[str]) -> dict | None:
    """What :func:`run_fit` returned for ``args`` in ``run_dir``, if that fit finished there.

    Returns:
        The recorded result, or ``None`` when ``run_dir`` holds no finished run (never started,
        or interrupted before its metrics were written: the caller refits it).

    Raises:
        SweepMismatchError: ``run_dir`` holds a finished run made with other arguments (another
            sweep's, or this sweep's before an option changed): reusing it would mix runs, and
            refitting would destroy it.
    """
    record = run_dir / RECORD
    if not (run_dir / "metrics.json").is_file():
        return None
    if not record.is_file():
        raise SweepMismatchError(
            f"{run_dir} holds a finished run without {RECORD} (not made by a benchmark sweep, or "
            "by one older than --resume): move it away or choose another --keep_runs folder"
        )
    stored = json.loads(record.read_text())
    if stored.get("args") != portable(args):
        theirs, ours = set(stored.get("args", [])), set(portable(args))
        diff = sorted(theirs ^ ours)[:4]
        raise SweepMismatchError(
            f"{run_dir} holds a finished run of other fit arguments (differing: {diff}): "
            "resume with the options of the sweep that made it, or choose another --keep_runs"
        )
    return stored["result"]


def run_fit(
    args: list[str],
    run_dir: Path,
    jobs: int,
    label: str,
    metrics: tuple[str, ...],
    resume: bool = False,
) -> dict:
    """One ``ds4d fit`` in a subprocess; its metrics, wall time, step time and Gaussian count.

    Args:
        args: Everything after ``ds4d fit`` except ``--trainer.default_root_dir``.
        run_dir: The run directory.
        jobs: Fits running at the same time (sets the thread count of each).
        label: Names the run in the error when it fails.
        metrics: Keys of ``metrics.json`` to report.
        resume: Reuse a finished fit of the same arguments in ``run_dir`` (see
            :func:`finished_fit`) and replace an interrupted one, instead of refusing to write
            into a directory that holds a run. For sweeps of many hours that a lost session or a
            reboot cuts short.
    """
    if resume:
        done = finished_fit(run_dir, args)
        if done is not None:
            print(f"{label}: reusing the finished fit in {run_dir}", flush=True)
            return done
    cmd = [sys.executable, "-m", "ds4d_pl.cli", "fit", *args]
    continued = False
    if resume and (run_dir / "config.yaml").is_file():
        # Interrupted before metrics.json. With a checkpoint (--checkpoint_every) the fit goes
        # on from it (a resumed fit matches the uninterrupted one: tests/test_cli_fit.py);
        # without one its partial outputs are replaced.
        continued = (run_dir / "checkpoints" / "last.ckpt").is_file()
        cmd.append("--ckpt_path=last" if continued else "--overwrite")
    cmd.append(f"--trainer.default_root_dir={run_dir}")
    env = checkout_env()
    if jobs > 1:
        # Small tensors scale poorly across threads: one thread per concurrent run gets more
        # runs through the CPU than all threads per run (measured 32 s vs 35 s per run alone).
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-3000:])
        raise SystemExit(f"{label} failed (exit {proc.returncode})")
    report = json.loads((run_dir / "metrics.json").read_text())
    cfg = (run_dir / "config.yaml").read_text()
    coarse = int(cfg.split("coarse_steps:")[1].split()[0])
    result = {k: report[k] for k in metrics}
    result.update(
        wall_s=round(wall, 1),
        step_ms=fine_step_ms(run_dir, coarse),
        num_gaussians=report.get("num_gaussians"),
    )
    if continued:
        result["continued"] = True  # wall_s covers only the part after the checkpoint
    record = {"args": portable(args), "result": result}
    (run_dir / RECORD).write_text(json.dumps(record, indent=2) + "\n")
    return result


def summarise(seeds: list[dict], keys: tuple[str, ...]) -> dict:
    """Mean and sample std over seeds of each key (``None`` values skipped), plus the seeds."""
    out: dict = {}
    for key in keys:
        values = [s[key] for s in seeds if s[key] is not None]
        out[key] = statistics.mean(values) if values else None
        out[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    out["n_seeds"] = len(seeds)
    out["seeds"] = seeds
    return out


def mean_pm(r: dict, key: str, digits: int = 2) -> str:
    """``mean ± std`` of ``key`` in a :func:`summarise` result (``n/a`` when it has none)."""
    if r.get(key) is None:
        return "n/a"
    return f"{r[key]:.{digits}f} ± {r[f'{key}_std']:.{digits}f}"


def paired_seeds(base: list[dict], other: list[dict], key: str) -> tuple[float, float] | None:
    """Mean and std over seeds of ``other − base`` in ``key``, paired by seed (runs without the
    key or without a partner skipped); ``None`` when no pair is left."""
    by_seed = {s["seed"]: s[key] for s in base if s.get(key) is not None}
    diffs = [
        s[key] - by_seed[s["seed"]]
        for s in other
        if s.get(key) is not None and s["seed"] in by_seed
    ]
    if not diffs:
        return None
    return statistics.mean(diffs), statistics.stdev(diffs) if len(diffs) > 1 else 0.0
