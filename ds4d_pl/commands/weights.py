"""``ds4d weights``: every pretrained network and model directory, found or missing, and where.

Lists the whole registry of :mod:`ds4d_pl.weights` (frame encoders, metric networks, priors,
segmentation model): the path each resolves to, or the file to get, where it is published and
every place looked at. ``--weights NAME=PATH`` checks explicit paths the way a run would get
them; ``--check`` also loads what was found, strictly, through the same code a run uses.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ds4d_pl.commands.oneline import OneLineParser


def _load_zero123pp(version: str) -> Callable[[Path], Any]:
    def load(path: Path) -> Any:
        from ds4d_pl.priors.zero123pp import Zero123ppConfig, load_zero123pp

        return load_zero123pp(path, Zero123ppConfig(version=version, device="cpu"))

    return load


def _load_dinov2(variant: str) -> Callable[[Path], Any]:
    def load(path: Path) -> Any:
        from ds4d_pl.conditioning.encoders import Dinov2Encoder

        return Dinov2Encoder(variant=variant, weights=str(path))

    return load


def _loader(name: str) -> Callable[[Path], Any]:
    """The function a run uses to load entry ``name`` from a resolved path."""
    if name.startswith("dinov2"):
        return _load_dinov2(name)
    if name.startswith("zero123plus-"):
        return _load_zero123pp(name.removeprefix("zero123plus-"))
    if name == "efficientnet_lite0":
        from ds4d_pl.conditioning.encoders import EfficientNetLite0Encoder

        return lambda p: EfficientNetLite0Encoder(weights=str(p))
    if name == "clip_vit_b32":
        from ds4d_pl.metrics.clip import CLIPSimilarity

        return CLIPSimilarity.from_pretrained
    if name == "vgg16":
        from ds4d_pl.metrics.lpips import VGG16Features

        return lambda p: VGG16Features().load_checkpoint(p)
    if name == "lpips_vgg":
        from ds4d_pl.metrics.lpips import LPIPSHeads
        from ds4d_pl.weights import load_strict

        return lambda p: load_strict(LPIPSHeads(), p)
    if name == "i3d":
        from ds4d_pl.metrics.i3d import InceptionI3d

        return InceptionI3d.from_pretrained
    if name == "inception_fid":
        from ds4d_pl.metrics.inception import InceptionV3

        return InceptionV3.from_pretrained
    if name == "r3d50":
        from ds4d_pl.metrics.r3d import R3D50

        return R3D50.from_pretrained
    if name == "zero123":
        from ds4d_pl.priors.sds import SDSConfig, Zero123Guidance

        return lambda p: Zero123Guidance.from_pretrained(SDSConfig(path=str(p)))
    if name == "segmenter":
        from ds4d_pl.data.segment import load_segmenter

        return load_segmenter
    raise KeyError(name)  # pragma: no cover - every registry entry is listed above


def check(name: str, path: str | Path) -> str | None:
    """Load ``name`` from ``path`` as a run would; ``None`` if it loads, else the error."""
    from ds4d_pl.weights import WeightsError

    try:
        _loader(name)(Path(path))
    except WeightsError as err:
        return str(err)
    return None


def main(argv: list[str]) -> int:
    """``ds4d weights``: list every pretrained network and where it was (or was not) found."""
    from ds4d_pl.weights import REGISTRY, status

    p = OneLineParser(
        prog="ds4d weights",
        description="List every pretrained network and model directory the package loads "
        "(frame encoders, metrics, priors, segmentation model): found or missing, the path used "
        "or every path looked at, and where each is published. Nothing is downloaded; put files "
        "in $DS4D_WEIGHTS_DIR or pass their paths. Exit status 1 if a path given with --weights "
        "is missing or a --check fails.",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--weights",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="check this explicit path for NAME instead of the default search (repeatable)",
    )
    p.add_argument(
        "--check",
        nargs="*",
        default=None,
        metavar="NAME",
        help="also load the found entries (all, or the NAMEs given) strictly, as a run would",
    )
    a = p.parse_args(argv)
    explicit = p.weights_paths(a.weights)
    for name in a.check or []:
        if name not in REGISTRY:
            p.error(f"--check: unknown network {name!r}; known: {', '.join(REGISTRY)}")
    rows = status(explicit)
    failed = any(r["explicit"] and not r["found"] for r in rows)
    if a.check is not None:
        wanted = set(a.check) or {r["name"] for r in rows}
        for r in rows:
            if r["name"] in wanted and r["found"]:
                r["check"] = check(r["name"], r["path"]) or "ok"
                failed |= r["check"] != "ok"
    if a.json:
        print(json.dumps(rows, indent=2))
        return int(failed)
    width = max(len(n) for n in REGISTRY)
    pad = " " * (width + 11)
    for r in rows:
        if r["found"]:
            print(f"{r['name']:<{width}}  found    {r['path']}")
            if "check" in r:
                verdict = "loads strictly" if r["check"] == "ok" else f"FAILS: {r['check']}"
                print(f"{pad}check: {verdict}")
            continue
        given = " (the path given)" if r["explicit"] else ""
        folder = "/" if r["kind"] in ("hf_dir", "pipeline_dir") else ""
        print(f"{r['name']:<{width}}  MISSING  {r['file']}{folder}{given}")
        print(f"{pad}used by: {r['used_by']}; give a path with {r['setting']}")
        print(f"{pad}get it from: {r['published']}")
        for path in r["looked_at"]:
            print(f"{pad}looked at {path}")
    return int(failed)
