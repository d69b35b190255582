"""Asset-free MHR skeleton: forward kinematics of the 127 joints and exact finger decoding.

Derived by this project from real SAM 3D Body outputs (see NOTICE and ../shared/reference/mhr_rig.md): rotations
are exact for pose, positions are exact with a subject's own offsets and ~1-2 cm with the generic mean skeleton.
Frame: native MHR (cm, +Y up, subject faces +Z, subject's left = +X). Camera frame (SAM 3D Body, metres, OpenCV):
``x_cam = F @ x_native / 100 + pred_cam_t`` with ``F = diag(1, -1, -1)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from models.rotations import euler_to_matrix, matrix_to_euler, sixd_to_matrix

RIG_PATH = Path(__file__).parent / "assets" / "mhr_rig.npz"
N_JOINTS = 127
N_MODEL_PARAMS = 204
F_CAM = np.diag([1.0, -1.0, -1.0])  # native <-> SAM 3D Body camera axes (a proper rotation)


@dataclass(frozen=True)
class Rig:
    """The skeleton arrays (see mhr_rig.md §11)."""

    parents: np.ndarray  # (127,) int, -1 for joint 0
    joint_names: tuple[str, ...]
    param_names: tuple[str, ...]
    prerot: np.ndarray  # (127, 3, 3)
    rule_joint: np.ndarray
    rule_param: np.ndarray
    rule_axis: np.ndarray
    rule_coef: np.ndarray
    rest_offsets: np.ndarray  # (127, 3) cm, generic mean skeleton
    rest_offsets_per_sample: np.ndarray  # (4, 127, 3) the four sample subjects (tests)
    main24: np.ndarray
    hand_code_mean: np.ndarray  # (54,)
    hand_code_dofs: np.ndarray  # (16,)
    hand_code_slot: np.ndarray  # (27,)

    def joint(self, name: str) -> int:
        return self.joint_names.index(name)


@lru_cache(maxsize=1)
def load_rig(path: str | Path = RIG_PATH) -> Rig:
    d = np.load(path)
    return Rig(
        parents=d["parents"].astype(np.int64),
        joint_names=tuple(str(s) for s in d["joint_names"]),
        param_names=tuple(str(s) for s in d["param_names"]),
        prerot=d["prerot"].astype(np.float64),
        rule_joint=d["rule_joint"].astype(np.int64),
        rule_param=d["rule_param"].astype(np.int64),
        rule_axis=d["rule_axis"].astype(np.int64),
        rule_coef=d["rule_coef"].astype(np.float64),
        rest_offsets=d["rest_offsets_mean"].astype(np.float64),
        rest_offsets_per_sample=d["rest_offsets_per_sample"].astype(np.float64),
        main24=d["main24"].astype(np.int64),
        hand_code_mean=d["hand_code_mean"].astype(np.float64),
        hand_code_dofs=d["hand_code_dofs"].astype(np.int64),
        hand_code_slot=d["hand_code_slot"].astype(np.int64),
    )


# ---- fingers --------------------------------------------------------------------------------------------------

def decode_hand(h: np.ndarray) -> np.ndarray:
    """One hand's 54-value ``hand_pose_params`` half (..., 54) -> 27 finger Euler params (..., 27), code order.

    code = hand_code_mean + h; joints pinky, ring, middle, index (6D knuckle, two (sin, cos) pairs each), then the
    thumb (two (sin, cos) for thumb0, 6D thumb1, (sin, cos) thumb2 and thumb3). 6D = two rotation-matrix columns.
    """
    rig = load_rig()
    code = np.asarray(h, dtype=np.float64) + rig.hand_code_mean
    out = []
    i = 0
    for _finger in range(4):
        R = sixd_to_matrix(code[..., i:i + 6])
        out.append(matrix_to_euler(R))
        i += 6
        for _ in range(2):
            out.append(np.arctan2(code[..., i], code[..., i + 1])[..., None])
            i += 2
    for _ in range(2):  # thumb0 ry, rz
        out.append(np.arctan2(code[..., i], code[..., i + 1])[..., None])
        i += 2
    out.append(matrix_to_euler(sixd_to_matrix(code[..., i:i + 6])))
    i += 6
    for _ in range(2):
        out.append(np.arctan2(code[..., i], code[..., i + 1])[..., None])
        i += 2
    assert i == 54
    return np.concatenate(out, axis=-1)


def hand_params_to_model(hand_pose_params: np.ndarray) -> np.ndarray:
    """``hand_pose_params`` (..., 108) = [left 54 | right 54] -> model params 68..121 (..., 54): right then left."""
    rig = load_rig()
    hp = np.asarray(hand_pose_params, dtype=np.float64)
    out = np.zeros(hp.shape[:-1] + (54,))
    left, right = decode_hand(hp[..., :54]), decode_hand(hp[..., 54:])
    out[..., rig.hand_code_slot] = right  # model 68..94 -> local 0..26
    out[..., 27 + rig.hand_code_slot] = left  # model 95..121 -> local 27..53
    return out


# ---- forward kinematics ---------------------------------------------------------------------------------------

def joint_angles(mp: np.ndarray) -> np.ndarray:
    """(T, 204) model params -> (T, 127, 3) per-joint local Euler XYZ angles (radians)."""
    rig = load_rig()
    mp = np.asarray(mp, dtype=np.float64)
    ang = np.zeros(mp.shape[:-1] + (N_JOINTS, 3))
    vals = mp[..., rig.rule_param] * rig.rule_coef  # (T, R)
    flat = ang.reshape(-1, N_JOINTS * 3)
    np.add.at(flat, (slice(None), rig.rule_joint * 3 + rig.rule_axis), vals.reshape(-1, len(rig.rule_coef)))
    return flat.reshape(ang.shape)


def local_rotations(mp: np.ndarray) -> np.ndarray:
    """(T, 204) -> (T, 127, 3, 3) local joint rotations ``prerot @ Rz @ Ry @ Rx``."""
    rig = load_rig()
    return rig.prerot @ euler_to_matrix(joint_angles(mp))


def forward_kinematics(mp: np.ndarray, offsets: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Global joint rotations and positions from ``mhr_model_params``.

    Args:
        mp: (T, 204) or (204,) model parameters.
        offsets: (127, 3) bone offsets in cm (parent frame); default the generic mean skeleton.

    Returns:
        R (T, 127, 3, 3) global orientations and X (T, 127, 3) positions, native frame, cm.
    """
    rig = load_rig()
    mp = np.asarray(mp, dtype=np.float64)
    single = mp.ndim == 1
    mp = np.atleast_2d(mp)
    offs = rig.rest_offsets if offsets is None else np.asarray(offsets, dtype=np.float64)
    Rl = local_rotations(mp)
    T = mp.shape[0]
    R = np.empty((T, N_JOINTS, 3, 3))
    X = np.empty((T, N_JOINTS, 3))
    R[:, 0] = np.eye(3)
    X[:, 0] = 0.0
    for j in range(1, N_JOINTS):
        p = rig.parents[j]
        t = np.broadcast_to(offs[j], (T, 3)).copy()
        if j == 1:
            t = t + mp[:, 0:3]
        R[:, j] = R[:, p] @ Rl[:, j]
        X[:, j] = X[:, p] + np.einsum("tab,tb->ta", R[:, p], t)
    if single:
        return R[0], X[0]
    return R, X


def offsets_from_joints(mp: np.ndarray, pred_joint_coords: np.ndarray) -> np.ndarray:
    """A subject's exact bone offsets from one SAM 3D Body output (mhr_rig.md §6).

    Args:
        mp: (204,) that output's ``mhr_model_params``.
        pred_joint_coords: (127, 3) metres, camera axes, without pred_cam_t.
    """
    rig = load_rig()
    R, _ = forward_kinematics(mp)
    X = (np.asarray(pred_joint_coords, dtype=np.float64) * 100.0) @ F_CAM.T
    offs = np.zeros((N_JOINTS, 3))
    for j in range(1, N_JOINTS):
        p = rig.parents[j]
        offs[j] = R[p].T @ (X[j] - X[p])
    offs[1] -= np.asarray(mp, dtype=np.float64)[0:3]
    return offs


def native_to_camera(x_native_cm: np.ndarray, cam_t: np.ndarray) -> np.ndarray:
    """Native positions (..., 3) cm -> SAM 3D Body camera frame (metres, OpenCV axes), incl. pred_cam_t."""
    return np.asarray(x_native_cm) @ F_CAM.T / 100.0 + np.asarray(cam_t)


def project(x_cam: np.ndarray, focal_length: float, width: float, height: float) -> np.ndarray:
    """Pinhole projection (fx = fy = focal_length, principal point at the image centre) -> (..., 2) px."""
    x_cam = np.asarray(x_cam, dtype=np.float64)
    u = focal_length * x_cam[..., 0] / x_cam[..., 2] + width / 2
    v = focal_length * x_cam[..., 1] / x_cam[..., 2] + height / 2
    return np.stack([u, v], -1)
