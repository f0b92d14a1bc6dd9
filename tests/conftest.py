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
