"""A thread-safe jitter buffer for the live pose stream, played by media (audio) time.

The network thread ``push``es frames as they arrive (bursty, possibly late or duplicated); the render thread asks
for the pose at a media time (``sample``), interpolated between the two frames around it. A :class:`PlayoutClock`
turns wall-clock time into media time: it starts once ``depth`` frames are buffered, holds (re-buffers) when playback
runs out of frames, and skips ahead when the buffer holds far more than it should (sender faster than real time).
When the stream's audio is played, the audio player's clock replaces the wall clock (see viewer.audio_out).
"""
from __future__ import annotations

import bisect
import threading
import time
from dataclasses import dataclass, field

import numpy as np


@dataclass
class JitterStats:
    """Counters for the overlay and tests."""

    received: int = 0
    duplicates: int = 0
    late: int = 0  # arrived after playback had passed their time
    resets: int = 0
    underruns: int = 0
    skips: int = 0
    arrival_times: list[float] = field(default_factory=list)  # wall time of the last arrivals (fps estimate)

    def stream_fps(self, now: float | None = None, window: float = 2.0) -> float:
        now = time.monotonic() if now is None else now
        recent = [t for t in self.arrival_times if now - t <= window]
        return len(recent) / window if recent else 0.0


class JitterBuffer:
    """Frames ordered by time; safe to push from one thread while another samples.

    Args:
        fps: the stream's frame rate.
        depth: frames to buffer before playback starts (and after an underrun).
        capacity: most frames kept (older ones are pruned).
    """

    def __init__(self, fps: float = 30.0, depth: int = 3, capacity: int = 900) -> None:
        self.fps = float(fps)
        self.depth = int(depth)
        self.capacity = int(capacity)
        self._lock = threading.Lock()
        self._times: list[float] = []
        self._indices: list[int] = []
        self._params: list[np.ndarray] = []
        self._played_until = -np.inf
        self.generation = 0  # bumped by reset(): clocks restart
        self.stats = JitterStats()

    # ---- producer side --------------------------------------------------------------------------------------------

    def push(self, index: int, t: float, params: np.ndarray, arrival: float | None = None) -> bool:
        """Insert a frame; returns False for a duplicate index or a frame whose time playback already passed."""
        p = np.asarray(params, np.float32)
        with self._lock:
            self.stats.received += 1
            arr = self.stats.arrival_times
            arr.append(time.monotonic() if arrival is None else arrival)
            if len(arr) > 256:
                del arr[:128]
            k = bisect.bisect_left(self._times, t)
            if k < len(self._times) and self._indices[k] == index:
                self.stats.duplicates += 1
                return False
            if t < self._played_until - 1.0 / self.fps:
                self.stats.late += 1
                return False
            self._times.insert(k, t)
            self._indices.insert(k, index)
            self._params.insert(k, p)
            if len(self._times) > self.capacity:
                n = len(self._times) - self.capacity
                del self._times[:n], self._indices[:n], self._params[:n]
            return True

    def reset(self) -> None:
        """Forget everything (new session / reconnect)."""
        with self._lock:
            self._reset_locked()

    def _reset_locked(self) -> None:
        self._times.clear()
        self._indices.clear()
        self._params.clear()
        self._played_until = -np.inf
        self.generation += 1
        self.stats.resets += 1

    # ---- consumer side --------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        with self._lock:
            return len(self._times)

    def span(self) -> tuple[float, float] | None:
        """(earliest, latest) buffered frame time, or None when empty."""
        with self._lock:
            return (self._times[0], self._times[-1]) if self._times else None

    def frames_after(self, t: float) -> int:
        with self._lock:
            return len(self._times) - bisect.bisect_right(self._times, t)

    def sample(self, media_time: float) -> tuple[np.ndarray, int] | None:
        """The pose at ``media_time`` (linear between neighbours, nearest across angle wraps) and the index of the
        frame at or before it; None when empty. Frames older than one second before it are pruned."""
        with self._lock:
            if not self._times:
                return None
            self._played_until = max(self._played_until, media_time)
            k = bisect.bisect_right(self._times, media_time)  # frames [0, k) are at or before media_time
            if k == 0:
                return self._params[0].copy(), self._indices[0]
            if k == len(self._times):
                out = self._params[-1].copy(), self._indices[-1]
            else:
                t0, t1 = self._times[k - 1], self._times[k]
                a = (media_time - t0) / max(t1 - t0, 1e-9)
                out = interpolate(self._params[k - 1], self._params[k], a), self._indices[k - 1]
            drop = bisect.bisect_left(self._times, media_time - 1.0) - 1
            if drop > 0:
                del self._times[:drop], self._indices[:drop], self._params[:drop]
            return out


#: channels that are angles in radians: interpolate only across small steps (Euler wraps at +-pi)
_ANGLE_JUMP = 1.0


def interpolate(p0: np.ndarray, p1: np.ndarray, a: float) -> np.ndarray:
    """Blend two 320-frames; channels that jump by more than 1 rad (Euler wrap) take the nearer frame."""
    a = float(np.clip(a, 0.0, 1.0))
    out = (1.0 - a) * p0 + a * p1
    jump = np.abs(p1 - p0) > _ANGLE_JUMP
    if np.any(jump):
        out[jump] = (p0 if a < 0.5 else p1)[jump]
    return out.astype(np.float32)


class PlayoutClock:
    """Wall clock -> media time for a :class:`JitterBuffer`.

    Starts when ``depth`` frames are buffered (media time = the first frame's time), holds when it runs past the
    newest frame (an underrun: re-buffers ``depth`` frames), and jumps forward when more than ``max_latency_s`` is
    buffered ahead of it.

    Args:
        buffer: the jitter buffer it plays.
        max_latency_s: most media time buffered ahead of the playhead before skipping.
    """

    def __init__(self, buffer: JitterBuffer, max_latency_s: float = 0.5) -> None:
        self.buffer = buffer
        self.max_latency_s = float(max_latency_s)
        self._origin: tuple[float, float] | None = None  # (wall, media) at (re)start
        self._held: float | None = None  # media time frozen at during an underrun
        self._generation = buffer.generation
        self.last: float | None = None  # the last media time returned

    @property
    def running(self) -> bool:
        return self._origin is not None

    def media_time(self, now: float | None = None) -> float | None:
        """Media time to display at wall time ``now``; None before the first start."""
        self.last = self._media_time(now)
        return self.last

    def _media_time(self, now: float | None) -> float | None:
        now = time.monotonic() if now is None else now
        b = self.buffer
        if b.generation != self._generation:
            self._generation, self._origin, self._held = b.generation, None, None
        span = b.span()
        if span is None:
            return self._held
        if self._origin is None:
            start = span[0] if self._held is None else self._held
            ahead = b.frames_after(start - 1e-9) if self._held is None else b.frames_after(start)
            if ahead < b.depth:
                return self._held if self._held is not None else None
            self._origin, self._held = (now, start), None
        m = self._origin[1] + (now - self._origin[0])
        if m > span[1] + 0.5 / b.fps:  # ran out of frames: hold the last one and re-buffer
            b.stats.underruns += 1
            self._origin, self._held = None, span[1]
            return span[1]
        if span[1] - m > self.max_latency_s:  # too far behind the sender: catch up
            b.stats.skips += 1
            target = span[1] - b.depth / b.fps
            self._origin = (now, target)
            m = target
        return m

    def latency_s(self) -> float:
        """Media time buffered ahead of the last playhead position (the jitter buffer's added delay)."""
        span = self.buffer.span()
        return 0.0 if span is None or self.last is None else max(0.0, span[1] - self.last)
