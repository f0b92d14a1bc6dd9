"""Neural 3D Video (N3DV, Li et al. 2022) layout: a fixed multi-camera rig with LLFF poses.

Layout::

    ROOT/poses_bounds.npy         (N, 17) float: per camera a 3x5 matrix [R | t | hwf] flattened
                                  row-major in LLFF axes, then near and far depth bounds
    ROOT/camXX.mp4                one video per camera, or pre-extracted frames:
    ROOT/camXX/images/0000.png    (4D-GS's preprocessing layout), or
    ROOT/camXX/0000.png           frames directly in the camera folder
    ROOT/camXX/dyn_masks/0000.png optional: the moving part's pixels of each frame (white)
    ROOT/points3D_downsample2.ply optional: a coloured point cloud (4D-GS's downsampled COLMAP
                                  points), the initial points when present

Decisions:

* Cameras are the entries named ``cam<digits>`` (a folder or a ``.mp4``), ordered by their
  number; row ``i`` of ``poses_bounds.npy`` belongs to the ``i``-th camera, so the row count must
  equal the camera count.
* When a camera has both extracted frames and a video, the frames win (4D-GS keeps the videos
  next to the frames it extracted; decoding them again would be slow and identical). Frames
  are ``camXX/images/*`` if that folder exists, else ``camXX/*``; files named ``<anything><n>.png``
  (or ``.jpg``/``.jpeg``) sorted by ``n``, which must be consecutive. An alpha channel in a frame
  is ignored: N3DV scenes are full-frame captures (``alpha = 1``).
* ``num_frames`` counts frames *after* ``frame_stride``: frames ``0, s, 2s, ...`` are kept, then
  the first ``num_frames`` of those. Times are ``linspace(0, 1, T)`` over the loaded frames.
* Moving-part masks (``camXX/dyn_masks``, numbered like the frames, greyscale, white = moving)
  are optional, but all or none: a camera without them when others have them is an error. The
  k-th mask belongs to the k-th frame; they are picked by the same ``frame_stride`` and
  ``num_frames``, every loaded frame needs one, they must be at the frames' full size, and a
  shrunk pixel is moving if any pixel it covers is. They become the views' ``dyn_mask``, so
  dynamic-region metrics use the exact moving part instead of pixels that change over the
  clip. Real N3DV ships none; ``ds4d synth --format n3dv`` writes them.
* Initial points (``init_points``): ``auto`` (default) reads ``points_file`` when the scene has
  one (4D-GS initialises N3DV from COLMAP's points under that name) and otherwise samples the
  training cameras' frusta between the near and far bounds (:func:`frustum_points`, grey);
  ``file`` requires the file; ``frustum`` always samples. At most ``num_init_points`` points
  are kept (a deterministic random subset of a larger file).
* ``test_cameras`` are positions in the camera order (``[0]`` = ``cam00`` holds out the centre
  camera, as is customary); the others form the training set, all real views.
* The focal length in ``hwf`` is in pixels of the ``h x w`` images the poses were made for; it
  is rescaled to the size of the actual frames (which may be pre-shrunk), then by ``downscale``.
  The principal point is the image centre.

LLFF poses are turned into OpenCV camera-to-world matrices by :func:`llff_to_opencv` and nowhere
else. Every problem is reported at load time, naming the file (or camera) and what is wrong.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from ds4d_pl.cameras import Cameras
from ds4d_pl.data.io import iter_video_frames, read_rgba
from ds4d_pl.data.types import Scene4D, ViewSet
from ds4d_pl.gaussians.mesh_io import read_mesh

__all__ = [
    "INIT_POINTS_MODES",
    "MASKS_DIR",
    "N3DVConfig",
    "NUM_INIT_POINTS",
    "POINTS_FILE",
    "frustum_points",
    "llff_to_opencv",
    "load_n3dv",
]

#: Number of frustum samples :func:`load_n3dv` returns as ``init_points``.
NUM_INIT_POINTS = 20_000
#: Where the initial points come from (see :class:`N3DVConfig`).
INIT_POINTS_MODES = ("auto", "file", "frustum")
#: 4D-GS's name for a scene's downsampled COLMAP point cloud.
POINTS_FILE = "points3D_downsample2.ply"
#: Folder of a camera's optional moving-part masks.
MASKS_DIR = "dyn_masks"
_INIT_SEED = 0
_CAM_RE = re.compile(r"^cam(\d+)(\.mp4)?$")
_FRAME_RE = re.compile(r"^(.*?)(\d+)\.(png|jpg|jpeg)$", re.IGNORECASE)
# Loading more than this many bytes of float32 pixels deserves a hint towards the options
# that shrink a scene (the full 300-frame, 2704x2028, 21-camera scenes need ~100 GB).
_WARN_BYTES = 8 * 2**30


@dataclass
class N3DVConfig:
    """Options of the N3DV reader.

    Attributes:
        downscale: Integer factor the frames are shrunk by (area average). N3DV frames are
            2704x2028; 4D-GS trains at ``2``. Must divide the frame size.
        test_cameras: Positions (in camera-number order) of the held-out evaluation cameras;
            ``[0]`` holds out ``cam00``. Empty: no evaluation set.
        num_frames: Number of frames to load after striding (``None``: all).
        frame_stride: Keep every ``frame_stride``-th frame of the videos.
        num_init_points: Most initial points returned (frustum samples, or a subset of the
            point file).
        init_points: ``auto`` (the point file if the scene has one, else frustum samples),
            ``file`` (the point file, required) or ``frustum`` (samples of the training
            cameras' frusta; N3DV ships no point cloud, 4D-GS makes one with COLMAP).
        points_file: Point cloud (PLY) relative to the scene folder, or an absolute path.
    """

    downscale: int = 2
    test_cameras: list[int] = field(default_factory=lambda: [0])
    num_frames: int | None = None
    frame_stride: int = 1
    num_init_points: int = NUM_INIT_POINTS
    init_points: Literal["auto", "file", "frustum"] = "auto"
    points_file: str = POINTS_FILE

    def __post_init__(self) -> None:
        for name in ("downscale", "frame_stride", "num_init_points"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"N3DVConfig.{name} must be an integer >= 1, got {value!r}")
        n = self.num_frames
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise ValueError(f"N3DVConfig.num_frames must be None or an integer >= 1, got {n!r}")
        try:
            tests = list(self.test_cameras)
        except TypeError:
            tests = None
        if tests is None or any(
            isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in tests
        ):
            raise ValueError(
                "N3DVConfig.test_cameras must be a list of non-negative camera positions, got "
                f"{self.test_cameras!r}"
            )
        if len(set(tests)) != len(tests):
            raise ValueError(f"N3DVConfig.test_cameras has duplicates: {tests}")
        self.test_cameras = tests
        if self.init_points not in INIT_POINTS_MODES:
            raise ValueError(
                f"N3DVConfig.init_points must be one of {', '.join(INIT_POINTS_MODES)}, got "
                f"{self.init_points!r}"
            )
        if not isinstance(self.points_file, str) or not self.points_file:
            raise ValueError(
                f"N3DVConfig.points_file must be a non-empty path, got {self.points_file!r}"
            )


def llff_to_opencv(poses: np.ndarray | Tensor) -> Tensor:
    """Convert LLFF camera-to-world poses to ``(N, 4, 4)`` OpenCV matrices.

    LLFF rotation columns are the camera's (down, right, backwards) axes in world coordinates;
    OpenCV's are (right, down, forward). The 4th column is the camera centre; a 5th (``hwf``) is
    ignored.

    Args:
        poses: ``(N, 3, 5)`` or ``(N, 3, 4)`` (or a single ``(3, 4|5)``) LLFF poses.

    Returns:
        ``(N, 4, 4)`` float32 camera-to-world matrices in OpenCV axes.
    """
    p = torch.as_tensor(np.asarray(poses), dtype=torch.float32)
    if p.ndim == 2:
        p = p[None]
    if p.ndim != 3 or p.shape[1] != 3 or p.shape[2] not in (4, 5):
        raise ValueError(f"llff_to_opencv: expected (N, 3, 5) poses, got {tuple(p.shape)}")
    c2w = torch.eye(4).repeat(p.shape[0], 1, 1)
    c2w[:, :3, 0] = p[:, :, 1]  # right
    c2w[:, :3, 1] = p[:, :, 0]  # down
    c2w[:, :3, 2] = -p[:, :, 2]  # forward = -backwards
    c2w[:, :3, 3] = p[:, :, 3]
    return c2w


def frustum_points(
    cameras: Cameras,
    near: float | Tensor,
    far: float | Tensor,
    n: int,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Random points in the union of the cameras' view frusta between two depths.

    Each sample picks a camera uniformly, a pixel position uniformly over its image and a depth
    uniformly in *inverse* depth between ``near`` and ``far`` (so samples are denser close to
    the cameras, where a forward-facing scene's detail is, and a far bound of 100+ does not
    swallow them). The result is therefore not volume-uniform, and regions seen by several
    cameras are sampled more densely.

    Args:
        cameras: ``N`` cameras (OpenCV axes).
        near: Near camera-z depth, scalar or ``(N,)``; must be > 0.
        far: Far camera-z depth, scalar or ``(N,)``; must exceed ``near``.
        n: Number of points.
        generator: Random generator (for deterministic samples).

    Returns:
        ``(n, 3)`` float32 world points.
    """
    if n < 1:
        raise ValueError(f"frustum_points: n must be >= 1, got {n}")
    num = len(cameras)
    near_t = torch.as_tensor(near, dtype=torch.float32).expand(num)
    far_t = torch.as_tensor(far, dtype=torch.float32).expand(num)
    if not bool((near_t > 0).all() and (far_t > near_t).all()):
        raise ValueError("frustum_points: need 0 < near < far for every camera")
    cam = torch.randint(num, (n,), generator=generator)
    u = torch.rand(n, generator=generator) * cameras.width
    v = torch.rand(n, generator=generator) * cameras.height
    s = torch.rand(n, generator=generator)
    inv_near, inv_far = 1.0 / near_t[cam], 1.0 / far_t[cam]
    z = 1.0 / (inv_near + s * (inv_far - inv_near))
    K = cameras.K[cam].float()
    x = (u - K[:, 0, 2]) / K[:, 0, 0] * z
    y = (v - K[:, 1, 2]) / K[:, 1, 1] * z
    local = torch.stack([x, y, z], dim=-1)
    c2w = cameras.c2w[cam].float()
    return (c2w[:, :3, :3] @ local[..., None])[..., 0] + c2w[:, :3, 3]


@dataclass
class _Camera:
    name: str
    frames: list[Path] | None  # extracted frames, in order
    video: Path | None
    masks: list[Path] | None = None  # moving-part masks, in order


def _frame_files(folder: Path) -> list[Path]:
    """Numbered frames of ``folder`` sorted by number (checked consecutive); may be empty."""
    found: dict[int, Path] = {}
    for p in folder.iterdir():
        m = _FRAME_RE.match(p.name)
        if not m or not p.is_file():
            continue
        k = int(m.group(2))
        if k in found:
            raise ValueError(
                f"{folder}: two frames share the number {k}: {found[k].name}, {p.name}"
            )
        found[k] = p
    if not found:
        return []
    lo, hi = min(found), max(found)
    if len(found) != hi - lo + 1:
        missing = sorted(set(range(lo, hi + 1)) - set(found))
        raise ValueError(f"{folder}: frame numbers are not consecutive; missing {missing[:10]}")
    return [found[k] for k in range(lo, hi + 1)]


def _cameras(root: str | Path) -> list[_Camera]:
    root = Path(root)
    by_number: dict[int, dict[str, Path]] = {}
    for p in root.iterdir():
        m = _CAM_RE.match(p.name)
        if not m:
            continue
        kind = "video" if m.group(2) else "dir"
        if (kind == "video") != p.is_file():
            continue
        entry = by_number.setdefault(int(m.group(1)), {})
        if kind in entry:
            raise ValueError(
                f"{root}: {entry[kind].name} and {p.name} both name camera {int(m.group(1))}"
            )
        entry[kind] = p
    cams = []
    for number in sorted(by_number):
        entry = by_number[number]
        frames = None
        name = (entry.get("dir") or entry["video"].with_suffix("")).name
        if "dir" in entry:
            folder = entry["dir"] / "images"
            folder = folder if folder.is_dir() else entry["dir"]
            frames = _frame_files(folder) or None
            if frames is None and "video" not in entry:
                raise FileNotFoundError(
                    f"{folder}: camera {name} has no frames (<n>.png) and there is no "
                    f"{name}.mp4 either"
                )
        masks = None
        if "dir" in entry and (entry["dir"] / MASKS_DIR).is_dir():
            masks = _frame_files(entry["dir"] / MASKS_DIR)
            if not masks:
                raise FileNotFoundError(
                    f"{entry['dir'] / MASKS_DIR}: camera {name} has a mask folder without "
                    "numbered masks (<n>.png)"
                )
        cams.append(_Camera(name, frames, entry.get("video"), masks))
    return cams


def _read_poses_bounds(path: Path) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: poses_bounds.npy does not exist")
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise ValueError(f"{path}: cannot read as a .npy array ({err})") from err
    if not isinstance(arr, np.ndarray) or arr.ndim != 2 or arr.shape[1] != 17:
        shape = getattr(arr, "shape", None)
        raise ValueError(f"{path}: expected shape (N, 17) (3x5 pose + near, far), got {shape}")
    if not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{path}: expected a numeric array, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise ValueError(f"{path}: contains NaN or inf")
    hwf = arr[:, :15].reshape(-1, 3, 5)[:, :, 4]
    bad = np.nonzero((hwf <= 0).any(axis=1))[0]
    if len(bad):
        raise ValueError(f"{path}: row {bad[0]}: height, width and focal must be > 0")
    bad = np.nonzero((arr[:, 15] <= 0) | (arr[:, 16] <= arr[:, 15]))[0]
    if len(bad):
        raise ValueError(
            f"{path}: row {bad[0]}: bounds must satisfy 0 < near < far, got "
            f"near={arr[bad[0], 15]}, far={arr[bad[0], 16]}"
        )
    return arr


def _shrink(rgb: Tensor, factor: int, source: Path) -> Tensor:
    """``(H, W, 3)`` area-downscaled by an integer factor."""
    h, w = rgb.shape[:2]
    if h % factor or w % factor:
        raise ValueError(f"{source}: frame size {w}x{h} is not divisible by downscale={factor}")
    if factor == 1:
        return rgb
    x = rgb.permute(2, 0, 1)[None]
    return torch.nn.functional.avg_pool2d(x, factor)[0].permute(1, 2, 0).contiguous()


def _wanted(count: int | None, cfg: N3DVConfig) -> int | None:
    """Number of frames kept out of ``count`` raw frames (``None``: unknown count)."""
    if count is None:
        return cfg.num_frames
    kept = (count + cfg.frame_stride - 1) // cfg.frame_stride
    return kept if cfg.num_frames is None else min(kept, cfg.num_frames)


def _load_camera(cam: _Camera, cfg: N3DVConfig) -> tuple[Tensor, Path]:
    """``(T, H, W, 3)`` frames of one camera after stride/num_frames/downscale."""
    ds = cfg.downscale
    if cam.frames is not None:
        files = cam.frames[:: cfg.frame_stride]
        if cfg.num_frames is not None:
            files = files[: cfg.num_frames]
        frames, first_size = [], None
        for p in files:
            img = read_rgba(p, require_alpha=False)[..., :3]
            if first_size is not None and img.shape[:2] != first_size:
                raise ValueError(
                    f"{p}: camera {cam.name} frame is {img.shape[1]}x{img.shape[0]} but "
                    f"{files[0].name} is {first_size[1]}x{first_size[0]}"
                )
            first_size = img.shape[:2]
            frames.append(_shrink(img, ds, p))
        return torch.stack(frames), files[0]
    path = cam.video
    frames = [
        _shrink(torch.from_numpy(arr).float() / 255.0, ds, path)
        for arr in iter_video_frames(path, "rgb24", cfg.frame_stride, cfg.num_frames)
    ]
    if not frames:
        raise ValueError(f"{path}: video of camera {cam.name} holds no frames")
    return torch.stack(frames), path


def _load_masks(cam: _Camera, cfg: N3DVConfig, frames: Tensor) -> Tensor:
    """``(T, h, w, 1)`` boolean moving-part masks of one camera, picked and shrunk like
    ``frames`` ``(T, h, w, 3)``."""
    assert cam.masks is not None
    folder = cam.masks[0].parent
    # Masks pair with frames by position in their sorted order (both are numbered
    # consecutively); masks beyond the loaded frames are unused.
    files = cam.masks[:: cfg.frame_stride]
    if cfg.num_frames is not None:
        files = files[: cfg.num_frames]
    t, h, w = frames.shape[:3]
    if len(files) != t:
        raise ValueError(
            f"{folder}: camera {cam.name} has {len(files)} masks but {t} frames (after "
            f"frame_stride={cfg.frame_stride}, num_frames={cfg.num_frames})"
        )
    ds = cfg.downscale
    out = torch.empty(t, h, w, 1, dtype=torch.bool)
    for k, p in enumerate(files):
        m = read_rgba(p, require_alpha=False)
        if m.shape[:2] != (h * ds, w * ds):
            raise ValueError(
                f"{p}: mask is {m.shape[1]}x{m.shape[0]} but camera {cam.name}'s frames are "
                f"{w * ds}x{h * ds}"
            )
        # A shrunk pixel is moving if any of the full-resolution pixels it covers is.
        full = (m[..., :1] > 0.5).float().permute(2, 0, 1)[None]
        out[k] = torch.nn.functional.max_pool2d(full, ds)[0].permute(1, 2, 0) > 0
    return out


def _points_path(root: Path, cfg: N3DVConfig) -> Path:
    p = Path(cfg.points_file)
    return p if p.is_absolute() else root / p


def _read_points(path: Path, limit: int) -> tuple[Tensor, Tensor]:
    """Points and colours (grey without) of a point-cloud file, at most ``limit`` of them."""
    cloud = read_mesh(path)
    if cloud.faces is not None:
        raise ValueError(
            f"{path}: is a mesh (it has faces); the N3DV reader expects a point cloud such as "
            "COLMAP's fused.ply (a mesh can initialise the Gaussians through model.init.path)"
        )
    points = cloud.verts.float()
    if points.shape[0] == 0:
        raise ValueError(f"{path}: the point cloud has no points")
    colors = torch.full_like(points, 0.5) if cloud.colors is None else cloud.colors.float()
    if points.shape[0] > limit:
        keep = torch.randperm(points.shape[0], generator=torch.Generator().manual_seed(_INIT_SEED))
        points, colors = points[keep[:limit]], colors[keep[:limit]]
    return points.contiguous(), colors.clamp(0.0, 1.0).contiguous()


def load_n3dv(root: str | Path, cfg: N3DVConfig | None = None) -> Scene4D:
    """Read an N3DV scene.

    Args:
        root: Scene folder (``poses_bounds.npy`` + ``camXX.mp4`` or ``camXX/images/``).
        cfg: Reader options; defaults to ``N3DVConfig()``.

    Returns:
        A :class:`Scene4D` named after the folder: ``train`` holds the non-test cameras (fixed,
        all real, ``num_input_views = V_train``), ``eval`` the test cameras (``None`` if
        ``cfg.test_cameras`` is empty); ``alpha = 1``; ``dyn_mask`` from the scene's masks, if
        it has them; ``init_points``/``init_colors`` from the point file or, by default without
        one, ``cfg.num_init_points`` deterministic :func:`frustum_points` samples of the
        training cameras between their near and far bounds, mid grey. ``meta`` holds
        ``near``/``far`` (min near, max far), per-camera ``bounds``, and where the masks and
        initial points came from.

    Raises:
        FileNotFoundError: Missing root, ``poses_bounds.npy``, a camera's frames, or the point
            file with ``init_points="file"``.
        ValueError: Unreadable or mis-shaped poses, no cameras, camera/row count mismatch, an
            undecodable video, cameras with different frame counts or sizes, a test camera out
            of range, a downscale that does not divide the frame size, masks for only some
            cameras or not matching their frames, or an unreadable point file.
    """
    cfg = N3DVConfig() if cfg is None else cfg
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: N3DV scene folder does not exist")
    pb_path = root / "poses_bounds.npy"
    pb = _read_poses_bounds(pb_path)
    cams = _cameras(root)
    if not cams:
        raise FileNotFoundError(
            f"{root}: no cameras found (expected camXX.mp4 videos or camXX/images/ folders)"
        )
    if pb.shape[0] != len(cams):
        raise ValueError(
            f"{pb_path}: has {pb.shape[0]} rows (shape {pb.shape}) but {root} has "
            f"{len(cams)} cameras ({', '.join(c.name for c in cams)}); expected shape "
            f"({len(cams)}, 17)"
        )
    out_of_range = [i for i in cfg.test_cameras if i >= len(cams)]
    if out_of_range:
        raise ValueError(
            f"{root}: test camera position(s) {out_of_range} out of range; the scene has "
            f"{len(cams)} cameras (0..{len(cams) - 1})"
        )
    test_ids = list(cfg.test_cameras)
    train_ids = [i for i in range(len(cams)) if i not in test_ids]
    if not train_ids:
        raise ValueError(f"{root}: every camera is a test camera; none is left for training")
    with_masks = [c.name for c in cams if c.masks is not None]
    if with_masks and len(with_masks) != len(cams):
        without = [c.name for c in cams if c.masks is None]
        raise ValueError(
            f"{root}: cameras {', '.join(with_masks)} have moving-part masks ({MASKS_DIR}/) but "
            f"{', '.join(without)} do not; give masks for every camera or for none"
        )
    points_path = _points_path(root, cfg)
    use_file = cfg.init_points == "file" or (cfg.init_points == "auto" and points_path.is_file())
    if cfg.init_points == "file" and not points_path.is_file():
        raise FileNotFoundError(
            f"{points_path}: point file not found (data.n3dv.init_points=file); make one with "
            "COLMAP, or set init_points=frustum"
        )
    # Read before the frames, so a bad point file fails before minutes of video decoding.
    file_points = _read_points(points_path, cfg.num_init_points) if use_file else None

    # Frame counts of folders are known without decoding: compare them up front so a bad
    # camera fails before minutes of video decoding.
    counts = {c.name: _wanted(len(c.frames), cfg) for c in cams if c.frames is not None}
    if len(set(counts.values())) > 1:
        ref = cams[0].name if cams[0].name in counts else next(iter(counts))
        bad = next(n for n, k in counts.items() if k != counts[ref])
        raise ValueError(
            f"{root / bad}: camera {bad} has {counts[bad]} frames but {ref} has {counts[ref]} "
            f"(after frame_stride={cfg.frame_stride}, num_frames={cfg.num_frames})"
        )

    poses = pb[:, :15].reshape(-1, 3, 5)
    hwf = poses[:, :, 4]
    c2w = llff_to_opencv(poses)

    # Frames go straight into preallocated tensors: stacking per-camera lists would need twice
    # the memory of the (possibly tens of GB) scene at the peak.
    order = train_ids + test_ids
    train_rgb = eval_rgb = train_dyn = eval_dyn = None
    ref_name, ref_shape, orig_size = None, None, None
    for k, i in enumerate(order):
        cam = cams[i]
        frames, source = _load_camera(cam, cfg)
        if ref_shape is None:
            ref_name, ref_shape = cam.name, frames.shape
            orig_size = (frames.shape[1] * cfg.downscale, frames.shape[2] * cfg.downscale)
            total = 4 * frames.numel() * len(order) * 4 // 3
            if total > _WARN_BYTES:
                warnings.warn(
                    f"{root}: loading ~{total / 2**30:.0f} GB of frames; set num_frames, "
                    "frame_stride or a larger downscale to shrink the scene",
                    stacklevel=2,
                )
            train_rgb = torch.empty(len(train_ids), *ref_shape)
            eval_rgb = torch.empty(len(test_ids), *ref_shape)
            if with_masks:
                mask_shape = (*ref_shape[:-1], 1)
                train_dyn = torch.empty(len(train_ids), *mask_shape, dtype=torch.bool)
                eval_dyn = torch.empty(len(test_ids), *mask_shape, dtype=torch.bool)
        elif frames.shape[0] != ref_shape[0]:
            raise ValueError(
                f"{source}: camera {cam.name} has {frames.shape[0]} frames but {ref_name} has "
                f"{ref_shape[0]} (after frame_stride={cfg.frame_stride}, "
                f"num_frames={cfg.num_frames})"
            )
        elif frames.shape != ref_shape:
            raise ValueError(
                f"{source}: camera {cam.name} frames are {frames.shape[2]}x{frames.shape[1]} "
                f"but {ref_name} frames are {ref_shape[2]}x{ref_shape[1]} (after "
                f"downscale={cfg.downscale})"
            )
        h_img, w_img = orig_size
        h_pose, w_pose = hwf[i, 0], hwf[i, 1]
        if abs(h_img / h_pose - w_img / w_pose) > 0.01 * w_img / w_pose:
            raise ValueError(
                f"{pb_path}: row {i} (camera {cam.name}) is for {w_pose:g}x{h_pose:g} images "
                f"but the camera's frames are {w_img}x{h_img}, a different aspect ratio"
            )
        dyn = _load_masks(cam, cfg, frames) if with_masks else None
        if k < len(train_ids):
            train_rgb[k] = frames
            if dyn is not None:
                train_dyn[k] = dyn
        else:
            eval_rgb[k - len(train_ids)] = frames
            if dyn is not None:
                eval_dyn[k - len(train_ids)] = dyn
        del frames

    t, h, w = ref_shape[0], ref_shape[1], ref_shape[2]
    h_img, w_img = orig_size
    # hwf's focal is in pixels of the h x w images the poses were estimated on; frames may
    # have been extracted at another size, and then shrunk by downscale.
    focal = torch.as_tensor(hwf[:, 2] * (w_img / hwf[:, 1]) / cfg.downscale, dtype=torch.float32)
    K = torch.zeros(len(cams), 3, 3)
    K[:, 0, 0] = focal
    K[:, 1, 1] = focal
    K[:, 0, 2] = w / 2
    K[:, 1, 2] = h / 2
    K[:, 2, 2] = 1.0
    all_cams = Cameras(c2w, K, w, h)
    times = torch.linspace(0.0, 1.0, t) if t > 1 else torch.zeros(1)

    def view_set(frames: Tensor, dyn: Tensor | None, ids: list[int]) -> ViewSet:
        alpha = torch.ones(*frames.shape[:-1], 1)
        cameras = all_cams[torch.tensor(ids)]
        return ViewSet(frames, alpha, cameras, times.clone(), dyn_mask=dyn, source="gt")

    train = view_set(train_rgb, train_dyn, train_ids)
    evals = view_set(eval_rgb, eval_dyn, test_ids) if test_ids else None
    near, far = float(pb[:, 15].min()), float(pb[:, 16].max())
    if file_points is not None:
        points, colors = file_points
        init_how = f"{len(points)} points of {points_path}"
    else:
        train_near = torch.as_tensor(pb[train_ids, 15], dtype=torch.float32)
        train_far = torch.as_tensor(pb[train_ids, 16], dtype=torch.float32)
        g = torch.Generator().manual_seed(_INIT_SEED)
        points = frustum_points(train.cameras, train_near, train_far, cfg.num_init_points, g)
        colors = torch.full((cfg.num_init_points, 3), 0.5)
        init_how = (
            f"{cfg.num_init_points} samples in the training cameras' frusta between their "
            "bounds (uniform in pixels and inverse depth); grey colours"
        )
    meta = {
        "dataset": "n3dv",
        "root": str(root),
        "cameras": [c.name for c in cams],
        "train_cameras": [cams[i].name for i in train_ids],
        "test_cameras": [cams[i].name for i in test_ids],
        "sources": {c.name: "images" if c.frames is not None else "video" for c in cams},
        "near": near,
        "far": far,
        "bounds": {c.name: [float(pb[i, 15]), float(pb[i, 16])] for i, c in enumerate(cams)},
        "downscale": cfg.downscale,
        "frame_stride": cfg.frame_stride,
        "num_frames": t,
        "image_size": [w, h],
        "source_image_size": [w_img, h_img],
        "dyn_masks": f"dataset ({MASKS_DIR}/)" if with_masks else "none (derived from motion)",
        "init_points": init_how,
    }
    return Scene4D(
        name=root.resolve().name,
        train=train,
        eval=evals,
        num_input_views=len(train_ids),
        init_points=points,
        init_colors=colors,
        meta=meta,
    )
