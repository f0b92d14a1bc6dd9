"""Cost of the generative priors on this machine.

    python benchmarks/priors.py [--out benchmarks/results/priors.json] [--threads 2]
                                [--fit-steps 80] [--real-size]

Measures, as medians after a warm-up:

* ``sds_step_s``: one Zero123 SDS step (VAE encode of the render, UNet on the CFG batch,
  backward into the image) with the tiny random Zero123 of ``ds4d_pl.priors.tiny``
  at 64² renders.
* ``zero123pp_generation_s``: one Zero123++ multi-view generation (six 16² views of one frame,
  28 steps, the default) with the tiny random Zero123++ of ``ds4d_pl.priors.tiny``.
* ``fit``: the demo object fitted at 64² with and without SDS (tiny Zero123, one 64² view per
  step): median fine-stage step time of each and their ratio. The ratio shows what SDS adds
  around the networks (an extra render at the SDS resolution, its backward, the encoders).
* ``--real-size``: one SDS step with Zero123's real architecture sizes (SD-1.x UNet with 8
  input channels, 256² renders, batch 1, random weights: the cost does not depend on the
  weights). On CPU this is what dominates a real SDS run.

The tiny components' outputs mean nothing; their timings are of the code path, not of the
published networks.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from fit_runs import QUIET_FIT_ARGS, run_fit  # noqa: E402
from timing import median_seconds  # noqa: E402


def sds_step_seconds(guidance, resolution: int, repeats: int) -> float:
    cond = guidance.encode_condition(torch.rand(1, resolution, resolution, 3))
    from ds4d_pl.priors.sds import relative_pose

    pose = relative_pose(torch.tensor([10.0]), torch.tensor([60.0]), torch.zeros(1))
    g = torch.Generator().manual_seed(0)

    def step() -> None:
        image = torch.rand(1, resolution, resolution, 3, requires_grad=True)
        guidance(image, cond, pose, 0, g).loss.backward()

    return median_seconds(step, repeats)


def zero123pp_seconds(tmp: Path, steps: int, repeats: int) -> float:
    """One six-view generation (16² views) with the tiny Zero123++ through the real loader."""
    from ds4d_pl.priors.tiny import write_tiny_zero123pp
    from ds4d_pl.priors.zero123pp import Zero123ppConfig, load_zero123pp

    cfg = Zero123ppConfig(resolution=16, steps=steps, device="cpu", dtype="float32")
    model = load_zero123pp(write_tiny_zero123pp(tmp / "zero123pp"), cfg)
    image = torch.rand(32, 32, 4)
    return median_seconds(lambda: model.generate(image), repeats)


def real_size_guidance():
    """Zero123's architecture (SD-1.x UNet, 8 input channels; SD VAE; CLIP ViT-L/14 image
    tower) with random weights."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from ds4d_pl.priors.sds import CCProjection, SDSConfig, Zero123Guidance

    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=2,
        latent_channels=4,
    )
    unet = UNet2DConditionModel(in_channels=8, out_channels=4, cross_attention_dim=768)
    encoder = CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=1024,
            intermediate_size=4096,
            num_hidden_layers=24,
            num_attention_heads=16,
            image_size=224,
            patch_size=14,
            projection_dim=768,
        )
    )
    sched = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    cfg = SDSConfig(resolution=256)
    return Zero123Guidance(vae.eval(), unet.eval(), encoder.eval(), CCProjection(), sched, cfg)


def fit_overhead(zero123: Path, work: Path, steps: int) -> dict:
    base = [
        "-c",
        str(REPO / "configs" / "demo.yaml"),
        "--data.synthetic.resolution=64",
        "--data.synthetic.eval_resolution=64",
        "--model.schedule.coarse_steps=10",
        f"--model.schedule.fine_steps={steps}",
        "--trainer.log_every_n_steps=1",
        *QUIET_FIT_ARGS,
    ]
    sds = [
        f"--model.sds.path={zero123}",
        "--model.loss.sds=1e-4",
        "--model.sds.resolution=64",
    ]
    runs = {}
    for name, extra in (("without_sds", []), ("with_sds", sds)):
        runs[name] = run_fit(base + extra, work / name, 1, name, ("psnr",))
    ratio = runs["with_sds"]["step_ms"] / runs["without_sds"]["step_ms"]
    return {"runs": runs, "step_time_ratio": round(ratio, 3)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "priors.json"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--fit-steps", type=int, default=80)
    p.add_argument("--real-size", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(a.threads)

    from ds4d_pl.priors.sds import SDSConfig, Zero123Guidance
    from ds4d_pl.priors.tiny import write_tiny_zero123

    results: dict = {"threads": a.threads, "repeats": a.repeats}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        zero123 = write_tiny_zero123(tmp / "zero123")
        guidance = Zero123Guidance.from_pretrained(SDSConfig(path=str(zero123), resolution=64))
        results["sds_step_s"] = round(sds_step_seconds(guidance, 64, a.repeats), 4)
        results["zero123pp_steps"] = 28
        results["zero123pp_generation_s"] = round(zero123pp_seconds(tmp, 28, a.repeats), 3)
        if a.fit_steps > 0:
            results["fit"] = fit_overhead(zero123, tmp / "runs", a.fit_steps)
    if a.real_size:
        results["real_size_sds_step_s_256"] = round(
            sds_step_seconds(real_size_guidance(), 256, max(1, a.repeats // 2)), 2
        )
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
