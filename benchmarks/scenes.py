"""DS4D conditioning vs the 4D-GS baseline on a synthetic D-NeRF or N3DV scene, several seeds.

    python benchmarks/scenes.py --format n3dv [--seeds 3] [--jobs 1] [--curve]
    python benchmarks/scenes.py --format dnerf

Scenes (written with ``ds4d synth``, exact moving-part masks):

* ``n3dv`` — the mostly static object in a textured room, a fixed arc of ``--cameras`` cameras
  (``cam00``, in the middle, held out), ``--frames`` frames at ``--resolution`` x 3/4; about
  1 % of each frame moves (``synthetic.json`` next to the frames says exactly how much).
* ``dnerf`` — the object seen by a camera that moves every frame, ``--frames`` training images
  and 20 test images at ``--resolution``².

Each (variant, seed) is one ``ds4d fit -c configs/scene/<format>.yaml -c <variant>`` in a
subprocess: DS4D-DA (``configs/ablation/row_h.yaml``), without DSFD, without TSSF, and the 4D-GS
baseline (row B, ``configs/ablation/row_b.yaml``). The preset's settings (4D-GS's, step counts
/ 10: ``benchmarks/results/scenes_presets.md``) are used as they are, with two exceptions for
N3DV: the HexPlane has as many time samples as the clip has frames (``--time_resolution``).
The preset maps the clip onto half of its time axis, as 4D-GS does, so that is one sample every
two frames; 4D-GS's frames / 2 (150 for N3DV's 300 frames) is one every four, which on a
12-frame clip of one swing leaves under three intervals for the motion and slows the baseline's
learning by about a budget doubling (``scenes_findings.md``). The Gaussian count is limited for a
CPU (``CPU_LIMITS``: 5000 initial points, at most 20000). Reported on the
held-out camera or test split: PSNR, SSIM, dynamic-region PSNR (exact masks), LPIPS when its
weights are present, as mean ± std over seeds and as per-seed differences to the baseline
(same seed, same initial points and samples), plus wall time and median fine-stage step time.

``--merge A.json B.json ...`` fits nothing: it builds one table from results files of the same
scene written earlier (seeds added later with ``--first_seed``, variants run separately).

``--budget F`` fits the variants at F times the preset's step budget (the same keys as the
curve scales), to compare them where the baseline has plateaued. ``--merge`` accepts
``--curve`` files too (their points are baseline runs) and refuses files of different budgets.

``--curve`` then fits the baseline at several step budgets (``--budgets`` times the preset's
schedule, densification and opacity-reset steps scaled alike) and records its dynamic-region
PSNR, to show where the baseline plateaus.

Writes ``--out`` (default ``benchmarks/results/scenes_<format>.json``, ``scenes.json`` for
dnerf) and the same stem ``.md`` next to it; the curve goes to ``<stem>_curve.{json,md}``.

Long fits (a budget of 4x or more is hours on a CPU) survive an interrupted session with
``--keep_runs DIR --checkpoint_every 500``: the same command plus ``--resume`` reuses the scene
and the finished fits in ``DIR`` and continues the others from their last checkpoint.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml
from fit_runs import (
    QUIET_FIT_ARGS,
    REPO,
    add_sweep_arguments,
    check_sweep_arguments,
    checkout_env,
    mean_pm,
    run_fit,
    summarise,
    sweep_fit_args,
)

ABLATIONS = REPO / "configs" / "ablation"
VARIANTS = {
    "ds4d_da": ["-c", str(ABLATIONS / "row_h.yaml")],
    "wo_dsfd": ["-c", str(ABLATIONS / "wo_dsfd.yaml")],
    "wo_tssf": ["-c", str(ABLATIONS / "wo_tssf.yaml")],
    "baseline": ["-c", str(ABLATIONS / "row_b.yaml")],
}
METRICS = ("psnr", "ssim", "dyn_psnr", "lpips")
# Higher is better for every metric except LPIPS.
LOWER_IS_BETTER = {"lpips"}
# Scene-size limits for a CPU, applied before --override (which can lift them). The N3DV
# preset's deformation MLP (4D-GS's width 128, five heads) on 4 images per step dominates a
# CPU step, and its cost grows with the Gaussian count: 20000 Gaussians measured 4.9 s per
# step at 128x96 on 2 shared cores, so the benchmark starts from 5000 of the room's points and
# caps growth at 20000.
CPU_LIMITS = {
    "n3dv": ["--data.n3dv.num_init_points=5000", "--model.densify.max_gaussians=20000"],
    "dnerf": [],
}
# D-NeRF only: the target for the scene preset.
TARGET_PSNR = 25.0
TARGET_SECONDS = 600.0
# Preset schedule keys that --curve scales with the budget (step counts, not the interval:
# densification statistics are gathered over a fixed number of steps). densify.stop_step is not
# listed: the presets interpolate it from the schedule, so it follows coarse_steps/fine_steps.
SCALED_STEPS = (
    ("schedule", "coarse_steps"),
    ("schedule", "fine_steps"),
    ("densify", "start_step"),
    ("densify", "reset_opacity_interval"),
)


def preset(fmt: str) -> Path:
    return REPO / "configs" / "scene" / f"{fmt}.yaml"


def preset_model(fmt: str) -> dict:
    """The ``model`` section of the scene preset, as written (no overrides)."""
    return yaml.safe_load(preset(fmt).read_text())["model"]


def time_record(a: argparse.Namespace) -> dict:
    """What a results entry or curve point records of the time axis (N3DV only): enough to
    state it as frames per sample without the command line that fitted it."""
    if a.time_resolution is None:
        return {}
    return {
        "time_resolution": a.time_resolution,
        "frames": a.frames,
        "half_time_range": a.half_time_range,
    }


def write_scene(root: Path, a: argparse.Namespace) -> None:
    """``ds4d synth`` into ``root``; written beside it and renamed, so ``root`` is complete."""
    partial = root.with_name(root.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)  # an interrupted earlier write
    cmd = [sys.executable, "-m", "ds4d_pl.cli", "synth", "--format", a.format]
    cmd += ["--out", str(partial)]
    cmd += [f"--motion={a.motion}", f"--num_frames={a.frames}", f"--resolution={a.resolution}"]
    if a.format == "n3dv":
        cmd += [f"--num_cameras={a.cameras}", "--background=room"]
    subprocess.run(cmd, cwd=REPO, check=True, capture_output=True, env=checkout_env())
    partial.rename(root)


def check_time_resolution(p: argparse.ArgumentParser, a: argparse.Namespace) -> None:
    """Settle ``a.time_resolution``: the frame count unless given, N3DV only, and never
    also set through ``--override`` (the results would record a value the fits did not use)."""
    if any(o.startswith("--model.field.time_resolution") for o in a.override):
        p.error("set the HexPlane's time samples with --time_resolution, not --override")
    if a.format != "n3dv":
        if a.time_resolution is not None:
            p.error("--time_resolution is for --format n3dv (the D-NeRF preset sets its own)")
        return
    if a.time_resolution is None:
        a.time_resolution = a.frames
    if a.time_resolution < 2:
        p.error(f"--time_resolution must be at least 2 samples, got {a.time_resolution}")
    a.half_time_range = half_time_range(p, a)


def half_time_range(p: argparse.ArgumentParser, a: argparse.Namespace) -> bool:
    """The fits' ``half_time_range``: the preset's, or the last ``--override`` of it (``ds4d
    fit`` applies overrides in order)."""
    half = preset_model(a.format)["field"]["half_time_range"]
    key = "--model.field.half_time_range="
    for o in a.override:
        if o == key[:-1]:
            p.error(f"write {key}VALUE as one --override, so the results record what was fitted")
        if o.startswith(key):
            half = yaml.safe_load(o[len(key) :])
    if not isinstance(half, bool):
        p.error(f"{key} takes true or false, got {half!r}")
    return half


def scene_args(a: argparse.Namespace, scene: Path) -> list[str]:
    """Data arguments of every fit: the scene, read at the size it was written."""
    if a.format == "n3dv":
        # The scene is written at the training size.
        return [
            f"--data.root={scene}",
            "--data.n3dv.downscale=1",
            f"--model.field.time_resolution={a.time_resolution}",
        ]
    return [f"--data.root={scene}"]


def run_one(
    a: argparse.Namespace,
    variant: str,
    seed: int,
    scene: Path,
    tmp: Path,
    extra: list[str] | None = None,
    tag: str = "",
) -> dict:
    extra = extra or []
    args = [
        "-c",
        str(preset(a.format)),
        *VARIANTS[variant],
        *scene_args(a, scene),
        f"--model.seed={seed}",
        f"--seed_everything={seed}",
        *QUIET_FIT_ARGS,
        *sweep_fit_args(a),
        *CPU_LIMITS[a.format],
        *a.override,
        *extra,  # last: a curve's step budget wins over --override
    ]
    label = f"{variant}/seed {seed}" + (f" ({tag})" if tag else "")
    run_dir = tmp / f"{variant}_{seed}{'_' + tag if tag else ''}"
    result = run_fit(args, run_dir, a.jobs, label, (), resume=a.resume)
    report = json.loads((run_dir / "metrics.json").read_text())
    for key in METRICS:
        value = report.get(key)
        # A metric without its weights is a string saying so ("n/a (missing weights: ...)").
        result[key] = float(value) if isinstance(value, int | float) else None
        if value is not None and result[key] is None:
            result[f"{key}_note"] = str(value)
    return {**result, "seed": seed}


def paired(variant: list[dict], baseline: list[dict]) -> dict:
    """Per-seed differences ``variant - baseline`` of every metric: mean, std, wins."""
    by_seed = {r["seed"]: r for r in baseline}
    out: dict = {}
    for key in METRICS:
        diffs = [
            r[key] - by_seed[r["seed"]][key]
            for r in variant
            if r["seed"] in by_seed and r[key] is not None and by_seed[r["seed"]][key] is not None
        ]
        if not diffs:
            out[key] = None
            continue
        better = [(-d if key in LOWER_IS_BETTER else d) > 0 for d in diffs]
        out[key] = {
            "mean": statistics.mean(diffs),
            "std": statistics.stdev(diffs) if len(diffs) > 1 else 0.0,
            "n": len(diffs),
            "better": sum(better),
            "per_seed": diffs,
        }
    return out


def summarise_variant(seeds: list[dict], fmt: str) -> dict:
    out = summarise(seeds, (*METRICS, "step_ms", "wall_s", "num_gaussians"))
    if fmt == "dnerf":
        out["target_met"] = all(
            s["psnr"] >= TARGET_PSNR and s["wall_s"] < TARGET_SECONDS for s in seeds
        )
    return out


def scene_line(a: argparse.Namespace, scene: Path) -> str:
    if a.format == "dnerf":
        return (
            f"Scene: `ds4d synth --format dnerf --motion {a.motion}` ({a.frames} training images "
            f"at {a.resolution}², camera moving every frame; 20 test images)."
        )
    info = json.loads((scene / "synthetic.json").read_text())
    mf = info["moving_fraction"]
    w, h = info["resolution"]
    return (
        f"Scene: `ds4d synth --format n3dv --background room --motion {a.motion}` ({a.cameras} "
        f"cameras, {a.frames} frames at {w}x{h}; cam00 held out). Moving part per frame: "
        f"{100 * mf['per_frame_mean']:.2f} % of the pixels on average "
        f"({100 * mf['per_frame_min']:.2f}-{100 * mf['per_frame_max']:.2f} %), "
        f"{100 * mf['union_over_time_mean']:.2f} % over the clip."
    )


def frames_per_sample(frames: int, time_resolution: int, half: bool) -> float:
    """Frames of the clip per interval of the HexPlane's time axis. With ``half_time_range``
    (the N3DV preset's and 4D-GS's: ``t`` in [0, 1] on a [-1, 1] grid) the clip spans only half
    of the samples, so ``time_resolution = frames`` is one sample every two frames."""
    intervals = (time_resolution - 1) / (2 if half else 1)
    return (frames - 1) / intervals


def time_text(a: argparse.Namespace) -> str:
    """The HexPlane's time samples as a clause of a table's header (N3DV only)."""
    if a.format != "n3dv":
        return ""
    if a.time_resolution is None:
        return "HexPlane time samples not recorded in every merged file; "
    every = frames_per_sample(a.frames, a.time_resolution, a.half_time_range)
    stated = (
        "; `--time_resolution` of the merge for the files that do not record it"
        if a.time_stated
        else ""
    )
    return (
        f"HexPlane time samples: {a.time_resolution} (over the {a.frames}-frame clip one every "
        f"{every:.1f} frames; 4D-GS's N3DV setting: one every 4.0{stated}); "
    )


def markdown(results: dict, diffs: dict, a: argparse.Namespace, scene_text: str) -> str:
    split = "held-out camera cam00" if a.format == "n3dv" else "test split"
    lines = [
        f"# DS4D conditioning vs the 4D-GS baseline on a synthetic {a.format} scene",
        "",
        scene_text,
        "",
        f"`ds4d fit -c configs/scene/{a.format}.yaml -c configs/ablation/<variant>.yaml` "
        "(DS4D-DA: row_h, baseline: row_b)"
        + (
            f" at {a.budget:g}x the preset's step budget ({budget_args(a.format, a.budget)[1]} "
            "steps; coarse, fine, densification and opacity-reset steps scaled alike); "
            if a.budget != 1
            else "; "
        )
        + time_text(a)
        + f"metrics on the {split}, mean ± std over seeds; dynamic PSNR over the exact "
        "moving-part masks; wall time of fit + test"
        + (f"; CPU limits: `{' '.join(CPU_LIMITS[a.format])}`" if CPU_LIMITS[a.format] else "")
        + (f", {a.jobs} runs sharing the CPU." if a.jobs > 1 else ", one run at a time."),
        "",
        "| variant | n | PSNR | SSIM | dyn PSNR | LPIPS | wall s | step ms | Gaussians |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        step = "n/a" if r["step_ms"] is None else f"{r['step_ms']:.0f}"
        gaussians = "n/a" if r["num_gaussians"] is None else f"{r['num_gaussians']:.0f}"
        lines.append(
            f"| {name} | {r['n_seeds']} | {mean_pm(r, 'psnr', 2)} | {mean_pm(r, 'ssim', 4)} | "
            f"{mean_pm(r, 'dyn_psnr', 2)} | {mean_pm(r, 'lpips', 4)} | {r['wall_s']:.0f} | "
            f"{step} | {gaussians} |"
        )
    if diffs:
        lines += [
            "",
            "Paired differences to the baseline (same seed): mean ± std, and how many seeds the "
            "variant is better on.",
            "",
            "| variant | Δ PSNR | Δ SSIM | Δ dyn PSNR | Δ LPIPS |",
            "|---|---|---|---|---|",
        ]
        for name, d in diffs.items():
            cells = []
            for key, digits in (("psnr", 2), ("ssim", 4), ("dyn_psnr", 2), ("lpips", 4)):
                x = d[key]
                cells.append(
                    "n/a"
                    if x is None
                    else f"{x['mean']:+.{digits}f} ± {x['std']:.{digits}f} ({x['better']}/{x['n']})"
                )
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    unrecorded = sorted({p for r in results.values() for p in r.get("scene_not_recorded_in", [])})
    if unrecorded:
        lines += [
            "",
            f"Merged; the scene is not recorded in {', '.join(f'`{p}`' for p in unrecorded)} "
            "(a --curve file from before curve files recorded it), which the same command wrote.",
        ]
    if a.format == "dnerf" and results:
        met = ", ".join(f"{n}: {'yes' if r['target_met'] else 'no'}" for n, r in results.items())
        lines += ["", f"Test PSNR ≥ {TARGET_PSNR:g} dB in under 10 minutes: {met}."]
    return "\n".join(lines) + "\n"


def budget_args(fmt: str, factor: float) -> tuple[list[str], int]:
    """Overrides scaling the preset's step counts by ``factor``, and the total steps."""
    cfg = preset_model(fmt)
    args = []
    for group, key in SCALED_STEPS:
        value = int(cfg[group][key])
        if value > 0:
            # At least one step, so a non-zero setting never turns into "off".
            args.append(f"--model.{group}.{key}={max(1, round(value * factor))}")
    steps = sum(
        max(1, round(int(cfg["schedule"][k]) * factor)) for k in ("coarse_steps", "fine_steps")
    )
    return args, steps


def curve_markdown(points: list[dict], a: argparse.Namespace, scene_text: str) -> str:
    lines = [
        f"# 4D-GS baseline (row B) against the step budget, synthetic {a.format} scene",
        "",
        scene_text,
        "",
        f"Budget = multiple of `configs/scene/{a.format}.yaml`'s schedule (coarse, fine, "
        "densification and opacity-reset steps scaled alike); "
        + time_text(a)
        + "mean ± std over seeds.",
        "",
        "| budget | steps | dyn PSNR | PSNR | SSIM | wall s |",
        "|---|---|---|---|---|---|",
    ]
    for p in points:
        lines.append(
            f"| {p['budget']:g}x | {p['steps']} | {mean_pm(p, 'dyn_psnr', 2)} | "
            f"{mean_pm(p, 'psnr', 2)} | {mean_pm(p, 'ssim', 4)} | {p['wall_s']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def run_curve(a: argparse.Namespace, scene: Path, tmp: Path, out_path: Path, text: str) -> None:
    budgets = [float(x) for x in a.budgets.split(",")]
    if any(b <= 0 for b in budgets):
        raise SystemExit(f"--budgets must be positive multiples, got {a.budgets}")
    tasks = [(b, s) for b in budgets for s in range(a.first_seed, a.first_seed + a.seeds)]
    with ThreadPoolExecutor(max_workers=a.jobs) as pool:
        futures = [
            (
                b,
                pool.submit(
                    run_one, a, "baseline", s, scene, tmp, budget_args(a.format, b)[0], f"x{b:g}"
                ),
            )
            for b, s in tasks
        ]
        done: dict[float, list[dict]] = {}
        for b, fut in futures:
            done.setdefault(b, []).append(fut.result())
    points = []
    for b in budgets:
        point = summarise(done[b], (*METRICS, "wall_s"))
        points.append(
            {
                "budget": b,
                "steps": budget_args(a.format, b)[1],
                "scene": text,
                **time_record(a),
                **point,
            }
        )
    curve_json = out_path.with_name(f"{out_path.stem}_curve.json")
    curve_json.write_text(json.dumps(points, indent=2) + "\n")
    md = curve_markdown(points, a, text)
    curve_json.with_suffix(".md").write_text(md)
    print(md)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--format", default="dnerf", choices=["dnerf", "n3dv"])
    p.add_argument("--out", default=None, help="results JSON (the .md is written next to it)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument(
        "--first_seed", type=int, default=0, help="seeds are first_seed .. first_seed+seeds-1"
    )
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--motion", default="mostly_static")
    p.add_argument("--frames", type=int, default=None, help="dnerf: 60 images, n3dv: 20 frames")
    p.add_argument("--cameras", type=int, default=12, help="n3dv: cameras, cam00 held out")
    p.add_argument("--resolution", type=int, default=128, help="image (n3dv: width) in pixels")
    p.add_argument(
        "--time_resolution",
        type=int,
        default=None,
        help="n3dv: the HexPlane's time samples (default: the frame count, one every two frames "
        "on the preset's half time axis; 4D-GS's frames / 2 measured earlier tables); with "
        "--merge, what the files that do not record it were fitted with",
    )
    p.add_argument("--jobs", type=int, default=1)
    add_sweep_arguments(p)
    p.add_argument("--scene", default=None, help="existing scene folder (else written)")
    p.add_argument("--override", action="append", default=[], help="extra ds4d fit argument")
    p.add_argument(
        "--budget", type=float, default=1.0, help="the variants' multiple of the preset schedule"
    )
    p.add_argument("--curve", action="store_true", help="also fit the baseline at --budgets")
    p.add_argument("--budgets", default="0.25,0.5,1,2,4", help="multiples of the preset schedule")
    p.add_argument("--skip_variants", action="store_true", help="only the --curve runs")
    p.add_argument(
        "--merge",
        nargs="+",
        default=None,
        metavar="JSON",
        help="fit nothing: one table from these results files of the same scene (the clip's "
        "frames and time axis are taken from the files)",
    )
    a = p.parse_args()
    check_sweep_arguments(p, a)
    a.frames = a.frames or (60 if a.format == "dnerf" else 20)
    # What --merge may state for files from before the time axis was recorded (and whether
    # it did, for the table's header).
    a.stated_time_resolution, a.time_stated = a.time_resolution, False
    check_time_resolution(p, a)
    if a.seeds < 1:
        raise SystemExit(f"--seeds must be >= 1, got {a.seeds}")
    if a.budget <= 0:
        raise SystemExit(f"--budget must be a positive multiple, got {a.budget}")
    if a.first_seed < 0:
        raise SystemExit(f"--first_seed must be >= 0, got {a.first_seed}")
    variants = a.variants.split(",")
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise SystemExit(f"unknown variants {sorted(unknown)}; choose from {list(VARIANTS)}")
    default_name = "scenes.json" if a.format == "dnerf" else f"scenes_{a.format}.json"
    out_path = Path(a.out) if a.out else REPO / "benchmarks" / "results" / default_name
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if a.merge:
        merge(a, a.merge, out_path)
        return
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(a.keep_runs) if a.keep_runs else Path(tmp_dir)
        scene = Path(a.scene) if a.scene else tmp / "scene"
        if not a.scene and not (a.resume and scene.is_dir()):
            if scene.exists():
                raise SystemExit(
                    f"{scene} exists (a sweep kept there): add --resume to go on with it, or "
                    "choose another --keep_runs"
                )
            write_scene(scene, a)
        text = scene_line(a, scene)
        if not a.skip_variants:
            run_variants(a, variants, scene, tmp, out_path, text)
        if a.curve:
            run_curve(a, scene, tmp, out_path, text)


def run_variants(
    a: argparse.Namespace, variants: list[str], scene: Path, tmp: Path, out_path: Path, text: str
) -> None:
    results: dict = {}
    done: dict[str, list[dict]] = {}
    tasks = [(v, s) for s in range(a.first_seed, a.first_seed + a.seeds) for v in variants]
    with ThreadPoolExecutor(max_workers=a.jobs) as pool:
        extra, tag = (
            (budget_args(a.format, a.budget)[0], f"x{a.budget:g}") if a.budget != 1 else ([], "")
        )
        futures = [(t, pool.submit(run_one, a, *t, scene, tmp, extra, tag)) for t in tasks]
        for (variant, _seed), fut in futures:
            result = fut.result()
            print(variant, result, flush=True)
            done.setdefault(variant, []).append(result)
            if len(done[variant]) == a.seeds:
                runs = sorted(done[variant], key=lambda r: r["seed"])
                results[variant] = summarise_variant(runs, a.format)
                results = {v: results[v] for v in variants if v in results}
                # Written after every finished variant, so a long run leaves partial results.
                out_path.write_text(json.dumps(results, indent=2) + "\n")
    write_results(results, a, out_path, text)


def write_results(results: dict, a: argparse.Namespace, out_path: Path, text: str) -> None:
    """The results JSON (with paired differences to the baseline) and its markdown table."""
    diffs = {}
    for v, r in results.items():
        r["scene"] = text
        r["budget"] = a.budget
        r.update(time_record(a))
        if v != "baseline" and "baseline" in results:
            diffs[v] = r["paired_vs_baseline"] = paired(r["seeds"], results["baseline"]["seeds"])
    # One entry per variant at the top level (what notebooks/02_ablation_results.ipynb reads).
    out_path.write_text(json.dumps(results, indent=2) + "\n")
    md = markdown(results, diffs, a, text)
    out_path.with_suffix(".md").write_text(md)
    print(md)


def _entries(path: str) -> list[tuple[str, dict]]:
    """(variant, summary) pairs of a results file; a ``--curve`` file's points are baseline
    runs, each at its own budget."""
    data = json.loads(Path(path).read_text())
    if isinstance(data, list):
        return [("baseline", point) for point in data]
    if not isinstance(data, dict):
        raise SystemExit(f"{path}: neither a results file of variants nor a --curve file")
    for variant in data:
        if variant not in VARIANTS:
            raise SystemExit(f"{path}: unknown variant {variant!r}")
    return list(data.items())


def _refuse_mixed(values: dict[str, object], differ: str, show: Callable = str) -> None:
    """Stop when the files recorded more than one value (unrecorded: ``None``), listing each
    file's ``show(value)`` after "the files were {differ}"."""
    recorded = {p: v for p, v in values.items() if v is not None}
    if len(set(recorded.values())) > 1:
        listed = "; ".join(f"{p}: {show(v)}" for p, v in recorded.items())
        raise SystemExit(f"the files were {differ}: {listed}")


def merge(a: argparse.Namespace, paths: list[str], out_path: Path) -> None:
    """One table from earlier results files of the same scene and budget (e.g. seeds run on
    different days with ``--first_seed``, or a curve point as the baseline): every (variant,
    seed) once, summarised and paired again."""
    runs: dict[str, dict[int, dict]] = {}
    scenes: dict[str, str] = {}
    budgets: dict[str, float] = {}
    times: dict[str, int | None] = {}
    halves: dict[str, bool] = {}
    frames: dict[str, int] = {}
    unrecorded: list[str] = []
    # Files from before the time samples were recorded take the command line's statement; one
    # that records another value is refused with the statement listed beside it.
    stated = a.stated_time_resolution
    if stated is not None:
        times["--time_resolution"] = stated
    stated_for: list[str] = []
    for path in paths:
        for variant, r in _entries(path):
            budgets[path] = float(r.get("budget", 1.0))
            times[path] = r.get("time_resolution", stated)
            if "time_resolution" not in r and stated is not None and path not in stated_for:
                stated_for.append(path)
            _refuse_mixed(times, "fitted with different time samples")
            if "half_time_range" in r:
                halves[path] = r["half_time_range"]
            _refuse_mixed(halves, "fitted with different half_time_range")
            if "frames" in r:
                frames[path] = r["frames"]
            _refuse_mixed(budgets, "fitted at different budgets", lambda b: f"{b:g}x")
            if r.get("scene"):
                scenes[path] = r["scene"]
            elif path not in unrecorded:
                # Curve files written before they recorded their scene.
                unrecorded.append(path)
            _refuse_mixed(scenes, "measured on different scenes")
            for run in r["seeds"]:
                if run["seed"] in runs.setdefault(variant, {}):
                    raise SystemExit(f"{path}: {variant} seed {run['seed']} is in two files")
                runs[variant][run["seed"]] = run
    if not scenes:
        raise SystemExit("no file records its scene; merge at least one results file of variants")
    a.budget = next(iter(budgets.values()))
    # Files from before the time samples were recorded, unless stated, leave the header saying so.
    a.time_resolution = None if None in times.values() else next(iter(times.values()))
    a.time_stated = bool(stated_for)
    # The clip and its time axis as the files were fitted, not as this command line says
    # (files from before they were recorded: the frames from the scene line, the preset's axis).
    scene_text = next(iter(scenes.values()))
    if frames:
        a.frames = next(iter(frames.values()))
    elif counted := re.search(r"(\d+) frames at", scene_text):
        a.frames = int(counted.group(1))
    if halves:
        a.half_time_range = next(iter(halves.values()))
    results = {
        v: summarise_variant(sorted(runs[v].values(), key=lambda r: r["seed"]), a.format)
        for v in VARIANTS
        if v in runs
    }
    for r in results.values():
        r["merged_from"] = list(paths)
        if unrecorded:
            r["scene_not_recorded_in"] = unrecorded
        if stated_for:
            r["time_resolution_stated_for"] = stated_for
    write_results(results, a, out_path, scene_text)


if __name__ == "__main__":
    main()
