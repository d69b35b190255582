"""Signal processing on (T, 320) MHR motion for ingestion: fill/unwrap/resample/smooth, high-frequency energy, and
foot contact from joint speed (see docs/DATA.md). Pure numpy; inputs are never modified."""
from __future__ import annotations

import math

import numpy as np

from models import rates
from models.layout import (
    BODY,
    CONTACT_JOINTS,
    FACE,
    GLOBAL_ROT,
    HAND,
    JAW,
    VARYING,
    SessionConstants,
    assemble_model_params,
)
from models.rig import F_CAM, forward_kinematics, load_rig
from models.rotations import (
    euler_to_matrix,
    matrix_to_6d,
    matrix_to_euler,
    matrix_to_quat,
    quat_to_matrix,
    sixd_to_matrix,
    slerp,
    unwrap_euler,
)

_GLOBAL_IDX = np.arange(GLOBAL_ROT.start, GLOBAL_ROT.stop)
#: body channels that are angles (radians): the varying body slots; bone lengths (124-129) and zero slots are not
BODY_ANGLE_CHANNELS = BODY.start + VARYING["body"]
JAW_CHANNELS = np.arange(JAW.start, JAW.stop)


# ---- signal processing on (T, 320) motion -------------------------------------------------------------------------

def fill_invalid(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(T, ...) -> a copy with invalid rows linearly interpolated from the valid ones (held at the ends)."""
    x = np.array(x, dtype=np.float64, copy=True)
    v = np.asarray(valid, bool)
    if v.all() or not v.any():
        return x
    idx = np.flatnonzero(v)
    T = len(v)
    t = np.arange(T)
    j = np.clip(np.searchsorted(idx, t), 1, len(idx) - 1) if len(idx) > 1 else np.zeros(T, int)
    if len(idx) == 1:
        x[:] = x[idx[0]]
        return x
    i0, i1 = idx[j - 1], idx[j]
    w = np.clip((t - i0) / np.maximum(i1 - i0, 1), 0.0, 1.0)
    w = w.reshape((T,) + (1,) * (x.ndim - 1))
    filled = x[i0] * (1 - w) + x[i1] * w
    x[~v] = filled[~v]
    return x


def unwrap_motion(motion: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, dict[str, int]]:
    """Continuous angles over time: global_rot by ``unwrap_euler`` (2*pi jumps and gimbal flips near y = +-pi/2),
    body angles and jaw by ``np.unwrap`` (2*pi jumps). Done on the valid frames; invalid ones are re-interpolated.

    Returns (a float64 copy, counts of corrected frames per group). Rotations are unchanged (same matrices).
    """
    m = np.array(motion, dtype=np.float64, copy=True)
    v = np.asarray(valid, bool)
    idx = np.flatnonzero(v)
    counts = {"global_rot": 0, "body": 0, "jaw": 0}
    if len(idx) < 2:
        return m, counts
    g = m[idx][:, _GLOBAL_IDX]
    gu = unwrap_euler(g)
    counts["global_rot"] = _n_changes(gu - g)
    m[np.ix_(idx, _GLOBAL_IDX)] = gu
    for name, ch in (("body", BODY_ANGLE_CHANNELS), ("jaw", JAW_CHANNELS)):
        a = m[idx][:, ch]
        au = np.unwrap(a, axis=0)
        counts[name] = _n_changes(au - a)
        m[np.ix_(idx, ch)] = au
    return fill_invalid(m, v), counts


def _n_changes(delta: np.ndarray) -> int:
    """Frames where the applied correction changes (= jumps that were removed)."""
    if len(delta) < 2:
        return 0
    return int((np.abs(np.diff(delta, axis=0)) > 1e-6).any(-1).sum())


def _resample_index(T: int, src_fps: float, dst_fps: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    K = max(1, int(round(T * dst_fps / src_fps)))
    s = np.arange(K) * (src_fps / dst_fps)
    i0 = np.minimum(np.floor(s).astype(np.int64), T - 1)
    i1 = np.minimum(i0 + 1, T - 1)
    w = np.clip(s - i0, 0.0, 1.0)
    w[i0 == i1] = 0.0
    return i0, i1, w


def resample_linear(x: np.ndarray, src_fps: float, dst_fps: float = rates.MOTION_FPS) -> np.ndarray:
    """(T, ...) sampled at src_fps -> (round(T * dst / src), ...) by linear interpolation (held past the end)."""
    x = np.asarray(x, np.float64)
    i0, i1, w = _resample_index(len(x), src_fps, dst_fps)
    w = w.reshape((-1,) + (1,) * (x.ndim - 1))
    return x[i0] * (1 - w) + x[i1] * w


def resample_motion(motion: np.ndarray, valid: np.ndarray, src_fps: float, dst_fps: float = rates.MOTION_FPS
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Unwrapped (T, 320) motion at src_fps -> (T', 320) at dst_fps, T' = round(T * dst / src).

    global_rot: slerp between the neighbouring source rotations (then unwrapped again); every other channel is
    interpolated linearly (body/jaw angles are unwrapped first, so this is the short way; hand codes and expression
    weights are continuous codes). A new frame is valid when both source frames it uses are valid.
    """
    m = np.asarray(motion, np.float64)
    v = np.asarray(valid, bool)
    i0, i1, w = _resample_index(len(m), src_fps, dst_fps)
    out = resample_linear(m, src_fps, dst_fps)
    q = matrix_to_quat(euler_to_matrix(m[:, _GLOBAL_IDX]))
    e = matrix_to_euler(quat_to_matrix(slerp(q[i0], q[i1], w)))
    out[:, _GLOBAL_IDX] = unwrap_euler(np.vstack([m[:1, _GLOBAL_IDX], e]))[1:]
    vout = v[i0] & (v[i1] | (w == 0))
    return out, vout


def gaussian_smooth(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian filter along axis 0 (edges held), sigma in frames. sigma <= 0 returns a copy."""
    x = np.array(x, dtype=np.float64, copy=True)
    if sigma <= 0 or len(x) < 2:
        return x
    r = max(1, int(math.ceil(4 * sigma)))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    pad = np.concatenate([np.repeat(x[:1], r, 0), x, np.repeat(x[-1:], r, 0)])
    out = np.zeros_like(x)
    T = len(x)
    for j, wj in enumerate(k):
        out += wj * pad[j:j + T]
    return out


def smooth_motion(motion: np.ndarray, sigma: float) -> np.ndarray:
    """Temporal smoothing of per-frame estimation jitter (unwrapped motion in, copy out).

    global_rot is smoothed as rotation matrices (re-orthonormalised, back to continuous Euler); other varying
    channels as values. Constant channels stay constant; contact is recomputed afterwards by the caller.
    """
    m = np.array(motion, dtype=np.float64, copy=True)
    if sigma <= 0:
        return m
    ch = np.concatenate([BODY_ANGLE_CHANNELS, np.arange(HAND.start, HAND.stop), np.arange(FACE.start, FACE.stop)])
    m[:, ch] = gaussian_smooth(m[:, ch], sigma)
    R = euler_to_matrix(m[:, _GLOBAL_IDX])
    Rs = gaussian_smooth(R.reshape(len(m), 9), sigma).reshape(-1, 3, 3)
    e = matrix_to_euler(sixd_to_matrix(matrix_to_6d(Rs)))
    m[:, _GLOBAL_IDX] = unwrap_euler(np.vstack([m[:1, _GLOBAL_IDX], e]))[1:]
    return m


def high_freq_energy(motion: np.ndarray, valid: np.ndarray) -> dict[str, float]:
    """Mean squared second difference (frame-to-frame acceleration) per part over valid triples of frames."""
    m = np.asarray(motion, np.float64)
    v = np.asarray(valid, bool)
    out: dict[str, float] = {}
    if len(m) < 3:
        return {k: 0.0 for k in ("body", "hand", "face", "global_rot")}
    ok = v[2:] & v[1:-1] & v[:-2]
    acc = m[2:] - 2 * m[1:-1] + m[:-2]
    groups = {"body": BODY_ANGLE_CHANNELS, "hand": VARYING["hand"], "face": VARYING["face"], "global_rot": _GLOBAL_IDX}
    for k, ch in groups.items():
        out[k] = float((acc[ok][:, ch] ** 2).mean()) if ok.any() else 0.0
    return out


# ---- foot contact -------------------------------------------------------------------------------------------------

def contact_joint_ids() -> np.ndarray:
    """Rig indices of CONTACT_JOINTS (l_foot, l_ball, r_foot, r_ball)."""
    rig = load_rig()
    return np.array([rig.joint(n) for n in CONTACT_JOINTS])


def camera_joints_to_native(pred_joint_coords: np.ndarray) -> np.ndarray:
    """SAM 3D Body ``pred_joint_coords`` (..., 3) metres, camera axes -> native MHR frame, cm."""
    return (np.asarray(pred_joint_coords, np.float64) * 100.0) @ F_CAM.T


def foot_joints_fk(motion: np.ndarray, constants: SessionConstants, chunk: int = 2048) -> np.ndarray:
    """(T, 320) -> (T, 4, 3) contact joint positions (native cm) by FK of the assembled model parameters."""
    ids = contact_joint_ids()
    out = np.empty((len(motion), len(ids), 3))
    for s in range(0, len(motion), chunk):
        mp = assemble_model_params(np.asarray(motion[s:s + chunk]), constants)
        _, X = forward_kinematics(mp)
        out[s:s + chunk] = X[:, ids]
    return out


def foot_contact(joints: np.ndarray, threshold_cm: float = 1.0) -> np.ndarray:
    """(T, 4, 3) joint positions in cm at 30 fps -> (T, 4) float32 contact: speed < threshold (cm/frame).

    Speed of frame t is |x_t - x_{t-1}|; frame 0 takes frame 1's speed.
    """
    x = np.asarray(joints, np.float64)
    T = len(x)
    if T < 2:
        return np.ones((T, x.shape[1]), np.float32)
    sp = np.linalg.norm(np.diff(x, axis=0), axis=-1)  # (T-1, 4)
    sp = np.concatenate([sp[:1], sp], axis=0)
    return (sp < threshold_cm).astype(np.float32)
