"""Load a motion file for viewing: train.infer output, a stacked SAM 3D Body sequence or a single-frame SAM 3D Body npz.

Everything becomes a :class:`Sequence`: the (T, 320) layout motion, the (T, 204) ``mhr_model_params`` that drive the
rig, and the per-sequence :class:`~models.layout.SessionConstants` (camera, identity). Per-frame ``mhr_model_params``
are used as given when the file has them (exact fingers and skeleton scales); otherwise they are assembled from the
motion with :func:`models.layout.assemble_model_params`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models.layout import DIM, JAW, SAM3D_SHAPES, SessionConstants, assemble_model_params, from_sam3d
from models.rig import offsets_from_joints

#: SAM 3D Body sample files carry no camera intrinsics; these were fitted on them (mhr_rig.md §7).
SAMPLE_FOCAL = 2535.27
SAMPLE_IMAGE_SIZE = (1920, 890)

_PER_FRAME = {
    "global_rot": 1, "body_pose_params": 1, "hand_pose_params": 1, "expr_params": 1, "scale_params": 1,
    "shape_params": 1, "pred_cam_t": 1, "mhr_model_params": 1, "pred_joint_coords": 2, "focal_length": 0,
    "foot_contact": 1, "valid": 0,
}


@dataclass
class Sequence:
    """A motion clip ready to render.

    Attributes:
        motion: (T, 320) float32 layout motion (models.layout).
        model_params: (T, 204) float32 ``mhr_model_params``.
        constants: per-sequence camera/identity constants.
        offsets: (127, 3) subject bone offsets (cm) when the file has joints, else None (generic skeleton).
        path: the file it came from ('' for in-memory sequences).
        notes: human-readable remarks (defaults used, frames repaired), printed by the CLIs.
    """

    motion: np.ndarray
    model_params: np.ndarray
    constants: SessionConstants
    offsets: np.ndarray | None = None
    path: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def fps(self) -> float:
        return self.constants.fps

    def __len__(self) -> int:
        return int(self.motion.shape[0])

    @property
    def jaw(self) -> np.ndarray:
        """(T, 3) jaw Euler angles (body_pose_params[130:133])."""
        return self.motion[:, JAW]


def from_motion(motion: np.ndarray, constants: SessionConstants | None = None) -> Sequence:
    """An in-memory (T, 320) motion (e.g. a live stream's frames) -> Sequence."""
    m = np.asarray(motion, np.float32)
    if m.ndim == 1:
        m = m[None]
    if m.ndim != 2 or m.shape[1] != DIM:
        raise ValueError(f"motion must be (T, {DIM}), got {m.shape}")
    c = constants or SessionConstants()
    return Sequence(m, assemble_model_params(m, c), c)


def load_sequence(path: str | Path) -> Sequence:
    """Read a ``.npz`` motion file (see module docstring). Errors name the file, the key and the fix."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (expected a .npz from train.infer or SAM 3D Body)")
    try:
        with np.load(path, allow_pickle=False) as z:
            d = {k: z[k] for k in z.files}
    except Exception as e:  # noqa: BLE001 - any reader error becomes one clear message
        raise ValueError(f"{path}: not a readable .npz ({e})") from e
    notes: list[str] = []
    if "motion" in d and "global_rot" not in d:
        return _from_motion_only(path, d, notes)
    missing = [k for k in ("global_rot", "body_pose_params", "hand_pose_params") if k not in d]
    if missing:
        raise ValueError(
            f"{path}: missing key(s) {missing}; expected a SAM 3D Body-style npz (global_rot, body_pose_params, "
            f"hand_pose_params, expr_params, ...) as written by models.layout.to_sam3d, or a 'motion' (T, 320) array")
    single = np.asarray(d["global_rot"]).ndim == 1
    if single:  # one SAM 3D Body output: give every per-frame array a leading T = 1 axis
        for k, nd in _PER_FRAME.items():
            if k in d and np.asarray(d[k]).ndim == nd:
                d[k] = np.asarray(d[k])[None]
    T = int(np.asarray(d["global_rot"]).shape[0])
    for k, shape in SAM3D_SHAPES.items():
        if k in d and k not in ("pred_cam_t", "scale_params", "shape_params"):
            a = np.asarray(d[k])
            if a.shape[1:] != shape or a.shape[0] != T:
                raise ValueError(f"{path}: key {k!r} has shape {a.shape}, expected ({T}, {', '.join(map(str, shape))})")
    if "expr_params" not in d:
        d["expr_params"] = np.zeros((T, 72), np.float32)
        notes.append("no expr_params: neutral face")
    for k, n in (("scale_params", 28), ("shape_params", 45)):
        if k not in d:
            d[k] = np.zeros((T, n), np.float32)
    if "pred_cam_t" not in d:
        d["pred_cam_t"] = np.array([0.0, 0.9, 4.4], np.float32)
        notes.append("no pred_cam_t: default camera 4.4 m in front")
    if "focal_length" not in d and "image_size" not in d:
        d["focal_length"] = np.array(SAMPLE_FOCAL, np.float32)
        d["image_size"] = np.array(SAMPLE_IMAGE_SIZE, np.int32)
        notes.append(f"no focal_length/image_size: using the SAM 3D Body sample camera f={SAMPLE_FOCAL} px, "
                     f"{SAMPLE_IMAGE_SIZE[0]}x{SAMPLE_IMAGE_SIZE[1]} (mhr_rig.md §7)")
    valid = _valid_frames(d, T)
    if not valid.any():
        raise ValueError(f"{path}: no valid frame (all frames NaN or valid == False)")
    if not valid.all():
        notes.append(f"{int((~valid).sum())} invalid frame(s) hold the previous valid pose")
    clean = {k: (_hold(v, valid) if _is_per_frame(k, v, T) else v) for k, v in d.items()}
    motion, const = from_sam3d(clean, valid=valid, contact=clean.get("foot_contact"))
    if "motion" in d and np.asarray(d["motion"]).shape == (T, DIM):
        motion = _hold(np.asarray(d["motion"], np.float32), valid)
    mp = clean.get("mhr_model_params")
    mp = np.asarray(mp, np.float32) if mp is not None else assemble_model_params(motion, const)
    offsets = None
    if "pred_joint_coords" in d:
        i = int(np.flatnonzero(valid)[0])
        offsets = offsets_from_joints(mp[i], np.asarray(d["pred_joint_coords"][i], np.float64))
        notes.append("subject skeleton from pred_joint_coords")
    return Sequence(motion.astype(np.float32), mp.astype(np.float32), const, offsets, str(path), notes)


def _from_motion_only(path: Path, d: dict, notes: list[str]) -> Sequence:
    m = np.asarray(d["motion"], np.float32)
    if m.ndim != 2 or m.shape[1] != DIM:
        raise ValueError(f"{path}: key 'motion' has shape {m.shape}, expected (T, {DIM})")
    const = SessionConstants()
    if "constants" in d:
        import json

        const = SessionConstants.from_dict(json.loads(str(d["constants"])))
    else:
        notes.append("no session constants in the file: default camera and generic body")
    valid = np.isfinite(m).all(1)
    if not valid.any():
        raise ValueError(f"{path}: every frame of 'motion' has NaN/Inf")
    m = _hold(m, valid)
    return Sequence(m, assemble_model_params(m, const), const, None, str(path), notes)


def _is_per_frame(key: str, v: np.ndarray, T: int) -> bool:
    a = np.asarray(v)
    return key in _PER_FRAME and a.ndim >= 1 and a.shape[0] == T and a.dtype.kind == "f"


def _valid_frames(d: dict, T: int) -> np.ndarray:
    v = np.ones(T, bool)
    if "valid" in d:
        v &= np.asarray(d["valid"], bool).reshape(-1)[:T]
    for k in ("global_rot", "body_pose_params", "hand_pose_params", "mhr_model_params"):
        if k in d:
            v &= np.isfinite(np.asarray(d[k], np.float64)).reshape(T, -1).all(1)
    return v


def _hold(a: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Replace invalid frames with the previous valid one (the first valid one before the first)."""
    a = np.array(a, copy=True)
    if valid.all():
        return a
    idx = np.where(valid, np.arange(len(valid)), -1)
    idx = np.maximum.accumulate(idx)
    idx[idx < 0] = int(np.flatnonzero(valid)[0])
    return a[idx]
