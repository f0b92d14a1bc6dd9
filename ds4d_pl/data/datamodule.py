"""One LightningDataModule for every dataset format.

The format is named explicitly (``dataset:``), never sniffed from file names; each format's
options are a typed group (``data.dnerf.downscale``, ...), so a misspelt option is rejected by
the CLI. The parser runs once in :meth:`DS4DDataModule.setup`, which validates the whole dataset
before the first step, so a bad file fails the run at start-up rather than hours in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace

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


#: What evaluation is computed on, in order: the dataset's evaluation views (ground truth of
#: novel views, when the dataset has them), real views at frames held out of training, and the
#: real views at the training frames (reconstruction; always available).
SPLITS = ("eval", "holdout", "input")


class EvalFrames(Dataset):
    """Frames of a :class:`ViewSet`: item ``i`` holds every view at frame ``frames[i]``.

    Args:
        views: The views.
        frames: Frame indices served, in order.
        split: Name of the split (one of :data:`SPLITS`), carried in every item.
    """

    def __init__(self, views: ViewSet, frames: list[int], split: str = "eval") -> None:
        self.views = views
        self.frames = frames
        self.split = split
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
            "split": self.split,
        }


def hold_out_frames(scene: Scene4D, every: int) -> Scene4D:
    """``scene`` with every ``every``-th frame taken out of training and kept as ``holdout``.

    Frames ``every, 2·every, …`` are held out, never the first or the last (the model would
    have to extrapolate, not interpolate). They leave every training view (pseudo views too, so
    nothing supervises those instants); their real views become :attr:`Scene4D.holdout`, with the
    moving-pixel mask of the whole clip so dynamic-region scores mean the same as on the full
    video. Times keep their values.

    Raises:
        ValueError: ``every < 2``, or a clip too short to hold any frame out.
    """
    t = scene.train.num_frames
    if every < 2:
        raise ValueError(f"data.holdout_every must be 0 (off) or >= 2, got {every}")
    held = [f for f in range(every, t - 1, every)]
    if not held:
        raise ValueError(
            f"data.holdout_every={every}: scene {scene.name!r} has {t} frames, too few to hold "
            "one out between the first and the last"
        )
    kept = [f for f in range(t) if f not in held]
    real = list(range(scene.num_input_views))
    full = scene.train.select(views=real)
    holdout = full.select(frames=held)
    holdout.dyn_mask = full.dynamic_mask()[:, held]
    scene.meta["holdout_frames"] = held
    return replace(scene, train=scene.train.select(frames=kept), holdout=holdout)


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
        holdout_every: Keep every k-th frame out of training and score the real view there
            (``holdout/*`` metrics: temporal interpolation on data without novel-view ground
            truth); 0 keeps every frame for training.
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
        holdout_every: int = 0,
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
        if holdout_every < 0 or holdout_every == 1:
            raise ValueError(f"data.holdout_every must be 0 (off) or >= 2, got {holdout_every}")
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
        self.holdout_every = holdout_every
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
            scene = self._loader()()
            if self.holdout_every:
                scene = hold_out_frames(scene, self.holdout_every)
            self.scene = scene

    def split_views(self, split: str) -> ViewSet | None:
        """The views of ``split`` (one of :data:`SPLITS`), or ``None`` when the scene has none."""
        assert self.scene is not None, "setup() has not run"
        scene = self.scene
        if split == "eval":
            return scene.eval
        if split == "holdout":
            return scene.holdout
        if split == "input":
            return scene.train.select(views=list(range(scene.num_input_views)))
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")

    def splits(self, stage: str) -> list[str]:
        """Splits evaluated at ``stage``: validation uses the evaluation views and the held-out
        frames, or the input reconstruction when the scene has neither (a user's own video);
        testing scores every split there is."""
        present = [s for s in SPLITS[:2] if self.split_views(s) is not None]
        if stage == "test" or not present:
            present.append("input")
        return present

    def _loaders(self, stage: str, all_frames: bool) -> list[DataLoader]:
        loaders = []
        for split in self.splits(stage):
            views = self.split_views(split)
            t = views.num_frames
            frames = list(range(t))
            if not all_frames:
                n = min(self.val_frames, t)
                frames = torch.linspace(0, t - 1, n).round().long().unique().tolist()
            loaders.append(DataLoader(EvalFrames(views, frames, split), batch_size=None))
        return loaders

    def train_dataloader(self) -> DataLoader:
        return DataLoader(_StepStream(), batch_size=None)

    def val_dataloader(self) -> list[DataLoader]:
        return self._loaders("val", all_frames=False)

    def test_dataloader(self) -> list[DataLoader]:
        return self._loaders("test", all_frames=True)

    def predict_dataloader(self) -> DataLoader:
        """Every frame of the evaluation views (``ds4d predict`` renders them to PNG)."""
        views = self.split_views("eval")
        if views is None:
            raise ValueError(
                f"scene {self.scene.name!r} has no evaluation views to predict (no eval_gt "
                "folder); render any view of the run with `ds4d render` instead"
            )
        return DataLoader(EvalFrames(views, list(range(views.num_frames))), batch_size=None)
