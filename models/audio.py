"""Audio in: read any WAV/FLAC (any rate, mono/stereo, int/float), resample to the model rate, sanitise.

Bad samples are never silently lost: NaN/Inf are replaced by 0 and counted, values beyond [-1, 1] are clipped and
counted, and the counts come back in ``AudioReport`` so callers can log or reject.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.rates import MODEL_SAMPLE_RATE


@dataclass
class AudioReport:
    source_rate: int
    channels: int
    n_samples: int  # at the model rate
    nonfinite: int = 0  # NaN/Inf samples replaced by 0
    clipped: int = 0  # samples beyond [-1, 1] clipped

    @property
    def seconds(self) -> float:
        return self.n_samples / MODEL_SAMPLE_RATE


def to_mono_float(x: np.ndarray) -> np.ndarray:
    """(N,) or (N, C) int/float -> (N,) float32 in [-1, 1] scale (ints are scaled by their full range)."""
    a = np.asarray(x)
    if np.issubdtype(a.dtype, np.integer):
        a = a.astype(np.float32) / float(np.iinfo(a.dtype).max + 1)
    a = a.astype(np.float32, copy=False)
    if a.ndim == 2:
        a = a.mean(axis=1)
    elif a.ndim != 1:
        raise ValueError(f"audio must be (N,) or (N, channels), got shape {a.shape}")
    return a


def sanitize(x: np.ndarray) -> tuple[np.ndarray, int, int]:
    """Replace NaN/Inf by 0 and clip to [-1, 1]; returns (clean copy, n_nonfinite, n_clipped)."""
    a = np.array(x, dtype=np.float32, copy=True)
    bad = ~np.isfinite(a)
    n_bad = int(bad.sum())
    if n_bad:
        a[bad] = 0.0
    over = np.abs(a) > 1.0
    n_clip = int(over.sum())
    if n_clip:
        np.clip(a, -1.0, 1.0, out=a)
    return a, n_bad, n_clip


def resample(x: np.ndarray, rate: int, target: int = MODEL_SAMPLE_RATE) -> np.ndarray:
    """One-shot resampling with soxr (HQ). Equal to ``StreamResampler`` fed the same samples in chunks."""
    if rate == target:
        return np.asarray(x, np.float32)
    import soxr

    return soxr.resample(np.asarray(x, np.float32), rate, target, quality="HQ").astype(np.float32)


class StreamResampler:
    """Chunked resampling to the model rate (soxr's streaming resampler; chunked output == one-shot output)."""

    def __init__(self, rate: int, target: int = MODEL_SAMPLE_RATE):
        self.rate, self.target = int(rate), int(target)
        if self.rate <= 0:
            raise ValueError(f"sample rate must be positive, got {rate}")
        self._rs = None
        if self.rate != self.target:
            import soxr

            self._rs = soxr.ResampleStream(self.rate, self.target, 1, dtype="float32", quality="HQ")

    def process(self, x: np.ndarray, last: bool = False) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self._rs is None:
            return x
        return self._rs.resample_chunk(x, last=last)


def load_audio(path: str | Path, target: int = MODEL_SAMPLE_RATE) -> tuple[np.ndarray, AudioReport]:
    """Read an audio file -> (mono float32 at ``target`` Hz, report). Raises with the file name on failure."""
    import soundfile as sf

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: audio file not found")
    try:
        data, rate = sf.read(str(p), dtype="float32", always_2d=True)
    except Exception as e:  # libsndfile errors are terse: name the file and what we accept
        raise ValueError(f"{p}: cannot read audio ({e}); expected WAV/FLAC/OGG, any rate, mono/stereo") from e
    channels = data.shape[1]
    mono, n_bad, n_clip = sanitize(to_mono_float(data))
    out = resample(mono, rate, target)
    return out, AudioReport(source_rate=int(rate), channels=channels, n_samples=len(out), nonfinite=n_bad,
                            clipped=n_clip)


def save_wav(path: str | Path, x: np.ndarray, rate: int = MODEL_SAMPLE_RATE) -> None:
    import soundfile as sf

    sf.write(str(path), np.asarray(x, np.float32), rate, subtype="PCM_16")
