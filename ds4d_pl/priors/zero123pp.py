"""Zero123++ multi-view sequences from a local diffusers directory, with a temporal anchor.

Zero123++ (``sudo-ai/zero123plus-v1.1`` / ``-v1.2``) turns one object image into six views at
fixed poses, tiled as a 3-row x 2-column grid (640 x 960 for 320² views). The published repository
needs a custom pipeline file from the hub; this module does not. It loads each component from its
subfolder with its own diffusers / transformers class (``local_files_only=True``) and samples
itself:

* **Text/image conditioning.** The empty prompt's CLIP text embeddings (``(77, 1024)``) plus the
  CLIP image embedding of the input (``image_embeds``, one 1024 vector) times a per-token ramp,
  ``ramping_coefficients`` (77 numbers stored in ``model_index.json``, where the pipeline
  registers them to its config). The unconditional branch of classifier-free guidance uses the
  empty-prompt embeddings without the image term.
* **Reference attention ("reference-only").** The input image, composited on grey (127) and
  preprocessed by ``feature_extractor_vae`` (320², mean/std 0.5), is VAE-encoded (a sample of
  the latent distribution, *not* multiplied by the VAE scaling factor), noised to the current
  sigma and scaled like the sample (``(z + σ ε) / sqrt(σ² + 1)``), and run through the UNet
  first ("write" pass). Every self-attention layer (``attn1``) stores its input tokens; in the
  main pass the same layer attends to ``[own tokens, stored tokens]`` as keys/values ("read").
  The unconditional branch's reference is the VAE latent of an all-zero image.
* **Temporal anchor** (as STAG4D): with it on, the reference tokens of the first frame are kept
  for every denoising step and layer; for later frames each ``attn1`` additionally attends to
  them, so the views of frame t stay close to those of frame 0.
* **Scaling.** The sampler works on Zero123++'s rescaled latents; before decoding,
  ``z = z / 0.75 + 0.22`` and ``z / vae.config.scaling_factor``; the decoded image is multiplied
  by ``0.8 / 0.5`` before mapping ``[-1, 1]`` to ``[0, 1]``.
* Classifier-free guidance (scale 4 by default) and the directory's scheduler config run as
  Euler ancestral with ``timestep_spacing="trailing"`` (what the Zero123++ README recommends).

The grid is split row by row: cell ``k`` (row ``k // 2``, column ``k % 2``) is pose ``k`` of
:data:`~ds4d_pl.cameras.ZERO123PP_V11_POSES` (azimuth ``30 + 60 k``). A view's alpha comes from
thresholding the generated background (:func:`ds4d_pl.data.alpha.background_alpha`) or from a
local segmentation model (:mod:`ds4d_pl.data.segment`). The published models paint an opaque
*grey* background (the Zero123++ README: "the ``zero`` for Stable Diffusion VAE", i.e. 0.5), so
the background colour is a setting (``alpha_background``, default 0.5; 1.0 for white).

Randomness is drawn from one CPU generator per frame seeded with ``seed`` (default: the same
seed, so the same initial noise, for every frame, which helps temporal consistency), in a fixed
order, so a seed gives the same output on any device.

Tests: ``tests/test_zero123pp.py`` (with the tiny components of :mod:`ds4d_pl.priors.tiny`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from ds4d_pl.data.alpha import background_alpha
from ds4d_pl.weights import (
    BadWeightsError,
    MissingWeightsError,
    find_file,
    load_pretrained,
    read_json,
    resolve,
)

if TYPE_CHECKING:
    from ds4d_pl.data.segment import SegmenterConfig

__all__ = [
    "IMAGE_SCALE",
    "LATENT_SCALE",
    "LATENT_SHIFT",
    "ZERO123PP_REPOS",
    "Zero123pp",
    "Zero123ppConfig",
    "generate_multiview_sequence",
    "load_zero123pp",
    "resolve_zero123pp_dir",
    "split_grid",
]

#: Where the weights are published, per version.
ZERO123PP_REPOS = {"v1.1": "sudo-ai/zero123plus-v1.1", "v1.2": "sudo-ai/zero123plus-v1.2"}
#: Zero123++ latent rescaling: sampler latents are ``(vae_latent - SHIFT) * SCALE``.
LATENT_SHIFT = 0.22
LATENT_SCALE = 0.75
#: Decoded images are ``IMAGE_SCALE`` times the VAE output (``unscale_image``: ``/ 0.5 * 0.8``).
IMAGE_SCALE = 0.8 / 0.5
#: Grey the pipeline composites an RGBA input on (``to_rgb_image``: 127).
CONDITION_GREY = 127

#: Component subfolders, their files: a config file, and weight files (any one of them).
_WEIGHTS_DIFFUSERS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
_WEIGHTS_TRANSFORMERS = ("model.safetensors", "pytorch_model.bin")
COMPONENTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "vae": ("config.json", _WEIGHTS_DIFFUSERS),
    "unet": ("config.json", _WEIGHTS_DIFFUSERS),
    "text_encoder": ("config.json", _WEIGHTS_TRANSFORMERS),
    "vision_encoder": ("config.json", _WEIGHTS_TRANSFORMERS),
    "tokenizer": ("vocab.json", ("merges.txt",)),
    "scheduler": ("scheduler_config.json", ()),
    "feature_extractor_clip": ("preprocessor_config.json", ()),
    "feature_extractor_vae": ("preprocessor_config.json", ()),
}


def _image_processor_class() -> Any:
    """``CLIPImageProcessor`` without torchvision (transformers 5 has a PIL backend class)."""
    try:
        from transformers import CLIPImageProcessorPil

        return CLIPImageProcessorPil
    except ImportError:  # transformers < 5
        from transformers import CLIPImageProcessor

        return CLIPImageProcessor


@dataclass
class Zero123ppConfig:
    """Options of Zero123++ multi-view generation.

    Attributes:
        version: ``"v1.1"`` or ``"v1.2"`` (selects the pose set and the published repository
            named in errors).
        steps: Denoising steps (the pipeline's default 28; 75-100 for fine details).
        guidance_scale: Classifier-free guidance scale (``<= 1`` disables the unconditional
            branch).
        seed: Seed of every random draw (initial noise, condition latent, ancestral noise).
        same_noise_per_frame: Use ``seed`` for every frame (the same initial noise); else
            ``seed + t`` for frame ``t``.
        temporal_anchor: Later frames also attend to the first frame's reference tokens.
        anchor_on_cpu: Keep the first frame's stored reference tokens in CPU memory (the real
            model stores ~100 MB per step in fp16).
        resolution: Side of each of the six views; the sampled grid is ``2r`` wide, ``3r``
            tall (320 for the published models).
        timestep_spacing: Passed to the scheduler (``"trailing"`` as the Zero123++ README
            recommends for Euler ancestral; ``None`` keeps the directory's config).
        alpha: ``"threshold"`` (background-colour threshold,
            :func:`~ds4d_pl.data.alpha.background_alpha`) or
            ``"segmenter"`` (``segmenter`` must name a TorchScript model).
        alpha_background: Grey level of the generated background (0.5: the VAE's zero, what
            the published models paint; 1.0: white).
        alpha_threshold: Max channel distance to ``alpha_background`` counted as background.
        segmenter: Path of a TorchScript foreground model (see :mod:`ds4d_pl.data.segment`).
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ...
        dtype: ``"auto"`` (float16 on CUDA, float32 otherwise), ``"float32"``, ``"float16"``,
            ``"bfloat16"``.
    """

    version: str = "v1.1"
    steps: int = 28
    guidance_scale: float = 4.0
    seed: int = 0
    same_noise_per_frame: bool = True
    temporal_anchor: bool = True
    anchor_on_cpu: bool = True
    resolution: int = 320
    timestep_spacing: str | None = "trailing"
    alpha: str = "threshold"
    alpha_background: float = 0.5
    alpha_threshold: float = 0.08
    segmenter: str | None = None
    device: str = "auto"
    dtype: str = "auto"

    def __post_init__(self) -> None:
        if self.version not in ZERO123PP_REPOS:
            raise ValueError(
                f"Zero123ppConfig.version must be 'v1.1' or 'v1.2', got {self.version!r}"
            )
        if self.steps < 1:
            raise ValueError(f"Zero123ppConfig.steps must be >= 1, got {self.steps}")
        if self.resolution < 8 or self.resolution % 8:
            raise ValueError(
                f"Zero123ppConfig.resolution must be a multiple of 8, got {self.resolution}"
            )
        if self.alpha not in ("threshold", "segmenter"):
            raise ValueError(
                f"Zero123ppConfig.alpha must be 'threshold' or 'segmenter', got {self.alpha!r}"
            )
        if self.alpha == "segmenter" and not self.segmenter:
            raise ValueError("Zero123ppConfig.alpha='segmenter' needs Zero123ppConfig.segmenter")
        if not 0.0 < self.alpha_threshold < 1.0:
            raise ValueError(
                f"Zero123ppConfig.alpha_threshold must be in (0, 1), got {self.alpha_threshold}"
            )
        if self.dtype not in ("auto", "float32", "float16", "bfloat16"):
            raise ValueError(f"Zero123ppConfig.dtype: unknown dtype {self.dtype!r}")


# --------------------------------------------------------------------------------------------
# Locating and checking the directory


def _source(version: str) -> str:
    repo = ZERO123PP_REPOS.get(version, ZERO123PP_REPOS["v1.1"])
    return (
        f"Zero123++ {version} is published at https://huggingface.co/{repo}; download it (e.g. "
        f"`huggingface-cli download {repo} --local-dir DIR`) and pass DIR. Nothing is "
        "downloaded at run time."
    )


def _missing(directory: Path, version: str, what: str) -> MissingWeightsError:
    return MissingWeightsError(f"{directory}: {what}. {_source(version)}")


def _bad(directory: Path, version: str, err: Exception, part: str) -> BadWeightsError:
    """A damaged component: the underlying message (which starts with the file) and the
    source."""
    text = str(err).strip()
    detail = text.splitlines()[0][:400] if text else type(err).__name__
    return BadWeightsError(
        f"{directory}: component {part}/ failed to load: {detail}. {_source(version)}"
    )


def resolve_zero123pp_dir(path: str | os.PathLike | None, version: str = "v1.1") -> Path:
    """The local Zero123++ directory (:func:`ds4d_pl.weights.resolve`, registry names
    ``zero123plus-v1.1`` / ``zero123plus-v1.2``): ``path``, else
    ``$DS4D_WEIGHTS_DIR/zero123plus-<version>``, else the HF hub cache (offline).

    Raises:
        MissingWeightsError: None of them holds it (names every place looked at).
    """
    if version not in ZERO123PP_REPOS:
        raise ValueError(f"Zero123++ version must be 'v1.1' or 'v1.2', got {version!r}")
    if path is not None and not Path(path).is_dir():
        raise _missing(Path(path), version, "Zero123++ directory does not exist")
    if path is not None:
        # An explicit directory is checked part by part by check_zero123pp_dir.
        return Path(path)
    return resolve(f"zero123plus-{version}")


def check_zero123pp_dir(directory: str | os.PathLike, version: str = "v1.1") -> dict[str, str]:
    """Check the hub layout before loading anything.

    Returns:
        Per weight-carrying component, the ``variant`` to load (``""`` or ``"fp16"``).

    Raises:
        MissingWeightsError: The directory, ``model_index.json``, its
            ``ramping_coefficients``, a component folder, its config or its weights file is
            missing (the message names it).
        BadWeightsError: ``model_index.json`` is not JSON.
    """
    d = Path(directory)
    if not d.is_dir():
        raise _missing(d, version, "Zero123++ directory does not exist")
    index = d / "model_index.json"
    if not index.is_file():
        raise _missing(d, version, "model_index.json is missing (not a diffusers pipeline dir)")
    try:
        ramp = read_json(index, "pipeline index").get("ramping_coefficients")
    except BadWeightsError as err:
        raise BadWeightsError(f"{err}. {_source(version)}") from err
    if not ramp:
        raise _missing(d, version, "model_index.json has no ramping_coefficients")
    variants = {}
    for name, (config, weights) in COMPONENTS.items():
        sub = d / name
        if not sub.is_dir():
            raise _missing(d, version, f"component folder {name}/ is missing")
        if not (sub / config).is_file():
            raise _missing(d, version, f"{name}/{config} is missing")
        if not weights:
            continue
        if find_file(sub, weights) is not None:
            variants[name] = ""
            continue
        fp16 = [
            w.replace(".safetensors", ".fp16.safetensors").replace(".bin", ".fp16.bin")
            for w in weights
        ]
        if find_file(sub, fp16) is not None:
            variants[name] = "fp16"
            continue
        raise _missing(d, version, f"{name}/ has no weights file (looked for {', '.join(weights)})")
    return variants


# --------------------------------------------------------------------------------------------
# Reference attention


@dataclass
class _RefState:
    """What the reference processors do in the current UNet call (shared by all of them)."""

    mode: str = "off"  # "write": store inputs; "read": attend to stored ones; "off": plain
    step: int = 0
    bank: dict[str, Tensor] = field(default_factory=dict)
    record: dict[tuple[int, str], Tensor] | None = None  # filled on the anchor frame
    anchor: dict[tuple[int, str], Tensor] | None = None  # read on later frames
    anchor_device: torch.device | None = None
    anchor_reads: int = 0


class ReferenceAttnProcessor:
    """Self-attention with extra keys/values: the reference image's tokens (and the anchor's).

    Installed on every ``attn1`` (self-attention) layer of the UNet. In ``write`` mode it stores
    its input tokens under its layer name (and, on the anchor frame, per denoising step); in
    ``read`` mode it attends to ``concat(own, stored reference[, anchor reference])`` along the
    token axis. The attention itself is diffusers' ``AttnProcessor2_0``.
    """

    def __init__(self, name: str, state: _RefState) -> None:
        from diffusers.models.attention_processor import AttnProcessor2_0

        self.name = name
        self.state = state
        self.base = AttnProcessor2_0()

    def __call__(
        self,
        attn: Any,
        hidden_states: Tensor,
        encoder_hidden_states: Tensor | None = None,
        attention_mask: Tensor | None = None,
        temb: Tensor | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> Tensor:
        st = self.state
        context = encoder_hidden_states
        if st.mode == "write":
            st.bank[self.name] = hidden_states
            if st.record is not None:
                dev = st.anchor_device or hidden_states.device
                st.record[(st.step, self.name)] = hidden_states.detach().to(dev)
        elif st.mode == "read":
            parts = [hidden_states, st.bank.pop(self.name)]
            if st.anchor is not None:
                parts.append(st.anchor[(st.step, self.name)].to(hidden_states))
                st.anchor_reads += 1
            context = torch.cat(parts, dim=1)
        return self.base(attn, hidden_states, context, attention_mask, temb)


# --------------------------------------------------------------------------------------------
# Grid


def split_grid(grid: Tensor, rows: int = 3, cols: int = 2) -> Tensor:
    """Split a Zero123++ grid into its views, row by row.

    Args:
        grid: ``(rows * h, cols * w, C)`` image.

    Returns:
        ``(rows * cols, h, w, C)``; view ``k`` is cell (row ``k // cols``, column ``k % cols``),
        i.e. Zero123++ pose ``k`` (azimuth ``30 + 60 k``).
    """
    gh, gw = grid.shape[:2]
    if gh % rows or gw % cols:
        raise ValueError(f"grid of {gw}x{gh} does not split into {cols}x{rows} equal cells")
    h, w = gh // rows, gw // cols
    cells = grid.reshape(rows, h, cols, w, *grid.shape[2:]).transpose(1, 2)
    return cells.reshape(rows * cols, h, w, *grid.shape[2:])


# --------------------------------------------------------------------------------------------
# The model


def _select(cfg: Zero123ppConfig) -> tuple[torch.device, torch.dtype]:
    dev = cfg.device
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if dev == "auto" else dev
    )
    if cfg.dtype == "auto":
        dtype = torch.float16 if device.type == "cuda" else torch.float32
    else:
        dtype = getattr(torch, cfg.dtype)
    return device, dtype


class Zero123pp:
    """A loaded Zero123++ with its own sampler (see the module docstring).

    Build with :func:`load_zero123pp`. :meth:`generate` returns the six views of one image;
    :meth:`generate_clip` runs over a clip with the temporal anchor.
    """

    def __init__(
        self,
        components: dict[str, Any],
        ramp: Sequence[float],
        cfg: Zero123ppConfig,
        path: Path,
        segmenter_cfg: SegmenterConfig | None = None,
    ) -> None:
        self.cfg = cfg
        self.path = path
        self.device, self.dtype = _select(cfg)
        self.vae = components["vae"]
        self.unet = components["unet"]
        self.text_encoder = components["text_encoder"]
        self.vision_encoder = components["vision_encoder"]
        self.tokenizer = components["tokenizer"]
        self.scheduler = components["scheduler"]
        self.fe_clip = components["feature_extractor_clip"]
        self.fe_vae = components["feature_extractor_vae"]
        for m in (self.vae, self.unet, self.text_encoder, self.vision_encoder):
            m.to(self.device).eval().requires_grad_(False)
            if m.dtype != self.dtype:
                m.to(self.dtype)
        self.ramp = torch.tensor(list(ramp), dtype=torch.float32)
        n_tok = self.tokenizer.model_max_length
        if len(self.ramp) != n_tok:
            raise ValueError(
                f"{path}/model_index.json: {len(self.ramp)} ramping_coefficients but the "
                f"tokenizer gives {n_tok} tokens"
            )
        self.state = _RefState(anchor_device=torch.device("cpu") if cfg.anchor_on_cpu else None)
        procs = {}
        for name in self.unet.attn_processors:
            if name.endswith("attn1.processor"):
                procs[name] = ReferenceAttnProcessor(name, self.state)
            else:
                from diffusers.models.attention_processor import AttnProcessor2_0

                procs[name] = AttnProcessor2_0()
        self.unet.set_attn_processor(procs)
        self.segmenter: Callable[[Tensor], Tensor] | None = None
        if cfg.alpha == "segmenter":
            from ds4d_pl.data.segment import load_segmenter

            self.segmenter = load_segmenter(cfg.segmenter, segmenter_cfg)  # type: ignore[arg-type]
        self._empty_text: Tensor | None = None
        self._anchor: dict[tuple[int, str], Tensor] | None = None

    # -- conditioning --------------------------------------------------------------------------

    def _text(self) -> Tensor:
        """Empty-prompt CLIP text embeddings ``(1, L, D)`` (computed once)."""
        if self._empty_text is None:
            tok = self.tokenizer(
                [""],
                padding="max_length",
                max_length=self.tokenizer.model_max_length,
                truncation=True,
                return_tensors="pt",
            )
            out = self.text_encoder(tok.input_ids.to(self.device))
            self._empty_text = out[0].to(self.dtype)
        return self._empty_text

    def _condition_pixels(self, rgba: Tensor) -> tuple[Tensor, Tensor]:
        """VAE-processor and CLIP-processor pixel values of an RGBA/RGB image."""
        img = rgba.float().clamp(0, 1)
        if img.shape[-1] == 4:
            grey = CONDITION_GREY / 255.0
            img = img[..., :3] * img[..., 3:] + grey * (1 - img[..., 3:])
        arr = (img[..., :3] * 255).round().to(torch.uint8).cpu().numpy()
        arr = np.ascontiguousarray(arr)
        vae_px = self.fe_vae(images=arr, return_tensors="pt").pixel_values
        clip_px = self.fe_clip(images=arr, return_tensors="pt").pixel_values
        return vae_px, clip_px

    # -- sampling ------------------------------------------------------------------------------

    @torch.no_grad()
    def sample_grid(
        self, image: Tensor, seed: int | None = None, anchor: str | None = None
    ) -> Tensor:
        """Sample the ``(3r, 2r, 3)`` view grid of one image, in ``[0, 1]``.

        Args:
            image: ``(H, W, 4)`` straight RGBA (composited on grey) or ``(H, W, 3)``, in
                ``[0, 1]``, the object centred.
            seed: Seed of this sample (default ``cfg.seed``).
            anchor: ``None``; ``"record"`` to store this image's reference tokens per step
                and layer as the anchor; ``"use"`` to also attend to the recorded anchor.
        """
        cfg = self.cfg
        gen = torch.Generator("cpu").manual_seed(cfg.seed if seed is None else seed)
        dev, dt = self.device, self.dtype
        cfg_on = cfg.guidance_scale > 1.0
        r = cfg.resolution
        f = 2 ** (len(self.vae.config.block_out_channels) - 1)
        shape = (1, self.unet.config.in_channels, 3 * r // f, 2 * r // f)

        self.scheduler.set_timesteps(cfg.steps, device=dev)
        sigmas = self.scheduler.sigmas
        latents = torch.randn(shape, generator=gen).to(dev, dt) * self.scheduler.init_noise_sigma

        vae_px, clip_px = self._condition_pixels(image)
        vae_px = vae_px.to(dev, dt)
        cond = self.vae.encode(vae_px).latent_dist
        cond_lat = cond.mean + cond.std * torch.randn(cond.mean.shape, generator=gen).to(dev, dt)
        image_embeds = self.vision_encoder(clip_px.to(dev, dt)).image_embeds  # (1, D)
        text = self._text()
        ramp = self.ramp.to(dev, dt)[None, :, None]
        prompt = text + image_embeds[:, None, :] * ramp
        if cfg_on:
            neg = self.vae.encode(torch.zeros_like(vae_px)).latent_dist
            neg_lat = neg.mean + neg.std * torch.randn(neg.mean.shape, generator=gen).to(dev, dt)
            cond_lat = torch.cat([neg_lat, cond_lat])
            prompt = torch.cat([text, prompt])

        st = self.state
        if anchor not in (None, "record", "use"):
            raise ValueError(f"anchor must be None, 'record' or 'use', got {anchor!r}")
        if anchor == "use" and self._anchor is None:
            raise RuntimeError("anchor='use' before a frame was sampled with anchor='record'")
        st.record = {} if anchor == "record" else None
        use_anchor = self._anchor if anchor == "use" else None
        try:
            for i, t in enumerate(self.scheduler.timesteps):
                sigma = sigmas[i].to(dev, torch.float32)
                scale = float((sigma**2 + 1) ** 0.5)
                noise = torch.randn(cond_lat.shape, generator=gen).to(dev, dt)
                noisy_cond = (cond_lat + float(sigma) * noise) / scale
                st.step = i
                st.mode, st.anchor = "write", None
                self.unet(noisy_cond, t, encoder_hidden_states=prompt)
                st.mode, st.anchor = "read", use_anchor
                model_in = torch.cat([latents] * 2) if cfg_on else latents
                model_in = self.scheduler.scale_model_input(model_in, t)
                pred = self.unet(model_in, t, encoder_hidden_states=prompt).sample
                if cfg_on:
                    uncond, condp = pred.chunk(2)
                    pred = uncond + cfg.guidance_scale * (condp - uncond)
                latents = self.scheduler.step(pred, t, latents, generator=gen).prev_sample
            if anchor == "record":
                self._anchor = st.record
        finally:
            st.mode, st.anchor, st.record = "off", None, None
            st.bank.clear()
        latents = latents / LATENT_SCALE + LATENT_SHIFT
        img = self.vae.decode(latents / self.vae.config.scaling_factor).sample * IMAGE_SCALE
        return (img[0].float() / 2 + 0.5).clamp(0, 1).permute(1, 2, 0).cpu()

    def views(self, grid: Tensor) -> Tensor:
        """Split a sampled grid into six ``(r, r, 4)`` RGBA views with alpha (pose order)."""
        rgb = split_grid(grid)
        out = []
        for v in rgb:
            if self.segmenter is not None:
                a = self.segmenter(v)
            else:
                a = background_alpha(v, self.cfg.alpha_threshold, self.cfg.alpha_background)
            out.append(torch.cat([v, a[..., None]], -1))
        return torch.stack(out)

    def generate(self, image: Tensor, seed: int | None = None) -> Tensor:
        """The six posed views of one image: ``(6, r, r, 4)`` RGBA in ``[0, 1]``."""
        return self.views(self.sample_grid(image, seed))

    def generate_clip(
        self, frames: Tensor | Sequence[Tensor], progress: Callable[[int, int], None] | None = None
    ) -> Tensor:
        """The six views of every frame: ``(T, 6, r, r, 4)``.

        Frame 0 is sampled as a single image; with ``temporal_anchor`` its reference tokens are
        recorded and every later frame also attends to them. Frame ``t`` uses ``seed`` (or
        ``seed + t`` when ``same_noise_per_frame`` is off).
        """
        cfg = self.cfg
        out = []
        n = len(frames)
        try:
            for t in range(n):
                seed = cfg.seed if cfg.same_noise_per_frame else cfg.seed + t
                mode = None
                if cfg.temporal_anchor and n > 1:
                    mode = "record" if t == 0 else "use"
                grid = self.sample_grid(frames[t], seed, anchor=mode)
                out.append(self.views(grid))
                if progress is not None:
                    progress(t + 1, n)
        finally:
            self.clear_anchor()
        return torch.stack(out)

    def clear_anchor(self) -> None:
        """Drop the recorded anchor (it can be several GB for the real model)."""
        self._anchor = None


def load_zero123pp(
    path: str | os.PathLike | None,
    cfg: Zero123ppConfig | None = None,
    segmenter_cfg: SegmenterConfig | None = None,
) -> Zero123pp:
    """Load Zero123++ from a local directory in the hub layout (nothing is downloaded).

    Args:
        path: The directory (``model_index.json``, ``vae/``, ``text_encoder/``,
            ``tokenizer/``, ``unet/``, ``scheduler/``, ``vision_encoder/``,
            ``feature_extractor_clip/``, ``feature_extractor_vae/``); ``None`` looks in
            ``$DS4D_WEIGHTS_DIR/zero123plus-<version>`` and the HF hub cache.
        cfg: Options; defaults to ``Zero123ppConfig()``.
        segmenter_cfg: How ``cfg.segmenter`` is fed and read (with ``cfg.alpha="segmenter"``).

    Raises:
        MissingWeightsError: The directory or a part of it is missing (the message names the
            directory, the part, and where the weights are published).
        BadWeightsError: A config is not JSON, a weights file is unreadable or does not hold
            exactly its model's parameters, or a component fails to load (the message names
            the file).
    """
    from diffusers import AutoencoderKL, EulerAncestralDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer, CLIPVisionModelWithProjection

    cfg = Zero123ppConfig() if cfg is None else cfg
    d = resolve_zero123pp_dir(path, cfg.version)
    variants = check_zero123pp_dir(d, cfg.version)
    ramp = read_json(d / "model_index.json", "pipeline index")["ramping_coefficients"]
    _, dtype = _select(cfg)
    classes = {
        "vae": AutoencoderKL,
        "unet": UNet2DConditionModel,
        "text_encoder": CLIPTextModel,
        "vision_encoder": CLIPVisionModelWithProjection,
    }
    comps: dict[str, Any] = {}
    for name, (config, _) in COMPONENTS.items():
        sub = d / name
        try:
            if name in classes:
                kw: dict[str, Any] = {"variant": variants[name]} if variants.get(name) else {}
                comps[name] = load_pretrained(classes[name], sub, dtype, **kw)
                continue
            # Configs are read here first so a damaged one is named, not a library traceback.
            read_json(sub / config, f"{name} config")
            if name == "tokenizer":
                comps[name] = CLIPTokenizer.from_pretrained(sub, local_files_only=True)
            elif name == "scheduler":
                conf = EulerAncestralDiscreteScheduler.load_config(sub)
                extra = {}
                if cfg.timestep_spacing is not None:
                    extra["timestep_spacing"] = cfg.timestep_spacing
                comps[name] = EulerAncestralDiscreteScheduler.from_config(conf, **extra)
            else:
                comps[name] = _image_processor_class().from_pretrained(sub, local_files_only=True)
        except MissingWeightsError as err:
            raise _missing(d, cfg.version, f"component {name}/: {err}") from err
        except Exception as err:  # noqa: BLE001 - BadWeightsError or any library failure
            raise _bad(d, cfg.version, err, name) from err
    return Zero123pp(comps, ramp, cfg, d, segmenter_cfg)


def _replace_dir(tmp: Path, target: Path) -> None:
    """Move a finished directory over ``target`` (two renames; the old one is removed last)."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        if old.exists():
            shutil.rmtree(old)
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def generate_multiview_sequence(
    frames: Tensor | Sequence[Tensor],
    seq_dir: str | os.PathLike,
    model: Zero123pp,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Run Zero123++ over a clip and write the precomputed multi-view layout.

    Writes ``seq_dir/ref/{t}_rgba.png`` (the input frames) and
    ``seq_dir/zero123/{t}_rgba/{0..5}.png`` (the six views, pose order), which
    :func:`~ds4d_pl.data.parsers.multiview_sequence.load_multiview_sequence` reads
    (``data.dataset: multiview_sequence``). The sequence is assembled in a temporary sibling
    folder and moved into place when complete, so a reader never sees a partial sequence and a
    re-run leaves no stale frames.

    Args:
        frames: ``(T, H, W, 4)`` RGBA input frames in ``[0, 1]``, object centred.
        seq_dir: The sequence folder (``<root>/<obj>_mv``).
        model: A loaded :class:`Zero123pp`.
        progress: Called with ``(frames done, total)``.

    Returns:
        ``seq_dir``.
    """
    from ds4d_pl.data.io import write_rgba

    target = Path(seq_dir)
    views = model.generate_clip(frames, progress)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        for t, frame in enumerate(frames):
            write_rgba(tmp / "ref" / f"{t}_rgba.png", frame)
            for k, v in enumerate(views[t]):
                write_rgba(tmp / "zero123" / f"{t}_rgba" / f"{k}.png", v)
        _replace_dir(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
