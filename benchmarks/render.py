"""Forward+backward speed of the CPU rasteriser on an object-like scene, per compositing kernel.

Usage::

    python benchmarks/render.py [--out benchmarks/results/render.json] [--repeats 7] \
        [--threads 2] [--kernels torch compiled]

Writes ``{"<kernel>": {"<gaussians>@<pixels>": wall milliseconds, ...}, "<kernel> cpu":
{... CPU milliseconds of the process}, "ratio": {...}, "machine": {...}}`` and the same
tables as markdown next to it (``.md``). Times are the median over ``--repeats`` runs after one
warm-up run, one camera per render. The kernels are timed back to back per grid cell (torch,
compiled, torch, compiled, ...) so a change in the machine's load hits both alike; ``ratio`` is
the first kernel's wall time over the last's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ds4d_pl.cameras import orbit_cameras
from ds4d_pl.render.base import GaussianParams, rgb_to_sh0
from ds4d_pl.render.torch_raster import TorchRasterizer

GAUSSIANS = (1_000, 5_000, 20_000)
SIZES = (64, 128, 256)


def object_scene(n: int, seed: int = 0, sh_degree: int = 0) -> dict[str, torch.Tensor]:
    """Leaf tensors of ``n`` Gaussians filling a ball of radius 0.5 at the origin."""
    gen = torch.Generator().manual_seed(seed)
    direction = torch.nn.functional.normalize(torch.randn(n, 3, generator=gen), dim=-1)
    radius = 0.5 * torch.rand(n, 1, generator=gen) ** (1.0 / 3.0)
    k = (sh_degree + 1) ** 2
    sh = torch.zeros(n, k, 3)
    sh[:, 0] = rgb_to_sh0(torch.rand(n, 3, generator=gen))
    if k > 1:
        sh[:, 1:] = 0.05 * torch.randn(n, k - 1, 3, generator=gen)
    params = {
        "means": direction * radius,
        "quats": torch.randn(n, 4, generator=gen),
        "scales": 0.01 + 0.02 * torch.rand(n, 3, generator=gen),
        "opacities": 0.3 + 0.6 * torch.rand(n, generator=gen),
        "sh": sh,
    }
    return {name: t.requires_grad_(True) for name, t in params.items()}


def make_step(renderer: TorchRasterizer, n: int, size: int) -> Callable[[], None]:
    """One forward+backward render of ``n`` Gaussians at ``size``² (fresh leaf tensors)."""
    params = object_scene(n)
    cams = orbit_cameras([15.0], [30.0], size, size)
    background = torch.ones(3)
    target = torch.rand(1, size, size, 3, generator=torch.Generator().manual_seed(1))

    def step() -> None:
        out = renderer(GaussianParams(**params), cams, background)
        loss = (out.rgb - target).abs().mean() + out.alpha.mean()
        loss.backward()
        for t in params.values():
            t.grad = None

    return step


def time_steps(
    steps: dict[str, Callable[[], None]], repeats: int
) -> tuple[dict[str, float], dict[str, float]]:
    """Median wall and CPU milliseconds of each step, interleaved run by run after one warm-up.

    The CPU time (all threads of the process) is what the step costs when nothing else runs;
    with one thread it stays close to the quiet machine's wall time when the machine is busy.
    """
    for step in steps.values():
        step()
    wall: dict[str, list[float]] = {name: [] for name in steps}
    cpu: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            step()
            wall[name].append((time.perf_counter() - start) * 1e3)
            cpu[name].append((time.process_time() - start_cpu) * 1e3)
    return (
        {name: statistics.median(t) for name, t in wall.items()},
        {name: statistics.median(t) for name, t in cpu.items()},
    )


def markdown(results: dict[str, Any], kernels: list[str]) -> str:
    """One table per kernel and one of the ratios."""
    lines = []
    for kernel in [*kernels, *(f"{k} cpu" for k in kernels), "ratio"]:
        if kernel == "ratio":
            title = f"wall time {kernels[0]} / {kernels[-1]}"
        elif kernel.endswith(" cpu"):
            title = f"kernel={kernel[:-4]}, CPU time of the process (ms)"
        else:
            title = f"kernel={kernel}, wall time (ms)"
        lines += [f"**{title}**", ""]
        lines.append("| Gaussians | " + " | ".join(f"{s}²" for s in SIZES) + " |")
        lines.append("|---|" + "---:|" * len(SIZES))
        for n in GAUSSIANS:
            cells = [results[kernel][f"{n}@{s}"] for s in SIZES]
            fmt = "{:.2f}×" if kernel == "ratio" else "{:.1f}"
            lines.append(f"| {n} | " + " | ".join(fmt.format(c) for c in cells) + " |")
        lines.append("")
    m = results["machine"]
    lines.append(
        f"torch {m['torch']}, {m['torch_threads']} threads, {m['cpu_count']} CPUs, median of "
        f"{m['repeats']} after warm-up, 1-min load average before → after "
        f"{m['loadavg_1min_before_after'][0]} → {m['loadavg_1min_before_after'][1]}."
    )
    return "\n".join(lines) + "\n"


def main() -> None:
    """Run the grid, write the JSON and markdown and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/render.json"))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--kernels", nargs="+", default=["torch", "compiled"], choices=["torch", "compiled"]
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    renderers = {k: TorchRasterizer(kernel=k, threads=args.threads) for k in args.kernels}
    results: dict[str, Any] = {k: {} for k in args.kernels}
    results.update({f"{k} cpu": {} for k in args.kernels})
    results["ratio"] = {}
    for n in GAUSSIANS:
        for size in SIZES:
            key = f"{n}@{size}"
            steps = {k: make_step(r, n, size) for k, r in renderers.items()}
            medians, cpu = time_steps(steps, args.repeats)
            for k, ms in medians.items():
                results[k][key] = round(ms, 2)
                results[f"{k} cpu"][key] = round(cpu[k], 2)
            results["ratio"][key] = round(medians[args.kernels[0]] / medians[args.kernels[-1]], 2)
    results["machine"] = {
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "renderer": "torch",
        "repeats": args.repeats,
        # Other processes on a 2-core machine distort the timings; keep the evidence.
        "loadavg_1min_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(results, args.kernels)
    args.out.with_suffix(".md").write_text(table)
    print(table)
    print(f"written to {args.out} and {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
