"""Run the demo job end to end and record wall time, peak memory and quality.

    python benchmarks/demo.py [--out benchmarks/results/demo.json] [-- extra ds4d args]

Targets (issue 2, 2-core CPU): < 5 min wall time, < 4 GB peak RSS, eval-view PSNR >= 26 dB.
The numbers are measured, never asserted: the CPU here is sometimes throttled.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _shown(path: str) -> str:
    """``path`` as a user would type it from the repository root (absolute when outside)."""
    resolved = Path(path).resolve()
    return str(resolved.relative_to(REPO)) if resolved.is_relative_to(REPO) else str(resolved)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "demo.json"))
    p.add_argument("--config", default=str(REPO / "configs" / "demo.yaml"))
    p.add_argument("extra", nargs="*", help="extra ds4d fit arguments (after --)")
    a = p.parse_args()
    # The fit runs in the repository root: a config named from elsewhere must not change meaning.
    a.config = str(Path(a.config).resolve())
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "demo"
        cmd = [
            sys.executable,
            "-m",
            "ds4d_pl.cli",
            "fit",
            "-c",
            a.config,
            f"--trainer.default_root_dir={run_dir}",
            *a.extra,
        ]
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        start = time.perf_counter()
        proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
            raise SystemExit(f"demo run failed with exit code {proc.returncode}")
        # ru_maxrss of children is in KiB on Linux.
        peak_rss_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2
        metrics = json.loads((run_dir / "metrics.json").read_text())
        outputs = sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file())
    result = {
        "command": " ".join(["ds4d", "fit", "-c", _shown(a.config), *a.extra]),
        "wall_time_s": round(wall, 1),
        "peak_rss_gb": round(peak_rss_gb, 3),
        "psnr": metrics["psnr"],
        "ssim": metrics["ssim"],
        "dyn_psnr": metrics["dyn_psnr"],
        "num_gaussians": metrics.get("num_gaussians"),
        "targets": {"wall_time_s": 300, "peak_rss_gb": 4.0, "psnr": 26.0},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "num_output_files": len(outputs),
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
