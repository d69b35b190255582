"""The MHR-native motion layout: the single source of truth for what each of the 320 channels is.

Per frame at 30 fps (float32):

| slice      | dims | source                                                                    |
|------------|------|---------------------------------------------------------------------------|
| body       | 130  | ``body_pose_params[:130]`` (= ``mhr_model_params[6:136]``, hands zeroed)   |
| hand       | 108  | ``hand_pose_params``: left 54 | right 54 (continuous finger codes)         |
| face       | 75   | ``expr_params`` 72 + jaw ``body_pose_params[130:133]``                    |
| global     | 7    | ``global_rot`` 3 (Euler XYZ, R = Rz Ry Rx) + foot contact 4 (l_foot, l_ball, r_foot, r_ball) |

Inside body 130, slots 62-115 are always zero (fingers live in ``hand_pose_params``) and slots 124-129 are the
per-person bone-length coefficients (``*_length_flexible``): per-sequence constants, never predicted per frame. The
models see only the *varying* channels of a part (``VARYING``); files and the wire keep the full 320.

Per-sequence constants (``SessionConstants``): ``pred_cam_t`` (mean over valid frames, metres, camera frame),
``focal_length`` (px, fx = fy), image width/height (principal point at the centre), fps, ``scale_params`` (28),
``shape_params`` (45), the 6 bone-length slots and, when known, the 68 skeleton scales ``mhr_model_params[136:204]``.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

LAYOUT_VERSION = "mhr320-v1"
DIM = 320
FPS = 30

BODY = slice(0, 130)
HAND = slice(130, 238)
HAND_LEFT = slice(130, 184)
HAND_RIGHT = slice(184, 238)
FACE = slice(238, 313)
EXPR = slice(238, 310)
JAW = slice(310, 313)
GLOBAL = slice(313, 320)
GLOBAL_ROT = slice(313, 316)
CONTACT = slice(316, 320)

PART_SLICES: dict[str, slice] = {"body": BODY, "hand": HAND, "face": FACE, "global": GLOBAL}
VQ_PARTS = ("body", "hand", "face")  # parts with a VQ-VAE; global is regressed directly

BODY_ZERO_SLOTS = np.arange(62, 116)  # finger slots inside body_pose_params: always zero
BODY_BONE_LENGTH_SLOTS = np.arange(124, 130)  # spine/neck/shoulder/arm/hip/leg length: per-sequence constants
BODY_VARYING_SLOTS = np.array([i for i in range(130) if i < 62 or 116 <= i < 124])  # 70 slots
CONTACT_JOINTS = ("l_foot", "l_ball", "r_foot", "r_ball")
#: the jaw channel that opens the mouth (rotation of c_jaw about its local x hinge, radians, positive = open) and
#: its usual range; the synthetic talker and the runtime's envelope-driven face both use it
JAW_OPEN = JAW.start
JAW_OPEN_RANGE = (0.0, 0.35)

#: indices into the 320-vector of the channels each VQ part models
VARYING: dict[str, np.ndarray] = {
    "body": BODY_VARYING_SLOTS.copy(),
    "hand": np.arange(HAND.start, HAND.stop),
    "face": np.arange(FACE.start, FACE.stop),
}
PART_DIMS = {k: len(v) for k, v in VARYING.items()}  # body 70, hand 108, face 75

SAM3D_REQUIRED_KEYS = (
    "global_rot", "body_pose_params", "hand_pose_params", "expr_params",
    "scale_params", "shape_params", "pred_cam_t",
)
SAM3D_SHAPES = {
    "global_rot": (3,), "body_pose_params": (133,), "hand_pose_params": (108,), "expr_params": (72,),
    "scale_params": (28,), "shape_params": (45,), "pred_cam_t": (3,), "mhr_model_params": (204,),
    "pred_joint_coords": (127, 3),
}


def channel_names() -> list[str]:
    """Human-readable names of the 320 channels (MHR parameter names where they exist)."""
    from models.rig import load_rig

    pn = load_rig().param_names
    names = [pn[6 + i] for i in range(130)]
    for side in ("left", "right"):
        names += [f"hand_{side}_code{i}" for i in range(54)]
    names += [f"expr{i}" for i in range(72)] + ["jaw_rx", "jaw_ry", "jaw_rz"]
    names += ["global_rx", "global_ry", "global_rz"] + [f"contact_{j}" for j in CONTACT_JOINTS]
    assert len(names) == DIM
    return names


def _default_skeleton_scales() -> np.ndarray:
    # Mean of mhr_model_params[136:204] over the four SAM 3D Body samples (derived figure, see NOTICE).
    from models.rig import RIG_PATH

    with np.load(RIG_PATH) as d:
        if "default_skeleton_scales" in d.files:
            return d["default_skeleton_scales"].astype(np.float32)
    return np.zeros(68, np.float32)


@dataclass
class SessionConstants:
    """Everything fixed for a whole sequence/session, so an output renders on its own.

    Defaults describe a generic person in a 1280x720 view (SAM 3D Body's default focal sqrt(W^2+H^2)) standing
    4.4 m from the camera, pelvis near the image centre.
    """

    pred_cam_t: np.ndarray = field(default_factory=lambda: np.array([0.0, 0.9, 4.4], np.float32))
    focal_length: float = float(np.hypot(1280, 720))
    image_width: int = 1280
    image_height: int = 720
    fps: float = float(FPS)
    scale_params: np.ndarray = field(default_factory=lambda: np.zeros(28, np.float32))
    shape_params: np.ndarray = field(default_factory=lambda: np.zeros(45, np.float32))
    bone_lengths: np.ndarray = field(default_factory=lambda: np.zeros(6, np.float32))
    skeleton_scales: np.ndarray | None = None  # (68,) mhr_model_params[136:204], when the source has it

    def __post_init__(self) -> None:
        self.pred_cam_t = _vec(self.pred_cam_t, 3, "pred_cam_t")
        self.scale_params = _vec(self.scale_params, 28, "scale_params")
        self.shape_params = _vec(self.shape_params, 45, "shape_params")
        self.bone_lengths = _vec(self.bone_lengths, 6, "bone_lengths")
        if self.skeleton_scales is not None:
            self.skeleton_scales = _vec(self.skeleton_scales, 68, "skeleton_scales")
        self.focal_length = float(self.focal_length)
        self.image_width = int(self.image_width)
        self.image_height = int(self.image_height)
        self.fps = float(self.fps)

    def skeleton_scales_or_default(self) -> np.ndarray:
        return self.skeleton_scales if self.skeleton_scales is not None else _default_skeleton_scales()

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return {
            "pred_cam_t": self.pred_cam_t.tolist(), "focal_length": self.focal_length,
            "image_width": self.image_width, "image_height": self.image_height, "fps": self.fps,
            "scale_params": self.scale_params.tolist(), "shape_params": self.shape_params.tolist(),
            "bone_lengths": self.bone_lengths.tolist(),
            "skeleton_scales": None if self.skeleton_scales is None else self.skeleton_scales.tolist(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SessionConstants:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d and d[k] is not None}
        return cls(**known)

    def to_json(self) -> str:
        return json.dumps(self.to_dict())


def _vec(x: Any, n: int, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float32).reshape(-1)
    if a.shape != (n,):
        raise ValueError(f"session constant {name!r} must have {n} values, got shape {np.shape(x)}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"session constant {name!r} contains NaN/Inf")
    return a.copy()


# ---- SAM 3D Body dict <-> (motion, constants) -------------------------------------------------------------------

def from_sam3d(d: Mapping[str, np.ndarray], valid: np.ndarray | None = None,
               contact: np.ndarray | None = None) -> tuple[np.ndarray, SessionConstants]:
    """A SAM 3D Body-style dict of stacked arrays (leading T axis) -> (motion (T, 320) float32, constants).

    Per-sequence constants are means over ``valid`` frames (all frames by default). ``contact`` (T, 4) fills the
    foot-contact channels (zeros when None; ingestion computes it from the joints). Inputs are never modified.
    """
    g = np.asarray(d["global_rot"], np.float32)
    T = g.shape[0]
    v = np.ones(T, bool) if valid is None else np.asarray(valid, bool)
    if not v.any():
        raise ValueError("no valid frame to take the per-sequence constants from")
    body = np.asarray(d["body_pose_params"], np.float32)
    motion = np.zeros((T, DIM), np.float32)
    motion[:, BODY] = body[:, :130]
    motion[:, HAND] = np.asarray(d["hand_pose_params"], np.float32)
    motion[:, EXPR] = np.asarray(d["expr_params"], np.float32)
    motion[:, JAW] = body[:, 130:133] if body.shape[1] >= 133 else 0.0
    motion[:, GLOBAL_ROT] = g
    if contact is not None:
        motion[:, CONTACT] = np.asarray(contact, np.float32)
    motion[:, BODY.start + BODY_ZERO_SLOTS] = 0.0

    def mean(key: str, n: int) -> np.ndarray | None:
        """Per-sequence value of ``key``: the mean over valid frames of (T, n), or a constant (n,) as given."""
        if key not in d:
            return None
        a = np.asarray(d[key], np.float64)
        if a.size == T * n and a.shape[0] == T:
            return a.reshape(T, n)[v].mean(0)
        if a.size == n:
            return a.reshape(n)
        raise ValueError(f"key {key!r} has shape {a.shape}; expected ({T}, {n}) or ({n},)")

    size = d.get("image_size")
    if size is not None:
        W, H = (int(x) for x in np.asarray(size).reshape(-1)[:2])
    else:
        W = int(np.asarray(d.get("image_width", 1280)).reshape(-1)[0])
        H = int(np.asarray(d.get("image_height", 720)).reshape(-1)[0])
    focal = d.get("focal_length")
    focal = float(np.median(np.asarray(focal, np.float64).reshape(-1))) if focal is not None else float(np.hypot(W, H))
    fps = float(np.asarray(d["fps"]).reshape(-1)[0]) if "fps" in d else float(FPS)
    bone = body[v][:, BODY_BONE_LENGTH_SLOTS].astype(np.float64).mean(0)
    motion[:, BODY.start + BODY_BONE_LENGTH_SLOTS] = bone.astype(np.float32)
    mp = mean("mhr_model_params", 204)
    const = SessionConstants(
        pred_cam_t=mean("pred_cam_t", 3), focal_length=focal, image_width=W, image_height=H, fps=fps,
        scale_params=mean("scale_params", 28), shape_params=mean("shape_params", 45), bone_lengths=bone,
        skeleton_scales=None if mp is None else mp[136:204],
    )
    return motion, const


def assemble_model_params(motion: np.ndarray, constants: SessionConstants) -> np.ndarray:
    """(T, 320) -> (T, 204) ``mhr_model_params``.

    Layout: [0,0,0 | global_rot | body_pose[:130] with decoded fingers | 68 skeleton scales].
    """
    from models.rig import hand_params_to_model

    m = np.asarray(motion, np.float64)
    T = m.shape[0]
    mp = np.zeros((T, 204))
    mp[:, 3:6] = m[:, GLOBAL_ROT]
    mp[:, 6:136] = m[:, BODY]
    mp[:, 6 + BODY_BONE_LENGTH_SLOTS] = constants.bone_lengths
    mp[:, 68:122] = hand_params_to_model(m[:, HAND])
    mp[:, 136:204] = constants.skeleton_scales_or_default()
    return mp.astype(np.float32)


def to_sam3d(motion: np.ndarray, constants: SessionConstants) -> dict[str, np.ndarray]:
    """(T, 320) + constants -> a self-contained SAM 3D Body-style dict (stacked per-frame arrays + constants)."""
    m = np.asarray(motion, np.float32)
    if m.ndim != 2 or m.shape[1] != DIM:
        raise ValueError(f"motion must be (T, {DIM}), got {m.shape}")
    T = m.shape[0]
    body = np.zeros((T, 133), np.float32)
    body[:, :130] = m[:, BODY]
    body[:, BODY_ZERO_SLOTS] = 0.0
    body[:, BODY_BONE_LENGTH_SLOTS] = constants.bone_lengths
    body[:, 130:133] = m[:, JAW]
    return {
        "global_rot": m[:, GLOBAL_ROT].copy(),
        "body_pose_params": body,
        "hand_pose_params": m[:, HAND].copy(),
        "expr_params": m[:, EXPR].copy(),
        "foot_contact": m[:, CONTACT].copy(),
        "mhr_model_params": assemble_model_params(m, constants),
        "pred_cam_t": np.broadcast_to(constants.pred_cam_t, (T, 3)).astype(np.float32).copy(),
        "focal_length": np.full(T, constants.focal_length, np.float32),
        "scale_params": np.broadcast_to(constants.scale_params, (T, 28)).astype(np.float32).copy(),
        "shape_params": np.broadcast_to(constants.shape_params, (T, 45)).astype(np.float32).copy(),
        "image_size": np.array([constants.image_width, constants.image_height], np.int32),
        "fps": np.array(constants.fps, np.float32),
        "layout_version": np.array(LAYOUT_VERSION),
        "motion": m.copy(),
    }


def split_varying(motion: np.ndarray, part: str) -> np.ndarray:
    """(..., 320) -> (..., d_part) varying channels of one VQ part (a copy)."""
    return np.asarray(motion)[..., VARYING[part]].copy()


def write_varying(motion: np.ndarray, part: str, values: np.ndarray) -> np.ndarray:
    """Return a copy of ``motion`` with one part's varying channels replaced (never writes into a view of an input)."""
    out = np.array(motion, copy=True)
    out[..., VARYING[part]] = values
    return out


def constant_frame(constants: SessionConstants) -> np.ndarray:
    """A (320,) frame holding only the per-sequence constants (bone lengths) and zeros elsewhere."""
    f = np.zeros(DIM, np.float32)
    f[BODY.start + BODY_BONE_LENGTH_SLOTS] = constants.bone_lengths
    return f
