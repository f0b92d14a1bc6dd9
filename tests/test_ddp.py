"""Multi-process DDP keeps the replicated Gaussians in lock-step (two CPU processes, gloo).

Spec:
  * two ``ddp_spawn`` ranks that sample different frames train through several clone / split /
    prune events and end with identical Gaussian tables, Gaussian counts, densification totals,
    deformation-field and conditioning parameters;
  * negative control: with the Gaussian sync turned off (``DS4DSystem.sync_gaussians``) the same
    run ends with different Gaussians on the two ranks, so the first test can fail;
  * a plain ``ddp`` strategy is made to detect unused parameters (the field sits idle in coarse
    steps), so the check above runs with ``DDPStrategy()`` defaults;
  * rank 0 alone writes the checkpoint (atomically, as the CLI does), it holds the ranks' common
    state, and resuming from it on two ranks (a changed Gaussian count, restored before DDP
    wraps the model) continues through further events in lock-step.

The Trainer is driven directly rather than through the CLI: ``ddp_spawn`` pickles the trainer
and its callbacks into the child processes, and this keeps the state-dumping callback simple.
"""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.strategies import DDPStrategy

from ds4d_pl.callbacks.checkpoint import RunCheckpoint
from ds4d_pl.commands.train import AtomicCheckpointIO
from ds4d_pl.config import DensifyConfig, GaussianInit, StageSchedule
from ds4d_pl.data.datamodule import DS4DDataModule
from ds4d_pl.data.parsers.synthetic import SyntheticConfig
from ds4d_pl.system import DS4DSystem

pytestmark = pytest.mark.slow

#: Events at steps 2, 4, ..., 10: three in the first fit (8 steps), two after resuming (to 12).
#: The split threshold sits at the median initial Gaussian size (so both clones and splits
#: happen) and the prune threshold at about the 85th percentile (so some, not all, Gaussians are
#: pruned at the first event).
DENSIFY = DensifyConfig(
    start_step=2,
    stop_step=10,
    interval=2,
    grad_threshold=0.0,
    grad_top_percent=0.2,
    split_scale_fraction=0.1,
    prune_scale_fraction=0.14,
)
FIRST, STEPS = 8, 12


@pytest.fixture(autouse=True)
def fresh_master_port(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let Lightning pick a free rendezvous port for the spawned ranks.

    An earlier in-process DDP fit in the same pytest session (the ``trainer/ddp.yaml`` preset
    on one device) leaves ``MASTER_PORT`` set and its store listening on that port until the
    interpreter exits; children inheriting the variable would fail with EADDRINUSE.
    """
    monkeypatch.delenv("MASTER_PORT", raising=False)


class DumpState(pl.Callback):
    """Each rank writes what must agree across ranks to ``<out>/rank{r}.pt`` after training."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.field_start: dict[str, torch.Tensor] = {}

    def on_train_start(self, trainer: pl.Trainer, pl_module: DS4DSystem) -> None:
        self.field_start = {
            k: v.detach().clone() for k, v in pl_module.model.field.state_dict().items()
        }

    def on_train_end(self, trainer: pl.Trainer, pl_module: DS4DSystem) -> None:
        cond = pl_module.model.conditioner
        state = {
            "gaussians": pl_module.model.gaussians.raw_tables(),
            "field": {k: v.detach().clone() for k, v in pl_module.model.field.state_dict().items()},
            "field_start": self.field_start,
            "conditioner": {
                k: v.detach().clone() for k, v in (cond.named_parameters() if cond else [])
            },
            "num_gaussians": pl_module.model.gaussians.num_gaussians,
            "densify_totals": dict(pl_module._densify_totals),
            "global_step": trainer.global_step,
            "world_size": trainer.world_size,
        }
        torch.save(state, self.out / f"rank{trainer.global_rank}.pt")


def fit_two_ranks(
    out: Path, sync: bool = True, steps: int = STEPS, ckpt_path: str | None = None
) -> list[dict]:
    """Fit the tiny synthetic object on two CPU processes; the state of each rank at the end.

    A checkpoint ``<out>/checkpoints/last.ckpt`` is written at the end (``ckpt_path`` resumes).
    """
    out.mkdir(parents=True, exist_ok=True)
    model = DS4DSystem(
        init=GaussianInit(num=300, radius=0.6),
        schedule=StageSchedule(coarse_steps=2, fine_steps=STEPS - 2, frames_per_step=1),
        densify=DENSIFY,
        renderer="torch",
        seed=0,
    )
    model.sync_gaussians = sync
    data = DS4DDataModule(
        synthetic=SyntheticConfig(
            num_frames=4, resolution=32, eval_resolution=32, num_init_points=300
        )
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=2,
        # Plain DDP settings on purpose: the system itself switches on unused-parameter
        # detection, which the coarse steps (field unused) need.
        strategy=DDPStrategy(start_method="spawn", process_group_backend="gloo"),
        max_steps=steps,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=out,
        callbacks=[DumpState(out), RunCheckpoint(dirpath=out / "checkpoints", save_last=True)],
    )
    trainer.strategy.checkpoint_io = AtomicCheckpointIO()
    # The test's own checkpoint: the model was built from config dataclasses (the CLI passes
    # plain values), which torch's weights-only unpickler does not allow.
    trainer.fit(model, datamodule=data, ckpt_path=ckpt_path, weights_only=False)
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]


def assert_same(a: dict, b: dict) -> None:
    """The two ranks' states agree exactly."""
    assert a["world_size"] == b["world_size"] == 2
    assert a["global_step"] == b["global_step"]
    assert a["num_gaussians"] == b["num_gaussians"]
    assert a["densify_totals"] == b["densify_totals"]
    for group in ("gaussians", "field", "conditioner"):
        assert a[group].keys() == b[group].keys()
        for key, value in a[group].items():
            # Bit-identical: every rank applies the same all-reduced values in the same order.
            assert torch.equal(value, b[group][key]), f"{group}.{key} differs between ranks"
    assert a["conditioner"], "the conditioning projection should be part of the check"
    moved = [k for k, v in a["field"].items() if not torch.equal(v, a["field_start"][k])]
    assert moved, "the deformation field never trained, so its comparison proves nothing"


def test_two_ranks_stay_identical_through_densification_and_resume(tmp_path: Path) -> None:
    out = tmp_path / "sync"
    a, b = fit_two_ranks(out, steps=FIRST)
    assert a["global_step"] == FIRST
    totals = a["densify_totals"]
    assert totals["cloned"] > 0 and totals["split"] > 0 and totals["pruned"] > 0, totals
    assert a["num_gaussians"] != 300, "densification never changed the Gaussian count"
    assert_same(a, b)

    # One checkpoint, from rank 0, holding exactly the ranks' common state.
    ckpts = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert "last.ckpt" in ckpts and not [n for n in ckpts if n.startswith(".")], ckpts
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == FIRST
    assert ckpt["ds4d"]["num_gaussians"] == a["num_gaussians"]
    for key, value in a["gaussians"].items():
        assert torch.equal(ckpt["state_dict"][f"model.gaussians.{key}"], value), key

    # Resume on two ranks: more events, still in lock-step.
    a2, b2 = fit_two_ranks(out, steps=STEPS, ckpt_path=str(out / "checkpoints" / "last.ckpt"))
    assert a2["global_step"] == STEPS
    assert sum(a2["densify_totals"].values()) > sum(totals.values()), "no event after resuming"
    assert_same(a2, b2)


def test_without_the_gaussian_sync_the_ranks_drift_apart(tmp_path: Path) -> None:
    """Negative control: the comparison above detects ranks that are not kept in step."""
    a, b = fit_two_ranks(tmp_path / "nosync", sync=False, steps=FIRST)
    same_count = a["num_gaussians"] == b["num_gaussians"]
    assert not same_count or not torch.equal(a["gaussians"]["means"], b["gaussians"]["means"])
