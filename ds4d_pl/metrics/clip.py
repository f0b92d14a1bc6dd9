"""CLIP similarity (ViT-B/32 image embeddings) as a DDP-synced torchmetrics metric.

The Consistent4D protocol (docs/design.md §7) scores a rendered view by the cosine similarity of its
CLIP image embedding with that of the ground-truth view. torchmetrics' ``CLIPScore`` is broken
against transformers 5 (docs/design.md §2), so the image tower is transformers'
``CLIPVisionModelWithProjection``, loaded offline and strictly from the directory
:func:`~ds4d_pl.weights.resolve` finds for ``clip_vit_b32`` (the published
``openai/clip-vit-base-patch32`` holds the full CLIP model; its text tower is ignored, every
other key must match).

Preprocessing is the reference processor itself, not a re-implementation: transformers'
``CLIPImageProcessor`` with its PIL backend (``CLIPImageProcessorPil`` in transformers 5,
which is what ``CLIPImageProcessor`` falls back to without torchvision, and what the reference
evaluation scripts ran on PNG files): the image as 8 bits, shortest side to 224 with PIL
bicubic, centre crop, rescale, CLIP mean / std; configured from the model directory's
``preprocessor_config.json`` when it has one. Float images are first quantised to 8 bits the
way :func:`ds4d_pl.data.io.write_rgba` writes them (``round(255 x)``), so scoring a render in
memory gives exactly the number its PNG file would. A torch re-implementation (antialiased
float bicubic) differed from the processor by up to 0.038 normalised units. The cost is a CPU
round trip and no gradient, which neither the metric nor SDS's conditioning image needs.

Tests: ``tests/test_metrics_lpips_clip.py``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from ds4d_pl.metrics.lpips import PerImageNetworkMetric
from ds4d_pl.weights import (
    BadWeightsError,
    hub_weights_file,
    load_pretrained,
    read_json,
    resolve,
    sha256_file,
)

__all__ = [
    "OPENAI_CLIP_MEAN",
    "OPENAI_CLIP_STD",
    "CLIPSimilarity",
    "clip_preprocess",
    "clip_processor",
    "load_clip_vision",
    "read_normalisation",
]

#: OpenAI CLIP's normalisation, used when the model directory has no preprocessor config.
OPENAI_CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)

# Keys of the full CLIP checkpoint that belong to the text side; the image tower does not use
# them, so they are the only unexpected keys tolerated when loading.
_TEXT_TOWER = ("text_model.", "text_projection.", "logit_scale")


def _pil_processor_class() -> Any:
    """transformers' PIL-backed ``CLIPImageProcessor`` (the class is split in transformers 5;
    before that the only one was PIL-backed)."""
    try:
        from transformers import CLIPImageProcessorPil

        return CLIPImageProcessorPil
    except ImportError:  # transformers < 5
        from transformers import CLIPImageProcessor

        return CLIPImageProcessor


def read_normalisation(
    model_dir: str | os.PathLike | None,
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """CLIP image mean and std: the model directory's ``preprocessor_config.json`` if it has
    them, else :data:`OPENAI_CLIP_MEAN` / :data:`OPENAI_CLIP_STD`.

    Raises:
        BadWeightsError: The preprocessor config is not JSON.
    """
    if model_dir is not None:
        cfg = Path(model_dir) / "preprocessor_config.json"
        if cfg.is_file():
            data = read_json(cfg, "preprocessor config")
            if "image_mean" in data and "image_std" in data:
                return tuple(map(float, data["image_mean"])), tuple(map(float, data["image_std"]))
    return OPENAI_CLIP_MEAN, OPENAI_CLIP_STD


def clip_processor(
    model_dir: str | os.PathLike | None = None,
    size: int = 224,
    mean: Sequence[float] = OPENAI_CLIP_MEAN,
    std: Sequence[float] = OPENAI_CLIP_STD,
) -> Any:
    """The reference CLIP image processor (PIL backend).

    Args:
        model_dir: A model directory; its ``preprocessor_config.json``, when present, configures
            the processor exactly as ``CLIPImageProcessor.from_pretrained`` would (the class
            defaults overlaid with the file), and ``size`` / ``mean`` / ``std`` are ignored.
        size: Shortest side and crop size without a config file.
        mean: Normalisation mean without a config file.
        std: Normalisation std without a config file.

    Raises:
        BadWeightsError: The preprocessor config is not JSON or not a processor config.
    """
    cls = _pil_processor_class()
    cfg = None if model_dir is None else Path(model_dir) / "preprocessor_config.json"
    if cfg is not None and cfg.is_file():
        data = read_json(cfg, "preprocessor config")
        try:
            return cls.from_dict(data)
        except (TypeError, ValueError, KeyError) as err:
            raise BadWeightsError(f"{cfg}: not a CLIP image processor config ({err})") from err
    return cls(
        size={"shortest_edge": int(size)},
        crop_size={"height": int(size), "width": int(size)},
        image_mean=list(mean),
        image_std=list(std),
    )


def clip_preprocess(
    images: Tensor,
    size: int = 224,
    mean: Sequence[float] = OPENAI_CLIP_MEAN,
    std: Sequence[float] = OPENAI_CLIP_STD,
    processor: Any | None = None,
) -> Tensor:
    """CLIP's image preprocessing, by the reference processor on the 8-bit image.

    Not differentiable (the processor works on 8-bit PIL images); nothing that calls it needs
    a gradient.

    Args:
        images: ``(B, 3, H, W)`` RGB in ``[0, 1]`` (already composited on a background), any
            device.
        size: Shortest side resized to, then the centre crop (without ``processor``).
        mean: Per-channel mean (without ``processor``).
        std: Per-channel std (without ``processor``).
        processor: A processor from :func:`clip_processor` (built from ``size`` / ``mean`` /
            ``std`` when ``None``).

    Returns:
        ``(B, 3, S, S)`` normalised pixel values on ``images``' device and dtype.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected (B, 3, H, W) images, got {tuple(images.shape)}")
    if not torch.isfinite(images).all():
        raise ValueError("CLIP preprocessing: images contain NaN or inf")
    processor = processor or clip_processor(None, size, mean, std)
    # round(255 x), as data.io.write_rgba writes PNGs: a render scores like its file.
    u8 = (images.detach().float().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
    arrays = list(u8.permute(0, 2, 3, 1).cpu().numpy())
    out = processor(images=arrays, return_tensors="np", input_data_format="channels_last")
    pixels = np.asarray(out["pixel_values"], dtype=np.float32)
    return torch.from_numpy(pixels).to(device=images.device, dtype=images.dtype)


def _vision_config(model_dir: Path) -> CLIPVisionConfig:
    """The image tower's config. For a full CLIP config, ``projection_dim`` lives at the top
    level and the vision sub-config may not repeat it; take it from there so the projection's
    shape matches the checkpoint."""
    raw = read_json(model_dir / "config.json", "model config")
    try:
        config = CLIPVisionConfig.from_pretrained(model_dir, local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise BadWeightsError(
            f"{model_dir / 'config.json'}: not a CLIP config ({type(err).__name__}: {err})"
        ) from err
    if raw.get("model_type") == "clip" and "projection_dim" in raw:
        config.projection_dim = int(raw["projection_dim"])
    return config


def load_clip_vision(path: str | os.PathLike | None = None) -> CLIPVisionModelWithProjection:
    """The CLIP ViT-B/32 image tower with projection, offline, strictly, in eval mode.

    The directory is found with :func:`~ds4d_pl.weights.resolve` (``clip_vit_b32``): ``path``
    if given, else ``$DS4D_WEIGHTS_DIR/clip-vit-base-patch32``, else the HF cache. Either a
    full CLIP checkpoint (text tower ignored) or an image-tower one loads. The returned model
    carries ``weights_sha256 = {"clip_vit_b32": <sha256 of the weights file>}``
    (``model.safetensors``, else ``pytorch_model.bin``; the index file for sharded models).

    Args:
        path: Model directory (``config.json`` and weights), as written by ``save_pretrained``.

    Raises:
        MissingWeightsError: No model directory or weights file found; the message names it.
        BadWeightsError: The config is not JSON, the weights file is unreadable, or the
            checkpoint lacks an image-tower key, has keys of neither tower, or has a mismatched
            shape.
    """
    model_dir = resolve("clip_vit_b32", path)
    model = load_pretrained(
        CLIPVisionModelWithProjection,
        model_dir,
        config=_vision_config(model_dir),
        allow_unexpected=_TEXT_TOWER,
    )
    weights_file = hub_weights_file(model_dir)
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
            ``config.image_size`` is the preprocessing size when no ``processor`` is given.
        image_mean: Normalisation mean; OpenAI CLIP's by default.
        image_std: Normalisation std; OpenAI CLIP's by default.
        processor: The image processor (:func:`clip_processor`); built from the model's image
            size, ``image_mean`` and ``image_std`` when ``None``.
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
        processor: Any | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, **kwargs)
        self.image_size = int(model.config.image_size)
        self.image_mean = tuple(image_mean) if image_mean is not None else OPENAI_CLIP_MEAN
        self.image_std = tuple(image_std) if image_std is not None else OPENAI_CLIP_STD
        self.processor = processor or clip_processor(
            None, self.image_size, self.image_mean, self.image_std
        )

    @property
    def weights_sha256(self) -> dict[str, str]:
        """sha256 of the loaded weights file (empty if random)."""
        return dict(getattr(self.net, "weights_sha256", {}))

    def embed(self, images: Tensor) -> Tensor:
        """Unit-norm projected embeddings ``(B, D)`` of ``(B, 3, H, W)`` images in ``[0, 1]``."""
        x = clip_preprocess(images, processor=self.processor)
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
            BadWeightsError: The directory's files are unreadable or do not match the
                architecture.
        """
        # Resolved once here so the model and its preprocessor config come from one directory.
        model_dir = resolve("clip_vit_b32", path)
        model = load_clip_vision(model_dir)
        mean, std = read_normalisation(model_dir)
        processor = clip_processor(model_dir, int(model.config.image_size), mean, std)
        return cls(model, image_mean=mean, image_std=std, processor=processor, **kwargs)
