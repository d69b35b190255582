"""Evaluation metrics: generated motion vs ground truth (the talker law's motion on the same audio), pure numpy.

Every function takes plain arrays; where a metric pools several held-out sequences it accepts a list of arrays
(``Seqs``) and pools numerators and denominators over them (never averaging ratios). Frames are 30 fps rows of the
320-dim layout (``models.layout``); joint quantities come from the asset-free rig (``models.rig``, cm, native axes).

Groups:
    motion statistics   mean |delta| per frame, high-frequency energy (> 4 Hz), their gen/gt ratios
    rotations           global-rotation spread and geodesic error, per-frame joint angular speed, seam statistics
    law alignment       lag-aligned normalised MSE, jaw <-> envelope correlation
    rhythm              beat consistency (EMAGE BC), generic onset detection, gesture <-> speech energy correlation
    diversity / realism L1 diversity (EMAGE L1div), Frechet distance of encoder features (FGD)
    output hygiene      per-frame variation of the per-sequence constants (must be exactly 0)
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from models import layout
from models.rates import MOTION_FPS
from models.rotations import euler_to_matrix, geodesic_angle

Seqs = np.ndarray | Sequence[np.ndarray]

HF_CUTOFF_HZ = 4.0
#: 14 upper-body joints (EMAGE uses SMPL-X's 13: spine1-3, neck, head, collars, shoulders, elbows, wrists)
UPPER_BODY_NAMES = ("c_spine0", "c_spine1", "c_spine2", "c_spine3", "c_neck", "c_head",
                    "r_clavicle", "r_uparm", "r_lowarm", "r_wrist", "l_clavicle", "l_uparm", "l_lowarm", "l_wrist")
ROOT_NAME = "root"
FINGER_KEYS = ("pinky", "ring", "middle", "index", "thumb")


def _seqs(x: Seqs) -> list[np.ndarray]:
    """One array (T, ...) or a list of them -> list of float64 arrays."""
    if isinstance(x, np.ndarray):
        return [np.asarray(x, np.float64)]
    return [np.asarray(a, np.float64) for a in x]


def _pairs(gen: Seqs, gt: Seqs) -> list[tuple[np.ndarray, np.ndarray]]:
    g, r = _seqs(gen), _seqs(gt)
    if len(g) != len(r):
        raise ValueError(f"{len(g)} generated vs {len(r)} ground-truth sequences")
    out = []
    for a, b in zip(g, r):
        n = min(len(a), len(b))
        out.append((a[:n], b[:n]))
    return out


def _ratio(num: float, den: float) -> float:
    if den <= 0:
        return float("inf") if num > 0 else 1.0
    return float(num / den)


# ==== joint sets and FK =============================================================================================

@dataclass(frozen=True)
class JointSets:
    """Indices into the rig's 127 joints used by the metrics."""

    root: int
    upper_body: np.ndarray  # (14,)
    fingers_left: np.ndarray
    fingers_right: np.ndarray
    wrist_left: int
    wrist_right: int

    @property
    def fingers(self) -> np.ndarray:
        return np.concatenate([self.fingers_left, self.fingers_right])

    @property
    def seam_joints(self) -> np.ndarray:
        """Upper body + root: the joints whose angular speed the seam statistics average."""
        return np.concatenate([[self.root], self.upper_body])


@lru_cache(maxsize=1)
def joint_sets() -> JointSets:
    """The joint index sets, by rig joint name."""
    from models.rig import load_rig

    names = load_rig().joint_names

    def fingers(side: str) -> np.ndarray:
        return np.array([i for i, n in enumerate(names)
                         if n.startswith(side + "_") and any(k in n for k in FINGER_KEYS)])

    return JointSets(root=names.index(ROOT_NAME), upper_body=np.array([names.index(n) for n in UPPER_BODY_NAMES]),
                     fingers_left=fingers("l"), fingers_right=fingers("r"),
                     wrist_left=names.index("l_wrist"), wrist_right=names.index("r_wrist"))


def forward_kinematics(motion: np.ndarray, constants: layout.SessionConstants | None = None
                       ) -> tuple[np.ndarray, np.ndarray]:
    """(T, 320) motion -> global joint rotations (T, 127, 3, 3) and positions (T, 127, 3) cm (generic skeleton).

    The root translation is zero by construction (the layout has none), as EMAGE's L1div requires.
    """
    from models.rig import forward_kinematics as fk

    const = constants or layout.SessionConstants()
    return fk(layout.assemble_model_params(np.asarray(motion, np.float32), const))


def fingers_in_wrist_frame(R: np.ndarray, X: np.ndarray) -> np.ndarray:
    """Finger joint positions expressed in their wrist's frame (T, F, 3) cm: finger articulation without arm motion."""
    js = joint_sets()
    out = []
    for w, f in ((js.wrist_left, js.fingers_left), (js.wrist_right, js.fingers_right)):
        rel = X[:, f] - X[:, w:w + 1]
        out.append(np.einsum("tba,tjb->tja", R[:, w], rel))  # R_w^T (x - x_w)
    return np.concatenate(out, axis=1)


def joint_speed(X: np.ndarray) -> np.ndarray:
    """Per-frame speed of each joint (T, J) cm/frame: |X[t] - X[t-1]|, frame 0 copies frame 1 (T >= 2)."""
    X = np.asarray(X, np.float64)
    v = np.linalg.norm(np.diff(X, axis=0), axis=-1)
    if len(v) == 0:
        return np.zeros((len(X),) + X.shape[1:-1])
    return np.concatenate([v[:1], v], axis=0)


# ==== motion statistics =============================================================================================

def mean_abs_velocity(x: Seqs) -> float:
    """Mean |x[t] - x[t-1]| over frames and channels, pooled over sequences (units of x per frame)."""
    tot, n = 0.0, 0
    for a in _seqs(x):
        d = np.abs(np.diff(a.reshape(len(a), -1), axis=0))
        tot += d.sum()
        n += d.size
    return float(tot / n) if n else 0.0


def velocity_ratio(gen: Seqs, gt: Seqs) -> float:
    """Frame-velocity ratio: mean |delta gen| / mean |delta gt| over the given channels (1 = same liveliness;
    > 1 jitter or exaggeration, < 1 stiff). Select channels before calling, e.g. ``m[:, layout.VARYING['body']]``."""
    p = _pairs(gen, gt)
    return _ratio(mean_abs_velocity([a for a, _ in p]), mean_abs_velocity([b for _, b in p]))


def mean_joint_speed(X: Seqs) -> float:
    """Mean Euclidean joint speed |X[t] - X[t-1]| (cm/frame) over frames and joints, pooled; X: (T, J, 3)."""
    tot, n = 0.0, 0
    for a in _seqs(X):
        v = np.linalg.norm(np.diff(a, axis=0), axis=-1)
        tot += float(v.sum())
        n += v.size
    return float(tot / n) if n else 0.0


def joint_speed_ratio(gen_X: Seqs, gt_X: Seqs) -> float:
    """Joint-space velocity ratio: mean joint speed gen / gt (X: (T, J, 3) positions from FK)."""
    p = _pairs(gen_X, gt_X)
    return _ratio(mean_joint_speed([a for a, _ in p]), mean_joint_speed([b for _, b in p]))


def hf_energy(x: Seqs, fps: float = MOTION_FPS, cutoff_hz: float = HF_CUTOFF_HZ) -> float:
    """Mean per-frame signal power above ``cutoff_hz`` summed over channels, pooled over sequences.

    Per channel: remove the linear trend, apply a Hann window, take the periodogram and sum the bins above the
    cutoff (Parseval-normalised by the window energy, so the result is a power per frame).
    """
    tot, n = 0.0, 0
    for a in _seqs(x):
        a = a.reshape(len(a), -1)
        T = len(a)
        if T < 8:
            continue
        t = np.arange(T) - (T - 1) / 2
        a = a - a.mean(0) - np.outer(t, (t @ (a - a.mean(0))) / (t @ t))  # linear detrend
        w = np.hanning(T)
        spec = np.abs(np.fft.rfft(a * w[:, None], axis=0)) ** 2
        f = np.fft.rfftfreq(T, 1.0 / fps)
        tot += spec[f > cutoff_hz].sum() * 2.0 / (w @ w)
        n += T
    return float(tot / n) if n else 0.0


def hf_ratio(gen: Seqs, gt: Seqs, fps: float = MOTION_FPS, cutoff_hz: float = HF_CUTOFF_HZ) -> float:
    """High-frequency energy ratio gen/gt (energy above ``cutoff_hz``; > 1 = jitter the ground truth lacks)."""
    p = _pairs(gen, gt)
    return _ratio(hf_energy([a for a, _ in p], fps, cutoff_hz), hf_energy([b for _, b in p], fps, cutoff_hz))


def power_spectrum(x: np.ndarray, fps: float = MOTION_FPS) -> tuple[np.ndarray, np.ndarray]:
    """(frequencies (F,), mean power over channels (F,)) of a (T, C) signal's first differences (for plots)."""
    d = np.diff(np.asarray(x, np.float64).reshape(len(x), -1), axis=0)
    w = np.hanning(len(d))
    spec = np.abs(np.fft.rfft((d - d.mean(0)) * w[:, None], axis=0)) ** 2 / max(w @ w, 1e-12)
    return np.fft.rfftfreq(len(d), 1.0 / fps), spec.mean(1)


# ==== rotations =====================================================================================================

def global_rotations(motion: np.ndarray) -> np.ndarray:
    """(T, 320) -> (T, 3, 3) global rotation matrices from the Euler channels."""
    return euler_to_matrix(np.asarray(motion, np.float64)[:, layout.GLOBAL_ROT])


def mean_rotation(R: np.ndarray) -> np.ndarray:
    """Chordal L2 mean of rotations (N, 3, 3): the SO(3) projection of their arithmetic mean."""
    U, _, Vt = np.linalg.svd(np.asarray(R, np.float64).mean(0))
    M = U @ Vt
    if np.linalg.det(M) < 0:
        U[:, -1] *= -1
        M = U @ Vt
    return M


def rotation_std(R: Seqs) -> float:
    """Spread of rotations (rad): RMS geodesic angle to each sequence's mean rotation, pooled over sequences."""
    tot, n = 0.0, 0
    for r in _seqs(R):
        ang = geodesic_angle(r, mean_rotation(r)[None])
        tot += float((ang ** 2).sum())
        n += len(ang)
    return float(np.sqrt(tot / n)) if n else 0.0


def rotation_std_ratio(gen_R: Seqs, gt_R: Seqs) -> float:
    """Global rotation std ratio gen/gt (the seed port measured 3.2x: a swaying, jittering root)."""
    p = _pairs(gen_R, gt_R)
    return _ratio(rotation_std([a for a, _ in p]), rotation_std([b for _, b in p]))


def mean_geodesic_error(gen_R: Seqs, gt_R: Seqs) -> float:
    """Mean geodesic angle (rad) between generated and ground-truth rotations, frame by frame."""
    tot, n = 0.0, 0
    for a, b in _pairs(gen_R, gt_R):
        ang = geodesic_angle(a, b)
        tot += float(ang.sum())
        n += ang.size
    return float(tot / n) if n else 0.0


def angular_speed(R: np.ndarray, joints: np.ndarray | None = None) -> np.ndarray:
    """Per-frame joint angular speed (T,) rad/frame: geodesic angle between consecutive frames' global joint
    rotations, averaged over ``joints`` (all when None). Entry t measures the step (t-1 -> t); entry 0 is 0."""
    R = np.asarray(R, np.float64)
    if joints is not None:
        R = R[:, joints]
    if R.ndim == 3:
        R = R[:, None]
    out = np.zeros(len(R))
    if len(R) > 1:
        out[1:] = geodesic_angle(R[:-1], R[1:]).mean(-1)
    return out


def seam_stats(speed: Seqs, chunk_frames: int, quantile: float = 0.99, rel_tol: float = 1e-9) -> dict[str, float]:
    """Chunk-boundary statistics of a per-frame speed (T,) from a stream emitted ``chunk_frames`` at a time.

    Frame t >= 1 starts a chunk when ``t % chunk_frames == 0``: its speed measures the step across the seam.
    Pass when the boundary mean <= 1.1 x the interior mean and the boundary p99 <= the interior p99 (``rel_tol``
    only absorbs float rounding). With ``chunk_frames`` = 1 every frame is a boundary: nothing to compare.
    """
    N = int(chunk_frames)
    b_vals, i_vals = [], []
    for s in _seqs(speed):
        s = s.reshape(-1)
        t = np.arange(len(s))
        b_vals.append(s[(t >= 1) & (t % N == 0)])
        i_vals.append(s[(t >= 1) & (t % N != 0)])
    b, i = np.concatenate(b_vals), np.concatenate(i_vals)
    if N < 2 or len(b) == 0 or len(i) == 0:
        return {"chunk_frames": N, "boundary_mean": float("nan"), "interior_mean": float("nan"),
                "boundary_p99": float("nan"), "interior_p99": float("nan"), "mean_ratio": float("nan"),
                "pass": False, "n_boundary": int(len(b)), "n_interior": int(len(i))}
    bm, im = float(b.mean()), float(i.mean())
    bq, iq = float(np.quantile(b, quantile)), float(np.quantile(i, quantile))
    ok = bm <= 1.1 * im * (1 + rel_tol) + 1e-15 and bq <= iq * (1 + rel_tol) + 1e-15
    return {"chunk_frames": N, "boundary_mean": bm, "interior_mean": im, "boundary_p99": bq, "interior_p99": iq,
            "mean_ratio": _ratio(bm, im), "pass": bool(ok), "n_boundary": int(len(b)), "n_interior": int(len(i))}


# ==== law alignment =================================================================================================

def lagged_nmse(gen: Seqs, gt: Seqs, max_lag: int = 15) -> tuple[int, float, np.ndarray]:
    """Lag-aligned normalised MSE against the ground truth.

    For each lag d in [-max_lag, max_lag] the error compares ``gen[t + d]`` with ``gt[t]`` over the overlap (so
    d > 0 means the generated motion is LATE by d frames): NMSE(d) = sum (gen[t+d] - gt[t])^2 / sum (gt[t] -
    mean gt)^2, pooled over channels and sequences (1 = no better than predicting the mean).

    Returns:
        (best lag, NMSE at the best lag, NMSE curve (2 * max_lag + 1,) for lags -max_lag..max_lag).
    """
    pairs = [(a.reshape(len(a), -1), b.reshape(len(b), -1)) for a, b in _pairs(gen, gt)]
    lags = np.arange(-max_lag, max_lag + 1)
    curve = np.full(len(lags), np.inf)
    for k, d in enumerate(lags):
        sse = den = 0.0
        for a, b in pairs:
            T = len(b)
            lo, hi = max(0, -d), min(T, T - d)
            if hi - lo < 2:
                continue
            g, r = a[lo + d:hi + d], b[lo:hi]
            sse += float(((g - r) ** 2).sum())
            den += float(((r - r.mean(0)) ** 2).sum())
        if den > 0:
            curve[k] = sse / den
    best = int(np.argmin(curve))
    return int(lags[best]), float(curve[best]), curve


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two (T,) signals; 0 when either is constant."""
    a = np.asarray(a, np.float64).reshape(-1)
    b = np.asarray(b, np.float64).reshape(-1)
    n = min(len(a), len(b))
    a, b = a[:n] - a[:n].mean(), b[:n] - b[:n].mean()
    den = np.sqrt((a @ a) * (b @ b))
    return float(a @ b / den) if den > 1e-12 else 0.0


def pooled_pearson(a: Seqs, b: Seqs) -> float:
    """Pearson correlation over the concatenation of per-sequence centred signals (each sequence its own mean)."""
    xs, ys = [], []
    for x, y in _pairs(a, b):
        xs.append(x.reshape(-1) - x.mean())
        ys.append(y.reshape(-1) - y.mean())
    if not xs:
        return 0.0
    return pearson(np.concatenate(xs), np.concatenate(ys))


def jaw_envelope_corr(motion: Seqs, envelope: Seqs) -> float:
    """Correlation of the jaw opening channel (``layout.JAW_OPEN``) with the audio envelope (lag 0)."""
    return pooled_pearson([m[:, layout.JAW_OPEN] for m in _seqs(motion)], envelope)


# ==== rhythm ========================================================================================================

def _local_minima(x: np.ndarray, order: int) -> np.ndarray:
    """Indices i where x[i] < x[j] for all j != i within +-order (scipy's argrelextrema(np.less, mode='clip'):
    neighbours beyond the ends are the end values, so the end frames are never minima)."""
    T = len(x)
    if T == 0:
        return np.zeros(0, np.int64)
    pad = np.pad(x, order, mode="edge")
    ok = np.ones(T, bool)
    for s in range(1, order + 1):
        ok &= x < pad[order - s:order - s + T]
        ok &= x < pad[order + s:order + s + T]
    return np.flatnonzero(ok)


def motion_beats(X: np.ndarray, order: int = 7, threshold: float = 0.3) -> list[np.ndarray]:
    """EMAGE motion beats per joint: local minima (+-``order`` frames) of the joint's speed (central difference,
    normalised by its mean speed) whose normalised speed is above ``threshold`` (a pause in motion, not a stand
    still). X: (T, J, 3). Returns J arrays of frame indices."""
    X = np.asarray(X, np.float64)
    v = np.zeros(X.shape[:2])
    if len(X) >= 3:
        v[1:-1] = np.linalg.norm(X[2:] - X[:-2], axis=-1) / 2.0
        v[0], v[-1] = v[1], v[-2]
    out = []
    for j in range(X.shape[1]):
        m = v[:, j].mean()
        vn = v[:, j] / m if m > 1e-12 else np.zeros(len(v))
        mins = _local_minima(vn, order)
        out.append(mins[vn[mins] > threshold])
    return out


def beat_consistency(onset_times: np.ndarray, X: np.ndarray, sigma: float = 0.3, fps: float = MOTION_FPS,
                     order: int = 7, threshold: float = 0.3, trim_frames: int = 60) -> tuple[float, int]:
    """Beat consistency (EMAGE BC, 'beat align'): for each audio onset, exp(-d^2 / 2 sigma^2) with d the distance
    (s) to the nearest motion beat of a joint; mean over onsets, then over joints (a joint without beats scores 0).

    With EMAGE's ``threshold`` = 0.3 a minimum where the joint comes to a full stop is not a beat; ``threshold`` = 0
    keeps every speed minimum (the talker law's beat apexes are full stops, see docs/EVALUATION.md).

    Args:
        onset_times: audio onset times (s). Motion frame k is at time (k + 0.5) / fps (centre of its audio span).
        X: (T, J, 3) joint positions (cm), e.g. the 14 upper-body joints.
        sigma: Gaussian width (s): 0.3 (EMAGE) or 0.1 (stricter).
        trim_frames: onsets and beats in the first/last this many frames are ignored (EMAGE: 60).

    Returns:
        (BC in [0, 1], number of onsets used). BC is nan when no onset remains.
    """
    T = len(X)
    t0, t1 = trim_frames / fps, (T - trim_frames) / fps
    on = np.asarray(onset_times, np.float64)
    on = on[(on >= t0) & (on < t1)]
    if len(on) == 0:
        return float("nan"), 0
    vals = []
    for beats in motion_beats(X, order, threshold):
        beats = beats[(beats >= trim_frames) & (beats < T - trim_frames)]
        if len(beats) == 0:
            vals.append(0.0)  # as EMAGE: a joint without beats scores 0
            continue
        bt = (beats + 0.5) / fps
        d = np.abs(on[:, None] - bt[None]).min(1)
        vals.append(np.exp(-d ** 2 / (2 * sigma ** 2)).mean())
    return float(np.mean(vals)), int(len(on))


def pooled_beat_consistency(onsets: Sequence[np.ndarray], Xs: Sequence[np.ndarray], sigma: float = 0.3,
                            fps: float = MOTION_FPS, **kw) -> float:
    """BC over several sequences, weighted by their onset counts (EMAGE weights sequences by length)."""
    tot = n = 0.0
    for on, X in zip(onsets, Xs):
        bc, k = beat_consistency(on, X, sigma, fps, **kw)
        if k and np.isfinite(bc):
            tot += bc * k
            n += k
    return float(tot / n) if n else float("nan")


def frames_to_times(frames: np.ndarray, fps: float = MOTION_FPS) -> np.ndarray:
    """Frame indices -> times (s) of the frame centres, (k + 0.5) / fps."""
    return (np.asarray(frames, np.float64) + 0.5) / fps


def detect_onsets(wave: np.ndarray, sr: int, hop: int | None = None, win: int = 1024, wait_s: float = 0.1,
                  delta: float = 0.07) -> np.ndarray:
    """Generic audio onset times (s) from a waveform, for any speech (not only the law's stressed onsets).

    Spectral flux of the log-compressed magnitude spectrum (Hann window ``win``, hop 10 ms), normalised to
    [0, 1], then librosa-style peak picking: a local maximum over the previous 30 ms, above the mean of +-100 ms
    plus ``delta``, at least ``wait_s`` after the previous onset. Frame times are window centres.
    """
    x = np.asarray(wave, np.float64).reshape(-1)
    hop = hop or max(1, int(round(0.01 * sr)))
    if len(x) < win:
        return np.zeros(0)
    n = 1 + (len(x) - win) // hop
    idx = np.arange(n)[:, None] * hop + np.arange(win)
    w = np.hanning(win)
    S = np.empty((n, win // 2 + 1))
    for s in range(0, n, 2048):
        S[s:s + 2048] = np.log1p(100.0 * np.abs(np.fft.rfft(x[idx[s:s + 2048]] * w, axis=1)))
    flux = np.zeros(n)
    flux[1:] = np.maximum(S[1:] - S[:-1], 0.0).mean(1)
    rng_ = flux.max() - flux.min()
    if rng_ <= 1e-12:
        return np.zeros(0)
    o = (flux - flux.min()) / rng_
    fr = sr / hop
    pre_max, pre_avg, post_avg, wait = max(1, int(0.03 * fr)), int(0.1 * fr), int(0.1 * fr), int(wait_s * fr)
    out, last = [], -10 ** 9
    for i in range(1, n):
        if o[i] < o[max(0, i - pre_max):i + 2].max():
            continue
        if o[i] < o[max(0, i - pre_avg):i + post_avg + 1].mean() + delta:
            continue
        if i - last < wait:
            continue
        out.append(i)
        last = i
    return (np.asarray(out, np.float64) * hop + win / 2) / sr


def moving_average(x: np.ndarray, width: int) -> np.ndarray:
    """Centred box filter of ``width`` frames (edges use the frames available)."""
    x = np.asarray(x, np.float64).reshape(-1)
    width = max(1, int(width))
    c = np.concatenate([[0.0], np.cumsum(x)])
    i = np.arange(len(x))
    lo = np.maximum(0, i - width // 2)
    hi = np.minimum(len(x), i - width // 2 + width)
    return (c[hi] - c[lo]) / (hi - lo)


def energy_correlation(speed: Seqs, loudness: Seqs, fps: float = MOTION_FPS, window_s: float = 1.0) -> float:
    """Gesture-energy <-> speech-energy correlation: Pearson correlation of the ~1 s moving averages of a motion
    speed (T,) (e.g. mean upper-body joint speed) and a loudness (T,) (e.g. the law's envelope), pooled."""
    w = int(round(window_s * fps))
    a = [moving_average(s, w) for s in _seqs(speed)]
    b = [moving_average(s, w) for s in _seqs(loudness)]
    return pooled_pearson(a, b)


# ==== pauses ========================================================================================================

def pause_motion(gen_speed: Seqs, gt_speed: Seqs, pause: Seqs, min_ratio: float = 0.2) -> dict[str, float]:
    """Motion in silent stretches (the law's pause mask): mean speed of gen vs gt over pause frames.

    "Never frozen" passes when gen's pause speed > ``min_ratio`` x gt's pause speed and lies within gt's range
    (not above the fastest ground-truth frame of the same sequences).
    """
    g_sum = r_sum = 0.0
    n = 0
    r_max = 0.0
    for (g, r), p in zip(_pairs(gen_speed, gt_speed), _seqs(pause)):
        m = np.asarray(p, bool).reshape(-1)[:len(g)]
        g_sum += float(g[m].sum())
        r_sum += float(r[m].sum())
        n += int(m.sum())
        r_max = max(r_max, float(r.max()) if len(r) else 0.0)
    if n == 0:
        return {"frames": 0, "gen": float("nan"), "gt": float("nan"), "ratio": float("nan"), "gt_max": r_max,
                "never_frozen": False}
    g_mean, r_mean = g_sum / n, r_sum / n
    ok = g_mean > min_ratio * r_mean and g_mean <= r_max
    return {"frames": n, "gen": g_mean, "gt": r_mean, "ratio": _ratio(g_mean, r_mean), "gt_max": r_max,
            "never_frozen": bool(ok)}


# ==== diversity / realism ===========================================================================================

def l1_diversity(X: Seqs) -> float:
    """EMAGE L1div: sum over frames and joint coordinates of |x - the sequence's mean x|, divided by the total
    number of frames (joint positions with zero root translation, cm), pooled over sequences."""
    tot, n = 0.0, 0
    for a in _seqs(X):
        a = a.reshape(len(a), -1)
        tot += float(np.abs(a - a.mean(0)).sum())
        n += len(a)
    return float(tot / n) if n else 0.0


def _sqrtm_psd(S: np.ndarray) -> np.ndarray:
    w, V = np.linalg.eigh((S + S.T) / 2)
    return (V * np.sqrt(np.clip(w, 0.0, None))) @ V.T


def frechet_distance(feat_a: np.ndarray, feat_b: np.ndarray, eps: float = 1e-6) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (N, D) and (M, D) (FGD with gesture-encoder
    features): |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2). ``eps`` is added to the diagonals
    (few windows make the covariances singular)."""
    a = np.asarray(feat_a, np.float64)
    b = np.asarray(feat_b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or len(a) < 2 or len(b) < 2:
        raise ValueError(f"frechet_distance needs two (N>=2, D) feature sets, got {a.shape} and {b.shape}")
    I = np.eye(a.shape[1]) * eps
    mu_a, mu_b = a.mean(0), b.mean(0)
    Sa, Sb = np.cov(a, rowvar=False) + I, np.cov(b, rowvar=False) + I
    ra = _sqrtm_psd(Sa)
    cross = _sqrtm_psd(ra @ Sb @ ra)
    d = float(((mu_a - mu_b) ** 2).sum() + np.trace(Sa) + np.trace(Sb) - 2 * np.trace(cross))
    return max(d, 0.0)


# ==== output hygiene ================================================================================================

def constant_variation(d: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Max |x[t] - x[0]| over frames of the per-sequence constants in a SAM 3D Body-style output dict
    (``layout.to_sam3d`` / ``train.infer`` npz): camera translation, focal length, scale/shape, the 6 bone-length
    slots of body_pose_params and the 68 skeleton scales of mhr_model_params. All must be exactly 0."""
    def var(a: np.ndarray) -> float:
        a = np.asarray(a, np.float64)
        if a.ndim == 0 or len(a) < 2:
            return 0.0
        return float(np.abs(a - a[:1]).max())

    out = {}
    for key in ("pred_cam_t", "focal_length", "scale_params", "shape_params"):
        if key in d:
            out[key] = var(d[key])
    if "body_pose_params" in d:
        out["bone_lengths"] = var(np.asarray(d["body_pose_params"])[:, layout.BODY_BONE_LENGTH_SLOTS])
    if "mhr_model_params" in d:
        out["skeleton_scales"] = var(np.asarray(d["mhr_model_params"])[:, 136:204])
    return out
