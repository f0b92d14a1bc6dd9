"""Where the initial Gaussians come from: visual hull vs random sphere vs true surface points.

    python benchmarks/init_sources.py [--seeds 3] [--sources surface,hull,sphere] [--jobs 1] \
        [--out benchmarks/results/init_sources.json] [--override=--key=value ...] [--dry-run]

Every (source, seed) is one ``ds4d fit -c configs/demo.yaml`` (the demo budget) in a
subprocess; the initialisation source, ``model.init.source``, is the only difference between
the runs of one seed. The seed sets the synthetic object, the Gaussian initialisation and the
training randomness alike, so runs of one seed form a pair and differences between sources are
reported per seed (paired) as well as the mean ± std of each source.

Sources:
  * ``surface``: ``model.init.source=auto``, which on the synthetic object uses its analytic
    surface samples of the middle frame (the stand-in for an image-to-3D mesh): the upper bound.
  * ``hull``: the visual hull of the input and pseudo views (``ds4d_pl.gaussians.hull``): what a
    user's video without a mesh gets.
  * ``sphere``: uniform random points in a sphere: the fallback the hull replaces.

Writes the JSON and a markdown table ``benchmarks/results/<stem of --out>.md``. ``--dry-run``
lists the ``ds4d fit`` commands and runs nothing.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fit_runs import QUIET_FIT_ARGS, REPO, run_fit, summarise

#: The ``ds4d fit`` arguments that select each source; everything else is shared.
SOURCES: dict[str, tuple[str, ...]] = {
    "surface": ("--model.init.source=auto",),
    "hull": ("--model.init.source=hull",),
    "sphere": ("--model.init.source=sphere",),
}
METRICS = ("psnr", "dyn_psnr")
#: Paired differences reported (first minus second).
PAIRS = (("hull", "sphere"), ("hull", "surface"), ("sphere", "surface"))


def fit_args(a: argparse.Namespace, source: str, seed: int) -> list[str]:
    """``ds4d fit`` arguments of one run (without the run directory)."""
    return [
        "-c",
        a.config,
        *SOURCES[source],
        f"--data.synthetic.seed={seed}",
        f"--model.seed={seed}",
        f"--seed_everything={seed}",
        *QUIET_FIT_ARGS,
        *a.override,
    ]


def run_one(a: argparse.Namespace, source: str, seed: int, tmp: Path) -> dict:
    run_dir = tmp / f"{source}_{seed}"
    result = run_fit(fit_args(a, source, seed), run_dir, a.jobs, f"{source}/seed {seed}", METRICS)
    report = json.loads((run_dir / "metrics.json").read_text())
    # What the run says it used: "auto" resolves to a file, the scene's points or the hull.
    return {**result, "seed": seed, "init_source": report.get("init_source")}


def paired(runs: dict[str, list[dict]], first: str, second: str) -> dict:
    """Per-seed differences ``first - second`` of each metric: mean, sample std and n."""
    by_seed = {r["seed"]: r for r in runs[second]}
    out: dict = {}
    for key in METRICS:
        diffs = [
            r[key] - by_seed[r["seed"]][key]
            for r in runs[first]
            if r["seed"] in by_seed and r[key] is not None and by_seed[r["seed"]][key] is not None
        ]
        out[key] = statistics.mean(diffs) if diffs else None
        out[f"{key}_std"] = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
        out[f"{key}_n"] = len(diffs)
    return out


def _pm(mean: float | None, std: float) -> str:
    return "n/a" if mean is None else f"{mean:.2f} ± {std:.2f}"


def markdown(results: dict, a: argparse.Namespace) -> str:
    lines = [
        "# Initial points: visual hull vs random sphere vs true surface",
        "",
        f"`ds4d fit -c {a.config}` (the demo budget) per source and seed; mean ± sample std over "
        "seeds. Paired differences are taken per seed (same object, same training seed).",
        "",
        "| source | n | PSNR | dyn PSNR | Gaussians | wall s |",
        "|---|---|---|---|---|---|",
    ]
    for source, r in results["sources"].items():
        counts = [s["num_gaussians"] for s in r["seeds"] if s["num_gaussians"] is not None]
        gaussians = f"{statistics.mean(counts):.0f}" if counts else "n/a"
        wall = statistics.mean(s["wall_s"] for s in r["seeds"])
        lines.append(
            f"| {source} | {r['n_seeds']} | {_pm(r['psnr'], r['psnr_std'])} | "
            f"{_pm(r['dyn_psnr'], r['dyn_psnr_std'])} | {gaussians} | {wall:.0f} |"
        )
    lines += ["", "| paired difference | n | Δ PSNR | Δ dyn PSNR |", "|---|---|---|---|"]
    for name, d in results["paired"].items():
        lines.append(
            f"| {name} | {d['psnr_n']} | {_pm(d['psnr'], d['psnr_std'])} | "
            f"{_pm(d['dyn_psnr'], d['dyn_psnr_std'])} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "init_sources.json"))
    p.add_argument("--config", default="configs/demo.yaml", help="relative to the repository")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..n-1 (at least 3 for a std)")
    p.add_argument("--sources", default=",".join(SOURCES))
    p.add_argument(
        "--override",
        action="append",
        default=[],
        help="extra ds4d fit argument for every run, e.g. --override=--model.init.num=4000",
    )
    p.add_argument("--jobs", type=int, default=1, help="runs in parallel (seed-major order)")
    p.add_argument("--dry-run", action="store_true", help="list the ds4d fit commands only")
    a = p.parse_args(argv)
    a.sources = [s for s in a.sources.split(",") if s]
    unknown = [s for s in a.sources if s not in SOURCES]
    if unknown or not a.sources:
        p.error(f"--sources: unknown {unknown or 'empty list'}; choose from {list(SOURCES)}")
    if a.seeds < 1:
        p.error(f"--seeds must be >= 1, got {a.seeds}")
    if a.jobs < 1:
        p.error(f"--jobs must be >= 1, got {a.jobs}")
    if not (REPO / a.config).is_file():
        p.error(f"--config: {REPO / a.config} does not exist")
    return a


def main(argv: list[str] | None = None) -> None:
    a = parse_args(argv)
    # Seed-major order: every source sees the same mix of co-running jobs and CPU throttling.
    tasks = [(source, seed) for seed in range(a.seeds) for source in a.sources]
    if a.dry_run:
        for source, seed in tasks:
            args = [*fit_args(a, source, seed), f"--trainer.default_root_dir=<tmp>/{source}_{seed}"]
            print(shlex.join(["ds4d", "fit", *args]))
        return
    runs: dict[str, list[dict]] = {s: [] for s in a.sources}
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(max_workers=a.jobs) as pool:
        futures = [(t, pool.submit(run_one, a, *t, Path(tmp))) for t in tasks]
        for (source, _seed), fut in futures:
            result = fut.result()
            print(source, result, flush=True)
            runs[source].append(result)
    results = {
        "config": a.config,
        "overrides": a.override,
        "sources": {
            s: summarise(sorted(runs[s], key=lambda r: r["seed"]), (*METRICS, "step_ms"))
            for s in a.sources
        },
        "paired": {f"{x} - {y}": paired(runs, x, y) for x, y in PAIRS if x in runs and y in runs},
    }
    out_path = Path(a.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(results, indent=2) + "\n")
    md_path = REPO / "benchmarks" / "results" / f"{out_path.stem}.md"
    md_path.write_text(markdown(results, a) + "\n")
    print(markdown(results, a))


if __name__ == "__main__":
    main()
