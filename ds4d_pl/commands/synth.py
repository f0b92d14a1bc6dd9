"""``ds4d synth``: write the embedded synthetic object to disk in a real dataset layout."""

from __future__ import annotations

import argparse
import dataclasses
import math

from ds4d_pl.commands.oneline import OneLineParser

# One line per DegradeConfig knob (the class documents them in full).
_DEGRADE_HELP = {
    "seed": "seed of every random draw",
    "hallucinate": "strength in [0, 1] of an invented texture where the input cannot see",
    "hallucinate_drift": "peak hue drift of the invented texture over the clip, in turns",
    "flicker_gain": "per view and frame, colour gain in [1 - x, 1 + x] per channel",
    "flicker_offset": "per view and frame, colour offset in [-x, x] per channel",
    "jitter": "per view and frame, shift of up to x * image side per axis",
    "scale_error": "per view, scale in [1 - x, 1 + x] about the image centre",
    "center_error": "per view, shift of up to x * image side per axis",
    "alpha_blur": "Gaussian blur of the alpha, sigma = x * image side",
    "alpha_noise": "uniform noise of amplitude x on the alpha's soft band",
    "wrong_views": "number of badly wrong views",
    "wrong_mode": "a wrong view shows the opposite pose, or is shifted by a quarter image",
}


def _add_degrade_flags(p: argparse.ArgumentParser) -> None:
    """One flag per :class:`DegradeConfig` field, its default and doc taken from the class."""
    from ds4d_pl.data.parsers.degrade import DegradeConfig

    g = p.add_argument_group(
        "degraded pseudo views (consistent4d, --pseudo_views degraded; 0 turns a defect off)"
    )
    for f in dataclasses.fields(DegradeConfig):
        flag = "--degrade_seed" if f.name == "seed" else f"--{f.name}"
        helps = f"{_DEGRADE_HELP[f.name]} (default %(default)s)"
        if f.name == "wrong_mode":
            g.add_argument(
                flag, dest=f.name, default=f.default, choices=["pose", "shift"], help=helps
            )
        else:
            kind = int if f.name in ("seed", "wrong_views") else float
            g.add_argument(flag, dest=f.name, type=kind, default=f.default, help=helps)


def _cost(a: argparse.Namespace) -> dict:
    """Estimated render cost of the request (see :func:`render_cost`)."""
    from ds4d_pl.data.parsers.synthetic import render_cost

    if a.format == "consistent4d":
        views = [(a.resolution, a.resolution)] * 7 + [(a.eval_resolution, a.eval_resolution)] * 4
        return render_cost(a.num_frames or 16, views)
    if a.format == "dnerf":
        # Train, val (write_dnerf's 10) and test images, one camera each.
        return render_cost((a.num_frames or 60) + 10 + a.num_test, [(a.resolution, a.resolution)])
    height = 2 * round(a.resolution * 3 / 8)
    return render_cost(a.num_frames or 12, [(a.resolution, height)] * a.num_cameras)


def main(argv: list[str]) -> int:
    """``ds4d synth``: write the embedded synthetic object to disk in a real dataset format."""
    from ds4d_pl.data.parsers.degrade import DegradeConfig
    from ds4d_pl.data.parsers.synthetic import SyntheticConfig, check_cost, write_synthetic
    from ds4d_pl.data.parsers.synthetic_scenes import write_dnerf, write_n3dv

    p = OneLineParser(
        prog="ds4d synth",
        description="Write the embedded synthetic object in a dataset layout: consistent4d "
        "(DIR/<obj>/{t}.png, DIR/eval_gt/<obj>/eval_{0..3}/{t}.png, oracle or degraded pseudo "
        "views in DIR/<obj>_mv), dnerf (DIR/transforms_*.json, a camera that moves every frame) "
        "or n3dv (DIR/poses_bounds.npy + DIR/camXX, a fixed forward-facing rig).",
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
        "--motion_cycles",
        type=float,
        default=1.0,
        help="swings of the motion over the clip (1: one smooth swing; more: the temporal "
        "detail of a walk or a wave)",
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
    p.add_argument(
        "--pseudo_views",
        default="oracle",
        choices=["oracle", "degraded"],
        help="consistent4d: exact renders, or renders with the defects of real Zero123++ views "
        "(see the flags below)",
    )
    p.add_argument(
        "--pseudo_background",
        type=float,
        default=None,
        metavar="GREY",
        help="consistent4d: store the pseudo views as Zero123++ does, opaque RGB on this grey "
        "(0.5) without alpha; default RGBA",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="write even when the render is estimated to take over an hour or 16 GiB",
    )
    _add_degrade_flags(p)
    a = p.parse_args(argv)
    try:
        degrade_cfg = DegradeConfig(
            **{f.name: getattr(a, f.name) for f in dataclasses.fields(DegradeConfig)}
        )
    except ValueError as err:
        p.error(str(err))
    if a.format != "consistent4d" and (
        a.pseudo_views != "oracle" or a.pseudo_background is not None
    ):
        p.error("--pseudo_views and --pseudo_background apply to --format consistent4d only")
    if a.pseudo_background is not None and not 0.0 <= a.pseudo_background <= 1.0:
        p.error(f"--pseudo_background must be a grey level in [0, 1]; got {a.pseudo_background}")
    if not 0 < a.motion_cycles < math.inf:
        p.error(f"--motion_cycles must be a positive finite number; got {a.motion_cycles}")
    for flag in ("num_frames", "resolution", "eval_resolution", "num_cameras", "num_test"):
        value = getattr(a, flag)
        if value is not None and value < 1:
            p.error(f"--{flag} must be >= 1; got {value}")
    try:
        check_cost(_cost(a), "this request", force=a.force)
    except ValueError as err:
        p.error(f"{err} with --force")
    if a.format == "consistent4d":
        cfg = SyntheticConfig(
            motion=a.motion,
            motion_cycles=a.motion_cycles,
            num_frames=a.num_frames or 16,
            resolution=a.resolution,
            eval_resolution=a.eval_resolution,
            seed=a.seed,
            name=a.name,
            pseudo_views=a.pseudo_views,
            degrade=degrade_cfg,
        )
        path = write_synthetic(cfg, a.out, pseudo_background=a.pseudo_background)
    elif a.format == "dnerf":
        cfg = SyntheticConfig(motion=a.motion, motion_cycles=a.motion_cycles, seed=a.seed)
        path = write_dnerf(
            cfg,
            a.out,
            num_train=a.num_frames or 60,
            num_test=a.num_test,
            resolution=a.resolution,
            seed=a.seed,
        )
    else:
        cfg = SyntheticConfig(motion=a.motion, motion_cycles=a.motion_cycles, seed=a.seed)
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
