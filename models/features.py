"""Causal log-mel audio features at 30 fps: 160 values per motion frame (4 sub-frames x 40 mel bands).

Sub-frame j of frame k is the log-mel of the 400-sample Hann window that ENDS at sample k*800 + (j+1)*200 of the
model-rate stream (see ``models.rates``). The first windows see zeros before the stream start (an explicit, counted
left pad; nothing peeks at the future). Because of this, feeding a stream in chunks of any size, carrying the
``FeatureState``, gives exactly the features of the whole file.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from models import rates

_TAIL = rates.WIN_LENGTH - rates.HOP_LENGTH  # samples of history each new sub-frame needs (200)


def mel_filterbank(sr: int = rates.MODEL_SAMPLE_RATE, n_fft: int = rates.N_FFT, n_mels: int = rates.N_MELS,
                   fmin: float = rates.MEL_FMIN, fmax: float = rates.MEL_FMAX) -> np.ndarray:
    """HTK-style triangular mel filters, (n_mels, n_fft // 2 + 1), each normalised to unit area (Slaney)."""
    def hz_to_mel(f):
        return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)

    def mel_to_hz(m):
        return 700.0 * (10 ** (np.asarray(m) / 2595.0) - 1.0)

    freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    fb = np.zeros((n_mels, len(freqs)))
    for i in range(n_mels):
        lo, c, hi = edges[i], edges[i + 1], edges[i + 2]
        up = (freqs - lo) / (c - lo)
        down = (hi - freqs) / (hi - c)
        fb[i] = np.maximum(0.0, np.minimum(up, down)) * (2.0 / (hi - lo))
    return fb.astype(np.float32)


@dataclass
class FeatureState:
    """Streaming state: the last 200 samples before the pending ones, and samples not yet making a whole frame."""

    tail: torch.Tensor  # (B, 200)
    pending: torch.Tensor  # (B, P) with P < 800

    @property
    def frames_pending_samples(self) -> int:
        return int(self.pending.shape[-1])


class LogMelFeatures(nn.Module):
    """Waveform at the model rate -> (B, F, 160) causal log-mel features, one row per motion frame."""

    def __init__(self):
        super().__init__()
        self.register_buffer("window", torch.hann_window(rates.WIN_LENGTH, periodic=True), persistent=False)
        self.register_buffer("mel", torch.from_numpy(mel_filterbank()), persistent=False)

    @property
    def dim(self) -> int:
        return rates.FEATURE_DIM

    def init_state(self, batch_size: int = 1, device: torch.device | None = None) -> FeatureState:
        return FeatureState(tail=torch.zeros(batch_size, _TAIL, device=device),
                            pending=torch.zeros(batch_size, 0, device=device))

    def forward(self, wave: torch.Tensor, state: FeatureState | None = None) -> tuple[torch.Tensor, FeatureState]:
        """Args: wave (B, N) float32 at 24 kHz (any N >= 0). Returns (features (B, F, 160), new state)."""
        if wave.dim() == 1:
            wave = wave[None]
        B = wave.shape[0]
        if state is None:
            state = self.init_state(B, wave.device)
        x = torch.cat([state.pending, wave.to(state.pending.dtype)], dim=-1)  # (B, P+N)
        n_frames = x.shape[-1] // rates.SAMPLES_PER_FRAME
        used = n_frames * rates.SAMPLES_PER_FRAME
        new_pending = x[:, used:]
        if n_frames == 0:
            return x.new_zeros(B, 0, rates.FEATURE_DIM), FeatureState(state.tail, new_pending)
        buf = torch.cat([state.tail, x[:, :used]], dim=-1)  # (B, 200 + used)
        win = buf.unfold(-1, rates.WIN_LENGTH, rates.HOP_LENGTH) * self.window  # (B, 4F, 400)
        spec = torch.fft.rfft(win, n=rates.N_FFT)  # (B, 4F, 257)
        power = spec.real ** 2 + spec.imag ** 2
        mel = power @ self.mel.T  # (B, 4F, 40)
        logmel = (torch.log10(mel + 1e-8) + 4.0) / 4.0  # fixed affine: ~[-1, 1.5] for speech at normal levels
        feats = logmel.reshape(B, n_frames, rates.FEATURE_DIM)
        return feats, FeatureState(tail=buf[:, -_TAIL:], pending=new_pending)


def features_of(wave: np.ndarray) -> np.ndarray:
    """Whole-file convenience: (N,) model-rate samples -> (N // 800, 160) float32 features."""
    with torch.no_grad():
        f, _ = LogMelFeatures()(torch.as_tensor(np.asarray(wave, np.float32))[None])
    return f[0].numpy()
