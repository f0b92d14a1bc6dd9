"""``ds4d prepare``: a video or frames → centred RGBA frames in the Consistent4D layout,
optionally with Zero123++ pseudo views."""

from __future__ import annotations

import argparse
from pathlib import Path

from ds4d_pl.commands.oneline import OneLineParser
from ds4d_pl.errors import DataError, DS4DError


def main(argv: list[str]) -> int:
    """``ds4d prepare``: a video or frames → centred RGBA frames in the Consistent4D layout,
    optionally with Zero123++ pseudo views in the multi-view sequence layout."""
    p = OneLineParser(
        prog="ds4d prepare",
        description="Read a video or a folder of numbered frames, take the foreground alpha from "
        "the input (RGBA), from --masks or from a --segmenter model (in that order), centre and "
        "rescale the object over the whole clip, and write OUT/<name>/{t}.png for "
        "`data.dataset: consistent4d`. With --zero123pp, also run Zero123++ on every frame and "
        "write OUT/<name>_mv/{ref,zero123}/ for `data.dataset: multiview_sequence`.",
    )
    p.add_argument("--input", required=True, help="video file or folder of numbered frames")
    p.add_argument("--out", required=True, help="dataset root to write into")
    p.add_argument("--name", default=None, help="object name (default: the input's name)")
    p.add_argument("--masks", default=None, help="folder of numbered foreground masks")
    p.add_argument("--size", type=int, default=512, help="side of the square output frames")
    p.add_argument("--fill", type=float, default=0.8, help="fraction of the side the object fills")
    p.add_argument("--max_frames", type=int, default=None)
    g = p.add_argument_group(
        "segmentation model",
        "A TorchScript file (torch.jit.save of e.g. BiRefNet, RMBG, U2-Net) taking a (1,3,S,S) "
        "RGB batch in [0,1] and returning foreground logits or probabilities; used for inputs "
        "without alpha and without --masks.",
    )
    g.add_argument("--segmenter", default=None, help="TorchScript foreground model file")
    g.add_argument("--segmenter_size", type=int, default=1024, help="model input side S")
    g.add_argument("--segmenter_normalize", choices=("none", "imagenet"), default="none")
    g.add_argument(
        "--segmenter_output_index",
        type=int,
        default=0,
        help="map to read when the model returns several (U2-Net: 0, BiRefNet: -1)",
    )
    z = p.add_argument_group("Zero123++ pseudo views")
    z.add_argument("--zero123pp", default=None, help="local Zero123++ directory (hub layout)")
    z.add_argument("--zero123pp_version", choices=("v1.1", "v1.2"), default="v1.1")
    z.add_argument("--zero123pp_steps", type=int, default=28)
    z.add_argument("--zero123pp_guidance", type=float, default=4.0)
    z.add_argument("--zero123pp_seed", type=int, default=0)
    z.add_argument("--zero123pp_resolution", type=int, default=320, help="side of each view")
    z.add_argument(
        "--no_temporal_anchor",
        action="store_true",
        help="do not let later frames attend to the first frame's reference tokens",
    )
    z.add_argument(
        "--zero123pp_alpha",
        choices=("threshold", "segmenter"),
        default="threshold",
        help="views' alpha: background-colour threshold, or the --segmenter model",
    )
    z.add_argument(
        "--zero123pp_background",
        type=float,
        default=0.5,
        help="grey level of the generated background for the threshold alpha (0.5: the "
        "published models' grey; 1.0: white)",
    )
    z.add_argument("--device", default="auto", help="device for Zero123++ (auto: CUDA if any)")
    a = p.parse_args(argv)
    if a.max_frames is not None and a.max_frames < 1:
        p.error(f"--max_frames must be >= 1 (or left out for every frame); got {a.max_frames}")
    if a.size < 16:
        p.error(f"--size must be >= 16; got {a.size}")
    if a.zero123pp_alpha == "segmenter" and a.segmenter is None:
        p.error("--zero123pp_alpha segmenter needs --segmenter")
    out = Path(a.out)
    if out.exists() and not out.is_dir():
        p.error(f"--out {a.out}: is a file, not a folder")
    try:
        return _run(a)
    except DS4DError:
        raise
    except (ValueError, OSError) as err:
        # Readers and writers name the file and what is wrong with it.
        raise DataError(str(err)) from err


def _run(a: argparse.Namespace) -> int:
    from ds4d_pl.data.prepare import prepare_video, write_pseudo_views
    from ds4d_pl.data.segment import SegmenterConfig

    seg_cfg = SegmenterConfig(
        input_size=a.segmenter_size,
        normalize=a.segmenter_normalize,
        output_index=a.segmenter_output_index,
    )
    path = prepare_video(
        a.input,
        a.out,
        a.name,
        a.masks,
        a.size,
        a.fill,
        a.max_frames,
        segmenter=a.segmenter,
        segmenter_cfg=seg_cfg,
    )
    print(f"wrote {path}")
    if a.zero123pp is not None:
        from ds4d_pl.priors.zero123pp import Zero123ppConfig

        cfg = Zero123ppConfig(
            version=a.zero123pp_version,
            steps=a.zero123pp_steps,
            guidance_scale=a.zero123pp_guidance,
            seed=a.zero123pp_seed,
            resolution=a.zero123pp_resolution,
            temporal_anchor=not a.no_temporal_anchor,
            alpha=a.zero123pp_alpha,
            alpha_background=a.zero123pp_background,
            segmenter=a.segmenter,
            device=a.device,
        )
        mv = write_pseudo_views(
            path,
            a.zero123pp,
            cfg,
            progress=lambda i, n: print(f"zero123++ frame {i}/{n}"),
            segmenter_cfg=seg_cfg,
        )
        print(f"wrote {mv}")
    return 0
