"""Data plumbing: sampler, DataModule, atomic writes (parsers: test_parsers_objects.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ds4d_pl.atomic import atomic_path, write_json
from ds4d_pl.cameras import orbit_cameras
from ds4d_pl.data.datamodule import DS4DDataModule
from ds4d_pl.data.parsers.synthetic import SyntheticConfig
from ds4d_pl.data.sampler import FrameSampler, step_generator
from ds4d_pl.data.types import ViewSet, motion_mask


def _views(v: int = 4, t: int = 5, s: int = 8) -> ViewSet:
    g = torch.Generator().manual_seed(0)
    return ViewSet(
        rgb=torch.rand(v, t, s, s, 3, generator=g),
        alpha=torch.rand(v, t, s, s, 1, generator=g),
        cameras=orbit_cameras([0.0] * v, [90.0 * i for i in range(v)], s, s),
        times=torch.linspace(0, 1, t),
    )


def test_sampler_always_renders_input_views_and_a_subset_of_pseudo_views() -> None:
    s = FrameSampler(_views(), num_input_views=1, background=torch.ones(3))
    batches = s.sample(step_generator(0, 3), frames_per_step=2, pseudo_views_per_step=2)
    assert len(batches) == 2
    for b in batches:
        assert b.view_ids[0] == 0 and len(b) == 3
        assert b.is_input.tolist() == [True, False, False]
        assert len(set(b.view_ids.tolist())) == 3
        assert torch.all(b.times == b.times[0])
        f = int(b.frame_ids[0])
        v = int(b.view_ids[1])
        vs = s.views
        expect = vs.rgb[v, f] * vs.alpha[v, f] + (1 - vs.alpha[v, f])
        assert torch.allclose(b.rgb[1], expect)
    assert len(s.sample(step_generator(0, 3), 1, -1)[0]) == 4


def test_sampler_is_a_function_of_seed_step_and_rank() -> None:
    s = FrameSampler(_views(), 1, torch.ones(3))

    def draw(seed: int, step: int, rank: int) -> list:
        return [
            b.view_ids.tolist() + b.frame_ids.tolist()
            for b in s.sample(step_generator(seed, step, rank), 2, 2)
        ]

    assert draw(0, 7, 0) == draw(0, 7, 0)
    assert any(draw(0, 7, 0) != draw(0, st, 0) for st in range(8, 12))
    assert any(draw(0, st, 0) != draw(0, st, 1) for st in range(4))
    assert s.sample(step_generator(0, 0), 3, 1, frames=[2])[0].frame_ids.tolist() == [2, 2]


def test_viewset_validates_shapes() -> None:
    v = _views()
    with pytest.raises(ValueError, match="alpha"):
        ViewSet(v.rgb, v.alpha[..., :4, :], v.cameras, v.times)
    with pytest.raises(ValueError, match="cameras"):
        ViewSet(v.rgb, v.alpha, v.cameras[0:2], v.times)
    with pytest.raises(ValueError, match="times"):
        ViewSet(v.rgb, v.alpha, v.cameras, v.times[:2])


def test_viewset_with_a_camera_per_frame_serves_each_frames_camera() -> None:
    v = _views(v=2, t=3)
    per_frame = orbit_cameras([0.0] * 6, [10.0 * i for i in range(6)], 8, 8)
    vs = ViewSet(v.rgb[:2, :3], v.alpha[:2, :3], per_frame, v.times[:3])
    assert vs.per_frame_cameras and not v.per_frame_cameras
    # View-major: view 1 at frame 2 is camera 1 * 3 + 2.
    assert torch.equal(vs.cameras_at(2).c2w, per_frame.c2w[[2, 5]])
    assert torch.equal(v.cameras_at(4).c2w, v.cameras.c2w)
    s = FrameSampler(vs, num_input_views=2, background=torch.ones(3))
    b = s.sample(step_generator(0, 0), 1, 0, frames=[1])[0]
    assert torch.equal(b.cameras.c2w, per_frame.c2w[[1, 4]])
    # Camera motion changes every pixel: no derived dynamic mask (metrics report n/a).
    assert not vs.dynamic_mask().any()
    with pytest.raises(ValueError, match="per-frame cameras"):
        ViewSet(v.rgb[:2, :3], v.alpha[:2, :3], per_frame[:5], v.times[:3])
    with pytest.raises(ValueError, match="sorted"):
        ViewSet(v.rgb[:2, :3], v.alpha[:2, :3], per_frame, v.times[:3].flip(0))


def test_sampler_draws_a_subset_of_real_views_for_multiview_scenes() -> None:
    s = FrameSampler(_views(v=4), num_input_views=4, background=torch.ones(3))
    seen = set()
    for step in range(6):
        (b,) = s.sample(step_generator(0, step), 1, 0, input_views_per_step=2)
        assert len(b) == 2 and bool(b.is_input.all())
        assert b.view_ids.tolist() == sorted(set(b.view_ids.tolist()))
        seen.update(b.view_ids.tolist())
    assert seen == {0, 1, 2, 3}


def test_motion_mask_marks_pixels_that_change() -> None:
    frames = torch.zeros(1, 4, 6, 6, 3)
    frames[0, 2, 1, 1] = 1.0
    m = motion_mask(frames)
    assert m.shape == (1, 4, 6, 6, 1)
    assert m[0, :, 1, 1].all() and m.sum() == 4


def test_datamodule_requires_root_for_file_formats_and_rejects_unknown_formats() -> None:
    with pytest.raises(ValueError, match="data.root"):
        DS4DDataModule(dataset="consistent4d")
    with pytest.raises(ValueError, match="synthetic"):
        DS4DDataModule(dataset="nerf_synthetic")


def test_datamodule_serves_eval_frames_with_dynamic_masks() -> None:
    dm = DS4DDataModule(
        synthetic=SyntheticConfig(num_frames=4, resolution=16, eval_resolution=16), val_frames=2
    )
    dm.setup("fit")
    assert dm.splits("val") == ["eval"] and dm.splits("test") == ["eval", "input"]
    (val_loader,) = dm.val_dataloader()
    val = list(val_loader)
    assert [b["frame"] for b in val] == [0, 3]
    item = val[0]
    assert item["rgb"].shape == (4, 16, 16, 3) and item["dyn_mask"].dtype == torch.bool
    eval_loader, input_loader = dm.test_dataloader()
    assert len(list(eval_loader)) == 4 and len(list(input_loader)) == 4
    steps = iter(dm.train_dataloader())
    assert [next(steps) for _ in range(3)] == [0, 1, 2]


def test_atomic_path_leaves_target_untouched_on_error(tmp_path: Path) -> None:
    target = tmp_path / "a" / "m.json"
    write_json(target, {"x": 1})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("partial")
        raise RuntimeError("killed")
    assert target.read_text().strip().startswith("{")
    assert sorted(p.name for p in target.parent.iterdir()) == ["m.json"]


def test_scene_states_the_background_it_is_meant_for() -> None:
    from ds4d_pl.data.parsers.synthetic import SyntheticConfig, make_synthetic_scene

    scene = make_synthetic_scene(SyntheticConfig(num_frames=2, resolution=16, eval_resolution=16))
    scene.meta["background"] = (1.0, 1.0, 1.0)
    assert torch.equal(scene.intended_background(), torch.ones(3))
    for unclear in (None, "white", (1.0, 1.0), (True, 1.0, 1.0)):
        scene.meta["background"] = unclear
        assert scene.intended_background() is None
