"""Zero123 score distillation (SDS) through diffusers components loaded from a local directory.

Zero123 is Stable Diffusion fine-tuned to render an object from a new viewpoint given one image
of it and the relative camera pose. Its diffusers layout (``kxhit/zero123-xl``,
``ashawkey/zero123-xl-diffusers`` and the other conversions) is::

    DIR/
    ├── vae/            AutoencoderKL
    ├── unet/           UNet2DConditionModel with 8 input channels (noisy latent + image latent)
    ├── image_encoder/  CLIPVisionModelWithProjection
    ├── scheduler/      DDIM/DDPM scheduler config (the noise schedule)
    └── cc_projection/  Linear(D + 4 → cross_attention_dim): the CLIP image embedding
                        concatenated with the relative pose, fed as the UNet's context

The relative pose is Zero123's ``[Δpolar (rad), sin Δazimuth, cos Δazimuth, Δradius]`` with
polar = 90° − elevation, so its first entry is ``−Δelevation`` in radians (positive elevation puts
the camera above the object, ``ds4d_pl.cameras``). The conditioning image enters twice: its CLIP
embedding through ``cc_projection`` and its *unscaled* VAE latent mode concatenated to the noisy
latent. Classifier-free guidance zeroes both for the unconditional branch, as Zero123 was trained.

One SDS step (DreamFusion) on a rendered image ``x``: encode ``z = vae(x)``, draw
``t ~ U[t_min, t_max]`` and noise ``ε``, predict ``ε̂`` with guidance, and push ``z`` along
``w(t)(ε̂ − ε)`` without differentiating through the UNet. The loss
``½‖z − sg(z − g)‖² / B`` has exactly that gradient, so it composes with the other weighted
terms. The timestep range anneals linearly from ``[min, max]_step_percent`` to the
``anneal_*`` range, which moves from coarse shape guidance to detail as training proceeds.

Nothing is downloaded: a missing directory, component, config or weights file raises
:class:`~ds4d_pl.weights.MissingWeightsError` naming it; an unreadable config or weights file,
or weights that do not hold exactly a component's parameters, raise
:class:`~ds4d_pl.weights.BadWeightsError` naming the file. Without ``model.sds.path`` the
directory is looked up like every other network (``$DS4D_WEIGHTS_DIR/zero123-xl-diffusers``,
then the Hugging Face cache; registry name ``zero123``).

Tests: ``tests/test_sds.py``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ds4d_pl.cameras import Cameras, orbit_cameras
from ds4d_pl.data.types import ViewSet, composite
from ds4d_pl.metrics.clip import clip_preprocess
from ds4d_pl.render.base import RenderOutput
from ds4d_pl.weights import (
    BadWeightsError,
    MissingWeightsError,
    check_state_dict,
    find_file,
    load_pretrained,
    read_json,
    read_state_dict,
    resolve,
)

__all__ = [
    "CCProjection",
    "SDSConfig",
    "SDSOutput",
    "Zero123Condition",
    "Zero123Guidance",
    "Zero123SDS",
    "check_zero123_dir",
    "nearest_view",
    "orbit_pose",
    "relative_pose",
]

#: Where Zero123 diffusers directories are published (for error messages).
ZERO123_SOURCES = "kxhit/zero123-xl, ashawkey/zero123-xl-diffusers or bennyguo/zero123-diffusers"
#: Components every Zero123 directory must hold, with the file that proves each is complete.
_COMPONENTS = ("vae", "unet", "image_encoder", "scheduler", "cc_projection")
_WEIGHT_FILES = (
    "diffusion_pytorch_model.safetensors",
    "diffusion_pytorch_model.bin",
    "model.safetensors",
    "pytorch_model.bin",
)
_WEIGHTINGS = ("sds", "uniform", "fantasia")
_CONDITIONS = ("input", "nearest")


@dataclass
class SDSConfig:
    """Zero123 score distillation on random views (on when ``loss.sds > 0``).

    Attributes:
        path: Local Zero123 / zero123-xl diffusers directory (``vae``, ``unet``,
            ``image_encoder``, ``scheduler``, ``cc_projection``). ``None``: looked up like every
            network (``$DS4D_WEIGHTS_DIR/zero123-xl-diffusers``, then the Hugging Face cache);
            a missing directory stops ``loss.sds > 0`` runs before the first step.
        guidance_scale: Classifier-free guidance scale.
        resolution: Side of the square renders scored by the UNet (Zero123 was trained at 256).
        views_per_step: Random views rendered for SDS per training step (at one sampled frame).
        min_step_percent: Lower end of the timestep range at the start, as a fraction of the
            scheduler's training timesteps.
        max_step_percent: Upper end at the start.
        anneal_min_step_percent: Lower end after ``anneal_steps``.
        anneal_max_step_percent: Upper end after ``anneal_steps`` (smaller: finer detail).
        anneal_steps: SDS steps over which the range moves linearly (0: no annealing).
        weighting: ``w(t)``: ``sds`` (1 − ᾱ_t, DreamFusion), ``uniform`` (1) or ``fantasia``
            (√ᾱ_t (1 − ᾱ_t)).
        condition: Which image conditions Zero123: ``input`` (the input frame at the sampled
            time, pose relative to the input camera) or ``nearest`` (the training view of that
            frame, input or pseudo, closest in angle to the random view; docs/design.md §5).
        elevation_range: Elevations (degrees) of the random views.
        azimuth_range: Azimuths (degrees) of the random views.
        radius: Camera distance of the random views (the object protocol's 2.0).
        start_step: Global step from which SDS is applied.
        azimuth_sign: ``1`` when Zero123's azimuth turns the way ``ds4d_pl.cameras``' does
            (towards +x: counterclockwise seen from above, as in threestudio's Zero123
            guidance), ``-1`` to flip it; a knob because conversions disagree on the sign.
        pose_encoding: Fourth pose entry: ``zero123`` (Δradius, Zero123 / zero123-xl) or
            ``stable_zero123`` (the conditioning view's absolute polar angle in radians, what
            Stable Zero123 was trained with instead of a distance).
        grad_clip: Clamp of the per-element SDS gradient (``None``: no clamp).
        dtype: ``float32``, ``float16`` or ``bfloat16`` for the frozen networks.
    """

    path: str | None = None
    guidance_scale: float = 5.0
    resolution: int = 256
    views_per_step: int = 1
    min_step_percent: float = 0.02
    max_step_percent: float = 0.98
    anneal_min_step_percent: float = 0.02
    anneal_max_step_percent: float = 0.5
    anneal_steps: int = 1000
    weighting: str = "sds"
    condition: str = "input"
    elevation_range: tuple[float, float] = (-30.0, 30.0)
    azimuth_range: tuple[float, float] = (-180.0, 180.0)
    radius: float = 2.0
    start_step: int = 0
    azimuth_sign: int = 1
    pose_encoding: str = "zero123"
    grad_clip: float | None = None
    dtype: str = "float32"

    def __post_init__(self) -> None:
        for lo, hi in (
            (self.min_step_percent, self.max_step_percent),
            (self.anneal_min_step_percent, self.anneal_max_step_percent),
        ):
            if not 0.0 <= lo <= hi <= 1.0:
                raise ValueError(
                    f"SDSConfig: timestep ranges need 0 <= min <= max <= 1, got [{lo}, {hi}]"
                )
        if self.weighting not in _WEIGHTINGS:
            raise ValueError(f"SDSConfig.weighting must be one of {_WEIGHTINGS}")
        if self.condition not in _CONDITIONS:
            raise ValueError(f"SDSConfig.condition must be one of {_CONDITIONS}")
        if self.resolution < 8 or self.views_per_step < 1 or self.anneal_steps < 0:
            raise ValueError("SDSConfig: resolution >= 8, views_per_step >= 1, anneal_steps >= 0")
        if self.pose_encoding not in ("zero123", "stable_zero123"):
            raise ValueError("SDSConfig.pose_encoding must be 'zero123' or 'stable_zero123'")
        if self.azimuth_sign not in (1, -1):
            raise ValueError("SDSConfig.azimuth_sign must be 1 or -1")
        if self.dtype not in ("float32", "float16", "bfloat16"):
            raise ValueError("SDSConfig.dtype must be float32, float16 or bfloat16")

    def step_range(self, sds_step: int) -> tuple[float, float]:
        """Timestep range (fractions) after ``sds_step`` SDS steps."""
        frac = 0.0 if self.anneal_steps == 0 else min(max(sds_step, 0) / self.anneal_steps, 1.0)
        lo = self.min_step_percent + frac * (self.anneal_min_step_percent - self.min_step_percent)
        hi = self.max_step_percent + frac * (self.anneal_max_step_percent - self.max_step_percent)
        return lo, hi


class CCProjection(nn.Module):
    """Zero123's context projection: ``Linear(in_channel → out_channel)`` under the parameter
    names of the public conversions (``projection.weight`` / ``projection.bias``)."""

    def __init__(self, in_channel: int = 772, out_channel: int = 768) -> None:
        super().__init__()
        self.in_channel, self.out_channel = in_channel, out_channel
        self.projection = nn.Linear(in_channel, out_channel)

    def forward(self, x: Tensor) -> Tensor:
        return self.projection(x)

    def save_pretrained(self, path: str | Path) -> None:
        """Write ``config.json`` + ``diffusion_pytorch_model.safetensors`` (the hub layout)."""
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        config = {
            "_class_name": "CCProjection",
            "in_channel": self.in_channel,
            "out_channel": self.out_channel,
        }
        (path / "config.json").write_text(json.dumps(config, indent=2))
        state = {k: v.contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(path / "diffusion_pytorch_model.safetensors"))

    @classmethod
    def from_pretrained(cls, path: str | Path) -> CCProjection:
        """Load from a ``cc_projection`` folder; the width comes from the weights themselves
        (some conversions store no ``in_channel`` / ``out_channel`` in their config).

        Raises:
            MissingWeightsError: No weights file in the folder.
            BadWeightsError: It is unreadable or does not hold exactly the projection.
        """
        path = Path(path)
        f = find_file(path, _WEIGHT_FILES)
        if f is None:
            raise MissingWeightsError(
                f"{path}: no weights file (one of {', '.join(_WEIGHT_FILES)})"
            )
        state = read_state_dict(f)
        weight = state.get("projection.weight")
        if weight is None or weight.ndim != 2:
            raise BadWeightsError(
                f"{f}: cc_projection weights lack a 2-D 'projection.weight' (found "
                f"{sorted(state)[:6]})"
            )
        out_ch, in_ch = weight.shape
        module = cls(in_ch, out_ch)
        module.load_state_dict(check_state_dict(module, state, f), strict=True)
        return module


def check_zero123_dir(path: str | Path | None) -> Path:
    """The directory, checked to hold every Zero123 component with its config and weights.

    Args:
        path: ``model.sds.path``; ``None`` looks it up in the registry (``zero123``:
            ``$DS4D_WEIGHTS_DIR/zero123-xl-diffusers``, then the Hugging Face cache).

    Raises:
        MissingWeightsError: The directory is missing or not found, or a component, its config
            or its weights are; the message names each missing part and where Zero123 is
            published.
    """
    if path is None:
        try:
            return check_zero123_dir(resolve("zero123"))
        except MissingWeightsError as err:
            raise MissingWeightsError(
                "Zero123 SDS is on (loss.sds > 0) but model.sds.path is not set and no Zero123 "
                f"directory was found by default.\n{err}"
            ) from err
    root = Path(path).expanduser()
    if not root.is_dir():
        raise MissingWeightsError(
            f"{root}: Zero123 diffusers directory does not exist (published as "
            f"{ZERO123_SOURCES}; download it on a machine with hub access and copy it here)"
        )
    missing = []
    for comp in _COMPONENTS:
        folder = root / comp
        config = "scheduler_config.json" if comp == "scheduler" else "config.json"
        if not (folder / config).is_file():
            missing.append(f"{comp}/{config}")
        if comp != "scheduler" and find_file(folder, _WEIGHT_FILES) is None:
            missing.append(f"{comp}/<weights: {' or '.join(_WEIGHT_FILES[:2])}>")
    if missing:
        raise MissingWeightsError(
            f"{root}: incomplete Zero123 diffusers directory, missing {', '.join(missing)} "
            f"(a complete one is published as {ZERO123_SOURCES})"
        )
    return root


def relative_pose(d_elevation_deg: Tensor, d_azimuth_deg: Tensor, d_radius: Tensor) -> Tensor:
    """Zero123's pose encoding ``[Δpolar, sin Δazimuth, cos Δazimuth, Δradius]`` ``(B, 4)``.

    Args:
        d_elevation_deg: ``(B,)`` target minus condition elevation (degrees, up positive).
        d_azimuth_deg: ``(B,)`` target minus condition azimuth (degrees, Zero123's direction).
        d_radius: ``(B,)`` target minus condition camera distance (Stable Zero123 takes the
            condition's polar angle in radians here instead; ``SDSConfig.pose_encoding``).
    """
    d_el = torch.as_tensor(d_elevation_deg, dtype=torch.float32).reshape(-1)
    d_az = torch.deg2rad(torch.as_tensor(d_azimuth_deg, dtype=torch.float32).reshape(-1))
    d_r = torch.as_tensor(d_radius, dtype=torch.float32).reshape(-1)
    # Polar is measured from the up axis, so a camera raised by Δel has Δpolar = −Δel.
    return torch.stack([torch.deg2rad(-d_el), torch.sin(d_az), torch.cos(d_az), d_r], dim=-1)


def orbit_pose(c2w: Tensor) -> Tensor:
    """``(N, 3)`` elevation, azimuth (degrees) and radius of cameras on an orbit around the
    origin, in the convention of :func:`ds4d_pl.cameras.orbit_position`."""
    eye = c2w[:, :3, 3].float()
    radius = eye.norm(dim=-1).clamp_min(1e-8)
    elevation = torch.rad2deg(torch.asin((eye[:, 1] / radius).clamp(-1.0, 1.0)))
    azimuth = torch.rad2deg(torch.atan2(eye[:, 0], eye[:, 2]))
    return torch.stack([elevation, azimuth, radius], dim=-1)


@dataclass
class Zero123Condition:
    """A conditioning image, encoded once: CLIP embedding ``(B, 1, D)`` and the unscaled VAE
    latent mode ``(B, 4, h, w)``."""

    clip: Tensor
    latent: Tensor


@dataclass
class SDSOutput:
    """One SDS evaluation: the loss (gradient ``w(t)(ε̂ − ε)`` on the latent), the timesteps
    drawn and the mean gradient norm per image (logged to watch the guidance strength)."""

    loss: Tensor
    timesteps: Tensor
    grad_norm: Tensor


class Zero123Guidance(nn.Module):
    """Frozen Zero123 (VAE, 8-channel UNet, CLIP image encoder, context projection, noise
    schedule) computing SDS losses on rendered images.

    Build it with :meth:`from_pretrained`; the networks never train and are kept in eval mode.

    Args:
        vae: ``AutoencoderKL``.
        unet: ``UNet2DConditionModel`` with 8 input channels.
        image_encoder: ``CLIPVisionModelWithProjection``.
        cc_projection: :class:`CCProjection` from CLIP width + 4 to the UNet context width.
        scheduler: A diffusers scheduler with ``alphas_cumprod`` and ``add_noise``
            (epsilon prediction).
        cfg: Guidance settings.
    """

    def __init__(
        self,
        vae: nn.Module,
        unet: nn.Module,
        image_encoder: nn.Module,
        cc_projection: CCProjection,
        scheduler: object,
        cfg: SDSConfig,
    ) -> None:
        super().__init__()
        if unet.config.in_channels != 2 * vae.config.latent_channels:
            raise ValueError(
                f"Zero123 UNet takes {unet.config.in_channels} input channels; expected "
                f"{2 * vae.config.latent_channels} (noisy latent + image latent)"
            )
        clip_dim = image_encoder.config.projection_dim
        if cc_projection.in_channel != clip_dim + 4:
            raise ValueError(
                f"cc_projection takes {cc_projection.in_channel} inputs; expected CLIP width "
                f"{clip_dim} + 4 pose values"
            )
        if cc_projection.out_channel != unet.config.cross_attention_dim:
            raise ValueError(
                f"cc_projection gives {cc_projection.out_channel} channels but the UNet attends "
                f"to {unet.config.cross_attention_dim}"
            )
        prediction = getattr(scheduler.config, "prediction_type", "epsilon")
        if prediction != "epsilon":
            raise ValueError(f"Zero123 SDS needs an epsilon-prediction scheduler, got {prediction}")
        self.vae, self.unet, self.image_encoder = vae, unet, image_encoder
        self.cc_projection = cc_projection
        self.scheduler = scheduler
        self.cfg = cfg
        self.register_buffer(
            "alphas_cumprod", scheduler.alphas_cumprod.detach().float().clone(), persistent=False
        )
        self.num_train_timesteps = int(scheduler.config.num_train_timesteps)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> Zero123Guidance:
        # Frozen prior: dropout/norm layers stay in inference mode whatever the parent does.
        return super().train(False)

    @classmethod
    def from_pretrained(cls, cfg: SDSConfig, device: torch.device | str = "cpu") -> Zero123Guidance:
        """Load every component from ``cfg.path`` (local files only).

        Raises:
            MissingWeightsError: See :func:`check_zero123_dir`.
            BadWeightsError: A config or weights file is unreadable, or a component's weights do
                not hold exactly its parameters (the message names the file).
        """
        from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
        from transformers import CLIPVisionModelWithProjection

        root = check_zero123_dir(cfg.path)
        dtype = getattr(torch, cfg.dtype)
        loaded = {}
        for name, model_class in (
            ("vae", AutoencoderKL),
            ("unet", UNet2DConditionModel),
            ("image_encoder", CLIPVisionModelWithProjection),
        ):
            try:
                loaded[name] = load_pretrained(model_class, root / name, dtype)
            except BadWeightsError as err:
                raise BadWeightsError(
                    f"{err}\n(Zero123 component {root / name}; a complete directory is "
                    f"published as {ZERO123_SOURCES})"
                ) from err
        vae, unet, image_encoder = loaded["vae"], loaded["unet"], loaded["image_encoder"]
        cc = CCProjection.from_pretrained(root / "cc_projection").to(dtype)
        # The noise schedule is all SDS needs of the scheduler; DDIM reads every SD-family
        # scheduler config (DDPM/PNDM/DDIM share beta_schedule and the beta range).
        read_json(root / "scheduler" / "scheduler_config.json", "scheduler config")
        try:
            scheduler = DDIMScheduler.from_pretrained(root / "scheduler", local_files_only=True)
        except Exception as err:  # noqa: BLE001 - any library failure on a readable config
            raise BadWeightsError(
                f"{root / 'scheduler' / 'scheduler_config.json'}: not a diffusers scheduler "
                f"config ({type(err).__name__}: {err})"
            ) from err
        return cls(vae, unet, image_encoder, cc, scheduler, cfg).to(device)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    # ------------------------------------------------------------------ encoders
    def _vae_input(self, rgb: Tensor) -> Tensor:
        """``(B, H, W, 3)`` in ``[0, 1]`` → ``(B, 3, R, R)`` in ``[−1, 1]`` (differentiable)."""
        if rgb.ndim != 4 or rgb.shape[-1] != 3:
            raise ValueError(f"Zero123 expects (B, H, W, 3) images, got {tuple(rgb.shape)}")
        x = rgb.permute(0, 3, 1, 2)
        r = self.cfg.resolution
        if x.shape[-2:] != (r, r):
            x = F.interpolate(x, (r, r), mode="bilinear", align_corners=False, antialias=True)
        return (x * 2.0 - 1.0).to(self.device, self.dtype)

    @torch.no_grad()
    def encode_condition(self, rgb: Tensor) -> Zero123Condition:
        """Encode conditioning images ``(B, H, W, 3)`` in ``[0, 1]`` composited on white."""
        x = rgb.permute(0, 3, 1, 2).to(self.device, torch.float32)
        clip_in = clip_preprocess(x, self.image_encoder.config.image_size).to(self.dtype)
        clip = self.image_encoder(pixel_values=clip_in).image_embeds[:, None]
        # Zero123 concatenates the latent mode without the SD latent scaling factor.
        latent = self.vae.encode(self._vae_input(rgb)).latent_dist.mode()
        return Zero123Condition(clip=clip, latent=latent)

    def encode_render(self, rgb: Tensor) -> Tensor:
        """Scaled VAE latent of renders ``(B, H, W, 3)``, differentiable w.r.t. ``rgb``."""
        latent = self.vae.encode(self._vae_input(rgb)).latent_dist.mode()
        return latent * self.vae.config.scaling_factor

    def guidance_inputs(self, cond: Zero123Condition, pose: Tensor) -> tuple[Tensor, Tensor]:
        """Context ``(2B, 1, C)`` and image latents ``(2B, 4, h, w)`` of the CFG batch:
        unconditional (zeros) first, then conditional, as Zero123 was trained."""
        b = pose.shape[0]
        clip = cond.clip.expand(b, -1, -1) if cond.clip.shape[0] == 1 else cond.clip
        latent = cond.latent.expand(b, -1, -1, -1) if cond.latent.shape[0] == 1 else cond.latent
        if clip.shape[0] != b or latent.shape[0] != b:
            raise ValueError(f"condition batch {clip.shape[0]} does not match {b} poses")
        context = self.cc_projection(
            torch.cat([clip, pose[:, None].to(clip.device, clip.dtype)], dim=-1)
        )
        context = torch.cat([torch.zeros_like(context), context])
        latents = torch.cat([torch.zeros_like(latent), latent])
        return context, latents

    def weight(self, timesteps: Tensor) -> Tensor:
        """``w(t)`` per timestep ``(B,)``."""
        a = self.alphas_cumprod[timesteps.to(self.alphas_cumprod.device)]
        if self.cfg.weighting == "sds":
            return 1.0 - a
        if self.cfg.weighting == "fantasia":
            return a.sqrt() * (1.0 - a)
        return torch.ones_like(a)

    def timestep_bounds(self, sds_step: int) -> tuple[int, int]:
        """Inclusive integer timestep range after ``sds_step`` SDS steps."""
        lo, hi = self.cfg.step_range(sds_step)
        n = self.num_train_timesteps
        t_min = min(max(int(lo * n), 1), n - 1)
        return t_min, min(max(int(hi * n), t_min), n - 1)

    # ---------------------------------------------------------------------- SDS
    def forward(
        self,
        rgb: Tensor,
        cond: Zero123Condition,
        pose: Tensor,
        sds_step: int = 0,
        generator: torch.Generator | None = None,
    ) -> SDSOutput:
        """SDS loss of renders ``rgb`` ``(B, H, W, 3)`` in ``[0, 1]`` on white, seen from
        ``pose`` ``(B, 4)`` (:func:`relative_pose`) relative to ``cond``'s image.

        Args:
            rgb: Renders; the gradient of the loss flows back to them.
            cond: Encoded conditioning image (batch 1 or ``B``).
            pose: Relative poses.
            sds_step: Steps of SDS so far (timestep annealing).
            generator: CPU generator for ``t`` and the noise (reproducible steps).
        """
        b = rgb.shape[0]
        if pose.shape != (b, 4):
            raise ValueError(f"pose must be ({b}, 4), got {tuple(pose.shape)}")
        latents = self.encode_render(rgb)
        t_min, t_max = self.timestep_bounds(sds_step)
        t = torch.randint(t_min, t_max + 1, (b,), generator=generator)
        noise = torch.randn(latents.shape, generator=generator, dtype=torch.float32)
        noise = noise.to(latents.device, latents.dtype)
        t = t.to(latents.device)
        with torch.no_grad():
            noisy = self.scheduler.add_noise(latents.detach(), noise, t)
            context, image_latents = self.guidance_inputs(cond, pose)
            model_in = torch.cat([torch.cat([noisy, noisy]), image_latents.to(noisy)], dim=1)
            eps = self.unet(model_in, torch.cat([t, t]), encoder_hidden_states=context).sample
            eps_uncond, eps_cond = eps.chunk(2)
            eps = eps_uncond + self.cfg.guidance_scale * (eps_cond - eps_uncond)
            w = self.weight(t).to(latents).view(b, 1, 1, 1)
            grad = torch.nan_to_num(w * (eps - noise))
            if self.cfg.grad_clip is not None:
                grad = grad.clamp(-self.cfg.grad_clip, self.cfg.grad_clip)
        target = (latents - grad).detach()
        loss = 0.5 * F.mse_loss(latents.float(), target.float(), reduction="sum") / b
        grad_norm = grad.flatten(1).norm(dim=1).mean().detach()
        return SDSOutput(loss=loss, timesteps=t.detach().cpu(), grad_norm=grad_norm)


def nearest_view(poses: Tensor, elevation: float, azimuth: float) -> int:
    """Index of the pose ``(N, 3)`` (elevation, azimuth, radius) closest in angle on the sphere
    to the direction ``(elevation, azimuth)`` (degrees)."""
    el = torch.deg2rad(poses[:, 0])
    az = torch.deg2rad(poses[:, 1])
    e, a = math.radians(elevation), math.radians(azimuth)
    cos = torch.sin(el) * math.sin(e) + torch.cos(el) * math.cos(e) * torch.cos(az - a)
    return int(torch.argmax(cos))


class Zero123SDS:
    """SDS as a training term: draws random views, renders them, picks the conditioning image
    of the sampled frame (encoded once per frame and view) and scores the renders.

    Args:
        guidance: The loaded Zero123.
        views: Training views of an object video (fixed orbit cameras; view 0 is the input).
    """

    def __init__(self, guidance: Zero123Guidance, views: ViewSet) -> None:
        if views.per_frame_cameras:
            raise ValueError(
                "Zero123 SDS needs an object video seen by fixed cameras (view 0 the input "
                "view); this scene has a camera per frame"
            )
        self.guidance = guidance
        self.cfg = guidance.cfg
        self.views = views
        self.poses = orbit_pose(views.cameras.c2w)
        self._cache: dict[tuple[int, int], Zero123Condition] = {}

    def condition(self, frame: int, view: int) -> Zero123Condition:
        """Encoded image of ``view`` at ``frame`` on white (cached: the encoders are frozen)."""
        key = (frame, view)
        if key not in self._cache:
            # One image composited when first needed, not a white copy of the whole dataset.
            v = self.views
            white = composite(v.rgb[view, frame], v.alpha[view, frame], torch.ones(3))
            self._cache[key] = self.guidance.encode_condition(white[None])
        return self._cache[key]

    def sample_views(self, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """``views_per_step`` random (elevation, azimuth) pairs in degrees."""
        k = self.cfg.views_per_step
        (e0, e1), (a0, a1) = self.cfg.elevation_range, self.cfg.azimuth_range
        el = e0 + (e1 - e0) * torch.rand(k, generator=generator)
        az = a0 + (a1 - a0) * torch.rand(k, generator=generator)
        return el, az

    def cameras(self, elevations: Tensor, azimuths: Tensor) -> Cameras:
        r = self.cfg.resolution
        return orbit_cameras(elevations, azimuths, r, r, radius=self.cfg.radius)

    def __call__(
        self,
        render: Callable[[Cameras], RenderOutput],
        background: Tensor,
        frame: int,
        sds_step: int,
        generator: torch.Generator,
    ) -> tuple[SDSOutput, RenderOutput]:
        """Render random views with ``render`` and return their SDS loss and the render.

        Args:
            render: Renders the model at the sampled frame's time from the given cameras.
            background: ``(3,)`` background the renders are composited on; they are
                re-composited on white, the background Zero123 was trained on.
            frame: Frame index whose input (or nearest) view conditions Zero123.
            sds_step: SDS steps so far (timestep annealing); derived from the global step by
                the caller, so a resumed run anneals exactly as an uninterrupted one.
            generator: Randomness of the views, timesteps and noise.
        """
        el, az = self.sample_views(generator)
        out = render(self.cameras(el, az))
        rgb = out.rgb_on(torch.ones(3), background)
        if self.cfg.condition == "nearest":
            pairs = zip(el.tolist(), az.tolist(), strict=True)
            chosen = [nearest_view(self.poses, e, a) for e, a in pairs]
        else:
            chosen = [0] * len(el)
        conds = [self.condition(frame, j) for j in chosen]
        cond = Zero123Condition(
            clip=torch.cat([c.clip for c in conds]), latent=torch.cat([c.latent for c in conds])
        )
        ref = self.poses[chosen]
        d_az = torch.remainder(az - ref[:, 1] + 180.0, 360.0) - 180.0
        d_r = self.cfg.radius - ref[:, 2]
        if self.cfg.pose_encoding == "stable_zero123":
            d_r = torch.deg2rad(90.0 - ref[:, 0])
        pose = relative_pose(el - ref[:, 0], self.cfg.azimuth_sign * d_az, d_r)
        return self.guidance(rgb, cond, pose, sds_step, generator), out
