"""A tiny, randomly initialised Zero123 in the real diffusers layout, for tests and benchmarks.

The components are the real classes (``AutoencoderKL``, an 8-channel ``UNet2DConditionModel``,
``CLIPVisionModelWithProjection``, :class:`~ds4d_pl.priors.sds.CCProjection`, ``DDIMScheduler``)
at a few thousand parameters each, saved with ``save_pretrained``, so the code under test loads
them exactly as it loads the published weights. Their outputs mean nothing; their shapes,
dtypes, file names and loading path are those of Zero123.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ds4d_pl.priors.sds import CCProjection

__all__ = ["write_tiny_zero123"]


def write_tiny_zero123(path: str | Path, seed: int = 0, sample_size: int = 32) -> Path:
    """Write a tiny Zero123 directory (``vae``, ``unet``, ``image_encoder``, ``scheduler``,
    ``cc_projection``) to ``path`` and return it.

    Args:
        path: Target directory (created).
        seed: Seed of the random weights.
        sample_size: Image size the components are configured for (the VAE downsamples by 2).
    """
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    root = Path(path)
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        vae = AutoencoderKL(
            block_out_channels=(8, 16),
            down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2,
            layers_per_block=1,
            latent_channels=4,
            norm_num_groups=4,
            sample_size=sample_size,
        )
        # Zero123's UNet: 4 noisy-latent + 4 image-latent channels in, epsilon out.
        unet = UNet2DConditionModel(
            sample_size=sample_size // 2,
            in_channels=8,
            out_channels=4,
            block_out_channels=(16, 32),
            layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=24,
            attention_head_dim=4,
            norm_num_groups=8,
        )
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
    finally:
        torch.random.set_rng_state(state)
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
    )
    vae.save_pretrained(root / "vae")
    unet.save_pretrained(root / "unet")
    image_encoder.save_pretrained(root / "image_encoder")
    cc_projection.save_pretrained(root / "cc_projection")
    scheduler.save_pretrained(root / "scheduler")
    return root
