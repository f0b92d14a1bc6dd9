"""Spec of the rasterisers: projection, compositing, gradients and degenerate inputs.

The CPU reference (``torch``) is checked against gsplat's pure-PyTorch projection, against a
dense brute-force compositor written here (every Gaussian at every pixel, no binning), and against
finite differences.
"""

from __future__ import annotations

import math

import pytest
import torch

from ds4d_pl.cameras import Cameras, look_at, orbit_cameras
from ds4d_pl.render import RENDERERS, build_renderer
from ds4d_pl.render.base import GaussianParams, Renderer, eval_sh, rgb_to_sh0
from ds4d_pl.render.torch_raster import TorchRasterizer, project_gaussians


def random_gaussians(
    n: int,
    seed: int = 0,
    sh_degree: int = 1,
    radius: float = 0.5,
    scale: tuple[float, float] = (0.02, 0.08),
    opacity: tuple[float, float] = (0.2, 0.95),
    dtype: torch.dtype = torch.float32,
) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    k = (sh_degree + 1) ** 2
    sh = 0.2 * torch.randn(n, k, 3, generator=gen)
    sh[:, 0] = rgb_to_sh0(0.2 + 0.6 * torch.rand(n, 3, generator=gen))
    lo, hi = scale
    olo, ohi = opacity
    params = {
        "means": radius * (2 * torch.rand(n, 3, generator=gen) - 1),
        "quats": torch.randn(n, 4, generator=gen),
        "scales": lo + (hi - lo) * torch.rand(n, 3, generator=gen),
        "opacities": olo + (ohi - olo) * torch.rand(n, generator=gen),
        "sh": sh,
    }
    return {name: t.to(dtype).requires_grad_(True) for name, t in params.items()}


def jittered_cameras(c: int, width: int, height: int, seed: int = 0) -> Cameras:
    """Cameras around the origin with random poses, off-centre principal points, fx != fy."""
    gen = torch.Generator().manual_seed(seed)
    eye = torch.nn.functional.normalize(torch.randn(c, 3, generator=gen), dim=-1)
    eye = eye * (1.6 + 0.8 * torch.rand(c, 1, generator=gen))
    target = 0.1 * torch.randn(c, 3, generator=gen)
    c2w = torch.stack([look_at(eye[i : i + 1], target[i])[0] for i in range(c)])
    K = torch.zeros(c, 3, 3)
    K[:, 0, 0] = width * (0.9 + 0.4 * torch.rand(c, generator=gen))
    K[:, 1, 1] = width * (0.9 + 0.4 * torch.rand(c, generator=gen))
    K[:, 0, 2] = width * (0.4 + 0.2 * torch.rand(c, generator=gen))
    K[:, 1, 2] = height * (0.4 + 0.2 * torch.rand(c, generator=gen))
    K[:, 2, 2] = 1.0
    return Cameras(c2w, K, width, height)


def brute_force_render(
    renderer: TorchRasterizer, g: GaussianParams, cams: Cameras, background: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every Gaussian evaluated at every pixel, depth-sorted per pixel, composited densely.

    Implements the contract directly: alpha = min(o exp(-power), max_alpha), ignored below
    alpha_threshold, and a pixel stops at the Gaussian after which its transmittance would fall
    below min_transmittance (that Gaussian excluded).
    """
    proj = renderer.project(g, cams)
    c, n = proj.depths.shape
    h, w = cams.height, cams.width
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    pix = torch.stack([xs, ys], -1).reshape(-1, 2).to(g.means) + 0.5  # (P, 2)
    d = pix[None, :, None, :] - proj.means2d[:, None, :, :]  # (C, P, N, 2)
    a, b, cc = proj.conics.unbind(-1)
    power = 0.5 * (a[:, None] * d[..., 0] ** 2 + cc[:, None] * d[..., 1] ** 2)
    power = power + b[:, None] * d[..., 0] * d[..., 1]
    alpha = (g.opacities * torch.exp(-power)).clamp_max(renderer.max_alpha)
    alpha = torch.where(alpha >= renderer.alpha_threshold, alpha, 0.0)
    alpha = alpha * proj.valid[:, None, :]
    dirs = torch.nn.functional.normalize(g.means[None] - cams.centers.to(g.means)[:, None], dim=-1)
    colors = eval_sh(g.sh[None].expand(c, -1, -1, -1), dirs)  # (C, N, 3)
    order = torch.argsort(torch.where(proj.valid, proj.depths, math.inf).detach(), dim=1)
    alpha = torch.gather(alpha, 2, order[:, None, :].expand(-1, h * w, -1))
    colors = torch.gather(colors, 1, order[..., None].expand(-1, -1, 3))
    depths = torch.gather(proj.depths, 1, order)
    t_incl = torch.cumprod(1.0 - alpha, dim=-1)
    t_excl = torch.cat([torch.ones_like(t_incl[..., :1]), t_incl[..., :-1]], dim=-1)
    active = t_incl >= renderer.min_transmittance
    weights = alpha * t_excl * active
    acc = weights.sum(-1)[..., None]
    rgb = torch.einsum("cpn,cnk->cpk", weights, colors) + (1 - acc) * background
    dsum = torch.einsum("cpn,cn->cp", weights, depths)[..., None]
    depth = torch.where(acc > 1e-6, dsum / acc.clamp_min(1e-6), 0.0)
    return (
        rgb.reshape(c, h, w, 3),
        acc.reshape(c, h, w, 1),
        depth.reshape(c, h, w, 1),
    )


# --------------------------------------------------------------------------------- projection


def test_projection_matches_gsplat_torch_reference() -> None:
    from gsplat.cuda._torch_impl import _fully_fused_projection, _quat_scale_to_covar_preci

    p = random_gaussians(300, seed=1, radius=0.8, dtype=torch.float64)
    cams = jittered_cameras(3, 64, 48, seed=2)
    with torch.no_grad():  # a few behind camera 0, a few between it and its near plane
        fwd = cams.c2w[0, :3, 2].double()
        p["means"][:10] = cams.centers[0].double() - 0.3 * fwd + 0.05 * p["means"][:10]
        p["means"][10:13] = cams.centers[0].double() + 0.005 * fwd
    viewmats = cams.viewmats.double()
    Ks = cams.K.double()
    ours = project_gaussians(p["means"], p["quats"], p["scales"], viewmats, Ks, 64, 48)
    covars, _ = _quat_scale_to_covar_preci(p["quats"], p["scales"], compute_preci=False)
    radii, means2d, depths, conics, _ = _fully_fused_projection(
        p["means"], covars, viewmats, Ks, 64, 48, eps2d=0.3, near_plane=0.01
    )
    ref_valid = (radii > 0).all(-1)
    assert ref_valid.sum() > 700, "scene should be mostly visible"
    # Same depth/near culling; at the image border gsplat's ceil()-ed box is a bit looser.
    on_screen = (
        (means2d[..., 0] >= 0)
        & (means2d[..., 0] < 64)
        & (means2d[..., 1] >= 0)
        & (means2d[..., 1] < 48)
    )
    assert torch.equal(ours.valid[on_screen], ref_valid[on_screen])
    assert not (ours.valid & ~ref_valid).any()
    assert (~ref_valid & on_screen).any(), "some Gaussians should sit behind a camera"
    assert torch.equal(ours.radii > 0, ours.valid)
    v = ref_valid & ours.valid
    torch.testing.assert_close(ours.means2d[v], means2d[v], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(ours.depths[v], depths[v], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(ours.conics[v], conics[v], rtol=1e-7, atol=1e-9)
    # Our radius is 3DGS's ceil(3 sigma_max), sigma_max² the largest eigenvalue of gsplat's
    # (dilated) 2D covariance, i.e. of the inverse of its conic.
    a, b, c = conics[v].unbind(-1)
    cov2d = torch.linalg.inv(torch.stack([a, b, b, c], -1).reshape(-1, 2, 2))
    sigma_max = torch.linalg.eigvalsh(cov2d)[:, -1].sqrt()
    assert torch.equal(ours.radii[v], torch.ceil(3 * sigma_max).int())
    assert (ours.radii[v] >= 2).all()  # eps2d alone gives sigma >= sqrt(0.3)


def test_projection_culls_near_plane_and_offscreen() -> None:
    cams = orbit_cameras([0.0], [0.0], 32, 32)  # at z = +2 looking at the origin
    means = torch.tensor(
        [[0.0, 0.0, 0.0], [0.0, 0.0, 2.5], [0.0, 0.0, 1.995], [5.0, 0.0, 0.0], [0.0, 0.0, -1.0]]
    )
    n = len(means)
    proj = project_gaussians(
        means,
        torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1),
        torch.full((n, 3), 0.02),
        cams.viewmats,
        cams.K,
        32,
        32,
        opacities=torch.tensor([0.9, 0.9, 0.9, 0.9, 0.001]),
    )
    # visible, behind the camera, in front of the near plane, off-screen, too transparent
    assert proj.valid[0].tolist() == [True, False, False, False, False]
    assert proj.radii[0, 0] > 0 and (proj.radii[0, 1:] == 0).all()
    assert torch.isfinite(proj.means2d).all() and torch.isfinite(proj.conics).all()


# --------------------------------------------------------------------------------- compositing


@pytest.mark.parametrize(("chunk_pairs", "camera_chunk"), [(1 << 18, None), (2000, 1)])
def test_render_matches_brute_force(chunk_pairs: int, camera_chunk: int | None) -> None:
    """Binning, depth chunks, sorting and early stop change nothing against dense compositing."""
    renderer = TorchRasterizer(chunk_pairs=chunk_pairs, camera_chunk=camera_chunk)
    p = random_gaussians(250, seed=3, sh_degree=2, scale=(0.02, 0.12), opacity=(0.5, 0.99))
    g = GaussianParams(**p)
    cams = jittered_cameras(2, 40, 32, seed=4)
    bg = torch.tensor([0.2, 0.5, 0.9])
    out = renderer(g, cams, bg)
    rgb, alpha, depth = brute_force_render(renderer, g, cams, bg)
    torch.testing.assert_close(out.rgb, rgb, rtol=0, atol=1e-4)
    torch.testing.assert_close(out.alpha, alpha, rtol=0, atol=1e-4)
    torch.testing.assert_close(out.depth, depth, rtol=0, atol=1e-3)
    assert out.rgb.shape == (2, 32, 40, 3) and out.radii.dtype == torch.int32
    assert (alpha > 0.99).any(), "scene should saturate some pixels (exercises early stop)"


def test_early_stop_off_matches_brute_force() -> None:
    renderer = TorchRasterizer(min_transmittance=0.0, chunk_pairs=500)
    g = GaussianParams(**random_gaussians(120, seed=5, sh_degree=0, opacity=(0.6, 0.99)))
    cams = jittered_cameras(1, 24, 24, seed=6)
    bg = torch.ones(3)
    out = renderer(g, cams, bg)
    rgb, alpha, _ = brute_force_render(renderer, g, cams, bg)
    torch.testing.assert_close(out.rgb, rgb, rtol=0, atol=1e-4)
    torch.testing.assert_close(out.alpha, alpha, rtol=0, atol=1e-4)


def test_single_gaussian_lands_where_camera_projects_its_mean() -> None:
    cams = orbit_cameras([20.0], [35.0], 48, 40)
    mean = torch.tensor([[0.13, -0.07, 0.05]])
    g = GaussianParams(
        means=mean,
        quats=torch.tensor([[1.0, 0.0, 0.0, 0.0]]),
        scales=torch.full((1, 3), 0.01),
        opacities=torch.tensor([0.9]),
        sh=rgb_to_sh0(torch.tensor([[[1.0, 0.5, 0.25]]])),
    )
    out = TorchRasterizer()(g, cams, torch.zeros(3))
    uv, z = cams.project(mean)
    peak = int(out.alpha[0, ..., 0].argmax())
    assert (peak % 48, peak // 48) == (int(uv[0, 0, 0]), int(uv[0, 0, 1]))
    torch.testing.assert_close(out.means2d[0, 0], uv[0, 0])
    hit = out.alpha[0, ..., 0] > 0
    torch.testing.assert_close(out.depth[0, ..., 0][hit], z[0, 0].expand(int(hit.sum())))
    assert (out.depth[0, ..., 0][~hit] == 0).all()
    # Colour is the SH colour times alpha over a black background.
    torch.testing.assert_close(
        out.rgb[0].reshape(-1, 3)[peak], torch.tensor([1.0, 0.5, 0.25]) * out.alpha.max()
    )


def test_background_shows_through_where_empty() -> None:
    g = GaussianParams(**random_gaussians(20, seed=7, radius=0.1, scale=(0.01, 0.02)))
    bg = torch.tensor([0.1, 0.7, 0.3])
    out = TorchRasterizer()(g, orbit_cameras([0.0], [0.0], 32, 32), bg)
    empty = out.alpha[0, ..., 0] == 0
    assert empty.any() and (~empty).any()
    torch.testing.assert_close(out.rgb[0][empty], bg.expand(int(empty.sum()), 3))


def test_recompositing_a_render_equals_rendering_on_the_other_background() -> None:
    g = GaussianParams(**random_gaussians(30, seed=7, radius=0.3, scale=(0.02, 0.1)))
    cams = orbit_cameras([0.0], [0.0], 32, 32)
    a, b = torch.tensor([0.1, 0.7, 0.3]), torch.ones(3)
    on_a, on_b = TorchRasterizer()(g, cams, a), TorchRasterizer()(g, cams, b)
    torch.testing.assert_close(on_a.rgb_on(b, a), on_b.rgb)


# --------------------------------------------------------------------------------- gradients


def test_gradients_match_finite_differences() -> None:
    p = random_gaussians(
        4,
        seed=8,
        sh_degree=1,
        radius=0.15,
        scale=(0.05, 0.15),
        opacity=(0.3, 0.8),
        dtype=torch.float64,
    )
    cams = orbit_cameras([10.0, -15.0], [20.0, 120.0], 16, 16)
    cams = Cameras(cams.c2w.double(), cams.K.double(), 16, 16)
    renderer = TorchRasterizer()
    gen = torch.Generator().manual_seed(9)
    w_rgb = torch.rand(2, 16, 16, 3, generator=gen, dtype=torch.float64)
    w_alpha = torch.rand(2, 16, 16, 1, generator=gen, dtype=torch.float64)
    w_depth = torch.rand(2, 16, 16, 1, generator=gen, dtype=torch.float64)
    bg = torch.tensor([0.3, 0.6, 0.9], dtype=torch.float64)
    names = ["means", "quats", "scales", "opacities", "sh"]

    def loss(*tensors: torch.Tensor) -> torch.Tensor:
        out = renderer(GaussianParams(**dict(zip(names, tensors, strict=True))), cams, bg)
        return (out.rgb * w_rgb).sum() + (out.alpha * w_alpha).sum() + (out.depth * w_depth).sum()

    inputs = tuple(p[k] for k in names)
    assert loss(*inputs).item() != 0
    assert torch.autograd.gradcheck(loss, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


def test_means2d_grad_is_populated_and_culled_have_zero_radii() -> None:
    p = random_gaussians(30, seed=10, radius=0.3)
    with torch.no_grad():
        p["means"][:5] = torch.tensor([0.0, 0.0, 3.0])  # behind the camera at z = +2
    g = GaussianParams(**p)
    cams = orbit_cameras([0.0, 0.0], [0.0, 90.0], 32, 32)
    out = TorchRasterizer()(g, cams, torch.ones(3))
    assert out.means2d.shape == (2, 30, 2) and not out.means2d.is_leaf
    out.rgb.square().sum().backward()
    grad = out.means2d.grad
    assert grad is not None and grad.shape == (2, 30, 2)
    assert (out.radii[0, :5] == 0).all()
    assert (grad[0, :5] == 0).all()
    visible = out.radii > 0
    assert visible[0, 5:].all()
    assert (grad.norm(dim=-1)[visible] > 0).float().mean() > 0.9
    assert (grad[~visible] == 0).all()
    for k, t in p.items():
        assert t.grad is not None and torch.isfinite(t.grad).all(), k


def test_no_grad_mode_returns_plain_means2d() -> None:
    g = GaussianParams(**random_gaussians(10, seed=11))
    with torch.no_grad():
        out = TorchRasterizer()(g, orbit_cameras([0.0], [0.0], 16, 16), torch.ones(3))
    assert not out.means2d.requires_grad and out.means2d.grad is None


# --------------------------------------------------------------------------------- degenerate


def _check_finite(out: object, params: dict[str, torch.Tensor]) -> None:
    for name in ("rgb", "alpha", "depth", "means2d"):
        assert torch.isfinite(getattr(out, name)).all(), name
    for name, t in params.items():
        assert t.grad is not None and torch.isfinite(t.grad).all(), name


def test_empty_scene_renders_background() -> None:
    p = random_gaussians(0)
    bg = torch.tensor([0.25, 0.5, 0.75])
    out = TorchRasterizer()(GaussianParams(**p), orbit_cameras([0.0], [0.0], 16, 12), bg)
    assert out.rgb.shape == (1, 12, 16, 3) and out.means2d.shape == (1, 0, 2)
    assert out.radii.shape == (1, 0)
    torch.testing.assert_close(out.rgb, bg.expand(1, 12, 16, 3))
    assert (out.alpha == 0).all() and (out.depth == 0).all()
    (out.rgb.sum() + out.depth.sum()).backward()
    _check_finite(out, p)


def test_all_behind_camera() -> None:
    p = random_gaussians(15, seed=12, radius=0.2)
    with torch.no_grad():
        p["means"] += torch.tensor([0.0, 0.0, 4.0])  # camera sits at z = +2 looking towards -z
    bg = torch.tensor([0.9, 0.1, 0.4])
    out = TorchRasterizer()(GaussianParams(**p), orbit_cameras([0.0], [0.0], 16, 16), bg)
    torch.testing.assert_close(out.rgb, bg.expand(1, 16, 16, 3))
    assert (out.alpha == 0).all() and (out.radii == 0).all()
    (out.rgb.sum() + out.alpha.sum()).backward()
    _check_finite(out, p)
    assert all((t.grad == 0).all() for t in p.values())


def test_degenerate_scales_and_quaternions() -> None:
    p = random_gaussians(12, seed=13, radius=0.3)
    with torch.no_grad():
        p["scales"][:4] = 0.0
        p["scales"][4:6] = 1e-12
        p["quats"][6:9] = 0.0
        p["scales"][9] = torch.tensor([50.0, 1e-9, 0.02])  # huge and flat at once
    out = TorchRasterizer()(GaussianParams(**p), orbit_cameras([0.0], [0.0], 24, 24), torch.ones(3))
    assert (out.radii[0, :9] > 0).all(), "degenerate Gaussians still render as eps2d splats"
    (out.rgb.mean() + out.depth.mean() + out.alpha.mean()).backward()
    _check_finite(out, p)


# --------------------------------------------------------------------------------- factory


def test_build_renderer_selects_backends() -> None:
    auto = build_renderer()
    expected = "gsplat" if torch.cuda.is_available() else "torch"
    assert auto.name == expected and isinstance(auto, Renderer)
    custom = build_renderer("torch", tile_size=8, near=0.1, eps2d=0.1)
    assert isinstance(custom, TorchRasterizer) and custom.near == 0.1
    assert set(RENDERERS) == {"torch", "gsplat"}
    with pytest.raises(ValueError, match="torch"):
        build_renderer("opengl")
    with pytest.raises(TypeError):
        build_renderer("torch", no_such_knob=1)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only error")
def test_build_renderer_gsplat_without_cuda_raises() -> None:
    with pytest.raises(RuntimeError, match="CUDA"):
        build_renderer("gsplat")


def test_constructor_rejects_bad_knobs() -> None:
    with pytest.raises(ValueError):
        TorchRasterizer(alpha_threshold=0.995)
    with pytest.raises(ValueError):
        TorchRasterizer(near=0.0)
    with pytest.raises(ValueError):
        TorchRasterizer(min_transmittance=1.0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gsplat_matches_the_torch_rasterizer_on_cuda() -> None:
    p = random_gaussians(200, seed=14, sh_degree=1)
    g = GaussianParams(**{k: v.detach().cuda().requires_grad_(True) for k, v in p.items()})
    cams = jittered_cameras(2, 48, 40, seed=15).to("cuda")
    bg = torch.tensor([0.1, 0.2, 0.3], device="cuda")
    ours = TorchRasterizer()(g, cams, bg)
    theirs = build_renderer("gsplat")(g, cams, bg)
    assert theirs.means2d.shape == (2, 200, 2) and theirs.radii.shape == (2, 200)
    torch.testing.assert_close(theirs.rgb, ours.rgb, rtol=0, atol=2e-3)
    torch.testing.assert_close(theirs.alpha, ours.alpha, rtol=0, atol=2e-3)
    theirs.rgb.sum().backward()
    assert theirs.means2d.grad is not None
