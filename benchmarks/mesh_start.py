"""Which framing gauge suits a mesh start whose depth is off: ``init``, ``views`` or ``depth``.

    python benchmarks/mesh_start.py [--seeds 3] [--jobs 2] [--depth_scales 1.0,0.95] \
        [--gauges init,views] [--row row_b] [--keep_runs DIR [--resume]]

An image-to-3D mesh agrees with the input view but its distance from the camera is a guess: the
one error a single input view cannot see. This stands in for it with the synthetic object's true
middle-frame surface points scaled about the input camera's centre by each ``--depth_scales``
factor (0.95: the object 5 % closer and 5 % smaller, its input image unchanged), written as a
point-cloud PLY per seed and given as ``model.init.source=mesh`` (``normalize=false``). Each
(scale, gauge, seed) is one fit of ``--row`` at the ablation budget on the degraded pseudo views
with the learned framing (``benchmarks/ablation.py``'s settings and post-fit analyses). The
``depth_ratio`` column is where the trained model put the object (``post_fit.placement``; 1 is
the true depth). Paired differences are to the first scale with the first gauge. ``depth`` is
``views`` with the object's depth learned as one scale about the input camera
(``model.framing.depth``).

Writes ``--out`` (default ``benchmarks/results/mesh_start.json``) and the ``.md`` next to it.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ablation import SUMMARY_KEYS, add_budget_arguments, run_one
from fit_runs import (
    REPO,
    add_sweep_arguments,
    check_sweep_arguments,
    mean_pm,
    paired_seeds,
    summarise,
)

from ds4d_pl.data.parsers.synthetic import SyntheticConfig, make_synthetic_scene
from ds4d_pl.export.density import save_points_ply

MOTION = "mostly_static"


def write_starts(a: argparse.Namespace, seed: int, scales: list[float], folder: Path) -> dict:
    """The seed's true middle-frame points scaled by each of ``scales`` about the input
    camera, one PLY each: ``{scale: path}``."""
    cfg = SyntheticConfig(
        motion=MOTION,
        seed=seed,
        num_frames=a.frames,
        resolution=a.resolution,
        eval_resolution=a.resolution,
    )
    scene = make_synthetic_scene(cfg)
    centre = scene.train.cameras_at(scene.train.num_frames // 2).c2w[0, :3, 3]
    return {
        x: save_points_ply(
            folder / f"start_s{seed}_x{x}.ply",
            centre + x * (scene.init_points - centre),
            scene.init_colors,
        )
        for x in scales
    }


def one(a: argparse.Namespace, seed: int, scale: float, gauge: str, start: Path, tmp: Path) -> dict:
    run = argparse.Namespace(**vars(a))
    # "depth": the views' gauge with the object's depth learned (model.framing.depth).
    framing = ["--model.framing.gauge=views", "--model.framing.depth=true"]
    run.override = [
        "--model.framing.learn=true",
        *(framing if gauge == "depth" else [f"--model.framing.gauge={gauge}"]),
        "--model.init.source=mesh",
        f"--model.init.path={start}",
        "--model.init.normalize=false",
        *a.override,
    ]
    result = run_one(run, MOTION, a.row, seed, tmp / f"x{scale}_{gauge}")
    return {**result, "depth_scale": scale, "gauge": gauge}


def markdown(runs: dict, a: argparse.Namespace, command: str) -> str:
    first = next(iter(runs))
    lines = [
        f"# Mesh start with a depth error: framing gauge {', '.join(a.gauges.split(','))} "
        f"({a.row})",
        "",
        f"Command: `{command}`. {a.seeds} seeds, {a.coarse_steps} + {a.fine_steps} steps, "
        f"{a.resolution}², {a.frames} frames, {MOTION}, degraded pseudo views, learned framing. "
        "Start: the true middle-frame surface points scaled about the input camera's centre by "
        "the depth scale (`model.init.source=mesh`). Mean ± std over seeds; Δ paired by seed "
        f"with `{first}`. depth = the trained object's depth / the true depth (input camera).",
        "",
        "| start depth | gauge | PSNR | pooled dyn | arm err | depth | Δ PSNR | Δ pooled |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, r in runs.items():
        scale, gauge = label.split(" / ")

        def delta(key: str, r: dict = r) -> str:
            d = paired_seeds(runs[first]["seeds"], r["seeds"], key)
            return "n/a" if d is None else f"{d[0]:+.2f} ± {d[1]:.2f}"

        lines.append(
            f"| {scale} | {gauge} | {mean_pm(r, 'psnr')} | {mean_pm(r, 'dyn_psnr_pooled')} | "
            f"{mean_pm(r, 'arm_error', 3)} | {mean_pm(r, 'depth_ratio', 3)} | {delta('psnr')} | "
            f"{delta('dyn_psnr_pooled')} |"
        )
    lines += ["", "Per seed (PSNR / pooled dyn / depth):", ""]
    for label, r in runs.items():
        cells = ", ".join(
            f"{s['seed']}: {s['psnr']:.2f} / {s['dyn_psnr_pooled']:.2f} / {s['depth_ratio']:.3f}"
            for s in r["seeds"]
        )
        lines.append(f"- {label}: {cells}")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "mesh_start.json"))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--row", default="row_b")
    p.add_argument("--depth_scales", default="1.0,0.95", help="comma-separated factors")
    p.add_argument(
        "--gauges",
        default="init,views",
        help="comma-separated: init, views, depth (views with the object's depth learned, "
        "model.framing.depth)",
    )
    add_budget_arguments(p)
    add_sweep_arguments(p)
    a = p.parse_args()
    check_sweep_arguments(p, a)
    a.pseudo_views = "degraded"
    scales = [float(x) for x in a.depth_scales.split(",")]
    gauges = a.gauges.split(",")
    for g in gauges:
        if g not in ("init", "views", "depth"):
            p.error(f"--gauges: {g!r} is not a gauge (init, views, depth)")
    configs = [(x, g) for x in scales for g in gauges]
    # Seed-major: every configuration meets the same mix of co-running fits.
    tasks = [(s, x, g) for s in range(a.seeds) for x, g in configs]
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(a.jobs) as pool:
        root = Path(a.keep_runs) if a.keep_runs else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        # One start per (seed, scale), shared by the gauges; written identically on a resume, so
        # a kept run's recorded --model.init.path still names its start.
        starts = {s: write_starts(a, s, scales, root) for s in range(a.seeds)}
        futures = [pool.submit(one, a, s, x, g, starts[s][x], root) for s, x, g in tasks]
        done = [f.result() for f in futures]
    runs = {}
    for x, g in configs:
        seeds = sorted(
            (r for r in done if r["depth_scale"] == x and r["gauge"] == g), key=lambda r: r["seed"]
        )
        runs[f"{x} / {g}"] = summarise(seeds, SUMMARY_KEYS)
    out = Path(a.out)
    out.write_text(json.dumps(runs, indent=2) + "\n")
    command = "python benchmarks/mesh_start.py " + " ".join(
        [f"--{k} {getattr(a, k)}" for k in ("seeds", "jobs", "row", "depth_scales", "gauges")]
        + [f"--override={o}" for o in a.override]
    )
    md = markdown(runs, a, command)
    out.with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
