"""The WebSocket server: sessions, subscribers, one inference worker thread, and the browser page over HTTP.

Data flow per session: a source (microphone, file, or a pushing client) -> ``LiveSession.feed`` (event loop, waits
while more than ``max_pending_s`` of audio is pending: backpressure) -> ``InferenceWorker`` (one thread; each pass
takes the pending audio of every session and calls ``driver.process`` once for all of them, then packs the frames)
-> ``LiveSession.deliver`` (event loop) -> each subscriber's bounded queue (oldest dropped and counted) -> its socket.
The network never waits on the model and the model never waits on a client.
"""
from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import itertools
import logging
import socket
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np

from models.layout import SessionConstants as _DefaultConstants
from models.rates import MODEL_SAMPLE_RATE, SAMPLES_PER_FRAME
from realtime import protocol
from realtime.protocol import ProtocolError
from realtime.sources import AudioChunk, AudioSource, Control, NetworkSource
from realtime.stats import ComputeStats, SessionStats

log = logging.getLogger("realtime.server")
WEB_DIR = Path(__file__).parent / "web"
WEB_FILES = {"/": ("index.html", "text/html; charset=utf-8"), "/index.html": ("index.html", "text/html; charset=utf-8"),
             "/viewer.js": ("viewer.js", "text/javascript; charset=utf-8")}


@dataclass
class ServerConfig:
    """Limits and network settings of the server.

    Args:
        host: bind address; anything but loopback needs ``token``.
        port: TCP port (0: an ephemeral port, see ``AvatarServer.port``).
        token: shared secret clients must send (``?token=`` in the URL or ``"token"`` in subscribe/start).
        max_message_bytes: hard WebSocket message limit (beyond it the connection is closed with code 1009).
        max_chunk_bytes: largest PCM chunk accepted (bigger ones get a ``too_large`` error, the connection stays).
        max_json_bytes: largest JSON message accepted.
        max_pending_s: per-session audio waiting for the model beyond which the source stops being read.
        lossless_wait_s: how long a lossless session (a burst, a --fast file) waits per chunk for subscribers that
            are all behind before it goes on and lets their queues drop.
        max_batch_s: most audio of one session handed to one ``driver.process`` call (fairness between sessions).
        coalesce: hold a session's audio until it completes the engine's next N-frame release (fewer, larger
            driver calls at no latency cost; needs the driver's chunk_frames, lookahead and decoder_right).
        queue_messages: per-subscriber send queue bound (oldest messages dropped beyond it).
        send_buffer_bytes: kernel send buffer per connection (small keeps a stalled client's backlog in our queue,
            where it is dropped oldest-first, instead of in the kernel).
        ping_interval, ping_timeout: keep-alive pings that detect dead peers (seconds).
        max_sessions: most concurrent sessions (main + pushing clients).
    """

    host: str = "127.0.0.1"
    port: int = 8765
    token: str | None = None
    max_message_bytes: int = 1 << 20
    max_chunk_bytes: int = 256 * 1024
    max_json_bytes: int = 64 * 1024
    max_pending_s: float = 2.0
    lossless_wait_s: float = 2.0
    max_batch_s: float = 1.0
    coalesce: bool = True
    queue_messages: int = 1024
    send_buffer_bytes: int | None = 128 * 1024
    ping_interval: float | None = 10.0
    ping_timeout: float | None = 10.0
    max_sessions: int = 64


def is_loopback(host: str) -> bool:
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse to listen beyond this machine without a token."""
    if not is_loopback(host) and not token:
        raise ValueError(f"refusing to bind {host!r} without a token: anyone who can reach it could push audio and "
                         f"read the stream. Pass --token SECRET (clients send it), or bind 127.0.0.1.")


# ---- subscribers -------------------------------------------------------------------------------------------------

class Subscriber:
    """One connection's view of a session: a bounded send queue and the task that drains it into the socket."""

    def __init__(self, ws: Any, live: LiveSession, streams: tuple[str, ...], max_queue: int):
        self.ws, self.live, self.streams = ws, live, frozenset(streams)
        self.max_queue = max(2, int(max_queue))
        self.queue: deque[bytes | str] = deque()
        self.dropped = 0
        self.sent = 0
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run())

    def offer(self, messages: list[tuple[str, bytes | str]]) -> None:
        for stream, payload in messages:
            if stream != "event" and stream not in self.streams:
                continue
            if len(self.queue) >= self.max_queue:
                self._drop_oldest()
            self.queue.append(payload)
        self._wake.set()

    def _drop_oldest(self) -> None:
        for i, m in enumerate(self.queue):  # the oldest binary frame; events (JSON) are kept
            if isinstance(m, bytes):
                del self.queue[i]
                break
        else:
            self.queue.popleft()
        self.dropped += 1
        self.live.stats.dropped += 1

    async def _run(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self.queue:
                    await self.ws.send(self.queue.popleft())
                    self.sent += 1
                    if len(self.queue) == self.max_queue // 2:
                        self.live.wake()  # a lossless session may be waiting for this subscriber
        except Exception:  # ConnectionClosed and friends: the connection handler cleans up
            self.live.remove_subscriber(self)

    def detach(self) -> None:
        self.live.remove_subscriber(self)
        self._task.cancel()


# ---- sessions ----------------------------------------------------------------------------------------------------

@dataclass
class _Delivery:
    live: LiveSession
    messages: list[tuple[str, bytes | str]] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)  # per frame: arrival of its last sample
    frames: list[Any] = field(default_factory=list)
    audio_samples: int = 0
    end: bool = False


class LiveSession:
    """A driver session plus its subscribers, pending audio and stats.

    Loop-side methods (``feed``, ``control``, ``end``, ``deliver``) run on the event loop; attributes prefixed
    ``w_`` belong to the worker thread; ``ops``/``pending_samples`` are shared under the worker's lock.
    """

    def __init__(self, server: AvatarServer, name: str, engine: Any):
        self.server, self.name, self.engine = server, name, engine
        self.subscribers: set[Subscriber] = set()
        self.listeners: list[Callable[[list[Any]], None]] = []  # in-process consumers (recorder, bench)
        self.stats = SessionStats()
        self.ended = asyncio.Event()
        self.closing = False
        self.want_audio = False
        self.want_joints = False
        self.lossless = False  # sources faster than real time (bursts, --fast files): see feed()
        self.ops: deque[tuple] = deque()
        self.pending_samples = 0
        self._drained = asyncio.Event()
        self.w_consumed = 0  # model-rate samples handed to the engine since the last reset
        self.w_arrivals: deque[tuple[int, float]] = deque()  # (cumulative end sample, arrival time)
        self.w_last_arrival = 0.0
        self.w_frames = 0

    # -- subscribers
    def header(self, streams: tuple[str, ...]) -> dict:
        d = self.server.driver
        return protocol.make_header(self.name, self.engine.constants, self.server.budget, d.face_mode, streams,
                                    getattr(self.engine, "speaker", None))

    def add_subscriber(self, sub: Subscriber) -> None:
        self.subscribers.add(sub)
        self._update_wants()

    def remove_subscriber(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)
        self._update_wants()

    def _update_wants(self) -> None:
        self.want_audio = any("audio" in s.streams for s in self.subscribers)
        self.want_joints = any("joints" in s.streams for s in self.subscribers)

    # -- input (event loop)
    def pending_seconds(self) -> float:
        return self.pending_samples / MODEL_SAMPLE_RATE

    def _subscribers_behind(self) -> bool:
        """Every subscriber's queue is over half full (so a stalled one alone never holds the others)."""
        return bool(self.subscribers) and all(len(s.queue) > s.max_queue // 2 for s in self.subscribers)

    async def feed(self, pcm: np.ndarray, arrival: float) -> None:
        """Queue model-rate audio for the worker. Waits while more than ``max_pending_s`` is pending (backpressure);
        a lossless session also waits, up to ``lossless_wait_s`` per chunk, while all its subscribers are behind."""
        cfg = self.server.config
        deadline = None
        while not self.closing:
            timeout = None
            if self.pending_seconds() <= cfg.max_pending_s:
                if not (self.lossless and self._subscribers_behind()):
                    break
                deadline = deadline or time.monotonic() + cfg.lossless_wait_s
                timeout = deadline - time.monotonic()
                if timeout <= 0:
                    break  # a client that does not read at all: go on, its queue drops the oldest frames
            self._drained.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), timeout)
        if not self.closing and len(pcm):
            self.server.worker.submit(self, ("audio", np.asarray(pcm, np.float32), arrival))

    def control(self, op: str, value: Any = None) -> None:
        if not self.closing:
            self.server.worker.submit(self, (op, value, time.monotonic()))

    def end(self) -> None:
        """End of stream: the worker flushes the look-ahead frames, then subscribers get an ``end`` event."""
        if not self.closing:
            self.server.worker.submit(self, ("end", None, time.monotonic()))
            self.closing = True

    def wake(self) -> None:
        self._drained.set()

    # -- output (event loop)
    def deliver(self, d: _Delivery, now: float) -> None:
        for a in d.arrivals:
            self.stats.latency.add(now - a)
        self.stats.frames += len(d.frames)
        self.stats.audio_samples += d.audio_samples
        for sub in list(self.subscribers):
            sub.offer(d.messages)
        for cb in self.listeners:
            cb(d.frames)
        if d.end:
            self.closing = True
            if self.server.sessions.get(self.name) is self:
                del self.server.sessions[self.name]
            self.wake()
            self.ended.set()


# ---- the inference worker --------------------------------------------------------------------------------------

class InferenceWorker(threading.Thread):
    """One thread that runs the model for all sessions: each pass batches every session with pending audio."""

    def __init__(self, server: AvatarServer, loop: asyncio.AbstractEventLoop):
        super().__init__(name="inference-worker", daemon=True)
        self.server, self.loop = server, loop
        self.driver = server.driver
        self.max_batch = max(SAMPLES_PER_FRAME, int(server.config.max_batch_s * MODEL_SAMPLE_RATE))
        n, la, r = (getattr(self.driver, k, None) for k in ("chunk_frames", "lookahead", "decoder_right"))
        self.align = server.config.coalesce and all(isinstance(v, int) for v in (n, la, r)) and n >= 1
        self.chunk, self.hold = (n, la + r) if self.align else (1, 0)
        self._cv = threading.Condition()
        self._active: list[LiveSession] = []
        self._stopping = False
        self.compute = ComputeStats()

    def submit(self, live: LiveSession, op: tuple) -> None:
        with self._cv:
            live.ops.append(op)
            if op[0] == "audio":
                live.pending_samples += len(op[1])
            if live not in self._active:
                self._active.append(live)
            self._cv.notify()

    def stop(self) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify()

    def _emit_group(self, samples: int) -> int:
        """How many N-frame releases the engine makes with ``samples`` of audio: frame k leaves once audio up to
        frame k + L + R is in, N frames at a time (docs/CONTRACTS.md)."""
        return max(0, samples // SAMPLES_PER_FRAME - self.hold) // self.chunk

    def _ready(self, live: LiveSession) -> bool:
        """Worth a driver call now: a control waits behind the audio, or the pending audio completes a release.

        Calling the model on audio that cannot release a frame yet only adds per-call overhead, so small input
        chunks (20 ms) are coalesced up to the next release boundary; no frame leaves later because of it.
        """
        if not self.align:
            return True
        total = 0
        for op in live.ops:
            if op[0] != "audio":
                return True
            total += len(op[1])
        return self._emit_group(live.w_consumed + total) > self._emit_group(live.w_consumed)

    def _take(self) -> tuple[list[tuple[LiveSession, np.ndarray, list]], list[tuple[LiveSession, tuple]]] | None:
        with self._cv:
            while True:
                if self._stopping:
                    return None
                audio, controls = [], []
                for live in list(self._active):
                    if live.ops and live.ops[0][0] == "audio":  # a run of audio ops, up to max_batch samples
                        if not self._ready(live):
                            continue
                        parts, taken = [], 0
                        while live.ops and live.ops[0][0] == "audio" and (
                                not parts or taken + len(live.ops[0][1]) <= self.max_batch):
                            _, pcm, arrival = live.ops.popleft()
                            parts.append((pcm, arrival))
                            taken += len(pcm)
                        live.pending_samples -= taken
                        audio.append((live, np.concatenate([p for p, _ in parts]), parts))
                    elif live.ops:
                        controls.append((live, live.ops.popleft()))
                    if not live.ops:
                        self._active.remove(live)
                if audio or controls:
                    return audio, controls
                self._cv.wait()

    def run(self) -> None:
        while True:
            work = self._take()
            if work is None:
                return
            audio, controls = work
            deliveries = []
            try:
                deliveries += self._run_audio(audio)
            except Exception as e:  # a model error must not kill the server: report it to the affected sessions
                deliveries += [self._failed(live, e) for live, _, _ in audio]
            for live, op in controls:
                try:
                    deliveries.append(self._run_control(live, op))
                except Exception as e:
                    d = self._failed(live, e)
                    d.end = op[0] == "end"  # the session still ends (its subscribers must not wait forever)
                    deliveries.append(d)
            self._post(deliveries, [x[0] for x in audio])

    @staticmethod
    def _failed(live: LiveSession, e: Exception) -> _Delivery:
        log.error("session %s: inference failed:\n%s", live.name, traceback.format_exc())
        msg = protocol.error(protocol.E_INTERNAL, f"inference failed: {type(e).__name__}: {e}")
        return _Delivery(live, [("event", msg)])

    def _post(self, deliveries: list[_Delivery], fed: list[LiveSession]) -> None:
        def deliver_all() -> None:
            now = time.monotonic()
            for d in deliveries:
                d.live.deliver(d, now)
            for live in fed:
                live.wake()

        with contextlib.suppress(RuntimeError):  # the loop is closed: shutting down
            self.loop.call_soon_threadsafe(deliver_all)

    def _run_audio(self, audio: list[tuple[LiveSession, np.ndarray, list]]) -> list[_Delivery]:
        if not audio:
            return []
        t0 = time.perf_counter()
        outs = self.driver.process([(live.engine, pcm) for live, pcm, _ in audio])
        self.compute.add(time.perf_counter() - t0, sum(len(p) for _, p, _ in audio) / MODEL_SAMPLE_RATE, len(audio))
        deliveries = []
        for (live, pcm, parts), frames in zip(audio, outs):
            d = _Delivery(live, audio_samples=len(pcm))
            for chunk, arrival in parts:
                if live.want_audio:
                    d.messages.append(("audio", protocol.pack_audio(live.w_consumed, chunk)))
                live.w_consumed += len(chunk)
                live.w_arrivals.append((live.w_consumed, arrival))
                live.w_last_arrival = arrival
            self._pack_frames(live, d, frames, 0)
            deliveries.append(d)
        return deliveries

    def _run_control(self, live: LiveSession, op: tuple) -> _Delivery:
        kind, value, t = op
        d = _Delivery(live)
        if kind == "reset":
            live.engine.reset()
            live.w_consumed, live.w_frames = 0, 0
            live.w_arrivals.clear()
            d.messages.append(("event", protocol.encode({"type": "reset", "session": live.name})))
        elif kind == "speaker":
            live.engine.set_speaker(int(value))
            d.messages.append(("event", protocol.encode({"type": "speaker", "session": live.name,
                                                         "speaker": int(value)})))
        elif kind == "end":
            live.w_last_arrival = t
            frames = live.engine.flush()
            self._pack_frames(live, d, frames, protocol.FLAG_FLUSH)
            st = live.stats
            d.messages.append(("event", protocol.encode({
                "type": "end", "session": live.name, "frames": live.w_frames,
                "input": {"samples": live.w_consumed, "nonfinite": st.nonfinite, "clipped": st.clipped,
                          "overflows": st.overflows}})))
            d.end = True
        return d

    def _pack_frames(self, live: LiveSession, d: _Delivery, frames: list[Any], flags: int) -> None:
        if not frames:
            return
        params = np.stack([np.asarray(f.params, np.float32) for f in frames])  # (T, 320)
        joints = protocol.joints_from_params(params, live.engine.constants) if live.want_joints else None
        for i, f in enumerate(frames):
            d.messages.append(("pose", protocol.pack_pose(f.index, f.time, params[i], flags)))
            if joints is not None:
                d.messages.append(("joints", protocol.pack_joints(f.index, f.time, joints[0][i], joints[1][i],
                                                                  flags)))
            d.arrivals.append(self._arrival(live, (f.index + 1) * SAMPLES_PER_FRAME))
        d.frames.extend(frames)
        live.w_frames += len(frames)

    @staticmethod
    def _arrival(live: LiveSession, sample_end: int) -> float:
        """Arrival time of model-rate sample ``sample_end - 1`` (the end-of-stream time beyond the audio)."""
        arr = live.w_arrivals
        while arr and arr[0][0] < sample_end:
            arr.popleft()
        return arr[0][1] if arr else live.w_last_arrival


# ---- the server --------------------------------------------------------------------------------------------------

class AvatarServer:
    """Sessions, the inference worker and (optionally) the WebSocket/HTTP listener.

    Args:
        driver: a realtime.engine Driver (or anything with its API).
        config: limits and network settings.
    """

    def __init__(self, driver: Any, config: ServerConfig | None = None):
        self.driver = driver
        self.config = config or ServerConfig()
        self.sessions: dict[str, LiveSession] = {}
        self.budget = {"chunk_frames": getattr(driver, "chunk_frames", None),
                       "lookahead": getattr(driver, "lookahead", None),
                       "decoder_right": getattr(driver, "decoder_right", None), **driver.budget()}
        self.worker: InferenceWorker | None = None
        self._ws_server: Any = None
        self._tasks: set[asyncio.Task] = set()
        self._push_ids = itertools.count(1)
        self.errors_sent = 0
        self.connections = 0

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        if self._ws_server is None:
            raise RuntimeError("server is not listening")
        return self._ws_server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"ws://{self.config.host}:{self.port}/"

    async def start(self, listen: bool = True) -> None:
        """Start the worker and, with ``listen``, the WebSocket/HTTP listener (checks the bind policy first)."""
        if listen:
            check_bind(self.config.host, self.config.token)
        # the header's names and skeleton come from models.rig (which imports torch): build them once, off the loop
        await asyncio.to_thread(lambda: (protocol.make_header("warmup", _DefaultConstants(), {}, "", protocol.STREAMS)))
        self.worker = InferenceWorker(self, asyncio.get_running_loop())
        self.worker.start()
        if listen:
            from websockets.asyncio.server import serve

            c = self.config
            self._ws_server = await serve(
                self._handle, c.host, c.port, process_request=self._process_request, compression=None,
                max_size=c.max_message_bytes, ping_interval=c.ping_interval, ping_timeout=c.ping_timeout,
                close_timeout=2.0)

    async def stop(self) -> None:
        if self._ws_server is not None:
            self._ws_server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._ws_server.wait_closed(), 5.0)
        for t in list(self._tasks):
            t.cancel()
        if self.worker is not None:
            self.worker.stop()
            await asyncio.to_thread(self.worker.join, 5.0)

    async def __aenter__(self) -> AvatarServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    # -- sessions
    def open_session(self, name: str, speaker: int | None = None, constants: Any = None) -> LiveSession:
        if name in self.sessions:
            raise ProtocolError(protocol.E_SESSION_EXISTS, f"session {name!r} already exists")
        if len(self.sessions) >= self.config.max_sessions:
            raise ProtocolError(protocol.E_BUSY, f"the server already runs {len(self.sessions)} sessions "
                                                 f"(max_sessions)")
        live = LiveSession(self, name, self.driver.new_session(speaker=speaker, constants=constants))
        self.sessions[name] = live
        return live

    async def pump(self, source: AudioSource, live: LiveSession, duration: float | None = None) -> None:
        """Feed a source into a session until the source ends (or ``duration`` seconds of audio), then end it."""
        limit = None if duration is None else int(duration * MODEL_SAMPLE_RATE)
        fed = 0
        live.lossless = not source.realtime
        try:
            async for item in source.chunks():
                if isinstance(item, Control):
                    live.control(item.op, item.value)
                    continue
                assert isinstance(item, AudioChunk)
                pcm = item.pcm if limit is None else item.pcm[:max(0, limit - fed)]
                fed += len(pcm)
                self._sync_input_stats(source, live)
                await live.feed(pcm, item.arrival)
                if limit is not None and fed >= limit:
                    break
        finally:
            source.close()
            self._sync_input_stats(source, live)
            live.end()
        await live.ended.wait()

    @staticmethod
    def _sync_input_stats(source: AudioSource, live: LiveSession) -> None:
        c = source.conditioner
        if c is not None:
            live.stats.nonfinite, live.stats.clipped = c.nonfinite, c.clipped
        live.stats.overflows = source.overflows

    def spawn(self, coro: Any) -> asyncio.Task:
        t = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)
        return t

    async def drain(self, timeout: float = 2.0) -> None:
        """Wait (bounded) until every subscriber's queue is empty."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(not s.queue for live in self.sessions.values() for s in live.subscribers):
                return
            await asyncio.sleep(0.01)

    def stats(self) -> dict:
        return {"sessions": {n: {**s.stats.to_dict(), "subscribers": len(s.subscribers),
                                 "pending_s": round(s.pending_seconds(), 3),
                                 "subscriber_dropped": [sub.dropped for sub in s.subscribers]}
                             for n, s in self.sessions.items()},
                "compute": self.worker.compute.to_dict() if self.worker else None,
                "budget": self.budget, "connections": self.connections, "errors_sent": self.errors_sent}

    # -- network
    def _process_request(self, conn: Any, request: Any) -> Any:
        """Plain HTTP GETs (no WebSocket upgrade) get the browser page; upgrades go through."""
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return None
        path = urlsplit(request.path).path
        if path == "/health":
            resp = conn.respond(200, protocol.encode({"ok": True, "sessions": sorted(self.sessions)}))
            content_type = "application/json"
        elif path in WEB_FILES:
            name, content_type = WEB_FILES[path]
            resp = conn.respond(200, (WEB_DIR / name).read_text(encoding="utf-8"))
        else:
            return conn.respond(404, f"not found: {path} (the viewer is at /, the stream at ws://host:port/)\n")
        del resp.headers["Content-Type"]
        resp.headers["Content-Type"] = content_type
        resp.headers["Cache-Control"] = "no-store"
        return resp

    async def _handle(self, ws: Any) -> None:
        self.connections += 1
        if self.config.send_buffer_bytes:
            sock = ws.transport.get_extra_info("socket")
            with contextlib.suppress(OSError, AttributeError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.config.send_buffer_bytes)
        conn = _Connection(self, ws)
        try:
            async for msg in ws:
                await conn.on_message(msg)
        except Exception as e:  # ConnectionClosed (dead peer, ping timeout, 1009 too big) or a bug
            if not type(e).__name__.startswith("ConnectionClosed"):
                log.error("connection handler failed:\n%s", traceback.format_exc())
        finally:
            await conn.cleanup()


class _Connection:
    """Per-connection protocol state: authorisation, the subscription, the pushed session."""

    def __init__(self, server: AvatarServer, ws: Any):
        self.server, self.ws = server, ws
        self.cfg = server.config
        q = parse_qs(urlsplit(getattr(ws.request, "path", "") or "").query)
        self.authorized = self.cfg.token is None or self._token_ok((q.get("token") or [None])[0])
        self.subscriber: Subscriber | None = None
        self.source: NetworkSource | None = None
        self.live: LiveSession | None = None

    def _token_ok(self, token: Any) -> bool:
        return isinstance(token, str) and hmac.compare_digest(token.encode(), (self.cfg.token or "").encode())

    def _check_auth(self, msg: dict) -> None:
        if not self.authorized and self._token_ok(msg.get("token")):
            self.authorized = True
        if not self.authorized:
            raise ProtocolError(protocol.E_UNAUTHORIZED, 'this server needs a token: add "token" to the message '
                                                         "or ?token= to the URL")

    async def send(self, text: str) -> None:
        await self.ws.send(text)

    async def on_message(self, msg: str | bytes) -> None:
        try:
            if isinstance(msg, str):
                m = protocol.parse_text(msg, max_bytes=self.cfg.max_json_bytes)
                await getattr(self, "on_" + m["type"])(m)
            else:
                await self.on_binary(msg)
        except ProtocolError as e:
            self.server.errors_sent += 1
            await self.send(protocol.error(e.code, e.message))

    async def on_binary(self, data: bytes) -> None:
        if self.source is None:
            raise ProtocolError(protocol.E_NO_START, 'binary audio before a "start" message; send '
                                                     '{"type": "start", "format": ..., "rate": ..., "channels": ...}')
        if len(data) > self.cfg.max_chunk_bytes:
            raise ProtocolError(protocol.E_TOO_LARGE, f"PCM chunk of {len(data)} bytes exceeds the limit of "
                                                      f"{self.cfg.max_chunk_bytes}; send smaller chunks")
        await self.source.push(data, time.monotonic())
        await asyncio.sleep(0)  # let the subscribers' send tasks run between the chunks of a burst

    async def on_subscribe(self, m: dict) -> None:
        self._check_auth(m)
        name = m.get("session", "main")
        streams = protocol.parse_streams(m.get("streams", list(protocol.DEFAULT_STREAMS)))
        live = self.server.sessions.get(name) if isinstance(name, str) else None
        if live is None or live.closing:
            raise ProtocolError(protocol.E_UNKNOWN_SESSION, f"no live session {name!r}; live sessions: "
                                                            f"{sorted(self.server.sessions)}")
        await self._subscribe(live, streams)

    async def _subscribe(self, live: LiveSession, streams: tuple[str, ...]) -> None:
        if self.subscriber is not None:
            self.subscriber.detach()
            self.subscriber = None
        await self.send(protocol.encode(live.header(streams)))
        self.subscriber = Subscriber(self.ws, live, streams, self.cfg.queue_messages)
        live.add_subscriber(self.subscriber)

    async def on_unsubscribe(self, m: dict) -> None:
        if self.subscriber is not None:
            self.subscriber.detach()
            self.subscriber = None

    async def on_start(self, m: dict) -> None:
        self._check_auth(m)
        if self.source is not None:
            raise ProtocolError(protocol.E_ALREADY_STARTED, 'this connection is already pushing; send "end" first')
        req = protocol.parse_start(m)
        name = req.session or f"push-{next(self.server._push_ids)}"
        try:
            live = self.server.open_session(name, req.speaker, req.constants)
        except (ValueError, TypeError) as e:
            if isinstance(e, ProtocolError):
                raise
            raise ProtocolError(protocol.E_BAD_MESSAGE, f"cannot open the session: {e}") from None
        self.source, self.live = NetworkSource(req), live
        self.server.spawn(self.server.pump(self.source, live))
        await self.send(protocol.encode({"type": "started", "session": name, "rate": req.rate,
                                         "format": req.format, "channels": req.channels,
                                         "model_rate": MODEL_SAMPLE_RATE, "budget": self.server.budget}))
        if req.streams:
            await self._subscribe(live, req.streams)

    def _need_source(self, what: str) -> NetworkSource:
        if self.source is None:
            raise ProtocolError(protocol.E_NO_START, f'"{what}" controls the session this connection pushes: '
                                                     f'send "start" first')
        return self.source

    async def on_end(self, m: dict) -> None:
        src = self._need_source("end")
        self.source = None
        await src.end()

    async def on_reset(self, m: dict) -> None:
        await self._need_source("reset").control("reset")

    async def on_speaker(self, m: dict) -> None:
        src = self._need_source("speaker")
        n = getattr(self.server.driver, "n_speakers", None)
        await src.control("speaker", protocol.parse_speaker(m.get("speaker"), n_speakers=n))

    async def on_stats(self, m: dict) -> None:
        await self.send(protocol.encode({"type": "stats", **self.server.stats()}))

    async def on_ping(self, m: dict) -> None:
        await self.send(protocol.encode({"type": "pong", "t": m.get("t")}))

    async def cleanup(self) -> None:
        if self.subscriber is not None:
            self.subscriber.detach()
        if self.source is not None:  # a vanished pusher: flush what it sent so other subscribers get the end
            src, self.source = self.source, None
            with contextlib.suppress(Exception):
                await asyncio.wait_for(src.end(), 5.0)
