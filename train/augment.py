"""Waveform augmentation for generator training, so real microphones work: gain, noise, reverb, band-limiting.

All operations act on a batch of model-rate waveforms (B, N) with a ``torch.Generator`` for reproducibility and
never modify their input.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from models.rates import MODEL_SAMPLE_RATE


@dataclass
class AugmentConfig:
    p: float = 0.8  # probability that an item is augmented at all
    gain_db: float = 12.0  # uniform in [-gain_db, +gain_db]
    noise_snr_db: tuple[float, float] = (10.0, 40.0)
    p_noise: float = 0.5
    p_reverb: float = 0.3
    rt60: tuple[float, float] = (0.1, 0.6)  # seconds
    p_band: float = 0.3
    lowpass_hz: tuple[float, float] = (3000.0, 8000.0)
    highpass_hz: tuple[float, float] = (60.0, 300.0)


def _u(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g))


def augment_batch(wave: torch.Tensor, cfg: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    """(B, N) -> (B, N) augmented copy."""
    out = wave.clone()
    B, N = out.shape
    for b in range(B):
        if float(torch.rand((), generator=g)) > cfg.p:
            continue
        x = out[b]
        if float(torch.rand((), generator=g)) < cfg.p_reverb:
            rt60 = _u(g, *cfg.rt60)
            n_ir = int(rt60 * MODEL_SAMPLE_RATE)
            t = torch.arange(n_ir, dtype=x.dtype) / MODEL_SAMPLE_RATE
            ir = torch.randn(n_ir, generator=g, dtype=x.dtype) * torch.exp(-6.9 * t / rt60)
            ir[0] = 1.0
            ir = ir / ir.norm()
            n_fft = 1 << (N + n_ir - 1).bit_length()
            y = torch.fft.irfft(torch.fft.rfft(x, n_fft) * torch.fft.rfft(ir, n_fft), n_fft)[:N]  # causal
            x = y * (x.std() / y.std().clamp_min(1e-8))
        if float(torch.rand((), generator=g)) < cfg.p_band:
            spec = torch.fft.rfft(x)
            f = torch.fft.rfftfreq(N, 1.0 / MODEL_SAMPLE_RATE)
            keep = (f <= _u(g, *cfg.lowpass_hz)) & (f >= _u(g, *cfg.highpass_hz))
            x = torch.fft.irfft(spec * keep, N)
        if float(torch.rand((), generator=g)) < cfg.p_noise:
            snr = _u(g, *cfg.noise_snr_db)
            power = (x ** 2).mean().clamp_min(1e-8)
            x = x + torch.randn(N, generator=g, dtype=x.dtype) * torch.sqrt(power / 10 ** (snr / 10))
        x = x * 10 ** (_u(g, -cfg.gain_db, cfg.gain_db) / 20)
        out[b] = x.clamp(-1.0, 1.0)
    return out
