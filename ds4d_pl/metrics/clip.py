"""CLIP similarity (ViT-B/32 image embeddings) as a DDP-synced torchmetrics metric.

The Consistent4D protocol (docs/design.md §7) scores a rendered view by the cosine similarity of its
CLIP image embedding with that of the ground-truth view. torchmetrics' ``CLIPScore`` is broken
against transformers 5 (docs/design.md §2), so the image tower is transformers'
``CLIPVisionModelWithProjection``, loaded offline from the directory
:func:`~ds4d_pl.metrics.weights.resolve` finds for ``clip_vit_b32`` (the published
``openai/clip-vit-base-patch32`` holds the full CLIP model; its text tower is ignored, every
other key must match).

Preprocessing is done in torch at metric time, no PIL / ``CLIPImageProcessor``: resize the
shortest side to the model's input size (224) with antialiased bicubic, centre crop, normalise
with the CLIP mean / std (from the model directory's ``preprocessor_config.json`` when present).
The processor resizes 8-bit images with PIL; on float images this differs from it only by that
quantisation and the resampling kernel's implementation.

Tests: ``tests/test_metrics_lpips_clip.py``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from ds4d_pl.metrics.lpips import PerImageNetworkMetric
from ds4d_pl.metrics.weights import find_file, quiet_hub_loading, resolve, sha256_file

__all__ = [
    "OPENAI_CLIP_MEAN",
    "OPENAI_CLIP_STD",
    "CLIPSimilarity",
    "clip_preprocess",
    "load_clip_vision",
    "read_normalisation",
]

#: OpenAI CLIP's normalisation, used when the model directory has no preprocessor config.
OPENAI_CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)

# Keys of the full CLIP checkpoint that belong to the text side; the image tower does not use
# them, so they are the only unexpected keys tolerated when loading.
_TEXT_TOWER = ("text_model.", "text_projection.", "logit_scale")
# Weight files in the order transformers prefers them (safetensors first).
_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def read_normalisation(
    model_dir: str | os.PathLike | None,
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """CLIP image mean and std: the model directory's ``preprocessor_config.json`` if it has
    them, else :data:`OPENAI_CLIP_MEAN` / :data:`OPENAI_CLIP_STD`."""
    if model_dir is not None:
        cfg = Path(model_dir) / "preprocessor_config.json"
        if cfg.is_file():
            data = json.loads(cfg.read_text())
            if "image_mean" in data and "image_std" in data:
                return tuple(map(float, data["image_mean"])), tuple(map(float, data["image_std"]))
    return OPENAI_CLIP_MEAN, OPENAI_CLIP_STD


def clip_preprocess(
    images: Tensor,
    size: int = 224,
    mean: Sequence[float] = OPENAI_CLIP_MEAN,
    std: Sequence[float] = OPENAI_CLIP_STD,
) -> Tensor:
    """CLIP's image preprocessing in torch (differentiable, any device).

    Args:
        images: ``(B, 3, H, W)`` RGB in ``[0, 1]`` (already composited on a background).
        size: Model input size: the shortest side is resized to it, then centre cropped.
        mean: Per-channel mean subtracted after cropping.
        std: Per-channel std divided by after cropping.

    Returns:
        ``(B, 3, size, size)`` normalised pixel values.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected (B, 3, H, W) images, got {tuple(images.shape)}")
    h, w = images.shape[-2:]
    # Shortest side to ``size``, the long side truncated like the HF processor does.
    nh, nw = (size, int(size * w / h)) if h <= w else (int(size * h / w), size)
    if (nh, nw) != (h, w):
        images = F.interpolate(
            images, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True
        )
        # Bicubic overshoots; the reference pipeline works on 8-bit images, which clip.
        images = images.clamp(0.0, 1.0)
    top, left = (nh - size) // 2, (nw - size) // 2
    images = images[..., top : top + size, left : left + size]
    m = torch.tensor(mean, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return (images - m) / s


def _vision_config(model_dir: Path) -> CLIPVisionConfig:
    """The image tower's config. For a full CLIP config, ``projection_dim`` lives at the top
    level and the vision sub-config may not repeat it; take it from there so the projection's
    shape matches the checkpoint."""
    config = CLIPVisionConfig.from_pretrained(model_dir, local_files_only=True)
    raw = json.loads((model_dir / "config.json").read_text())
    if raw.get("model_type") == "clip" and "projection_dim" in raw:
        config.projection_dim = int(raw["projection_dim"])
    return config


def load_clip_vision(path: str | os.PathLike | None = None) -> CLIPVisionModelWithProjection:
    """The CLIP ViT-B/32 image tower with projection, offline, strictly, in eval mode.

    The directory is found with :func:`~ds4d_pl.metrics.weights.resolve` (``clip_vit_b32``):
    ``path`` if given, else ``$DS4D_WEIGHTS_DIR/clip-vit-base-patch32``, else the HF cache.
    Either a full CLIP checkpoint (text tower ignored) or an image-tower one loads. The returned
    model carries ``weights_sha256 = {"clip_vit_b32": <sha256 of the weights file>}``
    (``model.safetensors``, else ``pytorch_model.bin``; the index file for sharded models).

    Args:
        path: Model directory (``config.json`` and weights), as written by ``save_pretrained``.

    Raises:
        MissingWeightsError: No model directory found; the message names it.
        ValueError: The checkpoint lacks an image-tower key, has keys of neither tower, or
            has a mismatched shape.
    """
    model_dir = resolve("clip_vit_b32", path)
    with quiet_hub_loading():
        model, info = CLIPVisionModelWithProjection.from_pretrained(
            model_dir,
            config=_vision_config(model_dir),
            local_files_only=True,
            output_loading_info=True,
            # Reported by us below, with the file named, instead of transformers' RuntimeError.
            ignore_mismatched_sizes=True,
        )
    missing = sorted(info["missing_keys"])
    unexpected = sorted(k for k in info["unexpected_keys"] if not k.startswith(_TEXT_TOWER))
    mismatched = sorted(str(k[0] if isinstance(k, tuple) else k) for k in info["mismatched_keys"])
    if missing or unexpected or mismatched:
        raise ValueError(
            f"{model_dir}: does not match CLIPVisionModelWithProjection (missing {missing[:5]}"
            f"{'...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
            f"{'...' if len(unexpected) > 5 else ''}, shape mismatch {mismatched[:5]})"
        )
    weights_file = find_file(model_dir, _WEIGHT_FILES)
    model.weights_sha256 = (
        {} if weights_file is None else {"clip_vit_b32": sha256_file(weights_file)}
    )
    return model.eval()


class CLIPSimilarity(PerImageNetworkMetric):
    """Mean cosine similarity of CLIP image embeddings, prediction vs ground truth.

    Inputs are the package's ``(B, H, W, 3)`` RGB images in ``[0, 1]`` (as in
    :mod:`ds4d_pl.metrics.image`); compositing onto the background is the caller's job. Each
    pair scores ``cos(e(pred), e(target))`` with ``e`` the projected image embedding; the
    metric is the mean over images. States: ``total``, ``count`` (DDP ``sum``). The network is
    held outside the module tree (see :class:`~ds4d_pl.metrics.lpips.PerImageNetworkMetric`).

    Args:
        model: A ``CLIPVisionModelWithProjection`` (pretrained, or random for tests); its
            ``config.image_size`` is the preprocessing size.
        image_mean: Normalisation mean; OpenAI CLIP's by default.
        image_std: Normalisation std; OpenAI CLIP's by default.
        **kwargs: Passed to :class:`torchmetrics.Metric`.
    """

    higher_is_better = True
    is_differentiable = False
    full_state_update = False

    def __init__(
        self,
        model: CLIPVisionModelWithProjection,
        image_mean: Sequence[float] | None = None,
        image_std: Sequence[float] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, **kwargs)
        self.image_size = int(model.config.image_size)
        self.image_mean = tuple(image_mean) if image_mean is not None else OPENAI_CLIP_MEAN
        self.image_std = tuple(image_std) if image_std is not None else OPENAI_CLIP_STD

    @property
    def weights_sha256(self) -> dict[str, str]:
        """sha256 of the loaded weights file (empty if random)."""
        return dict(getattr(self.net, "weights_sha256", {}))

    def embed(self, images: Tensor) -> Tensor:
        """Unit-norm projected embeddings ``(B, D)`` of ``(B, 3, H, W)`` images in ``[0, 1]``."""
        x = clip_preprocess(images, self.image_size, self.image_mean, self.image_std)
        emb = self.net(pixel_values=x).image_embeds
        return F.normalize(emb.float(), dim=-1)

    def scores(self, pred: Tensor, target: Tensor) -> Tensor:
        """``(B,)`` cosine similarities of ``(B, H, W, 3)`` images in ``[0, 1]``."""
        p, t = self._prepare(pred, target)
        with torch.no_grad():
            # One forward pass over both sets of images.
            emb = self.embed(torch.cat([p, t]))
        b = pred.shape[0]
        return (emb[:b] * emb[b:]).sum(-1)

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Accumulate the similarity of each ``pred`` / ``target`` pair.

        Args:
            pred: ``(B, H, W, 3)`` RGB in ``[0, 1]``.
            target: Same shape.
        """
        self.update_scores(self.scores(pred, target).to(self.total.device))

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike | None = None, **kwargs: Any
    ) -> CLIPSimilarity:
        """The metric with ``openai/clip-vit-base-patch32`` weights, loaded offline.

        Args:
            path: Model directory; default: resolved as in :func:`load_clip_vision`.
            **kwargs: Passed to :class:`torchmetrics.Metric`.

        Raises:
            MissingWeightsError: The model directory is absent (the message names it).
            ValueError: The checkpoint does not match the architecture.
        """
        # Resolved once here so the model and its preprocessor config come from one directory.
        model_dir = resolve("clip_vit_b32", path)
        mean, std = read_normalisation(model_dir)
        return cls(load_clip_vision(model_dir), image_mean=mean, image_std=std, **kwargs)
