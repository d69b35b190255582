"""Latency, real-time factor and drop counters of the streaming runtime.

Definitions (printed by ``--stats`` and the benchmark):
- latency of frame k = the moment the frame leaves the server (handed to the subscribers' send queues) minus the
  arrival time of the last audio sample of frame k's span (the chunk that completed it, after resampling). For the
  frames emitted by an end-of-stream flush whose span ends after the audio, the end message's arrival time is used.
- real-time factor (RTF) = model compute time / audio time processed (< 1: faster than real time).
- CPU = process CPU time / wall time (100 % = one core busy).
"""
from __future__ import annotations

import math
import os
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np


class LatencyStats:
    """All-time latency histogram (1 ms bins, memory flat forever) plus a window of the most recent values."""

    BIN_S = 0.001
    MAX_S = 60.0

    def __init__(self, window: int = 900):
        self.hist = np.zeros(int(self.MAX_S / self.BIN_S) + 1, np.int64)
        self.recent: deque[float] = deque(maxlen=window)
        self.count = 0
        self.max = 0.0
        self.total = 0.0

    def add(self, seconds: float) -> None:
        s = max(0.0, float(seconds))
        self.hist[min(int(s / self.BIN_S), len(self.hist) - 1)] += 1
        self.recent.append(s)
        self.count += 1
        self.total += s
        self.max = max(self.max, s)

    def percentile(self, p: float) -> float:
        """All-time p-th percentile (seconds, upper edge of its 1 ms bin); NaN when empty."""
        if not self.count:
            return math.nan
        k = int(np.searchsorted(np.cumsum(self.hist), math.ceil(p / 100.0 * self.count)))
        return (k + 1) * self.BIN_S

    def recent_percentile(self, p: float) -> float:
        return float(np.percentile(np.fromiter(self.recent, float), p)) if self.recent else math.nan

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else math.nan


@dataclass
class SessionStats:
    """Counters of one live session (updated on the event loop)."""

    frames: int = 0
    audio_samples: int = 0  # model-rate samples processed
    dropped: int = 0  # messages dropped from slow subscribers' queues
    nonfinite: int = 0  # NaN/Inf input samples replaced by 0
    clipped: int = 0  # input samples beyond [-1, 1]
    overflows: int = 0  # input chunks lost before the session (a stalled microphone queue)
    latency: LatencyStats = field(default_factory=LatencyStats)

    def to_dict(self) -> dict:
        return {
            "frames": self.frames, "audio_s": round(self.audio_samples / 24_000, 3), "dropped": self.dropped,
            "nonfinite": self.nonfinite, "clipped": self.clipped, "overflows": self.overflows,
            "latency_ms": {"p50": _ms(self.latency.percentile(50)), "p95": _ms(self.latency.percentile(95)),
                           "max": _ms(self.latency.max if self.latency.count else math.nan),
                           "mean": _ms(self.latency.mean)},
        }


class ComputeStats:
    """Model compute time vs audio time (RTF) and process CPU use since construction."""

    def __init__(self) -> None:
        self.compute_s = 0.0
        self.audio_s = 0.0
        self.calls = 0
        self.items = 0  # (session, audio) items over all calls: items / calls = mean batch
        self.wall0 = time.monotonic()
        self.cpu0 = time.process_time()

    def add(self, seconds: float, audio_seconds: float, n_items: int) -> None:
        self.compute_s += seconds
        self.audio_s += audio_seconds
        self.calls += 1
        self.items += n_items

    @property
    def rtf(self) -> float:
        return self.compute_s / self.audio_s if self.audio_s > 0 else math.nan

    def cpu_percent(self) -> float:
        wall = time.monotonic() - self.wall0
        return 100.0 * (time.process_time() - self.cpu0) / wall if wall > 0 else math.nan

    def to_dict(self) -> dict:
        return {"rtf": _r(self.rtf, 4), "compute_s": round(self.compute_s, 3), "audio_s": round(self.audio_s, 3),
                "calls": self.calls, "mean_batch": _r(self.items / self.calls if self.calls else math.nan, 2),
                "cpu_percent": _r(self.cpu_percent(), 1), "cores": os.cpu_count()}


def format_line(name: str, s: SessionStats, c: ComputeStats | None = None) -> str:
    """One human-readable stats line."""
    lat = s.latency
    line = (f"[{name}] frames {s.frames} | latency p50 {_fmt(lat.percentile(50))} p95 {_fmt(lat.percentile(95))} "
            f"(recent p95 {_fmt(lat.recent_percentile(95))}) | dropped {s.dropped}")
    if c is not None:
        line += f" | RTF {c.rtf:.3f} | CPU {c.cpu_percent():.0f}%"
    if s.nonfinite or s.clipped:
        line += f" | sanitised NaN/Inf {s.nonfinite} clipped {s.clipped}"
    if s.overflows:
        line += f" | input overflows {s.overflows}"
    return line


def format_budget(budget: dict) -> str:
    """The latency budget line printed at start: (N + L + R) x 33.3 ms + feature future part + compute."""
    n, la, r = budget.get("chunk_frames"), budget.get("lookahead"), budget.get("decoder_right")
    frames = budget.get("frames", (n or 0) + (la or 0) + (r or 0))
    ms = budget.get("ms", frames * 1000.0 / 30)
    parts = f"(N {n} + L {la} + R {r})" if None not in (n, la, r) else f"{frames} frames"
    ff = float(budget.get("feature_future_ms", 0.0))
    return (f"latency budget: {parts} x 33.3 ms = {ms:.1f} ms + feature future {ff:.1f} ms + compute "
            f"(measured: see --stats)")


def _ms(s: float) -> float | None:
    return None if math.isnan(s) else round(1000.0 * s, 2)


def _r(x: float, n: int) -> float | None:
    return None if math.isnan(x) else round(x, n)


def _fmt(s: float) -> str:
    return "-" if math.isnan(s) else f"{1000.0 * s:.1f} ms"
