"""Playing the stream's audio by its time code, and using it as the media clock the poses follow.

:class:`AudioTimeline` stores time-coded PCM (sample indices from the session start) and hands it out from a play
cursor; gaps play as silence, an empty future stalls the cursor (the clock holds, like the pose buffer). An
:class:`AudioPlayer` drives it from a sounddevice output callback; with no output device it reports why and the
viewer keeps the wall clock instead.
"""
from __future__ import annotations

import sys
import threading
import time

import numpy as np


class AudioTimeline:
    """Thread-safe time-coded mono PCM with a play cursor.

    Args:
        rate: sample rate of the stream.
        prime_s: audio to buffer before the cursor starts moving (and after a stall).
        max_ahead_s: most audio kept ahead of the cursor before it skips forward (bounded latency).
    """

    def __init__(self, rate: int = 24_000, prime_s: float = 0.1, max_ahead_s: float = 0.6) -> None:
        self.rate = int(rate)
        self.prime = int(prime_s * rate)
        self.max_ahead = int(max_ahead_s * rate)
        self._lock = threading.Lock()
        self._buf = np.zeros(0, np.float32)
        self._base = 0  # sample index of _buf[0]
        self.cursor: int | None = None  # next sample to play; None until primed
        self._stalled = True
        self.stalls = 0
        self.skips = 0
        self.last_block = (0, 0)  # (first sample, count) of the real samples handed out by the last read

    @property
    def end(self) -> int:
        return self._base + len(self._buf)

    def reset(self) -> None:
        with self._lock:
            self._buf = np.zeros(0, np.float32)
            self._base, self.cursor, self._stalled = 0, None, True

    def push(self, start_sample: int, pcm: np.ndarray) -> None:
        """Add samples starting at ``start_sample`` (gaps become silence, overlaps overwrite)."""
        x = np.asarray(pcm, np.float32).reshape(-1)
        with self._lock:
            if len(self._buf) == 0 and self.cursor is None:
                self._base = start_sample
            if start_sample < self._base:  # older than what we keep
                x = x[self._base - start_sample:]
                start_sample = self._base
                if len(x) == 0:
                    return
            off = start_sample - self._base
            need = off + len(x)
            if need > len(self._buf):
                self._buf = np.concatenate([self._buf, np.zeros(need - len(self._buf), np.float32)])
            self._buf[off:off + len(x)] = x

    def read(self, n: int) -> np.ndarray:
        """Next ``n`` samples to play (zeros while priming or stalled, without moving the cursor)."""
        out = np.zeros(n, np.float32)
        with self._lock:
            if self.cursor is None:
                if len(self._buf) < self.prime:
                    return out
                self.cursor = self._base
            ahead = self.end - self.cursor
            if self._stalled:
                if ahead < self.prime:
                    return out
                self._stalled = False
            if ahead > self.max_ahead:  # the sender is far ahead: skip to keep latency bounded
                self.cursor = self.end - self.prime
                self.skips += 1
                ahead = self.end - self.cursor
            if ahead <= 0:
                self._stalled = True
                self.stalls += 1
                return out
            k = min(n, ahead)
            off = self.cursor - self._base
            out[:k] = self._buf[off:off + k]
            self.last_block = (self.cursor, k)
            self.cursor += k
            if k < n:  # ran dry mid-block
                self._stalled = True
                self.stalls += 1
            keep_from = self.cursor - self.rate  # keep one second of history
            if keep_from - self._base > self.rate:
                cut = keep_from - self._base
                self._buf = self._buf[cut:]
                self._base += cut
        return out

    def time(self) -> float | None:
        """Media time (s) of the next sample to play; None before priming."""
        with self._lock:
            return None if self.cursor is None else self.cursor / self.rate


class AudioPlayer:
    """Plays an :class:`AudioTimeline` on the default output device and exposes the heard media time.

    Args:
        timeline: where the audio comes from.
        blocksize: samples per callback.
    """

    def __init__(self, timeline: AudioTimeline, blocksize: int = 480) -> None:
        self.timeline = timeline
        self.blocksize = blocksize
        self.stream = None
        self.error: str | None = None
        self._cb_wall = 0.0
        self._cb_time: float | None = None
        self._cb_span = 0.0
        self._latency = 0.0
        self._lock = threading.Lock()

    def start(self) -> bool:
        """Open the output; False (with ``error`` set and a message printed) when there is no usable device."""
        try:
            import sounddevice as sd

            if not any(d.get("max_output_channels", 0) > 0 for d in sd.query_devices()):
                raise RuntimeError("no output device found")
            self.stream = sd.OutputStream(samplerate=self.timeline.rate, channels=1, dtype="float32",
                                          blocksize=self.blocksize, callback=self._callback, latency="low")
            self.stream.start()
            self._latency = float(self.stream.latency or 0.0)
            return True
        except Exception as e:  # noqa: BLE001 - PortAudioError, OSError (no libportaudio), RuntimeError
            self.error = f"{type(e).__name__}: {e}"
            print(f"viewer: no audio output ({self.error}); continuing without sound, poses on the wall clock",
                  file=sys.stderr)
            self.stream = None
            return False

    def _callback(self, outdata, frames, time_info, status) -> None:  # noqa: ANN001 - sounddevice signature
        tl = self.timeline
        before = tl.last_block
        outdata[:, 0] = tl.read(frames)
        start, n = tl.last_block
        if tl.cursor is None:
            return
        if (start, n) == before:  # nothing played (stalled): the clock holds at the cursor
            start, n = tl.cursor, 0
        with self._lock:
            self._cb_wall, self._cb_time, self._cb_span = time.monotonic(), start / tl.rate, n / tl.rate

    def media_time(self, now: float | None = None) -> float | None:
        """Media time of the sample being heard now (output latency included); None before playback starts."""
        now = time.monotonic() if now is None else now
        with self._lock:
            if self._cb_time is None:
                return None
            t = self._cb_time + min(max(now - self._cb_wall, 0.0), self._cb_span)
        return t - self._latency

    def stop(self) -> None:
        if self.stream is not None:
            try:
                self.stream.stop()
                self.stream.close()
            finally:
                self.stream = None
