"""3D ResNet-50 (Hara et al.), the network of DisCo's FID-VID, with the public checkpoints' names.

The ``r3d50`` FID-VID variant (:mod:`ds4d_pl.metrics.fid_vid`) embeds a video clip as the
2048-d globally pooled output of a Kinetics-trained 3D ResNet-50 from kenshohara's
3D-ResNets-PyTorch. The layout here is that repository's ``models/resnet.py``
(``generate_model(50)`` with its defaults), so its checkpoints load with
:func:`~ds4d_pl.weights.load_strict`:

* ``conv1`` 7x7x7, stride ``(1, 2, 2)``, padding 3, 64 channels, no bias; ``bn1``; ReLU;
  3x3x3 max-pool, stride 2 (also in time), padding 1;
* ``layer1`` ... ``layer4``: 3, 4, 6, 3 Bottleneck blocks (``conv1`` 1x1x1, ``conv2`` 3x3x3
  carrying the stride, ``conv3`` 1x1x1 with 4x expansion, each followed by ``bn1..3``), widths
  64, 128, 256, 512; the first block of each layer has a type-"B" shortcut
  ``downsample.0`` (1x1x1 conv, with the stride) / ``downsample.1`` (BatchNorm); layers 2-4
  halve time and space;
* global average pool -> 2048 features (returned), then ``fc`` (kept for strict loading only).

BatchNorm is ``nn.BatchNorm3d`` (``eps=1e-5``) including ``num_batches_tracked``, as in
checkpoints saved by PyTorch >= 0.4.1.

Checkpoints (see :meth:`R3D50.from_pretrained`):

``r3d50_K_200ep.pth`` (2020 release; pass it explicitly)
    Kinetics-700, ``n_classes=700`` (the repository README: ``--n_pretrain_classes 700``). A
    training checkpoint ``{"epoch", "arch", "state_dict", "optimizer", "scheduler"}``; the
    ``state_dict`` is unwrapped by :func:`~ds4d_pl.weights.read_state_dict` and a
    ``module.`` prefix (DataParallel) is stripped with ``rename={"module.": ""}``. Trained on
    RGB in [0, 1] normalised with the Kinetics mean/std of that repository's ``mean.py``:
    normalisation ``"kinetics"``.
``resnet-50-kinetics.pth`` (the registry's ``r3d50``; 2017 release, what DisCo's FID-VID loads)
    Kinetics-400, ``n_classes=400``, keys prefixed ``module.`` and no BatchNorm counters (saved
    by PyTorch < 0.4.1; ``load_strict`` accepts that, as torch does).
    Trained, and used by DisCo, on 0-255 RGB minus the ActivityNet mean
    ``(114.7748, 107.7354, 99.4750)``, no std division: normalisation ``"disco"``.

The two checkpoints give different features, so FID-VID numbers are comparable only within one
checkpoint; DisCo's published numbers need ``resnet-50-kinetics.pth``.

Clips: DisCo runs 16-frame clips at 112 x 112 (``gen_eval.sh``: ``--sample_duration 16``;
``metric_center.py``: ``sample_size = 112`` for ``FVD-3DRN50``), frames resized directly to
112 x 112 (no crop) with PIL bicubic on float values. :meth:`R3D50.forward` does the same resize
(torch ``bicubic`` with ``antialias=True``, PIL's kernel) and the normalisation. The network
itself accepts any ``T >= 1`` and size (the pool is global); how longer/shorter videos are cut
into 16-frame clips is the metric's business (:mod:`ds4d_pl.metrics.fid_vid`).

Tests: ``tests/test_metrics_fid_vid.py``.
"""

from __future__ import annotations

import os
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ds4d_pl.weights import (
    BadWeightsError,
    check_state_dict,
    load_strict,
    read_state_dict,
    resolve,
)

__all__ = ["CLIP_FRAMES", "CLIP_SIZE", "NORMALIZATIONS", "R3D50", "Normalization"]

#: Frames per clip of DisCo's FID-VID (and the network's training clips).
CLIP_FRAMES = 16
#: Frame side of DisCo's FID-VID clips (and the network's training crops).
CLIP_SIZE = 112

Normalization = Literal["kinetics", "disco"]

#: Per-channel ``(mean, std)`` applied to RGB in [0, 1]: ``(x - mean) / std``.
#: ``"kinetics"``: kenshohara ``mean.py`` (``mean_dataset="kinetics"``, ``value_scale=1``), what
#: the 2020 checkpoints were trained with. ``"disco"``: DisCo's ``x * 255 - mean_255`` written
#: on the [0, 1] scale (mean/255, std 1/255); the ActivityNet mean the 2017 checkpoints used.
NORMALIZATIONS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "kinetics": ((0.4345, 0.4051, 0.3775), (0.2768, 0.2713, 0.2737)),
    "disco": (
        (114.7748 / 255.0, 107.7354 / 255.0, 99.4750 / 255.0),
        (1.0 / 255.0, 1.0 / 255.0, 1.0 / 255.0),
    ),
}


class _Bottleneck(nn.Module):
    """1x1x1 -> 3x3x3 (strided) -> 1x1x1 (x4 channels), BatchNorm after each, residual add."""

    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        cout = 4 * width
        self.conv1 = nn.Conv3d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm3d(width)
        self.conv2 = nn.Conv3d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm3d(width)
        self.conv3 = nn.Conv3d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm3d(cout)
        # Shortcut type B: a projection only where the shape changes.
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv3d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm3d(cout)
            )

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        skip = x if self.downsample is None else self.downsample(x)
        return F.relu(y + skip)


class R3D50(nn.Module):
    """3D ResNet-50: clips ``(B, 3, T, H, W)`` in ``[0, 1]`` -> ``(B, 2048)`` pooled features.

    Args:
        n_classes: Rows of the (unused) ``fc`` layer: 700 for ``r3d50_K_200ep.pth``
            (Kinetics-700), 400 for DisCo's ``resnet-50-kinetics.pth``.
        normalization: Input normalisation the weights were trained with (see
            :data:`NORMALIZATIONS`).
        size: Frame side clips are resized to by :meth:`forward` (112 for both checkpoints).

    Attributes:
        weights_sha256: sha256 of the loaded checkpoint (``None`` for random weights).
    """

    #: Width of the returned features.
    FEATURES = 2048
    #: Bottleneck blocks per layer.
    BLOCKS = (3, 4, 6, 3)

    def __init__(
        self, n_classes: int = 700, normalization: Normalization = "kinetics", size: int = 112
    ) -> None:
        super().__init__()
        if normalization not in NORMALIZATIONS:
            raise ValueError(
                f"normalization must be one of {sorted(NORMALIZATIONS)}, got {normalization!r}"
            )
        self.normalization = normalization
        self.size = size
        mean, std = NORMALIZATIONS[normalization]
        # Non-persistent: constants of the preprocessing, not checkpoint content.
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1, 1), persistent=False)
        self.conv1 = nn.Conv3d(3, 64, 7, stride=(1, 2, 2), padding=3, bias=False)
        self.bn1 = nn.BatchNorm3d(64)
        cin = 64
        for i, (width, blocks) in enumerate(zip((64, 128, 256, 512), self.BLOCKS, strict=True)):
            stride = 1 if i == 0 else 2
            layer = []
            for j in range(blocks):
                layer.append(_Bottleneck(cin, width, stride if j == 0 else 1))
                cin = 4 * width
            self.add_module(f"layer{i + 1}", nn.Sequential(*layer))
        self.fc = nn.Linear(self.FEATURES, n_classes)
        self.weights_sha256: str | None = None
        # The reference initialisation; it keeps a random network's activations well scaled.
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    @property
    def n_classes(self) -> int:
        """Rows of the classifier."""
        return self.fc.out_features

    def preprocess(self, clips: Tensor) -> Tensor:
        """Resize frames to ``size`` x ``size`` and normalise.

        Args:
            clips: ``(B, 3, T, H, W)`` RGB in ``[0, 1]``.

        Returns:
            ``(B, 3, T, size, size)`` network input.
        """
        if clips.ndim != 5 or clips.shape[1] != 3:
            raise ValueError(f"expected (B, 3, T, H, W) clips, got {tuple(clips.shape)}")
        b, c, t, h, w = clips.shape
        if (h, w) != (self.size, self.size):
            frames = clips.transpose(1, 2).reshape(b * t, c, h, w)
            # PIL-style bicubic (widened when downscaling), as DisCo's float PIL resize.
            frames = F.interpolate(
                frames, size=(self.size, self.size), mode="bicubic", antialias=True
            )
            clips = frames.reshape(b, t, c, self.size, self.size).transpose(1, 2)
        return (clips - self.mean) / self.std

    def features(self, x: Tensor) -> Tensor:
        """Pooled features of already normalised clips ``(B, 3, T, H, W)`` -> ``(B, 2048)``."""
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pool3d(x, kernel_size=3, stride=2, padding=1)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return x.mean(dim=(2, 3, 4))

    def forward(self, clips: Tensor) -> Tensor:
        """Features of ``(B, 3, T, H, W)`` clips in ``[0, 1]`` (:meth:`preprocess` then
        :meth:`features`); DisCo uses ``T = 16``."""
        return self.features(self.preprocess(clips))

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike | None = None,
        normalization: Normalization | None = None,
    ) -> R3D50:
        """The network with a Kinetics checkpoint of 3D-ResNets-PyTorch, eval mode, frozen.

        ``n_classes`` is read from the checkpoint's ``fc.weight``. Without ``normalization``
        it follows the checkpoint: ``"disco"`` for the 400-class 2017 file DisCo uses,
        ``"kinetics"`` otherwise (``r3d50_K_200ep.pth``).

        Args:
            path: The checkpoint or a directory holding ``resnet-50-kinetics.pth``; ``None``
                searches ``$DS4D_WEIGHTS_DIR`` and the torch hub cache
                (:func:`~ds4d_pl.weights.resolve`).
            normalization: Override of the input normalisation.

        Raises:
            MissingWeightsError: The file is not on this machine (the message names it).
            BadWeightsError: The file is unreadable or not a 3D ResNet-50 checkpoint.
        """
        file = resolve("r3d50", path)
        # The classifier's size decides the network; the strict load below reads the file
        # again, a second or two once per run, to keep one loading path for every network.
        state = read_state_dict(file)
        fc = state.get("fc.weight", state.get("module.fc.weight"))
        if fc is None or fc.ndim != 2:
            # Report every difference to the default network, not only the classifier.
            plain = {k.removeprefix("module."): v for k, v in state.items()}
            check_state_dict(cls(), plain, file)
            raise BadWeightsError(f"{file}: no 2-D fc.weight; not a 3D-ResNets-PyTorch checkpoint")
        del state
        n_classes = int(fc.shape[0])
        if normalization is None:
            normalization = "disco" if n_classes == 400 else "kinetics"
        net = cls(n_classes=n_classes, normalization=normalization)
        net.weights_sha256 = load_strict(net, file, rename={"module.": ""})
        return net.eval().requires_grad_(False)
