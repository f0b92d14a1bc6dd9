"""Speed of the frozen EfficientNet-Lite0 frame encoder per stage and input size.

Usage::

    python benchmarks/encoders.py [--out benchmarks/results/encoders.json] [--repeats 9]
        [--threads 2] [--batch 8]

Feeds batches of 128² frames (the encoder resizes them to its ``input_size``) and reports the
median (and minimum) milliseconds per frame over ``--repeats`` runs after one warm-up run.
Writes ``{"stage<s>@<input_size>": median_ms, ..., "grids": {...}, "machine": {...}}`` and
prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

from ds4d_pl.atomic import write_json
from ds4d_pl.conditioning.encoders import EFFICIENTNET_STAGES, EfficientNetLite0Encoder

INPUT_SIZES = (128, 256)
FRAME = 128


def time_encoder(enc: EfficientNetLite0Encoder, batch: int, repeats: int) -> tuple[float, float]:
    """(median, min) milliseconds per frame of ``enc`` on ``batch`` random 128² frames.

    The minimum is reported too because on a shared 2-core machine concurrent jobs inflate the
    median by up to several times; the minimum is the uncontended cost.
    """
    frames = torch.rand(batch, FRAME, FRAME, 3, generator=torch.Generator().manual_seed(0))
    enc(frames)  # warm-up: allocator and oneDNN kernel selection
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        enc(frames)
        runs.append((time.perf_counter() - start) * 1000.0 / batch)
    return statistics.median(runs), min(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/encoders.json")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    results: dict = {}
    grids: dict = {}
    rows = []
    for stage in sorted(EFFICIENTNET_STAGES):
        for size in INPUT_SIZES:
            enc = EfficientNetLite0Encoder(stage=stage, input_size=size)
            ms, ms_min = time_encoder(enc, args.batch, args.repeats)
            key = f"stage{stage}@{size}"
            h, w = enc.grid_size()
            results[key] = round(ms, 3)
            grids[key] = {
                "channels": enc.out_dim,
                "stride": enc.stride,
                "grid": [h, w],
                "min_ms": round(ms_min, 3),
            }
            rows.append((stage, size, enc.out_dim, enc.stride, f"{h}x{w}", ms, ms_min))

    results["grids"] = grids
    results["machine"] = {
        "threads": args.threads,
        "batch": args.batch,
        "frame": FRAME,
        "repeats": args.repeats,
        "cpu_count": os.cpu_count(),
        "load_avg_1min": round(os.getloadavg()[0], 2),
        "processor": platform.processor() or platform.machine(),
        "torch": torch.__version__,
    }
    write_json(args.out, results)

    print(f"EfficientNet-Lite0 encoder, ms per {FRAME}² frame (median, batch {args.batch})\n")
    print("| stage | input | channels | stride | grid | ms/frame (median) | ms/frame (min) |")
    print("|---|---|---|---|---|---|---|")
    for stage, size, c, s, grid, ms, ms_min in rows:
        print(f"| {stage} | {size} | {c} | {s} | {grid} | {ms:.2f} | {ms_min:.2f} |")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
