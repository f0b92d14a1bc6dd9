"""DS4D conditioning vs the plain 4D-GS-style baseline on a D-NeRF-format scene, several seeds.

    python benchmarks/scenes.py --out benchmarks/results/scenes.json [--seeds 3] [--jobs 1]

The scene is the synthetic object written by ``ds4d synth --format dnerf`` (60 training images
at 128², a mostly static object with one moving arm, a camera that moves every frame, exact
moving-part masks). Each (variant, seed) is one ``ds4d fit -c configs/scene/dnerf.yaml`` in a
subprocess; the baseline adds ``configs/ablation/row_b.yaml`` (no frame features), which is the
only difference. Reports test PSNR, SSIM, dynamic-region PSNR (mean ± std over seeds), wall
time and median fine-stage step time, and whether the issue's target (test PSNR >= 25 dB in
under 10 minutes) was met. Writes the JSON and ``benchmarks/results/<stem of --out>.md``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fit_runs import QUIET_FIT_ARGS, REPO, run_fit, summarise

VARIANTS = {"ds4d_da": [], "baseline": ["-c", str(REPO / "configs" / "ablation" / "row_b.yaml")]}
METRICS = ("psnr", "ssim", "dyn_psnr")
TARGET_PSNR = 25.0
TARGET_SECONDS = 600.0


def write_scene(root: Path, a: argparse.Namespace) -> None:
    cmd = [sys.executable, "-m", "ds4d_pl.cli", "synth", "--format", "dnerf", "--out", str(root)]
    cmd += [f"--motion={a.motion}", f"--num_frames={a.frames}", f"--resolution={a.resolution}"]
    subprocess.run(cmd, cwd=REPO, check=True, capture_output=True)


def run_one(a: argparse.Namespace, variant: str, seed: int, scene: Path, tmp: Path) -> dict:
    args = [
        "-c",
        str(REPO / "configs" / "scene" / "dnerf.yaml"),
        *VARIANTS[variant],
        f"--data.root={scene}",
        f"--model.seed={seed}",
        f"--seed_everything={seed}",
        *QUIET_FIT_ARGS,
        *a.override,
    ]
    result = run_fit(args, tmp / f"{variant}_{seed}", a.jobs, f"{variant}/seed {seed}", METRICS)
    return {**result, "seed": seed}


def summarise_variant(seeds: list[dict]) -> dict:
    out = summarise(seeds, (*METRICS, "step_ms", "wall_s"))
    out["target_met"] = all(
        s["psnr"] >= TARGET_PSNR and s["wall_s"] < TARGET_SECONDS for s in seeds
    )
    return out


def markdown(results: dict, a: argparse.Namespace) -> str:
    lines = [
        "# DS4D conditioning on a D-NeRF-format scene",
        "",
        f"Scene: `ds4d synth --format dnerf --motion {a.motion}` ({a.frames} training images at "
        f"{a.resolution}², camera moving every frame). `ds4d fit -c configs/scene/dnerf.yaml`, "
        "baseline adds `-c configs/ablation/row_b.yaml`. Test split (20 images). Mean ± std "
        f"over seeds; wall time of the whole fit + test"
        + (f", {a.jobs} runs sharing the CPU." if a.jobs > 1 else ", one run at a time."),
        "",
        "| variant | n | PSNR | SSIM | dyn PSNR | wall s | step ms | PSNR ≥ 25 in < 10 min |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        dyn = "n/a" if r["dyn_psnr"] is None else f"{r['dyn_psnr']:.2f} ± {r['dyn_psnr_std']:.2f}"
        step = "n/a" if r["step_ms"] is None else f"{r['step_ms']:.0f}"
        lines.append(
            f"| {name} | {r['n_seeds']} | {r['psnr']:.2f} ± {r['psnr_std']:.2f} | "
            f"{r['ssim']:.4f} | {dyn} | {r['wall_s']:.0f} | {step} | "
            f"{'yes' if r['target_met'] else 'no'} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "scenes.json"))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--motion", default="mostly_static")
    p.add_argument("--frames", type=int, default=60, help="training images")
    p.add_argument("--resolution", type=int, default=128)
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--scene", default=None, help="existing D-NeRF scene folder (else written)")
    p.add_argument("--override", action="append", default=[], help="extra ds4d fit argument")
    a = p.parse_args()
    variants = a.variants.split(",")
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise SystemExit(f"unknown variants {sorted(unknown)}; choose from {list(VARIANTS)}")
    out_path = Path(a.out)
    results: dict = {}
    done: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        scene = Path(a.scene) if a.scene else Path(tmp) / "scene"
        if not a.scene:
            write_scene(scene, a)
        tasks = [(v, s) for s in range(a.seeds) for v in variants]
        with ThreadPoolExecutor(max_workers=a.jobs) as pool:
            futures = [(t, pool.submit(run_one, a, *t, scene, Path(tmp))) for t in tasks]
            for (variant, _seed), fut in futures:
                result = fut.result()
                print(variant, result, flush=True)
                done.setdefault(variant, []).append(result)
                if len(done[variant]) == a.seeds:
                    results[variant] = summarise_variant(
                        sorted(done[variant], key=lambda r: r["seed"])
                    )
                    results = {v: results[v] for v in variants if v in results}
                    out_path.parent.mkdir(parents=True, exist_ok=True)
                    out_path.write_text(json.dumps(results, indent=2) + "\n")
    md = markdown(results, a)
    (REPO / "benchmarks" / "results" / f"{out_path.stem}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
