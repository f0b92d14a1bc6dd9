"""``ds4d view``: look at a run in the browser (time slider, cameras, dynamic energy)."""

from __future__ import annotations

from ds4d_pl.commands.oneline import OneLineParser


def main(argv: list[str]) -> int:
    """``ds4d view RUN_DIR | CHECKPOINT``: serve the interactive viewer until Ctrl+C.

    Returns:
        0 after Ctrl+C. A bad option exits with status 2 (one line); a path that is not a run,
        a checkpoint that does not fit its config or a port in use raises a
        :class:`~ds4d_pl.errors.DS4DError`, which ``ds4d`` prints as one line with exit
        status 2.
    """
    p = OneLineParser(
        prog="ds4d view",
        description="Serve an interactive viewer of a run on this machine: the deformed "
        "Gaussians at any time (slider, play/pause), the dataset's input, pseudo and "
        "evaluation cameras with their images, and DSFD's dynamic energy as a colour overlay. "
        "Open the printed URL in a browser (over SSH: forward the port).",
    )
    p.add_argument("path", help="run directory (config.yaml + checkpoints/last.ckpt) or checkpoint")
    p.add_argument("--ckpt", default=None, help="another checkpoint to show with the run's config")
    p.add_argument("--config", default=None, help="another config.yaml to rebuild the model from")
    p.add_argument("--host", default="127.0.0.1", help="interface to serve on (default: local)")
    p.add_argument("--port", type=int, default=8080, help="port (0: any free port)")
    p.add_argument("--device", default="cpu", help="where the deformation field is evaluated")
    p.add_argument("--fps", type=float, default=8.0, help="playback speed in frames per second")
    p.add_argument("--time", type=float, default=0.0, help="time shown first, in [0, 1]")
    p.add_argument(
        "--image_size", type=int, default=128, help="longest side of the camera images (pixels)"
    )
    a = p.parse_args(argv)
    if not 0 <= a.port <= 65535:
        p.error(f"--port must be in 0..65535, got {a.port}")
    if not 0.0 <= a.time <= 1.0:
        p.error(f"--time must lie in [0, 1], got {a.time}")
    if not a.fps > 0 or a.image_size < 1:
        p.error("--fps must be > 0 and --image_size >= 1")

    # Imported here: the viewer's dependencies load only when the command runs.
    from ds4d_pl.viewer.app import ViewerApp, check_port_free
    from ds4d_pl.viewer.load import load_source

    try:
        # Checked before the (slow) model load, so a taken port fails at once.
        check_port_free(a.host, a.port)
        source = load_source(
            a.path,
            checkpoint=a.ckpt,
            config=a.config,
            device=a.device,
            max_image_size=a.image_size,
        )
        app = ViewerApp(source, host=a.host, port=a.port, fps=a.fps, initial_time=a.time)
        url = app.start()
    except KeyboardInterrupt:
        return 130
    print(f"ds4d view: {source.name} at {url}  (Ctrl+C to stop)", flush=True)
    app.serve_forever()
    return 0
