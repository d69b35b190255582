"""The WebSocket server with the fake driver: pushing, subscribing, bad input, slow clients, limits, memory.

Every server binds 127.0.0.1 on an ephemeral port; every wait is bounded by a timeout.
"""
from __future__ import annotations

import asyncio
import math
import socket
import time
import tracemalloc
import urllib.error
import urllib.request

import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed

from models.rates import MODEL_SAMPLE_RATE
from realtime import protocol as P
from realtime.client import Collected, StreamClient, push_file
from realtime.server import AvatarServer, ServerConfig, check_bind
from realtime.sources import AudioChunk, AudioSource
from realtime.stats import LatencyStats, format_budget
from tests.fake_driver import FakeDriver

T = 20.0  # seconds: bound of any single wait


def run(coro):
    """asyncio.run with a bound; the result is passed outside the task (Python 3.11's asyncio.run reprs the main
    task's result when it restores the SIGINT handler, which is slow for thousands of frames)."""
    box = []

    async def main() -> None:
        box.append(await asyncio.wait_for(coro, 120))

    asyncio.run(main())
    return box[0]


def cfg(**kw) -> ServerConfig:
    return ServerConfig(port=0, **kw)


def tone(seconds: float, rate: int, channels: int = 1, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    x = (amp * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    return x if channels == 1 else np.stack([x] * channels, 1)


def expected_frames(n_samples: int, rate: int) -> int:
    n24 = round(n_samples * MODEL_SAMPLE_RATE / rate)
    return math.ceil(n24 / 800)  # the fake driver pads a partial last frame at flush


def assert_contiguous(c: Collected, n: int) -> None:
    idx = c.indices
    assert idx == list(range(n)), (idx[:5], idx[-5:], len(idx))
    np.testing.assert_allclose([p.time for p in c.poses], (np.arange(n) + 1) / 30, rtol=0, atol=1e-9)


def test_burst_push_10s_in_one_go_all_frames_contiguous():
    async def scenario():
        async with AvatarServer(FakeDriver(), cfg()) as srv:
            pcm = tone(10.0, 16_000)
            # 10 s of audio sent in 200 chunks of 50 ms without pause: far faster than real time
            c = await push_file(srv.url, pcm, 16_000, chunk_ms=50, streams=("pose", "joints", "audio"), timeout=T)
            return c

    c = run(scenario())
    assert_contiguous(c, 300)
    assert c.header["session"].startswith("push-") and c.header["version"] == P.PROTOCOL_VERSION
    assert [j.index for j in c.joints] == list(range(300))
    assert c.events[-1]["type"] == "end" and c.events[-1]["frames"] == 300
    flushed = [p.index for p in c.poses if p.flags & P.FLAG_FLUSH]
    assert flushed == list(range(300 - len(flushed), 300)) and 1 <= len(flushed) <= 5  # only the look-ahead tail
    # the audio stream is time coded and gap-free: start samples chain, times = start / 24000
    starts = [a.start_sample for a in c.audio]
    ends = [a.start_sample + len(a.pcm) for a in c.audio]
    assert starts[0] == 0 and starts[1:] == ends[:-1] and ends[-1] == 240_000
    assert all(a.time == a.start_sample / 24_000 for a in c.audio)
    rms = np.sqrt(np.mean(np.concatenate([a.pcm for a in c.audio])[1000:-1000] ** 2))
    assert abs(rms - 0.3 / np.sqrt(2)) < 0.01


@pytest.mark.parametrize("case", ["nan_inf", "silent", "clipped", "stereo_48k", "mono_8k", "f32_44k"])
def test_bad_and_odd_network_audio(case):
    rate, fmt = 16_000, "pcm_s16le"
    if case == "nan_inf":
        pcm, fmt = tone(2.0, rate), "pcm_f32le"
        pcm[::97] = np.nan
        pcm[::101] = np.inf
    elif case == "silent":
        pcm = np.zeros(2 * rate, np.float32)
    elif case == "clipped":
        pcm, fmt = tone(2.0, rate, amp=3.0), "pcm_f32le"
    elif case == "stereo_48k":
        rate = 48_000
        pcm = tone(2.0, rate, channels=2)
    elif case == "mono_8k":
        rate = 8_000
        pcm = tone(2.0, rate)
    else:
        rate, fmt = 44_100, "pcm_f32le"
        pcm = tone(2.0, rate)

    async def scenario():
        async with AvatarServer(FakeDriver(), cfg()) as srv:
            return await push_file(srv.url, pcm, rate, fmt=fmt, chunk_ms=37, timeout=T)

    c = run(scenario())
    assert_contiguous(c, expected_frames(len(pcm), rate))
    assert all(np.isfinite(p.params).all() for p in c.poses)
    inp = c.events[-1]["input"]
    assert inp["samples"] == 48_000
    if case == "nan_inf":
        assert inp["nonfinite"] == len(np.unique(np.r_[np.arange(0, 32000, 97), np.arange(0, 32000, 101)]))
    elif case == "clipped":
        assert inp["clipped"] > 10_000 and inp["nonfinite"] == 0
    else:
        assert inp["nonfinite"] == inp["clipped"] == 0


async def _expect_error(c: StreamClient, code: str) -> dict:
    m = await c.recv(T)
    while not (isinstance(m, dict) and m.get("type") == "error"):
        m = await c.recv(T)
    assert m["code"] == code, m
    return m


def test_bad_messages_get_errors_and_others_keep_streaming():
    async def scenario():
        config = cfg(max_chunk_bytes=32 * 1024, max_json_bytes=4096, max_message_bytes=64 * 1024)
        async with AvatarServer(FakeDriver(compute_ms=2), config) as srv:
            good = asyncio.create_task(push_file(srv.url, tone(3.0, 16_000), 16_000, chunk_ms=100, realtime=True,
                                                 timeout=T))
            async with StreamClient(srv.url) as bad:
                for raw, code in [("{oops", P.E_BAD_JSON), ('{"type": "launch"}', P.E_UNKNOWN_TYPE),
                                  ('"just a string"', P.E_BAD_MESSAGE), ('{"type": "ping", "version": 7}', P.E_VERSION),
                                  ('{"type": "ping", "x": "' + "y" * 5000 + '"}', P.E_TOO_LARGE),
                                  ('{"type": "subscribe", "session": "nobody"}', P.E_UNKNOWN_SESSION),
                                  ('{"type": "subscribe", "streams": ["smell"]}', P.E_BAD_MESSAGE),
                                  ('{"type": "reset"}', P.E_NO_START), ('{"type": "end"}', P.E_NO_START),
                                  ('{"type": "start", "format": "mp3", "rate": 16000}', P.E_BAD_FORMAT),
                                  ('{"type": "start", "format": "pcm_s16le", "rate": "fast"}', P.E_BAD_FORMAT),
                                  ('{"type": "start", "format": "pcm_s16le", "rate": 16000, "speaker": 99}',
                                   P.E_BAD_MESSAGE)]:
                    await bad.ws.send(raw)
                    await _expect_error(bad, code)
                await bad.ws.send(b"\x00\x01" * 100)  # binary before start
                await _expect_error(bad, P.E_NO_START)
                await bad.start(16_000, streams=())
                await bad.ws.send(b"\x00\x01\x02")  # odd byte count for s16
                await _expect_error(bad, P.E_BAD_CHUNK)
                await bad.ws.send(b"\x00" * 40_000)  # over max_chunk_bytes, under the hard limit
                await _expect_error(bad, P.E_TOO_LARGE)
                await bad.ws.send('{"type": "start", "format": "pcm_s16le", "rate": 16000}')
                await _expect_error(bad, P.E_ALREADY_STARTED)
                await bad.ws.send('{"type": "speaker", "speaker": "loud"}')
                await _expect_error(bad, P.E_BAD_MESSAGE)
                await bad.ws.send('{"type": "speaker", "speaker": 17}')  # the fake model knows 16 (+ unknown)
                await _expect_error(bad, P.E_BAD_MESSAGE)
                assert (await bad.stats())["errors_sent"] == 18
                await bad.ws.send(b"\x00" * 100_000)  # over the hard limit: the connection is closed (1009)
                with pytest.raises(ConnectionClosed) as e:
                    for _ in range(10):
                        await bad.recv(T)
                assert e.value.rcvd.code == 1009
            ok = await good
            async with StreamClient(srv.url) as again:  # the server still accepts connections
                assert (await again.stats())["connections"] >= 3
            return ok

    ok = run(scenario())
    assert_contiguous(ok, 90)


def test_slow_subscriber_is_dropped_not_blocking():
    async def scenario():
        config = cfg(queue_messages=256, send_buffer_bytes=8192, max_pending_s=0.5)
        async with AvatarServer(FakeDriver(), config) as srv:
            # a subscriber that reads the header and then nothing: tiny receive buffer, websockets stops reading
            s = socket.create_connection(("127.0.0.1", srv.port))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            # (close_timeout: closing cannot complete while its buffers are full; do not wait 10 s for it)
            async with StreamClient(srv.url, max_queue=1, sock=s, close_timeout=0.2) as slow, \
                    StreamClient(srv.url) as fast:
                pusher = StreamClient(srv.url)
                await pusher.connect()
                await pusher.start(16_000, session="room", streams=())
                live = srv.sessions["room"]
                await slow.subscribe("room", ("pose", "joints"))
                await fast.subscribe("room", ("pose", "joints"))
                reader = asyncio.create_task(fast.collect(timeout=T))
                pcm = tone(20.0, 16_000)
                for i in range(0, len(pcm), 1600):
                    await pusher.send_audio(pcm[i:i + 1600])
                await pusher.end()
                got = await reader
                await pusher.close()
                return got, live

    got, live = run(scenario())
    assert_contiguous(got, 600)
    assert len(got.joints) == 600
    assert live.stats.dropped > 500  # the stalled subscriber lost (and counted) most of its 1200 messages
    assert live.stats.frames == 600


def test_pusher_that_reads_only_at_the_end_does_not_deadlock():
    async def scenario():
        config = cfg(queue_messages=40, send_buffer_bytes=8192, lossless_wait_s=0.05, max_pending_s=0.3)
        async with AvatarServer(FakeDriver(), config) as srv:
            s = socket.create_connection(("127.0.0.1", srv.port))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            async with StreamClient(srv.url, max_queue=1, sock=s) as c:
                await c.start(16_000, streams=("pose",))
                live = next(iter(srv.sessions.values()))
                pcm = tone(20.0, 16_000)
                for i in range(0, len(pcm), 8000):  # all 20 s before reading anything
                    await c.send_audio(pcm[i:i + 8000])
                await c.end()
                got = await c.collect(timeout=T)
                return got, live

    got, live = run(scenario())
    assert got.ended and got.events[-1]["frames"] == 600
    idx = got.indices
    assert idx == sorted(idx) and idx[-1] == 599 and live.stats.dropped > 0  # newest kept, oldest dropped


def test_subscriber_disconnect_and_reconnect():
    async def scenario():
        async with AvatarServer(FakeDriver(), cfg()) as srv:
            pusher = StreamClient(srv.url)
            await pusher.connect()
            await pusher.start(16_000, session="talk", streams=())
            first = StreamClient(srv.url)
            await first.connect()
            await first.subscribe("talk")
            pcm = tone(4.0, 16_000)
            await pusher.send_audio(pcm[:16_000])
            a = await first.collect(until_end=False, max_frames=10, timeout=T)
            await first.ws.close()  # vanishes mid-stream
            await pusher.send_audio(pcm[16_000:32_000])
            for _ in range(200):  # bounded wait for the server to notice
                if len(srv.sessions["talk"].subscribers) == 0:
                    break
                await asyncio.sleep(0.01)
            n_after_close = len(srv.sessions["talk"].subscribers)
            async with StreamClient(srv.url) as second:
                h = await second.subscribe("talk")
                await pusher.send_audio(pcm[32_000:])
                await pusher.end()
                b = await second.collect(timeout=T)
            await pusher.close()
            return a, b, h, n_after_close

    a, b, h, n_after_close = run(scenario())
    assert a.indices == list(range(10)) and n_after_close == 0
    assert h["type"] == "header" and h["session"] == "talk"
    idx = b.indices
    assert idx == list(range(idx[0], 120)) and idx[0] >= 26  # a contiguous continuation up to the end
    assert b.ended


def test_reset_and_speaker_controls_in_order():
    async def scenario():
        async with AvatarServer(FakeDriver(), cfg()) as srv:
            async with StreamClient(srv.url) as c:
                await c.start(24_000, speaker=1, streams=("pose",))
                await c.send_audio(np.full(24_000, 0.1, np.float32))
                await c.set_speaker(3)
                await c.send_audio(np.full(24_000, 0.1, np.float32))
                await c.reset()
                await c.send_audio(np.full(24_000, 0.1, np.float32))
                await c.end()
                out = []
                async for m in c.messages(T):
                    out.append(m)
                    if isinstance(m, dict) and m.get("type") == "end":
                        break
                return out

    msgs = run(scenario())
    kinds = [m["type"] if isinstance(m, dict) else m.index for m in msgs]
    i_spk, i_rst = kinds.index("speaker"), kinds.index("reset")
    assert kinds[0] == "header" and kinds[1:i_spk] == list(range(26))  # 30 frames in, L+R held back, N=2 chunks
    before = [m for m in msgs[1:i_spk]]
    after = [m for m in msgs[i_spk + 1:i_rst]]
    assert all(abs(m.params[0] - 0.01) < 1e-7 for m in before)
    assert [m.index for m in after] == list(range(26, 56)) and all(abs(m.params[0] - 0.03) < 1e-7 for m in after)
    post = [m.index for m in msgs[i_rst + 1:] if not isinstance(m, dict)]
    assert post == list(range(30))  # indices restart after a reset; the end flush emits the held-back tail
    assert msgs[-1]["frames"] == 30


def test_sessions_are_batched_into_one_process_call():
    async def scenario():
        drv = FakeDriver(compute_ms=5)
        async with AvatarServer(drv, cfg()) as srv:
            res = await asyncio.gather(*[push_file(srv.url, tone(3.0, 16_000), 16_000, chunk_ms=20, timeout=T)
                                         for _ in range(3)])
            return res, drv

    res, drv = run(scenario())
    for c in res:
        assert_contiguous(c, 90)
    assert len({c.header["session"] for c in res}) == 3
    assert max(drv.batch_sizes) >= 2  # the worker stepped several sessions in one driver.process call


def test_small_chunks_are_coalesced_to_release_boundaries():
    """20 ms input chunks: the worker calls the model only when the audio completes the next N-frame release."""
    async def scenario(coalesce: bool):
        drv = FakeDriver(chunk_frames=2)
        async with AvatarServer(drv, cfg(coalesce=coalesce)) as srv:
            c = await push_file(srv.url, tone(1.5, 16_000), 16_000, chunk_ms=20, realtime=True, timeout=T)
            return c, drv

    c, drv = run(scenario(True))
    assert_contiguous(c, 45)
    assert drv.frames_per_item and all(n >= 2 for n in drv.frames_per_item)  # no call without a release
    c0, drv0 = run(scenario(False))
    np.testing.assert_array_equal(c.params(), c0.params())  # same frames either way
    assert 0 in drv0.frames_per_item and drv.calls < drv0.calls


def test_token_and_bind_policy():
    with pytest.raises(ValueError, match="--token"):
        check_bind("0.0.0.0", None)
    check_bind("0.0.0.0", "s3cret")
    check_bind("::1", None)
    check_bind("localhost", None)

    async def refuse():
        srv = AvatarServer(FakeDriver(), ServerConfig(host="0.0.0.0", port=0))
        with pytest.raises(ValueError, match="refusing to bind"):
            await srv.start()

    run(refuse())

    async def scenario():
        async with AvatarServer(FakeDriver(), cfg(token="s3cret")) as srv:
            srv.open_session("main")
            async with StreamClient(srv.url) as c:
                await c.ws.send('{"type": "subscribe"}')
                await _expect_error(c, P.E_UNAUTHORIZED)
                await c.ws.send('{"type": "start", "format": "pcm_s16le", "rate": 16000, "token": "nope"}')
                await _expect_error(c, P.E_UNAUTHORIZED)
            async with StreamClient(srv.url, token="s3cret") as c:
                assert (await c.subscribe())["session"] == "main"
            async with StreamClient(srv.url + "?token=s3cret") as c:
                assert (await c.subscribe())["session"] == "main"

    run(scenario())


def test_http_serves_the_viewer():
    async def scenario():
        async with AvatarServer(FakeDriver(), cfg()) as srv:
            base = f"http://127.0.0.1:{srv.port}"

            def get(path):
                try:
                    with urllib.request.urlopen(base + path, timeout=5) as r:
                        return r.status, r.headers["Content-Type"], r.read().decode()
                except urllib.error.HTTPError as e:
                    return e.code, None, ""

            return [await asyncio.to_thread(get, p) for p in ("/", "/viewer.js", "/health", "/secret")]

    (s1, t1, b1), (s2, t2, b2), (s3, _, b3), (s4, _, _) = run(scenario())
    assert s1 == 200 and t1.startswith("text/html") and '<canvas id="view"' in b1
    assert s2 == 200 and "javascript" in t2 and "forwardKinematics" in b2
    assert s3 == 200 and '"ok":true' in b3
    assert s4 == 404


class _GeneratedSource(AudioSource):
    """Long noise-like audio generated on the fly (memory flat), as fast as possible."""

    name = "generated"
    realtime = False

    def __init__(self, seconds: float, chunk: int = 12_000):
        self.n = int(seconds * MODEL_SAMPLE_RATE)
        self.chunk = chunk
        self.noise = (0.1 * np.random.default_rng(0).standard_normal(4 * chunk)).astype(np.float32)

    async def chunks(self):
        for k, i in enumerate(range(0, self.n, self.chunk)):
            start = (k * 7919) % (3 * self.chunk)  # a different window of the noise each time
            yield AudioChunk(self.noise[start:start + min(self.chunk, self.n - i)].copy(), time.monotonic())


def test_ten_minutes_fast_through_source_driver_subscriber_memory_flat():
    seconds = 600.0
    n_frames = int(seconds * 30)

    async def scenario():
        async with AvatarServer(FakeDriver(), cfg(max_pending_s=1.0)) as srv:
            live = srv.open_session("main")
            async with StreamClient(srv.url) as sub:
                await sub.subscribe("main")
                pump = asyncio.create_task(srv.pump(_GeneratedSource(seconds), live))
                expect, mem = 0, {}
                while True:
                    m = await sub.recv(T)
                    if isinstance(m, dict):
                        assert m["type"] == "end", m
                        break
                    assert m.index == expect and abs(m.time - (expect + 1) / 30) < 1e-9
                    expect += 1
                    if expect in (3_000, n_frames - 10):
                        mem[expect] = tracemalloc.get_traced_memory()[0]
                await pump
                return expect, mem, live

    tracemalloc.start()
    try:
        n, mem, live = run(scenario())
    finally:
        tracemalloc.stop()
    assert n == n_frames
    growth = mem[n_frames - 10] - mem[3_000]
    assert growth < 2_000_000, f"memory grew by {growth / 1e6:.1f} MB over 500 s of audio"
    assert live.stats.frames == n_frames and live.stats.dropped == 0 and live.stats.latency.count == n_frames


def test_latency_stats_and_budget_line():
    s = LatencyStats(window=10)
    for ms in range(1, 101):  # 1..100 ms
        s.add(ms / 1000 - 1e-4)
    assert s.count == 100 and abs(s.percentile(50) - 0.050) < 1e-9 and abs(s.percentile(95) - 0.095) < 1e-9
    assert abs(s.max - 0.0999) < 1e-9 and len(s.recent) == 10 and abs(s.recent_percentile(50) - 0.0954) < 1e-3
    line = format_budget(FakeDriver(chunk_frames=2).budget())
    assert line.startswith("latency budget: (N 2 + L 2 + R 1) x 33.3 ms = 166.7 ms + feature future 0.0 ms")
