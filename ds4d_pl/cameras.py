"""Pinhole cameras and the package's axis conventions.

Conventions (docs/design.md §6):
  * World is right-handed and y-up; objects sit at the origin.
  * ``Cameras.c2w`` is camera-to-world in **OpenCV** axes (x right, y down, z forward).
  * Orbit angles follow the Zero123 protocol: the camera position is
    ``radius * (cos(el) sin(az), sin(el), cos(el) cos(az))``, so azimuth 0 / elevation 0 looks
    at the object from +z (the input "front" view), positive elevation puts the camera above the
    object and positive azimuth swings it towards +x.
  * Loaders that read Blender/OpenGL (x right, y up, z backward) poses convert them with
    :func:`opengl_to_opencv` and nowhere else.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

#: Zero123 object protocol: radius and vertical field of view (degrees).
OBJECT_RADIUS = 2.0
OBJECT_FOV_Y_DEG = 49.1
#: Consistent4D evaluation azimuths (degrees), elevation 0.
CONSISTENT4D_EVAL_AZIMUTHS = (-75.0, 15.0, 105.0, 195.0)
#: Zero123++ v1.1 pseudo-view poses (elevation, azimuth) in degrees; v1.2 uses +20/-10.
ZERO123PP_V11_POSES = tuple((30.0 if i % 2 == 0 else -20.0, 30.0 + 60.0 * i) for i in range(6))
ZERO123PP_V12_POSES = tuple((20.0 if i % 2 == 0 else -10.0, 30.0 + 60.0 * i) for i in range(6))
#: Zero123++ v1.2 renders every view with a 30° field of view ("unifies the output field of
#: view to 30°", Zero123++ README); v1.1 keeps the input's. The v1.2 camera distance is chosen so
#: the protocol's object fills its views as it fills the 49.1° input view at radius 2 (the
#: README states normalised object size, not a distance).
ZERO123PP_V12_FOV_Y_DEG = 30.0
ZERO123PP_V12_RADIUS = (
    OBJECT_RADIUS * math.tan(math.radians(OBJECT_FOV_Y_DEG) / 2) / math.tan(math.radians(15.0))
)
#: Named turntable views used for the output videos (azimuth degrees).
NAMED_VIEWS = {"front": 0.0, "right": 90.0, "back": 180.0, "left": 270.0}

_OPENGL_TO_OPENCV = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0]))


@dataclass
class Cameras:
    """A batch of pinhole cameras sharing one image size.

    Attributes:
        c2w: ``(N, 4, 4)`` camera-to-world matrices in OpenCV axes.
        K: ``(N, 3, 3)`` intrinsics in pixels (pixel centres at ``+0.5``).
        width: Image width in pixels.
        height: Image height in pixels.
    """

    c2w: Tensor
    K: Tensor
    width: int
    height: int

    def __post_init__(self) -> None:
        if self.c2w.ndim != 3 or self.c2w.shape[-2:] != (4, 4):
            raise ValueError(f"Cameras.c2w must be (N, 4, 4), got {tuple(self.c2w.shape)}")
        if self.K.shape != (self.c2w.shape[0], 3, 3):
            raise ValueError(
                f"Cameras.K must be ({self.c2w.shape[0]}, 3, 3), got {tuple(self.K.shape)}"
            )
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"Cameras need a positive image size, got {self.width}x{self.height}")

    def __len__(self) -> int:
        return self.c2w.shape[0]

    def __getitem__(self, idx: int | slice | Tensor | list[int]) -> Cameras:
        if isinstance(idx, int):
            idx = slice(idx, idx + 1)
        return Cameras(self.c2w[idx], self.K[idx], self.width, self.height)

    @property
    def device(self) -> torch.device:
        return self.c2w.device

    @property
    def viewmats(self) -> Tensor:
        """World-to-camera ``(N, 4, 4)`` matrices (OpenCV axes)."""
        return torch.linalg.inv(self.c2w)

    @property
    def centers(self) -> Tensor:
        """Camera centres in world coordinates, ``(N, 3)``."""
        return self.c2w[:, :3, 3]

    def to(self, device: torch.device | str) -> Cameras:
        return Cameras(self.c2w.to(device), self.K.to(device), self.width, self.height)

    def resized(self, width: int, height: int) -> Cameras:
        """Same poses at another resolution (intrinsics scaled per axis)."""
        K = self.K.clone()
        K[:, 0] *= width / self.width
        K[:, 1] *= height / self.height
        return Cameras(self.c2w, K, width, height)

    @staticmethod
    def cat(cams: list[Cameras]) -> Cameras:
        if not cams:
            raise ValueError("Cameras.cat needs at least one batch")
        w, h = cams[0].width, cams[0].height
        if any(c.width != w or c.height != h for c in cams):
            raise ValueError("Cameras.cat: all batches must share one image size")
        return Cameras(torch.cat([c.c2w for c in cams]), torch.cat([c.K for c in cams]), w, h)

    def project(self, points: Tensor) -> tuple[Tensor, Tensor]:
        """Project world points into every camera.

        Args:
            points: ``(P, 3)`` world coordinates.

        Returns:
            ``uv`` ``(N, P, 2)`` pixel coordinates and ``depth`` ``(N, P)`` (camera z).
        """
        w2c = self.viewmats
        pc = points @ w2c[:, :3, :3].transpose(1, 2) + w2c[:, None, :3, 3]
        z = pc[..., 2]
        xy = pc[..., :2] / z.clamp_min(1e-8).unsqueeze(-1)
        fx, fy = self.K[:, 0, 0, None], self.K[:, 1, 1, None]
        cx, cy = self.K[:, 0, 2, None], self.K[:, 1, 2, None]
        uv = torch.stack([xy[..., 0] * fx + cx, xy[..., 1] * fy + cy], dim=-1)
        return uv, z


def intrinsics_from_fov(fov_y_deg: float, width: int, height: int) -> Tensor:
    """``(3, 3)`` intrinsics for a vertical FoV with square pixels and a centred principal point."""
    fy = 0.5 * height / math.tan(math.radians(fov_y_deg) / 2)
    return torch.tensor([[fy, 0.0, width / 2], [0.0, fy, height / 2], [0.0, 0.0, 1.0]])


def look_at(eye: Tensor, target: Tensor | None = None, up: Tensor | None = None) -> Tensor:
    """OpenCV camera-to-world matrices looking from ``eye`` at ``target``.

    Args:
        eye: ``(N, 3)`` camera centres.
        target: ``(N, 3)`` or ``(3,)`` look-at points (origin by default).
        up: World up vector (``+y`` by default).

    Returns:
        ``(N, 4, 4)`` camera-to-world matrices (x right, y down, z forward).
    """
    eye = torch.as_tensor(eye, dtype=torch.float32)
    if eye.ndim == 1:
        eye = eye[None]
    target = torch.zeros(3) if target is None else torch.as_tensor(target, dtype=torch.float32)
    up = torch.tensor([0.0, 1.0, 0.0]) if up is None else torch.as_tensor(up, dtype=torch.float32)
    forward = torch.nn.functional.normalize(target - eye, dim=-1)
    right = torch.linalg.cross(forward, up.expand_as(forward), dim=-1)
    # Looking straight up or down makes ``up`` parallel to ``forward``: pick another reference.
    degenerate = right.norm(dim=-1) < 1e-6
    if degenerate.any():
        alt = torch.tensor([0.0, 0.0, -1.0]).expand_as(forward)
        right = torch.where(degenerate[:, None], torch.linalg.cross(forward, alt, dim=-1), right)
    right = torch.nn.functional.normalize(right, dim=-1)
    down = torch.linalg.cross(forward, right, dim=-1)
    c2w = torch.eye(4).repeat(eye.shape[0], 1, 1)
    c2w[:, :3, 0] = right
    c2w[:, :3, 1] = down
    c2w[:, :3, 2] = forward
    c2w[:, :3, 3] = eye
    return c2w


def orbit_position(elevation_deg: Tensor, azimuth_deg: Tensor, radius: Tensor | float) -> Tensor:
    """Camera centres on a sphere in the Zero123 convention (see module docstring)."""
    el = torch.deg2rad(torch.as_tensor(elevation_deg, dtype=torch.float32))
    az = torch.deg2rad(torch.as_tensor(azimuth_deg, dtype=torch.float32))
    r = torch.as_tensor(radius, dtype=torch.float32)
    return torch.stack(
        [r * torch.cos(el) * torch.sin(az), r * torch.sin(el), r * torch.cos(el) * torch.cos(az)],
        dim=-1,
    )


def orbit_cameras(
    elevations_deg: list[float] | Tensor,
    azimuths_deg: list[float] | Tensor,
    width: int,
    height: int,
    radius: float = OBJECT_RADIUS,
    fov_y_deg: float = OBJECT_FOV_Y_DEG,
) -> Cameras:
    """Cameras on an orbit around the origin, looking at it, one per (elevation, azimuth)."""
    el = torch.as_tensor(elevations_deg, dtype=torch.float32).reshape(-1)
    az = torch.as_tensor(azimuths_deg, dtype=torch.float32).reshape(-1)
    el, az = torch.broadcast_tensors(el, az)
    c2w = look_at(orbit_position(el, az, radius))
    K = intrinsics_from_fov(fov_y_deg, width, height).expand(len(el), 3, 3).clone()
    return Cameras(c2w, K, width, height)


def consistent4d_eval_cameras(width: int, height: int) -> Cameras:
    """The four Consistent4D evaluation cameras (azimuth −75/15/105/195°, elevation 0)."""
    return orbit_cameras([0.0] * 4, list(CONSISTENT4D_EVAL_AZIMUTHS), width, height)


def zero123pp_cameras(width: int, height: int, version: str = "v1.1") -> Cameras:
    """The six Zero123++ pseudo-view cameras for ``version`` ``v1.1`` or ``v1.2``."""
    poses = {"v1.1": ZERO123PP_V11_POSES, "v1.2": ZERO123PP_V12_POSES}.get(version)
    if poses is None:
        raise ValueError(f"unknown Zero123++ version {version!r}; expected 'v1.1' or 'v1.2'")
    el, az = [p[0] for p in poses], [p[1] for p in poses]
    if version == "v1.2":
        return orbit_cameras(
            el, az, width, height, radius=ZERO123PP_V12_RADIUS, fov_y_deg=ZERO123PP_V12_FOV_Y_DEG
        )
    return orbit_cameras(el, az, width, height)


def turntable_cameras(
    n: int, width: int, height: int, elevation_deg: float = 0.0, radius: float = OBJECT_RADIUS
) -> Cameras:
    """``n`` cameras evenly spaced over 360° of azimuth, starting at the front view."""
    az = torch.arange(n, dtype=torch.float32) * (360.0 / n)
    return orbit_cameras(torch.full((n,), elevation_deg), az, width, height, radius=radius)


def opengl_to_opencv(c2w: Tensor) -> Tensor:
    """Convert camera-to-world matrices from OpenGL/Blender axes to OpenCV axes."""
    return c2w @ _OPENGL_TO_OPENCV.to(c2w)
