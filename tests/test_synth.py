"""The synthetic talker: descriptors, the law's timing/ranges/learnability, and the files train.synth writes."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from models import layout, rates
from models.audio import load_audio, save_wav
from models.features import features_of
from models.rig import F_CAM, forward_kinematics, load_rig, offsets_from_joints
from train import law, synth
from train.law import (
    AUDIO_DRIVEN_CHANNELS,
    JAW_LAG_FRAMES,
    JAW_MAX,
    LOOKAHEAD_FRAMES,
    STROKE_FRAMES,
    Descriptors,
    SpeakerStyle,
    apply_law,
    audio_descriptors,
    hand_codes,
)

SHARED = Path(__file__).resolve().parents[2] / "shared"
REAL_WAV = SHARED / "fixtures" / "audio" / "2_scott_0_3_3.wav"
IN_CI = os.environ.get("CI", "").lower() == "true"
SR = rates.MODEL_SAMPLE_RATE


def _speech(seconds: float, speaker: int, seed: int) -> np.ndarray:
    w = synth.procedural_speech(seconds, synth.Voice.from_seed(speaker, 0), np.random.default_rng(seed))
    return synth.quantize(w).astype(np.float32) / 32768.0


@pytest.fixture(scope="module")
def talk():
    """Two minutes of procedural speech for speaker 0 and the law's deterministic motion."""
    wave = _speech(120.0, 0, 100)
    style = SpeakerStyle.from_seed(0, 0)
    desc = audio_descriptors(wave, SR)
    motion, sig = apply_law(desc, style, None)
    mp = layout.assemble_model_params(motion, style.session_constants())
    _, X = forward_kinematics(mp, style.bone_offsets)  # (T, 127, 3) cm
    return {"wave": wave, "style": style, "desc": desc, "motion": motion, "sig": sig, "X": X}


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1])


def _ridge_r2(Xtr, Ytr, Xte, Yte, lam: float) -> float:
    """Held-out R^2 (variance-weighted over channels) of a ridge map fitted on the training part."""
    mx, sx, my = Xtr.mean(0), Xtr.std(0) + 1e-8, Ytr.mean(0)
    A = (Xtr - mx) / sx
    W = np.linalg.solve(A.T @ A + lam * len(A) * np.eye(A.shape[1]), A.T @ (Ytr - my))
    P = ((Xte - mx) / sx) @ W + my
    return float(1.0 - ((Yte - P) ** 2).sum() / ((Yte - Yte.mean(0)) ** 2).sum())


def _lags(x: np.ndarray, past: int, future: int) -> np.ndarray:
    """(T, C) -> (T, C * (past + future + 1)): x[t - l] for l in [-future, past], zero padded."""
    T = len(x)
    cols = []
    for lag in range(-future, past + 1):
        s = np.zeros_like(x)
        if lag >= 0:
            s[lag:] = x[:T - lag]
        else:
            s[:T + lag] = x[-lag:]
        cols.append(s)
    return np.concatenate(cols, 1)


# ---- descriptors ---------------------------------------------------------------------------------------------------

def test_descriptors_framing_rate_invariance_and_determinism():
    wave = _speech(6.0, 1, 3)
    d = audio_descriptors(wave, SR)
    T = rates.n_frames(len(wave))
    assert d.n_frames == T == 180
    for name in ("loudness_db", "envelope", "onset", "onset_threshold", "stressed", "f0", "voiced", "pitch", "pause"):
        assert getattr(d, name).shape == (T,), name
    assert 0.0 <= d.envelope.min() and d.envelope.max() <= 1.0
    d2 = audio_descriptors(wave, SR)
    assert np.array_equal(d.envelope, d2.envelope) and np.array_equal(d.stressed, d2.stressed)
    # 16 kHz input is resampled to the model rate first: same framing, nearly the same envelope
    from models.audio import resample

    d16 = audio_descriptors(resample(wave, SR, 16000), 16000)
    assert abs(d16.n_frames - T) <= 1
    n = min(T, d16.n_frames)
    assert np.abs(d16.envelope[:n] - d.envelope[:n]).mean() < 0.02
    # gaps between stressed onsets respect the minimum (233 ms)
    assert np.diff(d.stressed_frames).min() >= law.MIN_ONSET_GAP_FRAMES
    with pytest.raises(ValueError, match="NaN"):
        audio_descriptors(np.array([0.0, np.nan] * 800, np.float32), SR)


def test_voiced_pitch_tracks_the_procedural_f0():
    voice = synth.Voice.from_seed(1, 0)
    d = audio_descriptors(_speech(20.0, 1, 5), SR)
    assert 0.3 < d.voiced.mean() < 0.8
    med = float(np.median(d.f0[d.voiced]))
    assert abs(12 * np.log2(med / voice.f0)) < 2.5, (med, voice.f0)  # within 2.5 semitones of the voice's F0


def test_pause_mask_marks_only_long_silences(talk):
    d: Descriptors = talk["desc"]
    p = d.pause.astype(np.int8)
    edges = np.diff(np.concatenate([[0], p, [0]]))
    lengths = np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)
    assert lengths.min() >= law.PAUSE_MIN_FRAMES and len(lengths) > 20
    assert not (d.pause & ~d.silent).any()


# ---- the law: timing -----------------------------------------------------------------------------------------------

def test_law_lookahead_is_at_most_four_frames():
    """Motion frames t <= T' - 1 - 4 computed from a truncated wave equal those from the whole wave."""
    wave = _speech(12.0, 2, 7)
    style = SpeakerStyle.from_seed(2, 0)
    full, _ = apply_law(audio_descriptors(wave, SR), style, None)
    for cut_frame in (150, 200, 271):
        part, _ = apply_law(audio_descriptors(wave[:cut_frame * rates.SAMPLES_PER_FRAME], SR), style, None)
        ok = cut_frame - 1 - LOOKAHEAD_FRAMES
        np.testing.assert_allclose(part[:ok + 1], full[:ok + 1], atol=1e-6)
    assert LOOKAHEAD_FRAMES == 4 and LOOKAHEAD_FRAMES / rates.MOTION_FPS <= 0.150


def test_single_beat_prepares_three_frames_before_and_peaks_on_the_onset():
    T, s = 120, 60
    z = np.zeros(T, np.float32)
    env = np.full(T, 0.8, np.float32)
    stressed = np.zeros(T, bool)
    stressed[s] = True
    strength = np.where(stressed, 1.0, 0.0).astype(np.float32)
    d = Descriptors(env - 20, env - 20, env, z, z, stressed, strength, z, np.zeros(T, bool), z, z,
                    np.zeros(T, bool), np.zeros(T, bool))
    d0 = Descriptors(**{**d.__dict__, "stressed": np.zeros(T, bool), "stress_strength": z})
    style = SpeakerStyle.from_seed(0, 0)
    m1, sig = apply_law(d, style, None)
    m0, _ = apply_law(d0, style, None)
    changed = np.flatnonzero(np.abs(m1 - m0).max(1) > 1e-7)
    assert changed[0] == s - STROKE_FRAMES + 1  # the kernel is 0 at s-3 and rises from there
    assert changed[-1] <= s + style.recovery_frames
    assert int(np.argmax(sig["gesture"])) == s and sig["gesture_phase"][s] == 2
    assert set(sig["gesture_phase"][s - STROKE_FRAMES:s].tolist()) == {1}


def test_beat_strokes_land_within_50ms_of_stressed_onsets(talk):
    """Measured on the FK wrist of the beating hand: its lowest point and its speed minimum sit on the onsets."""
    style, sig, X = talk["style"], talk["sig"], talk["X"]
    rig = load_rig()
    side = "l" if style.handedness == "left" else "r"
    wr = X[:, rig.joint(f"{side}_wrist")]
    speed = np.linalg.norm(np.gradient(wr, axis=0), axis=1)  # cm / frame
    y = wr[:, 1]
    beats = sig["beat_frames"]
    beats = beats[(beats > 4) & (beats < len(y) - 5)]
    assert len(beats) > 150  # ~2 per second over 2 minutes

    def nearest_local_min(x: np.ndarray, b: int) -> int | None:
        loc = [k for k in range(b - 3, b + 4) if x[k] <= x[k - 1] and x[k] <= x[k + 1]]
        return min(loc, key=lambda k: abs(k - b)) - b if loc else None

    low = np.array([nearest_local_min(y, b) for b in beats], dtype=float)
    slow = np.array([nearest_local_min(speed, b) for b in beats], dtype=float)
    frame_ms = 1000.0 / rates.MOTION_FPS
    assert np.mean(np.abs(low) * frame_ms <= 50.0) >= 0.95  # extreme position within +-50 ms
    assert np.mean(np.abs(np.nan_to_num(slow, nan=9)) * frame_ms <= 50.0) >= 0.85  # velocity minimum too
    # the hand moves into the stroke: faster 2 frames before the apex than at it
    assert np.median(speed[beats - 2] / (speed[beats] + 1e-6)) > 2.0


def test_jaw_follows_the_envelope(talk):
    jaw, env = talk["motion"][:, layout.JAW.start], talk["desc"].envelope
    L = JAW_LAG_FRAMES
    assert _corr(jaw[L:], env[:-L]) > 0.9
    assert max(_corr(jaw[k:], env[:len(env) - k]) for k in range(4)) > 0.8
    assert 0.0 <= jaw.min() and jaw.max() <= JAW_MAX and jaw.max() > 0.2
    assert np.allclose(talk["motion"][:, layout.JAW.start + 1:layout.JAW.stop], 0.0)


def test_motion_never_freezes_but_is_calmer_in_pauses(talk):
    X, pause, style = talk["X"], talk["desc"].pause, talk["style"]
    rig = load_rig()
    side = "l" if style.handedness == "left" else "r"  # the beating wrist
    wr = np.linalg.norm(np.diff(X[:, rig.joint(f"{side}_wrist")], axis=0), axis=1)
    head = np.linalg.norm(np.diff(X[:, rig.joint("c_head")], axis=0), axis=1)
    p = pause[1:]
    moving = np.maximum(wr, head)
    assert moving[p].min() > 1e-3  # cm / frame: something moves in every pause frame
    assert wr[p].mean() < 0.8 * wr[~p].mean()
    assert head[p].mean() > 0.0


def test_feet_planted_and_contacts_on(talk):
    X, motion = talk["X"], talk["motion"]
    rig = load_rig()
    for j in ("l_foot", "l_ball", "r_foot", "r_ball"):
        v = np.linalg.norm(np.diff(X[:, rig.joint(j)], axis=0), axis=1)
        assert v.max() < 0.05, j  # cm / frame; the ingestion's contact threshold is 1 cm / frame
    assert np.all(motion[:, layout.CONTACT] == 1.0)


def test_motion_ranges_and_fixed_slots(talk):
    m = talk["motion"]
    body = m[:, layout.BODY]
    assert np.all(body[:, layout.BODY_ZERO_SLOTS] == 0.0)
    assert np.ptp(body[:, layout.BODY_BONE_LENGTH_SLOTS], axis=0).max() == 0.0
    arms = body[:, 24:44]
    assert np.abs(arms).max() < 1.4 and body[:, [30, 40]].min() >= law.ELBOW_MIN - 1e-6
    assert np.abs(m[:, layout.HAND]).max() < 0.5  # real samples: |h| <= 0.46
    assert np.abs(m[:, layout.GLOBAL_ROT]).max() < 0.35
    assert m.dtype == np.float32 and np.isfinite(m).all()


def test_hand_code_zero_is_the_mean_hand_and_curl_closes_it():
    np.testing.assert_allclose(hand_codes(np.zeros(1)), np.zeros((1, 54)), atol=1e-7)
    rig = load_rig()
    from models.rig import decode_hand

    e0, e1 = decode_hand(hand_codes(np.zeros(1))), decode_hand(hand_codes(np.array([0.3])))
    knuckle_rz = [2, 7, 12, 17]  # decoded 27-vector: 5 per finger (knuckle x, y, z, 2nd, 3rd); thumb last
    np.testing.assert_allclose((e1 - e0)[0, knuckle_rz], 0.6 * 0.3, atol=1e-5)
    np.testing.assert_allclose((e1 - e0)[0, [0, 1]], 0.0, atol=1e-5)
    rig = load_rig()

    def tip_dist(curl: float) -> float:
        mp = np.zeros(204)
        from models.rig import hand_params_to_model

        h = hand_codes(np.array([curl]))[0]
        mp[68:122] = hand_params_to_model(np.concatenate([h, h]))
        _, X = forward_kinematics(mp)
        return float(np.linalg.norm(X[rig.joint("r_middle_null")] - X[rig.joint("r_wrist")]))

    assert tip_dist(0.4) < tip_dist(0.0) - 1.0 < tip_dist(-0.2) - 1.0


# ---- style ---------------------------------------------------------------------------------------------------------

def test_speaker_style_is_deterministic_and_varied():
    a, b = SpeakerStyle.from_seed(3, 0), SpeakerStyle.from_seed(3, 0)
    assert a.handedness == b.handedness and np.array_equal(a.bone_offsets, b.bone_offsets)
    styles = [SpeakerStyle.from_seed(s, 0) for s in range(8)]
    assert len({s.handedness for s in styles}) >= 2 and len({round(s.gesture_amp, 3) for s in styles}) == 8
    rig = load_rig()
    for s in styles:
        rel = np.linalg.norm(s.bone_offsets[2:] - rig.rest_offsets[2:], axis=1) / (
            np.linalg.norm(rig.rest_offsets[2:], axis=1) + 1e-6)
        assert np.median(rel) < 0.08  # a few % from the generic skeleton
        assert s.shape_params.shape == (45,) and s.scale_params.shape == (28,) and s.bone_lengths.shape == (6,)
    with pytest.raises(ValueError):
        SpeakerStyle.from_seed(-1, 0)


# ---- learnability -------------------------------------------------------------------------------------------------

def test_law_is_learnable_but_not_frame_local(talk):
    """Held-out R^2 (last 30%) on the audio-driven channels. A ridge on the CURRENT frame's log-mel (160) stays below
    0.6; the same ridge over a window of raw descriptors (30 past, 4 future frames) gets ~0.9; over a window of the
    law's own signals (adds activity and the beat impulses) > 0.9. The law explains its motion exactly (R^2 = 1)."""
    wave, desc, motion, sig = talk["wave"], talk["desc"], talk["motion"], talk["sig"]
    F = features_of(wave)
    T = min(len(F), len(motion))
    Y = motion[:T, AUDIO_DRIVEN_CHANNELS].astype(np.float64)
    n = int(0.7 * T)
    r2_mel = _ridge_r2(F[:n], Y[:n], F[n:T], Y[n:], 0.1)
    stress = desc.stressed * (0.3 + desc.stress_strength)
    S = np.stack([desc.envelope, stress, desc.silent], 1).astype(np.float64)[:T]
    Xd = _lags(S, past=30, future=LOOKAHEAD_FRAMES)
    r2_desc = _ridge_r2(Xd[:n], Y[:n], Xd[n:], Y[n:], 1e-3)
    beat = np.zeros(len(motion))
    beat[sig["beat_frames"]] = 1.0 + desc.stress_strength[sig["beat_frames"]]
    S2 = np.stack([desc.envelope, stress, beat, sig["activity"], desc.silent], 1).astype(np.float64)[:T]
    Xs = _lags(S2, past=20, future=LOOKAHEAD_FRAMES)
    r2_sig = _ridge_r2(Xs[:n], Y[:n], Xs[n:], Y[n:], 1e-3)
    print(f"learnability R2: current-frame log-mel {r2_mel:.3f}, descriptor window {r2_desc:.3f}, "
          f"law-signal window {r2_sig:.3f}")
    assert r2_mel < 0.6
    assert r2_desc > 0.85
    assert r2_sig > 0.9
    assert r2_sig - r2_mel > 0.3


# ---- files ----------------------------------------------------------------------------------------------------------

def test_cli_writes_sam3d_stacked_npz_that_round_trips(tmp_path):
    out = tmp_path / "synth"
    assert synth.main(["--out", str(out), "--speakers", "2", "--minutes", "0.3", "--seq-seconds", "8",
                       "--seed", "0"]) == 0
    npzs = sorted(out.glob("*.npz"))
    assert len(npzs) == 3 and all(p.with_suffix(".wav").is_file() for p in npzs)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["law_version"] == law.LAW_VERSION and len(manifest["sequences"]) == 3
    assert json.loads((out / "speakers.json").read_text()) == ["synth_s00", "synth_s01"]
    rig = load_rig()
    for p in npzs[:2]:
        d = dict(np.load(p))
        T = d["global_rot"].shape[0]
        for k, shape in layout.SAM3D_SHAPES.items():
            assert d[k].shape == (T, *shape) and d[k].dtype == np.float32, k
        assert d["focal_length"].shape == (T,) and d["image_size"].tolist() == [1280, 720]
        assert float(d["fps"]) == 30.0 and d["valid"].all() and str(d["law_version"]) == law.LAW_VERSION
        spk = int(d["speaker"])
        assert spk in (0, 1)
        body = d["body_pose_params"]
        assert np.all(body[:, 62:116] == 0.0) and np.ptp(body[:, 124:130], axis=0).max() == 0.0
        # layout round trip: from_sam3d -> to_sam3d reproduces body/hand/global exactly; 204 = assemble
        motion, const = layout.from_sam3d(d)
        back = layout.to_sam3d(motion, const)
        for k in ("body_pose_params", "hand_pose_params", "global_rot", "expr_params"):
            assert np.array_equal(back[k], d[k]), k
        assert np.array_equal(layout.assemble_model_params(motion, const), d["mhr_model_params"])
        # pred_cam_t: a constant plus ~1 mm jitter
        jitter = d["pred_cam_t"].std(0)
        assert np.all(jitter > 0.0005) and np.all(jitter < 0.002)
        # joints: the speaker's skeleton, camera axes, metres, no cam_t
        style = SpeakerStyle.from_seed(spk, 0)
        _, X = forward_kinematics(d["mhr_model_params"][:3], style.bone_offsets)
        np.testing.assert_allclose(d["pred_joint_coords"][:3], X @ F_CAM.T / 100.0, atol=1e-5)
        offs = offsets_from_joints(d["mhr_model_params"][0], d["pred_joint_coords"][0])
        np.testing.assert_allclose(offs[2:], style.bone_offsets[2:], atol=2e-3)
        assert abs(d["pred_joint_coords"][0, rig.joint("c_head_null"), 1] + 1.7) < 0.15  # head ~1.7 m up (y down)
        # the wav is the exact audio the motion came from: the law on the loaded wav gives the same jaw
        wave, rep = load_audio(p.with_suffix(".wav"))
        assert rep.source_rate == SR and len(wave) == T * rates.SAMPLES_PER_FRAME
        m2, _ = apply_law(audio_descriptors(wave, SR), style, None)
        np.testing.assert_array_equal(m2[:, layout.JAW.start], body[:, 130])


def test_generation_is_deterministic_for_a_seed(tmp_path):
    plan = synth.plan_sequences(2, 0.1, 6.0, False, None)[0]
    styles = {0: SpeakerStyle.from_seed(0, 0), 1: SpeakerStyle.from_seed(1, 0)}
    arrays = []
    for sub, seed in (("a", 0), ("b", 0), ("c", 1)):
        (tmp_path / sub).mkdir()
        synth.write_sequence(tmp_path / sub, plan, seed, styles)
        arrays.append(dict(np.load(tmp_path / sub / f"{plan.name}.npz")))
    a, b, c = arrays
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert (tmp_path / "a" / f"{plan.name}.wav").read_bytes() == (tmp_path / "b" / f"{plan.name}.wav").read_bytes()
    assert not np.array_equal(a["body_pose_params"], c["body_pose_params"])


def test_audio_dir_source_is_cut_into_sequences(tmp_path):
    src = tmp_path / "wavs"
    src.mkdir()
    save_wav(src / "one.wav", _speech(7.0, 0, 1), SR)
    from models.audio import resample

    save_wav(src / "two.wav", resample(_speech(5.0, 1, 2), SR, 16000), 16000)
    out = tmp_path / "out"
    assert synth.main(["--out", str(out), "--speakers", "2", "--minutes", "0.25", "--seq-seconds", "6",
                       "--audio-dir", str(src)]) == 0
    man = json.loads((out / "manifest.json").read_text())["sequences"]
    files = [e for e in man if e["source"] == "file"]
    assert [e["seconds"] for e in files] == [6.0, 5.0]  # one.wav: 6 s (the 1 s rest < 5 s is dropped), two.wav: 5 s
    assert {e["speaker"] for e in files} == {0, 1} and sum(e["seconds"] for e in man) == pytest.approx(15.0, abs=0.1)
    with pytest.raises(SystemExit):
        synth.main(["--out", str(out), "--audio-dir", str(tmp_path / "missing")])


def test_espeak_tts_source(tmp_path):
    if shutil.which("espeak-ng") is None:
        if IN_CI:
            pytest.fail("espeak-ng is missing under CI=true (apt-get install espeak-ng)")
        pytest.skip("espeak-ng not installed")
    v = synth.tts_voice(1, 0)
    assert v == synth.tts_voice(1, 0) and "+" in str(v["voice"])
    wave = synth.tts_speech(10.0, v, np.random.default_rng(0))
    assert 5.0 < len(wave) / SR <= 10.0
    d = audio_descriptors(wave, SR)
    assert d.voiced.mean() > 0.3 and 1.0 <= d.stressed.sum() / (d.n_frames / 30) <= 4.0
    out = tmp_path / "tts"
    assert synth.main(["--out", str(out), "--speakers", "2", "--minutes", "0.2", "--seq-seconds", "6",
                       "--tts"]) == 0
    names = sorted(p.stem.split("_")[0] for p in out.glob("*.npz"))
    assert names == ["proc", "tts"]


def test_law_on_real_speech_fixture():
    if not REAL_WAV.is_file():
        if IN_CI:
            pytest.fail(f"{REAL_WAV} is missing: CI must run with ../shared beside the repo")
        pytest.skip("../shared fixtures absent")
    wave, _ = load_audio(REAL_WAV)
    d = audio_descriptors(wave, SR)
    motion, sig = apply_law(d, SpeakerStyle.from_seed(1, 0), None)
    L = JAW_LAG_FRAMES
    jaw = motion[:, layout.JAW.start]
    corr = _corr(jaw[L:], d.envelope[:-L])
    rate = len(sig["stressed_frames"]) / (d.n_frames / rates.MOTION_FPS)
    print(f"real speech: jaw-envelope r = {corr:.3f}, stressed onsets {rate:.2f}/s, pauses {d.pause.mean():.2f}")
    assert corr > 0.8
    assert 1.0 <= rate <= 4.0
    assert 0.02 < d.pause.mean() < 0.4 and d.voiced.mean() > 0.4
