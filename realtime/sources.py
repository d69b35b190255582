"""Audio sources of the runtime: one interface, three kinds (microphone, file/array, network push).

Every source yields ``AudioChunk``s of mono float32 audio at the model rate (24 kHz), sanitised (NaN/Inf -> 0,
clipped to [-1, 1], counted), downmixed and resampled by one ``AudioConditioner``. Each chunk carries its arrival
time (``time.monotonic()`` when its last sample became available), from which frame latency is measured.
"""
from __future__ import annotations

import asyncio
import contextlib
import math
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.audio import StreamResampler, sanitize
from models.rates import MODEL_SAMPLE_RATE
from realtime import protocol


@dataclass
class AudioChunk:
    """Model-rate mono audio and the monotonic time its last sample arrived."""

    pcm: np.ndarray  # (n,) float32 @ MODEL_SAMPLE_RATE
    arrival: float


@dataclass
class Control:
    """A control event travelling in order with the audio (network sources): reset or speaker change."""

    op: str  # 'reset' | 'speaker'
    value: Any = None


class AudioConditioner:
    """Raw input (any rate, any channel count, int or float) -> clean mono float32 at the model rate, counted."""

    def __init__(self, rate: int, channels: int = 1):
        self.rate, self.channels = int(rate), int(channels)
        self._rs = StreamResampler(self.rate)
        self.samples_in = 0  # input frames (per channel)
        self.samples_out = 0
        self.nonfinite = 0
        self.clipped = 0

    def process(self, x: np.ndarray) -> np.ndarray:
        """(n,) or (n, channels) -> (m,) float32 @ 24 kHz. Integers are scaled by their full range."""
        a = np.asarray(x)
        if np.issubdtype(a.dtype, np.integer):
            a = a.astype(np.float32) / float(np.iinfo(a.dtype).max + 1)
        a = a.astype(np.float32, copy=False)
        if a.ndim == 2:
            a = a.mean(axis=1) if a.shape[1] > 1 else a[:, 0]  # NaN in any channel stays NaN -> sanitised
        clean, n_bad, n_clip = sanitize(a)
        self.samples_in += len(clean)
        self.nonfinite += n_bad
        self.clipped += n_clip
        return self._out(self._rs.process(clean))

    def finish(self) -> np.ndarray:
        """The resampler's tail at end of stream."""
        return self._out(self._rs.process(np.zeros(0, np.float32), last=True))

    def _out(self, y: np.ndarray) -> np.ndarray:
        self.samples_out += len(y)
        return np.clip(y, -1.0, 1.0, out=y)  # resampling can ring past full scale after clipped input


class AudioSource(ABC):
    """An async stream of ``AudioChunk``s (and, for network sources, in-order ``Control``s)."""

    name: str = "source"
    conditioner: AudioConditioner | None = None
    realtime: bool = True  # False: faster than real time (a burst or --fast): the server may pace it losslessly

    @abstractmethod
    def chunks(self) -> AsyncIterator[AudioChunk | Control]:
        """Yield audio until the source ends (a file's end, the network ``end``) or ``close()``."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Stop producing (idempotent)."""

    @property
    def overflows(self) -> int:
        return 0


# ---- files and arrays ---------------------------------------------------------------------------------------------

class _PacedSource(AudioSource):
    """Shared pacing: real time (sleep until each chunk's capture instant) or as fast as possible."""

    def __init__(self, rate: int, channels: int, realtime: bool, chunk_ms: float):
        if chunk_ms <= 0:
            raise ValueError(f"chunk_ms must be positive, got {chunk_ms}")
        self.rate, self.channels, self.realtime = int(rate), int(channels), bool(realtime)
        self.block = max(1, int(round(self.rate * chunk_ms / 1000.0)))
        self.conditioner = AudioConditioner(self.rate, self.channels)
        self._closed = False

    def close(self) -> None:
        self._closed = True

    @abstractmethod
    def _blocks(self) -> Any:
        """Iterator of raw (n,) / (n, C) blocks of ``self.block`` input samples (the last may be shorter)."""

    async def chunks(self) -> AsyncIterator[AudioChunk]:
        t0 = time.monotonic()
        done = 0  # input samples delivered
        for raw in self._blocks():
            if self._closed:
                return
            done += len(raw)
            due = t0 + done / self.rate
            if self.realtime:
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
            else:
                await asyncio.sleep(0)  # let the server breathe between bursts
            pcm = self.conditioner.process(raw)
            if len(pcm):
                yield AudioChunk(pcm, time.monotonic())
        tail = self.conditioner.finish()
        if len(tail) and not self._closed:
            yield AudioChunk(tail, time.monotonic())


class ArraySource(_PacedSource):
    """In-memory audio (e.g. the built-in demo), played in real time or as fast as possible, optionally looped.

    Args:
        pcm: (n,) or (n, channels) samples at ``rate``.
        rate: sample rate of ``pcm``.
        realtime: pace chunks at the audio's own speed (False: as fast as the server takes them).
        chunk_ms: chunk length.
        loop: repeat forever (stop with ``close()`` or a duration).
    """

    def __init__(self, pcm: np.ndarray, rate: int = MODEL_SAMPLE_RATE, *, realtime: bool = True,
                 chunk_ms: float = 20.0, loop: bool = False, name: str = "array"):
        a = np.asarray(pcm)
        super().__init__(rate, 1 if a.ndim == 1 else a.shape[1], realtime, chunk_ms)
        if len(a) == 0:
            raise ValueError("audio source is empty")
        self.pcm, self.loop, self.name = a, loop, name

    def _blocks(self):
        while True:
            for i in range(0, len(self.pcm), self.block):
                yield self.pcm[i:i + self.block]
            if not self.loop:
                return


class WavSource(_PacedSource):
    """An audio file (WAV/FLAC/OGG, any rate, mono or stereo), read block by block (memory stays flat).

    Args:
        path: the file.
        realtime: play at the file's speed (``--wav``) or as fast as possible (``--wav --fast``).
        chunk_ms: chunk length.
        loop: start over at the end.
    """

    def __init__(self, path: str | Path, *, realtime: bool = True, chunk_ms: float = 20.0, loop: bool = False):
        import soundfile as sf

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: audio file not found (--wav expects a WAV/FLAC/OGG file)")
        try:
            info = sf.info(str(self.path))
        except Exception as e:
            raise ValueError(f"{self.path}: cannot read audio ({e}); expected a WAV/FLAC/OGG file") from e
        super().__init__(info.samplerate, info.channels, realtime, chunk_ms)
        self.loop, self.name = loop, self.path.name
        self.seconds = info.frames / info.samplerate if info.frames else math.nan

    def _blocks(self):
        import soundfile as sf

        while True:
            with sf.SoundFile(str(self.path)) as f:
                while True:
                    raw = f.read(self.block, dtype="float32", always_2d=True)
                    if not len(raw):
                        break
                    yield raw
            if not self.loop:
                return


# ---- network push -------------------------------------------------------------------------------------------------

class NetworkSource(AudioSource):
    """Audio pushed by a WebSocket client: binary PCM chunks in the format its ``start`` message declared.

    ``push()`` decodes and conditions synchronously (so a bad chunk is answered at once) and queues the result; the
    bounded queue is the backpressure: while the session has too much audio pending, ``push`` waits, and the
    connection stops reading from its socket.
    """

    def __init__(self, req: protocol.StartRequest, max_queue: int = 4):
        self.req = req
        self.name = "network"
        self.realtime = False  # a client may burst: pace it by its fastest subscriber instead of dropping frames
        self.conditioner = AudioConditioner(req.rate, req.channels)
        self._q: asyncio.Queue[AudioChunk | Control | None] = asyncio.Queue(maxsize=max_queue)
        self._ended = False

    def decode(self, data: bytes) -> np.ndarray:
        """Bytes -> model-rate float32 (raises ProtocolError for a malformed chunk)."""
        return self.conditioner.process(protocol.decode_pcm(data, self.req))

    async def push(self, data: bytes, arrival: float | None = None) -> None:
        pcm = self.decode(data)
        if len(pcm):
            await self._q.put(AudioChunk(pcm, time.monotonic() if arrival is None else arrival))

    async def control(self, op: str, value: Any = None) -> None:
        await self._q.put(Control(op, value))

    async def end(self) -> None:
        """End of stream: the resampler tail, then the sentinel (idempotent)."""
        if self._ended:
            return
        self._ended = True
        tail = self.conditioner.finish()
        if len(tail):
            await self._q.put(AudioChunk(tail, time.monotonic()))
        await self._q.put(None)

    def close(self) -> None:
        """Abort without flushing the resampler (e.g. on server shutdown)."""
        self._ended = True
        with contextlib.suppress(asyncio.QueueFull):
            self._q.put_nowait(None)

    async def chunks(self) -> AsyncIterator[AudioChunk | Control]:
        while True:
            item = await self._q.get()
            if item is None:
                return
            yield item


# ---- microphone ---------------------------------------------------------------------------------------------------

NO_DEVICE_HELP = (
    "Alternatives that need no microphone:\n"
    "  --demo           the built-in demo audio\n"
    "  --wav FILE       play an audio file in real time (add --fast for as fast as possible)\n"
    "  --push-only      serve only network clients that push audio over the WebSocket (see PROTOCOL.md)\n"
    "  --list-devices   show the audio devices PortAudio can see"
)


class NoInputDeviceError(RuntimeError):
    """No usable audio input device (the message names the alternatives)."""


def _import_sounddevice():
    try:
        import sounddevice as sd
    except OSError as e:  # the PortAudio library is missing
        raise NoInputDeviceError(f"PortAudio is not available ({e}); install it (Debian: apt install libportaudio2)."
                                 f"\n{NO_DEVICE_HELP}") from e
    except ImportError as e:
        raise NoInputDeviceError(f"the sounddevice package is not installed ({e}); pip install sounddevice."
                                 f"\n{NO_DEVICE_HELP}") from e
    return sd


def list_devices(sd: Any = None) -> str:
    """PortAudio's device list as text (raises NoInputDeviceError when PortAudio itself is unusable)."""
    sd = sd or _import_sounddevice()
    try:
        devices = sd.query_devices()
    except Exception as e:
        raise NoInputDeviceError(f"cannot query audio devices ({e}).\n{NO_DEVICE_HELP}") from e
    if not len(devices):
        return "(PortAudio sees no audio devices)"
    return str(devices).strip()


def find_input_device(device: int | str | None = None, sd: Any = None) -> dict:
    """The PortAudio info dict of the input device to use; NoInputDeviceError with a clear message otherwise."""
    sd = sd or _import_sounddevice()
    try:
        info = sd.query_devices(device, "input")
    except Exception as e:
        which = "the default input device" if device is None else f"input device {device!r}"
        raise NoInputDeviceError(f"no audio input: {which} is not available ({e}).\n{NO_DEVICE_HELP}") from e
    if not info or int(info.get("max_input_channels", 0)) < 1:
        raise NoInputDeviceError(f"no audio input: device {device!r} has no input channels.\n{NO_DEVICE_HELP}")
    return dict(info)


class MicSource(AudioSource):
    """Live microphone through PortAudio (sounddevice), device rate -> model rate.

    Audio arrives on PortAudio's thread and is handed to the event loop; if the consumer stalls for more than
    ``max_queue_s`` the oldest blocks are dropped and counted in ``overflows`` (a microphone cannot be paused).

    Args:
        device: PortAudio device index or name substring (None: the default input).
        rate: capture rate (None: the device's default rate).
        chunk_ms: PortAudio block length.
        sd: the sounddevice module (injectable for tests).
    """

    def __init__(self, device: int | str | None = None, rate: int | None = None, *, chunk_ms: float = 20.0,
                 max_queue_s: float = 5.0, sd: Any = None):
        self._sd = sd or _import_sounddevice()
        self.info = find_input_device(device, self._sd)
        self.device = device
        self.rate = int(rate or self.info.get("default_samplerate") or MODEL_SAMPLE_RATE)
        self.channels = 1
        self.block = max(1, int(round(self.rate * chunk_ms / 1000.0)))
        self.conditioner = AudioConditioner(self.rate, self.channels)
        self.name = f"mic:{self.info.get('name', device)}"
        self._max_blocks = max(2, int(max_queue_s * 1000.0 / chunk_ms))
        self._overflows = 0
        self.status_errors = 0  # PortAudio input overflow/underflow flags seen
        self._closed = False
        self._stream = None

    @property
    def overflows(self) -> int:
        return self._overflows

    def close(self) -> None:
        self._closed = True

    async def chunks(self) -> AsyncIterator[AudioChunk]:
        loop = asyncio.get_running_loop()
        q: asyncio.Queue[tuple[np.ndarray, float] | None] = asyncio.Queue()

        def put(item: tuple[np.ndarray, float]) -> None:  # on the loop
            if q.qsize() >= self._max_blocks:
                with contextlib.suppress(asyncio.QueueEmpty):
                    q.get_nowait()
                self._overflows += 1
            q.put_nowait(item)

        def callback(indata, frames, time_info, status) -> None:  # PortAudio's thread
            if status:
                self.status_errors += 1
            with contextlib.suppress(RuntimeError):  # loop closed during shutdown
                loop.call_soon_threadsafe(put, (np.array(indata, dtype=np.float32, copy=True), time.monotonic()))

        try:
            stream = self._sd.InputStream(device=self.device, channels=self.channels, samplerate=self.rate,
                                          blocksize=self.block, dtype="float32", callback=callback)
            stream.start()
        except Exception as e:
            raise NoInputDeviceError(f"cannot open the microphone ({e}).\n{NO_DEVICE_HELP}") from e
        self._stream = stream
        try:
            while not self._closed:
                try:
                    item = await asyncio.wait_for(q.get(), timeout=0.25)
                except TimeoutError:
                    if getattr(stream, "active", True):
                        continue
                    return  # the stream stopped on its own (device gone)
                raw, arrival = item
                pcm = self.conditioner.process(raw)
                if len(pcm):
                    yield AudioChunk(pcm, arrival)
        finally:
            with contextlib.suppress(Exception):
                stream.stop()
            with contextlib.suppress(Exception):
                stream.close()


# ---- demo --------------------------------------------------------------------------------------------------------

def synthetic_speech(seconds: float = 12.0, rate: int = MODEL_SAMPLE_RATE, seed: int = 0) -> np.ndarray:
    """Speech-like test audio (a voiced buzz with syllable-rate loudness and pauses), used when no demo clip exists."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    f0 = 120.0 + 25.0 * np.sin(2 * np.pi * 0.4 * t) + 10.0 * np.sin(2 * np.pi * 3.1 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 12))  # a sawtooth-ish glottal buzz
    syll = np.clip(np.sin(2 * np.pi * 4.0 * t + 2.0 * np.sin(2 * np.pi * 0.7 * t)), 0.0, None) ** 1.5
    phrase = (np.sin(2 * np.pi * t / 3.0) > -0.6).astype(np.float32)  # a pause every 3 s
    x = 0.25 * voiced * syll * phrase + 0.01 * rng.standard_normal(n) * phrase
    return (x / max(1e-6, float(np.abs(x).max())) * 0.6).astype(np.float32)


def default_demo_audio() -> tuple[np.ndarray, int]:
    """The built-in demo input: ``realtime.demo_audio.demo_audio()`` when the project has it, else synthetic."""
    try:
        from realtime.demo_audio import demo_audio
    except ImportError:
        return synthetic_speech(), MODEL_SAMPLE_RATE
    return np.asarray(demo_audio(), np.float32), MODEL_SAMPLE_RATE


DemoAudioFn = Callable[[], "np.ndarray | tuple[np.ndarray, int]"]
