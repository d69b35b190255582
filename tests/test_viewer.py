"""The live viewer: jitter buffer and playout clock, audio timeline, frames parsed through realtime.protocol, a real
server subscription with reconnect, and a real window under Xvfb (self-terminating, screenshot checked)."""
from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from models.layout import DIM, JAW, SessionConstants, to_sam3d
from realtime import protocol
from tests.conftest import REPO, require_tool
from viewer.audio_out import AudioTimeline
from viewer.jitter import JitterBuffer, PlayoutClock, interpolate
from viewer.net import StreamReceiver

FPS = 30.0


def frame(k: int, value: float | None = None) -> np.ndarray:
    p = np.zeros(DIM, np.float32)
    p[0] = k if value is None else value
    return p


# ---- jitter buffer and clock -----------------------------------------------------------------------------------

def test_jitter_buffer_orders_interpolates_and_rejects_duplicates_and_late_frames():
    b = JitterBuffer(FPS, depth=3)
    for k in (0, 2, 1, 3):  # out of order
        assert b.push(k, (k + 1) / FPS, frame(k))
    assert not b.push(2, 3 / FPS, frame(2))  # duplicate
    assert len(b) == 4 and b.stats.duplicates == 1
    p, idx = b.sample(1.5 / FPS)  # halfway between frames 0 and 1
    assert idx == 0 and p[0] == pytest.approx(0.5)
    p, idx = b.sample(10.0)  # past the end: hold the newest
    assert idx == 3 and p[0] == 3.0
    assert not b.push(4, 0.5 / FPS, frame(4))  # its time is long played
    assert b.stats.late == 1
    b.reset()
    assert len(b) == 0 and b.sample(0.0) is None and b.generation == 1


def test_interpolation_takes_the_nearer_frame_across_an_angle_wrap():
    a, c = frame(0, 3.1), frame(0, -3.1)
    a[1], c[1] = 0.0, 1.0
    m = interpolate(a, c, 0.25)
    assert m[0] == pytest.approx(3.1) and m[1] == pytest.approx(0.25)


def test_playout_clock_waits_for_depth_holds_on_underrun_and_skips_when_far_behind():
    b = JitterBuffer(FPS, depth=3)
    clock = PlayoutClock(b, max_latency_s=0.5)
    b.push(0, 1 / FPS, frame(0))
    b.push(1, 2 / FPS, frame(1))
    assert clock.media_time(100.0) is None and not clock.running  # 2 < depth frames
    b.push(2, 3 / FPS, frame(2))
    assert clock.media_time(100.0) == pytest.approx(1 / FPS)  # starts at the first frame
    assert clock.media_time(100.0 + 1 / FPS) == pytest.approx(2 / FPS)  # then runs with the wall clock
    held = clock.media_time(101.0)  # far past the newest frame: underrun, hold it
    assert held == pytest.approx(3 / FPS) and b.stats.underruns == 1 and not clock.running
    for k in (3, 4):
        b.push(k, (k + 1) / FPS, frame(k))
    assert clock.media_time(101.1) == pytest.approx(3 / FPS)  # re-buffering: 2 new frames < depth
    b.push(5, 6 / FPS, frame(5))
    assert clock.media_time(101.2) == pytest.approx(3 / FPS) and clock.running  # restarted where it held
    for k in range(6, 60):  # a burst: 1.8 s ahead of the playhead
        b.push(k, (k + 1) / FPS, frame(k))
    m = clock.media_time(101.2)
    assert b.stats.skips == 1 and m == pytest.approx(60 / FPS - 3 / FPS)
    assert clock.latency_s() == pytest.approx(3 / FPS)


def test_jitter_buffer_is_thread_safe_under_concurrent_push_and_sample():
    b = JitterBuffer(FPS, depth=2, capacity=10_000)
    n = 3000

    def producer():
        for k in range(n):
            b.push(k, (k + 1) / FPS, frame(k))

    t = threading.Thread(target=producer)
    t.start()
    seen = 0
    while t.is_alive():
        s = b.sample(0.0)
        seen += s is not None
    t.join()
    assert len(b) == n and b.stats.received == n


# ---- audio timeline -----------------------------------------------------------------------------------------------

def test_audio_timeline_primes_fills_gaps_with_silence_stalls_and_skips():
    tl = AudioTimeline(rate=1000, prime_s=0.05, max_ahead_s=0.5)
    tl.push(100, np.ones(30, np.float32))
    assert not tl.read(10).any() and tl.time() is None  # 30 < 50 primed samples: silence, clock not started
    tl.push(130, 2 * np.ones(30, np.float32))
    out = tl.read(40)
    assert tl.time() == pytest.approx(0.14)  # started at sample 100 (its time code), 40 played
    np.testing.assert_array_equal(out, np.r_[np.ones(30), 2 * np.ones(10)])
    tl.push(200, 3 * np.ones(100, np.float32))  # 160..200 missing: plays as silence
    out = tl.read(60)
    np.testing.assert_array_equal(out, np.r_[2 * np.ones(20), np.zeros(40)])
    tl.read(100)  # plays 200..300: the data ends there
    assert tl.read(10).sum() == 0 and tl.stalls >= 1 and tl.time() == pytest.approx(0.3)  # stalled: clock holds
    tl.push(300, np.ones(2000, np.float32))  # far ahead of the cursor: skip to bound the latency
    tl.read(10)
    assert tl.skips == 1 and tl.end - tl.cursor <= 50


def test_audio_player_clock_follows_the_samples_it_played():
    from viewer.audio_out import AudioPlayer

    tl = AudioTimeline(rate=1000, prime_s=0.0)
    tl.push(500, np.linspace(0, 1, 300, dtype=np.float32))
    player = AudioPlayer(tl, blocksize=100)  # not started: drive the callback by hand, as sounddevice would
    assert player.media_time(0.0) is None
    out = np.zeros((100, 1), np.float32)
    player._callback(out, 100, None, None)
    np.testing.assert_allclose(out[:, 0], np.linspace(0, 1, 300)[:100], atol=1e-6)
    t0 = player._cb_wall
    assert player.media_time(t0) == pytest.approx(0.5)  # the block starting at sample 500 is being heard
    assert player.media_time(t0 + 0.05) == pytest.approx(0.55)
    assert player.media_time(t0 + 5.0) == pytest.approx(0.6)  # never beyond the block it was given
    player._callback(out, 100, None, None)
    assert player.media_time(player._cb_wall) == pytest.approx(0.6)


# ---- frames parsed through realtime.protocol ------------------------------------------------------------------------

def _header(constants: SessionConstants) -> str:
    h = protocol.make_header("main", constants, {"frames": 5}, "model", ["pose", "audio"])
    return protocol.encode(h)


def test_receiver_parses_protocol_frames_into_the_jitter_buffer_and_audio_timeline():
    buf, tl = JitterBuffer(FPS, depth=3), AudioTimeline(24_000, prime_s=0.0)
    rx = StreamReceiver("ws://127.0.0.1:1", "main", buf, tl)
    const = SessionConstants(pred_cam_t=np.array([0.2, 0.9, 3.0]), focal_length=900.0)
    rx.handle(_header(const))
    assert rx.state == "live" and rx.constants.focal_length == 900.0 and rx.header_version == 1
    for k in (0, 1, 2, 3):
        p = frame(k)
        p[JAW.start] = 0.1 * k
        m = rx.handle(protocol.pack_pose(k, (k + 1) / FPS, p))
        assert isinstance(m, protocol.PoseFrame)
    rx.handle(protocol.pack_audio(0, 0.5 * np.ones(800, np.float32)))
    assert len(buf) == 4 and tl.end == 800
    p, idx = buf.sample(3 / FPS)
    assert idx == 2 and p[JAW.start] == pytest.approx(0.2) and p[0] == 2.0
    np.testing.assert_allclose(tl.read(800), 0.5, atol=1e-4)  # int16 on the wire
    rx.handle(protocol.pack_pose(0, 1 / FPS, frame(0)))  # index back to 0 (> 2 s back? no: only 3 frames) = dup
    assert buf.stats.duplicates == 1 and len(buf) == 4
    for k in range(100, 103):
        rx.handle(protocol.pack_pose(k, (k + 1) / FPS, frame(k)))
    rx.handle(protocol.pack_pose(0, 1 / FPS, frame(0)))  # the stream restarted from 0: a new session
    assert len(buf) == 1 and buf.stats.resets >= 2
    rx.handle(protocol.encode({"type": "reset"}))
    assert len(buf) == 0
    rx.handle(protocol.encode({"type": "end"}))
    assert rx.state == "session ended"
    with pytest.raises(protocol.ProtocolError):
        rx.handle(b"\x01\x01\x00")  # shorter than the prefix
    with pytest.raises(protocol.ProtocolError):
        rx.handle(protocol.pack_pose(0, 0.0, frame(0))[:-4])  # truncated pose


def test_live_source_draws_what_the_receiver_buffered():
    from viewer.app import LiveSource

    src = LiveSource("ws://127.0.0.1:1", "main", audio=False, delay_ms=0.0, depth=2, token=None)
    src.receiver.handle(_header(SessionConstants()))
    assert src.now(0.0).model_params is None
    for k in range(3):
        p = frame(k, 0.0)
        p[36 - 6] = 0.5  # r_elbow_bend (body slot 30)
        src.receiver.handle(protocol.pack_pose(k, (k + 1) / FPS, p))
    now = src.now(time.monotonic())
    assert now.model_params.shape == (204,) and now.model_params[36] == pytest.approx(0.5)
    assert "live" in now.status[0] and "buffer" in now.status[1]


# ---- a real server: subscribe, receive, reconnect after a restart ---------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve_once(port: int, seconds: float, wait_subscriber: float = 15.0) -> int:
    """Run a server with the fake driver; once the viewer subscribed, stream ``seconds`` of audio in real time."""
    from realtime.server import AvatarServer, ServerConfig
    from realtime.sources import ArraySource
    from tests.fake_driver import FakeDriver

    async def scenario() -> int:
        async with AvatarServer(FakeDriver(), ServerConfig(port=port)) as srv:
            live = srv.open_session("main")
            t0 = time.monotonic()
            while not live.subscribers:
                assert time.monotonic() - t0 < wait_subscriber, "the viewer never subscribed"
                await asyncio.sleep(0.05)
            t = np.arange(int(seconds * 24_000)) / 24_000
            pcm = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
            await srv.pump(ArraySource(pcm, 24_000, realtime=True, chunk_ms=20.0), live)
            await srv.drain()
            return live.stats.frames

    return asyncio.run(asyncio.wait_for(scenario(), 60))


def test_receiver_subscribes_to_a_server_and_reconnects_after_it_restarts():
    port = _free_port()
    buf, tl = JitterBuffer(FPS, depth=3), AudioTimeline(24_000)
    rx = StreamReceiver(f"ws://127.0.0.1:{port}", "main", buf, tl)
    rx.start()
    try:
        sent = _serve_once(port, 0.6)
        got = buf.stats.received
        assert sent >= 15 and got == sent, (sent, got)
        assert rx.header is not None and rx.connects == 1 and tl.end > 0.5 * 24_000
        t0 = time.monotonic()
        while "live" in rx.state and time.monotonic() - t0 < 5:
            time.sleep(0.05)
        assert "live" not in rx.state  # the server went away
        sent2 = _serve_once(port, 0.4)  # a restarted server: the viewer comes back by itself
        assert rx.connects >= 2 and buf.stats.received >= got + sent2 - 1
    finally:
        rx.stop()


# ---- the window under Xvfb ------------------------------------------------------------------------------------------

@pytest.mark.system
def test_window_under_xvfb_renders_and_screenshots(tmp_path):
    xvfb = require_tool("xvfb-run", "virtual X display for the viewer window")
    m = np.zeros((20, DIM), np.float32)
    np.savez(tmp_path / "seq.npz", **to_sam3d(m, SessionConstants()))
    shot = tmp_path / "shot.png"
    cmd = [xvfb, "-a", "-s", "-screen 0 1280x720x24", sys.executable, "-m", "viewer", "--npz",
           str(tmp_path / "seq.npz"), "--frames", "12", "--screenshot", str(shot), "--size", "320x240",
           "--timeout", "60"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    from viewer.offscreen import read_png

    img = read_png(shot)
    assert img.shape == (240, 320, 3)
    skin = (img[..., 0] > 180) & (img[..., 1] > 130) & (img[..., 1] < 200) & (img[..., 2] < 170)
    shirt = (img[..., 2] > 130) & (img[..., 0] < 110)
    assert skin.sum() > 30 and shirt.sum() > 200, (skin.sum(), shirt.sum())
