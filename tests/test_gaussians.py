"""Spec of ds4d_pl.gaussians.canonical: activation, initialisers, file readers, resizing."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from plyfile import PlyData, PlyElement

from ds4d_pl.gaussians.canonical import (
    CanonicalGaussians,
    knn_mean_distance,
    normalize_points,
)
from ds4d_pl.render.base import SH_C0

# Two triangles forming the unit square in the z=0 plane, with distinct vertex colours.
SQUARE_VERTS = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], dtype=np.float32)
SQUARE_COLORS = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]], dtype=np.uint8)


def _write_ply(path: Path, verts: np.ndarray, colors: np.ndarray | None, faces=None) -> None:
    fields = [("x", "f4"), ("y", "f4"), ("z", "f4")]
    if colors is not None:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    v = np.empty(len(verts), dtype=fields)
    v["x"], v["y"], v["z"] = verts[:, 0], verts[:, 1], verts[:, 2]
    if colors is not None:
        v["red"], v["green"], v["blue"] = colors[:, 0], colors[:, 1], colors[:, 2]
    elements = [PlyElement.describe(v, "vertex")]
    if faces is not None:
        f = np.empty(len(faces), dtype=[("vertex_indices", "i4", (len(faces[0]),))])
        f["vertex_indices"] = np.asarray(faces)
        elements.append(PlyElement.describe(f, "face"))
    PlyData(elements).write(str(path))


def _colors_from_dc(g: CanonicalGaussians) -> torch.Tensor:
    return g.sh_dc.detach()[:, 0] * SH_C0 + 0.5


def test_activation_ranges():
    gen = torch.Generator().manual_seed(0)
    g = CanonicalGaussians.random_in_sphere(200, 0.5, sh_degree=1, generator=gen)
    with torch.no_grad():
        g.quats.copy_(torch.randn(g.quats.shape, generator=gen))
        g.log_scales.copy_(torch.randn(g.log_scales.shape, generator=gen))
        # Wide, but inside the range where float32's sigmoid stays strictly inside (0, 1) (it
        # rounds to exactly 1 above a logit of about 16.6, which an unseeded N(0, 25) reached).
        g.logit_opacities.copy_((torch.randn(200, generator=gen) * 5.0).clamp(-15.0, 15.0))
    p = g.activated()
    assert torch.allclose(p.quats.norm(dim=-1), torch.ones(200), atol=1e-5)
    assert (p.scales > 0).all()
    assert ((p.opacities > 0) & (p.opacities < 1)).all()
    assert p.sh.shape == (200, 4, 3)
    assert g.sh_rest.shape == (200, 3, 3) and g.sh_degree == 1


def test_activation_overrides_and_gradient_reach():
    g = CanonicalGaussians.random_in_sphere(10, 0.5)
    deformed = g.means + 1.0
    p = g.activated(means=deformed, log_scales=g.log_scales * 0 + math.log(2.0))
    assert torch.allclose(p.means, g.means.detach() + 1.0)
    assert torch.allclose(p.scales, torch.full((10, 3), 2.0))
    p.means.sum().backward()
    assert g.means.grad is not None


def test_degree_zero_has_empty_rest():
    g = CanonicalGaussians.random_in_sphere(5, 1.0, sh_degree=0)
    assert g.sh_rest.shape == (5, 0, 3)
    assert g.activated().sh.shape == (5, 1, 3)
    assert g.sh_degree == 0


def test_random_in_sphere_inside_radius_and_deterministic():
    a = CanonicalGaussians.random_in_sphere(500, 0.7, generator=torch.Generator().manual_seed(3))
    b = CanonicalGaussians.random_in_sphere(500, 0.7, generator=torch.Generator().manual_seed(3))
    c = CanonicalGaussians.random_in_sphere(500, 0.7, generator=torch.Generator().manual_seed(4))
    assert (a.means.norm(dim=1) <= 0.7 + 1e-6).all()
    # Uniform in volume: about (1/2)^3 of the points lie inside half the radius.
    inner = (a.means.norm(dim=1) < 0.35).float().mean()
    assert 0.05 < inner < 0.25
    for name in CanonicalGaussians.TABLES:
        assert torch.equal(getattr(a, name), getattr(b, name))
    assert not torch.equal(a.means, c.means)
    assert torch.allclose(torch.sigmoid(a.logit_opacities), torch.full((500,), 0.1))
    colors = _colors_from_dc(a)
    assert (colors >= 0).all() and (colors <= 1).all()


def test_random_in_sphere_scale_rule():
    n, r = 1000, 1.0
    g = CanonicalGaussians.random_in_sphere(n, r, generator=torch.Generator().manual_seed(0))
    scales = g.log_scales.detach().exp()
    assert torch.allclose(scales[:, 0], scales[:, 1]) and torch.allclose(scales[:, 0], scales[:, 2])
    median = float(scales.median())
    assert 0.2 * r / n ** (1 / 3) < median < 2.0 * r / n ** (1 / 3)


def test_from_points_scales_are_neighbour_distances():
    grid = (
        torch.stack(torch.meshgrid(*[torch.arange(5.0)] * 3, indexing="ij"), dim=-1).reshape(-1, 3)
        * 0.1
    )
    g = CanonicalGaussians.from_points(grid, None)
    scales = g.log_scales.detach().exp()
    assert (scales > 0).all()
    # On a 0.1-spaced lattice every point has at least 3 neighbours at exactly 0.1.
    assert torch.allclose(scales, torch.full_like(scales, 0.1), atol=1e-5)
    assert torch.allclose(_colors_from_dc(g), torch.full((125, 3), 0.5), atol=1e-6)
    assert torch.allclose(g.quats, torch.tensor([1.0, 0, 0, 0]).expand(125, 4))


def test_from_points_rejects_bad_input():
    with pytest.raises(ValueError, match="points"):
        CanonicalGaussians.from_points(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="colors"):
        CanonicalGaussians.from_points(torch.zeros(4, 3), torch.zeros(3, 3))
    with pytest.raises(ValueError, match="NaN"):
        CanonicalGaussians.from_points(torch.tensor([[0.0, float("nan"), 0.0]]))


def test_knn_chunked_matches_full():
    pts = torch.rand(300, 3, generator=torch.Generator().manual_seed(1))
    full = torch.cdist(pts, pts).topk(4, largest=False).values[:, 1:].mean(1)
    assert torch.allclose(knn_mean_distance(pts, k=3, chunk=37), full, atol=1e-6)


def test_normalize_points():
    pts = torch.tensor([[10.0, 0, 0], [14.0, 0, 0], [12.0, 1.0, 0]])
    out = normalize_points(pts, 0.5)
    assert math.isclose(float(out.norm(dim=1).max()), 0.5, rel_tol=1e-6)
    assert torch.allclose((out.amin(0) + out.amax(0)) / 2, torch.zeros(3), atol=1e-6)


def test_from_file_ply_point_cloud(tmp_path):
    path = tmp_path / "cloud.ply"
    _write_ply(path, SQUARE_VERTS, SQUARE_COLORS)
    g = CanonicalGaussians.from_file(path, num_samples=100)
    assert g.num_gaussians == 4
    assert torch.allclose(g.means, torch.from_numpy(SQUARE_VERTS))
    assert torch.allclose(_colors_from_dc(g), torch.from_numpy(SQUARE_COLORS / 255.0).float())
    # More points than requested: a random subset of num_samples.
    sub = CanonicalGaussians.from_file(path, num_samples=2, generator=torch.Generator())
    assert sub.num_gaussians == 2


def test_from_file_ply_mesh_samples_lie_on_triangles(tmp_path):
    path = tmp_path / "mesh.ply"
    _write_ply(path, SQUARE_VERTS, SQUARE_COLORS, faces=[[0, 1, 2, 3]])  # a quad
    gen = torch.Generator().manual_seed(0)
    g = CanonicalGaussians.from_file(path, num_samples=400, generator=gen)
    m = g.means.detach()
    assert g.num_gaussians == 400
    assert torch.allclose(m[:, 2], torch.zeros(400), atol=1e-6)
    assert (m[:, :2] >= -1e-6).all() and (m[:, :2] <= 1 + 1e-6).all()
    # Area-weighted: both triangles of the quad (split along the 0-2 diagonal) get samples.
    below = (m[:, 1] < m[:, 0]).float().mean()
    assert 0.35 < below < 0.65
    # Colours are the barycentric interpolation of the vertex colours.
    x, y = m[:, 0], m[:, 1]
    c = torch.from_numpy(SQUARE_COLORS / 255.0).float()
    lower = y <= x  # triangle (0,1,2): bary = (1-x, x-y, y)
    bary_lo = torch.stack([1 - x, x - y, y], 1)
    exp_lo = bary_lo @ c[[0, 1, 2]]
    bary_up = torch.stack([1 - y, x, y - x], 1)  # triangle (0,2,3): bary = (1-y, x, y-x)
    exp_up = bary_up @ c[[0, 2, 3]]
    expected = torch.where(lower[:, None], exp_lo, exp_up)
    assert torch.allclose(_colors_from_dc(g), expected, atol=1e-4)


def test_from_file_obj_with_colours_and_polygons(tmp_path):
    path = tmp_path / "mesh.obj"
    path.write_text(
        "# a unit square in the y=2 plane, written as one polygon\n"
        "v 0 2 0 1 0 0\nv 1 2 0 1 0 0\nv 1 2 1 1 0 0\nv 0 2 1 1 0 0\n"
        "vn 0 1 0\nf 1//1 2//1 3//1 -1//1\n"
    )
    g = CanonicalGaussians.from_file(path, num_samples=50, generator=torch.Generator())
    m = g.means.detach()
    assert torch.allclose(m[:, 1], torch.full((50,), 2.0))
    assert (m[:, [0, 2]] >= -1e-6).all() and (m[:, [0, 2]] <= 1 + 1e-6).all()
    assert torch.allclose(_colors_from_dc(g), torch.tensor([1.0, 0, 0]).expand(50, 3), atol=1e-5)


def test_from_file_obj_point_cloud_and_normalize(tmp_path):
    path = tmp_path / "pts.obj"
    path.write_text("v 10 0 0\nv 12 0 0\nv 11 1 0\n")
    g = CanonicalGaussians.from_file(path, num_samples=10, normalize_radius=0.5)
    assert g.num_gaussians == 3
    assert math.isclose(float(g.means.detach().norm(dim=1).max()), 0.5, rel_tol=1e-5)
    assert torch.allclose(_colors_from_dc(g), torch.full((3, 3), 0.5), atol=1e-6)


def test_from_file_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope.ply"
    with pytest.raises(FileNotFoundError, match="nope.ply"):
        CanonicalGaussians.from_file(missing, 10)
    garbled = tmp_path / "garbled.ply"
    garbled.write_bytes(b"\x00\x01not a ply at all")
    with pytest.raises(ValueError, match="garbled.ply"):
        CanonicalGaussians.from_file(garbled, 10)
    bad_obj = tmp_path / "bad.obj"
    bad_obj.write_text("v 0 0 0\nv 1 0 zero\n")
    with pytest.raises(ValueError, match=r"bad.obj:2"):
        CanonicalGaussians.from_file(bad_obj, 10)
    empty_obj = tmp_path / "empty.obj"
    empty_obj.write_text("# nothing\n")
    with pytest.raises(ValueError, match="empty.obj"):
        CanonicalGaussians.from_file(empty_obj, 10)
    out_of_range = tmp_path / "range.obj"
    out_of_range.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 9\n")
    with pytest.raises(ValueError, match="range.obj"):
        CanonicalGaussians.from_file(out_of_range, 10)
    glb = tmp_path / "model.glb"
    glb.write_bytes(b"glTF")
    with pytest.raises(ValueError, match=r"model.glb: too short for a GLB"):
        CanonicalGaussians.from_file(glb, 10)
    fbx = tmp_path / "model.fbx"
    fbx.write_bytes(b"x")
    with pytest.raises(NotImplementedError, match=r"\.ply.*\.obj.*\.glb"):
        CanonicalGaussians.from_file(fbx, 10)


def test_replace_tables():
    g = CanonicalGaussians.random_in_sphere(8, 0.5)
    with pytest.raises(ValueError, match="disagree on N"):
        g.replace_tables({"means": torch.zeros(9, 3)})
    with pytest.raises(KeyError):
        g.replace_tables({"colour": torch.zeros(8, 3)})
    new = {name: getattr(g, name).detach()[:5] for name in CanonicalGaussians.TABLES}
    params = g.replace_tables(new)
    assert g.num_gaussians == 5
    assert all(isinstance(p, torch.nn.Parameter) for p in params.values())
    assert g.means is params["means"]
    assert {n for n, _ in g.named_parameters()} == set(CanonicalGaussians.TABLES)


def test_extent():
    g = CanonicalGaussians.from_points(torch.tensor([[1.0, 0, 0], [-1.0, 0, 0], [0, 0.5, 0]]))
    centre = g.means.detach().mean(0)
    assert math.isclose(g.extent(), float((g.means.detach() - centre).norm(dim=1).max()))
    assert CanonicalGaussians.from_points(torch.zeros(1, 3)).extent() == 1.0


def test_state_dict_loads_into_module_of_different_size():
    big = CanonicalGaussians.random_in_sphere(37, 0.5, sh_degree=1)
    small = CanonicalGaussians.random_in_sphere(5, 0.5, sh_degree=1)
    small.load_state_dict(big.state_dict())
    assert small.num_gaussians == 37
    for name in CanonicalGaussians.TABLES:
        assert torch.equal(getattr(small, name), getattr(big, name))
        assert isinstance(getattr(small, name), torch.nn.Parameter)
    # And back down, nested inside a parent module (prefixed keys).
    parent = torch.nn.ModuleDict({"g": CanonicalGaussians.random_in_sphere(50, 0.5, sh_degree=1)})
    parent.load_state_dict({"g." + k: v for k, v in small.state_dict().items()})
    assert parent["g"].num_gaussians == 37
    assert len(parent["g"].activated()) == 37


def test_empty_placeholder_loads_checkpoint_of_any_degree():
    g = CanonicalGaussians.empty(sh_degree=0)
    assert g.num_gaussians == 0 and g.sh_degree == 0
    assert len(g.activated()) == 0
    g.load_state_dict(CanonicalGaussians.random_in_sphere(9, 0.5, sh_degree=2).state_dict())
    assert g.num_gaussians == 9 and g.sh_degree == 2
