"""MHR motion -> BVH (Biovision hierarchy) of the 126-joint MHR skeleton, and a small BVH reader to check it.

Conventions of the written file (see docs/EXPORT.md):

* Axes and units: native MHR, +Y up, the subject faces +Z, subject's left = +X; centimetres by default
  (``--units m|mm`` rescales every position and offset).
* Joints: every MHR joint except ``body_world`` (joint 0, the identity frame at the origin = the BVH world), in the
  rig's order, depth first; ``root`` (joint 1, the pelvis) is the ROOT. Names are the MHR joint names (unique,
  ASCII). ``*_null`` joints (fingertips, chin, eye targets, head top) are ordinary JOINTs so that every MHR joint
  keeps its name; each leaf JOINT gets a short cosmetic ``End Site`` along its bone.
* Rest pose (all channels 0) = the MHR pose with all parameters 0 (arms down in an A pose), with every joint frame
  aligned to the world axes. ``OFFSET`` of joint j = ``R_rest[p] @ offsets[j]`` (the rig's offsets are expressed in
  the parent's posed global frame, mhr_rig.md §6). The ROOT's OFFSET is 0 0 0 and its position channels carry the
  absolute pelvis position ``offsets[1] + mp[0:3]`` (valid for readers that add the OFFSET and for those that
  replace it, e.g. Blender).
* Channels: ROOT ``Xposition Yposition Zposition Zrotation Yrotation Xrotation``, other joints
  ``Zrotation Yrotation Xrotation``: local rotation ``Rz(z) @ Ry(y) @ Rx(x)`` in degrees (6 decimals), the world-
  aligned local rotation ``B_j = G_p^T G_j`` with ``G_j = R_j @ R_rest[j]^T`` (R = MHR FK global rotation). Then
  ``x_j = x_p + G_p @ OFFSET_j = x_p + R_p @ offsets[j]`` exactly: positions by BVH FK equal ``models.rig`` FK.
  Angles are made continuous over time (no +-180 degree jumps), so interpolating players do not spin joints.

Usage: ``python -m exporters.bvh generated.npz -o out.bvh [--offsets mean|per-sample-N|input] [--units cm]``.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models.layout import FPS, SessionConstants, assemble_model_params, from_sam3d
from models.rig import N_JOINTS, N_MODEL_PARAMS, forward_kinematics, load_rig, offsets_from_joints

UNIT_SCALE = {"cm": 1.0, "m": 0.01, "mm": 10.0}
ROOT_JOINT = 1  # MHR 'root' (pelvis); joint 0 'body_world' is the BVH world frame
ROT_CHANNELS = ("Zrotation", "Yrotation", "Xrotation")
POS_CHANNELS = ("Xposition", "Yposition", "Zposition")
END_SITE_MIN_CM = 1.0  # length of the cosmetic end bone of a leaf joint
_GIMBAL_EPS = 1e-9


# ---- input --------------------------------------------------------------------------------------------------------

@dataclass
class MotionInput:
    """Model parameters read from an npz, plus what the BVH needs besides them.

    Attributes:
        mp: (T, 204) float64 ``mhr_model_params``.
        fps: frame rate (the file's ``fps`` key, else 30).
        source_key: which key(s) the parameters came from (for messages).
        pred_joint_coords: (127, 3) of the first frame when the file has them (SAM 3D Body fixtures), else None.
    """

    mp: np.ndarray
    fps: float = float(FPS)
    source_key: str = "mhr_model_params"
    pred_joint_coords: np.ndarray | None = None


def load_motion(path: str | Path) -> MotionInput:
    """Read model parameters from a generated / SAM 3D Body npz (stacked (T, ...) or a single frame).

    Accepted, in this order: ``mhr_model_params`` (T, 204) or (204,); the SAM 3D Body fields ``global_rot``,
    ``body_pose_params``, ``hand_pose_params`` (assembled as in ``models.layout``); a raw ``motion`` (T, 320).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: input npz not found")
    try:
        d = dict(np.load(path, allow_pickle=False))
    except Exception as e:  # zip/format errors
        raise ValueError(f"{path}: not a readable npz ({e}); pass a train.infer output or a SAM 3D Body npz") from e
    fps = float(np.asarray(d["fps"]).reshape(-1)[0]) if "fps" in d else float(FPS)
    pjc = None
    if "pred_joint_coords" in d:
        a = np.asarray(d["pred_joint_coords"], np.float64)
        pjc = a.reshape(-1, N_JOINTS, 3)[0] if a.size % (N_JOINTS * 3) == 0 else None
    if "mhr_model_params" in d:
        mp, key = np.asarray(d["mhr_model_params"], np.float64), "mhr_model_params"
        if mp.ndim == 1:
            mp = mp[None]
        if mp.ndim != 2 or mp.shape[1] != N_MODEL_PARAMS:
            raise ValueError(f"{path}: key 'mhr_model_params' has shape {d['mhr_model_params'].shape}; "
                             f"expected (T, {N_MODEL_PARAMS}) or ({N_MODEL_PARAMS},)")
    elif all(k in d for k in ("global_rot", "body_pose_params", "hand_pose_params")):
        key = "global_rot+body_pose_params+hand_pose_params"
        sam = {k: np.asarray(v) for k, v in d.items() if k != "image_size" and np.asarray(v).dtype.kind == "f"}
        if np.asarray(sam["global_rot"]).ndim == 1:  # a single frame without the T axis
            sam = {k: v[None] for k, v in sam.items()}
        sam.setdefault("expr_params", np.zeros((len(sam["global_rot"]), 72), np.float32))
        motion, const = from_sam3d(sam)
        mp = assemble_model_params(motion, const).astype(np.float64)
    elif "motion" in d:
        key = "motion"
        m = np.asarray(d["motion"], np.float64)
        if m.ndim != 2 or m.shape[1] != 320:
            raise ValueError(f"{path}: key 'motion' has shape {m.shape}; expected (T, 320)")
        mp = assemble_model_params(m, SessionConstants()).astype(np.float64)
    else:
        raise ValueError(f"{path}: no motion found (keys {sorted(d)}); expected 'mhr_model_params' (T, 204), the "
                         "SAM 3D Body fields 'global_rot'/'body_pose_params'/'hand_pose_params', or 'motion' (T, 320)")
    if len(mp) == 0:
        raise ValueError(f"{path}: key {key!r} holds 0 frames")
    if not np.all(np.isfinite(mp)):
        bad = np.argwhere(~np.isfinite(mp))[0]
        raise ValueError(f"{path}: key {key!r} has NaN/Inf (first at frame {bad[0]}, slot {bad[-1]}); "
                         "fix or drop those frames before exporting")
    return MotionInput(mp=mp, fps=fps, source_key=key, pred_joint_coords=pjc)


def resolve_offsets(spec: str, motion: MotionInput | None = None) -> np.ndarray:
    """Bone offsets (127, 3) cm from ``mean`` | ``per-sample-N`` (N = 0..3) | ``input`` (the file's joints)."""
    rig = load_rig()
    if spec == "mean":
        return rig.rest_offsets.copy()
    if spec.startswith("per-sample-"):
        n_samples = len(rig.rest_offsets_per_sample)
        try:
            n = int(spec[len("per-sample-"):])
        except ValueError:
            n = -1
        if not 0 <= n < n_samples:
            raise ValueError(f"--offsets {spec!r}: N must be 0..{n_samples - 1} (e.g. per-sample-1)")
        return rig.rest_offsets_per_sample[n].copy()
    if spec == "input":
        if motion is None or motion.pred_joint_coords is None:
            raise ValueError("--offsets input needs 'pred_joint_coords' (127, 3) in the input npz "
                             "(SAM 3D Body outputs have it); use --offsets mean otherwise")
        return offsets_from_joints(motion.mp[0], motion.pred_joint_coords)
    raise ValueError(f"--offsets {spec!r}: expected mean, per-sample-N (N = 0..3) or input")


# ---- the BVH skeleton and its channels ------------------------------------------------------------------------------

def joint_order() -> list[int]:
    """MHR joint ids in BVH (depth-first) order, starting at ``root``; children in rig index order."""
    parents = load_rig().parents
    children: dict[int, list[int]] = {}
    for j in range(1, N_JOINTS):
        children.setdefault(int(parents[j]), []).append(j)
    order, stack = [], [ROOT_JOINT]
    while stack:
        j = stack.pop()
        order.append(j)
        stack.extend(reversed(children.get(j, [])))
    return order


def rest_rotations() -> np.ndarray:
    """(127, 3, 3) global MHR joint rotations with all parameters 0 (the BVH rest frames)."""
    R, _ = forward_kinematics(np.zeros(N_MODEL_PARAMS))
    return R


def bvh_offsets(offsets: np.ndarray) -> np.ndarray:
    """(127, 3) BVH OFFSETs (cm, world-aligned rest frames): ``R_rest[p] @ offsets[j]``; root and world are 0."""
    rig = load_rig()
    Rr = rest_rotations()
    out = np.zeros((N_JOINTS, 3))
    for j in range(2, N_JOINTS):
        out[j] = Rr[rig.parents[j]] @ offsets[j]
    return out


def bvh_local_rotations(mp: np.ndarray) -> np.ndarray:
    """(T, 204) -> (T, 127, 3, 3) BVH local rotations ``G_p^T G_j`` with ``G = R @ R_rest^T`` (world-aligned rest)."""
    rig = load_rig()
    R, _ = forward_kinematics(np.atleast_2d(mp))
    G = R @ np.swapaxes(rest_rotations(), -1, -2)[None]  # (T, 127, 3, 3)
    B = np.empty_like(G)
    B[:, 0] = np.eye(3)
    B[:, 1:] = np.swapaxes(G[:, rig.parents[1:]], -1, -2) @ G[:, 1:]
    return B


def matrix_to_euler_zyx(R: np.ndarray) -> np.ndarray:
    """(..., 3, 3) -> (..., 3) angles (x, y, z) rad with R = Rz @ Ry @ Rx, stable at the gimbal lock (|y| = 90)."""
    R = np.asarray(R, dtype=np.float64)
    cy = np.hypot(R[..., 0, 0], R[..., 1, 0])
    y = np.arctan2(-R[..., 2, 0], cy)
    x = np.arctan2(R[..., 2, 1], R[..., 2, 2])
    z = np.arctan2(R[..., 1, 0], R[..., 0, 0])
    lock = cy < _GIMBAL_EPS  # only x - z (y = +90) or x + z (y = -90) is defined: put it all in x
    if np.any(lock):
        s = np.sign(-R[..., 2, 0])
        x_lock = np.arctan2(s * R[..., 0, 1], R[..., 1, 1])
        x = np.where(lock, x_lock, x)
        z = np.where(lock, 0.0, z)
    return np.stack([x, y, z], axis=-1)


def continuous_euler(e: np.ndarray) -> np.ndarray:
    """(T, ..., 3) Euler (x, y, z) -> the equivalent angles closest to the previous frame (no +-pi flips).

    Each rotation has two triples, (x, y, z) and (x + pi, pi - y, z + pi), each up to multiples of 2 pi; per frame
    and joint we take the one nearest the previous frame's angles, so the rotations are unchanged.
    """
    e = np.asarray(e, dtype=np.float64)
    out = e.copy()
    flip = np.array([np.pi, np.pi, np.pi])
    sign = np.array([1.0, -1.0, 1.0])
    for t in range(1, len(e)):
        prev = out[t - 1]
        best = None
        best_d = None
        for cand in (e[t], e[t] * sign + flip):
            c = cand + 2 * np.pi * np.round((prev - cand) / (2 * np.pi))
            d = np.abs(c - prev).sum(-1, keepdims=True)
            if best is None:
                best, best_d = c, d
            else:
                take = d < best_d
                best = np.where(take, c, best)
                best_d = np.where(take, d, best_d)
        out[t] = best
    return out


@dataclass
class BVHMotion:
    """Everything written to a BVH file, in BVH joint order.

    Attributes:
        names: joint names (BVH order, ROOT first).
        parents: parent position in ``names`` (-1 for the ROOT).
        offsets: (J, 3) OFFSETs in the file's units.
        end_sites: (J, 3) End Site offset of each leaf joint (NaN rows for joints with children).
        root_position: (T, 3) ROOT position channels (file units).
        euler_deg: (T, J, 3) rotation channels (z, y, x) degrees, in the channel order ``ROT_CHANNELS``.
        frame_time: seconds per frame.
    """

    names: list[str]
    parents: list[int]
    offsets: np.ndarray
    end_sites: np.ndarray
    root_position: np.ndarray
    euler_deg: np.ndarray
    frame_time: float


def build_bvh_motion(mp: np.ndarray, offsets: np.ndarray | None = None, fps: float = FPS,
                     units: str = "cm") -> BVHMotion:
    """(T, 204) model parameters -> the BVH skeleton and channels (see the module docstring for the math).

    Args:
        mp: (T, 204) or (204,) ``mhr_model_params``.
        offsets: (127, 3) cm bone offsets in the rig's convention; default ``rest_offsets_mean``.
        fps: frame rate of ``mp``.
        units: 'cm' | 'm' | 'mm'.
    """
    if units not in UNIT_SCALE:
        raise ValueError(f"units {units!r}: expected one of {sorted(UNIT_SCALE)}")
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    rig = load_rig()
    mp = np.atleast_2d(np.asarray(mp, dtype=np.float64))
    offs = rig.rest_offsets if offsets is None else np.asarray(offsets, dtype=np.float64)
    if offs.shape != (N_JOINTS, 3):
        raise ValueError(f"offsets must be ({N_JOINTS}, 3), got {offs.shape}")
    scale = UNIT_SCALE[units]
    order = joint_order()
    pos_of = {j: i for i, j in enumerate(order)}
    B = bvh_local_rotations(mp)[:, order]  # (T, J, 3, 3)
    euler = continuous_euler(matrix_to_euler_zyx(B))  # (T, J, 3) x, y, z
    Rr = rest_rotations()
    off_bvh = bvh_offsets(offs)
    has_child = {int(rig.parents[j]) for j in range(2, N_JOINTS)}
    ends = np.full((len(order), 3), np.nan)
    for i, j in enumerate(order):
        if j in has_child:
            continue
        # cosmetic bone tip: continue the incoming bone direction (world-aligned rest frame), at least 1 cm long
        d = off_bvh[j] if np.linalg.norm(off_bvh[j]) > 1e-6 else Rr[j] @ np.array([1.0, 0.0, 0.0])
        n = np.linalg.norm(d)
        ends[i] = d / n * max(END_SITE_MIN_CM, 0.25 * n)
    return BVHMotion(
        names=[rig.joint_names[j] for j in order],
        parents=[-1 if j == ROOT_JOINT else pos_of[int(rig.parents[j])] for j in order],
        offsets=off_bvh[order] * scale,
        end_sites=ends * scale,
        root_position=(offs[ROOT_JOINT][None] + mp[:, 0:3]) * scale,
        euler_deg=np.degrees(euler[..., ::-1]),  # (z, y, x) = ROT_CHANNELS order
        frame_time=1.0 / fps,
    )


def format_bvh(m: BVHMotion) -> str:
    """The BVH text of ``m`` (6 decimals, LF line ends, tabs for indentation)."""
    children: dict[int, list[int]] = {}
    for i, p in enumerate(m.parents):
        children.setdefault(p, []).append(i)
    lines = ["HIERARCHY"]

    def f3(v: np.ndarray) -> str:
        return " ".join(f"{float(x):.6f}" for x in v)

    def emit(i: int, depth: int) -> None:
        ind = "\t" * depth
        kw = "ROOT" if m.parents[i] < 0 else "JOINT"
        lines.append(f"{ind}{kw} {m.names[i]}")
        lines.append(f"{ind}{{")
        lines.append(f"{ind}\tOFFSET {f3(m.offsets[i])}")
        chans = (POS_CHANNELS if m.parents[i] < 0 else ()) + ROT_CHANNELS
        lines.append(f"{ind}\tCHANNELS {len(chans)} {' '.join(chans)}")
        kids = children.get(i, [])
        for c in kids:
            emit(c, depth + 1)
        if not kids:
            lines.extend([f"{ind}\tEnd Site", f"{ind}\t{{", f"{ind}\t\tOFFSET {f3(m.end_sites[i])}", f"{ind}\t}}"])
        lines.append(f"{ind}}}")

    roots = children.get(-1, [])
    if len(roots) != 1:
        raise ValueError(f"a BVH needs exactly one root joint, got {len(roots)}")
    emit(roots[0], 0)
    T = m.euler_deg.shape[0]
    lines += ["MOTION", f"Frames: {T}", f"Frame Time: {m.frame_time:.8f}"]
    rows = np.concatenate([m.root_position, m.euler_deg.reshape(T, -1)], axis=1)  # (T, 3 + 3J)
    rows = np.where(np.abs(rows) < 5e-7, 0.0, rows)  # no "-0.000000"
    lines += [" ".join(f"{v:.6f}" for v in row) for row in rows]
    return "\n".join(lines) + "\n"


def write_bvh(path: str | Path, mp: np.ndarray, offsets: np.ndarray | None = None, fps: float = FPS,
              units: str = "cm") -> Path:
    """Write ``mp`` (T, 204) as a BVH file (atomically); returns the path."""
    m = build_bvh_motion(mp, offsets, fps=fps, units=units)
    if not (np.all(np.isfinite(m.euler_deg)) and np.all(np.isfinite(m.root_position))):
        raise ValueError(f"{path}: non-finite channel values; check the input parameters")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(format_bvh(m), encoding="ascii")
    tmp.replace(path)
    return path


# ---- reading (checks, tests) --------------------------------------------------------------------------------

@dataclass
class BVHFile:
    """A parsed BVH file.

    Attributes:
        names: joint names in file order (End Sites excluded).
        parents: parent position in ``names`` (-1 for the ROOT).
        offsets: (J, 3) OFFSETs.
        channels: per joint, its channel names in file order.
        end_sites: joint position -> End Site OFFSET (3,).
        motion: (F, C) channel values, C = total channels.
        frame_time: seconds per frame.
    """

    names: list[str]
    parents: list[int]
    offsets: np.ndarray
    channels: list[list[str]]
    end_sites: dict[int, np.ndarray] = field(default_factory=dict)
    motion: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    frame_time: float = 1.0 / FPS

    def forward_kinematics(self) -> tuple[np.ndarray, np.ndarray]:
        """Global rotations (F, J, 3, 3) and positions (F, J, 3) from the file alone.

        Local transform of a joint: translation = its position channels when it has them (absolute, the Blender
        convention; our ROOT OFFSET is 0 so adding it would give the same), else its OFFSET; rotation = the
        product of its rotation channels in file order (degrees).
        """
        F = self.motion.shape[0]
        J = len(self.names)
        R = np.zeros((F, J, 3, 3))
        X = np.zeros((F, J, 3))
        col = 0
        for j in range(J):
            t = np.broadcast_to(self.offsets[j], (F, 3)).copy()
            Rl = np.broadcast_to(np.eye(3), (F, 3, 3)).copy()
            for ch in self.channels[j]:
                v = self.motion[:, col]
                col += 1
                axis = "XYZ".index(ch[0].upper())
                if ch.lower().endswith("position"):
                    t[:, axis] = v  # absolute: replaces that OFFSET component
                else:
                    Rl = Rl @ _axis_rotation(axis, np.radians(v))
            p = self.parents[j]
            if p < 0:
                R[:, j], X[:, j] = Rl, t
            else:
                R[:, j] = R[:, p] @ Rl
                X[:, j] = X[:, p] + np.einsum("fab,fb->fa", R[:, p], t)
        return R, X


def _axis_rotation(axis: int, a: np.ndarray) -> np.ndarray:
    """(F,) angles rad -> (F, 3, 3) rotations about x (0), y (1) or z (2)."""
    c, s = np.cos(a), np.sin(a)
    M = np.zeros(a.shape + (3, 3))
    i, k = [(1, 2), (2, 0), (0, 1)][axis]
    M[..., axis, axis] = 1.0
    M[..., i, i], M[..., i, k], M[..., k, i], M[..., k, k] = c, -s, s, c
    return M


def read_bvh(path: str | Path) -> BVHFile:
    """Parse a BVH file (HIERARCHY + MOTION); errors name the file and the line."""
    path = Path(path)
    text = path.read_text(encoding="ascii", errors="strict")
    lines = [ln.strip() for ln in text.splitlines()]
    names: list[str] = []
    parents: list[int] = []
    offsets: list[list[float]] = []
    channels: list[list[str]] = []
    end_sites: dict[int, np.ndarray] = {}
    stack: list[int] = []  # positions of the open joints; -2 marks an open End Site
    i = 0

    def fail(msg: str) -> ValueError:
        return ValueError(f"{path}:{i + 1}: {msg}")

    if not lines or lines[0] != "HIERARCHY":
        raise fail("expected 'HIERARCHY' on the first line")
    i = 1
    while i < len(lines):
        tok = lines[i].split()
        if not tok:
            i += 1
            continue
        if tok[0] in ("ROOT", "JOINT"):
            if len(tok) != 2:
                raise fail(f"expected '{tok[0]} <name>'")
            if (tok[0] == "ROOT") != (not stack):
                raise fail("ROOT must be the outermost joint and JOINTs must be inside one")
            parents.append(stack[-1] if stack else -1)
            names.append(tok[1])
            offsets.append([np.nan] * 3)
            channels.append([])
            stack.append(len(names) - 1)
        elif tok[0] == "End" and tok[1:] == ["Site"]:
            if not stack or stack[-1] < 0:
                raise fail("End Site outside a joint")
            stack.append(-2)
        elif tok[0] == "{":
            pass
        elif tok[0] == "}":
            if not stack:
                raise fail("unbalanced '}'")
            stack.pop()
        elif tok[0] == "OFFSET":
            if len(tok) != 4 or not stack:
                raise fail("expected 'OFFSET x y z' inside a joint")
            v = [float(x) for x in tok[1:]]
            if stack[-1] == -2:
                end_sites[stack[-2]] = np.array(v)
            else:
                offsets[stack[-1]] = v
        elif tok[0] == "CHANNELS":
            if not stack or stack[-1] < 0 or len(tok) < 2 or int(tok[1]) != len(tok) - 2:
                raise fail("expected 'CHANNELS n name...' inside a joint")
            channels[stack[-1]] = tok[2:]
        elif tok[0] == "MOTION":
            break
        else:
            raise fail(f"unexpected {tok[0]!r}")
        i += 1
    if stack or i >= len(lines):
        raise fail("hierarchy not closed or MOTION section missing")
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: duplicate joint names")
    try:
        n_frames = int(lines[i + 1].split(":")[1])
        frame_time = float(lines[i + 2].split(":")[1])
    except (IndexError, ValueError) as e:
        raise ValueError(f"{path}:{i + 2}: expected 'Frames: n' and 'Frame Time: s' after MOTION") from e
    n_ch = sum(len(c) for c in channels)
    rows = [ln for ln in lines[i + 3:] if ln]
    motion = np.array([[float(x) for x in ln.split()] for ln in rows], dtype=np.float64).reshape(len(rows), -1)
    if motion.shape != (n_frames, n_ch):
        raise ValueError(f"{path}: MOTION has shape {motion.shape}, header says {n_frames} frames x {n_ch} channels")
    return BVHFile(names=names, parents=parents, offsets=np.array(offsets, dtype=np.float64), channels=channels,
                   end_sites=end_sites, motion=motion, frame_time=frame_time)


# ---- CLI ----------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m exporters.bvh",
        description="Write generated MHR motion (train.infer npz, stacked or single-frame SAM 3D Body npz) as a BVH "
                    "of the MHR skeleton (+Y up, subject faces +Z; see docs/EXPORT.md).")
    ap.add_argument("input", help="npz with mhr_model_params (T, 204) / (204,), SAM 3D Body fields, or motion (T, 320)")
    ap.add_argument("-o", "--out", help="output .bvh (default: the input path with .bvh)")
    ap.add_argument("--offsets", default="mean",
                    help="bone offsets: mean (generic skeleton, default) | per-sample-N (N = 0..3, the rig's sample "
                         "subjects) | input (exact, from the file's pred_joint_coords)")
    ap.add_argument("--units", default="cm", choices=sorted(UNIT_SCALE), help="position units (default cm)")
    ap.add_argument("--fps", type=float, default=None, help="override the frame rate (default: the file's fps or 30)")
    args = ap.parse_args(argv)
    try:
        motion = load_motion(args.input)
        offsets = resolve_offsets(args.offsets, motion)
        out = Path(args.out) if args.out else Path(args.input).with_suffix(".bvh")
        fps = args.fps or motion.fps
        print(f"{args.input}: {len(motion.mp)} frames at {fps:g} fps from {motion.source_key!r}; "
              f"offsets {args.offsets}; writing {out}", file=sys.stderr)
        write_bvh(out, motion.mp, offsets, fps=fps, units=args.units)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
