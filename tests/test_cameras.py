"""Camera conventions (docs/design.md §6): OpenCV axes, y-up world, Zero123 orbit angles."""

from __future__ import annotations

import math

import pytest
import torch

from ds4d_pl.cameras import (
    Cameras,
    consistent4d_eval_cameras,
    intrinsics_from_fov,
    look_at,
    opengl_to_opencv,
    orbit_cameras,
    turntable_cameras,
    zero123pp_cameras,
)


def test_front_camera_sits_on_plus_z_and_projects_origin_to_centre() -> None:
    cam = orbit_cameras([0.0], [0.0], 64, 48)
    assert torch.allclose(cam.centers[0], torch.tensor([0.0, 0.0, 2.0]), atol=1e-6)
    uv, z = cam.project(torch.zeros(1, 3))
    assert torch.allclose(uv[0, 0], torch.tensor([32.0, 24.0]), atol=1e-4)
    assert z[0, 0] == pytest.approx(2.0)


def test_opencv_axes_world_up_is_image_up_and_plus_x_is_image_right() -> None:
    cam = orbit_cameras([0.0], [0.0], 64, 64)
    uv, _ = cam.project(torch.tensor([[0.0, 0.3, 0.0], [0.3, 0.0, 0.0]]))
    assert uv[0, 0, 1] < 32  # above the centre: smaller row index (y down)
    assert uv[0, 1, 0] > 32  # world +x appears on the right in the front view


def test_positive_elevation_puts_camera_above() -> None:
    cam = orbit_cameras([30.0], [0.0], 32, 32)
    assert cam.centers[0, 1] == pytest.approx(2.0 * math.sin(math.radians(30.0)), abs=1e-5)
    uv, _ = cam.project(torch.zeros(1, 3))
    assert torch.allclose(uv[0, 0], torch.tensor([16.0, 16.0]), atol=1e-4)


def test_positive_azimuth_swings_towards_plus_x() -> None:
    cam = orbit_cameras([0.0], [90.0], 32, 32)
    assert torch.allclose(cam.centers[0], torch.tensor([2.0, 0.0, 0.0]), atol=1e-5)


def test_rotation_is_orthonormal_and_right_handed() -> None:
    cams = orbit_cameras([-20.0, 0.0, 30.0, 89.0], [0.0, 45.0, 200.0, 10.0], 16, 16)
    r = cams.c2w[:, :3, :3]
    assert torch.allclose(r.transpose(1, 2) @ r, torch.eye(3).expand(4, 3, 3), atol=1e-5)
    assert torch.allclose(torch.linalg.det(r), torch.ones(4), atol=1e-5)


def test_look_at_straight_down_is_not_degenerate() -> None:
    c2w = look_at(torch.tensor([[0.0, 2.0, 0.0]]))
    assert torch.isfinite(c2w).all()
    assert torch.allclose(c2w[0, :3, 2], torch.tensor([0.0, -1.0, 0.0]), atol=1e-6)


def test_fov_intrinsics_match_focal_length_formula() -> None:
    K = intrinsics_from_fov(49.1, 256, 256)
    assert K[1, 1] == pytest.approx(128 / math.tan(math.radians(49.1) / 2))


def test_protocol_camera_sets() -> None:
    ev = consistent4d_eval_cameras(32, 32)
    az = torch.rad2deg(torch.atan2(ev.centers[:, 0], ev.centers[:, 2]))
    assert torch.allclose(az, torch.tensor([-75.0, 15.0, 105.0, -165.0]), atol=1e-3)
    z = zero123pp_cameras(32, 32)
    el = torch.rad2deg(torch.asin(z.centers[:, 1] / 2.0))
    assert torch.allclose(el, torch.tensor([30.0, -20.0] * 3), atol=1e-3)
    v12 = zero123pp_cameras(8, 8, "v1.2")
    r12 = v12.centers.norm(dim=-1)
    assert torch.allclose(
        torch.rad2deg(torch.asin(v12.centers[:, 1] / r12)),
        torch.tensor([20.0, -10.0] * 3),
        atol=1e-3,
    )
    # v1.2 views have a 30° field of view, placed so the object fills them as it fills the
    # 49.1° input view at radius 2: the half-width seen at the origin is the same.
    assert v12.K[0, 1, 1] == pytest.approx(4 / math.tan(math.radians(15.0)))
    seen = r12 * math.tan(math.radians(15.0))
    assert torch.allclose(seen, torch.full((6,), 2.0 * math.tan(math.radians(49.1 / 2))))
    with pytest.raises(ValueError, match="v1.3"):
        zero123pp_cameras(8, 8, "v1.3")
    assert len(turntable_cameras(10, 8, 8)) == 10


def test_opengl_conversion_flips_y_and_z_axes() -> None:
    gl = torch.eye(4)[None].clone()
    gl[0, :3, 3] = torch.tensor([0.0, 0.0, 2.0])  # Blender camera at +z looking down -z
    cv = Cameras(opengl_to_opencv(gl), intrinsics_from_fov(50.0, 32, 32)[None], 32, 32)
    uv, z = cv.project(torch.tensor([[0.0, 0.5, 0.0]]))
    assert z[0, 0] == pytest.approx(2.0)
    assert uv[0, 0, 1] < 16  # world up is image up after conversion


def test_bad_shapes_raise() -> None:
    with pytest.raises(ValueError, match="c2w"):
        Cameras(torch.eye(3)[None], torch.eye(3)[None], 4, 4)
    with pytest.raises(ValueError, match="K"):
        Cameras(torch.eye(4)[None], torch.eye(3)[None].repeat(2, 1, 1), 4, 4)
    with pytest.raises(ValueError, match="image size"):
        Cameras.cat([orbit_cameras([0.0], [0.0], 8, 8), orbit_cameras([0.0], [0.0], 4, 4)])


def test_resized_scales_intrinsics() -> None:
    cam = orbit_cameras([0.0], [0.0], 64, 64).resized(32, 16)
    uv, _ = cam.project(torch.zeros(1, 3))
    assert torch.allclose(uv[0, 0], torch.tensor([16.0, 8.0]), atol=1e-4)
