"""``ds4d export``: the Gaussians of a trained run per frame, as 3DGS PLY or ``.splat`` files."""

from __future__ import annotations

from pathlib import Path

from ds4d_pl.commands.oneline import OneLineParser
from ds4d_pl.errors import ConfigError


def main(argv: list[str]) -> int:
    """``ds4d export RUN``: write the run's Gaussians as PLY and/or ``.splat`` files.

    Returns 0 on success. A bad option exits with status 2 (one line); a path that is not a
    run, a missing checkpoint or one that does not fit the config raises a
    :class:`~ds4d_pl.errors.DS4DError` that ``ds4d`` prints as one line with exit status 2.
    """
    p = OneLineParser(
        prog="ds4d export",
        description="Write the canonical Gaussians and the deformed Gaussians of every frame of a "
        "finished run: standard 3DGS PLY (most tools) or the .splat layout web splat viewers "
        "load. Writes OUT/canonical.<fmt> and OUT/frame_XXXX.<fmt>.",
    )
    p.add_run_arguments(default_out="RUN/export")
    p.add_argument("--format", choices=("ply", "splat"), action="append", dest="formats")
    p.add_argument("--no_frames", action="store_true", help="only the canonical Gaussians")
    p.add_argument("--device", default="cpu")
    a = p.parse_args(argv)
    if a.out is not None and Path(a.out).exists() and not Path(a.out).is_dir():
        p.error(f"--out {a.out}: is a file; the Gaussian files need a folder")

    from ds4d_pl.export.assets import export_density_frames, export_frames
    from ds4d_pl.run import load_run

    run = load_run(a.run, checkpoint=a.ckpt, config=a.config, device=a.device)
    out = Path(a.out) if a.out else run.files.config.parent / "export"
    times = run.scene.train.times
    if run.model.is_nerf:
        if a.formats:
            raise ConfigError(
                "a NeRF run has no Gaussians; --format does not apply to it "
                "(it exports the density surface of each frame)"
            )
        paths = export_density_frames(
            run.model, times, out, per_frame=not a.no_frames, show_progress=None
        )
    else:
        formats = list(dict.fromkeys(a.formats or ["ply"]))  # --format ply --format ply: once
        paths = export_frames(run.model, times, out, formats, not a.no_frames, show_progress=None)
    print(f"wrote {len(paths)} files to {out}")
    return 0
