"""``ds4d synth``: write the embedded synthetic object to disk in a real dataset layout."""

from __future__ import annotations

import argparse


def main(argv: list[str]) -> int:
    """``ds4d synth``: write the embedded synthetic object to disk in a real dataset format."""
    from ds4d_pl.data.parsers.synthetic import SyntheticConfig, write_synthetic
    from ds4d_pl.data.parsers.synthetic_scenes import write_dnerf, write_n3dv

    p = argparse.ArgumentParser(
        prog="ds4d synth",
        description="Write the embedded synthetic object in a dataset layout: consistent4d "
        "(DIR/<obj>/{t}.png, DIR/eval_gt/<obj>/eval_{0..3}/{t}.png, oracle pseudo views in "
        "DIR/<obj>_mv), dnerf (DIR/transforms_*.json, a camera that moves every frame) or n3dv "
        "(DIR/poses_bounds.npy + DIR/camXX, a fixed forward-facing rig).",
    )
    p.add_argument(
        "--out", required=True, help="output directory (the scene folder for dnerf/n3dv)"
    )
    p.add_argument("--format", default="consistent4d", choices=["consistent4d", "dnerf", "n3dv"])
    p.add_argument(
        "--motion",
        default="mostly_static",
        choices=["static_only", "mostly_static", "dynamic_only"],
    )
    p.add_argument(
        "--num_frames",
        type=int,
        default=None,
        help="frames of the clip (consistent4d: 16, n3dv: 12) or training images (dnerf: 60)",
    )
    p.add_argument("--resolution", type=int, default=128, help="image size (n3dv: width)")
    p.add_argument("--eval_resolution", type=int, default=128, help="consistent4d only")
    p.add_argument("--num_cameras", type=int, default=12, help="n3dv only; cam00 is held out")
    p.add_argument(
        "--background",
        default="room",
        choices=["room", "none"],
        help="n3dv only: the object in a textured room (full-frame, a small moving part, as in "
        "N3DV) or alone on white",
    )
    p.add_argument("--num_test", type=int, default=20, help="dnerf only: test images")
    p.add_argument("--video", action="store_true", help="n3dv only: camXX.mp4 instead of PNGs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", default=None, help="object folder name (consistent4d)")
    a = p.parse_args(argv)
    if a.format == "consistent4d":
        cfg = SyntheticConfig(
            motion=a.motion,
            num_frames=a.num_frames or 16,
            resolution=a.resolution,
            eval_resolution=a.eval_resolution,
            seed=a.seed,
            name=a.name,
        )
        path = write_synthetic(cfg, a.out)
    elif a.format == "dnerf":
        cfg = SyntheticConfig(motion=a.motion, seed=a.seed)
        path = write_dnerf(
            cfg,
            a.out,
            num_train=a.num_frames or 60,
            num_test=a.num_test,
            resolution=a.resolution,
            seed=a.seed,
        )
    else:
        cfg = SyntheticConfig(motion=a.motion, seed=a.seed)
        # 4:3 like the N3DV rig, rounded to even sizes so the video option can encode it.
        height = 2 * round(a.resolution * 3 / 8)
        try:
            path = write_n3dv(
                cfg,
                a.out,
                num_cameras=a.num_cameras,
                num_frames=a.num_frames or 12,
                resolution=(a.resolution, height),
                as_video=a.video,
                background=a.background,
            )
        except ValueError as err:  # a bad option: say which, with the usage, not a traceback
            p.error(str(err))
    print(f"wrote {path}")
    return 0
