"""A fake realtime driver with exactly the Driver/Session/Frame API of realtime/engine.py (docs/CONTRACTS.md).

Deterministic and cheap: frame k's params are a function of k, the RMS of frame k's audio and the speaker, so tests
can check contiguity, timing and content. Frames are released like the real engine: N at a time once the look-ahead
(L + R frames) of audio has arrived; ``flush`` releases the held-back frames and a zero-padded partial last frame.
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass

import numpy as np

from models import layout
from models.rates import FRAME_MS, SAMPLES_PER_FRAME, frame_time

_ids = itertools.count()


@dataclass
class Frame:
    index: int
    time: float
    params: np.ndarray  # (320,) float32


def fake_params(index: int, rms: float, speaker: int, constants: layout.SessionConstants) -> np.ndarray:
    """The fake driver's frame k: small smooth rotations (valid for FK), jaw from loudness, speaker in channel 0."""
    p = layout.constant_frame(constants)
    ph = 2 * np.pi * index / 30.0
    body = layout.BODY_VARYING_SLOTS[:20]
    p[body] = 0.1 * np.sin(ph + 0.3 * np.arange(20)).astype(np.float32)
    p[0] = 0.01 * speaker
    p[layout.JAW.start] = 0.4 * min(1.0, 5.0 * rms)
    p[layout.GLOBAL_ROT] = (0.05 * np.sin(ph), 0.1 * np.sin(0.5 * ph), 0.0)
    return p


class FakeSession:
    def __init__(self, driver: FakeDriver, speaker: int | None, constants: layout.SessionConstants | None):
        self.driver = driver
        self.id = f"fake-{next(_ids)}"
        self.constants = constants or layout.SessionConstants()
        self.set_speaker(speaker)
        self.reset()

    def reset(self) -> None:
        self._audio = np.zeros(0, np.float32)  # samples not yet consumed by an emitted frame
        self._next = 0  # next frame index to emit
        self._received = 0  # samples since reset
        self.flushed = False

    def set_speaker(self, speaker: int | None) -> None:
        """Like the engine: None or < 0 is the unknown speaker (id n_speakers); beyond it raises."""
        n = self.driver.n_speakers
        if speaker is not None and speaker > n:
            raise ValueError(f"speaker {speaker} out of range 0..{n - 1} ({n} = unknown)")
        self.speaker = n if speaker is None or speaker < 0 else int(speaker)

    def _emit(self, n: int) -> list[Frame]:
        out = []
        for _ in range(n):
            x = self._audio[:SAMPLES_PER_FRAME]
            if len(x) < SAMPLES_PER_FRAME:
                x = np.pad(x, (0, SAMPLES_PER_FRAME - len(x)))
            self._audio = self._audio[SAMPLES_PER_FRAME:]
            rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
            out.append(Frame(self._next, frame_time(self._next), fake_params(self._next, rms, self.speaker,
                                                                              self.constants)))
            self._next += 1
        return out

    def push(self, pcm: np.ndarray) -> list[Frame]:
        x = np.asarray(pcm, np.float32).reshape(-1)
        if not np.all(np.isfinite(x)):
            raise ValueError("fake driver got NaN/Inf audio: the server must sanitise first")
        if x.size and float(np.abs(x).max()) > 1.0:
            raise ValueError("fake driver got audio beyond [-1, 1]: the server must clip first")
        self._audio = np.concatenate([self._audio, x])
        self._received += len(x)
        d = self.driver
        ready = self._received // SAMPLES_PER_FRAME - d.lookahead - d.decoder_right  # frames whose future is in
        n = max(0, ready - self._next) // d.chunk_frames * d.chunk_frames
        return self._emit(n)

    def flush(self) -> list[Frame]:
        total = -(-self._received // SAMPLES_PER_FRAME)  # a partial last frame is padded
        self.flushed = True
        return self._emit(max(0, total - self._next))


class FakeDriver:
    """Driver API of realtime/engine.py. ``compute_ms`` emulates the model's cost per process() call and per frame.

    Args:
        chunk_frames: N new frames per emit.
        lookahead: L.
        decoder_right: R.
        face_mode: reported face mode.
        compute_ms: sleep per process() call (emulated batch overhead).
        compute_ms_per_frame: extra sleep per emitted frame.
    """

    def __init__(self, chunk_frames: int = 2, lookahead: int = 2, decoder_right: int = 1, face_mode: str = "envelope",
                 compute_ms: float = 0.0, compute_ms_per_frame: float = 0.0):
        self.chunk_frames, self.lookahead, self.decoder_right = chunk_frames, lookahead, decoder_right
        self.face_mode = face_mode
        self.n_speakers = 16
        self.compute_ms, self.compute_ms_per_frame = compute_ms, compute_ms_per_frame
        self.calls = 0
        self.batch_sizes: list[int] = []
        self.frames_per_item: list[int] = []  # frames released by each (session, audio) item of every call

    def budget(self) -> dict:
        frames = self.chunk_frames + self.lookahead + self.decoder_right
        return {"frames": frames, "ms": frames * FRAME_MS, "feature_future_ms": 0.0,
                "chunk_frames": self.chunk_frames, "lookahead": self.lookahead, "decoder_right": self.decoder_right}

    def new_session(self, speaker: int | None = None,
                    constants: layout.SessionConstants | None = None) -> FakeSession:
        return FakeSession(self, speaker, constants)

    def process(self, items: list[tuple[FakeSession, np.ndarray]]) -> list[list[Frame]]:
        self.calls += 1
        self.batch_sizes.append(len(items))
        out = [s.push(pcm) for s, pcm in items]
        self.frames_per_item += [len(f) for f in out]
        cost = self.compute_ms + self.compute_ms_per_frame * sum(len(f) for f in out)
        if cost > 0:
            time.sleep(cost / 1000.0)
        return out


def load_driver(checkpoint: str | None = None, *, chunk_frames: int = 2, face_mode: str = "auto",
                backend: str = "auto") -> FakeDriver:
    """Same signature as realtime.engine.load_driver."""
    return FakeDriver(chunk_frames=chunk_frames, face_mode="envelope" if face_mode == "auto" else face_mode)
