"""One LightningDataModule for every dataset format.

The format is named explicitly (``dataset:``), never sniffed from file names; each format's
options are a typed group (``data.dnerf.downscale``, ...), so a misspelt option is rejected by
the CLI. The parser runs once in :meth:`DS4DDataModule.setup`, which validates the whole dataset
before the first step, so a bad file fails the run at start-up rather than hours in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from ds4d_pl.data.parsers.consistent4d import Consistent4DConfig, load_consistent4d
from ds4d_pl.data.parsers.dnerf import DNeRFConfig, load_dnerf
from ds4d_pl.data.parsers.multiview_sequence import (
    MultiviewSequenceConfig,
    load_multiview_sequence,
)
from ds4d_pl.data.parsers.n3dv import N3DVConfig, load_n3dv
from ds4d_pl.data.parsers.objaverse import ObjaverseConfig, load_objaverse
from ds4d_pl.data.parsers.synthetic import SyntheticConfig, make_synthetic_scene
from ds4d_pl.data.types import Scene4D, ViewSet

#: Formats that hold one object among several under ``root`` (``object_name`` picks it); the
#: scene formats (``dnerf``, ``n3dv``) are one scene per ``root``.
OBJECT_FORMATS = ("consistent4d", "objaverse", "multiview_sequence")
DATASETS = ("synthetic", *OBJECT_FORMATS, "dnerf", "n3dv")


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
        dataset: Format of the data: ``synthetic`` (embedded, no files needed),
            ``consistent4d`` (``root/<object>/{t}.png`` + ``root/eval_gt/<object>/eval_k``),
            ``objaverse`` (the same protocol, or per-view renders with camera files),
            ``multiview_sequence`` (precomputed Zero123++ views ``root/<seq>/{ref,zero123}``),
            ``dnerf`` (``root/transforms_*.json``) or ``n3dv`` (``root/poses_bounds.npy`` and
            ``camXX`` videos or frames).
        root: Dataset root (file-based formats); for ``dnerf`` and ``n3dv`` the scene folder.
        object_name: Object (``consistent4d``, ``objaverse``: its uid) or sequence folder
            (``multiview_sequence``) under ``root``.
        synthetic: Options of the embedded synthetic object.
        consistent4d: Options of the Consistent4D reader (resolution, folder names, video input).
        objaverse: Options of the Objaverse reader (layout, input and evaluation views).
        multiview_sequence: Options of the precomputed multi-view reader (Zero123++ version).
        dnerf: Options of the D-NeRF reader (downscale, background, evaluation split).
        n3dv: Options of the Neural 3D Video reader (downscale, held-out cameras, frames).
        val_frames: Frames evaluated at each validation (spread over the clip); tests use all.
    """

    def __init__(
        self,
        dataset: str = "synthetic",
        root: str | None = None,
        object_name: str | None = None,
        synthetic: SyntheticConfig | None = None,
        consistent4d: Consistent4DConfig | None = None,
        objaverse: ObjaverseConfig | None = None,
        multiview_sequence: MultiviewSequenceConfig | None = None,
        dnerf: DNeRFConfig | None = None,
        n3dv: N3DVConfig | None = None,
        val_frames: int = 4,
    ) -> None:
        super().__init__()
        if dataset not in DATASETS:
            raise ValueError(f"data.dataset must be one of {DATASETS}, got {dataset!r}")
        if dataset != "synthetic" and root is None:
            raise ValueError(f"data.dataset={dataset!r} needs data.root")
        if dataset in OBJECT_FORMATS and object_name is None:
            raise ValueError(f"data.dataset={dataset!r} needs data.object_name")
        if val_frames < 1:
            raise ValueError(f"data.val_frames must be >= 1, got {val_frames}")
        self.dataset = dataset
        self.root = root
        self.object_name = object_name
        self.synthetic = synthetic or SyntheticConfig()
        self.consistent4d = consistent4d or Consistent4DConfig()
        self.objaverse = objaverse or ObjaverseConfig()
        self.multiview_sequence = multiview_sequence or MultiviewSequenceConfig()
        self.dnerf = dnerf or DNeRFConfig()
        self.n3dv = n3dv or N3DVConfig()
        self.val_frames = val_frames
        self.scene: Scene4D | None = None

    def _loader(self) -> Callable[[], Scene4D]:
        root, name = self.root, self.object_name
        return {
            "synthetic": lambda: make_synthetic_scene(self.synthetic),
            "consistent4d": lambda: load_consistent4d(root, name, self.consistent4d),
            "objaverse": lambda: load_objaverse(root, name, self.objaverse),
            "multiview_sequence": lambda: load_multiview_sequence(
                root, name, self.multiview_sequence
            ),
            "dnerf": lambda: load_dnerf(root, self.dnerf),
            "n3dv": lambda: load_n3dv(root, self.n3dv),
        }[self.dataset]

    def setup(self, stage: str | None = None) -> None:
        if self.scene is None:
            self.scene = self._loader()()

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
