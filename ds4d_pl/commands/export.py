"""``ds4d export``: the Gaussians of a trained run per frame, as 3DGS PLY or ``.splat`` files."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="ds4d export",
        description="Write the canonical Gaussians and the deformed Gaussians of every frame of a "
        "finished run: standard 3DGS PLY (most tools) or the .splat layout web splat viewers "
        "load. Writes OUT/canonical.<fmt> and OUT/frame_XXXX.<fmt>.",
    )
    p.add_argument("run", help="run directory (config.yaml + checkpoints/last.ckpt) or checkpoint")
    p.add_argument("--ckpt", default=None, help="another checkpoint of that run")
    p.add_argument("--config", default=None, help="another config to rebuild the model from")
    p.add_argument("--out", default=None, help="output folder (default: RUN/export)")
    p.add_argument("--format", choices=("ply", "splat"), action="append", dest="formats")
    p.add_argument("--no_frames", action="store_true", help="only the canonical Gaussians")
    p.add_argument("--device", default="cpu")
    a = p.parse_args(argv)

    from ds4d_pl.export.assets import export_density_frames, export_frames
    from ds4d_pl.run import RunLoadError, load_run

    try:
        run = load_run(a.run, checkpoint=a.ckpt, config=a.config, device=a.device)
    except RunLoadError as e:
        print(f"ds4d export: {e}", file=sys.stderr)
        return 2
    out = Path(a.out) if a.out else run.files.config.parent / "export"
    times = run.scene.train.times
    if run.model.is_nerf:
        if a.formats:
            print(
                "ds4d export: a NeRF run has no Gaussians; --format does not apply to it "
                "(it exports the density surface of each frame)",
                file=sys.stderr,
            )
            return 2
        paths = export_density_frames(run.model, times, out, per_frame=not a.no_frames)
    else:
        paths = export_frames(
            run.model, times, out, a.formats or ["ply"], per_frame=not a.no_frames
        )
    print(f"wrote {len(paths)} files to {out}")
    return 0
