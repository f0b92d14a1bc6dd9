"""LPIPS (VGG variant, v0.1) as a DDP-synced torchmetrics metric, with the networks defined here.

The ``lpips`` and ``torchvision`` packages are not dependencies (on CPU machines each pulls a
multi-GB CUDA torch, docs/design.md §2), so the two networks LPIPS needs are defined in this
module with the parameter names of their public checkpoints and loaded strictly:

* :class:`VGG16Features` is torchvision's ``vgg16().features`` (same layer indices, so the keys
  are ``features.0.weight`` ... ``features.28.bias``). torchvision's ``vgg16-397923af.pth`` also
  holds the classifier; :meth:`VGG16Features.load_checkpoint` keeps only the ``features.*`` keys
  and requires every one of ours to be there, nothing more, with matching shapes.
* :class:`LPIPSHeads` are the five 1x1 "linear" layers of LPIPS v0.1, keyed exactly like the
  official ``lpips/weights/v0.1/vgg.pth`` (``lin{k}.model.1.weight``, shape ``(1, C, 1, 1)``,
  no bias), so that file loads with :func:`~ds4d_pl.weights.load_strict` as is.

:class:`LPIPSNet` is the distance itself on ``(B, 3, H, W)`` images in ``[-1, 1]``;
:class:`LPIPS` is the metric on the package's ``(B, H, W, 3)`` images in ``[0, 1]`` (the layout
of :mod:`ds4d_pl.metrics.image`), averaged over images.

:class:`PerImageNetworkMetric` is the base shared with :mod:`ds4d_pl.metrics.clip`; like FVD and
FID-VID it keeps the pretrained network out of ``state_dict`` / ``parameters``
(:mod:`ds4d_pl.metrics.frozen` says why).

Tests: ``tests/test_metrics_lpips_clip.py``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ds4d_pl.metrics.frozen import FrozenNetworkMetric
from ds4d_pl.weights import MissingWeightsError, load_strict, resolve

__all__ = [
    "LPIPS",
    "PerImageNetworkMetric",
    "LPIPSHeads",
    "LPIPSNet",
    "VGG16Features",
]

# torchvision's "D" configuration: numbers are 3x3 conv widths (each followed by a ReLU), "M" a
# 2x2 max-pool. Building the Sequential from it reproduces torchvision's layer indices exactly.
_VGG16_CFG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
)  # fmt: skip


class VGG16Features(nn.Module):
    """torchvision's VGG16 ``features`` block, returning the five LPIPS taps.

    The taps are the outputs of relu1_2, relu2_2, relu3_3, relu4_3 and relu5_3 (indices 3, 8,
    15, 22 and 29 of ``features``). The final max-pool (index 30) is kept so that the module is
    index-for-index torchvision's, but it is never run.

    Weights are initialised as torchvision does (Kaiming-normal, zero bias) so a random network
    has well-scaled activations through all 13 convolutions.
    """

    #: Indices in ``features`` of the ReLUs whose outputs LPIPS compares.
    TAPS: tuple[int, ...] = (3, 8, 15, 22, 29)
    #: Channels of those taps.
    CHANNELS: tuple[int, ...] = (64, 128, 256, 512, 512)

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = 3
        for v in _VGG16_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                assert isinstance(v, int)
                # In-place ReLU is safe here: every tapped ReLU output is next read by a
                # max-pool (or by nothing), never modified in place.
                layers += [nn.Conv2d(width, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                width = v
        self.features = nn.Sequential(*layers)
        for m in self.features:
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> list[Tensor]:
        """Feature maps at the five taps.

        Args:
            x: ``(B, 3, H, W)`` ImageNet-range input (LPIPS feeds it its scaling layer's
                output); ``H, W >= 16`` so relu5_3 is not empty.

        Returns:
            Five ``(B, C_k, H / 2^k, W / 2^k)`` tensors, ``C = (64, 128, 256, 512, 512)``.
        """
        taps = []
        for i, layer in enumerate(self.features[: self.TAPS[-1] + 1]):
            x = layer(x)
            if i in self.TAPS:
                taps.append(x)
        return taps

    def load_checkpoint(self, path: str | os.PathLike) -> str:
        """Strictly load torchvision VGG16 weights; return the file's sha256.

        Accepts the full torchvision checkpoint (``features.*`` and ``classifier.*`` keys, as
        published) or a features-only one. Only the ``features.`` keys are read, and among
        them every key of this module must be present, none may be extra, and shapes must
        match; the classifier is ignored because LPIPS never uses it.

        Args:
            path: Checkpoint file (``vgg16-397923af.pth`` or a ``.safetensors`` equivalent).

        Raises:
            BadWeightsError: Unreadable file, missing / extra ``features.`` keys or mismatched
                shapes, naming them.
        """
        return load_strict(self, path, keep=lambda key: key.startswith("features."))


class _LinearHead(nn.Module):
    """One LPIPS head: a bias-free 1x1 conv from ``C`` channels to one.

    It sits at index 1 of ``model`` because the official layer is ``Sequential(Dropout, Conv)``
    and its checkpoint keys are ``model.1.weight``. Index 0 is an ``Identity`` here rather than
    a ``Dropout``: dropout only mattered when the heads were trained, and an identity keeps the
    distance deterministic even if someone puts the network in training mode.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(
            nn.Identity(), nn.Conv2d(channels, 1, kernel_size=1, stride=1, padding=0, bias=False)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


class LPIPSHeads(nn.Module):
    """The five LPIPS v0.1 linear heads (``lin0`` ... ``lin4``), official parameter names.

    Before loading, every weight is 1: the heads then sum the squared feature differences over
    channels, which is LPIPS's unlearned baseline (the official ``lpips=False`` variant).

    Args:
        channels: Channels of the five backbone taps (VGG16's by default).
    """

    def __init__(self, channels: Sequence[int] = VGG16Features.CHANNELS) -> None:
        super().__init__()
        self.channels = tuple(channels)
        for k, c in enumerate(self.channels):
            head = _LinearHead(c)
            nn.init.ones_(head.model[1].weight)
            self.add_module(f"lin{k}", head)

    def forward(self, diffs: Sequence[Tensor]) -> Tensor:
        """Weighted, spatially averaged distances summed over layers.

        Args:
            diffs: Five ``(B, C_k, h_k, w_k)`` squared differences of unit-normalised features.

        Returns:
            ``(B,)`` distances.
        """
        if len(diffs) != len(self.channels):
            raise ValueError(f"expected {len(self.channels)} feature maps, got {len(diffs)}")
        total = 0.0
        for k, d in enumerate(diffs):
            total = total + getattr(self, f"lin{k}")(d).mean(dim=(1, 2, 3))
        assert isinstance(total, Tensor)
        return total


def _unit_channels(x: Tensor, eps: float = 1e-10) -> Tensor:
    """Divide each pixel's feature vector by its L2 norm (LPIPS's normalisation, eps included
    the official way, added to the norm, so scores match the reference implementation)."""
    return x / (x.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)


class LPIPSNet(nn.Module):
    """LPIPS distance (VGG, v0.1) between images in ``[-1, 1]``.

    ``d(x, y) = sum_k mean_hw( w_k . (phi_k(x) / |phi_k(x)| - phi_k(y) / |phi_k(y)|)^2 )`` with
    ``phi_k`` the VGG16 taps of the scaled inputs and ``w_k`` the heads' weights.

    Attributes:
        backbone: The VGG16 feature extractor.
        heads: The five linear heads.
        weights_sha256: sha256 of the loaded checkpoints by registry name (``vgg16``,
            ``lpips_vgg``); empty for a randomly initialised network.
    """

    def __init__(self) -> None:
        super().__init__()
        # The official scaling layer: maps [-1, 1] inputs to ImageNet normalisation
        # ((x + 1) / 2 - mean) / std. Non-persistent: constants, not checkpoint content, and
        # neither public checkpoint stores them.
        self.register_buffer(
            "shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer(
            "scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False
        )
        self.backbone = VGG16Features()
        self.heads = LPIPSHeads(VGG16Features.CHANNELS)
        self.weights_sha256: dict[str, str] = {}

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """Per-image LPIPS.

        Args:
            x: ``(B, 3, H, W)`` in ``[-1, 1]``, ``H, W >= 16``.
            y: Same shape as ``x``.

        Returns:
            ``(B,)`` distances (0 for identical images).
        """
        if x.shape != y.shape or x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(
                f"expected two (B, 3, H, W) images of one shape, got {tuple(x.shape)} and "
                f"{tuple(y.shape)}"
            )
        # One backbone pass over both images halves the per-call overhead.
        feats = self.backbone((torch.cat([x, y]) - self.shift) / self.scale)
        b = x.shape[0]
        diffs = [(_unit_channels(f[:b]) - _unit_channels(f[b:])).pow(2) for f in feats]
        return self.heads(diffs)

    @classmethod
    def from_pretrained(
        cls,
        vgg_path: str | os.PathLike | None = None,
        lpips_path: str | os.PathLike | None = None,
    ) -> LPIPSNet:
        """The LPIPS network with the public VGG16 and LPIPS v0.1 weights, in eval mode.

        Both files are found with :func:`~ds4d_pl.weights.resolve` (registry names
        ``vgg16`` and ``lpips_vgg``): the explicit path first, then ``$DS4D_WEIGHTS_DIR``, then
        the torch hub cache. Nothing is downloaded.

        Args:
            vgg_path: torchvision ``vgg16-397923af.pth`` (file or directory holding it).
            lpips_path: LPIPS ``vgg.pth`` saved as ``lpips_vgg_v0.1.pth`` (file or directory).

        Raises:
            MissingWeightsError: Either file is absent; the message covers every missing one.
            BadWeightsError: A file is unreadable or does not match the architecture.
        """
        paths, errors = {}, []
        # Resolve both before loading anything, so one run reports every missing file.
        for name, explicit in (("vgg16", vgg_path), ("lpips_vgg", lpips_path)):
            try:
                paths[name] = resolve(name, explicit)
            except MissingWeightsError as err:
                errors.append(str(err))
        if errors:
            raise MissingWeightsError("\n\n".join(errors))
        net = cls()
        net.weights_sha256 = {
            "vgg16": net.backbone.load_checkpoint(paths["vgg16"]),
            "lpips_vgg": load_strict(net.heads, paths["lpips_vgg"]),
        }
        return net.eval()


class PerImageNetworkMetric(FrozenNetworkMetric):
    """Base of metrics that average a per-image score computed by a frozen pretrained network.

    States: ``total`` (float64 sum of scores) and ``count`` (number of images), both reduced
    with ``sum`` across processes, so DDP sync and :meth:`merge_state` are exact. The network is
    held as in :class:`~ds4d_pl.metrics.frozen.FrozenNetworkMetric`.

    Args:
        net: The network; set to eval mode with gradients off.
        **kwargs: Passed to :class:`torchmetrics.Metric`.
    """

    full_state_update = False

    def __init__(self, net: nn.Module, **kwargs: Any) -> None:
        super().__init__(net, **kwargs)
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update_scores(self, values: Tensor) -> None:
        """Accumulate already computed per-image scores."""
        self.total += values.detach().double().sum()
        self.count += values.numel()

    def compute(self) -> Tensor:
        """Mean score over all images seen (NaN before any update)."""
        if self.count == 0:
            return torch.tensor(float("nan"))
        return (self.total / self.count).float()

    def _prepare(self, pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """Check ``(B, H, W, 3)`` inputs; return them as ``(B, 3, H, W)`` float on the network's
        device, and make sure the network is in eval mode."""
        if pred.shape != target.shape or pred.ndim != 4 or pred.shape[-1] != 3:
            raise ValueError(
                f"expected pred and target of one shape (B, H, W, 3), got {tuple(pred.shape)} "
                f"and {tuple(target.shape)}"
            )
        p = next(self.net.parameters())
        return (
            pred.permute(0, 3, 1, 2).to(device=p.device, dtype=p.dtype),
            target.permute(0, 3, 1, 2).to(device=p.device, dtype=p.dtype),
        )


class LPIPS(PerImageNetworkMetric):
    """Mean LPIPS (VGG, v0.1) over images; lower is better.

    Inputs are the package's ``(B, H, W, 3)`` images in ``[0, 1]`` (as in
    :mod:`ds4d_pl.metrics.image`), mapped to ``[-1, 1]`` internally, the range LPIPS was
    trained on (the Consistent4D protocol, docs/design.md §7). Composite onto the background before
    calling. States: ``total``, ``count``.

    Args:
        net: An :class:`LPIPSNet` (from :meth:`LPIPSNet.from_pretrained`, or random for tests).
        rescale: Map ``[0, 1]`` inputs to ``[-1, 1]`` (correct). ``False`` feeds them as they
            are, which is what 4D-GS's ``metrics.py`` does (its LPIPS receives ``[0, 1]``
            tensors); only the ``4dgs`` scene protocol uses it, to reproduce those tables.
        **kwargs: Passed to :class:`torchmetrics.Metric`.
    """

    higher_is_better = False
    is_differentiable = False
    full_state_update = False

    def __init__(self, net: LPIPSNet, rescale: bool = True, **kwargs: Any) -> None:
        super().__init__(net, **kwargs)
        self.rescale = rescale

    @property
    def weights_sha256(self) -> dict[str, str]:
        """sha256 of the checkpoints the network was loaded from (empty if random)."""
        return dict(getattr(self.net, "weights_sha256", {}))

    def scores(self, pred: Tensor, target: Tensor) -> Tensor:
        """``(B,)`` LPIPS of ``(B, H, W, 3)`` images in ``[0, 1]`` (no state change)."""
        p, t = self._prepare(pred, target)
        if self.rescale:
            p, t = p * 2.0 - 1.0, t * 2.0 - 1.0
        with torch.no_grad():
            return self.net(p, t)

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Accumulate the LPIPS of each ``pred`` / ``target`` pair.

        Args:
            pred: ``(B, H, W, 3)`` in ``[0, 1]``, ``H, W >= 16``.
            target: Same shape.
        """
        self.update_scores(self.scores(pred, target).to(self.total.device))

    @classmethod
    def from_pretrained(
        cls,
        vgg_path: str | os.PathLike | None = None,
        lpips_path: str | os.PathLike | None = None,
        rescale: bool = True,
        **kwargs: Any,
    ) -> LPIPS:
        """The metric with the public weights (see :meth:`LPIPSNet.from_pretrained`).

        Raises:
            MissingWeightsError: A weights file is absent (the message names it).
            BadWeightsError: A weights file is unreadable or does not match.
        """
        return cls(LPIPSNet.from_pretrained(vgg_path, lpips_path), rescale=rescale, **kwargs)
