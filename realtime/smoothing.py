"""Optional causal output smoothing: a per-channel One-Euro filter (Casiez et al., CHI 2012).

Off by default. A first-order low-pass whose cutoff rises with the channel's speed: slow motion (where per-frame
model noise is most visible) is smoothed hard, fast gestures keep their timing. It adds no frames of latency (each
frame is filtered as it is emitted), but slow motion lags by about 1 / (2 pi min_cutoff) seconds. Foot-contact
channels are left binary. State is an explicit object, reset with the session.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models import layout


@dataclass
class OneEuroState:
    x: np.ndarray | None = None  # last filtered value (C,)
    dx: np.ndarray | None = None  # last filtered derivative (C,)


def _alpha(cutoff: np.ndarray | float, fps: float) -> np.ndarray:
    tau = 1.0 / (2 * np.pi * np.asarray(cutoff, np.float64))
    return 1.0 / (1.0 + tau * fps)


def cutoffs(spec: float | dict) -> np.ndarray:
    """(320,) per-channel min cutoff (Hz; 0 = not filtered) from one number or {part: Hz} (body/hand/face/global)."""
    c = np.zeros(layout.DIM)
    parts = spec if isinstance(spec, dict) else {p: spec for p in ("body", "hand", "face", "global")}
    for part, hz in parts.items():
        if part not in layout.PART_SLICES:
            raise ValueError(f"smoothing: unknown part {part!r}; use body, hand, face, global")
        c[layout.PART_SLICES[part]] = float(hz)
    c[layout.CONTACT] = 0.0  # contact stays binary
    if (c < 0).any():
        raise ValueError(f"smoothing cutoffs must be >= 0 Hz, got {spec}")
    return c


class OneEuro:
    """Filter (T, 320) frames in order; ``min_cutoff`` Hz at rest (one value or per part), ``beta`` s/unit: the
    speed-adaptive increase of the cutoff."""

    def __init__(self, min_cutoff: float | dict = 3.0, beta: float = 0.5, d_cutoff: float = 1.0,
                 fps: float = float(layout.FPS)):
        self.spec = min_cutoff
        c = cutoffs(min_cutoff)
        self.mask = c > 0
        self.min_cutoff = c[self.mask]
        self.beta, self.d_cutoff, self.fps = float(beta), float(d_cutoff), fps

    def __call__(self, frames: np.ndarray, state: OneEuroState) -> tuple[np.ndarray, OneEuroState]:
        out = np.array(frames, np.float64, copy=True)
        x_prev, dx_prev = state.x, state.dx
        m = self.mask
        for t in range(len(out)):
            x = out[t, m]
            if x_prev is None:
                x_prev, dx_prev = x.copy(), np.zeros_like(x)
                continue
            dx = (x - x_prev) * self.fps
            dx_hat = dx_prev + _alpha(self.d_cutoff, self.fps) * (dx - dx_prev)
            a = _alpha(self.min_cutoff + self.beta * np.abs(dx_hat), self.fps)
            x_hat = x_prev + a * (x - x_prev)
            out[t, m] = x_hat
            x_prev, dx_prev = x_hat, dx_hat
        return out.astype(np.float32), OneEuroState(x_prev, dx_prev)
