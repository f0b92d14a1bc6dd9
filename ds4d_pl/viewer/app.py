"""The viser GUI of ``ds4d view``: deformed Gaussians, a time slider, play/pause, the dataset's
cameras with their images, and DSFD's dynamic energy as a colour overlay.

It reads a :class:`~ds4d_pl.viewer.source.ViewerSource` and nothing else (no Lightning, no run
files). Browser events only *request* a time; one worker thread evaluates the latest request and
drops the ones it overtook, so dragging the slider never queues up field evaluations.
"""

from __future__ import annotations

import errno
import math
import signal
import socket
import sys
import threading
import time

import numpy as np
import viser
import viser.transforms as vtf

from ds4d_pl.errors import DS4DError
from ds4d_pl.viewer.energy import energy_colors
from ds4d_pl.viewer.source import CameraGroup, ViewerSource

#: Frustum colour of each camera group (RGB 0-255); other names get grey.
GROUP_COLORS = {"input": (230, 80, 40), "pseudo": (60, 120, 220), "eval": (40, 160, 90)}
#: What each group is, for the GUI's check boxes.
GROUP_LABELS = {
    "input": "input view",
    "pseudo": "pseudo views",
    "eval": "evaluation views",
}


class ServeError(DS4DError, OSError):
    """The server cannot listen where it was asked to (the message is one line)."""


class PortInUseError(ServeError):
    """The requested port is taken by another program."""


def check_port_free(host: str, port: int) -> None:
    """Raise when ``host:port`` cannot be bound.

    viser would silently move on to the next free port, and the printed URL would then not be
    the one the user asked for; checking first turns that into a clear error.

    Raises:
        PortInUseError: The port is taken (or reserved).
        ServeError: The host is not an address of this machine.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # As the server's own socket does: a port left in TIME_WAIT by a previous viewer is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as e:
            if e.errno in (errno.EADDRINUSE, errno.EACCES):
                raise PortInUseError(
                    f"port {port} on {host} is already in use; pass another --port (0 picks a "
                    "free one)"
                ) from None
            raise ServeError(f"cannot serve on {host}:{port}: {e.strerror or e}") from None


def _wxyz(rotation: np.ndarray) -> np.ndarray:
    return vtf.SO3.from_matrix(rotation.astype(np.float64)).wxyz


class ViewerApp:
    """The viewer: a viser server showing one :class:`ViewerSource`.

    Args:
        source: What to show.
        host: Interface to serve on (``127.0.0.1``: this machine only).
        port: TCP port (``0``: any free port).
        fps: Initial playback speed in frames per second.
        initial_time: Time shown first, in ``[0, 1]``.

    Attributes (after :meth:`start`):
        server: The viser server.
        splats: The Gaussian-splat scene node.
        frustums: Camera-frustum scene nodes by group name, one per view.
        time_slider, play_button, fps_slider, gaussians_box, energy_box, group_boxes,
        images_box: The GUI controls.
        last_error: The last failure to show a time (also printed to stderr), or ``None``.
    """

    def __init__(
        self,
        source: ViewerSource,
        host: str = "127.0.0.1",
        port: int = 8080,
        fps: float = 8.0,
        initial_time: float = 0.0,
    ) -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {port}")
        if not fps > 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        if not 0.0 <= initial_time <= 1.0:
            raise ValueError(f"initial_time must lie in [0, 1], got {initial_time}")
        self.source = source
        self.host = host
        self.port = port
        self.fps = float(fps)
        self.initial_time = float(initial_time)
        self.server: viser.ViserServer | None = None
        self._cond = threading.Condition()
        self._pending: float | None = None
        self._requested = 0
        self._shown = 0
        self._time = float(initial_time)
        self._playing = False
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self._frames: dict[str, int] = {}
        self.frustums: dict[str, list] = {}
        self.last_error: str | None = None

    # ------------------------------------------------------------------ life cycle
    @property
    def url(self) -> str:
        """Address to open in a browser (after :meth:`start`)."""
        if self.server is None:
            raise RuntimeError("ViewerApp.start() has not run")
        host = "localhost" if self.host in ("0.0.0.0", "::") else self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.server.get_port()}"

    @property
    def time(self) -> float:
        """The time shown last."""
        return self._time

    @property
    def playing(self) -> bool:
        return self._playing

    def start(self) -> str:
        """Start the server, build the scene and the GUI, and show :attr:`initial_time`.

        Returns:
            The URL.

        Raises:
            PortInUseError: When the port is taken.
        """
        check_port_free(self.host, self.port)
        server = viser.ViserServer(host=self.host, port=self.port, verbose=False)
        if self.port != 0 and server.get_port() != self.port:
            # Taken between the check and the bind: viser moved on to another port.
            server.stop()
            raise PortInUseError(f"port {self.port} on {self.host} is already in use")
        self.server = server
        server.scene.set_up_direction("+y")  # the package's world is y-up (docs/design.md §6)
        first = self.source.gaussians_at(self.initial_time)
        self.splats = server.scene.add_gaussian_splats(
            "/gaussians",
            centers=first.centers,
            covariances=first.covariances,
            rgbs=first.rgbs,
            opacities=first.opacities,
        )
        center = first.centers.mean(axis=0) if len(first) else np.zeros(3, np.float32)
        self._add_cameras(center)
        self._add_gui(len(first))
        self._place_initial_camera(center)
        for target in (self._render_loop, self._play_loop):
            thread = threading.Thread(target=target, daemon=True, name=f"ds4d-view-{target}")
            thread.start()
            self._threads.append(thread)
        self.set_time(self.initial_time, wait=True)
        return self.url

    def stop(self) -> None:
        """Stop playback, the worker threads and the server."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=5.0)
        if self.server is not None:
            self.server.stop()

    def serve_forever(self) -> None:
        """Block until Ctrl+C (SIGINT) or SIGTERM, then stop.

        Both signals get handlers here: a process started in the background by a shell
        inherits SIGINT as *ignored*, and ``kill`` sends SIGTERM; either way the server should
        close its socket and return instead of dying mid-message.
        """

        def interrupt(signum: int, frame: object) -> None:
            raise KeyboardInterrupt

        previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, interrupt)
        try:
            while True:
                time.sleep(1.0)
        except KeyboardInterrupt:
            pass
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.stop()

    # ------------------------------------------------------------------ scene
    def _add_cameras(self, center: np.ndarray) -> None:
        groups = self.source.camera_groups
        dists = [np.linalg.norm(g.c2w[:, :, :3, 3] - center, axis=-1).reshape(-1) for g in groups]
        reach = float(np.median(np.concatenate(dists))) if groups else 1.0
        # Frustums a tenth of the camera distance: visible, yet small next to the object.
        self._frustum_scale = 0.1 * reach if reach > 0 else 0.1
        self._reach = reach if reach > 0 else 1.0
        for group in groups:
            frame = group.frame_at(self.initial_time)
            self._frames[group.name] = frame
            handles = []
            for k in range(group.num_views):
                c2w = group.c2w[k, frame]
                handles.append(
                    self.server.scene.add_camera_frustum(
                        f"/cameras/{group.name}/{k}",
                        fov=float(group.fov_y[k]),
                        aspect=float(group.aspect),
                        scale=self._frustum_scale,
                        thickness=0.05 * self._frustum_scale,
                        color=GROUP_COLORS.get(group.name, (120, 120, 120)),
                        image=group.images[k, frame],
                        wxyz=_wxyz(c2w[:3, :3]),
                        position=c2w[:3, 3],
                    )
                )
            self.frustums[group.name] = handles

    def _place_initial_camera(self, center: np.ndarray) -> None:
        """Start the browser's camera 35° round and 20° above the input view, a little
        further out, so the object and the input frustum are both in sight."""
        groups = {g.name: g for g in self.source.camera_groups}
        group = groups.get("input") or (self.source.camera_groups or [None])[0]
        # Without cameras, look from +z (the input "front" of the object protocol).
        offset = np.array([0.0, 0.0, 2.0]) if group is None else group.c2w[0, 0, :3, 3] - center
        radius = float(np.linalg.norm(offset)) or 2.0
        az = math.atan2(offset[0], offset[2]) + math.radians(35.0)
        el = math.radians(20.0)
        direction = np.array(
            [math.cos(el) * math.sin(az), math.sin(el), math.cos(el) * math.cos(az)]
        )
        self.server.initial_camera.position = tuple(center + 1.6 * radius * direction)
        self.server.initial_camera.look_at = tuple(center)
        self.server.initial_camera.up = (0.0, 1.0, 0.0)

    # ------------------------------------------------------------------ GUI
    def _add_gui(self, num_gaussians: int) -> None:
        gui = self.server.gui
        src = self.source
        gui.add_markdown(f"**{src.name}**: {num_gaussians} Gaussians, {src.num_frames} frames")
        with gui.add_folder("Time"):
            self.time_slider = gui.add_slider(
                "time", min=0.0, max=1.0, step=0.001, initial_value=self.initial_time
            )
            self.frame_text = gui.add_text("frame", initial_value="", disabled=True)
            self.play_button = gui.add_button("Play", icon=viser.Icon.PLAYER_PLAY)
            self.fps_slider = gui.add_slider(
                "frames / s", min=1.0, max=30.0, step=1.0, initial_value=float(self.fps)
            )
        with gui.add_folder("Show"):
            self.gaussians_box = gui.add_checkbox("Gaussians", initial_value=True)
            has_energy = src.energy_scale is not None
            self.energy_box = gui.add_checkbox(
                "Colour by dynamic energy",
                initial_value=False,
                disabled=not has_energy,
                hint="DSFD's ||dynamic|| / ||f|| of the input view at each Gaussian"
                if has_energy
                else "this run has no DSFD energy (frame features or DSFD switched off)",
            )
            self.legend = gui.add_markdown(self._legend(), visible=False)
            self.group_boxes = {
                g.name: gui.add_checkbox(
                    f"{GROUP_LABELS.get(g.name, g.name)} ({g.num_views})", initial_value=True
                )
                for g in src.camera_groups
            }
            self.images_box = gui.add_checkbox("Camera images", initial_value=True)
        self.stats = gui.add_markdown("")

        self.time_slider.on_update(lambda _: self._request(float(self.time_slider.value)))
        self.play_button.on_click(lambda _: self.toggle_play())
        self.fps_slider.on_update(lambda _: setattr(self, "fps", float(self.fps_slider.value)))
        self.gaussians_box.on_update(lambda _: self._set_splats_visible())
        self.energy_box.on_update(lambda _: self._on_energy_toggle())
        for name, box in self.group_boxes.items():
            box.on_update(lambda _, name=name, box=box: self._set_group_visible(name, box.value))
        self.images_box.on_update(lambda _: self._refresh_images())

    def _legend(self) -> str:
        scale = self.source.energy_scale
        if scale is None:
            return ""
        return (
            "Dynamic energy of the input view at each Gaussian: "
            f"violet 0 (static) → yellow {scale:.2f} (dynamic); grey: not seen by the input view."
        )

    def _set_splats_visible(self) -> None:
        self.splats.visible = bool(self.gaussians_box.value)

    def _on_energy_toggle(self) -> None:
        self.legend.visible = bool(self.energy_box.value)
        self._request(self._time)

    def _set_group_visible(self, name: str, visible: bool) -> None:
        for handle in self.frustums[name]:
            handle.visible = bool(visible)

    def _refresh_images(self) -> None:
        for group in self.source.camera_groups:
            self._update_group(group, self._frames[group.name], force=True)

    def toggle_play(self) -> None:
        """Start or pause playback (what the Play/Pause button does)."""
        self._playing = not self._playing
        self.play_button.label = "Pause" if self._playing else "Play"
        self.play_button.icon = viser.Icon.PLAYER_PAUSE if self._playing else viser.Icon.PLAYER_PLAY

    # ------------------------------------------------------------------ time
    def set_time(self, t: float, wait: bool = False, timeout: float = 60.0) -> None:
        """Show time ``t`` (moves the slider too).

        Args:
            t: Normalised time, clamped to ``[0, 1]``.
            wait: Block until the scene shows it.
            timeout: Longest wait in seconds.
        """
        t = min(max(float(t), 0.0), 1.0)
        if float(self.time_slider.value) != t:
            self.time_slider.value = t  # its update callback requests the time
            ticket = self._requested
        else:
            ticket = self._request(t)
        if wait:
            with self._cond:
                if not self._cond.wait_for(lambda: self._shown >= ticket, timeout=timeout):
                    raise TimeoutError(f"time {t} was not shown within {timeout} s")

    def _request(self, t: float) -> int:
        with self._cond:
            self._requested += 1
            self._pending = t
            self._cond.notify_all()
            return self._requested

    def _render_loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending is not None or self._stopping)
                if self._stopping:
                    return
                t, ticket, self._pending = self._pending, self._requested, None
            try:
                self._show(t)
            except Exception as e:  # noqa: BLE001 - keep serving; say what failed
                message = f"ds4d view: showing t={t:.3f} failed: {type(e).__name__}: {e}"
                if message != self.last_error:
                    print(message, file=sys.stderr, flush=True)
                self.last_error = message
            with self._cond:
                self._shown = max(self._shown, ticket)
                self._cond.notify_all()

    def _play_loop(self) -> None:
        step = 1.0 / max(self.source.num_frames - 1, 1)
        while not self._stopping:
            started = time.monotonic()
            if self._playing:
                # One frame per tick, back to the start after the last frame.
                nxt = self._time + step
                self.time_slider.value = 0.0 if nxt > 1.0 + 1e-6 else min(nxt, 1.0)
            time.sleep(max(1.0 / self.fps - (time.monotonic() - started), 0.01))

    def _show(self, t: float) -> None:
        started = time.perf_counter()
        splats = self.source.gaussians_at(t)
        rgbs = splats.rgbs
        energy_note = ""
        if self.energy_box.value and self.source.energy_scale is not None:
            energy = self.source.energy_at(t)
            if energy is not None:
                rgbs = energy_colors(energy, self.source.energy_scale)
                seen = np.isfinite(energy)
                mean = float(energy[seen].mean()) if seen.any() else float("nan")
                energy_note = f"; input view sees {seen.mean():.0%}, mean energy {mean:.3f}"
        elapsed = time.perf_counter() - started
        with self.server.atomic():
            self.splats.set_gaussians(
                splats.centers, splats.covariances, rgbs.astype(np.float32), splats.opacities
            )
            for group in self.source.camera_groups:
                self._update_group(group, group.frame_at(t))
        self._time = t
        frames = self.source.num_frames
        nearest = int(np.argmin(np.abs(self.source.times - t)))
        self.frame_text.value = f"{nearest} / {frames - 1} (t = {t:.3f})"
        self.stats.content = (
            f"{len(splats)} Gaussians at t = {t:.3f}, evaluated in {1e3 * elapsed:.0f} ms"
            f"{energy_note}"
        )

    def _update_group(self, group: CameraGroup, frame: int, force: bool = False) -> None:
        if frame == self._frames[group.name] and not force:
            return
        show_images = bool(self.images_box.value)
        moving = not np.allclose(group.c2w[:, frame], group.c2w[:, self._frames[group.name]])
        for k, handle in enumerate(self.frustums[group.name]):
            handle.image = group.images[k, frame] if show_images else None
            if moving:
                c2w = group.c2w[k, frame]
                handle.wxyz = _wxyz(c2w[:3, :3])
                handle.position = c2w[:3, 3]
        self._frames[group.name] = frame
