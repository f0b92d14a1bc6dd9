"""Spec of ds4d_pl.gaussians.hull: visual-hull carving from silhouettes and points sampled on it."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from ds4d_pl.cameras import Cameras, look_at, orbit_cameras, zero123pp_cameras
from ds4d_pl.data.parsers.degrade import DegradeConfig
from ds4d_pl.data.parsers.synthetic import (
    SyntheticConfig,
    make_synthetic_scene,
    sample_synthetic_surface,
)
from ds4d_pl.data.types import ViewSet
from ds4d_pl.gaussians.hull import (
    HullConfig,
    VoxelGrid,
    carve,
    hull_points_from_views,
    required_hits,
    sample_hull_points,
    surface_voxels,
)

REPO = Path(__file__).resolve().parents[1]
PX = 64
RADIUS = 0.45
BOX_HALF = (0.4, 0.25, 0.3)
FAST = dict(resolution=40, num_points=1500)


def _views() -> Cameras:
    """The input front camera followed by the six Zero123++ v1.1 cameras."""
    return Cameras.cat([orbit_cameras([0.0], [0.0], PX, PX), zero123pp_cameras(PX, PX)])


def _rays(cams: Cameras) -> tuple[Tensor, Tensor]:
    """Per-pixel ray origins and unit directions through the pixel centres, ``(V, H*W, 3)``."""
    rows, cols = torch.meshgrid(
        torch.arange(cams.height) + 0.5, torch.arange(cams.width) + 0.5, indexing="ij"
    )
    pix = torch.stack([cols, rows, torch.ones_like(cols)], dim=-1).reshape(-1, 3)
    dirs = pix @ torch.linalg.inv(cams.K).transpose(1, 2) @ cams.c2w[:, :3, :3].transpose(1, 2)
    return cams.centers[:, None].expand_as(dirs), F.normalize(dirs, dim=-1)


def _sphere_alpha(cams: Cameras, radius: float = RADIUS) -> Tensor:
    o, d = _rays(cams)
    b = (o * d).sum(-1)
    hit = b * b - ((o * o).sum(-1) - radius**2) >= 0
    return hit.float().reshape(len(cams), cams.height, cams.width)


def _box_alpha(cams: Cameras, half=BOX_HALF) -> Tensor:
    o, d = _rays(cams)
    h = torch.tensor(half)
    safe = torch.where(d.abs() < 1e-9, torch.full_like(d, 1e-9), d)
    t1, t2 = (-h - o) / safe, (h - o) / safe
    near, far = torch.minimum(t1, t2).amax(-1), torch.maximum(t1, t2).amin(-1)
    return (far >= near.clamp_min(0)).float().reshape(len(cams), cams.height, cams.width)


def _inside_sphere(points: Tensor) -> Tensor:
    return points.norm(dim=-1) <= RADIUS


def _inside_box(points: Tensor) -> Tensor:
    return (points.abs() <= torch.tensor(BOX_HALF)).all(dim=-1)


def _dilate(occ: Tensor) -> Tensor:
    return F.max_pool3d(occ[None, None].float(), 3, stride=1, padding=1)[0, 0] > 0


def _distance_to_hull(points: Tensor, occ: Tensor, grid: VoxelGrid) -> Tensor:
    """Distance from each point to the nearest occupied voxel centre within 2 voxels (else inf)."""
    ijk, _ = grid.index_of(points)
    steps = torch.arange(-2, 3)
    offsets = torch.stack(torch.meshgrid(steps, steps, steps, indexing="ij"), -1).reshape(-1, 3)
    near = ijk[:, None] + offsets
    valid = ((near >= 0) & (near < grid.resolution)).all(-1)
    near = near.clamp(0, grid.resolution - 1)
    occupied = occ[near[..., 0], near[..., 1], near[..., 2]] & valid
    centres = grid.lo + (near.float() + 0.5) * grid.voxel_size
    dist = (centres - points[:, None]).norm(dim=-1)
    return torch.where(occupied, dist, torch.full_like(dist, math.inf)).amin(-1)


def _nearest(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Distance from each row of ``a`` to its nearest row of ``b``, and that row's index."""
    dist, idx = [], []
    for start in range(0, len(a), 1024):
        m = torch.cdist(a[start : start + 1024], b).min(dim=1)
        dist.append(m.values)
        idx.append(m.indices)
    return torch.cat(dist), torch.cat(idx)


def _view_set(alpha: Tensor, rgb: Tensor, cams: Cameras) -> ViewSet:
    """One-frame views from ``(V, H, W)`` alpha and ``(V, H, W, 3)`` colour."""
    return ViewSet(
        rgb=rgb[:, None], alpha=alpha[:, None, ..., None], cameras=cams, times=torch.zeros(1)
    )


@pytest.fixture(scope="module")
def sphere() -> tuple[Tensor, Cameras]:
    cams = _views()
    return _sphere_alpha(cams), cams


# --------------------------------------------------------------------------------------------
# Configuration


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("resolution", 2),
        ("resolution", 32.0),
        ("half_size", -1.0),
        ("half_size", math.inf),
        ("center", (0.0, 0.0)),
        ("center", (0.0, math.nan, 0.0)),
        ("alpha_threshold", 1.0),
        ("max_misses", -1),
        ("trust_input", "yes"),
        ("pseudo_margin", -0.01),
        ("pseudo_margin", 0.5),
        ("min_hits", 0),
        ("footprint", "area"),
        ("num_points", 0),
        ("colors", "front"),
        ("seed", -1),
        ("chunk", 0),
    ],
)
def test_config_rejects_bad_values_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"HullConfig.{field}"):
        HullConfig(**{field: value})


def test_default_hit_rule_allows_one_unseen_view_and_max_misses() -> None:
    assert required_hits(HullConfig(max_misses=1), 7) == 5
    assert required_hits(HullConfig(max_misses=0), 7) == 6
    assert required_hits(HullConfig(max_misses=1), 2) == 2
    assert required_hits(HullConfig(min_hits=3), 7) == 3


# --------------------------------------------------------------------------------------------
# Carving


@pytest.mark.parametrize(
    ("alpha_fn", "inside_fn", "min_iou"),
    # Seven views carve a sphere closely; a box keeps wedges along edges no view sees edge-on
    # (about 0.65 IoU even with fine voxels and pixels).
    [(_sphere_alpha, _inside_sphere, 0.8), (_box_alpha, _inside_box, 0.58)],
    ids=["sphere", "box"],
)
def test_hull_of_analytic_shape_contains_it_and_fits_tightly(alpha_fn, inside_fn, min_iou) -> None:
    cams = _views()
    occ, grid = carve(alpha_fn(cams), cams, HullConfig(resolution=48, pseudo_margin=0.0))
    assert occ.shape == (48, 48, 48) and occ.dtype == torch.bool
    true = inside_fn(grid.centers())
    assert true.any() and not true.all()
    iou = float((occ & true).sum() / (occ | true).sum())
    assert iou >= min_iou
    # Contains the shape: every voxel inside it is kept, up to one voxel at the silhouette's
    # pixel-rounded rim.
    assert float((occ & true).sum() / true.sum()) >= 0.99
    assert bool(_dilate(occ)[true].all())
    # The fitted grid bounds the hull snugly (not the whole region the cameras see): the hull
    # spans most of the grid along its longest side.
    ijk = occ.nonzero()
    assert int((ijk.amax(0) - ijk.amin(0) + 1).max()) >= 0.75 * grid.resolution


def test_one_corrupted_silhouette_is_outvoted_with_max_misses_1(sphere) -> None:
    alpha, cams = sphere
    bad = alpha.clone()
    bad[3, :, : PX // 2] = 0.0  # half the object erased in one pseudo view
    fixed = dict(resolution=40, half_size=0.6, pseudo_margin=0.0)
    occ1, grid = carve(bad, cams, HullConfig(max_misses=1, **fixed))
    occ0, _ = carve(bad, cams, HullConfig(max_misses=0, **fixed))
    clean0, _ = carve(alpha, cams, HullConfig(max_misses=0, **fixed))
    true = _inside_sphere(grid.centers())
    assert bool(_dilate(occ1)[true].all())
    assert float((occ1 & true).sum() / true.sum()) >= 0.99
    # Without tolerance the bad view cuts the hull: a large part of the sphere is lost, which
    # the clean silhouettes do not lose.
    assert float((occ0 & true).sum() / true.sum()) < 0.8
    assert float((clean0 & true).sum() / true.sum()) >= 0.99


def test_a_miss_in_the_input_view_always_carves_unless_told_otherwise(sphere) -> None:
    alpha, cams = sphere
    bad = alpha.clone()
    bad[0, :, : PX // 2] = 0.0  # half the object erased in the input view
    fixed = dict(resolution=40, half_size=0.6, max_misses=1, pseudo_margin=0.0)
    trusted, grid = carve(bad, cams, HullConfig(**fixed))
    forgiven, _ = carve(bad, cams, HullConfig(trust_input=False, **fixed))
    true = _inside_sphere(grid.centers())
    assert float((trusted & true).sum() / true.sum()) < 0.8
    assert bool(_dilate(forgiven)[true].all())
    # With no input views, every view is forgiven alike.
    none_trusted, _ = carve(bad, cams, HullConfig(**fixed), num_input_views=0)
    assert torch.equal(none_trusted, forgiven)


def test_voxels_outside_a_view_get_no_evidence_from_it(sphere) -> None:
    alpha, cams = sphere
    # A narrow camera sees only the middle of the sphere: its whole image is foreground.
    zoom = orbit_cameras([10.0], [200.0], PX, PX, fov_y_deg=12.0)
    zoom_alpha = _sphere_alpha(zoom)
    assert bool((zoom_alpha > 0).all())
    cfg = HullConfig(resolution=40, half_size=0.6, max_misses=0, min_hits=2)
    occ, grid = carve(alpha, cams, cfg)
    occ_zoom, _ = carve(torch.cat([alpha, zoom_alpha]), Cameras.cat([cams, zoom]), cfg)
    # Had "outside the image" counted as outside the silhouette, everything the narrow view
    # does not see would be carved away.
    assert torch.equal(occ_zoom, occ)
    assert bool(_dilate(occ_zoom)[_inside_sphere(grid.centers())].all())


def test_carving_in_chunks_does_not_change_the_hull(sphere) -> None:
    alpha, cams = sphere
    occ, grid = carve(alpha, cams, HullConfig(resolution=32))
    occ_small, grid_small = carve(alpha, cams, HullConfig(resolution=32, chunk=997))
    assert torch.equal(occ, occ_small)
    assert torch.equal(grid.lo, grid_small.lo) and grid.voxel_size == grid_small.voxel_size


def test_accepts_alpha_with_a_channel_axis(sphere) -> None:
    alpha, cams = sphere
    cfg = HullConfig(resolution=24)
    occ, _ = carve(alpha, cams, cfg)
    occ_c, _ = carve(alpha[..., None], cams, cfg)
    assert torch.equal(occ, occ_c)


def test_center_footprint_is_tighter_than_voxel_footprint(sphere) -> None:
    alpha, cams = sphere
    base = dict(resolution=24, half_size=0.6)
    occ_voxel, _ = carve(alpha, cams, HullConfig(footprint="voxel", **base))
    occ_center, _ = carve(alpha, cams, HullConfig(footprint="center", **base))
    # Voxels bigger than pixels: the conservative footprint keeps a superset.
    assert bool((occ_voxel | ~occ_center).all())
    assert int(occ_voxel.sum()) > int(occ_center.sum())


def test_surface_voxels_are_the_occupied_voxels_with_an_empty_neighbour() -> None:
    occ = torch.zeros(5, 5, 5, dtype=torch.bool)
    occ[1:4, 1:4, 1:4] = True
    surf = surface_voxels(occ)
    assert int(surf.sum()) == 26 and not bool(surf[2, 2, 2])
    full = torch.ones(3, 3, 3, dtype=torch.bool)  # the grid's outside counts as empty
    assert int(surface_voxels(full).sum()) == 26


# --------------------------------------------------------------------------------------------
# Bad input


def test_bad_inputs_raise_clear_errors(sphere) -> None:
    alpha, cams = sphere
    cfg = HullConfig(resolution=16)
    with pytest.raises(ValueError, match="no views"):
        carve(alpha[:0], cams[[]], cfg)
    with pytest.raises(ValueError, match="at least 2 views"):
        carve(alpha[:1], cams[0], cfg)
    with pytest.raises(ValueError, match="7 silhouettes but 6 cameras"):
        carve(alpha, cams[1:], cfg)
    with pytest.raises(ValueError, match="silhouettes are 32x32 but cameras are 64x64"):
        carve(alpha[:, :32, :32], cams, cfg)
    with pytest.raises(ValueError, match=r"\(V, H, W\) or \(V, H, W, 1\)"):
        carve(alpha[..., None].expand(-1, -1, -1, 3), cams, cfg)
    with pytest.raises(ValueError, match="every silhouette is empty"):
        carve(torch.zeros_like(alpha), cams, cfg)
    with pytest.raises(ValueError, match="no object mask"):
        carve(torch.ones_like(alpha), cams, cfg)
    nan = alpha.clone()
    nan[0, 0, 0] = math.nan
    with pytest.raises(ValueError, match="NaN"):
        carve(nan, cams, cfg)
    with pytest.raises(ValueError, match="min_hits=9 but only 7 views"):
        carve(alpha, cams, HullConfig(resolution=16, min_hits=9))
    with pytest.raises(ValueError, match="num_input_views must be in 0..7, got 8"):
        carve(alpha, cams, cfg, num_input_views=8)


def test_parallel_cameras_need_an_explicit_box() -> None:
    # A row of cameras all looking down -z: their axes never meet, so no centre is implied.
    eye = torch.tensor([[-0.5, 0.0, 2.0], [0.0, 0.0, 2.0], [0.5, 0.0, 2.0]])
    c2w = look_at(eye, eye - torch.tensor([0.0, 0.0, 1.0]))
    k = orbit_cameras([0.0], [0.0], PX, PX).K.expand(3, 3, 3)
    cams = Cameras(c2w, k.clone(), PX, PX)
    alpha = _sphere_alpha(cams)
    with pytest.raises(ValueError, match="set HullConfig.center and HullConfig.half_size"):
        carve(alpha, cams, HullConfig(resolution=16))
    occ, grid = carve(alpha, cams, HullConfig(resolution=24, center=(0, 0, 0), half_size=0.6))
    assert bool(_dilate(occ)[_inside_sphere(grid.centers())].all())


def test_silhouettes_that_disagree_give_an_empty_hull_error(sphere) -> None:
    alpha, cams = sphere
    bad = alpha.clone()
    # Two views see the object only in a corner, where the others say there is nothing.
    bad[0] = 0.0
    bad[0, :6, :6] = 1.0
    bad[1] = 0.0
    bad[1, -6:, -6:] = 1.0
    with pytest.raises(ValueError, match="visual hull is empty.*Foreground fraction per view"):
        carve(bad, cams, HullConfig(resolution=16, half_size=0.6, max_misses=1))


def test_sampling_rejects_inputs_that_do_not_match(sphere) -> None:
    alpha, cams = sphere
    occ, grid = carve(alpha, cams, HullConfig(resolution=16))
    images = torch.ones(*alpha.shape, 3)
    cfg = HullConfig(num_points=10)
    with pytest.raises(ValueError, match="occupancy must be a bool"):
        sample_hull_points(occ[:8], grid, images, alpha, cams, cfg)
    with pytest.raises(ValueError, match="occupancy is empty"):
        sample_hull_points(torch.zeros_like(occ), grid, images, alpha, cams, cfg)
    with pytest.raises(ValueError, match=r"images must be float \(V, H, W, 3\)"):
        sample_hull_points(occ, grid, images[..., :2], alpha, cams, cfg)
    with pytest.raises(ValueError, match="images must be float"):
        sample_hull_points(occ, grid, (images * 255).to(torch.uint8), alpha, cams, cfg)
    with pytest.raises(ValueError, match="does not match images"):
        sample_hull_points(occ, grid, images, alpha[:3], cams, cfg)
    with pytest.raises(ValueError, match="7 images of 64x64 but 6 cameras"):
        sample_hull_points(occ, grid, images, alpha, cams[1:], cfg)
    with pytest.raises(ValueError, match="num_input_views must be in 0..7"):
        sample_hull_points(occ, grid, images, alpha, cams, cfg, num_input_views=8)


def test_frame_out_of_range_is_rejected(sphere) -> None:
    alpha, cams = sphere
    views = _view_set(alpha, torch.ones(*alpha.shape, 3), cams)
    with pytest.raises(ValueError, match=r"frame must be in 0..0, got 3"):
        hull_points_from_views(views, 3, HullConfig(**FAST))


# --------------------------------------------------------------------------------------------
# Surface points and colours


def test_points_lie_on_the_hull_surface_with_the_requested_count(sphere) -> None:
    alpha, cams = sphere
    cfg = HullConfig(resolution=32, num_points=5000)
    occ, grid = carve(alpha, cams, cfg)
    images = torch.full((*alpha.shape, 3), 0.3)
    points, colors = sample_hull_points(occ, grid, images, alpha, cams, cfg)
    assert points.shape == (5000, 3) and colors.shape == (5000, 3)
    assert bool(torch.isfinite(points).all())
    # More points than surface voxels: every surface voxel gets at least one.
    ijk, inside = grid.index_of(points)
    assert bool(inside.all())
    surf = surface_voxels(occ)
    assert int(surf.sum()) < 5000
    assert bool(surf[ijk[:, 0], ijk[:, 1], ijk[:, 2]].all())
    hit = torch.zeros_like(surf)
    hit[ijk[:, 0], ijk[:, 1], ijk[:, 2]] = True
    assert torch.equal(hit, surf)
    # Every view shows 0.3: that is every point's colour, but for a rare point in a dent of the
    # voxelised hull that no view sees unoccluded (mid grey).
    exact = (colors - 0.3).abs().amax(dim=-1) < 1e-5
    assert float(exact.float().mean()) >= 0.995
    torch.testing.assert_close(colors[~exact], torch.full_like(colors[~exact], 0.5))


def test_input_view_wins_and_the_back_is_not_coloured_by_the_front(sphere) -> None:
    alpha, cams = sphere
    images = torch.zeros(*alpha.shape, 3)
    images[0, ..., 0] = 1.0  # the input (front) view sees red
    images[1:, ..., 2] = 1.0  # the pseudo views see blue
    views = _view_set(alpha, images, cams)
    # Exact silhouettes: no margin, so the hull hugs the sphere and "facing" means what it says.
    exact = dict(resolution=40, num_points=3000, pseudo_margin=0.0)
    points, colors = hull_points_from_views(views, cfg=HullConfig(**exact))
    facing = F.normalize(points, dim=-1)[:, 2]  # the front camera sits on +z
    front, back = facing > 0.6, facing < -0.3
    assert int(front.sum()) > 300 and int(back.sum()) > 300
    red = (colors[:, 0] > 0.99) & (colors[:, 2] < 0.01)
    blue = (colors[:, 2] > 0.99) & (colors[:, 0] < 0.01)
    # Pseudo views see the front too, but the input view wins where it sees the point. (A few
    # points on the hull's rim facets, edge-on to the front camera, may go either way.)
    assert float(red[front].float().mean()) >= 0.98
    # The front view projects onto the back as well; the hull occludes it there.
    assert float(blue[back].float().mean()) >= 0.98
    # "mean" mixes the views wherever several see the point; "none" is mid grey.
    _, mixed = hull_points_from_views(views, cfg=HullConfig(**FAST, colors="mean"))
    facing_fast = F.normalize(hull_points_from_views(views, cfg=HullConfig(**FAST))[0], dim=-1)
    assert float(mixed[facing_fast[:, 2] > 0.6, 2].mean()) > 0.2
    _, grey = hull_points_from_views(views, cfg=HullConfig(**FAST, colors="none"))
    torch.testing.assert_close(grey, torch.full_like(grey, 0.5))


def test_sampling_is_deterministic_for_a_seed(sphere) -> None:
    alpha, cams = sphere
    views = _view_set(
        alpha, torch.rand(*alpha.shape, 3, generator=torch.Generator().manual_seed(0)), cams
    )
    a = hull_points_from_views(views, cfg=HullConfig(**FAST, seed=3))
    b = hull_points_from_views(views, cfg=HullConfig(**FAST, seed=3))
    c = hull_points_from_views(views, cfg=HullConfig(**FAST, seed=4))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_synthetic_object_hull_covers_its_surface_with_true_colours() -> None:
    cfg = SyntheticConfig(resolution=PX, eval_resolution=16, num_frames=3, num_init_points=8)
    scene = make_synthetic_scene(cfg)
    true_points, true_colors = sample_synthetic_surface(cfg, float(scene.train.times[1]), 8000)
    for margin, max_median_voxels in ((None, 3.5), (0.0, 2.0)):
        hull_cfg = HullConfig(resolution=64, num_points=3000)
        if margin is not None:  # exact (oracle) pseudo views need no margin
            hull_cfg = HullConfig(resolution=64, num_points=3000, pseudo_margin=margin)
        occ, grid = carve(scene.train.alpha[:, 1], scene.train.cameras_at(1), hull_cfg)
        points, colors = hull_points_from_views(scene.train, cfg=hull_cfg)  # middle frame = 1
        vs = grid.voxel_size
        # Nearly every true surface point lies within 1.5 voxels of the hull.
        to_hull = _distance_to_hull(true_points, occ, grid)
        assert float((to_hull <= 1.5 * vs).float().mean()) >= 0.95
        # The sampled points hug the true surface (the visual hull's excess is small) ...
        to_surface, nearest = _nearest(points, true_points)
        assert float(to_surface.median()) <= max_median_voxels * vs
        # ... and where they are on it, their colour is the surface's, far closer than a guess.
        near = to_surface <= 1.5 * vs
        error = (colors[near] - true_colors[nearest[near]]).abs().mean()
        guess = (true_colors.mean(0) - true_colors[nearest[near]]).abs().mean()
        assert float(error) < 0.05 and float(error) < 0.4 * float(guess)


def test_margin_keeps_the_object_whole_under_generated_views_framing_errors() -> None:
    # Zero123++-like pseudo views: each framed a few percent off, one showing the wrong pose.
    cfg = SyntheticConfig(
        resolution=PX,
        eval_resolution=16,
        num_frames=3,
        num_init_points=8,
        seed=2,
        pseudo_views="degraded",
        degrade=DegradeConfig(seed=2),
    )
    scene = make_synthetic_scene(cfg)
    true_points, _ = sample_synthetic_surface(cfg, float(scene.train.times[1]), 8000)
    alpha, cams = scene.train.alpha[:, 1], scene.train.cameras_at(1)

    def covered(hull_cfg: HullConfig) -> float:
        occ, grid = carve(alpha, cams, hull_cfg)
        near = _distance_to_hull(true_points, occ, grid) <= 1.5 * grid.voxel_size
        return float(near.float().mean())

    assert covered(HullConfig(resolution=64)) >= 0.99
    # Without the margin, misframed views each cut a slice of the object: too many misses.
    assert covered(HullConfig(resolution=64, pseudo_margin=0.0)) < 0.9


# --------------------------------------------------------------------------------------------
# Benchmark script


def test_init_sources_benchmark_lists_its_runs_without_running_them() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "init_sources.py"), "--dry-run", "--seeds=3"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if " fit " in line]
    assert len(lines) == 9
    for source in ("hull", "sphere", "auto"):
        runs = [line for line in lines if f"--model.init.source={source}" in line]
        assert len(runs) == 3
        assert all(f"--seed_everything={s}" in run for s, run in enumerate(runs))
    assert all("configs/demo.yaml" in line for line in lines)
    # Every source starts from the same number of points.
    assert all("--model.init.num=2000" in line for line in lines)
    assert all("--data.synthetic.num_init_points=2000" in line for line in lines)
    bad = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "init_sources.py"), "--sources=hull,mesh"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert bad.returncode == 2 and "unknown ['mesh']" in bad.stderr


def test_voxel_grid_places_voxel_centres() -> None:
    grid = VoxelGrid.cube(torch.zeros(3), 1.0, 4)
    centers = grid.centers()
    torch.testing.assert_close(centers[0, 0, 0], torch.full((3,), -0.75))
    torch.testing.assert_close(centers[3, 1, 2], torch.tensor([0.75, -0.25, 0.25]))
    ijk, inside = grid.index_of(torch.tensor([[0.74, -0.26, 0.26], [1.2, 0.0, 0.0]]))
    assert ijk[0].tolist() == [3, 1, 2] and inside.tolist() == [True, False]
