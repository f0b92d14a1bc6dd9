"""Spec of ds4d_pl.gaussians.densify: statistics, clone/split/prune, lock-step resizing."""

from __future__ import annotations

import math

import pytest
import torch

from ds4d_pl.config import DensifyConfig, OptimConfig
from ds4d_pl.gaussians.canonical import CanonicalGaussians
from ds4d_pl.gaussians.densify import DensifyStrategy
from ds4d_pl.optim import build_optimizer, group_table
from ds4d_pl.render.base import RenderOutput

W, H = 64, 48


def fake_render(grad: torch.Tensor, radii: torch.Tensor) -> RenderOutput:
    """A render output whose means2d carries ``grad`` (C, N, 2), as after backward."""
    c, n, _ = grad.shape
    means2d = torch.zeros(c, n, 2, requires_grad=True)
    means2d.grad = grad.clone()
    return RenderOutput(
        rgb=torch.zeros(c, H, W, 3),
        alpha=torch.zeros(c, H, W, 1),
        depth=torch.zeros(c, H, W, 1),
        means2d=means2d,
        radii=radii,
    )


def make_gaussians(n: int = 20, small: int = 10) -> CanonicalGaussians:
    """``small`` tiny Gaussians then ``n - small`` large ones, all half opaque, on the x axis."""
    pts = torch.zeros(n, 3)
    pts[:, 0] = torch.linspace(-1, 1, n)
    g = CanonicalGaussians.from_points(pts, sh_degree=1, init_opacity=0.5)
    with torch.no_grad():
        g.log_scales[:small] = math.log(0.001)
        g.log_scales[small:] = math.log(0.1)
        g.quats.copy_(torch.nn.functional.normalize(torch.randn(n, 4), dim=-1))
        g.sh_rest.normal_()
    return g


def adam_for(g: CanonicalGaussians) -> torch.optim.Adam:
    """Adam over the Gaussian tables, built from the optimiser table as the system does."""
    groups = {name: [getattr(g, name)] for name in g.TABLES}
    return build_optimizer(groups, group_table(OptimConfig()), extent=1.0, eps=1e-15)


def make_optimizer(g: CanonicalGaussians) -> torch.optim.Adam:
    opt = adam_for(g)
    # One real step so every Adam moment is populated and distinct per row.
    loss = sum((getattr(g, name) * torch.randn_like(getattr(g, name))).sum() for name in g.TABLES)
    loss.backward()
    opt.step()
    opt.zero_grad()
    return opt


def cfg(**kw) -> DensifyConfig:
    base = dict(
        start_step=100,
        stop_step=1000,
        interval=100,
        grad_top_percent=0.2,
        grad_threshold=1e-3,
        split_scale_fraction=0.01,
        prune_opacity=0.005,
        prune_scale_fraction=0.5,
        max_gaussians=1000,
    )
    base.update(kw)
    return DensifyConfig(**base)


def grads_for(n: int, per_gaussian: dict[int, float], floor: float = 0.0) -> torch.Tensor:
    """(1, N, 2) grads whose NDC-scaled norm is ``per_gaussian[i]`` (``floor`` elsewhere)."""
    g = torch.full((1, n, 2), 0.0)
    g[0, :, 0] = floor / (W / 2)
    for i, v in per_gaussian.items():
        g[0, i, 0] = v / (W / 2)
    return g


def assert_lockstep(g: CanonicalGaussians, opt: torch.optim.Optimizer, s: DensifyStrategy):
    n = g.num_gaussians
    for name in g.TABLES:
        p = getattr(g, name)
        assert p.shape[0] == n, name
        group = next(grp for grp in opt.param_groups if grp["name"] == name)
        assert group["params"][0] is p, f"optimizer holds a stale {name}"
        state = opt.state[p]
        assert state["exp_avg"].shape == p.shape and state["exp_avg_sq"].shape == p.shape
    assert len(opt.state) == len(g.TABLES)  # no orphaned state of replaced Parameters
    for t in (s.grad_accum, s.count, s.max_radii):
        assert t.shape == (n,)


def test_accumulate_scales_to_ndc_and_counts_visible():
    s = DensifyStrategy(cfg(), extent=1.0)
    grad = torch.zeros(2, 3, 2)
    grad[..., 0] = 1.0  # one pixel-unit gradient along x
    grad[1, :, 1] = 1.0
    radii = torch.tensor([[2, 0, 4], [1, 1, 0]])
    s.accumulate(fake_render(grad, radii), W, H)
    ndc0 = W / 2
    ndc1 = math.hypot(W / 2, H / 2)
    assert torch.allclose(s.grad_accum, torch.tensor([ndc0 + ndc1, ndc1, ndc0]))
    assert torch.equal(s.count, torch.tensor([2.0, 1.0, 1.0]))
    assert torch.allclose(s.max_radii, torch.tensor([2.0, 1.0, 4.0]) / max(W, H))


def test_accumulate_requires_grad_and_matching_size():
    s = DensifyStrategy(cfg(), extent=1.0)
    out = fake_render(torch.zeros(1, 4, 2), torch.ones(1, 4))
    out.means2d.grad = None
    with pytest.raises(RuntimeError, match="after backward"):
        s.accumulate(out, W, H)
    # A render where nothing is visible has no gradient to record and is skipped.
    blank = fake_render(torch.zeros(1, 4, 2), torch.zeros(1, 4))
    blank.means2d.grad = None
    s.accumulate(blank, W, H)
    assert s.num_tracked is None
    s.accumulate(fake_render(torch.zeros(1, 4, 2), torch.ones(1, 4)), W, H)
    with pytest.raises(ValueError, match="track 4"):
        s.accumulate(fake_render(torch.zeros(1, 5, 2), torch.ones(1, 5)), W, H)


def test_accumulate_from_real_backward():
    g = make_gaussians(6)
    s = DensifyStrategy(cfg(), extent=1.0)
    means2d = (g.means[None, :, :2] * 10).clone()
    means2d.retain_grad()
    out = RenderOutput(
        torch.zeros(1, H, W, 3), torch.zeros(1, H, W, 1), torch.zeros(1, H, W, 1),
        means2d, torch.ones(1, 6),
    )  # fmt: skip
    out.means2d.sum().backward()
    s.accumulate(out, W, H)
    assert torch.allclose(s.grad_accum, torch.full((6,), math.hypot(W / 2, H / 2)))


def test_top_percent_clone_and_split_counts_exact():
    torch.manual_seed(0)
    g = make_gaussians(20, small=10)
    opt = make_optimizer(g)
    before = g.raw_tables()
    state_before = {name: opt.state[getattr(g, name)]["exp_avg"].clone() for name in g.TABLES}
    s = DensifyStrategy(cfg(), extent=1.0)
    # top 20% of 20 = 4: two small (0, 1) and two large (10, 11). Gaussian 5 is above the
    # threshold but not in the top 4; the rest are below the threshold.
    grads = grads_for(20, {0: 0.9, 1: 0.8, 10: 0.7, 11: 0.6, 5: 0.5}, floor=1e-4)
    s.accumulate(fake_render(grads, torch.ones(1, 20)), W, H)
    counts = s.step(100, g, opt, torch.Generator().manual_seed(0))
    assert counts == {"cloned": 2, "split": 2, "pruned": 0, "reset": 0, "total": 24}
    assert g.num_gaussians == 24
    assert_lockstep(g, opt, s)

    kept = [*range(10), *range(12, 20)]  # split originals 10 and 11 are gone
    for name in g.TABLES:
        now = getattr(g, name).detach()
        assert torch.equal(now[:18], before[name][kept]), name
        # Clones (of 0 then 1, by decreasing gradient) are exact copies.
        assert torch.equal(now[18:20], before[name][[0, 1]]), name
        # Adam: kept rows gathered, new rows zero.
        exp_avg = opt.state[getattr(g, name)]["exp_avg"]
        assert torch.equal(exp_avg[:18], state_before[name][kept]), name
        assert (exp_avg[18:] == 0).all(), name
    # Split children: two per parent, scale / 1.6, near the parent, other tables copied.
    children = g.means.detach()[20:]
    parents = before["means"][[10, 10, 11, 11]]
    assert torch.allclose(
        g.log_scales.detach()[20:], before["log_scales"][[10, 10, 11, 11]] - math.log(1.6)
    )
    assert not torch.equal(children, parents)
    assert ((children - parents).norm(dim=1) < 0.1 * 6).all()
    assert torch.equal(g.sh_rest.detach()[20:], before["sh_rest"][[10, 10, 11, 11]])
    # Statistics reset after the event.
    assert (s.grad_accum == 0).all() and (s.count == 0).all()
    # The optimizer still steps on the new tables and updates them.
    means_before = g.means.detach().clone()
    loss = sum(getattr(g, name).square().sum() for name in g.TABLES)
    loss.backward()
    opt.step()
    assert not torch.equal(g.means.detach(), means_before)


def test_threshold_blocks_growth():
    g = make_gaussians(20)
    opt = make_optimizer(g)
    s = DensifyStrategy(cfg(grad_threshold=10.0), extent=1.0)
    s.accumulate(fake_render(grads_for(20, {0: 0.9}), torch.ones(1, 20)), W, H)
    assert s.step(100, g, opt) == {"cloned": 0, "split": 0, "pruned": 0, "reset": 0, "total": 20}


def test_quantile_rule_selects_the_configured_top_fraction_of_seen_gaussians():
    g = make_gaussians(20)
    opt = make_optimizer(g)
    # Gradients far below any absolute threshold: the relative rule still picks the top 20 %.
    s = DensifyStrategy(cfg(grad_rule="quantile", grad_threshold=10.0), extent=1.0)
    grads = grads_for(20, {i: 1e-4 * (i + 1) for i in range(20)})
    s.accumulate(fake_render(grads, torch.ones(1, 20)), W, H)
    mean_grad = s.grad_accum / s.count
    level = torch.quantile(mean_grad.double(), 0.8)
    expected = set((mean_grad.double() >= level).nonzero().squeeze(1).tolist())
    assert expected == {16, 17, 18, 19}
    assert [int(i) for i in s._select_for_growth(g)] == [19, 18, 17, 16]
    counts = s.step(100, g, opt, torch.Generator().manual_seed(0))
    assert counts["cloned"] + counts["split"] == 4
    assert_lockstep(g, opt, s)


def test_quantile_rule_counts_only_seen_gaussians_and_never_grows_on_zero_gradient():
    g = make_gaussians(20)
    s = DensifyStrategy(cfg(grad_rule="quantile", grad_top_percent=0.2), extent=1.0)
    radii = torch.zeros(1, 20)
    radii[0, :10] = 1.0  # only the first ten are seen
    s.accumulate(fake_render(grads_for(20, {i: 0.1 * (i + 1) for i in range(10)}), radii), W, H)
    assert sorted(int(i) for i in s._select_for_growth(g)) == [8, 9]  # 20 % of the 10 seen
    flat = DensifyStrategy(cfg(grad_rule="quantile"), extent=1.0)
    flat.accumulate(fake_render(torch.zeros(1, 20, 2), torch.ones(1, 20)), W, H)
    assert flat._select_for_growth(g).numel() == 0


def test_unknown_grad_rule_is_refused():
    with pytest.raises(ValueError, match="grad_rule"):
        cfg(grad_rule="sometimes")


def test_invisible_gaussians_are_not_densified():
    g = make_gaussians(20)
    opt = make_optimizer(g)
    s = DensifyStrategy(cfg(), extent=1.0)
    radii = torch.zeros(1, 20)  # nothing visible: gradients do not count
    s.accumulate(fake_render(grads_for(20, {0: 0.9, 1: 0.8}), radii), W, H)
    assert s.step(100, g, opt)["total"] == 20


def test_prune_low_opacity_and_too_large():
    g = make_gaussians(20)
    with torch.no_grad():
        g.logit_opacities[[3, 4, 7]] = -10.0  # opacity ~4.5e-5 < 0.005
        g.log_scales[15] = math.log(0.8)  # larger than 0.5 × extent
    opt = make_optimizer(g)
    before = g.raw_tables()
    s = DensifyStrategy(cfg(), extent=1.0)
    counts = s.step(200, g, opt)
    assert counts == {"cloned": 0, "split": 0, "pruned": 4, "reset": 0, "total": 16}
    assert_lockstep(g, opt, s)
    kept = [i for i in range(20) if i not in (3, 4, 7, 15)]
    for name in g.TABLES:  # survivors keep their order and values
        assert torch.equal(getattr(g, name).detach(), before[name][kept]), name


def test_prune_by_screen_size_is_optional():
    g = make_gaussians(10, small=10)
    opt = make_optimizer(g)
    radii = torch.zeros(1, 10)
    radii[0, 2] = 40  # 40 / 64 of the image
    off = DensifyStrategy(cfg(grad_threshold=1e9), extent=1.0)
    off.accumulate(fake_render(torch.zeros(1, 10, 2), radii), W, H)
    assert off.step(100, g, opt)["pruned"] == 0
    on = DensifyStrategy(cfg(grad_threshold=1e9, prune_screen_fraction=0.5), extent=1.0)
    on.accumulate(fake_render(torch.zeros(1, 10, 2), radii), W, H)
    assert on.step(100, g, opt)["pruned"] == 1
    assert_lockstep(g, opt, on)


def test_never_prunes_everything():
    g = make_gaussians(5)
    with torch.no_grad():
        g.logit_opacities.fill_(-20.0)
    opt = make_optimizer(g)
    s = DensifyStrategy(cfg(), extent=1.0)
    with pytest.warns(UserWarning, match="every Gaussian"):
        assert s.step(100, g, opt)["total"] == 5


def test_max_gaussians_respected():
    g = make_gaussians(20)
    opt = make_optimizer(g)
    s = DensifyStrategy(cfg(grad_top_percent=0.5, max_gaussians=23), extent=1.0)
    s.accumulate(fake_render(grads_for(20, {}, floor=1.0), torch.ones(1, 20)), W, H)
    counts = s.step(100, g, opt)
    assert counts["cloned"] + counts["split"] == 3
    assert g.num_gaussians == 23
    assert_lockstep(g, opt, s)
    # Full: no further growth.
    s.accumulate(fake_render(grads_for(23, {}, floor=1.0), torch.ones(1, 23)), W, H)
    assert s.step(200, g, opt)["total"] == 23


@pytest.mark.parametrize("step", [0, 50, 150, 1100, 1200])
def test_no_event_outside_window_or_off_interval(step):
    g = make_gaussians(20)
    with torch.no_grad():
        g.logit_opacities[0] = -10.0  # would be pruned at an event
    opt = make_optimizer(g)
    s = DensifyStrategy(cfg(reset_opacity_interval=100), extent=1.0)
    s.accumulate(fake_render(grads_for(20, {}, floor=1.0), torch.ones(1, 20)), W, H)
    accum = s.grad_accum.clone()
    counts = s.step(step, g, opt)
    assert counts == {"cloned": 0, "split": 0, "pruned": 0, "reset": 0, "total": 20}
    assert torch.equal(s.grad_accum, accum)  # statistics keep accumulating between events


def test_disabled_never_acts():
    g = make_gaussians(20)
    opt = make_optimizer(g)
    s = DensifyStrategy(cfg(enabled=False), extent=1.0)
    s.accumulate(fake_render(grads_for(20, {}, floor=1.0), torch.ones(1, 20)), W, H)
    assert s.step(100, g, opt)["total"] == 20


def test_opacity_reset():
    g = make_gaussians(20)
    opt = make_optimizer(g)
    s = DensifyStrategy(cfg(reset_opacity_interval=300, grad_threshold=1e9), extent=1.0)
    assert s.step(300, g, opt)["reset"] == 1
    assert torch.allclose(torch.sigmoid(g.logit_opacities.detach()), torch.full((20,), 0.01))
    assert (opt.state[g.logit_opacities]["exp_avg"] == 0).all()
    assert s.step(400, g, opt)["reset"] == 0


def test_reduce_statistics_hook():
    s = DensifyStrategy(cfg(), extent=1.0)
    s.reduce_statistics(lambda t: t * 2)  # before any statistics: no-op
    s.accumulate(fake_render(grads_for(3, {0: 1.0}), torch.tensor([[1, 2, 0]])), W, H)
    before = s.state_dict()
    s.reduce_statistics()  # identity by default
    assert torch.equal(s.grad_accum, before["grad_accum"])
    s.reduce_statistics(lambda t: t * 2, lambda t: t + 1)
    assert torch.equal(s.count, before["count"] * 2)
    assert torch.equal(s.max_radii, before["max_radii"] + 1)


def test_strategy_state_dict_round_trip_any_size():
    a = DensifyStrategy(cfg(), extent=2.0)
    a.accumulate(fake_render(torch.rand(2, 7, 2), torch.randint(0, 3, (2, 7))), W, H)
    b = DensifyStrategy(cfg(), extent=1.0)
    b.accumulate(fake_render(torch.rand(1, 3, 2), torch.ones(1, 3)), W, H)
    b.load_state_dict(a.state_dict())
    assert b.extent == 2.0 and b.num_tracked == 7
    for name in ("grad_accum", "count", "max_radii"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    fresh = DensifyStrategy(cfg(), extent=1.0)
    fresh.load_state_dict(DensifyStrategy(cfg(), extent=3.0).state_dict())
    assert fresh.num_tracked is None and fresh.extent == 3.0


def test_resume_after_densification():
    """Model + optimizer + strategy checkpoint written after growth loads into fresh objects."""
    g = make_gaussians(20)
    opt = make_optimizer(g)
    s = DensifyStrategy(cfg(), extent=1.0)
    s.accumulate(fake_render(grads_for(20, {0: 0.9, 10: 0.8}), torch.ones(1, 20)), W, H)
    s.step(100, g, opt)
    ckpt = {"model": g.state_dict(), "opt": opt.state_dict(), "strategy": s.state_dict()}

    g2 = make_gaussians(20)
    g2.load_state_dict(ckpt["model"])
    opt2 = adam_for(g2)
    opt2.load_state_dict(ckpt["opt"])
    s2 = DensifyStrategy(cfg(), extent=1.0)
    s2.load_state_dict(ckpt["strategy"])
    assert g2.num_gaussians == 22
    assert_lockstep(g2, opt2, s2)
    for name in g.TABLES:
        assert torch.equal(
            opt2.state[getattr(g2, name)]["exp_avg"], opt.state[getattr(g, name)]["exp_avg"]
        )
