"""The live viewer window: pyglet + moderngl, the avatar of the live stream (or of an npz file) with orbit/zoom and
the source camera, a text overlay with connection state, fps and latency, and optional synced audio.

    python -m viewer                                  # ws://127.0.0.1:8765, session "main"
    python -m viewer ws://host:8765 --session main --audio --audio-delay-ms 40
    python -m viewer --npz out.npz [--wav speech.wav]  # play a file in the same window
    xvfb-run -a python -m viewer --npz out.npz --frames 30 --screenshot shot.png   # self-terminating

Keys: C source/orbit camera, R reset view, F floor, Space pause (file), [ ] audio delay -/+10 ms, H help, Q/Esc quit.
Mouse: left drag orbit, right drag (or shift+left) pan, wheel zoom.
"""
from __future__ import annotations

import argparse
import collections
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models.layout import EXPR, JAW, SessionConstants, assemble_model_params
from models.rates import MODEL_SAMPLE_RATE
from viewer.audio_out import AudioPlayer, AudioTimeline
from viewer.avatar import ProxyAvatar
from viewer.camera import OrbitCamera, source_camera
from viewer.jitter import JitterBuffer, PlayoutClock

DEFAULT_URL = "ws://127.0.0.1:8765"


@dataclass
class PoseNow:
    """What to draw now."""

    model_params: np.ndarray | None  # (204,)
    jaw: np.ndarray | None  # (3,)
    constants: SessionConstants
    status: list[str] = field(default_factory=list)
    index: int | None = None
    expr: np.ndarray | None = None  # (72,) expression coefficients (drive the real MHR face)


class LiveSource:
    """Poses from the WebSocket stream (viewer.net) through the jitter buffer, clocked by audio when it plays."""

    def __init__(self, url: str, session: str, audio: bool, delay_ms: float, depth: int, token: str | None) -> None:
        from viewer.net import StreamReceiver

        self.buffer = JitterBuffer(depth=depth)
        self.clock = PlayoutClock(self.buffer)
        self.timeline = AudioTimeline(MODEL_SAMPLE_RATE, prime_s=depth / 30.0) if audio else None
        self.receiver = StreamReceiver(url, session, self.buffer, self.timeline, token)
        self.player = AudioPlayer(self.timeline) if audio else None
        self.audio_ok = False
        self.delay_s = delay_ms / 1000.0
        self.paused = False

    def start(self) -> None:
        self.receiver.start()
        if self.player is not None:
            self.audio_ok = self.player.start()

    def stop(self) -> None:
        self.receiver.stop()
        if self.player is not None:
            self.player.stop()

    def now(self, t: float) -> PoseNow:
        r = self.receiver
        fps = r.fps
        media = None
        if self.audio_ok and self.player is not None:
            a = self.player.media_time(t)
            media = None if a is None else a + 0.5 / fps + self.delay_s  # frame k's pose is mid-span
        else:
            media = self.clock.media_time(t)
        s = self.buffer.sample(media) if media is not None else None
        st = self.buffer.stats
        span = self.buffer.span()
        lat = 0.0 if span is None or media is None else max(0.0, span[1] - media)
        rtt = f"{r.rtt_ms:.0f} ms" if r.rtt_ms is not None else "-"
        audio = ("audio on" if self.audio_ok else f"audio off ({self.player.error})") if self.player else "no audio"
        status = [
            f"{r.url}  session {r.session!r}: {r.state}",
            f"stream {st.stream_fps():.1f} fps | buffer {lat * 1000:.0f} ms | rtt {rtt} | {audio}, "
            f"delay {self.delay_s * 1000:+.0f} ms",
            f"underruns {st.underruns}  skips {st.skips}  late {st.late}  dup {st.duplicates}"
            + (f" | {r.last_error}" if r.last_error and r.state != "live" else ""),
        ]
        if s is None:
            return PoseNow(None, None, r.constants, status)
        params, index = s
        mp = assemble_model_params(params[None], r.constants)[0]
        return PoseNow(mp, params[JAW].astype(np.float64), r.constants, status, index, params[EXPR])


class FileSource:
    """Plays an npz sequence in a loop (wall clock, or the audio clock with --wav)."""

    def __init__(self, path: str, wav: str | None = None) -> None:
        from viewer.sequence import load_sequence

        self.seq = load_sequence(path)
        for n in self.seq.notes:
            print(f"note: {n}", file=sys.stderr)
        self.t0 = time.monotonic()
        self.paused_at: float | None = None
        self.delay_s = 0.0
        self.player = None
        self.audio_ok = False
        if wav:
            from models.audio import load_audio

            pcm, _ = load_audio(wav, MODEL_SAMPLE_RATE)
            tl = AudioTimeline(MODEL_SAMPLE_RATE, prime_s=0.0, max_ahead_s=1e9)
            tl.push(0, pcm)
            self.player = AudioPlayer(tl)

    def start(self) -> None:
        if self.player is not None:
            self.audio_ok = self.player.start()
        self.t0 = time.monotonic()

    def stop(self) -> None:
        if self.player is not None:
            self.player.stop()

    @property
    def paused(self) -> bool:
        return self.paused_at is not None

    @paused.setter
    def paused(self, value: bool) -> None:
        now = time.monotonic()
        if value and self.paused_at is None:
            self.paused_at = now
        elif not value and self.paused_at is not None:
            self.t0 += now - self.paused_at
            self.paused_at = None

    def now(self, t: float) -> PoseNow:
        seq = self.seq
        heard = self.player.media_time(t) if self.audio_ok and self.player is not None else None
        media = heard + self.delay_s if heard is not None else (self.paused_at or t) - self.t0
        i = int(math.floor(media * seq.fps)) % len(seq)
        status = [f"file {seq.path}: frame {i}/{len(seq)} @ {seq.fps:g} fps" + (" (paused)" if self.paused else "")]
        return PoseNow(seq.model_params[i], seq.jaw[i].astype(np.float64), seq.constants, status, i,
                       seq.motion[i, EXPR])


class ViewerWindow:
    """The pyglet window and its moderngl rendering.

    Args:
        source: LiveSource or FileSource.
        size: initial window size.
        frames: quit after this many drawn frames (with ``screenshot`` saved first), None = run until closed.
        screenshot: PNG path written at the last frame (or on key P).
        mouth_open: jaw opening (rad) used when the jaw channel is zero.
        mhr_model: path of MHR's mhr_model.pt to draw the real mesh.
    """

    def __init__(self, source, size: tuple[int, int] = (1280, 720), frames: int | None = None,
                 screenshot: str | None = None, mouth_open: float | None = None, mhr_model: str | None = None,
                 timeout_s: float | None = None) -> None:
        import moderngl
        import pyglet

        self.pyglet = pyglet
        self.source = source
        self.frames = frames
        self.screenshot = screenshot
        self.mouth_open = mouth_open
        self.timeout_s = timeout_s
        self.window = self._make_window(pyglet, size)
        self.ctx = moderngl.create_context()
        from viewer.scene import Scene

        self.scene = Scene(self.ctx)
        self.mhr = None
        if mhr_model:
            from viewer.mhr_mesh import MHRMesh

            self.mhr = MHRMesh.load(mhr_model)
        self.avatar = ProxyAvatar()
        self.orbit: OrbitCamera | None = None
        self.use_source_cam = False
        self.show_floor = True
        self.show_help = False
        self.drawn = 0
        self.started = time.monotonic()
        self.draw_times: collections.deque[float] = collections.deque(maxlen=60)
        self.floor_hist: collections.deque[float] = collections.deque(maxlen=90)
        self.label = pyglet.text.Label("", x=10, y=size[1] - 10, anchor_y="top", multiline=True, width=size[0] - 20,
                                       font_size=10, color=(30, 34, 44, 255))
        self._label_at, self._label_h = -1.0, -1
        self.window.push_handlers(self)

    @staticmethod
    def _make_window(pyglet, size):
        last = None
        for samples in (4, 0):
            try:  # (importing pyglet.gl already opens the display)
                cfg = pyglet.gl.Config(major_version=3, minor_version=3, forward_compatible=True, double_buffer=True,
                                       depth_size=24, sample_buffers=1 if samples else 0, samples=samples)
                return pyglet.window.Window(width=size[0], height=size[1], caption="MHR avatar viewer",
                                            resizable=True, config=cfg, vsync=False)
            except Exception as e:  # noqa: BLE001 - try without multisampling, then give up with a clear message
                last = e
        raise RuntimeError(f"cannot open an OpenGL 3.3 window ({last}); on a machine without a display run under "
                           f"xvfb-run -a, or set PYGLET_HEADLESS=true (EGL)")

    # ---- pyglet events ------------------------------------------------------------------------------------------

    def on_draw(self) -> None:
        import moderngl

        now = time.monotonic()
        pose = self.source.now(now)
        fw, fh = self.window.get_framebuffer_size()
        self.ctx.screen.viewport = (0, 0, fw, fh)
        prims = mesh = None
        center = np.zeros(3)
        if pose.model_params is not None:
            jaw = pose.jaw
            if self.mouth_open is not None and (jaw is None or not np.any(jaw)):
                jaw = np.array([self.mouth_open, 0.0, 0.0])
            R, X = self.avatar.fk(pose.model_params[None])
            if self.mhr is not None:
                from viewer.scene import MeshFrame

                expr = None if pose.expr is None else pose.expr[None]
                v = self.mhr.vertices(pose.constants.shape_params, pose.model_params[None], expr, jaw[None])[0]
                mesh = MeshFrame(v, self.mhr.faces)
                self.floor_hist.append(float(v[:, 1].min()))
            else:
                prims = self.avatar.primitives(R[0], X[0], jaw)
                self.floor_hist.append(prims.lowest_point())
            center = X[0, 1]
            if self.orbit is None:
                self.orbit = self._default_orbit(X[0])
        floor_y = min(self.floor_hist) if self.floor_hist else 0.0
        aspect = fw / max(fh, 1)
        if self.use_source_cam:
            cam = source_camera(pose.constants, aspect)
        else:
            cam = (self.orbit or OrbitCamera(np.array([0.0, 95.0, 0.0]), 420.0)).camera(aspect)
        self.scene.draw(self.ctx.screen, cam, prims, mesh, floor_y, center, self.show_floor)
        self.ctx.disable(moderngl.DEPTH_TEST | moderngl.CULL_FACE)
        self.draw_times.append(now)
        self._draw_overlay(pose)
        self.drawn += 1
        if self.frames is not None and self.drawn >= self.frames:
            if self.screenshot:
                self.save_screenshot(self.screenshot)
            self.pyglet.app.exit()
        elif self.timeout_s is not None and now - self.started > self.timeout_s:
            print(f"viewer: --timeout {self.timeout_s:g} s reached after {self.drawn} frames", file=sys.stderr)
            if self.screenshot:
                self.save_screenshot(self.screenshot)
            self.pyglet.app.exit()

    def _default_orbit(self, X: np.ndarray) -> OrbitCamera:
        root = X[1]
        return OrbitCamera(np.array([root[0], 88.0, root[2]]), 420.0, yaw=0.35, pitch=0.12, fov_y_deg=35.0)

    def _draw_overlay(self, pose: PoseNow) -> None:
        ts = self.draw_times
        fps = (len(ts) - 1) / (ts[-1] - ts[0]) if len(ts) > 1 and ts[-1] > ts[0] else 0.0
        cam = "source" if self.use_source_cam else "orbit"
        lines = list(pose.status)
        lines.append(f"render {fps:.0f} fps | camera {cam} [C] | floor [F] | help [H]")
        if self.show_help:
            lines += ["mouse: left drag orbit, right drag / shift+left pan, wheel zoom",
                      "keys: C camera, R reset view, F floor, Space pause (file), [ ] audio delay, P screenshot, "
                      "Q quit"]
        now = time.monotonic()
        if now - self._label_at > 0.25 or self._label_h != self.window.height:  # re-layout text at most 4x/s
            self._label_at, self._label_h = now, self.window.height
            self.label.text = "\n".join(lines)
            self.label.y = self.window.height - 10
            self.label.width = max(self.window.width - 20, 100)
            self.window.set_caption(f"MHR avatar viewer - {pose.status[0][:80]} - {fps:.0f} fps")
        self.label.draw()

    def on_resize(self, width: int, height: int) -> None:
        fw, fh = self.window.get_framebuffer_size()
        self.ctx.screen.viewport = (0, 0, fw, fh)

    def on_mouse_drag(self, x, y, dx, dy, buttons, modifiers) -> None:  # noqa: ANN001 - pyglet signature
        from pyglet.window import key, mouse

        if self.orbit is None:
            return
        self.use_source_cam = False
        if buttons & mouse.RIGHT or (buttons & mouse.LEFT and modifiers & key.MOD_SHIFT):
            self.orbit.pan(dx, dy)
        elif buttons & mouse.LEFT:
            self.orbit.rotate(dx, -dy)

    def on_mouse_scroll(self, x, y, scroll_x, scroll_y) -> None:  # noqa: ANN001
        if self.orbit is not None:
            self.use_source_cam = False
            self.orbit.zoom(scroll_y)

    def on_key_press(self, symbol, modifiers) -> None:  # noqa: ANN001
        from pyglet.window import key

        if symbol == key.C:
            self.use_source_cam = not self.use_source_cam
        elif symbol == key.R:
            self.orbit = None
        elif symbol == key.F:
            self.show_floor = not self.show_floor
        elif symbol == key.H:
            self.show_help = not self.show_help
        elif symbol == key.SPACE and hasattr(self.source, "paused"):
            self.source.paused = not self.source.paused
        elif symbol in (key.BRACKETLEFT, key.BRACKETRIGHT):
            self.source.delay_s += 0.01 if symbol == key.BRACKETRIGHT else -0.01
        elif symbol == key.P:
            self.save_screenshot(f"viewer_{time.strftime('%Y%m%d_%H%M%S')}.png")
        elif symbol in (key.Q, key.ESCAPE):
            self.pyglet.app.exit()

    def save_screenshot(self, path: str) -> None:
        """Save the back buffer (what was just drawn) as PNG."""
        from viewer.offscreen import write_png

        fw, fh = self.window.get_framebuffer_size()
        img = self.pyglet.image.get_buffer_manager().get_color_buffer().get_image_data()
        data = np.frombuffer(img.get_data("RGB", img.width * 3), np.uint8).reshape(img.height, img.width, 3)
        write_png(path, data[::-1])
        print(f"viewer: screenshot {path} ({img.width}x{img.height})", file=sys.stderr)

    def run(self) -> None:
        self.source.start()
        try:
            self.pyglet.app.run(1 / 60)
        finally:
            self.source.stop()
            self.window.close()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m viewer", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("url", nargs="?", default=DEFAULT_URL, help=f"stream URL (default {DEFAULT_URL})")
    p.add_argument("--session", default="main", help="session to subscribe to (default main)")
    p.add_argument("--token", help="the server's token, when it requires one")
    p.add_argument("--audio", action="store_true", help="also subscribe to the audio stream and play it in sync")
    p.add_argument("--audio-delay-ms", type=float, default=0.0,
                   help="delay the audio relative to the avatar (negative: audio earlier); keys [ and ] adjust")
    p.add_argument("--buffer-frames", type=int, default=3, help="jitter buffer depth in frames (default 3)")
    p.add_argument("--npz", help="play this motion file instead of the live stream")
    p.add_argument("--wav", help="with --npz: audio file to play in sync")
    p.add_argument("--size", default="1280x720", help="window size WIDTHxHEIGHT (default 1280x720)")
    p.add_argument("--source-camera", action="store_true", help="start in the source (video) camera")
    p.add_argument("--mouth-open", type=float, help="jaw opening (rad) when the jaw channel is zero")
    p.add_argument("--mhr-model", help="MHR TorchScript mhr_model.pt: draw the real mesh")
    p.add_argument("--frames", type=int, help="quit after drawing this many frames (tests, screenshots)")
    p.add_argument("--screenshot", help="save the last frame to this PNG (with --frames or --timeout)")
    p.add_argument("--timeout", type=float, help="quit after this many seconds")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        w, h = (int(x) for x in args.size.lower().split("x"))
    except ValueError:
        print(f"error: --size {args.size!r}: expected WIDTHxHEIGHT", file=sys.stderr)
        return 2
    if args.wav and not args.npz:
        print("error: --wav plays with --npz; for the live stream use --audio", file=sys.stderr)
        return 2
    try:
        if args.npz:
            source = FileSource(args.npz, args.wav)
        else:
            source = LiveSource(args.url, args.session, args.audio, args.audio_delay_ms, args.buffer_frames,
                                args.token)
        source.delay_s = args.audio_delay_ms / 1000.0
        win = ViewerWindow(source, (w, h), args.frames, args.screenshot, args.mouth_open, args.mhr_model,
                           args.timeout)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    win.use_source_cam = args.source_camera
    if args.screenshot:
        Path(args.screenshot).parent.mkdir(parents=True, exist_ok=True)
    win.run()
    return 0
