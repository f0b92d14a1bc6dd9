"""Which (frame, view) samples a training step renders.

Sampling depends on the training stage (the coarse stage only sees the middle frame) and, under
DDP, on the rank; the system owns both, so it asks this sampler with an explicit generator seeded
from ``(seed, step, rank)``. That makes a resumed run draw exactly the samples the uninterrupted
run would have drawn, without checkpointing any RNG state.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ds4d_pl.data.types import FrameBatch, ViewSet


class FrameSampler:
    """Draws per-timestep batches from a :class:`ViewSet`.

    Args:
        views: Training views; the first ``num_input_views`` are real observations.
        num_input_views: Leading views that are real (always rendered); the rest are pseudo views
            of which a random subset is rendered per timestep.
        background: ``(3,)`` colour the targets are composited on.
    """

    def __init__(self, views: ViewSet, num_input_views: int, background: Tensor) -> None:
        self.views = views
        self.num_input_views = num_input_views
        self.targets = views.composite(background)

    @property
    def middle_frame(self) -> int:
        return self.views.num_frames // 2

    def sample(
        self,
        generator: torch.Generator,
        frames_per_step: int,
        pseudo_views_per_step: int,
        frames: list[int] | None = None,
        input_views_per_step: int = -1,
    ) -> list[FrameBatch]:
        """One :class:`FrameBatch` per drawn timestep, holding every view rendered at it.

        Args:
            generator: Source of randomness (CPU generator).
            frames_per_step: Timesteps to draw when ``frames`` is not given.
            pseudo_views_per_step: Pseudo views per timestep; ``-1`` means all of them.
            frames: Fixed frame indices (the coarse stage passes the middle frame).
            input_views_per_step: Real views per timestep; ``-1`` means all of them.
        """
        v = self.views
        if frames is None:
            n = min(frames_per_step, v.num_frames)
            frames = torch.randperm(v.num_frames, generator=generator)[:n].tolist()
        n_pseudo = v.num_views - self.num_input_views
        k = n_pseudo if pseudo_views_per_step < 0 else min(pseudo_views_per_step, n_pseudo)
        n_in = self.num_input_views
        k_in = n_in if input_views_per_step < 0 else min(input_views_per_step, n_in)
        batches = []
        for f in frames:
            real = torch.arange(n_in)
            if k_in < n_in:
                real = torch.randperm(n_in, generator=generator)[:k_in].sort().values
            pseudo = torch.randperm(n_pseudo, generator=generator)[:k] + n_in
            view_ids = torch.cat([real, pseudo.sort().values])
            batches.append(self._batch(int(f), view_ids))
        return batches

    def _batch(self, frame: int, view_ids: Tensor) -> FrameBatch:
        v = self.views
        n = len(view_ids)
        return FrameBatch(
            times=v.times[frame].expand(n).clone(),
            cameras=v.cameras[v.camera_indices(view_ids, torch.full_like(view_ids, frame))],
            rgb=self.targets[view_ids, frame],
            alpha=v.alpha[view_ids, frame],
            view_ids=view_ids,
            frame_ids=torch.full((n,), frame, dtype=torch.long),
            is_input=view_ids < self.num_input_views,
        )


def step_generator(seed: int, step: int, rank: int = 0) -> torch.Generator:
    """A generator whose stream depends only on ``(seed, step, rank)``."""
    g = torch.Generator()
    # Large odd multipliers keep nearby (seed, step, rank) triples far apart.
    g.manual_seed((seed * 1_000_003 + step * 7_919 + rank * 104_729) % (2**63 - 1))
    return g
