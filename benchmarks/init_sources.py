"""Where the initial Gaussians come from: visual hull vs random sphere vs true surface points.

    python benchmarks/init_sources.py [--seeds 3] [--sources surface,hull,sphere] [--jobs 1] \
        [--num_points 2000] [--out benchmarks/results/init_sources.json] \
        [--override=--key=value ...] [--dry-run]
    python benchmarks/init_sources.py --hull-quality [--seeds 3]

Every (source, seed) is one ``ds4d fit -c configs/demo.yaml`` (the demo budget) in a
subprocess; the initialisation source, ``model.init.source``, is the only difference between
the runs of one seed (all start from ``--num_points`` points). The seed sets the synthetic
object, the Gaussian initialisation and the training randomness alike, so runs of one seed form
a pair and differences between sources are reported per seed (paired) as well as the mean ± std
of each source.

Sources:
  * ``surface``: ``model.init.source=auto``, which on the synthetic object uses its analytic
    surface samples of the middle frame (the stand-in for an image-to-3D mesh): the upper bound.
  * ``hull``: the visual hull of the input and pseudo views (``ds4d_pl.gaussians.hull``): what a
    user's video without a mesh gets.
  * ``sphere``: uniform random points in a sphere: the fallback the hull replaces.

Writes the JSON and a markdown table ``benchmarks/results/<stem of --out>.md``. ``--dry-run``
lists the ``ds4d fit`` commands and runs nothing.

``--hull-quality`` trains nothing: it carves the hull of each synthetic object's middle frame,
from oracle and from degraded (Zero123++-like) pseudo views, with the default
:class:`~ds4d_pl.gaussians.hull.HullConfig` and two stricter settings, and measures it against
the object's true surface into ``benchmarks/results/init_sources_hull.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from fit_runs import QUIET_FIT_ARGS, REPO, run_fit, summarise

if TYPE_CHECKING:  # torch only for --hull-quality: listing runs stays light
    import torch

    from ds4d_pl.gaussians.hull import VoxelGrid

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
        # The same number of starting points from every source.
        f"--model.init.num={a.num_points}",
        f"--data.synthetic.num_init_points={a.num_points}",
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


MOTIONS = ("static_only", "mostly_static", "dynamic_only")
#: Radius of the random-sphere init in configs/demo.yaml (model.init.radius).
SPHERE_RADIUS = 0.6
#: Hull settings compared by --hull-quality: HullConfig overrides.
HULL_SETTINGS = {
    "default": {},
    "no margin": {"pseudo_margin": 0.0},
    "strict": {"pseudo_margin": 0.0, "max_misses": 0},
}
#: Pseudo views: oracle renders, or degraded like Zero123++ output (configs/data/
#: synthetic_degraded.yaml's defects; not aligned, the worst case).
PSEUDO_VIEWS = ("oracle", "degraded")


def _nearest(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Distance from each row of ``a`` to its nearest row of ``b``, and that row's index."""
    import torch

    dist, idx = [], []
    for start in range(0, len(a), 2048):
        m = torch.cdist(a[start : start + 2048], b).min(dim=1)
        dist.append(m.values)
        idx.append(m.indices)
    return torch.cat(dist), torch.cat(idx)


def _within(
    points: torch.Tensor, mask: torch.Tensor, grid: VoxelGrid, voxels: float
) -> torch.Tensor:
    """Whether each point lies within ``voxels`` (<= 2) of the centre of a ``mask`` voxel."""
    import torch

    ijk, _ = grid.index_of(points)
    steps = torch.arange(-2, 3)
    offsets = torch.stack(torch.meshgrid(steps, steps, steps, indexing="ij"), -1)
    out = torch.zeros(len(points), dtype=torch.bool)
    for offset in offsets.reshape(-1, 3):
        n = ijk + offset
        valid = ((n >= 0) & (n < grid.resolution)).all(-1)
        n = n.clamp(0, grid.resolution - 1)
        centre = grid.lo + (n.float() + 0.5) * grid.voxel_size
        close = (centre - points).norm(dim=-1) <= voxels * grid.voxel_size
        out |= valid & close & mask[n[:, 0], n[:, 1], n[:, 2]]
    return out


def hull_quality(seeds: int) -> None:
    """The hull of each synthetic object's middle frame against its true surface (no training).

    "Covered": a true surface point within 1.5 voxels of an occupied voxel centre. "Tight":
    within 1.5 voxels of a *surface* voxel centre (the hull does not bulge there). Colour error:
    mean absolute difference between a hull point's colour and the nearest true point's, over
    hull points within 1.5 voxels of the true surface (elsewhere there is no true colour).
    """
    import time

    import torch

    from ds4d_pl.data.parsers.degrade import DegradeConfig
    from ds4d_pl.data.parsers.synthetic import (
        SyntheticConfig,
        make_synthetic_scene,
        sample_synthetic_surface,
    )
    from ds4d_pl.gaussians.hull import HullConfig, carve, hull_points_from_views, surface_voxels

    rows = []
    for pseudo in PSEUDO_VIEWS:
        for motion in MOTIONS:
            for seed in range(seeds):
                # Demo resolution (128²), 16 frames; the degraded defects drawn with the seed.
                cfg = SyntheticConfig(
                    motion=motion,
                    seed=seed,
                    pseudo_views=pseudo,
                    degrade=DegradeConfig(seed=seed),
                )
                scene = make_synthetic_scene(cfg)
                frame = scene.train.num_frames // 2
                true_p, true_c = sample_synthetic_surface(
                    cfg, float(scene.train.times[frame]), 20000, seed=1
                )
                g = torch.Generator().manual_seed(seed)
                sphere = torch.nn.functional.normalize(torch.randn(4000, 3, generator=g), dim=-1)
                sphere *= SPHERE_RADIUS * torch.rand(4000, 1, generator=g) ** (1 / 3)
                sphere_to_true, _ = _nearest(sphere, true_p)
                alpha, cams = scene.train.alpha[:, frame], scene.train.cameras_at(frame)
                for setting, overrides in HULL_SETTINGS.items():
                    hull_cfg = HullConfig(**overrides)
                    start = time.perf_counter()
                    points, colors = hull_points_from_views(scene.train, frame, hull_cfg)
                    seconds = time.perf_counter() - start
                    occ, grid = carve(alpha, cams, hull_cfg)
                    vs = grid.voxel_size
                    to_true, idx = _nearest(points, true_p)
                    near = to_true <= 1.5 * vs
                    err = (colors[near] - true_c[idx[near]]).abs().mean()
                    guess = (true_c.mean(0) - true_c[idx[near]]).abs().mean()
                    tight = _within(true_p, surface_voxels(occ), grid, 1.5)
                    rows.append(
                        {
                            "pseudo_views": pseudo,
                            "motion": motion,
                            "seed": seed,
                            "setting": setting,
                            "hull_config": overrides,
                            "seconds": round(seconds, 2),
                            "voxel_size": vs,
                            "occupied_voxels": int(occ.sum()),
                            "points": len(points),
                            "true_covered": float(_within(true_p, occ, grid, 1.5).float().mean()),
                            "true_tight": float(tight.float().mean()),
                            "hull_points_median_dist": float(to_true.median()),
                            "hull_points_median_dist_vox": float(to_true.median() / vs),
                            "hull_points_within_1.5vox": float(near.float().mean()),
                            "color_mae": float(err),
                            "color_mae_mean_color_guess": float(guess),
                            "sphere_points_median_dist": float(sphere_to_true.median()),
                        }
                    )
                    print(rows[-1], flush=True)
    out = REPO / "benchmarks" / "results" / "init_sources_hull.json"
    out.write_text(json.dumps(rows, indent=2) + "\n")
    md = hull_quality_markdown(rows)
    out.with_suffix(".md").write_text(md)
    print(md)


def hull_quality_markdown(rows: list[dict]) -> str:
    lines = [
        "# Visual hull of the synthetic objects' middle frame vs their true surface",
        "",
        "`python benchmarks/init_sources.py --hull-quality`: the hull (128³ voxels, 4000 points) "
        "of the 7 training views at 128², no training; mean over seeds (and the worst seed's "
        "coverage). Settings: default `HullConfig` (max_misses=1, pseudo_margin=0.02, input "
        "trusted); `no margin` (pseudo_margin=0); `strict` (also max_misses=0). Degraded pseudo "
        "views: `configs/data/synthetic_degraded.yaml`'s Zero123++-like defects, not aligned. "
        "Distances to the true surface (20000 analytic samples); covered / tight: true points "
        "within 1.5 voxels of the hull / of its surface voxels. A random sphere (radius "
        f"{SPHERE_RADIUS}, the demo's sphere init) has median distance "
        f"{statistics.mean(r['sphere_points_median_dist'] for r in rows):.3f} for scale.",
        "",
        "| pseudo views | motion | setting | n | covered (worst) | tight | hull pts median dist "
        "| hull pts ≤ 1.5 vox | colour MAE (guess) | s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for pseudo in PSEUDO_VIEWS:
        for motion in MOTIONS:
            for setting in HULL_SETTINGS:
                sel = [
                    r
                    for r in rows
                    if (r["pseudo_views"], r["motion"], r["setting"]) == (pseudo, motion, setting)
                ]
                if not sel:
                    continue

                def mean(key: str, sel: list[dict] = sel) -> float:
                    return statistics.mean(r[key] for r in sel)

                worst = min(r["true_covered"] for r in sel)
                lines.append(
                    f"| {pseudo} | {motion} | {setting} | {len(sel)} | "
                    f"{mean('true_covered'):.3f} ({worst:.3f}) | {mean('true_tight'):.3f} | "
                    f"{mean('hull_points_median_dist'):.4f} "
                    f"({mean('hull_points_median_dist_vox'):.1f} vox) | "
                    f"{mean('hull_points_within_1.5vox'):.3f} | {mean('color_mae'):.3f} "
                    f"({mean('color_mae_mean_color_guess'):.3f}) | {mean('seconds'):.1f} |"
                )
    return "\n".join(lines) + "\n"


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
    p.add_argument("--num_points", type=int, default=2000, help="initial points of every source")
    p.add_argument("--jobs", type=int, default=1, help="runs in parallel (seed-major order)")
    p.add_argument("--dry-run", action="store_true", help="list the ds4d fit commands only")
    p.add_argument(
        "--hull-quality", action="store_true", help="measure the hull's geometry only, no fits"
    )
    a = p.parse_args(argv)
    a.sources = [s for s in a.sources.split(",") if s]
    unknown = [s for s in a.sources if s not in SOURCES]
    if unknown or not a.sources:
        p.error(f"--sources: unknown {unknown or 'empty list'}; choose from {list(SOURCES)}")
    if a.seeds < 1:
        p.error(f"--seeds must be >= 1, got {a.seeds}")
    if a.num_points < 1:
        p.error(f"--num_points must be >= 1, got {a.num_points}")
    if a.jobs < 1:
        p.error(f"--jobs must be >= 1, got {a.jobs}")
    if not (REPO / a.config).is_file():
        p.error(f"--config: {REPO / a.config} does not exist")
    return a


def main(argv: list[str] | None = None) -> None:
    a = parse_args(argv)
    if a.hull_quality:
        hull_quality(a.seeds)
        return
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
