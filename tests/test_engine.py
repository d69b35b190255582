"""The streaming engine: chunking invariance, flush, batching, seams, constants, face modes, speaker handling."""
import numpy as np
import pytest

from models import layout, rates
from models.bundle import load_bundle
from realtime.engine import Driver
from tests.bundles import make_tiny_bundle
from train.infer import generate


def speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * rates.MODEL_SAMPLE_RATE)
    t = np.arange(n) / rates.MODEL_SAMPLE_RATE
    env = np.clip(np.sin(2 * np.pi * 2.5 * t), 0, None) ** 2 * (rng.random(n) < 2)  # syllables
    env *= (np.sin(2 * np.pi * 0.3 * t) > -0.6)  # pauses
    x = env * (np.sin(2 * np.pi * 140 * t) + 0.3 * rng.normal(size=n))
    return (0.3 * x).astype(np.float32)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return load_bundle(make_tiny_bundle(tmp_path_factory.mktemp("b")))


def run_chunks(driver, wave, sizes, speaker=0):
    s = driver.new_session(speaker=speaker)
    frames, i, k = [], 0, 0
    while i < len(wave):
        n = sizes[k % len(sizes)]
        frames += s.push(wave[i:i + n])
        i, k = i + n, k + 1
    frames += s.flush()
    return frames, s


def test_chunking_invariance_and_flush(bundle):
    d = Driver(bundle, chunk_frames=1)
    wave = speechlike(6.3)
    ref, _ = run_chunks(d, wave, [len(wave)])
    n_expected = -(-len(wave) // rates.SAMPLES_PER_FRAME)
    assert [f.index for f in ref] == list(range(n_expected))
    np.testing.assert_allclose([f.time for f in ref], (np.arange(n_expected) + 1) / 30.0)
    for sizes in ([1], [137, 2000, 5], [800], [12000]):
        if sizes == [1]:
            sizes = [3333]  # one-sample pushes are slow in Python; odd sizes cover the same path
        got, s = run_chunks(d, wave, sizes)
        assert len(got) == len(ref)
        np.testing.assert_allclose(np.stack([f.params for f in got]), np.stack([f.params for f in ref]), atol=1e-4)
        assert s.seam_max < 1e-4  # the re-decoded overlap matched what was produced
    motion, _ = generate(d, wave, speaker=0, progress=False)  # train.infer's path == the runtime's frames
    np.testing.assert_allclose(motion, np.stack([f.params for f in ref]), atol=1e-4)


@pytest.mark.parametrize("chunk_frames", [2, 4])
def test_chunk_frames_emit_whole_chunks(bundle, chunk_frames):
    d = Driver(bundle, chunk_frames=chunk_frames)
    s = d.new_session()
    sizes = []
    for _ in range(40):
        sizes.append(len(s.push(speechlike(0.1, seed=len(sizes)))))
    assert all(n % chunk_frames == 0 for n in sizes) and sum(sizes) > 0


def test_batched_sessions_equal_single(bundle):
    d = Driver(bundle, chunk_frames=1)
    waves = [speechlike(3.0, seed=i) for i in range(3)]
    single = [run_chunks(d, w, [1600], speaker=i % 2)[0] for i, w in enumerate(waves)]
    sessions = [d.new_session(speaker=i % 2) for i in range(3)]
    out = [[] for _ in range(3)]
    for i in range(0, len(waves[0]), 1600):
        for k, fr in enumerate(d.process([(s, w[i:i + 1600]) for s, w in zip(sessions, waves)])):
            out[k] += fr
    for k in range(3):
        out[k] += sessions[k].flush()
        np.testing.assert_allclose(np.stack([f.params for f in out[k]]), np.stack([f.params for f in single[k]]),
                                   atol=1e-4)


def test_constants_fixed_and_inputs_untouched(bundle):
    const = layout.SessionConstants(pred_cam_t=[0.1, 0.8, 5.0], bone_lengths=[0.1, -0.2, 0.3, 0, 0.05, 0.2])
    d = Driver(bundle)
    s = d.new_session(constants=const)
    wave = speechlike(2.0)
    before = wave.copy()
    frames = s.push(wave) + s.flush()
    np.testing.assert_array_equal(wave, before)
    m = np.stack([f.params for f in frames])
    bone = m[:, layout.BODY.start + layout.BODY_BONE_LENGTH_SLOTS]
    assert np.abs(bone - const.bone_lengths).max() == 0  # never predicted: exactly the session constant
    assert np.abs(m[:, layout.BODY.start + layout.BODY_ZERO_SLOTS]).max() == 0
    out = layout.to_sam3d(m, s.constants)
    assert np.ptp(out["pred_cam_t"], axis=0).max() == 0 and np.allclose(out["pred_cam_t"][0], const.pred_cam_t)


def test_face_envelope_mode_without_face_part(tmp_path):
    b = load_bundle(make_tiny_bundle(tmp_path / "noface", parts=("body", "hand")))
    with pytest.raises(ValueError, match="no face part"):
        Driver(b, face_mode="model")
    d = Driver(b)  # auto -> envelope
    assert d.face_mode == "envelope"
    wave = speechlike(5.0)
    frames, _ = run_chunks(d, wave, [4000])
    jaw = np.array([f.params[layout.JAW_OPEN] for f in frames])
    rms = np.sqrt((wave[: len(jaw) * 800].reshape(-1, 800) ** 2).mean(1))
    assert jaw.min() >= 0 and jaw.max() <= layout.JAW_OPEN_RANGE[1] + 1e-6
    assert np.corrcoef(jaw[: len(rms)], rms)[0, 1] > 0.7
    off = Driver(b, face_mode="off")
    frames, _ = run_chunks(off, wave, [4000])
    assert max(abs(f.params[layout.JAW_OPEN]) for f in frames) == 0


def test_speaker_ids_and_bad_audio(bundle):
    d = Driver(bundle)
    assert d.new_session(speaker=-1).speaker == d.n_speakers  # unknown id, never aliased to a real speaker
    assert d.new_session(speaker=None).speaker == d.n_speakers
    with pytest.raises(ValueError, match="out of range"):
        d.new_session(speaker=d.n_speakers + 1)
    s = d.new_session()
    bad = speechlike(0.5)
    bad[100] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        s.push(bad)


def test_global_rot_is_continuous(bundle):
    d = Driver(bundle)
    frames, _ = run_chunks(d, speechlike(8.0), [2400])
    g = np.stack([f.params[layout.GLOBAL_ROT] for f in frames])
    assert np.abs(np.diff(g, axis=0)).max() < 1.0  # no +-pi branch jumps on the wire


def test_runtime_cli_equals_train_infer(tmp_path, bundle):
    """`python -m realtime.mic --wav F --fast --out` and `python -m train.infer F` give the same frames."""
    from models.audio import save_wav
    from realtime import mic
    from train import infer

    wav = tmp_path / "a.wav"
    save_wav(wav, speechlike(4.0, seed=7), 24_000)
    rt, off = tmp_path / "rt.npz", tmp_path / "off.npz"
    assert mic.main(["--wav", str(wav), "--fast", "--no-server", "--out", str(rt), "--checkpoint",
                     str(bundle.root), "--chunk-ms", "20"]) == 0
    assert infer.main([str(wav), "-o", str(off), "--checkpoint", str(bundle.root)]) == 0
    a, b = np.load(rt)["motion"], np.load(off)["motion"]
    assert a.shape == b.shape == (120, layout.DIM)
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_output_smoothing_is_causal_chunk_invariant_and_calms_jitter(bundle):
    from realtime.smoothing import OneEuro, OneEuroState

    wave = speechlike(4.0)
    raw, _ = run_chunks(Driver(bundle), wave, [4000])
    spec = {"body": 1.0, "hand": 4.0, "face": 3.0, "global": 1.0}
    d = Driver(bundle, smooth=spec)
    a, _ = run_chunks(d, wave, [4000])
    b, _ = run_chunks(d, wave, [1111, 7000])
    A, B, R = (np.stack([f.params for f in x]) for x in (a, b, raw))
    np.testing.assert_allclose(A, B, atol=1e-4)  # chunking does not change the smoothed stream
    body = layout.VARYING["body"]
    assert np.abs(np.diff(A[:, body], axis=0)).mean() < 0.7 * np.abs(np.diff(R[:, body], axis=0)).mean()
    np.testing.assert_array_equal(A[:, layout.CONTACT], R[:, layout.CONTACT])  # contact stays binary
    # causal: frame t of the filter depends only on frames <= t
    f = OneEuro(spec)
    x = np.cumsum(np.random.default_rng(0).normal(size=(50, layout.DIM)), 0).astype(np.float32)
    y1, _ = f(x, OneEuroState())
    x2 = x.copy()
    x2[30:] += 5.0
    y2, _ = f(x2, OneEuroState())
    np.testing.assert_array_equal(y1[:30], y2[:30])
    with pytest.raises(ValueError, match="unknown part"):
        OneEuro({"legs": 1.0})


def test_session_state_stays_bounded(tmp_path):
    """Hours of streaming must not grow per-frame buffers (the soak benchmark measures RSS; this pins the cause)."""
    b = load_bundle(make_tiny_bundle(tmp_path / "noface", parts=("body", "hand")))  # envelope face path too
    d = Driver(b)
    s = d.new_session()
    sizes = []
    for k in range(3):
        for _ in range(10):
            s.push(speechlike(1.0, seed=k))
        sizes.append((len(s.env), len(s.glob), max(len(p.codes) for p in s.parts.values()),
                      max(len(q) for q in s.queues.values())))
    assert sizes[0] == sizes[1] == sizes[2]  # after 10 s, 20 s, 30 s: identical buffer sizes
    assert max(sizes[-1]) < 64
