import numpy as np
import pytest
import torch

from models import audio, rates
from models.features import LogMelFeatures, features_of


def test_framing_is_exact_and_drift_free_over_3_hours():
    assert rates.SAMPLES_PER_FRAME * rates.MOTION_FPS == rates.MODEL_SAMPLE_RATE
    k = 3 * 3600 * rates.MOTION_FPS  # frame index after 3 hours
    start, end = rates.frame_span(k)
    assert start == k * 800 and end - start == 800
    assert rates.frame_time(k - 1) == pytest.approx(3 * 3600.0, abs=1e-9)
    # a 16 kHz source: frame k covers exactly k*16000/30 source samples, an integer every 3 frames -> no drift
    assert rates.samples_at(16_000, k) == 3 * 3600 * 16_000
    assert rates.samples_at(44_100, k) == 3 * 3600 * 44_100


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_chunked_features_equal_whole_file(seed):
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=24_000 * 2 + 517) * 0.1).astype(np.float32)
    whole = features_of(x)
    assert whole.shape == (len(x) // 800, rates.FEATURE_DIM)
    fe, st, outs, i = LogMelFeatures(), None, [], 0
    while i < len(x):
        n = int(rng.integers(1, 2500))
        f, st = fe(torch.from_numpy(x[i:i + n])[None], st)
        outs.append(f[0].numpy())
        i += n
    np.testing.assert_array_equal(np.concatenate(outs), whole)
    assert st.pending.shape[-1] == len(x) % 800


def test_features_are_causal():
    rng = np.random.default_rng(3)
    x = (rng.normal(size=24_000) * 0.1).astype(np.float32)
    f1 = features_of(x)
    y = x.copy()
    y[800 * 20:] = 0.9  # change the future from frame 20 on
    f2 = features_of(y)
    np.testing.assert_array_equal(f1[:20], f2[:20])
    assert np.abs(f1[20:] - f2[20:]).max() > 0.1


def test_sanitize_counts_bad_samples():
    x = np.array([0.0, np.nan, np.inf, -np.inf, 2.0, -3.0, 0.5], np.float32)
    clean, n_bad, n_clip = audio.sanitize(x)
    assert (n_bad, n_clip) == (3, 2)
    assert np.isfinite(clean).all() and np.abs(clean).max() <= 1.0
    assert np.isnan(x[1])  # input untouched


def test_load_audio_any_rate_stereo_int16(tmp_path):
    import soundfile as sf

    t = np.arange(48_000) / 48_000
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 440 * t)], 1) * 0.5
    p = tmp_path / "a.wav"
    sf.write(p, stereo, 48_000, subtype="PCM_16")
    y, rep = audio.load_audio(p)
    assert rep.source_rate == 48_000 and rep.channels == 2
    assert abs(len(y) - 24_000) <= 1
    assert np.abs(y).max() == pytest.approx(0.5, abs=0.02)
    with pytest.raises(FileNotFoundError, match="missing.wav"):
        audio.load_audio(tmp_path / "missing.wav")
    (tmp_path / "bad.wav").write_bytes(b"not audio")
    with pytest.raises(ValueError, match="bad.wav"):
        audio.load_audio(tmp_path / "bad.wav")


def test_stream_resampler_equals_one_shot():
    rng = np.random.default_rng(0)
    x = rng.normal(size=16_000).astype(np.float32) * 0.1
    rs = audio.StreamResampler(16_000)
    parts = [rs.process(x[i:i + 1234]) for i in range(0, len(x), 1234)] + [rs.process(np.zeros(0, np.float32), True)]
    y = np.concatenate(parts)
    ref = audio.resample(x, 16_000)
    n = min(len(y), len(ref))
    assert abs(len(y) - len(ref)) <= 1
    np.testing.assert_allclose(y[:n], ref[:n], atol=1e-5)
