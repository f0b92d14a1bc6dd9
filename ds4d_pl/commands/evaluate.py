"""``ds4d eval``: score renders laid out like Consistent4D's ``eval_gt`` against ground truth."""

from __future__ import annotations

from pathlib import Path

from ds4d_pl.commands.oneline import OneLineParser
from ds4d_pl.errors import ConfigError, DataError, DS4DError


def main(argv: list[str]) -> int:
    """``ds4d eval``: score renders in the eval_gt layout against ground truth.

    Returns 0 on success. Bad input (layout, frame counts, sizes, weights paths or files)
    raises a :class:`~ds4d_pl.errors.DS4DError` naming the file or folder at fault, which
    ``ds4d`` prints as one line with exit status 2.
    """
    from ds4d_pl.metrics.evaluate import evaluate_dirs
    from ds4d_pl.metrics.protocol import BenchmarkConfig, write_report

    p = OneLineParser(
        prog="ds4d eval",
        description="Score any method's renders laid out like Consistent4D's eval_gt "
        "(DIR/<obj>/eval_{k}/{t}.png) against the ground truth, with the same metrics as "
        "ds4d test. Writes metrics.json and metrics.md to --out. Exit status 2 on bad input.",
    )
    p.add_argument("--pred", required=True, help="predicted renders: <obj>/eval_{k}/{t}.png")
    p.add_argument("--gt", required=True, help="ground truth in the same layout (eval_gt)")
    p.add_argument("--out", default=None, help="report directory (default: --pred)")
    p.add_argument("--objects", nargs="*", default=None, help="object folders (default: all)")
    p.add_argument("--resolution", type=int, default=None, help="compare at this square size")
    p.add_argument("--fvd_mode", default="consistent4d", choices=["consistent4d", "set"])
    p.add_argument("--fid_vid_variant", default="frame_fid", choices=["frame_fid", "r3d50"])
    p.add_argument(
        "--scene_protocol",
        default="standard",
        choices=["standard", "4dgs"],
        help="PSNR/SSIM/LPIPS as usual, or exactly as 4D-GS's metrics.py computes them",
    )
    p.add_argument(
        "--weights",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="explicit weights path of a network (see ds4d weights), repeatable; a path given "
        "here must exist (it is never reported as n/a)",
    )
    p.add_argument("--device", default="cpu")
    a = p.parse_args(argv)
    out = Path(a.out or a.pred)
    if out.exists() and not out.is_dir():
        p.error(f"--out {out}: is a file; the report (metrics.json, metrics.md) needs a folder")
    if a.resolution is not None and a.resolution < 16:
        p.error(f"--resolution must be >= 16; got {a.resolution}")
    explicit = p.weights_paths(a.weights)
    try:
        cfg = BenchmarkConfig(
            fvd_mode=a.fvd_mode,
            fid_vid_variant=a.fid_vid_variant,
            resolution=a.resolution,
            weights=explicit,
            scene_protocol=a.scene_protocol,
        )
    except ValueError as err:
        raise ConfigError(str(err)) from err
    try:
        results = evaluate_dirs(a.pred, a.gt, cfg, objects=a.objects, device=a.device)
    except DS4DError:
        raise  # weights errors among them: one line from ds4d_pl.cli
    except (ValueError, OSError) as err:
        # The readers name the folder or frame that does not match the ground truth.
        raise DataError(str(err)) from err
    write_report(out, results, title=f"ds4d eval: {a.pred}")
    print((out / "metrics.md").read_text())
    return 0
