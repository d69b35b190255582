"""The one module that owns rates and audio<->motion framing.

Motion runs at 30 fps. The model's audio rate is 24 kHz so that one motion frame is exactly 800 samples: frame k
covers samples [k*800, (k+1)*800) of the model-rate stream, forever, with integer arithmetic (no drift after hours).
Any input rate is resampled to MODEL_SAMPLE_RATE with soxr (see ``models.audio``).

Features: 4 sub-frames per motion frame (hop 200 samples = 8.33 ms), each a log-mel of a *causal* window that ends
at the sub-frame's end (window 400 samples). So frame k's features need audio up to the end of frame k and nothing
after it: no hidden look-ahead. Look-ahead, where a model wants it, is an explicit number of frames (see
``GeneratorConfig.lookahead``), counted in the latency budget.
"""
from __future__ import annotations


def exact_div(a: int, b: int) -> int:
    """a // b, raising if b does not divide a (rates must fit exactly)."""
    if a % b:
        raise ValueError(f"{a} is not divisible by {b}")
    return a // b


MOTION_FPS = 30
MODEL_SAMPLE_RATE = 24_000
SAMPLES_PER_FRAME = exact_div(MODEL_SAMPLE_RATE, MOTION_FPS)  # 800
SUBFRAMES_PER_FRAME = 4
HOP_LENGTH = exact_div(SAMPLES_PER_FRAME, SUBFRAMES_PER_FRAME)  # 200 samples, 8.33 ms
WIN_LENGTH = 2 * HOP_LENGTH  # 400 samples, causal window ending at each sub-frame's end
N_FFT = 512  # each 400-sample causal window is zero-padded to 512 for the FFT
N_MELS = 40
MEL_FMIN = 50.0
MEL_FMAX = 8_000.0
FEATURE_DIM = SUBFRAMES_PER_FRAME * N_MELS  # 160 per motion frame
FRAME_MS = 1000.0 / MOTION_FPS


def frame_to_sample(k: int) -> int:
    """First model-rate sample of motion frame k."""
    return k * SAMPLES_PER_FRAME


def frame_span(k: int) -> tuple[int, int]:
    """[start, end) model-rate samples of motion frame k."""
    return k * SAMPLES_PER_FRAME, (k + 1) * SAMPLES_PER_FRAME


def frame_time(k: int) -> float:
    """Audio time (s) of the END of frame k's span: the instant its features are complete."""
    return (k + 1) * SAMPLES_PER_FRAME / MODEL_SAMPLE_RATE


def n_frames(n_samples: int) -> int:
    """Whole motion frames covered by n model-rate samples."""
    return n_samples // SAMPLES_PER_FRAME


def samples_at(rate: int, n_frames_: int) -> int:
    """Number of samples at ``rate`` covering n motion frames (rounded down, exact integer arithmetic)."""
    return n_frames_ * rate // MOTION_FPS
