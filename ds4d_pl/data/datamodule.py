"""One LightningDataModule for every dataset format.

The format is named explicitly (``dataset:``), never sniffed from file names. The parser runs
once in :meth:`DS4DDataModule.setup`, which validates the whole dataset before the first step, so
a bad file fails the run at start-up rather than hours in.
"""

from __future__ import annotations

from collections.abc import Iterator

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from ds4d_pl.data.parsers.consistent4d import Consistent4DConfig, load_consistent4d
from ds4d_pl.data.parsers.synthetic import SyntheticConfig, make_synthetic_scene
from ds4d_pl.data.types import Scene4D, ViewSet

DATASETS = ("synthetic", "consistent4d")


class _StepStream(IterableDataset):
    """Endless step indices: the system draws the actual samples (see ``data/sampler.py``)."""

    def __iter__(self) -> Iterator[int]:
        i = 0
        while True:
            yield i
            i += 1


class EvalFrames(Dataset):
    """Frames of a :class:`ViewSet`: item ``i`` holds every view at frame ``frames[i]``."""

    def __init__(self, views: ViewSet, frames: list[int]) -> None:
        self.views = views
        self.frames = frames
        self.dyn = views.dynamic_mask()

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int) -> dict:
        f = self.frames[i]
        return {
            "frame": f,
            "time": self.views.times[f],
            "rgb": self.views.rgb[:, f],
            "alpha": self.views.alpha[:, f],
            "dyn_mask": self.dyn[:, f],
        }


class DS4DDataModule(pl.LightningDataModule):
    """Loads one object or scene and serves training steps and evaluation frames.

    Args:
        dataset: Format of the data: ``synthetic`` (embedded, no files needed) or
            ``consistent4d`` (``root/<object>/{t}.png`` + ``root/eval_gt/<object>/eval_k``).
        root: Dataset root directory (file-based formats).
        object_name: Object folder under ``root``.
        synthetic: Options of the embedded synthetic object.
        resolution: Square training resolution for file-based formats (``None`` keeps files').
        eval_resolution: Square evaluation resolution for file-based formats.
        val_frames: Frames evaluated at each validation (spread over the clip); tests use all.
    """

    def __init__(
        self,
        dataset: str = "synthetic",
        root: str | None = None,
        object_name: str | None = None,
        synthetic: SyntheticConfig | None = None,
        resolution: int | None = None,
        eval_resolution: int | None = None,
        val_frames: int = 4,
    ) -> None:
        super().__init__()
        if dataset not in DATASETS:
            raise ValueError(f"data.dataset must be one of {DATASETS}, got {dataset!r}")
        if dataset != "synthetic" and (root is None or object_name is None):
            raise ValueError(f"data.dataset={dataset!r} needs data.root and data.object_name")
        self.dataset = dataset
        self.root = root
        self.object_name = object_name
        self.synthetic = synthetic or SyntheticConfig()
        self.resolution = resolution
        self.eval_resolution = eval_resolution
        self.val_frames = val_frames
        self.scene: Scene4D | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.scene is not None:
            return
        if self.dataset == "synthetic":
            self.scene = make_synthetic_scene(self.synthetic)
        else:
            self.scene = load_consistent4d(
                self.root,
                self.object_name,
                Consistent4DConfig(
                    resolution=self.resolution, eval_resolution=self.eval_resolution
                ),
            )

    def _eval_views(self) -> ViewSet:
        assert self.scene is not None, "setup() has not run"
        if self.scene.eval is None:
            raise ValueError(
                f"scene {self.scene.name!r} has no evaluation views (e.g. no eval_gt folder)"
            )
        return self.scene.eval

    def train_dataloader(self) -> DataLoader:
        return DataLoader(_StepStream(), batch_size=None)

    def val_dataloader(self) -> DataLoader:
        views = self._eval_views()
        t = views.num_frames
        n = min(self.val_frames, t)
        frames = torch.linspace(0, t - 1, n).round().long().unique().tolist()
        return DataLoader(EvalFrames(views, frames), batch_size=None)

    def test_dataloader(self) -> DataLoader:
        views = self._eval_views()
        return DataLoader(EvalFrames(views, list(range(views.num_frames))), batch_size=None)

    def predict_dataloader(self) -> DataLoader:
        """Every frame of the evaluation views (``ds4d predict`` renders them to PNG)."""
        return self.test_dataloader()
