"""Shared test set-up: offline hub, two CPU threads, and a tiny-run helper for the CLI."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
# Feature caches of test runs go to a throw-away directory, not the user's ~/.cache, removed
# when the session ends so repeated runs do not fill /tmp.
if "DS4D_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="ds4d-test-cache-")
    os.environ["DS4D_CACHE_DIR"] = _cache
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"


def tiny_overrides(run_dir: Path, steps: int = 2) -> list[str]:
    """CLI overrides that shrink any preset to a seconds-long CPU run.

    One coarse step then fine steps, so both stages (and the deformation field) are exercised.
    """
    return [
        f"--trainer.default_root_dir={run_dir}",
        f"--trainer.max_steps={steps}",
        "--trainer.accelerator=cpu",
        "--trainer.logger=false",
        "--trainer.enable_progress_bar=false",
        "--model.schedule.coarse_steps=1",
        "--model.init.num=300",
        "--videos.resolution=32",
        "--videos.turntable_frames=4",
        "--checkpoint.every_n_train_steps=1",
    ]


def tiny_synthetic() -> list[str]:
    return [
        "--data.synthetic.num_frames=4",
        "--data.synthetic.resolution=32",
        "--data.synthetic.eval_resolution=32",
    ]


def logged_tiny_fit(run_dir: Path, row: str, steps: int, *extra: str) -> Path:
    """A tiny fit of ``configs/ablation/<row>.yaml`` on the synthetic object that logs every
    step to CSV and skips the test after fit; returns the ``metrics.csv`` it wrote."""
    from ds4d_pl.cli import main

    overrides = [a for a in tiny_overrides(run_dir, steps) if not a.startswith("--trainer.logger")]
    main(
        [
            "fit",
            "-c",
            str(CONFIGS / "base.yaml"),
            "-c",
            str(CONFIGS / "ablation" / f"{row}.yaml"),
            *tiny_synthetic(),
            *overrides,
            "--trainer.log_every_n_steps=1",
            "--test_after_fit=false",
            *extra,
        ]
    )
    return next(iter((run_dir / "lightning_logs").rglob("metrics.csv")))


def tiny_nerf() -> list[str]:
    """CLI overrides that shrink ``configs/model/nerf.yaml`` like :func:`tiny_overrides` shrinks
    the Gaussians: few samples per ray, a small conditioning grid and small exports (every pixel
    of a volume render costs a ray of field queries)."""
    return [
        "--model.nerf.samples_per_ray=8",
        "--model.nerf.proposal_samples=8",
        "--model.nerf.cond_resolution=8",
        "--model.conditioning.visibility_resolution=16",
        "--export.density_resolution=16",
    ]


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return tmp_path / "run"


@pytest.fixture
def no_weights(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No pretrained weights anywhere: an empty ``DS4D_WEIGHTS_DIR`` (``tmp_path/weights``), an
    empty torch hub cache and no Hugging Face cache, so nothing is found by accident on a
    machine that has real weights. Returns ``tmp_path``."""
    from ds4d_pl import weights

    (tmp_path / "weights").mkdir()
    monkeypatch.setenv("DS4D_WEIGHTS_DIR", str(tmp_path / "weights"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch_hub"))
    monkeypatch.setattr(weights, "_hf_cached", lambda repo: None)
    return tmp_path


@pytest.fixture(autouse=True)
def no_leftover_process_group():
    """Tear down a process group a test left behind (the ``trainer/ddp.yaml`` preset fits
    in-process with one rank, and Lightning destroys its group only at interpreter exit), so
    later tests do not run torchmetrics' and Lightning's distributed code paths by accident."""
    yield
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def write_random_metric_weights(wdir: Path, video: bool = True) -> Path:
    """Randomly initialised metric networks of the real architectures, saved under their
    published file names, so scorers go through the real resolution and strict loading code:
    VGG16 + LPIPS heads and a small CLIP vision tower, and with ``video`` also I3D and the FID
    Inception."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from ds4d_pl.metrics.lpips import LPIPSHeads, VGG16Features

    torch.manual_seed(0)
    torch.save(VGG16Features().state_dict(), wdir / "vgg16-397923af.pth")
    heads = LPIPSHeads()
    with torch.no_grad():
        for p in heads.parameters():
            p.uniform_(0.1, 1.0)  # LPIPS heads are non-negative
    torch.save(heads.state_dict(), wdir / "lpips_vgg_v0.1.pth")
    if video:
        from ds4d_pl.metrics.i3d import InceptionI3d
        from ds4d_pl.metrics.inception import InceptionV3

        torch.save(InceptionI3d().state_dict(), wdir / "i3d_pretrained_400.pt")
        torch.save(InceptionV3().state_dict(), wdir / "pt_inception-2015-12-05-6726825d.pth")
    cfg = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=224,
        patch_size=32,
        projection_dim=16,
    )
    CLIPVisionModelWithProjection(cfg).save_pretrained(wdir / "clip-vit-base-patch32")
    return wdir
