"""``ds4d weights``: which pretrained networks are present, and where each was sought."""

from __future__ import annotations

import argparse
import json


def main(argv: list[str]) -> int:
    """``ds4d weights``: which pretrained metric networks are present, and where each was sought."""
    from ds4d_pl.metrics.weights import status

    p = argparse.ArgumentParser(
        prog="ds4d weights",
        description="List every pretrained network the metrics use: found or missing, the path "
        "used or every path looked at, and where the file is published. Nothing is downloaded; "
        "put files in $DS4D_WEIGHTS_DIR.",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    a = p.parse_args(argv)
    rows = status()
    if a.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        if r["found"]:
            print(f"{r['name']:<14} found    {r['path']}")
        else:
            print(f"{r['name']:<14} MISSING  {r['file']}  (published: {r['published']})")
            for path in r["looked_at"]:
                print(f"{'':<24}looked at {path}")
    return 0
