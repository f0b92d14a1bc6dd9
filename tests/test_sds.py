"""Zero123 SDS (``ds4d_pl/priors/sds.py``), run on a tiny random Zero123 in the real layout.

Spec:
  * the pose encoding is Zero123's ``[Δpolar, sin Δaz, cos Δaz, Δr]`` with Δpolar = −Δelevation;
  * the classifier-free-guidance batch is unconditional (zeros) then conditional, of the right
    shapes; the timestep range anneals as configured; ``w(t)`` follows its named formula;
  * one SDS step on CPU is finite, reproducible from its generator, and its gradient reaches
    the rendered image (and through the renderer, the Gaussians); the latent gradient equals
    ``w(t)(ε̂ − ε)``;
  * a missing path, directory, component, config or weights file raises MissingWeightsError
    naming it; nonsense settings fail at construction;
  * in training, ``loss.sds > 0`` adds a logged ``sds`` term; without weights the run stops
    before its first step.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from conftest import CONFIGS, tiny_overrides, tiny_synthetic

from ds4d_pl.cameras import orbit_cameras
from ds4d_pl.cli import main
from ds4d_pl.data.types import ViewSet
from ds4d_pl.gaussians.canonical import CanonicalGaussians
from ds4d_pl.priors.sds import (
    SDSConfig,
    Zero123Condition,
    Zero123Guidance,
    Zero123SDS,
    check_zero123_dir,
    nearest_view,
    orbit_pose,
    relative_pose,
)
from ds4d_pl.priors.tiny import write_tiny_zero123
from ds4d_pl.render import build_renderer
from ds4d_pl.weights import BadWeightsError, MissingWeightsError


@pytest.fixture(scope="module")
def zero123_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_zero123(tmp_path_factory.mktemp("zero123") / "tiny")


@pytest.fixture(scope="module")
def guidance(zero123_dir: Path) -> Zero123Guidance:
    return Zero123Guidance.from_pretrained(SDSConfig(path=str(zero123_dir), resolution=32))


def _pose(b: int) -> torch.Tensor:
    return relative_pose(torch.linspace(-20, 20, b), torch.linspace(-90, 90, b), torch.zeros(b))


# ----------------------------------------------------------------------------- pure functions
def test_pose_encoding_is_zero123s_polar_sin_cos_radius() -> None:
    pose = relative_pose(
        torch.tensor([30.0, 0.0]), torch.tensor([90.0, 180.0]), torch.tensor([0.5, 0])
    )
    assert pose.shape == (2, 4)
    # A camera raised by 30° has a polar angle 30° smaller.
    assert pose[0, 0] == pytest.approx(-math.pi / 6)
    assert pose[0, 1:3].tolist() == pytest.approx([1.0, 0.0], abs=1e-6)
    assert pose[1, 1:3].tolist() == pytest.approx([0.0, -1.0], abs=1e-6)
    assert pose[:, 3].tolist() == [0.5, 0.0]


def test_orbit_pose_inverts_orbit_cameras_and_nearest_view_picks_the_closest() -> None:
    el, az = torch.tensor([0.0, 30.0, -20.0]), torch.tensor([0.0, 90.0, -150.0])
    cams = orbit_cameras(el, az, 8, 8, radius=2.5)
    poses = orbit_pose(cams.c2w)
    assert poses[:, 0].tolist() == pytest.approx(el.tolist(), abs=1e-4)
    assert poses[:, 1].tolist() == pytest.approx(az.tolist(), abs=1e-4)
    assert poses[:, 2].tolist() == pytest.approx([2.5] * 3, abs=1e-5)
    assert nearest_view(poses, 25.0, 80.0) == 1
    # Azimuth wraps: 200° is 160° away from 0° but only 10° from −150°.
    assert nearest_view(poses, -10.0, 200.0) == 2


def test_timestep_range_anneals_linearly_then_holds() -> None:
    cfg = SDSConfig(
        min_step_percent=0.2,
        max_step_percent=0.98,
        anneal_min_step_percent=0.02,
        anneal_max_step_percent=0.5,
        anneal_steps=100,
    )
    assert cfg.step_range(0) == pytest.approx((0.2, 0.98))
    assert cfg.step_range(50) == pytest.approx((0.11, 0.74))
    assert cfg.step_range(100) == cfg.step_range(10_000) == pytest.approx((0.02, 0.5))
    assert SDSConfig(anneal_steps=0).step_range(500) == pytest.approx((0.02, 0.98))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_step_percent": 0.9, "max_step_percent": 0.1},
        {"anneal_max_step_percent": 1.5},
        {"weighting": "snr"},
        {"condition": "random"},
        {"azimuth_sign": 0},
        {"pose_encoding": "sv3d"},
        {"dtype": "float64"},
        {"views_per_step": 0},
    ],
)
def test_nonsense_settings_fail_at_construction(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="SDSConfig"):
        SDSConfig(**kwargs)


# ---------------------------------------------------------------------------- loading errors
def test_missing_path_or_directory_names_what_to_get(no_weights: Path, tmp_path: Path) -> None:
    with pytest.raises(MissingWeightsError, match="(?s)model.sds.path is not set.*zero123-xl"):
        check_zero123_dir(None)
    with pytest.raises(MissingWeightsError, match=r"nowhere.*does not exist.*zero123-xl"):
        check_zero123_dir(tmp_path / "nowhere")


@pytest.mark.parametrize(
    ("remove", "named"),
    [
        ("unet", "unet/config.json"),
        ("cc_projection/diffusion_pytorch_model.safetensors", "cc_projection/<weights"),
        ("scheduler/scheduler_config.json", "scheduler/scheduler_config.json"),
        ("image_encoder/model.safetensors", "image_encoder/<weights"),
    ],
)
def test_incomplete_directory_names_each_missing_part(
    zero123_dir: Path, tmp_path: Path, remove: str, named: str
) -> None:
    broken = shutil.copytree(zero123_dir, tmp_path / "broken")
    target = broken / remove
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(MissingWeightsError, match=f"incomplete.*{named}"):
        Zero123Guidance.from_pretrained(SDSConfig(path=str(broken)))


# ---------------------------------------------------------------------------- the guidance
def test_loaded_components_are_frozen_and_stay_in_eval_mode(guidance: Zero123Guidance) -> None:
    assert not any(p.requires_grad for p in guidance.parameters())
    guidance.train()
    assert not guidance.unet.training and not guidance.vae.training


def test_condition_and_cfg_batch_shapes(guidance: Zero123Guidance) -> None:
    cond = guidance.encode_condition(torch.rand(1, 40, 40, 3))
    assert cond.clip.shape == (1, 1, guidance.image_encoder.config.projection_dim)
    assert cond.latent.shape == (1, 4, 16, 16)  # 32² renders, VAE factor 2
    context, latents = guidance.guidance_inputs(cond, _pose(3))
    assert context.shape == (6, 1, guidance.unet.config.cross_attention_dim)
    assert latents.shape == (6, 4, 16, 16)
    # Unconditional half first, all zeros (Zero123's training convention); conditional second.
    assert context[:3].abs().max() == 0 and latents[:3].abs().max() == 0
    assert torch.allclose(latents[3:], cond.latent.expand(3, -1, -1, -1))
    assert context[3:].abs().max() > 0
    with pytest.raises(ValueError, match="does not match"):
        guidance.guidance_inputs(
            Zero123Condition(cond.clip.expand(2, -1, -1), cond.latent), _pose(3)
        )


def test_one_sds_step_is_finite_reproducible_and_reaches_the_render(
    guidance: Zero123Guidance,
) -> None:
    cond = guidance.encode_condition(torch.rand(1, 32, 32, 3))
    image = torch.rand(2, 24, 24, 3, requires_grad=True)
    out = guidance(image, cond, _pose(2), 0, torch.Generator().manual_seed(3))
    out.loss.backward()
    assert torch.isfinite(out.loss) and out.loss > 0
    assert image.grad is not None and torch.isfinite(image.grad).all()
    assert image.grad.abs().sum() > 0
    lo, hi = guidance.timestep_bounds(0)
    assert ((out.timesteps >= lo) & (out.timesteps <= hi)).all()
    again = guidance(image, cond, _pose(2), 0, torch.Generator().manual_seed(3))
    assert float(again.loss) == float(out.loss)
    other = guidance(image, cond, _pose(2), 0, torch.Generator().manual_seed(4))
    assert other.loss != out.loss


def test_latent_gradient_is_weighted_noise_residual(guidance: Zero123Guidance) -> None:
    cond = guidance.encode_condition(torch.rand(1, 32, 32, 3))
    image = torch.rand(1, 32, 32, 3)
    captured = {}
    encode = guidance.encode_render

    def spy(rgb: torch.Tensor) -> torch.Tensor:
        z = encode(rgb).detach().requires_grad_(True)
        captured["z"] = z
        return z

    guidance.encode_render = spy  # type: ignore[method-assign]
    try:
        out = guidance(image, cond, _pose(1), 0, torch.Generator().manual_seed(0))
    finally:
        del guidance.encode_render
    out.loss.backward()
    z = captured["z"]
    # Recompute ε̂ − ε for the same draw: the generator makes t and ε reproducible.
    g = torch.Generator().manual_seed(0)
    lo, hi = guidance.timestep_bounds(0)
    t = torch.randint(lo, hi + 1, (1,), generator=g)
    noise = torch.randn(z.shape, generator=g)
    with torch.no_grad():
        noisy = guidance.scheduler.add_noise(z.detach(), noise, t)
        context, lat = guidance.guidance_inputs(cond, _pose(1))
        eps = guidance.unet(
            torch.cat([torch.cat([noisy, noisy]), lat], 1), torch.cat([t, t]), context
        ).sample
        u, c = eps.chunk(2)
        expected = (1 - guidance.alphas_cumprod[t]) * (
            u + guidance.cfg.guidance_scale * (c - u) - noise
        )
    assert torch.allclose(z.grad, expected, atol=1e-5)
    assert out.grad_norm == pytest.approx(float(expected.flatten(1).norm(dim=1).mean()), rel=1e-4)


def test_guidance_scale_and_weighting_change_the_step(zero123_dir: Path) -> None:
    cond_img = torch.rand(1, 32, 32, 3)
    image = torch.rand(1, 32, 32, 3)
    losses = {}
    for name, kwargs in {
        "s5": {},
        "s1": {"guidance_scale": 1.0},
        "uniform": {"weighting": "uniform"},
    }.items():
        g = Zero123Guidance.from_pretrained(
            SDSConfig(path=str(zero123_dir), resolution=32, **kwargs)
        )
        cond = g.encode_condition(cond_img)
        losses[name] = float(g(image, cond, _pose(1), 0, torch.Generator().manual_seed(1)).loss)
    assert len(set(losses.values())) == 3
    g = Zero123Guidance.from_pretrained(SDSConfig(path=str(zero123_dir), weighting="fantasia"))
    t = torch.tensor([10, 500, 990])
    a = g.alphas_cumprod[t]
    assert torch.allclose(g.weight(t), a.sqrt() * (1 - a))


# --------------------------------------------------------------------- as a training term
def _object_views(frames: int = 2, size: int = 16) -> ViewSet:
    el, az = [0.0, 30.0, -20.0], [0.0, 90.0, 210.0]
    rgb = torch.rand(3, frames, size, size, 3)
    return ViewSet(
        rgb=rgb,
        alpha=torch.ones(3, frames, size, size, 1),
        cameras=orbit_cameras(el, az, size, size),
        times=torch.linspace(0, 1, frames),
    )


@pytest.mark.parametrize("condition", ["input", "nearest"])
def test_sds_term_renders_random_views_and_moves_the_gaussians(
    zero123_dir: Path, condition: str
) -> None:
    cfg = SDSConfig(path=str(zero123_dir), resolution=32, views_per_step=2, condition=condition)
    prior = Zero123SDS(Zero123Guidance.from_pretrained(cfg), _object_views())
    gs = CanonicalGaussians.random_in_sphere(
        200, 0.5, 0, 0.5, generator=torch.Generator().manual_seed(0)
    )
    renderer = build_renderer("torch")
    bg = torch.ones(3)
    result, out = prior(
        lambda cams: renderer(gs.activated(), cams, bg), bg, 1, 0, torch.Generator().manual_seed(0)
    )
    result.loss.backward()
    assert out.rgb.shape == (2, 32, 32, 3)
    assert gs.means.grad is not None and gs.means.grad.abs().sum() > 0
    # One frozen encoding per (frame, view) used, reused by later steps.
    assert all(f == 1 for f, _ in prior._cache)
    if condition == "input":
        assert {j for _, j in prior._cache} == {0}


def test_pose_is_relative_to_the_chosen_view_with_the_configured_fourth_entry(
    zero123_dir: Path,
) -> None:
    views = _object_views()
    gs = CanonicalGaussians.random_in_sphere(
        50, 0.5, 0, 0.5, generator=torch.Generator().manual_seed(0)
    )
    renderer, bg = build_renderer("torch"), torch.ones(3)

    def render(cams):
        return renderer(gs.activated(), cams, bg)

    poses = {}
    for encoding in ("zero123", "stable_zero123"):
        cfg = SDSConfig(
            path=str(zero123_dir), resolution=32, condition="nearest", pose_encoding=encoding
        )
        prior = Zero123SDS(Zero123Guidance.from_pretrained(cfg), views)
        seen = {}

        def spy(rgb, cond, pose, step, generator, prior=prior, seen=seen):
            seen["pose"] = pose
            return Zero123Guidance.forward(prior.guidance, rgb, cond, pose, step, generator)

        prior.guidance.forward = spy  # type: ignore[method-assign]
        # Draw a view at elevation 25°, azimuth 100°: nearest is view 1 (30°, 90°).
        prior.sample_views = lambda g: (torch.tensor([25.0]), torch.tensor([100.0]))
        prior(render, bg, 0, 0, torch.Generator().manual_seed(0))
        poses[encoding] = seen["pose"][0]
    expected = relative_pose(torch.tensor([-5.0]), torch.tensor([10.0]), torch.zeros(1))[0]
    torch.testing.assert_close(poses["zero123"], expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(poses["stable_zero123"][:3], expected[:3], atol=1e-4, rtol=0)
    assert float(poses["stable_zero123"][3]) == pytest.approx(math.radians(60.0), abs=1e-4)


def test_sds_refuses_a_moving_camera_scene(zero123_dir: Path) -> None:
    views = _object_views(frames=2)
    cams = orbit_cameras([0.0] * 6, [0.0, 5, 30, 35, 60, 65], 16, 16)
    moving = ViewSet(views.rgb, views.alpha, cams, views.times)
    g = Zero123Guidance.from_pretrained(SDSConfig(path=str(zero123_dir), resolution=32))
    with pytest.raises(ValueError, match="camera per frame"):
        Zero123SDS(g, moving)


def _fit_args(run_dir: Path, zero123: Path | None, logger: bool = False) -> list[str]:
    args = ["fit", "-c", str(CONFIGS / "demo.yaml"), "-c", str(CONFIGS / "model/zero123_sds.yaml")]
    overrides = tiny_overrides(run_dir, steps=3)
    if logger:
        overrides = [a for a in overrides if not a.startswith("--trainer.logger")]
    args += [*tiny_synthetic(), *overrides, "--test_after_fit=false"]
    args += ["--model.sds.resolution=32", "--trainer.log_every_n_steps=1"]
    if zero123 is not None:
        args.append(f"--model.sds.path={zero123}")
    return args


def test_fit_with_sds_logs_the_term_and_records_the_prior(run_dir: Path, zero123_dir: Path) -> None:
    main(_fit_args(run_dir, zero123_dir, logger=True))
    info = json.loads((run_dir / "run_info.json").read_text())
    assert info["sds"]["path"] == str(zero123_dir)
    csv = next(iter((run_dir / "lightning_logs").rglob("metrics.csv"))).read_text()
    header = csv.splitlines()[0].split(",")
    for key in ("train/loss/sds", "train/weight/sds", "train/sds/timestep", "train/sds/grad_norm"):
        assert key in header, key


def test_fit_with_sds_but_no_weights_stops_before_the_first_step(
    run_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(MissingWeightsError, match="does not exist"):
        main([*_fit_args(run_dir, tmp_path / "missing"), "--debug"])
    assert not (run_dir / "checkpoints").exists() or not any((run_dir / "checkpoints").iterdir())


def test_weights_missing_parameters_are_refused_not_filled_with_noise(
    zero123_dir: Path, tmp_path: Path
) -> None:
    from safetensors.torch import load_file, save_file

    broken = shutil.copytree(zero123_dir, tmp_path / "broken")
    weights = broken / "unet" / "diffusion_pytorch_model.safetensors"
    state = load_file(str(weights))
    state.pop(next(k for k in state if k.startswith("conv_in")))
    save_file(state, str(weights))
    named = r"unet/diffusion_pytorch_model\.safetensors: .*missing \['conv_in"
    with pytest.raises(BadWeightsError, match=named):
        Zero123Guidance.from_pretrained(SDSConfig(path=str(broken)))


def test_without_a_path_the_directory_is_found_in_the_weights_dir(
    no_weights: Path, zero123_dir: Path
) -> None:
    shutil.copytree(zero123_dir, no_weights / "weights" / "zero123-xl-diffusers")
    assert check_zero123_dir(None) == no_weights / "weights" / "zero123-xl-diffusers"
