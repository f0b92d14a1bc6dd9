"""Adaptive density control: clone, split and prune Gaussians (3DGS), as a stateful strategy.

Usage per training step (manual optimisation)::

    loss.backward()
    for out, cams in renders:
        strategy.accumulate(out, cams.width, cams.height)
    optimizer.step(); optimizer.zero_grad()
    counts = strategy.step(global_step, gaussians, optimizer)

Everything that changes the number of Gaussians goes through :func:`_update_tables`, which
resizes every table of :class:`~ds4d_pl.gaussians.canonical.CanonicalGaussians`, the optimizer's
parameter groups and Adam moments, and this strategy's statistics together, so nothing can drift.

Invariants are locked by ``tests/test_densify.py``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from ds4d_pl.config import DensifyConfig
from ds4d_pl.gaussians.canonical import CanonicalGaussians
from ds4d_pl.render.base import RenderOutput, quat_to_rotmat

#: Names of the strategy's per-Gaussian statistics.
STATS = ("grad_accum", "count", "max_radii")


def _find_param(optimizer: torch.optim.Optimizer, param: Tensor) -> tuple[int, int] | None:
    """Position ``(group, index)`` of ``param`` in the optimizer, or ``None``."""
    for gi, group in enumerate(optimizer.param_groups):
        for pi, p in enumerate(group["params"]):
            if p is param:
                return gi, pi
    return None


class DensifyStrategy:
    """Clone / split / prune with explicit state (modelled on gsplat's ``DefaultStrategy``).

    Statistics (each ``(N,)``, created lazily at the first :meth:`accumulate`):
        ``grad_accum``: Sum over renders of the view-space positional gradient norm, where the
        pixel gradient is multiplied by ``width / 2`` and ``height / 2`` (the gradient with
        respect to NDC coordinates, which makes ``grad_threshold`` resolution-independent; unlike
        gsplat it is not also multiplied by the number of cameras).
        ``count``: Number of renders in which the Gaussian was visible (``radii > 0``).
        ``max_radii``: Largest screen radius seen, divided by ``max(width, height)``.

    Events happen at steps ``s`` with ``start_step <= s <= stop_step`` and
    ``s % interval == 0`` (:meth:`is_event`); statistics are reset after every event. Under DDP,
    call :meth:`reduce_statistics` with all-reduces before :meth:`step` at event steps only
    (reducing every step would add the already-summed totals again).

    Args:
        cfg: Thresholds and schedule.
        extent: Scene scale (see :meth:`CanonicalGaussians.extent`); size thresholds are
            fractions of it.
    """

    def __init__(self, cfg: DensifyConfig, extent: float) -> None:
        if not extent > 0 or not math.isfinite(extent):
            raise ValueError(f"DensifyStrategy: extent must be finite and > 0, got {extent}")
        self.cfg = cfg
        self.extent = float(extent)
        self.grad_accum: Tensor | None = None
        self.count: Tensor | None = None
        self.max_radii: Tensor | None = None

    # ------------------------------------------------------------------ statistics
    @property
    def num_tracked(self) -> int | None:
        """``N`` of the statistics, or ``None`` before the first :meth:`accumulate`."""
        return None if self.grad_accum is None else self.grad_accum.shape[0]

    def reset_statistics(self, n: int | None = None, device: torch.device | None = None) -> None:
        """Zero the statistics (sized ``n``, or their current size)."""
        if n is None:
            if self.grad_accum is None:
                return
            n = self.grad_accum.shape[0]
        if device is None:
            device = self.grad_accum.device if self.grad_accum is not None else torch.device("cpu")
        self.grad_accum = torch.zeros(n, device=device)
        self.count = torch.zeros(n, device=device)
        self.max_radii = torch.zeros(n, device=device)

    def is_active(self, step: int) -> bool:
        """Whether ``step`` lies in the densification window (statistics are worth collecting)."""
        return self.cfg.enabled and self.cfg.start_step <= step <= self.cfg.stop_step

    def is_event(self, step: int) -> bool:
        """Whether :meth:`step` clones / splits / prunes at ``step`` (under DDP, the statistics
        must be reduced over ranks just before such a step, and only then)."""
        return self.is_active(step) and step % self.cfg.interval == 0

    def accumulate(self, out: RenderOutput, width: int, height: int) -> None:
        """Add one render's view-space gradients to the statistics; call after ``backward``.

        Args:
            out: Render output whose ``means2d`` has a ``.grad`` (``(C, N, 2)``).
            width: Image width in pixels.
            height: Image height in pixels.

        Raises:
            RuntimeError: ``means2d.grad`` is missing although some Gaussian is visible (no
                backward, or the renderer did not ``retain_grad``). A render in which nothing
                is visible is skipped.
            ValueError: The Gaussian count differs from the tracked one.
        """
        grad = out.means2d.grad
        if grad is None and not bool((out.radii > 0).any()):
            # Nothing visible, so the image did not depend on means2d: nothing to record.
            return
        if grad is None:
            raise RuntimeError(
                "DensifyStrategy.accumulate: means2d.grad is None; call it after backward() on a "
                "loss that depends on this render (the renderer must retain_grad on means2d)"
            )
        if grad.ndim != 3 or grad.shape[-1] != 2 or tuple(out.radii.shape) != grad.shape[:2]:
            raise ValueError(
                f"DensifyStrategy.accumulate: expected means2d.grad (C, N, 2) and radii (C, N), "
                f"got {tuple(grad.shape)} and {tuple(out.radii.shape)}"
            )
        n = grad.shape[1]
        if self.grad_accum is None:
            self.reset_statistics(n, grad.device)
        elif self.grad_accum.shape[0] != n:
            raise ValueError(
                f"DensifyStrategy.accumulate: render has {n} Gaussians but the statistics track "
                f"{self.grad_accum.shape[0]}; resize through DensifyStrategy.step only"
            )
        assert self.count is not None and self.max_radii is not None
        scale = torch.tensor([width / 2.0, height / 2.0], device=grad.device, dtype=grad.dtype)
        norms = (grad.detach() * scale).norm(dim=-1)  # (C, N)
        visible = out.radii > 0
        self.grad_accum += torch.where(visible, norms, torch.zeros_like(norms)).sum(dim=0).float()
        self.count += visible.sum(dim=0).float()
        radii = (out.radii.detach().float() / float(max(width, height))) * visible
        self.max_radii = torch.maximum(self.max_radii, radii.amax(dim=0))

    def reduce_statistics(
        self,
        all_reduce_sum: Callable[[Tensor], Tensor] | None = None,
        all_reduce_max: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        """Combine statistics across processes (DDP hook; identity by default).

        Args:
            all_reduce_sum: Returns the sum over ranks (applied to ``grad_accum`` and ``count``).
            all_reduce_max: Returns the max over ranks (applied to ``max_radii``).
        """
        if self.grad_accum is None:
            return
        if all_reduce_sum is not None:
            self.grad_accum = all_reduce_sum(self.grad_accum)
            self.count = all_reduce_sum(self.count)
        if all_reduce_max is not None:
            self.max_radii = all_reduce_max(self.max_radii)

    # ------------------------------------------------------------------ events
    def step(
        self,
        step: int,
        gaussians: CanonicalGaussians,
        optimizer: torch.optim.Optimizer,
        generator: torch.Generator | None = None,
    ) -> dict[str, int]:
        """Run a densification event if ``step`` is one; otherwise do nothing.

        Order within an event: clone small high-gradient Gaussians, split large ones, prune, then
        (on its own interval) reset opacities.

        Args:
            step: Global step.
            gaussians: Tables to modify in place.
            optimizer: Optimizer holding the tables (Adam state is carried over).
            generator: CPU generator of the split samples; a stream of ``(seed, step)`` makes a
                resumed run, and every DDP rank, draw the same offsets.

        Returns:
            ``{"cloned", "split", "pruned", "reset", "total"}`` (``reset`` is 1 when opacities
            were reset, ``total`` the count afterwards).
        """
        cfg = self.cfg
        counts = {"cloned": 0, "split": 0, "pruned": 0, "reset": 0}
        if self.is_event(step):
            if self.grad_accum is None:
                self.reset_statistics(gaussians.num_gaussians, gaussians.means.device)
            elif self.grad_accum.shape[0] != gaussians.num_gaussians:
                raise ValueError(
                    f"DensifyStrategy.step: statistics track {self.grad_accum.shape[0]} Gaussians, "
                    f"the model has {gaussians.num_gaussians}"
                )
            counts["cloned"], counts["split"] = self._grow(gaussians, optimizer, generator)
            counts["pruned"] = self._prune(gaussians, optimizer)
            self.reset_statistics(gaussians.num_gaussians, gaussians.means.device)
        if (
            self.is_active(step)
            and cfg.reset_opacity_interval > 0
            and step % cfg.reset_opacity_interval == 0
        ):
            self._reset_opacity(gaussians, optimizer)
            counts["reset"] = 1
        counts["total"] = gaussians.num_gaussians
        return counts

    def _select_for_growth(self, gaussians: CanonicalGaussians) -> Tensor:
        """Indices (sorted by decreasing mean gradient) of the Gaussians to densify."""
        assert self.grad_accum is not None and self.count is not None
        cfg = self.cfg
        n = gaussians.num_gaussians
        room = cfg.max_gaussians - n
        if room <= 0 or n == 0:
            return torch.zeros(0, dtype=torch.long, device=gaussians.means.device)
        mean_grad = self.grad_accum / self.count.clamp_min(1.0)
        if cfg.grad_rule == "quantile":
            return self._select_quantile(mean_grad, room).to(gaussians.means.device)
        # The small epsilon keeps e.g. 0.07 * 100 from rounding up to 8.
        k = min(n, math.ceil(cfg.grad_top_percent * n - 1e-9), room)
        values, idx = torch.topk(mean_grad, k)
        keep = (values > cfg.grad_threshold) & (self.count[idx] > 0)
        return idx[keep].to(gaussians.means.device)

    def _select_quantile(self, mean_grad: Tensor, room: int) -> Tensor:
        """The relative rule: Gaussians seen since the last event whose mean gradient reaches the
        ``1 - grad_top_percent`` quantile of the seen ones' (and is not zero), largest first,
        at most ``room`` of them."""
        assert self.count is not None
        seen = (self.count > 0).nonzero().squeeze(1)
        if seen.numel() == 0:
            return seen
        values = mean_grad[seen]
        level = torch.quantile(values.double(), 1.0 - self.cfg.grad_top_percent).to(values)
        chosen = (values >= level) & (values > 0)
        values, idx = values[chosen], seen[chosen]
        order = torch.argsort(values, descending=True, stable=True)[:room]
        return idx[order]

    def _grow(
        self,
        gaussians: CanonicalGaussians,
        optimizer: torch.optim.Optimizer,
        generator: torch.Generator | None,
    ) -> tuple[int, int]:
        idx = self._select_for_growth(gaussians)
        if idx.numel() == 0:
            return 0, 0
        n = gaussians.num_gaussians
        with torch.no_grad():
            max_scale = gaussians.log_scales[idx].exp().amax(dim=-1)
        is_small = max_scale <= self.cfg.split_scale_fraction * self.extent
        clone_idx, split_idx = idx[is_small], idx[~is_small]

        if clone_idx.numel():
            with torch.no_grad():
                rows = {name: getattr(gaussians, name)[clone_idx] for name in gaussians.TABLES}
            keep = torch.arange(n, device=clone_idx.device)
            _update_tables(gaussians, optimizer, self, keep, rows)

        if split_idx.numel():
            # Clones were appended at the end, so the split indices still point at the originals.
            with torch.no_grad():
                rows = {
                    name: getattr(gaussians, name)[split_idx].repeat_interleave(2, dim=0)
                    for name in gaussians.TABLES
                }
                scales = rows["log_scales"].exp()
                # Drawn on the CPU generator (step_generator) and moved: the same offsets on
                # every DDP rank and device, and no CPU-generator-on-CUDA error.
                noise = torch.randn(scales.shape, generator=generator).to(scales) * scales
                rot = quat_to_rotmat(rows["quats"])
                rows["means"] = rows["means"] + torch.einsum("nij,nj->ni", rot, noise)
                rows["log_scales"] = rows["log_scales"] - math.log(1.6)
            keep_mask = torch.ones(gaussians.num_gaussians, dtype=torch.bool, device=idx.device)
            keep_mask[split_idx] = False
            _update_tables(gaussians, optimizer, self, keep_mask.nonzero().squeeze(1), rows)
        return int(clone_idx.numel()), int(split_idx.numel())

    def _prune(self, gaussians: CanonicalGaussians, optimizer: torch.optim.Optimizer) -> int:
        assert self.max_radii is not None
        cfg = self.cfg
        with torch.no_grad():
            opacity = torch.sigmoid(gaussians.logit_opacities)
            max_scale = gaussians.log_scales.exp().amax(dim=-1)
            prune = (opacity < cfg.prune_opacity) | (
                max_scale > cfg.prune_scale_fraction * self.extent
            )
            if cfg.prune_screen_fraction > 0:
                prune |= self.max_radii.to(prune.device) > cfg.prune_screen_fraction
        n_prune = int(prune.sum())
        if n_prune == 0:
            return 0
        if n_prune == prune.numel():
            warnings.warn(
                "DensifyStrategy: every Gaussian met a pruning criterion; skipping pruning so the "
                "model is not left empty (check prune_opacity / prune_scale_fraction)",
                stacklevel=3,
            )
            return 0
        _update_tables(gaussians, optimizer, self, (~prune).nonzero().squeeze(1), None)
        return n_prune

    def _reset_opacity(
        self, gaussians: CanonicalGaussians, optimizer: torch.optim.Optimizer
    ) -> None:
        """Clamp opacities to ``2 × prune_opacity`` and zero their Adam moments (3DGS)."""
        value = min(2.0 * self.cfg.prune_opacity, 0.5)
        logit = math.log(value / (1.0 - value))
        with torch.no_grad():
            gaussians.logit_opacities.clamp_(max=logit)
        state = optimizer.state.get(gaussians.logit_opacities, {})
        for key, v in state.items():
            if (
                key != "step"
                and isinstance(v, Tensor)
                and v.shape == gaussians.logit_opacities.shape
            ):
                v.zero_()

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Statistics and extent (tensors cloned; ``None`` before the first accumulate)."""
        out: dict[str, Any] = {"extent": self.extent}
        for name in STATS:
            t = getattr(self, name)
            out[name] = None if t is None else t.detach().clone()
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore statistics of any size (they take the loaded shapes)."""
        missing = [k for k in ("extent", *STATS) if k not in state]
        if missing:
            raise KeyError(f"DensifyStrategy.load_state_dict: missing keys {missing}")
        sizes = {int(state[k].shape[0]) for k in STATS if state[k] is not None}
        if len(sizes) > 1:
            raise ValueError(f"DensifyStrategy.load_state_dict: statistics disagree on N: {sizes}")
        self.extent = float(state["extent"])
        for name in STATS:
            t = state[name]
            setattr(self, name, None if t is None else t.detach().clone().float())


def _update_tables(
    gaussians: CanonicalGaussians,
    optimizer: torch.optim.Optimizer,
    strategy: DensifyStrategy,
    keep: Tensor,
    new_rows: dict[str, Tensor] | None,
) -> None:
    """The one place that changes ``N``: keep rows ``keep`` and append ``new_rows``.

    Applied identically to every table (new Parameter objects), to the optimizer (the group entry
    is swapped for the new Parameter; tensor state shaped like the table is gathered for kept
    rows and zero for appended ones, scalar state such as Adam's ``step`` is kept) and to the
    strategy's statistics (gathered / zero).

    Args:
        gaussians: Tables to resize.
        optimizer: Optimizer that may hold the tables.
        strategy: Strategy whose statistics follow the same row operation.
        keep: ``(M,)`` indices of existing rows to keep, in output order.
        new_rows: Table name → rows to append (every table, same count), or ``None``.
    """
    n_new = 0 if new_rows is None else next(iter(new_rows.values())).shape[0]
    if new_rows is not None:
        missing = set(gaussians.TABLES) - set(new_rows)
        if missing:
            raise ValueError(f"_update_tables: new rows missing for tables {sorted(missing)}")

    def resize(t: Tensor, appended: Tensor | None) -> Tensor:
        kept = t[keep.to(t.device)]
        if n_new == 0:
            return kept
        if appended is None:
            appended = torch.zeros((n_new, *t.shape[1:]), dtype=t.dtype, device=t.device)
        return torch.cat([kept, appended.to(device=t.device, dtype=t.dtype)], dim=0)

    new_params: dict[str, nn.Parameter] = {}
    with torch.no_grad():
        for name in gaussians.TABLES:
            old = getattr(gaussians, name)
            data = resize(old.detach(), None if new_rows is None else new_rows[name])
            new_params[name] = nn.Parameter(data, requires_grad=old.requires_grad)
            where = _find_param(optimizer, old)
            if where is not None:
                gi, pi = where
                state = optimizer.state.pop(old, None)
                optimizer.param_groups[gi]["params"][pi] = new_params[name]
                if state is not None:
                    for key, v in list(state.items()):
                        if key != "step" and isinstance(v, Tensor) and v.shape == old.shape:
                            state[key] = resize(v, None)
                    optimizer.state[new_params[name]] = state
    gaussians.replace_tables(new_params)
    for name in STATS:
        t = getattr(strategy, name)
        if t is not None:
            setattr(strategy, name, resize(t, None))
