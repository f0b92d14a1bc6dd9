"""Cost of the benchmark metrics' networks on this machine.

    python benchmarks/metrics.py [--out benchmarks/results/metrics.json] [--threads 2]

Seconds per 32-frame 224² clip for I3D (FVD), and seconds per frame for the others: LPIPS (VGG16)
and CLIP ViT-B/32 on 512² frame pairs (the Consistent4D protocol resolution), Inception-v3 on
frames (FID-VID ``frame_fid``) and 3D-ResNet-50 on a 16-frame 112² clip divided by 16
(FID-VID ``r3d50``). The networks are the package's own definitions, randomly initialised (the
cost does not depend on the weights). Median of ``--repeats`` runs after one warm-up.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from timing import median_seconds  # noqa: E402


@torch.no_grad()
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "metrics.json"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)

    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from ds4d_pl.metrics.clip import CLIPSimilarity
    from ds4d_pl.metrics.fid_vid import FIDVID
    from ds4d_pl.metrics.fvd import FVD
    from ds4d_pl.metrics.i3d import InceptionI3d
    from ds4d_pl.metrics.inception import InceptionV3
    from ds4d_pl.metrics.lpips import LPIPS, LPIPSNet
    from ds4d_pl.metrics.r3d import R3D50

    frames = torch.rand(4, 512, 512, 3)
    clip32 = torch.rand(32, 224, 224, 3)
    clip16 = torch.rand(16, 112, 112, 3)
    # ViT-B/32 image tower sizes (the real CLIP config), random weights.
    clip_cfg = CLIPVisionConfig(
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        image_size=224,
        patch_size=32,
        projection_dim=512,
    )
    lpips = LPIPS(LPIPSNet())
    clip = CLIPSimilarity(CLIPVisionModelWithProjection(clip_cfg).eval())
    fvd = FVD(InceptionI3d().eval())
    inception = InceptionV3().eval()
    r3d = R3D50().eval()

    n = frames.shape[0]
    results = {
        "threads": a.threads,
        "repeats": a.repeats,
        "lpips_s_per_frame_512": median_seconds(lambda: lpips.scores(frames, frames), a.repeats)
        / n,
        "clip_s_per_frame_512": median_seconds(lambda: clip.scores(frames, frames), a.repeats) / n,
        "i3d_s_per_clip_32x224": median_seconds(lambda: fvd.logits(clip32[None]), a.repeats),
        "inception_s_per_frame_299": median_seconds(
            lambda: inception(frames.permute(0, 3, 1, 2)), a.repeats
        )
        / n,
        "r3d50_s_per_frame_112": median_seconds(
            lambda: r3d(clip16.permute(3, 0, 1, 2)[None]), a.repeats
        )
        / clip16.shape[0],
    }
    # FIDVID is exercised once so the script fails if its wiring to the networks breaks.
    FIDVID(inception, variant="frame_fid").update(
        clip16[:2, :64, :64][None], clip16[:2, :64, :64][None]
    )
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
