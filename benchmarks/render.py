"""Forward+backward speed of the CPU reference rasteriser on an object-like scene.

Usage::

    python benchmarks/render.py [--out benchmarks/results/render.json] [--repeats 7] [--threads 2]

Writes ``{"<gaussians>@<pixels>": milliseconds, ..., "machine": {...}}`` and prints a markdown
table. Times are the median over ``--repeats`` runs after one warm-up run, one camera per render.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

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


def time_step(renderer: TorchRasterizer, n: int, size: int, repeats: int) -> float:
    """Median milliseconds of one forward+backward render of ``n`` Gaussians at ``size``²."""
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

    step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main() -> None:
    """Run the grid, write the JSON and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/render.json"))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    renderer = TorchRasterizer()
    results: dict[str, object] = {}
    for n in GAUSSIANS:
        for size in SIZES:
            results[f"{n}@{size}"] = round(time_step(renderer, n, size, args.repeats), 2)
    results["machine"] = {
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "renderer": renderer.name,
        "repeats": args.repeats,
        # Other processes on a 2-core machine distort the timings; keep the evidence.
        "loadavg_1min_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print("| Gaussians | " + " | ".join(f"{s}² (ms)" for s in SIZES) + " |")
    print("|---|" + "---|" * len(SIZES))
    for n in GAUSSIANS:
        print(f"| {n} | " + " | ".join(f"{results[f'{n}@{s}']:.1f}" for s in SIZES) + " |")
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
