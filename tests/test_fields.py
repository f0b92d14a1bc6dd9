"""Spec of ds4d_pl.fields: encodings, deformation heads, deltas, regularisers."""

from __future__ import annotations

import pytest
import torch

from ds4d_pl.compat import UPGRADED_HPARAMS, upgrade_hparams
from ds4d_pl.config import FieldConfig
from ds4d_pl.fields import (
    DeformationField,
    HashGrid4D,
    HexPlane,
    aabb_from_points,
    build_field,
    plane_tv,
    time_l1,
    time_smoothness,
)
from ds4d_pl.fields.hashgrid import level_resolutions
from ds4d_pl.gaussians.canonical import CanonicalGaussians

SMALL_HEX = {"plane_resolution": 8, "time_resolution": 5, "feature_dim": 4, "hidden": 16}
SMALL_HASH = {
    "encoding": "hashgrid",
    "hash_levels": 4,
    "hash_features_per_level": 2,
    "hash_log2_size": 12,
    "hash_base_resolution": 4,
    "hash_max_resolution": 32,
    "hash_backend": "torch",
    "hidden": 16,
}


def small_cfg(encoding: str = "hexplane", **kw: object) -> FieldConfig:
    base = dict(SMALL_HEX if encoding == "hexplane" else SMALL_HASH)
    base.update(kw)
    return FieldConfig(**base)


def canonical_gaussians(n: int, gen: torch.Generator) -> CanonicalGaussians:
    return CanonicalGaussians(
        torch.randn(n, 3, generator=gen),
        torch.randn(n, 4, generator=gen),
        torch.randn(n, 3, generator=gen),
        torch.randn(n, generator=gen),
        torch.randn(n, 1, 3, generator=gen),
        torch.zeros(n, 0, 3),
    )


# ------------------------------------------------------------------ shapes


@pytest.mark.parametrize("multires", [[1], [1, 2], [1, 2, 4]])
def test_hexplane_shapes_and_out_dim(multires: list[int]) -> None:
    hp = HexPlane(feature_dim=3, plane_resolution=4, time_resolution=3, multires=multires)
    assert hp.out_dim == 3 * len(multires)
    assert len(hp.grids) == len(multires)
    for m, planes in zip(multires, hp.grids, strict=True):
        assert planes[0].shape == (1, 3, 4 * m, 4 * m)  # xy
        assert planes[3].shape == (1, 3, 3, 4 * m)  # xt: time along rows
    feat = hp(torch.rand(7, 3) * 2 - 1, torch.rand(7, 1))
    assert feat.shape == (7, hp.out_dim)
    assert torch.isfinite(feat).all()


def test_hashgrid_shapes_and_levels() -> None:
    hg = HashGrid4D(4, 3, 10, base_resolution=4, max_resolution=32, backend="torch")
    assert hg.out_dim == 12
    assert hg.backend == "torch"
    assert level_resolutions(4, 4, 32) == [4, 8, 16, 32]
    # Coarse levels fit their table and are dense; finer ones are hashed into 2^10 rows.
    assert hg.dense == [True, False, False, False]
    assert hg.table.shape == (5**4 + 3 * 2**10, 3)
    feat = hg(torch.rand(9, 3), 0.5)
    assert feat.shape == (9, 12) and torch.isfinite(feat).all()


@pytest.mark.parametrize(
    ("encoding", "kw"),
    [
        ("hexplane", {}),
        ("hexplane", {"multires": [1, 2, 4], "depth": 2}),
        ("hexplane", {"deform_opacity": True, "deform_color": True, "depth": 0}),
        ("hashgrid", {}),
        ("hashgrid", {"deform_color": True}),
    ],
)
@pytest.mark.parametrize("cond_dim", [0, 5])
def test_deformation_output_shapes(encoding: str, kw: dict, cond_dim: int) -> None:
    cfg = small_cfg(encoding, **kw)
    field = build_field(cfg, cond_dim=cond_dim)
    n = 11
    cond = torch.randn(n, cond_dim) if cond_dim else None
    out = field(torch.randn(n, 3), torch.rand(n, 1), cond)
    expected = {"means": (n, 3), "quats": (n, 4), "log_scales": (n, 3)}
    if cfg.deform_opacity:
        expected["logit_opacities"] = (n,)
    if cfg.deform_color:
        expected["sh_dc"] = (n, 1, 3)
    assert {k: tuple(v.shape) for k, v in out.items()} == expected
    assert all(torch.isfinite(v).all() for v in out.values())
    assert field.cond_dim == cond_dim
    assert field.out_dim == field.encoding.out_dim


def test_time_accepts_scalar_vector_and_column() -> None:
    field = build_field(small_cfg())
    with torch.no_grad():
        field.heads["means"][-1].weight.normal_()
    x = torch.randn(6, 3)
    ref = field(x, 0.25)["means"]
    for t in (torch.tensor(0.25), torch.full((6,), 0.25), torch.full((6, 1), 0.25)):
        torch.testing.assert_close(field(x, t)["means"], ref, rtol=0, atol=0)


# --------------------------------------------------------------- invariant


@pytest.mark.parametrize("encoding", ["hexplane", "hashgrid"])
@pytest.mark.parametrize("cond_dim", [0, 4])
def test_fresh_field_is_identity(encoding: str, cond_dim: int) -> None:
    """A fresh field predicts exactly zero deltas, so deforming is bit-exact identity."""
    field = build_field(small_cfg(encoding, deform_opacity=True, deform_color=True), cond_dim)
    gen = torch.Generator().manual_seed(0)
    gaussians = canonical_gaussians(50, gen)
    cond = torch.randn(50, cond_dim, generator=gen) if cond_dim else None
    deltas = field(gaussians.means, torch.rand(50, 1, generator=gen), cond)
    assert set(deltas) == set(CanonicalGaussians.DEFORMABLE)
    for value in deltas.values():
        assert torch.count_nonzero(value) == 0
    before, after = gaussians.activated(), gaussians.deformed(deltas)
    for name in ("means", "quats", "scales", "opacities", "sh"):
        assert torch.equal(getattr(before, name), getattr(after, name))


def test_deformed_adds_in_raw_space_and_keeps_missing() -> None:
    gaussians = canonical_gaussians(4, torch.Generator().manual_seed(1))
    deltas = {"means": torch.ones(4, 3), "quats": torch.ones(4, 4), "log_scales": -torch.ones(4, 3)}
    out = gaussians.deformed(deltas)
    expected = gaussians.activated(
        means=gaussians.means + 1, quats=gaussians.quats + 1, log_scales=gaussians.log_scales - 1
    )
    torch.testing.assert_close(out.means, expected.means)
    torch.testing.assert_close(out.quats, expected.quats)  # normalised after the offset
    torch.testing.assert_close(out.scales, torch.exp(gaussians.log_scales - 1))
    torch.testing.assert_close(out.opacities, torch.sigmoid(gaussians.logit_opacities))
    with pytest.raises(ValueError, match="quats"):
        gaussians.deformed({**deltas, "quats": torch.ones(4, 3)})
    with pytest.raises(KeyError, match="scales"):
        gaussians.deformed({"scales": torch.ones(4, 3)})


def test_legacy_head_keys_load() -> None:
    """Checkpoints written when the heads were keyed ``scales`` / ``opacities`` still load."""
    cfg = small_cfg(deform_opacity=True)
    field = build_field(cfg)
    with torch.no_grad():
        for head in field.heads.values():
            head[-1].weight.normal_()
    legacy = {
        k.replace("heads.log_scales.", "heads.scales.").replace(
            "heads.logit_opacities.", "heads.opacities."
        ): v
        for k, v in field.state_dict().items()
    }
    assert any(k.startswith("heads.scales.") for k in legacy)
    fresh = build_field(cfg)
    fresh.load_state_dict(legacy)
    x = torch.randn(5, 3)
    for key, value in field(x, 0.3).items():
        torch.testing.assert_close(fresh(x, 0.3)[key], value)


# --------------------------------------------------------------- gradients


def _grad_step(field: DeformationField, loss_fn, cond_dim: int) -> None:
    """Two forward/backward passes with an optimizer step between them.

    The zero-initialised last layers block gradients to everything before them on the very first
    backward pass; one step makes them non-zero, so the second pass reaches the whole field.
    """
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(64, 3, generator=gen) * 2 - 1
    t = torch.rand(64, 1, generator=gen)
    cond = torch.randn(64, cond_dim, generator=gen) if cond_dim else None
    opt = torch.optim.Adam(field.parameters(), lr=1e-2)
    for step in range(2):
        opt.zero_grad(set_to_none=True)
        loss_fn(field(x, t, cond)).backward()
        if step == 0:
            opt.step()


@pytest.mark.parametrize("encoding", ["hexplane", "hashgrid"])
def test_position_loss_gradients_reach_encoding_fusion_mlp_and_head(encoding: str) -> None:
    field = build_field(small_cfg(encoding, depth=2), cond_dim=4)
    target = torch.full((64, 3), 0.3)
    _grad_step(field, lambda d: (d["means"] - target).square().mean(), cond_dim=4)
    reached = {
        name: p.grad is not None and bool(p.grad.abs().sum() > 0)
        for name, p in field.named_parameters()
    }
    for name, ok in reached.items():
        if name.startswith("heads.") and not name.startswith("heads.means"):
            continue  # other heads do not enter a position-only loss
        assert ok, f"no gradient reached {name}"
    assert any(n.startswith("encoding.") for n in reached)
    assert any(n.startswith("fusion.") for n in reached)
    assert any(n.startswith("mlp.") for n in reached)


def test_all_heads_get_gradients_when_all_deltas_are_used() -> None:
    field = build_field(small_cfg(deform_opacity=True, deform_color=True), cond_dim=0)

    def loss(d: dict[str, torch.Tensor]) -> torch.Tensor:
        return sum((v - 0.1).square().mean() for v in d.values())

    _grad_step(field, loss, cond_dim=0)
    for name, p in field.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reached {name}"


def test_parameter_groups_partition_the_field() -> None:
    field = build_field(small_cfg(), cond_dim=3)
    enc = {id(p) for p in field.encoding_parameters()}
    mlp = {id(p) for p in field.mlp_parameters()}
    assert enc and mlp and not enc & mlp
    assert enc | mlp == {id(p) for p in field.parameters()}
    assert id(field.fusion.weight) in mlp


def test_layernorm_fusion_gives_both_branches_comparable_scale_at_init() -> None:
    """HexPlane features start ~0.03 (products of three planes); a conditioning feature read from
    unit-RMS image features is ~1. Concatenated as they are, the conditioning drowns the
    encoding; with ``fusion_norm: layernorm`` both reach the fusion layer at unit scale."""
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(500, 3, generator=gen) * 2 - 1
    t = torch.rand(500, 1, generator=gen)
    cond = torch.randn(500, 32, generator=gen)

    def branch_rms(fusion_norm: str) -> tuple[float, float]:
        # Ungated: the gate (zero at init) would hide the branch whose scale is measured.
        field = build_field(FieldConfig(fusion_norm=fusion_norm, cond_gate=False), cond_dim=32)
        field.set_bounds(x)
        feat, c = field.fusion_inputs(field.encoding(x, t), cond)
        return float(feat.pow(2).mean().sqrt()), float(c.pow(2).mean().sqrt())

    enc, con = branch_rms("none")
    assert con / enc > 10  # the imbalance the knob exists for
    enc, con = branch_rms("layernorm")
    assert 0.5 < con / enc < 2.0 and 0.5 < enc < 2.0


def test_layernorm_fusion_keeps_identity_start_gradients_and_parameter_groups() -> None:
    # Ungated, so the conditioning norm gets a gradient at the first step.
    field = build_field(small_cfg(fusion_norm="layernorm", depth=2, cond_gate=False), cond_dim=4)
    gen = torch.Generator().manual_seed(0)
    gaussians = canonical_gaussians(20, gen)
    deltas = field(gaussians.means, 0.4, torch.randn(20, 4, generator=gen))
    assert all(torch.count_nonzero(v) == 0 for v in deltas.values())
    _grad_step(field, lambda d: (d["means"] - 0.3).square().mean(), cond_dim=4)
    for name, p in field.named_parameters():
        if name.startswith("fusion_norms."):
            assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reached {name}"
    mlp = {id(p) for p in field.mlp_parameters()}
    enc = {id(p) for p in field.encoding_parameters()}
    assert {id(p) for p in field.fusion_norms.parameters()} <= mlp
    assert enc | mlp == {id(p) for p in field.parameters()}
    # Without a conditioning feature there is nothing to balance.
    assert build_field(small_cfg(fusion_norm="layernorm"), cond_dim=0).fusion_norms is None
    with pytest.raises(ValueError, match="fusion_norm"):
        small_cfg(fusion_norm="batchnorm")


@pytest.mark.parametrize("fusion_norm", ["none", "layernorm"])
def test_zero_gate_starts_the_field_on_its_encoding_alone_and_learns_to_open(
    fusion_norm: str,
) -> None:
    cfg = small_cfg(fusion_norm=fusion_norm, cond_gate=True)
    field = build_field(cfg, cond_dim=4)
    with torch.no_grad():
        for head in field.heads.values():
            head[-1].weight.normal_()  # non-zero outputs, so a dependence on cond would show
    x, t = torch.rand(30, 3) * 2 - 1, torch.rand(30, 1)
    a = field(x, t, torch.randn(30, 4))["means"]
    b = field(x, t, torch.randn(30, 4) * 100)["means"]
    torch.testing.assert_close(a, b, rtol=0, atol=0)  # features ignored at the start
    field(x, t, torch.randn(30, 4))["means"].square().sum().backward()
    assert field.cond_gate.grad is not None and field.cond_gate.grad.abs().sum() > 0
    with torch.no_grad():
        field.cond_gate.fill_(1.0)  # once open, the features do steer the deformation
    c = field(x, t, torch.randn(30, 4) * 100)["means"]
    assert not torch.allclose(a, c)
    assert id(field.cond_gate) in {id(p) for p in field.mlp_parameters()}
    assert build_field(small_cfg(cond_gate=True), cond_dim=0).cond_gate is None


def test_checkpoints_from_before_fusion_norm_keep_their_plain_concatenation() -> None:
    old = {"field": {"encoding": "hexplane", "hidden": 64}}
    assert upgrade_hparams(old)["field"] == {
        "encoding": "hexplane",
        "hidden": 64,
        "fusion_norm": "none",
        "cond_gate": False,
    }
    assert upgrade_hparams({"field": None})["field"] == {"fusion_norm": "none", "cond_gate": False}
    current = {"field": {"fusion_norm": "layernorm", "cond_gate": True}}
    assert upgrade_hparams(current) == current
    assert "field" in UPGRADED_HPARAMS


# ---------------------------------------------------------------- hexplane


def test_hexplane_init_values() -> None:
    hp = HexPlane(feature_dim=4, plane_resolution=6, time_resolution=4, multires=[1, 2])
    assert len(hp.time_planes()) == 6 and len(hp.space_planes()) == 6
    for p in hp.time_planes():
        assert torch.equal(p, torch.ones_like(p))
    for p in hp.space_planes():
        assert p.min() >= 0.1 and p.max() <= 0.5
        assert p.std() > 0  # random, not constant


def _time_ramp_hexplane(half: bool, time_res: int = 5) -> HexPlane:
    """HexPlane whose feature equals 1 + (time sample index) of the xt plane, i.e. t directly."""
    hp = HexPlane(1, 4, time_res, [1], half_time_range=half)
    with torch.no_grad():
        for p in hp.space_planes():
            p.fill_(1.0)
        ramp = torch.arange(time_res, dtype=torch.float32) + 1.0
        hp.grids[0][3].copy_(ramp.view(1, 1, time_res, 1).expand_as(hp.grids[0][3]))
    return hp


def test_time_full_range_hits_first_and_last_samples() -> None:
    hp = _time_ramp_hexplane(half=False)
    x = torch.zeros(3, 3)
    feat = hp(x, torch.tensor([[0.0], [0.5], [1.0]]))[:, 0]
    torch.testing.assert_close(feat, torch.tensor([1.0, 3.0, 5.0]))


def test_time_half_range_parity_flag_uses_upper_half() -> None:
    hp = _time_ramp_hexplane(half=True)
    x = torch.zeros(3, 3)
    feat = hp(x, torch.tensor([[0.0], [0.5], [1.0]]))[:, 0]
    # Grid coordinate t: 0 → middle sample (index 2), 1 → last sample (index 4).
    torch.testing.assert_close(feat, torch.tensor([3.0, 4.0, 5.0]))


def test_time_outside_unit_interval_is_clamped() -> None:
    hp = _time_ramp_hexplane(half=False)
    x = torch.zeros(2, 3)
    feat = hp(x, torch.tensor([[-0.5], [1.5]]))[:, 0]
    torch.testing.assert_close(feat, torch.tensor([1.0, 5.0]))


def test_set_bounds_maps_point_cloud_bbox_to_unit_cube() -> None:
    gen = torch.Generator().manual_seed(2)
    pts = torch.rand(200, 3, generator=gen) * torch.tensor([4.0, 1.0, 0.5]) + torch.tensor(
        [10.0, -3.0, 0.0]
    )
    hp = HexPlane(2, 4, 3, [1])
    hp.set_bounds(pts, margin=0.0)
    u = hp.normalize_positions(pts)
    torch.testing.assert_close(u.min(dim=0).values, -torch.ones(3))
    torch.testing.assert_close(u.max(dim=0).values, torch.ones(3))
    hp.set_bounds(pts)  # default margin keeps the cloud strictly inside
    u = hp.normalize_positions(pts)
    assert u.abs().max() < 1.0 and u.abs().max() > 0.8
    # Outside points are clamped onto the box.
    far = hp.normalize_positions(torch.tensor([[1e3, -1e3, 0.25]]))
    assert far[0, 0] == 1.0 and far[0, 1] == -1.0


def test_set_bounds_via_field_and_constructor_and_flat_cloud() -> None:
    pts = torch.tensor([[0.0, 0.0, 1.0], [2.0, 4.0, 1.0]])  # flat along z
    field = build_field(small_cfg())
    field.set_bounds(pts, margin=0.0)
    lo, hi = field.encoding.aabb
    torch.testing.assert_close(lo[:2], torch.tensor([0.0, 0.0]))
    torch.testing.assert_close(hi[:2], torch.tensor([2.0, 4.0]))
    assert hi[2] > lo[2]  # widened, no division by zero
    assert torch.isfinite(field.encoding.normalize_positions(pts)).all()
    aabb = aabb_from_points(pts, margin=0.5)
    other = build_field(small_cfg("hashgrid"), bounds=aabb)
    torch.testing.assert_close(other.encoding.aabb, aabb)
    assert "encoding.aabb" in other.state_dict()  # bounds survive a checkpoint


def test_hexplane_gradient_reaches_query_positions() -> None:
    hp = HexPlane(2, 4, 3, [1])
    x = (torch.rand(5, 3) * 1.6 - 0.8).requires_grad_()
    hp(x, 0.3).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


# ------------------------------------------------------------- regularizers


def test_regularizers_zero_for_constant_and_all_ones_planes() -> None:
    plane = torch.full((1, 3, 5, 6), 0.7)
    assert plane_tv(plane) == 0
    assert time_smoothness(plane) == 0
    assert time_l1(torch.ones(1, 3, 5, 6)) == 0
    # Time smoothness is second order: a linear ramp in time is free, velocity is not penalised.
    ramp = torch.arange(5.0).view(1, 1, 5, 1).expand(1, 3, 5, 6)
    assert time_smoothness(ramp) == 0
    hp = HexPlane(2, 4, 4, [1, 2])
    regs = hp.regularizers()
    assert set(regs) == {"plane_tv", "time_smooth", "time_l1"}
    assert regs["time_smooth"] == 0 and regs["time_l1"] == 0  # fresh time planes are all ones
    assert regs["plane_tv"] > 0  # spatial planes are random


def test_regularizers_positive_and_differentiable() -> None:
    gen = torch.Generator().manual_seed(4)
    plane = torch.rand(1, 2, 6, 5, generator=gen).requires_grad_()
    for fn in (plane_tv, time_smoothness, time_l1):
        value = fn(plane)
        assert value.ndim == 0 and value > 0
        (grad,) = torch.autograd.grad(value, plane)
        assert grad.abs().sum() > 0
    torch.testing.assert_close(time_l1(torch.zeros(1, 1, 2, 2)), torch.tensor(1.0))
    # Hand-computed: rows [0, 1, 4] → second difference 2, squared 4.
    plane = torch.tensor([0.0, 1.0, 4.0]).view(1, 1, 3, 1)
    torch.testing.assert_close(time_smoothness(plane), torch.tensor(4.0))
    torch.testing.assert_close(plane_tv(plane), torch.tensor((1.0 + 9.0) / 2))

    hp = HexPlane(2, 4, 4, [1])
    with torch.no_grad():
        for p in hp.time_planes():
            p.add_(torch.rand(p.shape, generator=gen))
    regs = hp.regularizers()
    assert all(v > 0 for v in regs.values())
    sum(regs.values()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in hp.parameters())


def test_field_regularizers_delegate_to_encoding() -> None:
    assert set(build_field(small_cfg()).regularizers()) == {"plane_tv", "time_smooth", "time_l1"}
    assert build_field(small_cfg("hashgrid")).regularizers() == {}


# ---------------------------------------------------------------- hash grid


def _random_hashgrid(seed: int) -> HashGrid4D:
    torch.manual_seed(seed)
    hg = HashGrid4D(4, 2, 10, base_resolution=4, max_resolution=32, backend="torch")
    with torch.no_grad():
        hg.table.normal_()  # O(1) features so differences are measurable
    return hg


def test_hashgrid_is_deterministic() -> None:
    a, b = _random_hashgrid(5), _random_hashgrid(5)
    x, t = torch.rand(20, 3) * 2 - 1, torch.rand(20, 1)
    assert torch.equal(a(x, t), a(x, t))
    assert torch.equal(a(x, t), b(x, t))
    assert not torch.equal(a(x, t), _random_hashgrid(6)(x, t))


def test_hashgrid_interpolation_is_continuous() -> None:
    hg = _random_hashgrid(7)
    gen = torch.Generator().manual_seed(8)
    x = torch.rand(50, 3, generator=gen) * 1.8 - 0.9
    t = torch.rand(50, 1, generator=gen)
    eps = 1e-5
    near = hg(x + eps, t + eps) - hg(x, t)
    # Lipschitz bound: finest level has 32 cells over [0, 1]; |table| < ~5.
    assert near.abs().max() < 1e-2
    # Across cell faces of every level: vertex coordinate 0.5 lies on a face of all levels.
    face = torch.zeros(1, 3)  # x = 0 maps to unit coordinate 0.5
    below = hg(face - eps, torch.tensor([[0.5 - eps]]))
    above = hg(face + eps, torch.tensor([[0.5 + eps]]))
    assert (above - below).abs().max() < 1e-2
    far = hg(face + 0.3, torch.tensor([[0.9]]))
    assert (far - below).abs().max() > 0.1  # the features do vary at larger distances


def test_hashgrid_vertex_values_are_interpolated_exactly() -> None:
    """At a vertex of every level the feature is that vertex's table row (weights 1 and 0)."""
    hg = _random_hashgrid(9)
    x = torch.full((1, 3), -1.0)  # unit coordinate 0: vertex (0, 0, 0, 0) on every level
    feat = hg(x, 0.0).view(hg.levels, hg.features_per_level)
    for level in range(hg.levels):
        row = hg.level_indices(level, torch.zeros(1, 4, dtype=torch.long))
        torch.testing.assert_close(feat[level], hg.table[row[0]])


def test_hashgrid_gradients_reach_table() -> None:
    hg = HashGrid4D(3, 2, 8, base_resolution=2, max_resolution=16, backend="torch")
    hg(torch.rand(10, 3), torch.rand(10, 1)).square().sum().backward()
    assert hg.table.grad is not None and hg.table.grad.abs().sum() > 0


def test_hashgrid_bad_backend_and_missing_tcnn() -> None:
    with pytest.raises(ValueError, match="backend"):
        HashGrid4D(backend="cuda")
    try:
        import tinycudann  # noqa: F401
    except (ImportError, OSError):
        with pytest.raises(ImportError, match="tinycudann"):
            HashGrid4D(backend="tcnn")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_hashgrid_tcnn_backend_matches_interface() -> None:
    pytest.importorskip("tinycudann")
    hg = HashGrid4D(4, 2, 12, base_resolution=4, max_resolution=32, backend="auto").cuda()
    assert hg.backend == "tcnn"
    x = torch.rand(100, 3, device="cuda")
    feat = hg(x, 0.5)
    assert feat.shape == (100, hg.out_dim) and feat.dtype == torch.float32
    feat.square().sum().backward()
    with pytest.raises(ValueError, match="CUDA"):
        hg(x.cpu(), 0.5)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("encoding", ["hexplane", "hashgrid"])
def test_bad_query_shapes_raise(encoding: str) -> None:
    field = build_field(small_cfg(encoding))
    with pytest.raises(ValueError, match=r"x must have shape \(N, 3\), got \(4, 2\)"):
        field(torch.zeros(4, 2), 0.5)
    with pytest.raises(ValueError, match="N=4"):
        field(torch.zeros(4, 3), torch.zeros(3, 1))


@pytest.mark.parametrize("encoding", ["hexplane", "hashgrid"])
def test_nan_positions_propagate_instead_of_crashing(encoding: str) -> None:
    """A NaN centre gives a NaN feature for that point only (the loss then reports it)."""
    field = build_field(small_cfg(encoding))
    x = torch.rand(3, 3)
    x[1, 0] = float("nan")
    feat = field.encoding(x, 0.5)
    assert torch.isnan(feat[1]).all()
    assert torch.isfinite(feat[[0, 2]]).all()


def test_bad_cond_raises_with_widths() -> None:
    conditioned = build_field(small_cfg(), cond_dim=5)
    with pytest.raises(ValueError, match=r"cond_dim=5.*\(4, 3\)"):
        conditioned(torch.zeros(4, 3), 0.5, torch.zeros(4, 3))
    with pytest.raises(ValueError, match="cond_dim=5 but no conditioning was given"):
        conditioned(torch.zeros(4, 3), 0.5)
    plain = build_field(small_cfg(), cond_dim=0)
    with pytest.raises(ValueError, match=r"shape \(4, 5\).*cond_dim=0"):
        plain(torch.zeros(4, 3), 0.5, torch.zeros(4, 5))


def test_bad_construction_raises() -> None:
    with pytest.raises(ValueError, match="multires"):
        HexPlane(multires=[])
    with pytest.raises(ValueError, match="time_resolution"):
        HexPlane(time_resolution=1)
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        HexPlane(bounds=torch.zeros(3, 3))
    with pytest.raises(ValueError, match="min < max"):
        HexPlane(bounds=torch.tensor([[0.0, 0, 0], [1.0, 0, 1]]))
    with pytest.raises(ValueError, match="hash_backend"):
        FieldConfig(hash_backend="gpu")
    with pytest.raises(ValueError, match="points"):
        HexPlane().set_bounds(torch.zeros(5, 2))
