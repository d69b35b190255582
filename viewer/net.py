"""The live viewer's network side: a background thread that subscribes to the avatar stream and feeds the jitter
buffer (and the audio timeline). Every message is parsed by realtime.protocol, the project's one wire module.

Reconnects with exponential backoff when the server is down or restarts, and re-subscribes when the session does
not exist yet or has ended. Measures the round-trip time with ping/pong.
"""
from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from models.layout import SessionConstants
from realtime import protocol
from viewer.audio_out import AudioTimeline
from viewer.jitter import JitterBuffer

BACKOFF_START_S = 0.5
BACKOFF_MAX_S = 5.0
PING_EVERY_S = 2.0


class StreamReceiver:
    """Subscribes to ``session`` at ``url`` in a daemon thread.

    Args:
        url: ``ws://host:port`` (``?token=...`` allowed).
        session: session name to subscribe to.
        buffer: pose jitter buffer to fill.
        audio: audio timeline to fill (subscribes to the audio stream too), or None.
        token: the server's token, if any.
    """

    def __init__(self, url: str, session: str, buffer: JitterBuffer, audio: AudioTimeline | None = None,
                 token: str | None = None) -> None:
        self.url = url if "://" in url else f"ws://{url}"
        self.session = session
        self.buffer = buffer
        self.audio = audio
        self.token = token
        self.streams = ["pose"] + (["audio"] if audio is not None else [])
        self.state = "starting"
        self.header: dict[str, Any] | None = None
        self.constants = SessionConstants()
        self.fps = 30.0
        self.rtt_ms: float | None = None
        self.connects = 0
        self.last_error: str | None = None
        self._last_index: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.header_version = 0  # bumped on every header (the app re-reads constants)
        self.bad_messages = 0

    # ---- message handling (no I/O: tests feed packed frames straight in) ------------------------------------------

    def handle(self, raw: bytes | bytearray | memoryview | str, arrival: float | None = None) -> Any:
        """Parse one server message with realtime.protocol and apply it; returns the parsed message."""
        if isinstance(raw, str):
            msg = protocol.parse_server_text(raw)
            self._on_json(msg)
            return msg
        m = protocol.unpack(raw)
        if isinstance(m, protocol.PoseFrame):
            if self._last_index is not None and m.index + 2 * self.fps < self._last_index:
                self.buffer.reset()  # indices went back by more than 2 s: the session restarted
                if self.audio is not None:
                    self.audio.reset()
                self._last_index = None
            self._last_index = m.index if self._last_index is None else max(m.index, self._last_index)
            self.buffer.push(m.index, m.time, m.params, arrival)
        elif isinstance(m, protocol.AudioPacket) and self.audio is not None:
            self.audio.push(m.start_sample, m.pcm)
        return m

    def _on_json(self, msg: dict[str, Any]) -> None:
        t = msg.get("type")
        if t == "header":
            self.header = msg
            self.fps = float(msg.get("fps", 30.0))
            self.buffer.fps = self.fps
            try:
                self.constants = SessionConstants.from_dict(msg.get("constants") or {})
            except (TypeError, ValueError) as e:
                self.last_error = f"bad constants in header: {e}"
                self.constants = SessionConstants()
            self.buffer.reset()
            if self.audio is not None:
                self.audio.reset()
            self._last_index = None
            self.header_version += 1
            self.last_error = None
            self.state = "live"
        elif t == "reset":
            self.buffer.reset()
            if self.audio is not None:
                self.audio.reset()
            self._last_index = None
        elif t == "end":
            self.state = "session ended"
        elif t == "pong" and isinstance(msg.get("t"), int | float):
            self.rtt_ms = (time.monotonic() - float(msg["t"])) * 1000.0
        elif t == "error":
            self.last_error = f"{msg.get('code')}: {msg.get('message')}"

    # ---- thread and connection loop --------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._thread_main, name="viewer-net", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()  # the connection loop polls it every 0.25 s at most
        if self._thread is not None:
            self._thread.join(timeout)

    def _thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._run())
        finally:
            loop.close()

    async def _run(self) -> None:
        backoff = BACKOFF_START_S
        while not self._stop.is_set():
            try:
                ok = await self._session_once()
                if ok:
                    backoff = BACKOFF_START_S
            except Exception as e:  # noqa: BLE001 - any network failure: report, back off, retry
                self.last_error = f"{type(e).__name__}: {e}"
                if self.state in ("live", "session ended"):
                    self.state = "disconnected"
            wait = backoff
            self.state = self._waiting_state(wait)
            t_end = time.monotonic() + wait
            while not self._stop.is_set() and time.monotonic() < t_end:
                await asyncio.sleep(0.05)
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    def _waiting_state(self, wait: float) -> str:
        if self.last_error and "unknown_session" in self.last_error:
            return f"waiting for session {self.session!r} (retry in {wait:.1f} s)"
        if self.state == "session ended":
            return f"session ended (resubscribe in {wait:.1f} s)"
        return f"disconnected (retry in {wait:.1f} s)"

    async def _session_once(self) -> bool:
        """One connection: subscribe and read until it closes. True when a header was received."""
        from websockets.asyncio.client import connect

        self.state = f"connecting to {self.url}"
        async with connect(self.url, compression=None, max_size=None, open_timeout=3.0) as ws:
            self.connects += 1
            sub: dict[str, Any] = {"type": "subscribe", "version": protocol.PROTOCOL_VERSION,
                                   "session": self.session, "streams": self.streams}
            if self.token:
                sub["token"] = self.token
            await ws.send(protocol.encode(sub))
            got_header = False
            pinger = asyncio.create_task(self._pinger(ws))
            try:
                while not self._stop.is_set():
                    try:
                        raw = await asyncio.wait_for(ws.recv(), 0.25)
                    except TimeoutError:
                        continue
                    try:
                        msg = self.handle(raw, time.monotonic())
                    except protocol.ProtocolError as e:  # one bad message: count it, keep the connection
                        self.bad_messages += 1
                        self.last_error = str(e)
                        continue
                    if isinstance(msg, dict):
                        if msg.get("type") == "header":
                            got_header = True
                        elif msg.get("type") == "error":
                            return got_header
                        elif msg.get("type") == "end":
                            return got_header
            finally:
                pinger.cancel()
            return got_header

    async def _pinger(self, ws: Any) -> None:
        while True:
            await ws.send(protocol.encode({"type": "ping", "version": protocol.PROTOCOL_VERSION,
                                           "t": time.monotonic()}))
            await asyncio.sleep(PING_EVERY_S)
