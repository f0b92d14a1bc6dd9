"""Spec of the dynamic NeRF: field, nerfacc volume renderer and density exports (CPU).

The renderer is checked against closed forms on a constant-density box (alpha = 1 - exp(-sigma L),
colour, depth) and against a quadrature written out here; analytic sphere volumes check the
proposal sampler, the surface exports and a short fit of the field alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from plyfile import PlyData

from ds4d_pl.cameras import orbit_cameras
from ds4d_pl.config import FieldConfig
from ds4d_pl.export import density as density_export
from ds4d_pl.export.density import (
    density_mesh,
    density_points,
    export_density,
    mesh_backend,
    points_filename,
)
from ds4d_pl.fields.nerf import (
    GridCondition,
    NeRFConfig,
    NeRFField,
    RadianceVolume,
    activate_density,
)
from ds4d_pl.render.base import GaussianParams, Renderer
from ds4d_pl.render.volume import (
    VolumeRenderer,
    camera_rays,
    ray_box_intersect,
    sample_pdf_edges,
)

BOX = torch.tensor([[-0.4, -0.3, -0.35], [0.4, 0.3, 0.35]])


def small_grid(encoding: str = "hexplane") -> FieldConfig:
    return FieldConfig(
        encoding=encoding,
        plane_resolution=8,
        time_resolution=4,
        multires=[1],
        feature_dim=8,
        hash_levels=4,
        hash_log2_size=12,
        hash_base_resolution=4,
        hash_max_resolution=16,
        hash_backend="torch",
    )


def small_cfg(**kw) -> NeRFConfig:
    kw.setdefault("grid", small_grid())
    kw.setdefault("hidden", 16)
    kw.setdefault("samples_per_ray", 32)
    kw.setdefault("proposal_samples", 32)
    return NeRFConfig(**kw)


def constant_field(sigma: float, rgb: tuple[float, float, float], **cfg_kw) -> NeRFField:
    """A real NeRFField whose heads ignore their input: constant density and colour in BOX."""
    field = NeRFField(small_cfg(**cfg_kw), bounds=BOX)
    with torch.no_grad():
        field.density_head.weight.zero_()
        # exp activation: raw + density_bias = log(sigma).
        field.density_head.bias.fill_(math.log(sigma) - field.density_bias)
        last = field.color_head[-1]
        last.weight.zero_()
        last.bias.copy_(torch.logit(torch.tensor(rgb)))
    return field


@dataclass
class SphereVolume:
    """Analytic radiance volume: a ball of density ``sigma`` with a smooth edge, coloured by
    position (``0.5 + 0.5 x / radius``)."""

    radius: float = 0.3
    sigma: float = 40.0
    edge: float = 0.01
    half: float = 0.5

    @property
    def aabb(self) -> torch.Tensor:
        return torch.tensor([[-self.half] * 3, [self.half] * 3])

    def density(self, x: torch.Tensor) -> torch.Tensor:
        return self.sigma * torch.sigmoid((self.radius - x.norm(dim=-1)) / self.edge)

    def color(self, x: torch.Tensor) -> torch.Tensor:
        return (0.5 + 0.5 * x / self.radius).clamp(0.0, 1.0)

    def query(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.density(x), self.color(x)


def columns(element, *names: str) -> torch.Tensor:
    """``(P, len(names))`` tensor of a PLY element's properties."""
    return torch.from_numpy(np.stack([element[n] for n in names], axis=1))


def slab(origins: torch.Tensor, dirs: torch.Tensor, box: torch.Tensor):
    """Entry/exit of rays through a box, written out per axis (independent of the renderer)."""
    t_in = torch.full(origins.shape[:1], -math.inf)
    t_out = torch.full(origins.shape[:1], math.inf)
    for a in range(3):
        ta = (box[0, a] - origins[:, a]) / dirs[:, a]
        tb = (box[1, a] - origins[:, a]) / dirs[:, a]
        t_in = torch.maximum(t_in, torch.minimum(ta, tb))
        t_out = torch.minimum(t_out, torch.maximum(ta, tb))
    return t_in, t_out


# ---------------------------------------------------------------------- rays


def test_camera_rays_pass_through_their_pixel_centres():
    cams = orbit_cameras([10.0, -20.0], [30.0, 200.0], 12, 9)
    origins, dirs, z_per_t = camera_rays(cams)
    assert origins.shape == dirs.shape == (2 * 9 * 12, 3)
    torch.testing.assert_close(dirs.norm(dim=-1), torch.ones(len(dirs)))
    pts = origins + 1.7 * dirs
    uv, z = cams.project(pts)
    ys, xs = torch.meshgrid(torch.arange(9) + 0.5, torch.arange(12) + 0.5, indexing="ij")
    expect = torch.stack([xs, ys], -1).reshape(-1, 2)
    for c in range(2):
        sl = slice(c * 108, (c + 1) * 108)
        torch.testing.assert_close(uv[c, sl], expect, atol=1e-4, rtol=0)
        # Depth is camera z, which z_per_t converts distances along the ray into.
        torch.testing.assert_close(z[c, sl], 1.7 * z_per_t[sl], atol=1e-5, rtol=0)


def test_ray_box_intersection_matches_hand_written_slabs():
    gen = torch.Generator().manual_seed(0)
    origins = 2.0 * torch.randn(200, 3, generator=gen)
    dirs = torch.nn.functional.normalize(torch.randn(200, 3, generator=gen), dim=-1)
    dirs[:5, 1] = 0.0  # axis-parallel components
    t_in, t_out = ray_box_intersect(origins, dirs, BOX)
    e_in, e_out = slab(origins, dirs, BOX)
    hit = e_out > e_in
    assert torch.equal(t_out > t_in, hit)
    torch.testing.assert_close(t_in[hit], e_in[hit])
    torch.testing.assert_close(t_out[hit], e_out[hit])


# ------------------------------------------------------------------- render


@pytest.mark.parametrize("sampler", ["uniform", "proposal"])
def test_constant_density_box_matches_closed_form(sampler):
    sigma, color, bg = 3.0, (0.9, 0.2, 0.4), torch.tensor([0.1, 0.5, 1.0])
    field = constant_field(sigma, color, sampler=sampler, samples_per_ray=48)
    renderer = VolumeRenderer(field.cfg).eval()
    cams = orbit_cameras([15.0], [25.0], 20, 16, fov_y_deg=40.0)
    out = renderer(field.at(0.4), cams, bg)

    origins, dirs, _ = camera_rays(cams)
    # Camera z per unit distance along each ray, from the camera's own optical axis.
    z_per_t = dirs @ cams.c2w[0, :3, 2]
    t_in, t_out = slab(origins, dirs, BOX)
    hit = (t_out > t_in).reshape(1, 16, 20, 1)
    assert 0 < int(hit.sum()) < hit.numel()  # the image shows the box and the background
    length = (t_out - t_in).clamp_min(0.0)
    alpha = (1.0 - torch.exp(-sigma * length)).reshape(1, 16, 20, 1)
    torch.testing.assert_close(out.alpha, alpha, atol=2e-5, rtol=0)
    rgb = torch.tensor(color) * alpha + bg * (1.0 - alpha)
    torch.testing.assert_close(out.rgb, rgb, atol=2e-5, rtol=0)
    # Expected distance under a truncated exponential, converted to camera z.
    L = length.clamp_min(1e-6)
    e = torch.exp(-sigma * L)
    t_mean = t_in + 1.0 / sigma - L * e / (1.0 - e)
    depth = torch.where(hit, (t_mean * z_per_t).reshape(1, 16, 20, 1), 0.0)
    # Loose enough for the grazing rays' few-sample quadrature, tight against a wrong convention
    # (distance instead of z differs by up to ~5% here, i.e. ~0.1).
    torch.testing.assert_close(out.depth, depth, atol=5e-3, rtol=0)
    assert out.means2d.shape == (1, 0, 2) and out.radii.shape == (1, 0)


def test_uniform_render_equals_hand_written_quadrature():
    sigma = 2.5
    field = constant_field(sigma, (0.3, 0.6, 0.9), samples_per_ray=16)
    n = 16
    renderer = VolumeRenderer(field.cfg).eval()
    cams = orbit_cameras([5.0], [-40.0], 10, 10, fov_y_deg=35.0)
    out = renderer(field.at(0.0), cams, torch.zeros(3))
    origins, dirs, _ = camera_rays(cams)
    z_per_t = dirs @ cams.c2w[0, :3, 2]
    t_in, t_out = slab(origins, dirs, BOX)
    t_in = t_in.clamp_min(field.cfg.near)
    hit = t_out > t_in
    delta = torch.where(hit, (t_out - t_in) / n, 0.0)[:, None].expand(-1, n)
    mids = t_in[:, None] + delta * (torch.arange(n) + 0.5)
    # T_i = exp(-sum_{j<i} sigma delta_j), w_i = T_i (1 - exp(-sigma delta_i)).
    trans = torch.exp(-sigma * (torch.cumsum(delta, 1) - delta))
    w = trans * (1.0 - torch.exp(-sigma * delta))
    alpha = w.sum(1)
    depth = torch.where(alpha > 1e-6, (w * mids).sum(1) * z_per_t / alpha.clamp_min(1e-12), 0.0)
    torch.testing.assert_close(out.alpha.reshape(-1), alpha, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.depth.reshape(-1), depth, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("sampler", ["uniform", "proposal"])
def test_empty_field_renders_background_with_zero_alpha(sampler):
    field = NeRFField(small_cfg(sampler=sampler, density_bias=-1e4), bounds=BOX)
    renderer = VolumeRenderer(field.cfg)  # training mode: jitter on, still nothing there
    bg = torch.tensor([0.2, 0.7, 0.3])
    out = renderer(field.at(0.5), orbit_cameras([0.0], [0.0], 12, 12), bg)
    assert torch.equal(out.alpha, torch.zeros(1, 12, 12, 1))
    torch.testing.assert_close(out.rgb, bg.expand(1, 12, 12, 3))
    assert torch.equal(out.depth, torch.zeros(1, 12, 12, 1))


def test_render_composites_like_the_gaussian_renderers():
    """``rgb_on`` re-composites a render over another background exactly."""
    field = NeRFField(small_cfg(stratified=False), bounds=BOX)
    renderer = VolumeRenderer(field.cfg).eval()
    assert isinstance(renderer, Renderer)
    cams = orbit_cameras([0.0, 20.0], [0.0, 90.0], 10, 8)
    black, white = torch.zeros(3), torch.ones(3)
    on_black = renderer(field.at(0.2), cams, black)
    on_white = renderer(field.at(0.2), cams, white)
    assert on_black.rgb.shape == (2, 8, 10, 3) and on_black.alpha.shape == (2, 8, 10, 1)
    assert 0.0 < float(on_black.alpha.detach().max()) < 1.0
    torch.testing.assert_close(on_black.rgb_on(white, black), on_white.rgb, atol=1e-6, rtol=0)


@pytest.mark.parametrize("cond_resolution", [None, 6], ids=["per_sample", "grid"])
@pytest.mark.parametrize("encoding", ["hexplane", "hashgrid"])
def test_gradients_reach_field_parameters_and_conditioning(encoding, cond_resolution):
    cfg = small_cfg(grid=small_grid(encoding), cond_resolution=cond_resolution)
    field = NeRFField(cfg, cond_dim=4, bounds=BOX)
    w = torch.randn(3, 4, requires_grad=True)

    def cond(x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x @ w)

    renderer = VolumeRenderer(field.cfg)
    out = renderer(field.at(0.7, cond), orbit_cameras([10.0], [30.0], 12, 12), torch.ones(3))
    (out.rgb.mean() + out.alpha.mean() + 0.1 * out.depth.mean()).backward()
    for name, p in field.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"no gradient reached {name}"
    assert w.grad is not None and w.grad.abs().sum() > 0


@pytest.mark.parametrize("sampler", ["uniform", "proposal"])
def test_chunked_render_equals_unchunked(sampler):
    torch.manual_seed(0)
    base = NeRFField(small_cfg(sampler=sampler, ray_chunk=100_000), bounds=BOX)
    cams = orbit_cameras([0.0, 30.0], [10.0, 130.0], 11, 9)
    results = []
    for chunk, ckpt in ((100_000, False), (37, False), (37, True)):
        field = NeRFField(small_cfg(sampler=sampler, ray_chunk=chunk, checkpoint_chunks=ckpt))
        field.load_state_dict(base.state_dict())
        out = VolumeRenderer(field.cfg).eval()(field.at(0.3), cams, torch.ones(3))
        (out.rgb.square().mean() + out.alpha.mean() + out.depth.mean()).backward()
        grads = [p.grad.clone() for p in field.parameters()]
        results.append((out, grads))
    ref, ref_grads = results[0]
    for out, grads in results[1:]:
        for key in ("rgb", "alpha", "depth"):
            torch.testing.assert_close(getattr(out, key), getattr(ref, key), atol=1e-6, rtol=1e-5)
        for g, r in zip(grads, ref_grads, strict=True):
            torch.testing.assert_close(g, r, atol=1e-6, rtol=1e-4)


def test_proposal_sampler_concentrates_samples_near_the_surface():
    volume = SphereVolume(radius=0.3, sigma=60.0, edge=0.005)
    cams = orbit_cameras([0.0], [0.0], 16, 16, fov_y_deg=12.0)  # every ray hits the ball
    origins, dirs, _ = camera_rays(cams)
    # Distance to the ball's front surface along every ray.
    b = (origins * dirs).sum(-1)
    surface = -b - (b * b - (origins.square().sum(-1) - 0.3**2)).sqrt()
    assert torch.isfinite(surface).all()
    fractions = {}
    for sampler in ("uniform", "proposal"):
        cfg = small_cfg(sampler=sampler, samples_per_ray=16, proposal_samples=64)
        renderer = VolumeRenderer(cfg).eval()
        t_in, t_out, hit = renderer.ray_bounds(volume, origins, dirs)
        assert hit.all()
        t0, t1, ts = renderer.sample_intervals(volume, origins, dirs, t_in, t_out)
        # The intervals tile [t_in, t_out] and each sample lies in its interval.
        torch.testing.assert_close(t0[:, 0], t_in)
        torch.testing.assert_close(t1[:, -1], t_out)
        torch.testing.assert_close(t0[:, 1:], t1[:, :-1])
        assert ((ts >= t0) & (ts <= t1)).all()
        near = (ts - surface[:, None]).abs() < 0.05
        fractions[sampler] = float(near.float().mean())
    # Uniform: 0.1 of a ~1.0-long segment; the proposal puts most samples at the surface.
    assert fractions["uniform"] < 0.15
    assert fractions["proposal"] > 0.5, fractions


def test_sample_pdf_edges_follow_the_weights():
    edges = torch.linspace(0.0, 4.0, 5).expand(2, 5).contiguous()
    weights = torch.tensor([[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    out = sample_pdf_edges(edges, weights, 4, uniform_mix=0.0)
    # All mass in [1, 2]: the interior edges split it into equal quarters.
    torch.testing.assert_close(out[0], torch.tensor([0.0, 1.25, 1.5, 1.75, 4.0]))
    # No weight at all: uniform intervals.
    torch.testing.assert_close(out[1], torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0]))


# -------------------------------------------------------------------- field


def test_field_shapes_widths_and_parameter_groups():
    field = NeRFField(small_cfg(), cond_dim=5, bounds=BOX)
    assert field.out_dim == 8 and field.cond_dim == 5
    x = torch.rand(7, 3) - 0.5
    sigma, rgb = field(x, 0.5, torch.randn(7, 5))
    assert sigma.shape == (7,) and rgb.shape == (7, 3)
    assert (sigma >= 0).all() and ((rgb >= 0) & (rgb <= 1)).all()
    assert field.density(x, torch.full((7,), 0.5), torch.zeros(7, 5)).shape == (7,)
    enc = {id(p) for p in field.encoding_parameters()}
    mlp = {id(p) for p in field.mlp_parameters()}
    assert enc and mlp and not enc & mlp
    assert enc | mlp == {id(p) for p in field.parameters()}
    assert set(field.regularizers()) == {"plane_tv", "time_smooth", "time_l1"}
    hashed = NeRFField(small_cfg(grid=small_grid("hashgrid")), bounds=BOX)
    assert hashed.regularizers() == {}


@pytest.mark.parametrize("activation", ["exp", "softplus", "relu"])
def test_density_activations_are_non_negative_and_finite(activation):
    raw = torch.tensor([-1e4, -3.0, 0.0, 3.0, 50.0, 1e4], requires_grad=True)
    sigma = activate_density(raw, activation)
    assert (sigma >= 0).all() and torch.isfinite(sigma).all()
    sigma.sum().backward()
    assert torch.isfinite(raw.grad).all()
    if activation == "exp":
        # Clamped in value, but an overshoot still gets a (finite) gradient to come back down.
        assert raw.grad[-1] > 0


def test_bounds_are_required_and_survive_a_checkpoint():
    field = NeRFField(small_cfg())
    assert not field.ready
    renderer = VolumeRenderer(field.cfg)
    with pytest.raises(RuntimeError, match="set_bounds"):
        renderer(field.at(0.0), orbit_cameras([0.0], [0.0], 4, 4), torch.ones(3))
    with pytest.raises(RuntimeError, match="set_bounds"):
        density_points(field.at(0.0), resolution=4)
    field.set_bounds(torch.rand(50, 3))
    assert field.ready
    restored = NeRFField(small_cfg())
    restored.load_state_dict(field.state_dict())
    assert restored.ready
    torch.testing.assert_close(restored.aabb, field.aabb)
    assert NeRFField(small_cfg(aabb=[-1, -1, -1, 1, 1, 1])).ready


def test_bad_inputs_raise_clear_errors():
    field = NeRFField(small_cfg(), cond_dim=3, bounds=BOX)
    with pytest.raises(ValueError, match="cond_dim=3"):
        field.at(0.1)
    with pytest.raises(ValueError, match=r"\(N=4, cond_dim=3\)"):
        field(torch.zeros(4, 3), 0.1, torch.zeros(4, 2))
    with pytest.raises(ValueError, match="one instant"):
        field.at(torch.tensor([0.1, 0.2]), lambda x: torch.zeros(len(x), 3))
    plain = NeRFField(small_cfg(), bounds=BOX)
    with pytest.raises(ValueError, match="cond_dim=0"):
        plain(torch.zeros(4, 3), 0.1, torch.zeros(4, 3))
    renderer = VolumeRenderer(plain.cfg)
    cams = orbit_cameras([0.0], [0.0], 4, 4)
    with pytest.raises(ValueError, match=r"background must have shape \(3,\)"):
        renderer(plain.at(0.0), cams, torch.ones(4))
    gaussians = GaussianParams(
        torch.zeros(1, 3), torch.ones(1, 4), torch.ones(1, 3), torch.ones(1), torch.zeros(1, 1, 3)
    )
    with pytest.raises(TypeError, match="NeRFField.at"):
        renderer(gaussians, cams, torch.ones(3))


def test_grid_condition_is_exact_on_affine_features_and_clamps_to_the_box():
    calls = []
    a = torch.tensor([[1.0, -2.0], [0.5, 0.0], [-1.0, 3.0]])

    def affine(x: torch.Tensor) -> torch.Tensor:
        calls.append(len(x))
        return x @ a + torch.tensor([0.25, -1.0])

    grid = GridCondition(affine, BOX, 5)
    assert calls == [125] and grid.out_dim == 2
    inside = BOX[0] + torch.rand(300, 3) * (BOX[1] - BOX[0])
    # Trilinear interpolation reproduces an affine function anywhere in the box.
    torch.testing.assert_close(grid(inside), affine(inside), atol=1e-5, rtol=0)
    outside = torch.tensor([[5.0, 0.0, 0.0], [-5.0, -5.0, 5.0]])
    torch.testing.assert_close(
        grid(outside), affine(outside.clamp(BOX[0], BOX[1])), atol=1e-5, rtol=0
    )
    assert calls == [125, 300, 2], "interpolation must not call the conditioner again"
    with pytest.raises(ValueError, match="resolution must be >= 2"):
        GridCondition(affine, BOX, 1)
    with pytest.raises(ValueError, match=r"\(N, D\) features"):
        GridCondition(lambda x: x.sum(-1), BOX, 3)


def test_grid_conditioning_runs_the_conditioner_once_per_instant():
    calls = []

    def cond(x: torch.Tensor) -> torch.Tensor:
        calls.append(len(x))
        return torch.sin(3.0 * x[:, :2])

    field = NeRFField(small_cfg(cond_resolution=4, sampler="proposal"), cond_dim=2, bounds=BOX)
    renderer = VolumeRenderer(field.cfg)
    renderer(field.at(0.3, cond), orbit_cameras([0.0, 20.0], [0.0, 90.0], 9, 7), torch.ones(3))
    # One grid of 4^3 vertices, whatever the number of rays, samples and proposal passes.
    assert calls == [64]
    exact = NeRFField(small_cfg(cond_resolution=None), cond_dim=2, bounds=BOX)
    calls.clear()
    VolumeRenderer(exact.cfg)(exact.at(0.3, cond), orbit_cameras([0.0], [0.0], 4, 4), torch.ones(3))
    assert calls and all(n % exact.cfg.samples_per_ray == 0 for n in calls)


def test_stratified_jitter_follows_the_renderer_generator():
    field = NeRFField(small_cfg(sampler="proposal"), bounds=BOX)
    renderer = VolumeRenderer(field.cfg)  # training mode: jittered
    cams = orbit_cameras([10.0], [30.0], 8, 8)

    def render(seed: int | None) -> torch.Tensor:
        renderer.generator = None if seed is None else torch.Generator().manual_seed(seed)
        with torch.no_grad():
            return renderer(field.at(0.2), cams, torch.ones(3)).rgb

    torch.testing.assert_close(render(3), render(3), atol=0, rtol=0)
    assert not torch.equal(render(3), render(4))
    torch.manual_seed(0)
    global_stream = render(None)
    torch.manual_seed(0)
    torch.testing.assert_close(render(None), global_stream, atol=0, rtol=0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sampler": "importance"}, "sampler"),
        ({"density_activation": "sigmoid"}, "density_activation"),
        ({"samples_per_ray": 0}, "samples_per_ray"),
        ({"near": 2.0, "far": 1.0}, "near < far"),
        ({"aabb": [0, 0, 0, 1, 1]}, "aabb"),
        ({"aabb": [0, 0, 0, 1, -1, 1]}, "aabb"),
        ({"proposal_uniform": 1.5}, "proposal_uniform"),
        ({"sphere_radius": 0.0}, "sphere_radius"),
        ({"cond_resolution": 1}, "cond_resolution"),
        ({"bounds_margin": -0.1}, "bounds_margin"),
        ({"grid": FieldConfig(deform_color=True)}, "deform_opacity / deform_color"),
    ],
)
def test_config_rejects_nonsense(kwargs, match):
    with pytest.raises(ValueError, match=match):
        NeRFConfig(**kwargs)


def test_config_accepts_a_plain_mapping_for_the_grid():
    cfg = NeRFConfig(grid={"encoding": "hashgrid", "hash_levels": 3})
    assert isinstance(cfg.grid, FieldConfig) and cfg.grid.hash_levels == 3


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU error")
def test_occupancy_sampler_needs_cuda():
    with pytest.raises(RuntimeError, match="CUDA"):
        VolumeRenderer(small_cfg(sampler="occupancy", aabb=[-1, -1, -1, 1, 1, 1]))


def test_sphere_restricts_sampling_inside_the_box():
    field = constant_field(4.0, (1.0, 1.0, 1.0), sphere_radius=0.2)
    renderer = VolumeRenderer(field.cfg).eval()
    cams = orbit_cameras([0.0], [0.0], 16, 16, fov_y_deg=30.0)
    out = renderer(field.at(0.0), cams, torch.zeros(3))
    origins, dirs, _ = camera_rays(cams)
    b = (origins * dirs).sum(-1)
    disc = b * b - (origins.square().sum(-1) - 0.2**2)
    chord = 2.0 * disc.clamp_min(0.0).sqrt()  # the ball lies inside BOX
    expect = (1.0 - torch.exp(-4.0 * chord)).reshape(1, 16, 16, 1)
    torch.testing.assert_close(out.alpha, expect, atol=2e-5, rtol=0)


# ------------------------------------------------------------------- export


def test_density_points_lie_on_the_sphere_and_round_trip_through_ply(tmp_path):
    volume = SphereVolume(radius=0.3, sigma=40.0, edge=0.02)
    assert isinstance(volume, RadianceVolume)
    points, colors = density_points(volume, level=20.0, resolution=48)  # level = sigma / 2
    assert len(points) > 1000
    radii = points.norm(dim=-1)
    assert float((radii - 0.3).abs().max()) < 2e-3
    # The cloud covers the whole sphere, not a patch of it.
    for a in range(3):
        assert float(points[:, a].min()) < -0.28 and float(points[:, a].max()) > 0.28
    path = export_density(volume, tmp_path, 7, level=20.0, resolution=48, kind="points")
    assert path.name == points_filename(7) == "density_points_0007.ply"
    vertex = PlyData.read(str(path))["vertex"]
    assert [p.name for p in vertex.properties] == ["x", "y", "z", "red", "green", "blue"]
    xyz = columns(vertex, "x", "y", "z")
    torch.testing.assert_close(xyz, points)
    rgb = columns(vertex, "red", "green", "blue").float() / 255.0
    torch.testing.assert_close(rgb, volume.color(points), atol=1 / 255 + 1e-6, rtol=0)


def test_density_points_without_a_level_crossing_write_an_empty_cloud(tmp_path):
    field = constant_field(5.0, (0.2, 0.4, 0.6))
    # Constant density everywhere inside the box: no crossing, an empty (but valid) file.
    points, colors = density_points(field.at(0.5), level=1.0, resolution=8)
    assert points.shape == (0, 3) and colors.shape == (0, 3)
    path = export_density(field.at(0.5), tmp_path, 0, level=1.0, resolution=8, kind="points")
    assert len(PlyData.read(str(path))["vertex"]) == 0


def test_auto_export_falls_back_to_points_without_marching_cubes(tmp_path, monkeypatch):
    monkeypatch.setattr(density_export, "mesh_backend", lambda: None)
    path = export_density(SphereVolume(), tmp_path, 3, level=20.0, resolution=16)
    assert path.name == "density_points_0003.ply"
    with pytest.raises(ImportError, match="scikit-image"):
        density_mesh(SphereVolume(), level=20.0, resolution=16)


@pytest.mark.skipif(mesh_backend() is None, reason="needs scikit-image or PyMCubes (optional)")
def test_marching_cubes_mesh_lies_on_the_sphere(tmp_path):
    volume = SphereVolume(radius=0.3, sigma=40.0, edge=0.02)
    path = export_density(volume, tmp_path, 2, level=20.0, resolution=40, kind="mesh")
    assert path.name == "density_mesh_0002.ply"
    ply = PlyData.read(str(path))
    xyz = columns(ply["vertex"], "x", "y", "z")
    assert len(xyz) > 500
    assert float((xyz.norm(dim=-1) - 0.3).abs().max()) < 3e-3
    faces = torch.tensor(list(ply["face"]["vertex_indices"]))
    assert faces.shape[1] == 3 and int(faces.max()) < len(xyz)


# ---------------------------------------------------------------------- fit


def fit(field, renderer, cams, gt, bg, steps: int) -> list[float]:
    """Adam on the field alone, one camera per step, photometric + alpha MSE; the losses."""
    optim = torch.optim.Adam(
        [
            {"params": list(field.encoding_parameters()), "lr": 3e-2},
            {"params": list(field.mlp_parameters()), "lr": 1e-2},
        ]
    )
    losses = []
    for step in range(steps):
        i = step % len(cams)
        out = renderer(field.at(0.5), cams[i], bg)
        loss = (out.rgb - gt.rgb[i : i + 1]).square().mean()
        loss = loss + (out.alpha - gt.alpha[i : i + 1]).square().mean()
        optim.zero_grad()
        loss.backward()
        optim.step()
        losses.append(float(loss.detach()))
    return losses


def test_field_fits_renders_of_a_coloured_sphere():
    """A few hundred CPU steps of the field alone reduce the photometric loss clearly."""
    torch.manual_seed(0)
    target = SphereVolume(radius=0.3, sigma=30.0, edge=0.02)
    cfg = small_cfg(
        grid=FieldConfig(plane_resolution=16, time_resolution=2, multires=[1], feature_dim=8),
        hidden=32,
        samples_per_ray=24,
        aabb=[-0.5, -0.5, -0.5, 0.5, 0.5, 0.5],
    )
    cams = orbit_cameras([0.0, 30.0, -20.0, 10.0], [0.0, 100.0, 200.0, 290.0], 32, 32)
    bg = torch.ones(3)
    renderer = VolumeRenderer(cfg)
    with torch.no_grad():
        gt = renderer.eval()(target, cams, bg)
    renderer.train()  # stratified samples, as in training
    field = NeRFField(cfg)
    # Tiny tensors: one thread is faster, and far faster on a shared, oversubscribed CPU.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        losses = fit(field, renderer, cams, gt, bg, steps=200)
    finally:
        torch.set_num_threads(threads)
    first = sum(losses[:8]) / 8
    last = sum(losses[-8:]) / 8
    assert math.isfinite(last)
    # Observed: ~0.08 -> ~5e-4; a field that does not learn stays near its first value.
    assert last < 0.05 * first, (first, last)
