"""Spec of ``ds4d view``: the viewer source, the DSFD energy overlay, the viser GUI, the command.

* Gaussians become splats with the covariance ``R diag(s²) Rᵀ`` and their DC colour; camera
  groups carry per-frame poses, fields of view and (shrunk) images;
* the energy of the input view is sampled at each Gaussian's projection at time t (blended
  between frames, NaN where unseen or occluded) and coloured on a fixed scale;
* the GUI shows whatever time is asked for (slider, play), swaps frustum images by frame and
  colours by energy on request, without knowing Lightning (a fake source drives it here);
* a real 2-step run loads from its directory or its checkpoint; a folder that is not a run, an
  unreadable or mismatched checkpoint and a taken port each end ``ds4d view`` with exit 2,
  one line and the --debug hint;
* in headless Chromium (marker ``browser``), the splats are drawn and moving the time slider
  changes the picture.
"""

from __future__ import annotations

import math
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import CONFIGS, tiny_overrides, tiny_synthetic

from ds4d_pl.cameras import Cameras, look_at, orbit_cameras
from ds4d_pl.cli import main as cli_main
from ds4d_pl.data.types import ViewSet
from ds4d_pl.export.ply import load_ply
from ds4d_pl.render.base import GaussianParams, rgb_to_sh0
from ds4d_pl.viewer.app import PortInUseError, ServeError, ViewerApp, check_port_free
from ds4d_pl.viewer.energy import (
    UNSEEN_RGB,
    energy_at_points,
    energy_colors,
    frame_weights,
)
from ds4d_pl.viewer.load import RunLoadError, find_run_files, load_source
from ds4d_pl.viewer.source import (
    CameraGroup,
    Splats,
    ViewerSource,
    camera_group,
    nearest_frame,
    splats_from_gaussians,
)

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- source helpers
def test_splats_carry_rotated_covariances_and_dc_colours() -> None:
    half = math.sqrt(0.5)
    rgb = torch.tensor([[0.2, 0.4, 0.9], [1.0, 0.0, 0.5]])
    params = GaussianParams(
        means=torch.tensor([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]]),
        # 90° about z (w, x, y, z), and an unnormalised identity.
        quats=torch.tensor([[half, 0.0, 0.0, half], [2.0, 0.0, 0.0, 0.0]]),
        scales=torch.tensor([[1.0, 2.0, 3.0], [0.1, 0.2, 0.3]]),
        opacities=torch.tensor([0.25, 1.0]),
        sh=torch.cat([rgb_to_sh0(rgb)[:, None], torch.ones(2, 3, 3)], dim=1),
    )
    s = splats_from_gaussians(params)
    assert len(s) == 2 and s.centers.dtype == np.float32
    # Rotating x onto y swaps the first two variances.
    np.testing.assert_allclose(s.covariances[0], np.diag([4.0, 1.0, 9.0]), atol=1e-5)
    np.testing.assert_allclose(s.covariances[1], np.diag([0.01, 0.04, 0.09]), atol=1e-6)
    # Only the view-independent band: the higher SH coefficients do not leak into the colour.
    np.testing.assert_allclose(s.rgbs, rgb.numpy(), atol=1e-6)
    np.testing.assert_allclose(s.opacities[:, 0], [0.25, 1.0])
    np.testing.assert_allclose(s.centers[1], [1.0, 2.0, 3.0])


def test_splats_and_camera_groups_reject_bad_shapes() -> None:
    with pytest.raises(ValueError, match=r"Splats.opacities must be \(2, 1\)"):
        Splats(np.zeros((2, 3)), np.zeros((2, 3, 3)), np.zeros((2, 3)), np.zeros(2))
    with pytest.raises(ValueError, match="images must be uint8"):
        CameraGroup("x", np.zeros((1, 2, 4, 4)), np.ones(1), 1.0, np.zeros((1, 2, 4, 4, 3)), [0])
    with pytest.raises(ValueError, match=r"c2w must be \(1, 2, 4, 4\)"):
        CameraGroup(
            "x",
            np.zeros((1, 3, 4, 4)),
            np.ones(1),
            1.0,
            np.zeros((1, 2, 4, 4, 3), np.uint8),
            np.zeros(2),
        )


def _views(v: int, t: int, size: tuple[int, int], per_frame: bool = False) -> ViewSet:
    h, w = size
    az = torch.arange(v * (t if per_frame else 1), dtype=torch.float32) * 20.0
    cams = orbit_cameras(torch.zeros_like(az), az, w, h)
    rgb = torch.rand(v, t, h, w, 3, generator=torch.Generator().manual_seed(0))
    alpha = torch.ones(v, t, h, w, 1)
    alpha[..., : h // 2, :, :] = 0.0
    return ViewSet(rgb, alpha, cams, torch.linspace(0, 1, t))


def test_camera_group_shrinks_images_composites_and_keeps_per_frame_poses() -> None:
    views = _views(3, 4, (64, 96), per_frame=True)
    g = camera_group("pseudo", views, [1, 2], torch.tensor([1.0, 0.0, 0.0]), max_image_size=48)
    assert g.images.shape == (2, 4, 32, 48, 3) and g.images.dtype == np.uint8
    assert g.c2w.shape == (2, 4, 4, 4)
    # Camera of view 1 at frame 2 is entry 1 * T + 2 of the view-major table.
    np.testing.assert_allclose(g.c2w[0, 2], views.cameras.c2w[1 * 4 + 2].numpy(), atol=1e-6)
    assert not np.allclose(g.c2w[0, 0], g.c2w[0, 1])
    np.testing.assert_allclose(np.degrees(g.fov_y), [49.1, 49.1], atol=1e-3)
    assert g.aspect == pytest.approx(1.5)
    # The transparent top half is composited on the red background.
    assert (g.images[:, :, :16, :, 0] == 255).all() and (g.images[:, :, :16, :, 1:] == 0).all()
    assert g.frame_at(0.70) == 2 and nearest_frame(g.times, 1.0) == 3
    with pytest.raises(ValueError, match="view_ids"):
        camera_group("x", views, [3], torch.ones(3))


# --------------------------------------------------------------------------- energy
def _front_camera(size: int = 8) -> Cameras:
    return orbit_cameras([0.0], [0.0], size, size)


def test_frame_weights_blend_the_two_frames_around_t() -> None:
    times = torch.tensor([0.0, 0.5, 1.0])
    assert frame_weights(times, 0.25) == (0, 1, pytest.approx(0.5))
    assert frame_weights(times, 0.5)[2] in (0.0, 1.0)
    assert frame_weights(times, 2.0) == (1, 2, pytest.approx(1.0))
    assert frame_weights(torch.tensor([0.3]), 0.9) == (0, 0, 0.0)
    with pytest.raises(ValueError, match="non-empty"):
        frame_weights(torch.zeros(0), 0.0)


def test_energy_is_read_where_each_point_projects_and_nan_where_unseen() -> None:
    cam = _front_camera()
    energy = torch.zeros(2, 4, 4)
    energy[0, :, 2:] = 1.0  # frame 0: the right half of the image moves
    energy[1, :, :2] = 1.0  # frame 1: the left half
    # The camera sits on +z looking at the origin with +y up: image right is world +x.
    points = torch.tensor([[0.3, 0.0, 0.0], [-0.3, 0.0, 0.0], [0.0, 0.0, 5.0], [9.0, 0.0, 0.0]])
    times = torch.tensor([0.0, 1.0])
    e0 = energy_at_points(energy, times, 0.0, cam, points)
    assert e0[0] == pytest.approx(1.0) and e0[1] == pytest.approx(0.0)
    # Behind the camera, and outside the image: unseen.
    assert torch.isnan(e0[2:]).all()
    e1 = energy_at_points(energy, times, 1.0, cam, points)
    assert e1[0] == pytest.approx(0.0) and e1[1] == pytest.approx(1.0)
    half = energy_at_points(energy, times, 0.5, cam, points)
    assert half[:2].tolist() == pytest.approx([0.5, 0.5])


def test_energy_depth_test_hides_occluded_points() -> None:
    cam = _front_camera()
    points = torch.tensor([[0.0, 0.0, 0.5], [0.0, 0.0, -0.5]])  # depths 1.5 and 2.5
    depth = torch.full((4, 4), 1.5)
    e = energy_at_points(torch.ones(1, 4, 4), torch.zeros(1), 0.0, cam, points, depth, 0.05)
    assert e[0] == pytest.approx(1.0) and torch.isnan(e[1])


def test_energy_with_a_camera_per_frame_reads_the_nearest_frame_through_its_camera() -> None:
    eyes = torch.tensor([[0.0, 0.0, 2.0], [2.0, 0.0, 0.0]])
    k = orbit_cameras([0.0], [0.0], 8, 8).K.expand(2, 3, 3)
    cams = Cameras(look_at(eyes), k.clone(), 8, 8)
    energy = torch.zeros(2, 4, 4)
    energy[1] = 0.7
    point = torch.tensor([[0.0, 0.0, 0.0]])
    assert energy_at_points(energy, torch.tensor([0.0, 1.0]), 0.9, cams, point)[0] == (
        pytest.approx(0.7)
    )
    with pytest.raises(ValueError, match="expected 1 or 2 cameras"):
        energy_at_points(energy, torch.tensor([0.0, 1.0]), 0.0, cams[[0, 1, 0]], point)
    with pytest.raises(ValueError, match=r"energy must be \(T, h, w\)"):
        energy_at_points(energy[0], torch.tensor([0.0, 1.0]), 0.0, cams, point)


def test_energy_colours_run_from_violet_to_yellow_with_grey_for_unseen() -> None:
    rgb = energy_colors(np.array([0.0, 0.25, 0.5, 2.0, np.nan], np.float32), scale=0.5)
    assert rgb.shape == (5, 3) and rgb.dtype == np.float32
    np.testing.assert_allclose(rgb[0], np.array([68, 1, 84]) / 255, atol=1e-6)
    np.testing.assert_allclose(rgb[1], np.array([33, 145, 140]) / 255, atol=1e-6)
    np.testing.assert_allclose(rgb[2], np.array([253, 231, 37]) / 255, atol=1e-6)
    np.testing.assert_allclose(rgb[3], rgb[2])  # clipped at the top of the scale
    np.testing.assert_allclose(rgb[4], UNSEEN_RGB)
    with pytest.raises(ValueError, match="scale must be > 0"):
        energy_colors(np.zeros(2), 0.0)


# --------------------------------------------------------------------------- app (fake source)
class FakeSource:
    """Gaussians sliding along +x with time; energy equal to t for every Gaussian."""

    name = "fake"

    def __init__(self, n: int = 64, frames: int = 5, energy: bool = True) -> None:
        gen = np.random.default_rng(0)
        self._base = gen.uniform(-0.3, 0.3, (n, 3)).astype(np.float32)
        self.times = np.linspace(0.0, 1.0, frames).astype(np.float32)
        cams = orbit_cameras([0.0, 10.0], [0.0, 120.0], 16, 16)
        images = np.stack([np.full((2, 16, 16, 3), 40 * f, np.uint8) for f in range(frames)], 1)
        c2w = np.repeat(cams.c2w.numpy()[:, None], frames, axis=1)
        self.camera_groups = [
            CameraGroup("input", c2w[:1], np.full(1, 0.8), 1.0, images[:1], self.times),
            CameraGroup("eval", c2w[1:], np.full(1, 0.8), 1.0, images[1:], self.times),
        ]
        self.energy_scale = 1.0 if energy else None
        self.calls: list[float] = []

    @property
    def num_frames(self) -> int:
        return len(self.times)

    def gaussians_at(self, t: float) -> Splats:
        self.calls.append(t)
        n = len(self._base)
        return Splats(
            self._base + np.array([t, 0.0, 0.0], np.float32),
            np.tile(np.eye(3, dtype=np.float32) * 1e-3, (n, 1, 1)),
            np.full((n, 3), 0.5, np.float32),
            np.ones((n, 1), np.float32),
        )

    def energy_at(self, t: float) -> np.ndarray | None:
        if self.energy_scale is None:
            return None
        e = np.full(len(self._base), t, np.float32)
        e[0] = np.nan
        return e


@pytest.fixture
def app():
    source = FakeSource()
    viewer = ViewerApp(source, port=0, fps=30.0)
    viewer.start()
    yield viewer
    viewer.stop()


def _wait(condition, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def test_fake_source_satisfies_the_protocol() -> None:
    assert isinstance(FakeSource(), ViewerSource)


def test_app_shows_the_requested_time_and_swaps_frustum_images(app: ViewerApp) -> None:
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", app.url)
    src = app.source
    np.testing.assert_allclose(app.splats.centers, src.gaussians_at(0.0).centers, atol=1e-6)
    np.testing.assert_array_equal(app.frustums["input"][0].image, src.camera_groups[0].images[0, 0])
    app.set_time(0.76, wait=True)
    assert app.time == pytest.approx(0.76) and app.time_slider.value == pytest.approx(0.76)
    np.testing.assert_allclose(app.splats.centers, src.gaussians_at(0.76).centers, atol=1e-6)
    # 0.76 is nearest to frame 3 (t = 0.75): every frustum shows its frame-3 image.
    for group in src.camera_groups:
        for k, handle in enumerate(app.frustums[group.name]):
            np.testing.assert_array_equal(handle.image, group.images[k, 3])
    assert "3 / 4" in app.frame_text.value
    # Out-of-range requests are clamped.
    app.set_time(7.0, wait=True)
    assert app.time == 1.0


def test_app_energy_toggle_recolours_the_splats(app: ViewerApp) -> None:
    app.set_time(0.5, wait=True)
    plain = app.splats.rgbs.copy()
    app.energy_box.value = True
    app.set_time(0.5, wait=True)
    expected = energy_colors(app.source.energy_at(0.5), 1.0)
    np.testing.assert_allclose(app.splats.rgbs / 255.0, expected, atol=1 / 255 + 1e-6)
    assert not np.allclose(app.splats.rgbs, plain)
    assert app.legend.visible
    app.energy_box.value = False
    app.set_time(0.5, wait=True)
    np.testing.assert_array_equal(app.splats.rgbs, plain)


def test_app_play_advances_time_and_pause_stops_it(app: ViewerApp) -> None:
    start = app.time
    app.toggle_play()
    assert app.playing and app.play_button.label == "Pause"
    assert _wait(lambda: app.time != start)
    app.toggle_play()
    assert not app.playing and app.play_button.label == "Play"
    time.sleep(0.2)  # let a request already in flight land
    paused = app.time
    time.sleep(0.3)
    assert app.time == paused


def test_app_checkboxes_hide_splats_frustums_and_images(app: ViewerApp) -> None:
    app.gaussians_box.value = False
    assert not app.splats.visible
    box = app.group_boxes["eval"]
    box.value = False
    assert not any(h.visible for h in app.frustums["eval"])
    assert all(h.visible for h in app.frustums["input"])
    app.images_box.value = False
    assert all(h.image is None for hs in app.frustums.values() for h in hs)


def test_app_without_energy_disables_the_toggle() -> None:
    viewer = ViewerApp(FakeSource(energy=False), port=0)
    viewer.start()
    try:
        assert viewer.energy_box.disabled
        assert "no DSFD energy" in viewer.energy_box.hint
    finally:
        viewer.stop()


def test_app_reports_a_taken_port_and_a_foreign_host() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(PortInUseError, match=f"port {port} on 127.0.0.1 is already in use"):
            ViewerApp(FakeSource(), port=port).start()
    with pytest.raises(ServeError, match="cannot serve on 203.0.113.7"):
        check_port_free("203.0.113.7", 0)
    with pytest.raises(ValueError, match="fps must be > 0"):
        ViewerApp(FakeSource(), fps=0)


# --------------------------------------------------------------------------- a real run
@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-step fit of the demo preset (1 coarse + 1 fine step) at 32 px, with its PLY export."""
    run_dir = tmp_path_factory.mktemp("view") / "run"
    cli_main(
        [
            "fit",
            "-c",
            str(CONFIGS / "demo.yaml"),
            *tiny_synthetic(),
            *tiny_overrides(run_dir),
            "--test_after_fit=false",
            "--videos.enabled=false",
        ]
    )
    return run_dir


def test_run_loads_with_cameras_gaussians_and_energy(demo_run: Path) -> None:
    source = load_source(demo_run)
    assert isinstance(source, ViewerSource)
    assert source.name == "synthetic_mostly_static" and source.num_frames == 4
    groups = {g.name: g for g in source.camera_groups}
    assert [g.name for g in source.camera_groups] == ["input", "pseudo", "eval"]
    assert [groups[n].num_views for n in ("input", "pseudo", "eval")] == [1, 6, 4]
    assert groups["pseudo"].images.shape == (6, 4, 32, 32, 3)
    ckpt = torch.load(demo_run / "checkpoints" / "last.ckpt", weights_only=False)
    n = ckpt["ds4d"]["num_gaussians"]
    # The viewer shows exactly the deformed Gaussians that fit exported for the last frame.
    splats = source.gaussians_at(float(source.times[3]))
    exported = load_ply(demo_run / "export" / "frame_0003.ply")
    assert len(splats) == n and np.isfinite(splats.covariances).all()
    np.testing.assert_allclose(splats.centers, exported["means"].numpy(), atol=1e-5)
    np.testing.assert_allclose(
        splats.opacities[:, 0], torch.sigmoid(exported["logit_opacities"]).numpy(), atol=1e-5
    )
    variances = torch.exp(2 * exported["log_scales"]).sum(dim=1).numpy()
    np.testing.assert_allclose(np.trace(splats.covariances, axis1=1, axis2=2), variances, rtol=1e-4)
    # The synthetic arm swings one period over the clip: t = 0 and t = 1 are one pose, t = 0.5
    # is another.
    e0, e1 = source.energy_at(0.0), source.energy_at(0.5)
    assert e0.shape == (n,)
    seen = np.isfinite(e0)
    # The front of the object is seen by the input view, its back is hidden behind it.
    assert 0.2 < seen.mean() < 0.95
    assert ((e0[seen] >= 0) & (e0[seen] <= 1.0 + 1e-5)).all()
    assert 0 < source.energy_scale <= 1.0 + 1e-5
    # The energy follows the motion.
    both = seen & np.isfinite(e1)
    assert np.abs(e0[both] - e1[both]).max() > 1e-3
    # A checkpoint path inside the run finds the run's config two levels up.
    again = load_source(demo_run / "checkpoints" / "last.ckpt")
    np.testing.assert_allclose(again.gaussians_at(1.0).centers, splats.centers, atol=1e-6)


def test_bad_paths_are_one_line_errors(demo_run: Path, tmp_path: Path) -> None:
    with pytest.raises(RunLoadError, match="is not a ds4d run directory: it has no config.yaml"):
        find_run_files(tmp_path)
    with pytest.raises(RunLoadError, match="no such file or directory"):
        find_run_files(tmp_path / "nothere")
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(RunLoadError, match="junk.ckpt: not a readable checkpoint"):
        load_source(demo_run, checkpoint=junk)
    raw = yaml.safe_load((demo_run / "config.yaml").read_text())
    raw["model"]["field"] = {"encodingg": "hexplane"}
    typo = tmp_path / "typo.yaml"
    typo.write_text(yaml.safe_dump(raw))
    with pytest.raises(
        RunLoadError,
        match=r"typo.yaml: cannot rebuild the run \(Parser key \"model.field\": Option 'encodingg'",
    ):
        load_source(demo_run, config=typo)
    lonely = tmp_path / "lonely" / "x.ckpt"
    lonely.parent.mkdir()
    lonely.write_bytes(b"")
    with pytest.raises(RunLoadError, match="no config.yaml next to the checkpoint"):
        find_run_files(lonely)


def _mismatched_config(demo_run: Path, tmp_path: Path) -> Path:
    """The run's config with a narrower deformation MLP: its checkpoint no longer fits."""
    raw = yaml.safe_load((demo_run / "config.yaml").read_text())
    raw["model"]["field"] = {"hidden": 16}
    path = tmp_path / "other.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_a_checkpoint_of_another_config_is_refused_naming_the_tensor(
    demo_run: Path, tmp_path: Path
) -> None:
    other = _mismatched_config(demo_run, tmp_path)
    with pytest.raises(RunLoadError, match=r"does not match the model of .*other.yaml: size mism"):
        load_source(demo_run, config=other)


def _view_exit(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        cli_main(["view", *argv])
    return exc.value.code, capsys.readouterr().err


def test_view_command_exits_2_with_one_line_on_bad_input(
    demo_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = {
        "not a run": ([str(tmp_path), "--port", "0"], "is not a ds4d run directory"),
        "mismatch": (
            [str(demo_run), "--config", str(_mismatched_config(demo_run, tmp_path)), "--port=0"],
            "does not match the model of",
        ),
    }
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cases["port"] = ([str(demo_run), "--port", str(port)], f"port {port} on 127.0.0.1 is")
        for name, (argv, message) in cases.items():
            code, err = _view_exit(argv, capsys)
            assert code == 2, name
            # The message, then the hint (--debug for the traceback).
            assert err.count("\n") == 2 and err.startswith("ds4d view: error: "), (name, err)
            assert message in err and "Traceback" not in err, (name, err)


# --------------------------------------------------------------------------- real browser
CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
#: Flags every headless Chromium run of the test suite needs here: no sandbox (root in a
#: container), no GPU, no network beyond localhost, a throw-away profile (added per run).
#: SwiftShader is the software WebGL that draws the splats; its automatic fallback is
#: deprecated, so it is asked for explicitly.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-unsafe-swiftshader",
    "--window-size=1200,800",
)


#: The GUI's frame read-out (a disabled text box, whose label is not bound to it).
FRAME_TEXT = (
    "return Array.from(document.querySelectorAll('input')).map(i => i.value)"
    ".find(v => v.includes('(t = '))"
)


def _start_viewer(run_dir: Path, *args: str) -> tuple[subprocess.Popen, str]:
    """``ds4d view RUN --port 0 ARGS`` in a child process; returns it and the URL it printed."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, "-m", "ds4d_pl.cli", "view", str(run_dir), "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()
    seen = []
    end = time.monotonic() + 180
    while time.monotonic() < end:
        try:
            line = lines.get(timeout=1.0)
        except queue.Empty:
            if proc.poll() is not None:
                break
            continue
        seen.append(line)
        match = re.search(r"ds4d view: .* at (http://\S+)", line)
        if match:
            return proc, match.group(1)
    proc.kill()
    raise AssertionError("ds4d view printed no URL:\n" + "".join(seen))


def _pixels(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(BytesIO(png)).convert("RGB")).astype(np.int16)


def _settled(driver, timeout: float = 60.0) -> tuple[np.ndarray, bytes]:
    """A screenshot once two in a row agree (splat sorting and uploads have finished)."""
    previous = None
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        png = driver.get_screenshot_as_png()
        if previous is not None and png == previous:
            return _pixels(png), png
        previous = png
        time.sleep(0.7)
    return _pixels(previous), previous


def _changed(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of pixels of the object's region (the middle of the canvas, left of the GUI
    panel) whose colour changed by more than 24 levels in some channel."""
    h, w = a.shape[:2]
    crop = (slice(int(0.2 * h), int(0.8 * h)), slice(int(0.25 * w), int(0.65 * w)))
    return float((np.abs(a[crop] - b[crop]).max(axis=-1) > 24).mean())


@pytest.mark.browser
@pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)",
)
def test_browser_draws_the_splats_and_the_time_slider_changes_them(
    demo_run: Path, tmp_path: Path
) -> None:
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (dev extra)")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    # Mid-clip first: the arm swings one period, so t = 0 and t = 1 show the same pose.
    proc, url = _start_viewer(demo_run, "--time", "0.5")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="ds4d-chromium-")
    options.add_argument(f"--user-data-dir={profile}")
    # An explicit driver path: selenium must never try to fetch a driver or browser of its own.
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    shots = Path(os.environ.get("DS4D_TEST_ARTIFACTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)

    def save(name: str, png: bytes) -> Path:
        path = shots / f"viewer_{name}.png"
        path.write_bytes(png)
        return path

    def control(label: str):
        """The input element of the GUI control with this label."""
        node = driver.find_element(By.XPATH, f"//label[normalize-space()='{label}']")
        return driver.find_element(By.ID, node.get_attribute("for"))

    def click(label: str) -> None:
        driver.execute_script("arguments[0].click();", control(label))

    try:
        driver.get(url)
        wait = WebDriverWait(driver, 120)
        wait.until(lambda d: d.find_elements(By.XPATH, "//label[normalize-space()='Gaussians']"))
        drawn, png = _settled(driver)
        save("splats", png)
        click("Gaussians")
        wait.until(lambda d: not control("Gaussians").is_selected())
        empty, png = _settled(driver)
        save("empty", png)
        assert _changed(drawn, empty) > 0.02, f"no splats drawn; see {shots}"

        click("Gaussians")
        click("Colour by dynamic energy")
        wait.until(lambda d: control("Gaussians").is_selected())
        wait.until(lambda d: control("Colour by dynamic energy").is_selected())
        first, png = _settled(driver)
        save("energy_t05", png)
        thumb = next(
            e
            for e in driver.find_elements(By.CSS_SELECTOR, "[role=slider]")
            if e.get_attribute("aria-valuemax") == "1"
        )
        thumb.send_keys(Keys.END)  # the time slider to its end, t = 1
        # The server answers with the frame read-out once it has shown the new time.
        wait.until(lambda d: "3 / 3 (t = 1.000)" in (d.execute_script(FRAME_TEXT) or ""))
        last, png = _settled(driver)
        save("energy_t1", png)
        print(f"viewer screenshots: {shots}")
        assert _changed(first, last) > 0.002, f"time slider changed nothing; see {shots}"
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = None
    assert code == 0, "ds4d view did not stop cleanly on Ctrl+C"
