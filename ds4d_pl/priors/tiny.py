"""Tiny, randomly initialised Zero123++ and Zero123 in their diffusers layouts, for tests and
benchmarks.

:func:`write_tiny_zero123pp` builds every component of ``sudo-ai/zero123plus-v1.1`` / ``-v1.2``
with the real class (``UNet2DConditionModel``, ``AutoencoderKL``, ``CLIPTextModel`` +
``CLIPTokenizer``, ``CLIPVisionModelWithProjection``, two ``CLIPImageProcessor`` s,
``EulerAncestralDiscreteScheduler``) at a few thousand parameters, saves each with
``save_pretrained`` into the same subfolders, and writes a ``model_index.json`` carrying the
``ramping_coefficients`` as the published one does. :mod:`ds4d_pl.priors.zero123pp` therefore
loads it through exactly the code that loads the real weights. The outputs mean nothing; the
shapes, file names, configs and the loading path are those of Zero123++.

:func:`write_tiny_zero123` does the same for Zero123 (``vae``, an 8-channel ``unet``,
``image_encoder``, ``scheduler``, ``cc_projection``), which :mod:`ds4d_pl.priors.sds` loads.

The tokenizer's vocabulary is built here (byte-level symbols plus the CLIP special tokens), so
nothing is downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ds4d_pl.weights import quiet_hub_loading

__all__ = ["write_tiny_zero123", "write_tiny_zero123pp"]

#: Width of the text embeddings and of the CLIP image embedding (1024 in the real model).
_WIDTH = 32


def _byte_symbols() -> list[str]:
    """The 256 printable symbols byte-level BPE maps bytes to (GPT-2 / CLIP convention)."""
    keep = list(range(ord("!"), ord("~") + 1))
    keep += list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    extra = [b for b in range(256) if b not in keep]
    codes = keep + [256 + i for i in range(len(extra))]
    return [chr(c) for c in codes]


def _write_tokenizer(folder: Path, max_length: int) -> int:
    """A CLIP BPE tokenizer in the hub's file layout (``vocab.json``, ``merges.txt``,
    ``tokenizer_config.json``, ``special_tokens_map.json``) whose vocabulary is the byte symbols
    and their end-of-word forms (no merges); returns the vocabulary size."""
    symbols = _byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols] + ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    special = {
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
    }
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
    config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": max_length, **special}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return len(tokens)


def _tiny_vae(sample_size: int) -> Any:
    """A two-level ``AutoencoderKL`` (downsamples by 2) with SD's 4 latent channels."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=sample_size,
    )


def _tiny_unet(in_channels: int, cross_attention_dim: int, sample_size: int) -> Any:
    """A two-level ``UNet2DConditionModel`` predicting 4 latent channels, with self- and
    cross-attention at the first level."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=sample_size // 2,
        in_channels=in_channels,
        out_channels=4,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=4,
        norm_num_groups=8,
    )


def write_tiny_zero123pp(
    path: str | Path,
    seed: int = 0,
    cond_size: int = 32,
    text_length: int = 8,
    prediction_type: str = "v_prediction",
) -> Path:
    """Write a tiny Zero123++ directory in the hub layout and return it.

    Args:
        path: Target directory (created).
        seed: Seed of the random weights.
        cond_size: Side the condition image is resized to by ``feature_extractor_vae`` (320 in
            the real model) and the CLIP image size of ``feature_extractor_clip`` (224 real).
        text_length: Token length of the (empty) prompt, i.e. the tokenizer's
            ``model_max_length`` and the number of ramping coefficients (77 in the real model).
        prediction_type: The scheduler's prediction type (Zero123++ v1.1/v1.2 use
            ``v_prediction``).

    Returns:
        ``path``, holding ``model_index.json`` and the eight component folders.
    """
    from diffusers import EulerAncestralDiscreteScheduler
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
    )

    from ds4d_pl.priors.zero123pp import _image_processor_class

    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    vocab = _write_tokenizer(root / "tokenizer", text_length)
    # Seeded weights without disturbing the caller's random stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = _tiny_vae(cond_size)
        # Stable Diffusion 2's UNet layout (what Zero123++ fine-tunes), two levels deep; the
        # self-attention layers ("attn1") are where the reference attention hooks in.
        unet = _tiny_unet(4, _WIDTH, cond_size)
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=vocab,
                hidden_size=_WIDTH,
                intermediate_size=2 * _WIDTH,
                num_hidden_layers=1,
                num_attention_heads=2,
                max_position_embeddings=text_length,
                bos_token_id=vocab - 2,
                eos_token_id=vocab - 1,
                pad_token_id=vocab - 1,
            )
        )
        vision_encoder = CLIPVisionModelWithProjection(
            CLIPVisionConfig(
                hidden_size=16,
                intermediate_size=32,
                num_hidden_layers=1,
                num_attention_heads=2,
                image_size=cond_size,
                patch_size=8,
                projection_dim=_WIDTH,
            )
        )
        ramping = torch.rand(text_length).tolist()
    # The published scheduler config: Euler ancestral, linear betas, v-prediction.
    scheduler = EulerAncestralDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="linear",
        prediction_type=prediction_type,
        steps_offset=1,
    )
    processor = _image_processor_class()
    clip_proc = processor(
        size={"shortest_edge": cond_size},
        crop_size={"height": cond_size, "width": cond_size},
    )
    vae_proc = processor(
        size={"shortest_edge": cond_size},
        crop_size={"height": cond_size, "width": cond_size},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    with quiet_hub_loading():
        vae.save_pretrained(root / "vae")
        unet.save_pretrained(root / "unet")
        text_encoder.save_pretrained(root / "text_encoder")
        vision_encoder.save_pretrained(root / "vision_encoder")
    scheduler.save_pretrained(root / "scheduler")
    clip_proc.save_pretrained(root / "feature_extractor_clip")
    vae_proc.save_pretrained(root / "feature_extractor_vae")
    index = {
        "_class_name": ["pipeline", "Zero123PlusPipeline"],
        "_diffusers_version": "0.20.2",
        "feature_extractor_clip": ["transformers", "CLIPImageProcessor"],
        "feature_extractor_vae": ["transformers", "CLIPImageProcessor"],
        "ramping_coefficients": ramping,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", "EulerAncestralDiscreteScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "vision_encoder": ["transformers", "CLIPVisionModelWithProjection"],
    }
    (root / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    return root


def write_tiny_zero123(path: str | Path, seed: int = 0, sample_size: int = 32) -> Path:
    """Write a tiny Zero123 directory (``vae``, ``unet``, ``image_encoder``, ``scheduler``,
    ``cc_projection``) to ``path`` and return it.

    Args:
        path: Target directory (created).
        seed: Seed of the random weights.
        sample_size: Image size the components are configured for (the VAE downsamples by 2).
    """
    from diffusers import DDIMScheduler
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from ds4d_pl.priors.sds import CCProjection

    root = Path(path)
    # Seeded weights without disturbing the caller's random stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = _tiny_vae(sample_size)
        # Zero123's UNet: 4 noisy-latent + 4 image-latent channels in, epsilon out.
        unet = _tiny_unet(8, 24, sample_size)
        image_encoder = CLIPVisionModelWithProjection(
            CLIPVisionConfig(
                hidden_size=16,
                intermediate_size=32,
                num_hidden_layers=1,
                num_attention_heads=2,
                image_size=32,
                patch_size=8,
                projection_dim=20,
            )
        )
        # CLIP width 20 + 4 pose values → the UNet's context width 24 (772 → 768 for real).
        cc_projection = CCProjection(20 + 4, 24)
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
    )
    with quiet_hub_loading():
        vae.save_pretrained(root / "vae")
        unet.save_pretrained(root / "unet")
        image_encoder.save_pretrained(root / "image_encoder")
    cc_projection.save_pretrained(root / "cc_projection")
    scheduler.save_pretrained(root / "scheduler")
    return root
