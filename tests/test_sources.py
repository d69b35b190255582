"""Audio sources: conditioning (sanitise, downmix, resample), files, arrays, the microphone (fake PortAudio), CLI."""
from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest
import soundfile as sf

from models.audio import resample
from models.rates import MODEL_SAMPLE_RATE
from realtime import mic, sources
from realtime.sources import ArraySource, AudioConditioner, MicSource, NoInputDeviceError, WavSource
from tests.fake_driver import FakeDriver


def _collect(src, limit: int = 10_000) -> list:
    out = []  # filled outside the task: asyncio.run reprs the main task's result in Python 3.11 (slow for arrays)

    async def main() -> None:
        async for c in src.chunks():
            out.append(c)
            if len(out) >= limit:
                src.close()

    asyncio.run(asyncio.wait_for(main(), 60))
    return out


def test_conditioner_sanitises_and_counts():
    c = AudioConditioner(MODEL_SAMPLE_RATE, 1)
    x = np.array([0.5, np.nan, np.inf, -np.inf, 3.0, -2.0, 0.25], np.float32)
    y = c.process(x)
    np.testing.assert_array_equal(y, [0.5, 0, 0, 0, 1.0, -1.0, 0.25])
    assert (c.nonfinite, c.clipped, c.samples_in) == (3, 2, 7)


def test_conditioner_downmixes_stereo_and_scales_ints():
    c = AudioConditioner(MODEL_SAMPLE_RATE, 2)
    y = c.process(np.array([[16384, -16384], [16384, 16384]], np.int16))
    np.testing.assert_allclose(y, [0.0, 0.5])


@pytest.mark.parametrize("rate", [8_000, 16_000, 44_100, 48_000])
def test_conditioner_resamples_in_chunks_like_one_shot(rate):
    t = np.arange(rate) / rate  # 1 s
    x = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    c = AudioConditioner(rate, 1)
    parts = [c.process(x[i:i + 1234]) for i in range(0, len(x), 1234)] + [c.finish()]
    y = np.concatenate(parts)
    ref = resample(x, rate)
    assert len(y) == len(ref) == MODEL_SAMPLE_RATE
    np.testing.assert_allclose(y, ref, atol=1e-5)


def test_array_source_fast_and_loop():
    pcm = np.linspace(-0.5, 0.5, 16_000).astype(np.float32)
    chunks = _collect(ArraySource(pcm, 16_000, realtime=False, chunk_ms=100))
    total = sum(len(c.pcm) for c in chunks)
    assert total == 24_000 and all(c.pcm.dtype == np.float32 for c in chunks)
    arrivals = [c.arrival for c in chunks]
    assert arrivals == sorted(arrivals)
    looped = _collect(ArraySource(pcm, 16_000, realtime=False, chunk_ms=100, loop=True), limit=35)
    assert len(looped) == 35  # 3.5 passes of a 10-chunk clip: looping works and close() stops it


def test_array_source_realtime_paces_first_chunks():
    src = ArraySource(np.zeros(24_000, np.float32), realtime=True, chunk_ms=50)
    t0 = time.monotonic()
    chunks = _collect(src, limit=4)
    # 4 chunks of 50 ms at real time cannot arrive before 200 ms of audio exists (a lower bound, not a timing test)
    assert len(chunks) == 4 and chunks[-1].arrival - t0 >= 0.19


def test_wav_source_stereo_48k(tmp_path):
    t = np.arange(48_000 * 2) / 48_000
    st = np.stack([np.sin(2 * np.pi * 200 * t), np.sin(2 * np.pi * 200 * t)], 1) * 0.3
    p = tmp_path / "st.wav"
    sf.write(p, st, 48_000, subtype="PCM_16")
    src = WavSource(p, realtime=False, chunk_ms=40)
    chunks = _collect(src)
    y = np.concatenate([c.pcm for c in chunks])
    assert len(y) == 48_000 and abs(float(np.abs(y[1000:-1000]).max()) - 0.3) < 0.01
    with pytest.raises(FileNotFoundError, match="nope.wav"):
        WavSource(tmp_path / "nope.wav")
    (tmp_path / "bad.wav").write_bytes(b"not audio")
    with pytest.raises(ValueError, match="bad.wav"):
        WavSource(tmp_path / "bad.wav")


def test_synthetic_speech_is_bounded_and_voiced():
    x = sources.synthetic_speech(3.0)
    assert x.shape == (72_000,) and x.dtype == np.float32 and np.abs(x).max() <= 0.6 + 1e-6
    rms = np.sqrt(np.mean(x.reshape(-1, 800) ** 2, axis=1))
    assert rms.max() > 0.05 and rms.min() < 0.02  # loud syllables and pauses


# ---- microphone through a fake sounddevice -------------------------------------------------------------------------

class _PortAudioError(Exception):
    pass


class FakeSD:
    """The bits of the sounddevice module MicSource uses; InputStream plays a 48 kHz tone from a thread."""

    PortAudioError = _PortAudioError

    def __init__(self, devices: bool = True, blocks: int = 50, rate: int = 48_000):
        self.devices, self.n_blocks, self.rate = devices, blocks, rate
        self.opened: dict = {}

    def query_devices(self, device=None, kind=None):
        if not self.devices:
            if kind is None:
                return []
            raise _PortAudioError("Error querying device -1")
        info = {"name": "fake mic", "max_input_channels": 2, "default_samplerate": float(self.rate)}
        return info if kind else [info]

    def InputStream(self, **kw):  # noqa: N802 - mirrors sounddevice
        sd = self
        sd.opened = kw

        class Stream:
            active = False

            def start(self):
                self.active = True
                self._t = threading.Thread(target=self._run, daemon=True)
                self._t.start()

            def _run(self):
                n = kw["blocksize"]
                for b in range(sd.n_blocks):
                    if not self.active:
                        return
                    t = (np.arange(n) + b * n) / kw["samplerate"]
                    block = (0.5 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)[:, None]
                    kw["callback"](block, n, None, 0)
                    time.sleep(0.001)
                self.active = False

            def stop(self):
                self.active = False

            def close(self):
                pass

        return Stream()


def test_mic_source_with_fake_input_stream():
    sd = FakeSD(blocks=50)
    src = MicSource(sd=sd, chunk_ms=20)
    assert src.rate == 48_000 and src.name == "mic:fake mic"
    chunks = _collect(src)
    assert sd.opened["samplerate"] == 48_000 and sd.opened["channels"] == 1 and sd.opened["dtype"] == "float32"
    y = np.concatenate([c.pcm for c in chunks])
    # 50 blocks x 20 ms = 1 s at 48 kHz -> about 24000 model-rate samples (the resampler holds back a few)
    assert 23_000 <= len(y) <= 24_000
    spec = np.abs(np.fft.rfft(y[2000:2000 + 12_000]))
    assert abs(np.argmax(spec) * MODEL_SAMPLE_RATE / 12_000 - 300) <= 2  # the tone survives, at the right pitch


def test_mic_no_device_raises_clear_message():
    with pytest.raises(NoInputDeviceError) as e:
        MicSource(sd=FakeSD(devices=False))
    msg = str(e.value)
    assert "--wav FILE" in msg and "--push-only" in msg and "--demo" in msg


def test_cli_mic_without_device_exits_fast_with_alternatives(capsys):
    t0 = time.monotonic()
    rc = mic.main(["--mic", "--no-server"], driver=FakeDriver(), sd=FakeSD(devices=False))
    err = capsys.readouterr().err
    assert rc == 2 and time.monotonic() - t0 < 5.0
    assert "no audio input" in err and "--wav FILE" in err and "push" in err


def test_cli_real_portaudio_without_microphone(capsys):
    """On a machine with no input device the real sounddevice path exits with the message (skipped otherwise)."""
    sd = pytest.importorskip("sounddevice")
    try:
        sd.query_devices(None, "input")
        pytest.skip("this machine has an audio input device")
    except Exception:
        pass
    rc = mic.main(["--mic", "--no-server"], driver=FakeDriver())
    assert rc == 2 and "--wav FILE" in capsys.readouterr().err


def test_cli_list_devices(capsys):
    assert mic.main(["--list-devices"], sd=FakeSD(devices=False)) == 0
    assert "no audio devices" in capsys.readouterr().out


def test_cli_default_without_mic_plays_demo(tmp_path, capsys):
    demo = sources.synthetic_speech(2.0)
    out = tmp_path / "demo.npz"
    rc = mic.main(["--no-server", "--fast", "--stats", "--out", str(out)], driver=FakeDriver(),
                  demo_audio=lambda: demo, sd=FakeSD(devices=False))
    text = capsys.readouterr().out
    assert rc == 0
    assert "no microphone found" in text and "latency budget: (N 2 + L 2 + R 1)" in text and "(final)" in text
    with np.load(out) as d:
        assert d["motion"].shape == (60, 320) and list(d["frame_index"]) == list(range(60))
        np.testing.assert_allclose(d["frame_time"], (np.arange(60) + 1) / 30)
        assert d["focal_length"].shape == (60,)


def test_cli_duration_and_wav_input(tmp_path):
    p = tmp_path / "a.wav"
    sf.write(p, 0.1 * np.ones(16_000 * 3, np.float32), 16_000)
    out = tmp_path / "a.npz"
    assert mic.main(["--wav", str(p), "--fast", "--no-server", "--duration", "1.5", "--out", str(out)],
                    driver=FakeDriver()) == 0
    with np.load(out) as d:
        assert len(d["frame_index"]) == 45  # 1.5 s of audio, then the end flush


def test_cli_errors_name_the_problem(tmp_path, capsys):
    assert mic.main(["--wav", str(tmp_path / "missing.wav")], driver=FakeDriver()) == 2
    assert "missing.wav" in capsys.readouterr().err
    assert mic.main(["--demo", "--host", "0.0.0.0"], driver=FakeDriver()) == 2
    assert "--token" in capsys.readouterr().err
    np.savez(tmp_path / "ref.npz", foo=np.zeros(3))
    assert mic.main(["--demo", "--reference", str(tmp_path / "ref.npz")], driver=FakeDriver()) == 2
    assert "global_rot" in capsys.readouterr().err
