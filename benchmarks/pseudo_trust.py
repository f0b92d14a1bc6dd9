"""Does TSSF-DA's trust single out the badly wrong pseudo view of the degraded synthetic object?

    python benchmarks/pseudo_trust.py [--resolution 64] [--seeds 3] [--power 1] [--tau 1]

For oracle and degraded pseudo views of the mostly-static object (seeds 0..n-1, the degraded
views' defects drawn with the same seed, as ``benchmarks/ablation.py --pseudo_views degraded``
does), builds row H's conditioning on the initial Gaussians (EfficientNet-Lite0 features, no
training: the trust depends on the frame features and where the Gaussians project, not on the
fitted field) and prints each pseudo view's ``loss.pseudo_weighting: tssf`` trust
(:func:`ds4d_pl.losses.pseudo_view_trust`), averaged over the frames, next to the index of the
view the degradation made badly wrong. Seconds per scene on a CPU.
"""

from __future__ import annotations

import argparse

import torch

from ds4d_pl.config import AblationConfig, ConditioningConfig, FieldConfig, GaussianInit
from ds4d_pl.data.parsers.synthetic import SyntheticConfig, make_synthetic_scene
from ds4d_pl.losses import pseudo_view_trust
from ds4d_pl.model import DS4DModel

ROW_H = AblationConfig("points", True, True, "da")


def view_trusts(kind: str, seed: int, a: argparse.Namespace) -> tuple[torch.Tensor, list | None]:
    """``(V,)`` trusts averaged over the frames, and the badly wrong views' train indices."""
    degraded = {"degrade": {"seed": seed}} if kind == "degraded" else {}
    cfg = SyntheticConfig(
        motion="mostly_static",
        num_frames=a.frames,
        resolution=a.resolution,
        eval_resolution=a.resolution,
        seed=seed,
        pseudo_views=kind,
        **degraded,
    )
    scene = make_synthetic_scene(cfg)
    model = DS4DModel(GaussianInit(), FieldConfig(), ROW_H, ConditioningConfig(tau=a.tau))
    model.initialise(scene, torch.Generator().manual_seed(seed))
    model.prepare_conditioning(scene.train, a.cache_dir)
    trusts = []
    with torch.no_grad():
        for t in scene.train.times:
            model.at(float(t), deform=True)
            weights, visible = model.last_fusion_weights, model.last_fusion_visible
            trusts.append(pseudo_view_trust(weights, visible, scene.num_input_views, a.power))
    wrong = scene.meta["degrade"]["wrong_view_indices"] if kind == "degraded" else None
    return torch.stack(trusts).mean(0), wrong


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--frames", type=int, default=12)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--power", type=float, default=1.0, help="loss.pseudo_trust_power")
    p.add_argument("--tau", type=float, default=1.0, help="conditioning.tau (DA's temperature)")
    p.add_argument("--cache_dir", default=None, help="feature cache (default: none)")
    a = p.parse_args()
    print("| pseudo views | seed | trust of views 1..6 | lowest | badly wrong |")
    print("|---|---|---|---|---|")
    for kind in ("oracle", "degraded"):
        for seed in range(a.seeds):
            trust, wrong = view_trusts(kind, seed, a)
            pseudo = trust[1:]
            values = " ".join(f"{x:.3f}" for x in pseudo.tolist())
            lowest = int(pseudo.argmin()) + 1
            print(f"| {kind} | {seed} | {values} | {lowest} | {wrong or '-'} |", flush=True)


if __name__ == "__main__":
    main()
