"""A small asyncio client for the avatar stream (used by the tests, the viewer and users).

    async with StreamClient("ws://127.0.0.1:8765/") as c:
        header = await c.subscribe("main", streams=("pose", "joints"))
        async for msg in c.messages():          # PoseFrame | JointsFrame | AudioPacket | dict (JSON events)
            ...

    result = asyncio.run(push_file("ws://127.0.0.1:8765/", pcm, rate=16000))   # push audio, collect its frames
"""
from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from realtime import protocol
from realtime.protocol import AudioPacket, JointsFrame, PoseFrame, ProtocolError

Message = PoseFrame | JointsFrame | AudioPacket | dict


class ServerError(RuntimeError):
    """The server answered with an error message."""

    def __init__(self, msg: dict):
        super().__init__(f"{msg.get('code')}: {msg.get('message')}")
        self.code, self.message = msg.get("code"), msg.get("message")


@dataclass
class Collected:
    """Everything a client received for one session, in arrival order per kind."""

    header: dict | None = None
    poses: list[PoseFrame] = field(default_factory=list)
    joints: list[JointsFrame] = field(default_factory=list)
    audio: list[AudioPacket] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)
    ended: bool = False

    @property
    def indices(self) -> list[int]:
        return [p.index for p in self.poses]

    def params(self) -> np.ndarray:
        """(T, 320) float32 of the received pose frames."""
        return np.stack([p.params for p in self.poses]) if self.poses else np.zeros((0, 320), np.float32)

    def add(self, m: Message) -> None:
        if isinstance(m, PoseFrame):
            self.poses.append(m)
        elif isinstance(m, JointsFrame):
            self.joints.append(m)
        elif isinstance(m, AudioPacket):
            self.audio.append(m)
        else:
            if m.get("type") == "header":
                self.header = m
            elif m.get("type") == "end":
                self.ended = True
            self.events.append(m)


class StreamClient:
    """One WebSocket connection to the server: subscribe to a session and/or push audio.

    Args:
        url: ``ws://host:port/``.
        token: the server's token, when it has one.
        max_queue: websockets' receive buffer (messages) before it stops reading the socket.
    """

    def __init__(self, url: str, token: str | None = None, max_queue: int | None = 64, **connect_kwargs: Any):
        self.url, self.token = url, token
        self.max_queue = max_queue
        self.connect_kwargs = connect_kwargs
        self.ws: Any = None
        self._backlog: deque[Message] = deque()
        self._push: protocol.StartRequest | None = None

    async def connect(self) -> StreamClient:
        from websockets.asyncio.client import connect

        self.ws = await connect(self.url, compression=None, max_size=None, max_queue=self.max_queue,
                                **self.connect_kwargs)
        return self

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()

    async def __aenter__(self) -> StreamClient:
        return await self.connect()

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    # -- low level
    async def send_json(self, msg: dict) -> None:
        if self.token is not None and msg.get("type") in ("subscribe", "start"):
            msg = {**msg, "token": self.token}
        await self.ws.send(protocol.encode({"version": protocol.PROTOCOL_VERSION, **msg}))

    async def recv(self, timeout: float | None = None) -> Message:
        """The next message, parsed: binary frames as dataclasses, JSON as dicts (errors included)."""
        if self._backlog:
            return self._backlog.popleft()
        async with asyncio.timeout(timeout):  # cheaper than wait_for (no extra task per message)
            raw = await self.ws.recv()
        return protocol.unpack(raw) if isinstance(raw, bytes) else protocol.parse_server_text(raw)

    async def _await_reply(self, types: Iterable[str], timeout: float) -> dict:
        """Read until a JSON message of one of ``types`` (or an error); other messages are kept for ``recv``."""
        types = set(types)
        deadline = time.monotonic() + timeout
        skipped: list[Message] = []
        try:
            while True:
                m = await self.recv(max(0.001, deadline - time.monotonic()))
                if isinstance(m, dict) and m.get("type") == "error":
                    raise ServerError(m)
                if isinstance(m, dict) and m.get("type") in types:
                    return m
                skipped.append(m)
        finally:
            self._backlog.extendleft(reversed(skipped))

    # -- subscribing
    async def subscribe(self, session: str = "main", streams: Iterable[str] = ("pose",),
                        timeout: float = 10.0) -> dict:
        """Subscribe and return the header."""
        await self.send_json({"type": "subscribe", "session": session, "streams": list(streams)})
        return await self._await_reply(["header"], timeout)

    async def messages(self, timeout: float | None = None) -> AsyncIterator[Message]:
        """Every message until the connection closes (or nothing arrives for ``timeout`` seconds)."""
        from websockets.exceptions import ConnectionClosed

        while True:
            try:
                yield await self.recv(timeout)
            except (ConnectionClosed, TimeoutError):
                return

    async def collect(self, until_end: bool = True, timeout: float = 30.0, max_frames: int | None = None,
                      into: Collected | None = None) -> Collected:
        """Gather messages until the session's ``end`` event (or ``max_frames`` poses); ``timeout`` bounds each wait."""
        out = into or Collected()
        async for m in self.messages(timeout):
            out.add(m)
            if until_end and out.ended or max_frames is not None and len(out.poses) >= max_frames:
                break
        return out

    # -- pushing
    async def start(self, rate: int, *, fmt: str = "pcm_s16le", channels: int = 1, speaker: int | None = None,
                    constants: dict | None = None, session: str | None = None,
                    streams: Iterable[str] = ("pose",), timeout: float = 10.0) -> dict:
        """Open a pushed session; returns the ``started`` reply (its header, if streams were asked, follows)."""
        msg: dict[str, Any] = {"type": "start", "format": fmt, "rate": rate, "channels": channels,
                               "streams": list(streams)}
        for k, v in (("speaker", speaker), ("constants", constants), ("session", session)):
            if v is not None:
                msg[k] = v
        await self.send_json(msg)
        reply = await self._await_reply(["started"], timeout)
        self._push = protocol.StartRequest(fmt, rate, channels)
        return reply

    def encode_audio(self, pcm: np.ndarray) -> bytes:
        """Float audio (n,) or (n, channels) -> bytes in the declared format (s16 is clipped, f32 sent as is)."""
        if self._push is None:
            raise RuntimeError("call start() before sending audio")
        a = np.asarray(pcm, np.float32)
        if self._push.format == "pcm_s16le":
            return (np.clip(np.nan_to_num(a), -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()
        return a.astype("<f4").tobytes()

    async def send_audio(self, pcm: np.ndarray | bytes) -> None:
        await self.ws.send(pcm if isinstance(pcm, bytes | bytearray) else self.encode_audio(pcm))

    async def end(self) -> None:
        await self.send_json({"type": "end"})
        self._push = None

    async def reset(self) -> None:
        await self.send_json({"type": "reset"})

    async def set_speaker(self, speaker: int) -> None:
        await self.send_json({"type": "speaker", "speaker": speaker})

    async def stats(self, timeout: float = 10.0) -> dict:
        await self.send_json({"type": "stats"})
        return await self._await_reply(["stats"], timeout)


async def push_file(url: str, pcm: np.ndarray, rate: int, *, fmt: str = "pcm_s16le", chunk_ms: float = 100.0,
                    realtime: bool = False, streams: Iterable[str] = ("pose",), speaker: int | None = None,
                    token: str | None = None, timeout: float = 30.0) -> Collected:
    """Push audio (n,) / (n, C) as one session and collect every message of that session until its end."""
    a = np.asarray(pcm)
    channels = 1 if a.ndim == 1 else a.shape[1]
    step = max(1, int(rate * chunk_ms / 1000.0))
    async with StreamClient(url, token=token) as c:
        await c.start(rate, fmt=fmt, channels=channels, speaker=speaker, streams=streams)
        out = Collected()

        async def sender() -> None:
            t0 = time.monotonic()
            for i in range(0, len(a), step):
                if realtime:
                    await asyncio.sleep(max(0.0, t0 + i / rate - time.monotonic()))
                await c.send_audio(a[i:i + step])
            await c.end()

        task = asyncio.create_task(sender())
        try:
            await c.collect(timeout=timeout, into=out)
        finally:
            task.cancel()
        if not out.ended:
            raise ProtocolError(protocol.E_INTERNAL, f"no end event within {timeout} s (got {len(out.poses)} frames)")
        return out
