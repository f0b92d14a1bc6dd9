"""``ds4d render``: videos of a trained run at any resolution, elevation, radius, frame rate and
number of loops, without training again."""

from __future__ import annotations

from pathlib import Path

from ds4d_pl.commands.oneline import OneLineParser

#: The videos ``--videos`` can name.
VIDEOS = ("turntable", "front", "right", "back", "left", "eval")


def main(argv: list[str]) -> int:
    """``ds4d render RUN``: write the asked videos of a finished run.

    Returns 0 on success. A bad option exits with status 2 (one line); a path that is not a
    run, a missing checkpoint or one that does not fit the config raises a
    :class:`~ds4d_pl.errors.DS4DError` that ``ds4d`` prints as one line with exit status 2.
    """
    p = OneLineParser(
        prog="ds4d render",
        description="Render videos of a finished run (a run directory, or a checkpoint inside "
        "one): the turntable, the fixed front/right/back/left views and, when the dataset has "
        "them, the evaluation cameras. Writes OUT/<name>.mp4.",
    )
    p.add_run_arguments(default_out="RUN/renders")
    p.add_argument("--resolution", type=int, default=512, help="square size of orbit videos")
    p.add_argument("--elevation", type=float, default=0.0, help="camera elevation in degrees")
    p.add_argument("--radius", type=float, default=None, help="orbit radius (default: the run's)")
    p.add_argument("--fps", type=int, default=24)
    p.add_argument("--loops", type=int, default=1, help="times the clip plays in each video")
    p.add_argument("--turntable_frames", type=int, default=96, help="frames of one orbit")
    p.add_argument(
        "--videos",
        default="turntable,front,right,back,left,eval",
        help="comma-separated: turntable, front, right, back, left, eval",
    )
    p.add_argument("--device", default="cpu")
    a = p.parse_args(argv)
    # Every option is checked before the (slow) model load.
    for name in ("resolution", "turntable_frames", "fps", "loops"):
        if getattr(a, name) < 1:
            p.error(f"--{name} must be >= 1, got {getattr(a, name)}")
    if a.radius is not None and not a.radius > 0:
        p.error(f"--radius must be > 0, got {a.radius}")
    wanted = [v.strip() for v in a.videos.split(",") if v.strip()]
    unknown = [v for v in wanted if v not in VIDEOS]
    if unknown or not wanted:
        listed = ", ".join(unknown) or "nothing asked"
        p.error(f"--videos: {listed}; choose from {', '.join(VIDEOS)}")
    if a.out is not None and Path(a.out).exists() and not Path(a.out).is_dir():
        p.error(f"--out {a.out}: is a file; the videos need a folder")

    from ds4d_pl.export.assets import OrbitSettings, render_orbit_videos, render_view_videos
    from ds4d_pl.export.video import write_video
    from ds4d_pl.render.scale import fitted_focal
    from ds4d_pl.run import load_run

    run = load_run(a.run, checkpoint=a.ckpt, config=a.config, device=a.device)
    radius = a.radius if a.radius is not None else _run_radius(run)
    settings = OrbitSettings(a.resolution, a.turntable_frames, a.elevation, radius, a.loops)
    orbit = [v for v in wanted if v != "eval"]
    focal = fitted_focal(run.scene)
    videos = render_orbit_videos(
        run.model, run.scene.train.times, settings, orbit, show_progress=None, fitted_focal=focal
    )
    if "eval" in wanted and run.scene.eval is not None:
        videos.update(
            render_view_videos(run.model, run.scene.eval, show_progress=None, fitted_focal=focal)
        )
    out = Path(a.out) if a.out else run.files.config.parent / "renders"
    for name, frames in videos.items():
        print(f"wrote {write_video(out / f'{name}.mp4', frames, fps=a.fps)}")
    return 0


def _run_radius(run: object) -> float:
    """The orbit radius the run's own videos used (``videos.radius`` in its config)."""
    import yaml

    raw = yaml.safe_load(run.files.config.read_text()) or {}
    return float((raw.get("videos") or {}).get("radius", 2.0))
