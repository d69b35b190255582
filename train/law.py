"""The synthetic talker's law: audio descriptors measurable from ANY waveform -> ground-truth MHR motion.

There is no paired speech + MHR dataset here, so every model is trained and measured against this law. It is defined
only on descriptors of the waveform (loudness, onsets, stress, pitch, pauses), so the same law gives "ground-truth
motion" for procedural speech, espeak-ng speech, a user's recording or the real speech fixture.

Timing contract (see docs/SYNTHETIC_TALKER.md): the law looks at most ``LOOKAHEAD_FRAMES`` = 4 frames (133 ms) into
the future: a beat's stroke starts ``STROKE_FRAMES`` = 3 frames before its stressed onset and the onset itself is
confirmed as a peak with ``PEAK_CONFIRM_FRAMES`` = 1 frame of look-ahead. Everything else is causal. A generator with
look-ahead L >= 4 can therefore reproduce the law exactly in principle.

Body slots below are indices into ``body_pose_params`` (= motion[0:130]); names from ``models.rig`` param_names[6+b].
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from models import layout, rates
from models.audio import resample, to_mono_float
from models.layout import SessionConstants
from models.rig import load_rig
from models.rotations import euler_to_matrix, matrix_to_euler, sixd_to_matrix

LAW_VERSION = "talker-law-v1"
FPS = rates.MOTION_FPS
SR = rates.MODEL_SAMPLE_RATE
SPF = rates.SAMPLES_PER_FRAME  # 800
HOP = rates.HOP_LENGTH  # 200

# ---- timing ------------------------------------------------------------------------------------------------------
STROKE_FRAMES = 3  # beat/nod kernel rises over the 3 frames (100 ms) before the stressed onset
PEAK_CONFIRM_FRAMES = 1  # an onset peak at frame k is confirmed with frame k+1
LOOKAHEAD_FRAMES = STROKE_FRAMES + PEAK_CONFIRM_FRAMES  # 4 frames = 133 ms <= 150 ms
JAW_LAG_FRAMES = 1  # the jaw follows the envelope one frame late (causal)
MIN_ONSET_GAP_FRAMES = 7  # 233 ms between stressed onsets
PAUSE_MIN_FRAMES = 5  # silence of >= 5 frames (167 ms, i.e. longer than 150 ms) is a pause

# ---- descriptor constants -------------------------------------------------------------------------------------------
REF_INIT_DB = -20.0  # causal peak follower starts at a nominal speech peak level (dBFS)
REF_DECAY_DB = 0.1  # per frame (3 dB/s): the follower adapts to quieter recordings within seconds
REF_FLOOR_DB = -60.0
ENV_RANGE_DB = 40.0  # envelope 0..1 spans [ref - 40 dB, ref]
SILENCE_ENV = 0.3  # envelope below this (28 dB under the running peak) is silence
STRESS_ENV = 0.6  # a stressed onset must reach this envelope within its frame or the next
ONSET_WINDOW = 30  # frames of past onset strength in the adaptive threshold (1 s)
ONSET_K = 1.5  # threshold = ONSET_BIAS_DB + ONSET_K * mean(past onset strength)
ONSET_BIAS_DB = 1.0
STRENGTH_SPAN = 2.0  # stress strength 1 at onset = (1 + STRENGTH_SPAN) x threshold
N_BANDS = 16
BAND_FMIN, BAND_FMAX = 100.0, 8000.0
PITCH_SR = 8000
PITCH_WIN = 512  # 64 ms at 8 kHz, ending at the frame's end
F0_MIN, F0_MAX = 60.0, 400.0
VOICING_ACF = 0.5
PITCH_REF_TAU_S = 2.0

# ---- pose constants (radians) ---------------------------------------------------------------------------------------
# Spine/neck/head rest: mean over the four SAM 3D Body samples (forward-bend slots only; lateral/twist slots zeroed so
# the rest pose is symmetric; per-speaker offsets add asymmetry). Derived figures, the files are not read at runtime.
SPINE_REST = {4: 0.088, 5: 0.248, 10: -0.079, 11: 0.022, 14: -0.182, 17: 0.014, 20: 0.071, 23: -0.103}
# Right-arm slots b24..33: clavicle rx, ry, rz, uparm twist, ry, rz, elbow, lowarm twist, wrist ry, rz. The left arm
# uses the SAME values at b34..43 (MHR's arms are mirror-consistent, checked by FK). Solved by FK (generic skeleton,
# spine rest above) to put the hands at: rest = hanging at the side (wrist ~(22, 89, 1) cm); gesture space = forearm
# forward at belly height (wrist ~(18, 110, 25) cm); beat apex = hand flicked down ~8 cm (fingertip ~15 cm).
# Sample ranges for comparison: clavicle rx [-0.44, 0.02], uparm rz [0.17, 1.33], elbow [-0.25, 1.43], wrist_rz
# [-1.07, -0.35].
ARM_REST = np.array([-0.20, 0.02, 0.08, 0.46, -0.45, -0.68, -0.34, -0.22, 0.00, -0.03])
ARM_GESTURE = np.array([-0.20, 0.04, 0.08, 0.81, -0.33, -0.47, 0.85, -0.18, 0.13, -0.13])
ARM_BEAT = np.array([0.00, -0.05, 0.03, 0.13, 0.05, 0.00, -0.26, -0.01, -0.23, 0.06])  # added at apex (g = 1)
R_ARM, L_ARM = np.arange(24, 34), np.arange(34, 44)
KNEE_REST = 0.05  # b47 / b56: soft knees; other leg slots 0 (straight standing, feet on the floor)
JAW_MAX = 0.35  # jaw opening range 0..0.35 rad on jaw rx (motion[310] = body_pose_params[130])
ELBOW_MIN = -0.45  # keeps per-speaker rest offsets inside the elbow limit [-0.5, 2.0]
ACTIVITY_ATTACK_S, ACTIVITY_RELEASE_S = 0.4, 2.0
ACTIVITY_HOLD_FRAMES = 20  # 0.67 s
GESTURE_SAT = 1.3  # soft saturation of overlapping beats: g -> G tanh(g / G)

# Expression stand-ins. MHR's 72 expression blendshapes are FACS-like but their names are not in the asset-free rig,
# so the law drives four fixed channels and names them for what it drives.
EXPR_MOUTH_OPEN, EXPR_LIP_ROUND, EXPR_LIP_SPREAD, EXPR_BROW_RAISE = 0, 1, 2, 3

# Slots that carry the idle (rng-phased, audio-independent) sway and breathing; no audio-driven term touches them.
IDLE_BODY_SLOTS = np.array([0, 2, 14, 17, 21])  # spine0 rx/ry flexible, spine2 rz, spine3 rz, head_twist
# Channels (of 320) whose values depend on the audio only (plus per-beat amplitude jitter when rng is given).
AUDIO_DRIVEN_CHANNELS = np.concatenate([
    layout.BODY.start + np.array([1, 5, 20, 23]), layout.BODY.start + R_ARM, layout.BODY.start + L_ARM,
    np.arange(layout.HAND.start, layout.HAND.stop), layout.EXPR.start + np.arange(4), np.array([layout.JAW.start]),
])

# Per-sequence figures carried from the four SAM 3D Body samples (means; see NOTICE). Bone-length slots b124..129.
BONE_LENGTH_ANCHORS = np.array([
    [-0.078, -0.026, -0.286, -0.351, -0.004, 0.331],
    [0.056, -0.209, -0.430, 0.078, -0.055, 0.649],
    [0.131, -0.028, -0.244, 0.185, 0.005, 0.682],
    [0.044, -0.075, -0.230, 0.084, -0.046, 0.189],
])
SCALE_MEAN = np.array([
    0.0, -0.002, 0.001, -0.687, 0.036, -0.716, -0.562, 0.317, 0.913, 1.444, -0.18, -0.143, -0.173, 0.649, -0.142, 0.2,
    -0.002, 1.539, -0.81, -0.484, 0.761, -0.587, -0.246, -0.439, 0.146, -0.476, 0.871, 0.076])
SCALE_FIXED = np.array([0, 1, 2, 16])  # zero spread across the samples: kept at the mean
SHAPE_MEAN = np.array([
    -1.359, 0.788, -0.956, 0.639, 0.495, -0.622, 0.52, -1.061, 0.721, 0.96, -0.935, 1.536, 0.043, -0.737, -0.303,
    0.139, 0.471, -0.265, -0.37, -0.445, -0.225, -1.316, 0.197, 0.572, -0.392, -0.471, -0.199, 0.726, -0.354, -0.264,
    -0.095, -0.617, 0.436, -0.914, 0.639, -0.737, -0.155, 0.778, 0.186, -0.452, -0.074, -0.047, 0.066, 0.06, 0.065])


# ==== descriptors ====================================================================================================

@dataclass
class Descriptors:
    """Per-frame (30 fps) audio descriptors; frame k = model-rate samples [800k, 800k + 800).

    Causal except the peak confirmation of ``stressed`` (1 frame) and ``pause`` (an evaluation mask that marks the
    whole silent run, known only at its end).
    """

    loudness_db: np.ndarray  # (T,) frame RMS level, dBFS
    reference_db: np.ndarray  # (T,) causal peak follower of loudness_db
    envelope: np.ndarray  # (T,) in [0, 1]: (loudness - (ref - 40 dB)) / 40 dB, clipped
    onset: np.ndarray  # (T,) onset strength: mean positive spectral flux over 16 bands (dB), max over sub-frames
    onset_threshold: np.ndarray  # (T,) causal adaptive threshold
    stressed: np.ndarray  # (T,) bool, stressed onsets
    stress_strength: np.ndarray  # (T,) in [0, 1] at stressed frames, 0 elsewhere
    f0: np.ndarray  # (T,) Hz, 0 where unvoiced
    voiced: np.ndarray  # (T,) bool
    pitch: np.ndarray  # (T,) semitones relative to a causal running mean of voiced F0, 0 where unvoiced
    brightness: np.ndarray  # (T,) in [0, 1]: log spectral centroid, 500 Hz -> 0, 4 kHz -> 1
    silent: np.ndarray  # (T,) bool, envelope < SILENCE_ENV
    pause: np.ndarray  # (T,) bool, silent runs of >= PAUSE_MIN_FRAMES frames

    @property
    def n_frames(self) -> int:
        return int(self.envelope.shape[0])

    @property
    def stressed_frames(self) -> np.ndarray:
        return np.flatnonzero(self.stressed)


def _frames_db(x: np.ndarray, T: int) -> np.ndarray:
    f = x[:T * SPF].astype(np.float64).reshape(T, SPF)
    return 10.0 * np.log10((f * f).mean(1) + 1e-10)


def _peak_follower(db: np.ndarray) -> np.ndarray:
    ref = np.empty_like(db)
    r = REF_INIT_DB
    for k, v in enumerate(db):
        r = max(v, r - REF_DECAY_DB, REF_FLOOR_DB)
        ref[k] = r
    return ref


def _band_matrix() -> tuple[np.ndarray, np.ndarray]:
    freqs = np.fft.rfftfreq(rates.N_FFT, 1.0 / SR)
    edges = np.geomspace(BAND_FMIN, BAND_FMAX, N_BANDS + 1)
    m = np.zeros((len(freqs), N_BANDS))
    for b in range(N_BANDS):
        m[(freqs >= edges[b]) & (freqs < edges[b + 1]), b] = 1.0
    return m, freqs


def _spectral(x: np.ndarray, T: int, ref_db: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Onset strength (T,) and spectral centroid (T,) Hz from causal 400-sample windows, 4 per frame."""
    band, freqs = _band_matrix()
    pad = np.concatenate([np.zeros(rates.WIN_LENGTH - HOP), x[:T * SPF].astype(np.float64)])
    win = np.hanning(rates.WIN_LENGTH + 2)[1:-1]
    n_sub = 4 * T
    logb = np.empty((n_sub, N_BANDS))
    cent = np.empty(n_sub)
    for s in range(0, n_sub, chunk):
        e = min(n_sub, s + chunk)
        idx = (np.arange(s, e) * HOP)[:, None] + np.arange(rates.WIN_LENGTH)
        spec = np.abs(np.fft.rfft(pad[idx] * win, n=rates.N_FFT)) ** 2  # (n, 257)
        bp = spec @ band
        logb[s:e] = 10.0 * np.log10(bp + 1e-10)
        mag = np.sqrt(spec)
        cent[s:e] = (mag * freqs).sum(1) / (mag.sum(1) + 1e-12)
    # bands below (running peak - 50 dB) are noise: floor them so noise does not make onsets
    floor = np.repeat(ref_db, 4)[:, None] - 50.0
    logb = np.maximum(logb, floor)
    flux = np.zeros(n_sub)
    flux[2:] = np.maximum(logb[2:] - logb[:-2], 0.0).mean(1)
    onset = flux.reshape(T, 4).max(1)
    centroid = cent.reshape(T, 4).mean(1)
    return onset, centroid


def _pitch(x: np.ndarray, T: int) -> tuple[np.ndarray, np.ndarray]:
    """Autocorrelation F0 (Hz) and its normalised peak, from a 64 ms window at 8 kHz ending at each frame's end."""
    y = resample(x[:T * SPF], SR, PITCH_SR).astype(np.float64)
    y = np.concatenate([np.zeros(PITCH_WIN), y])
    ends = PITCH_WIN + (np.arange(1, T + 1) * SPF * PITCH_SR) // SR
    w = np.hanning(PITCH_WIN)
    wac = np.fft.irfft(np.abs(np.fft.rfft(w, 2 * PITCH_WIN)) ** 2)[:PITCH_WIN]
    lo, hi = int(PITCH_SR / F0_MAX), int(PITCH_SR / F0_MIN)
    f0 = np.zeros(T)
    peak = np.zeros(T)
    for s in range(0, T, 2048):
        e = min(T, s + 2048)
        idx = ends[s:e, None] - PITCH_WIN + np.arange(PITCH_WIN)
        seg = y[np.clip(idx, 0, len(y) - 1)]
        seg = (seg - seg.mean(1, keepdims=True)) * w
        ac = np.fft.irfft(np.abs(np.fft.rfft(seg, 2 * PITCH_WIN)) ** 2)[:, :PITCH_WIN]
        nac = ac / (ac[:, :1] + 1e-12) / (wac / wac[0])
        band_ = nac[:, lo:hi + 1]
        best = band_.max(1)
        # octave-error guard: the smallest lag whose value is within 90% of the best
        first = np.argmax(band_ >= 0.9 * best[:, None], axis=1)
        lag = (lo + first).astype(np.float64)
        i = lo + first
        ok = (i > lo) & (i < hi)
        rows = np.arange(e - s)
        a, b, c = nac[rows, i - 1], nac[rows, i], nac[rows, np.minimum(i + 1, PITCH_WIN - 1)]
        den = a - 2 * b + c
        shift = np.where(ok & (np.abs(den) > 1e-9), 0.5 * (a - c) / np.where(np.abs(den) > 1e-9, den, 1.0), 0.0)
        lag = lag + np.clip(shift, -0.5, 0.5)
        f0[s:e] = PITCH_SR / lag
        peak[s:e] = best
    return f0, peak


def _runs(mask: np.ndarray, min_len: int) -> np.ndarray:
    out = np.zeros_like(mask)
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    for a, b in zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1)):
        if b - a >= min_len:
            out[a:b] = True
    return out


def audio_descriptors(wave: np.ndarray, rate: int) -> Descriptors:
    """Waveform (N,) at ``rate`` Hz (float in [-1, 1], or int PCM) -> per-frame descriptors (numpy + soxr only).

    The wave is resampled to the 24 kHz model rate first (``models.audio.resample``), so frame k is model-rate
    samples [800k, 800k + 800), exactly the framing of ``models.rates`` and ``models.features``.
    """
    x = np.asarray(wave)
    x = to_mono_float(x) if np.issubdtype(x.dtype, np.integer) else x.astype(np.float32).reshape(-1)
    if not np.all(np.isfinite(x)):
        raise ValueError("audio_descriptors: waveform contains NaN/Inf; sanitise it first (models.audio.sanitize)")
    x = resample(x, int(rate), SR) if int(rate) != SR else x
    T = rates.n_frames(len(x))
    if T == 0:
        z = np.zeros(0)
        return Descriptors(z, z, z, z, z, z.astype(bool), z, z, z.astype(bool), z, z, z.astype(bool), z.astype(bool))
    db = _frames_db(x, T)
    ref = _peak_follower(db)
    env = np.clip((db - (ref - ENV_RANGE_DB)) / ENV_RANGE_DB, 0.0, 1.0)
    onset, centroid = _spectral(x, T, ref)

    # causal adaptive threshold: mean of the previous ONSET_WINDOW frames (fewer at the start)
    cs = np.concatenate([[0.0], np.cumsum(onset)])
    k = np.arange(T)
    lo = np.maximum(0, k - ONSET_WINDOW)
    past_mean = np.where(k > 0, (cs[k] - cs[lo]) / np.maximum(k - lo, 1), onset[0])
    thr = ONSET_BIAS_DB + ONSET_K * past_mean

    nxt = np.concatenate([onset[1:], [-np.inf]])  # the one frame of look-ahead
    prev1 = np.concatenate([[-np.inf], onset[:-1]])
    prev2 = np.concatenate([[-np.inf, -np.inf], onset[:-2]])
    env_next = np.concatenate([env[1:], [env[-1]]])
    peak = (onset >= prev1) & (onset >= prev2) & (onset > nxt)
    cand = peak & (onset > thr) & (np.maximum(env, env_next) >= STRESS_ENV)
    stressed = np.zeros(T, bool)
    last = -10 ** 9
    for c in np.flatnonzero(cand):
        if c - last >= MIN_ONSET_GAP_FRAMES:
            stressed[c] = True
            last = c
    strength = np.where(stressed, np.clip((onset - thr) / (STRENGTH_SPAN * thr), 0.0, 1.0), 0.0)

    f0, acf_peak = _pitch(x, T)
    silent = env < SILENCE_ENV
    voiced = (acf_peak > VOICING_ACF) & ~silent & (f0 >= F0_MIN) & (f0 <= F0_MAX)
    f0 = np.where(voiced, f0, 0.0)
    pitch = np.zeros(T)
    alpha = 1.0 / (PITCH_REF_TAU_S * FPS)
    ref_lf = None
    for i in np.flatnonzero(voiced):
        lf = np.log2(f0[i])
        ref_lf = lf if ref_lf is None else ref_lf + alpha * (lf - ref_lf)
        pitch[i] = 12.0 * (lf - ref_lf)
    pitch = np.clip(pitch, -12.0, 12.0)
    brightness = np.clip(np.log2(np.maximum(centroid, 1.0) / 500.0) / 3.0, 0.0, 1.0)
    return Descriptors(
        loudness_db=db.astype(np.float32), reference_db=ref.astype(np.float32), envelope=env.astype(np.float32),
        onset=onset.astype(np.float32), onset_threshold=thr.astype(np.float32), stressed=stressed,
        stress_strength=strength.astype(np.float32), f0=f0.astype(np.float32), voiced=voiced,
        pitch=pitch.astype(np.float32), brightness=brightness.astype(np.float32), silent=silent,
        pause=_runs(silent, PAUSE_MIN_FRAMES),
    )


# ==== speaker style =================================================================================================

@dataclass(frozen=True)
class SpeakerStyle:
    """Everything that makes one synthetic speaker move and look different.

    Attributes:
        speaker_id: 0..n-1.
        handedness: 'right', 'left' or 'both' (which arm(s) beat).
        gesture_amp: beat amplitude multiplier (0.7-1.3).
        beat_threshold: minimal stress strength that makes an arm beat (0-0.3; tempo: higher = fewer beats).
        recovery_frames: frames for the hand to come back after a beat apex (9-15; tempo).
        engage: how far the beating arm rises into gesture space while talking (0.6-1.0).
        off_hand_engage: the same for a non-beating arm (0.1-0.4).
        nod_amp: head nod at stressed onsets (rad, 0.04-0.10).
        jaw_gain: fraction of JAW_MAX used at full envelope (0.75-1.0).
        curl_amp: finger curl at a beat apex (rad, 0.2-0.45).
        sway_amp: idle sway multiplier (0.6-1.4).
        breath_hz: breathing rate (0.2-0.3 Hz).
        yaw: facing direction, global_rot y (rad, +-0.25).
        camera_distance: typical pred_cam_t z (m).
        rest_offsets: (130,) added to the rest body pose.
        bone_offsets: (127, 3) cm, this speaker's skeleton (for pred_joint_coords).
        bone_lengths / scale_params / shape_params: (6,) / (28,) / (45,) per-speaker constants.
    """

    speaker_id: int
    handedness: str
    gesture_amp: float
    beat_threshold: float
    recovery_frames: int
    engage: float
    off_hand_engage: float
    nod_amp: float
    jaw_gain: float
    curl_amp: float
    sway_amp: float
    breath_hz: float
    yaw: float
    camera_distance: float
    rest_offsets: np.ndarray = field(repr=False)
    bone_offsets: np.ndarray = field(repr=False)
    bone_lengths: np.ndarray = field(repr=False)
    scale_params: np.ndarray = field(repr=False)
    shape_params: np.ndarray = field(repr=False)

    @classmethod
    def from_seed(cls, speaker_id: int, seed: int = 0) -> SpeakerStyle:
        """A deterministic speaker from (speaker_id, seed)."""
        if speaker_id < 0:
            raise ValueError(f"speaker_id must be >= 0, got {speaker_id}")
        rng = np.random.default_rng([int(seed), int(speaker_id), 7919])
        handedness = str(rng.choice(["right", "left", "both"], p=[0.45, 0.3, 0.25]))
        rest = np.zeros(130)
        rest[:24] = rng.normal(0.0, 0.02, 24)  # spine/neck/head posture
        arm = rng.normal(0.0, 0.03, 10)
        rest[R_ARM] = arm + rng.normal(0.0, 0.01, 10)  # near-symmetric arms
        rest[L_ARM] = arm + rng.normal(0.0, 0.01, 10)
        rest[[46, 55]] = rng.normal(0.0, 0.03, 2)  # upleg rz: stance width
        rest[[47, 56]] = rng.uniform(0.0, 0.08, 2)  # knee
        # skeleton: a convex mix of the four sample subjects, then a few % per limb
        rig = load_rig()
        w = rng.dirichlet(np.ones(4))
        offs = np.einsum("s,sjc->jc", w, rig.rest_offsets_per_sample)
        names = rig.joint_names
        for key, sd in (("arm", 0.03), ("leg", 0.03), ("spine", 0.02), ("neck", 0.03), ("clavicle", 0.03)):
            sel = _limb_joints(names, key)
            offs[sel] *= 1.0 + rng.normal(0.0, sd)
        bone = w @ BONE_LENGTH_ANCHORS + rng.normal(0.0, 0.02, 6)
        scale = SCALE_MEAN + rng.normal(0.0, 0.15, 28)
        scale[SCALE_FIXED] = SCALE_MEAN[SCALE_FIXED]
        return cls(
            speaker_id=int(speaker_id), handedness=handedness,
            gesture_amp=float(rng.uniform(0.7, 1.3)), beat_threshold=float(rng.uniform(0.0, 0.3)),
            recovery_frames=int(rng.integers(9, 16)), engage=float(rng.uniform(0.6, 1.0)),
            off_hand_engage=float(rng.uniform(0.1, 0.4)), nod_amp=float(rng.uniform(0.04, 0.10)),
            jaw_gain=float(rng.uniform(0.75, 1.0)), curl_amp=float(rng.uniform(0.2, 0.45)),
            sway_amp=float(rng.uniform(0.6, 1.4)), breath_hz=float(rng.uniform(0.2, 0.3)),
            yaw=float(rng.uniform(-0.25, 0.25)), camera_distance=float(rng.uniform(3.8, 5.5)),
            rest_offsets=rest, bone_offsets=offs, bone_lengths=bone,
            scale_params=scale, shape_params=SHAPE_MEAN + rng.normal(0.0, 0.3, 45),
        )

    def session_constants(self, rng: np.random.Generator | None = None, image_size: tuple[int, int] = (1280, 720)
                          ) -> SessionConstants:
        """Per-sequence constants: the speaker's identity plus a camera placement (drawn from ``rng`` when given)."""
        W, H = image_size
        if rng is None:
            cam = np.array([0.0, 0.9, self.camera_distance])
        else:
            z = self.camera_distance * rng.uniform(0.95, 1.05)
            cam = np.array([rng.uniform(-0.3, 0.3), rng.uniform(0.8, 1.0), z])
        return SessionConstants(pred_cam_t=cam, focal_length=float(np.hypot(W, H)), image_width=W, image_height=H,
                                fps=float(FPS), scale_params=self.scale_params, shape_params=self.shape_params,
                                bone_lengths=self.bone_lengths)


def _limb_joints(names: tuple[str, ...], key: str) -> np.ndarray:
    pick = {
        "arm": ("uparm", "lowarm", "wrist", "pinky", "ring", "middle", "index", "thumb"),
        "leg": ("upleg", "lowleg", "foot", "talocrural", "subtalar", "transversetarsal", "ball"),
        "spine": ("c_spine",), "neck": ("c_neck", "c_head"), "clavicle": ("clavicle",),
    }[key]
    return np.array([i for i, n in enumerate(names) if i > 1 and any(p in n for p in pick)], dtype=np.int64)


# ==== the law ========================================================================================================

def beat_kernel(tau: np.ndarray, recovery: int, stroke: int = STROKE_FRAMES) -> np.ndarray:
    """Beat shape over frames relative to the onset: raised-cosine rise over [-stroke, 0], apex 1 at 0, fall to 0
    over [0, recovery]. C1 at the ends and at the apex (zero velocity at the apex = the stroke's extreme)."""
    tau = np.asarray(tau, np.float64)
    up = 0.5 * (1.0 - np.cos(np.pi * (tau + stroke) / stroke))
    down = 0.5 * (1.0 + np.cos(np.pi * tau / recovery))
    return np.where((tau >= -stroke) & (tau <= 0), up, np.where((tau > 0) & (tau <= recovery), down, 0.0))


def _pulse_train(T: int, frames: np.ndarray, amps: np.ndarray, recovery: int) -> tuple[np.ndarray, np.ndarray]:
    g = np.zeros(T)
    phase = np.zeros(T, np.int8)
    for f, a in zip(frames, amps):
        lo, hi = max(0, f - STROKE_FRAMES), min(T, f + recovery + 1)
        tau = np.arange(lo, hi) - f
        g[lo:hi] += a * beat_kernel(tau, recovery)
        ph = np.where(tau < 0, 1, np.where(tau == 0, 2, 3)).astype(np.int8)
        # a later beat's stroke/apex overrides an earlier beat's recovery
        keep = (phase[lo:hi] == 0) | (ph < 3)
        phase[lo:hi] = np.where(keep, ph, phase[lo:hi])
    return g, phase


def _recent(mask: np.ndarray, n: int) -> np.ndarray:
    """Causal: True where ``mask`` was True at any of the last ``n`` frames (this one included)."""
    idx = np.where(mask, np.arange(len(mask)), -10 ** 9)
    return np.arange(len(mask)) - np.maximum.accumulate(idx) < n


def _one_pole(x: np.ndarray, attack: float, release: float, init: float = 0.0) -> np.ndarray:
    """Causal attack/release smoother; attack/release are per-frame coefficients in (0, 1]."""
    y = np.empty_like(x, dtype=np.float64)
    v = init
    for i, u in enumerate(x):
        v += (attack if u > v else release) * (u - v)
        y[i] = v
    return y


def hand_codes(curl: np.ndarray) -> np.ndarray:
    """Finger curl (T,) radians -> one hand's 54 ``hand_pose_params`` (T, 54); curl 0 = the mean relaxed hand (h = 0).

    Knuckles flex by 0.6 curl, the 2nd/3rd finger joints by 1.0 curl, thumb2/3 by 0.4 curl (positive rz flexes, as
    checked by FK: fingertips approach the wrist).
    """
    rig = load_rig()
    mean = rig.hand_code_mean
    curl = np.asarray(curl, np.float64)[:, None]
    code = np.broadcast_to(mean, (curl.shape[0], 54)).copy()
    i = 0
    for j, dof in enumerate(rig.hand_code_dofs):
        thumb = j >= 12
        if dof == 3:
            # rotate the (non-unit) code columns by delta = R' R^T: Gram-Schmidt is rotation-equivariant, so the
            # decoded rotation is exactly R' (knuckle rz + 0.6 curl) and curl 0 gives the mean code back
            R0 = sixd_to_matrix(mean[i:i + 6])
            e = np.broadcast_to(matrix_to_euler(R0), (curl.shape[0], 3)).copy()
            e[:, 2] += (0.0 if thumb else 0.6) * curl[:, 0]
            delta = euler_to_matrix(e) @ R0.T  # (T, 3, 3)
            code[:, i:i + 3] = delta @ mean[i:i + 3]
            code[:, i + 3:i + 6] = delta @ mean[i + 3:i + 6]
            i += 6
        elif dof == 1:
            a = np.arctan2(mean[i], mean[i + 1]) + (0.4 if thumb else 1.0) * curl[:, 0]
            r = np.hypot(mean[i], mean[i + 1])
            code[:, i], code[:, i + 1] = r * np.sin(a), r * np.cos(a)
            i += 2
        else:  # thumb0: two (sin, cos) pairs, left as they are
            i += 4
    return (code - mean).astype(np.float32)


def apply_law(desc: Descriptors, style: SpeakerStyle, rng: np.random.Generator | None = None
              ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Descriptors + speaker style -> ground-truth motion (T, 320) float32 and per-frame signals.

    ``rng`` drives only the idle phases (sway, breathing, slow head yaw) and a +-15% per-beat amplitude jitter;
    with ``rng=None`` the phases are 0 and the jitter is off (a fully deterministic function of the audio and time).

    Signals (all length T unless noted): envelope, onset, stressed (bool), stressed_frames (N,), beat_frames (M,)
    (stressed onsets the arms beat on), pause (bool), activity (0..1), gesture (beat drive g), gesture_phase (int8:
    0 none, 1 stroke, 2 apex, 3 recovery), nod (rad), jaw (rad), lookahead_frames (scalar).
    """
    T = desc.n_frames
    t = np.arange(T) / FPS
    env = desc.envelope.astype(np.float64)
    sf = desc.stressed_frames
    strength = desc.stress_strength[sf].astype(np.float64)
    jitter = np.ones(len(sf)) if rng is None else 1.0 + 0.15 * rng.uniform(-1.0, 1.0, len(sf))
    phases = np.zeros(6) if rng is None else rng.uniform(0.0, 2 * np.pi, 6)

    # speech activity: causal; holds for ACTIVITY_HOLD_FRAMES after the last sound (hands stay up across short
    # pauses), then decays in ~2 s; rises in ~0.4 s
    speaking = _recent(~desc.silent, ACTIVITY_HOLD_FRAMES).astype(np.float64)
    activity = _one_pole(speaking, attack=1.0 / (ACTIVITY_ATTACK_S * FPS), release=1.0 / (ACTIVITY_RELEASE_S * FPS))

    # beats: stressed onsets strong enough for this speaker
    beat_sel = strength >= style.beat_threshold
    beat_frames = sf[beat_sel]
    amps = style.gesture_amp * (0.6 + 0.4 * strength[beat_sel]) * jitter[beat_sel]
    g_raw, phase = _pulse_train(T, beat_frames, amps, style.recovery_frames)
    g = GESTURE_SAT * np.tanh(g_raw / GESTURE_SAT)
    nod_raw, _ = _pulse_train(T, sf, (0.7 + 0.3 * strength) * jitter, max(6, style.recovery_frames - 3))
    nod = style.nod_amp * nod_raw

    # jaw: envelope above a closed-mouth gate, fast attack / slower release, one frame late
    open_ = np.clip((env - 0.2) / 0.8, 0.0, 1.0)
    open_s = _one_pole(open_, attack=0.8, release=0.45)
    open_s = np.concatenate([np.zeros(JAW_LAG_FRAMES), open_s])[:T]
    jaw = np.clip(JAW_MAX * style.jaw_gain * open_s, 0.0, JAW_MAX)

    body = np.tile(_rest_body() + style.rest_offsets, (T, 1))
    beating = {"right": ("r",), "left": ("l",), "both": ("r", "l")}[style.handedness]
    for side, slots in (("r", R_ARM), ("l", L_ARM)):
        beats = side in beating
        eng = style.engage if beats else style.off_hand_engage
        body[:, slots] += (activity * eng)[:, None] * (ARM_GESTURE - ARM_REST)
        if beats:
            body[:, slots] += g[:, None] * ARM_BEAT
    body[:, [30, 40]] = np.maximum(body[:, [30, 40]], ELBOW_MIN)
    twist_sign = {"right": -1.0, "left": 1.0, "both": 0.0}[style.handedness]
    body[:, 1] += 0.03 * twist_sign * g  # spine_twist0: the torso turns a little with the beating arm
    body[:, 5] += 0.04 * style.engage * activity  # spine_bend0: lean in while talking
    pitch_s = _one_pole(desc.pitch.astype(np.float64) / 12.0, 0.2, 0.2)
    body[:, 23] += nod - 0.04 * pitch_s  # head_bend: nod down on stress, chin up with high pitch
    body[:, 20] += 0.4 * nod  # neck_bend
    # idle: sway, breathing, slow head yaw (never frozen, also in pauses)
    s = style.sway_amp
    body[:, 2] += s * (0.020 * np.sin(2 * np.pi * 0.11 * t + phases[0])
                       + 0.008 * np.sin(2 * np.pi * 0.23 * t + phases[1]))
    body[:, 0] += s * 0.015 * np.sin(2 * np.pi * 0.07 * t + phases[2])
    breath = np.sin(2 * np.pi * style.breath_hz * t + phases[3])
    body[:, 17] += 0.012 * breath
    body[:, 14] += 0.006 * breath
    body[:, 21] += s * 0.03 * np.sin(2 * np.pi * 0.04 * t + phases[4])

    motion = np.zeros((T, layout.DIM), np.float64)
    motion[:, layout.BODY] = body
    motion[:, layout.BODY.start + layout.BODY_ZERO_SLOTS] = 0.0
    motion[:, layout.BODY.start + layout.BODY_BONE_LENGTH_SLOTS] = style.bone_lengths
    curl_beat = style.curl_amp * g / GESTURE_SAT - 0.1 * activity
    relaxed = np.full(T, 0.05)
    for half, side in ((layout.HAND_LEFT, "l"), (layout.HAND_RIGHT, "r")):
        motion[:, half] = hand_codes(curl_beat if side in beating else relaxed - 0.05 * activity)
    motion[:, layout.EXPR.start + EXPR_MOUTH_OPEN] = 0.6 * jaw / JAW_MAX
    bright = desc.brightness.astype(np.float64)
    voiced = desc.voiced.astype(np.float64)
    motion[:, layout.EXPR.start + EXPR_LIP_ROUND] = 0.4 * voiced * np.clip(1.0 - 2.0 * bright, 0.0, 1.0) * open_s
    motion[:, layout.EXPR.start + EXPR_LIP_SPREAD] = 0.4 * voiced * np.clip(2.0 * bright - 1.0, 0.0, 1.0) * open_s
    motion[:, layout.EXPR.start + EXPR_BROW_RAISE] = 0.5 * nod_raw / 1.3 * np.clip(0.5 + pitch_s, 0.0, 1.0)
    motion[:, layout.JAW.start] = jaw
    motion[:, layout.GLOBAL_ROT.start + 1] = style.yaw + s * 0.025 * np.sin(2 * np.pi * 0.05 * t + phases[5])
    motion[:, layout.CONTACT] = 1.0  # feet planted: no root translation, legs fixed -> all four contacts on

    signals = {
        "envelope": desc.envelope.copy(), "onset": desc.onset.copy(), "stressed": desc.stressed.copy(),
        "stressed_frames": sf.copy(), "beat_frames": beat_frames.copy(), "pause": desc.pause.copy(),
        "activity": activity.astype(np.float32), "gesture": g.astype(np.float32), "gesture_phase": phase,
        "nod": nod.astype(np.float32), "jaw": jaw.astype(np.float32),
        "lookahead_frames": np.array(LOOKAHEAD_FRAMES),
    }
    return motion.astype(np.float32), signals


def _rest_body() -> np.ndarray:
    b = np.zeros(130)
    for k, v in SPINE_REST.items():
        b[k] = v
    b[R_ARM] = ARM_REST
    b[L_ARM] = ARM_REST
    b[[47, 56]] = KNEE_REST
    return b
