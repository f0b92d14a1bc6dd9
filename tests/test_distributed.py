"""Collectives of ``ds4d_pl/distributed.py`` (what keeps DDP ranks' Gaussians identical).

Spec:
  * without a multi-rank process group every helper is the identity / a no-op and calls no
    collective (a single-process run behaves exactly as before);
  * on two gloo processes: sums and maxima are element-wise over ranks and leave the input
    untouched; gradients become their mean over ranks (a missing gradient counts as zero, a
    gradient missing on every rank stays ``None``); ``any_rank`` gives every rank the same
    answer; ``broadcast_`` copies rank 0 and refuses tensors whose shapes differ by rank;
    ``DensifyStrategy.reduce_statistics`` with these helpers leaves identical statistics.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ds4d_pl import distributed
from ds4d_pl.config import DensifyConfig
from ds4d_pl.gaussians.densify import DensifyStrategy


@pytest.fixture
def no_collectives(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args, **kwargs):
        raise AssertionError("a collective was called outside a multi-rank process group")

    for name in ("all_reduce", "broadcast", "all_gather_object"):
        monkeypatch.setattr(dist, name, fail)


def test_single_process_helpers_are_identity_and_call_no_collective(no_collectives) -> None:
    assert not distributed.is_distributed()
    assert distributed.world_size() == 1
    t = torch.tensor([1.0, 2.0])
    assert distributed.all_reduce_sum(t) is t
    assert distributed.all_reduce_max(t) is t
    assert distributed.any_rank(True) and not distributed.any_rank(False)
    p = torch.nn.Parameter(torch.zeros(2))
    p.grad = torch.tensor([3.0, 4.0])
    q = torch.nn.Parameter(torch.zeros(2))
    distributed.all_reduce_mean_grads_([p, q])
    assert torch.equal(p.grad, torch.tensor([3.0, 4.0])) and q.grad is None
    distributed.broadcast_([t])
    distributed.check_same_shapes([t])
    assert torch.equal(t, torch.tensor([1.0, 2.0]))


def _worker(rank: int, init_file: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        assert distributed.is_distributed() and distributed.world_size() == 2
        # Sums and maxima, input untouched.
        t = torch.tensor([1.0, 10.0]) * (rank + 1)
        s = distributed.all_reduce_sum(t)
        assert torch.equal(s, torch.tensor([3.0, 30.0])), s
        assert torch.equal(t, torch.tensor([1.0, 10.0]) * (rank + 1)), "input was modified"
        m = distributed.all_reduce_max(torch.tensor([float(rank), 5.0 - rank]))
        assert torch.equal(m, torch.tensor([1.0, 5.0])), m
        assert distributed.any_rank(rank == 1) and not distributed.any_rank(False)

        # Mean gradients: present on both, on one rank only, on none; frozen parameters skipped.
        both = torch.nn.Parameter(torch.zeros(2, 3))
        both.grad = torch.full((2, 3), float(rank + 1))
        one = torch.nn.Parameter(torch.zeros(4))
        if rank == 1:
            one.grad = torch.full((4,), 8.0)
        none = torch.nn.Parameter(torch.zeros(1))
        empty = torch.nn.Parameter(torch.zeros(0, 3))
        empty.grad = torch.zeros(0, 3)
        frozen = torch.nn.Parameter(torch.zeros(1), requires_grad=False)
        frozen.grad = torch.full((1,), float(rank))
        distributed.all_reduce_mean_grads_([both, one, none, empty, frozen])
        assert torch.equal(both.grad, torch.full((2, 3), 1.5)), both.grad
        assert one.grad is not None and torch.equal(one.grad, torch.full((4,), 4.0)), one.grad
        assert none.grad is None
        assert empty.grad.shape == (0, 3)
        assert frozen.grad.item() == float(rank), "a frozen parameter was reduced"

        # Broadcast from rank 0, and a clear error for shapes that differ between ranks.
        b = torch.nn.Parameter(torch.full((3,), float(rank)))
        distributed.broadcast_([b])
        assert torch.equal(b.detach(), torch.zeros(3)), b
        try:
            distributed.broadcast_([torch.zeros(3 + rank)])
        except ValueError as err:
            assert "differ between ranks" in str(err)
        else:
            raise AssertionError("broadcast_ of mismatched shapes did not raise")

        # Densification statistics: different on each rank before, identical after.
        strategy = DensifyStrategy(DensifyConfig(), extent=1.0)
        strategy.reset_statistics(3)
        strategy.grad_accum += torch.tensor([1.0, 2.0, 3.0]) * (rank + 1)
        strategy.count += torch.tensor([1.0, 0.0, 1.0]) + rank
        strategy.max_radii = torch.tensor([0.1, 0.5, 0.2]) * (1 + rank * torch.tensor([1, -1, 0]))
        strategy.reduce_statistics(distributed.all_reduce_sum, distributed.all_reduce_max)
        assert torch.allclose(strategy.grad_accum, torch.tensor([3.0, 6.0, 9.0]))
        assert torch.equal(strategy.count, torch.tensor([3.0, 1.0, 3.0]))
        assert torch.allclose(strategy.max_radii, torch.tensor([0.2, 0.5, 0.2]))
    finally:
        dist.destroy_process_group()


def test_collectives_on_two_gloo_processes(tmp_path: Path) -> None:
    # Raises in the parent (with the child's traceback) if any assertion in a worker fails.
    mp.spawn(_worker, args=(str(tmp_path / "pg_init"),), nprocs=2, join=True)


def test_require_unused_parameter_detection_sets_the_flag_once() -> None:
    """A plain ``ddp`` strategy is told to find unused parameters (the field idles in coarse
    steps); one that already does, or a strategy without DDP keyword arguments, is left alone."""

    class Strategy:
        def __init__(self, kwargs):
            self._ddp_kwargs = kwargs

    plain = Strategy({})
    assert distributed.require_unused_parameter_detection(plain) is True
    assert plain._ddp_kwargs == {"find_unused_parameters": True}
    assert distributed.require_unused_parameter_detection(plain) is False
    assert distributed.require_unused_parameter_detection(object()) is False
