"""Proxy avatar without MHR assets: shaded capsules and ellipsoids driven by the asset-free 127-joint rig.

Every shape is designed once in the generic rest pose (all parameters 0, native frame, cm) and attached to a joint:
at run time it follows that joint rigidly, ``p = X_j + R_j R_rest_j^T (p_rest - X_rest_j)``. The lower jaw hangs on a
pseudo-joint 127 = ``c_jaw`` rotated by the jaw channel (Euler XYZ in the joint's local frame; the hinge is local x
through ``c_jaw``, mhr_rig.md §9), so opening the mouth reveals a dark mouth cavity.

Output per frame is a :class:`Primitives`: instanced capsules (tapered, round caps) and ellipsoids.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.rig import forward_kinematics, load_rig
from models.rotations import euler_to_matrix

JAW_JOINT = 114  # c_jaw
JAW_PSEUDO = 127  # c_jaw rotated by the jaw channel

COLORS = {
    "skin": (0.90, 0.70, 0.58),
    "shirt": (0.24, 0.44, 0.72),
    "pants": (0.20, 0.22, 0.29),
    "shoes": (0.11, 0.11, 0.12),
    "hair": (0.20, 0.13, 0.09),
    "eye": (0.06, 0.06, 0.08),
    "mouth": (0.32, 0.05, 0.06),
    "lips": (0.72, 0.42, 0.40),
}

# (joint name, rest-world point or None = the joint itself)
Anchor = tuple[str, tuple[float, float, float] | None]

_FINGER_RADII = {"index": (0.95, 0.85, 0.75), "middle": (1.0, 0.9, 0.78), "ring": (0.93, 0.83, 0.73),
                 "pinky": (0.8, 0.72, 0.64)}


def _mirror(p: tuple[float, float, float] | None, s: float):
    return None if p is None else (p[0] * s, p[1], p[2])


def _capsule_table() -> list[tuple[Anchor, Anchor, float, float, str]]:
    caps: list[tuple[Anchor, Anchor, float, float, str]] = []
    for side, s in (("l", 1.0), ("r", -1.0)):
        def j(n: str, side: str = side) -> str:
            return f"{side}_{n}"

        # legs
        caps += [
            ((j("upleg"), None), (j("lowleg"), None), 8.6, 5.9, "pants"),
            ((j("lowleg"), None), (j("foot"), None), 5.7, 4.0, "pants"),
            ((j("foot"), _mirror((16.9, 3.6, -8.0), s)), (j("ball"), _mirror((18.3, 3.3, 7.3), s)), 3.6, 3.3, "shoes"),
            ((j("ball"), _mirror((18.3, 3.3, 7.3), s)), (j("ball"), _mirror((18.6, 2.6, 13.5), s)), 3.3, 2.6,
             "shoes"),
        ]
        # shoulders and arms (upper arm: skin with a short sleeve over it)
        caps += [
            (("c_spine3", _mirror((3.0, 141.5, -1.5), s)), (j("uparm"), None), 6.2, 5.6, "shirt"),
            ((j("clavicle"), _mirror((5.0, 139.0, 1.0), s)), (j("uparm"), None), 5.6, 5.6, "shirt"),
            ((j("uparm"), None), (j("lowarm"), None), 4.6, 3.8, "skin"),
            ((j("uparm"), None), (j("uparm"), _mirror((21.3, 132.5, -2.6), s)), 5.4, 4.9, "shirt"),
            ((j("lowarm"), None), (j("wrist"), None), 3.7, 2.5, "skin"),
        ]
        # fingers: three phalanges each, then the thumb
        for f, radii in _FINGER_RADII.items():
            chain = [f"{f}1", f"{f}2", f"{f}3", f"{f}_null"]
            for k in range(3):
                r0 = radii[k]
                r1 = radii[k + 1] if k < 2 else radii[k] * 0.9
                caps.append(((j(chain[k]), None), (j(chain[k + 1]), None), r0, r1, "skin"))
        thumb = [("thumb0", "thumb1", 1.55, 1.35), ("thumb1", "thumb2", 1.3, 1.15), ("thumb2", "thumb3", 1.1, 1.0),
                 ("thumb3", "thumb_null", 0.98, 0.85)]
        caps += [((j(a), None), (j(b), None), r0, r1, "skin") for a, b, r0, r1 in thumb]
        caps.append(((j("wrist"), None), (j("thumb0"), None), 1.9, 1.6, "skin"))
    # neck (the torso is an elliptical tube, see _TORSO)
    caps += [
        (("c_spine3", (0.0, 138.0, -2.0)), ("c_neck", (0.0, 143.0, 0.5)), 6.5, 5.8, "shirt"),
        (("c_neck", (0.0, 141.0, 0.2)), ("c_head", (0.0, 156.0, 2.5)), 5.3, 4.9, "skin"),
    ]
    return caps


# torso: a chain of elliptical-section capsules (anchor, half-width cm, depth/width ratio), pelvis to shoulders
_TORSO: list[tuple[Anchor, float, float]] = [
    (("root", (0.0, 85.0, -0.5)), 13.6, 0.74),
    (("root", (0.0, 96.5, -0.5)), 14.6, 0.70),
    (("c_spine1", (0.0, 107.0, 0.0)), 14.0, 0.72),
    (("c_spine2", (0.0, 118.0, 0.0)), 14.6, 0.72),
    (("c_spine3", (0.0, 128.5, 0.5)), 16.0, 0.68),
    (("c_spine3", (0.0, 136.5, -1.0)), 14.0, 0.66),
]
_TORSO_COLORS = ("pants", "shirt", "shirt", "shirt", "shirt")


def _ellipsoid_table() -> list[tuple[str, tuple[float, float, float], tuple[float, float, float],
                                     tuple[float, float, float], str]]:
    """(joint, rest-world centre, semi-axes, Euler XYZ degrees of the rest orientation, colour)."""
    E = [
        # head: cranium, hair cap, upper face, nose, mouth cavity, lower jaw (on the jaw pseudo-joint)
        ("c_head", (0.0, 161.6, 2.8), (8.0, 11.6, 9.8), (0, 0, 0), "skin"),
        ("c_head", (0.0, 166.0, 0.8), (8.5, 9.4, 10.0), (-8, 0, 0), "hair"),
        ("c_head", (0.0, 159.2, 12.0), (1.1, 2.0, 1.4), (-20, 0, 0), "skin"),
        ("c_head", (0.0, 156.6, 8.0), (3.4, 1.8, 3.9), (0, 0, 0), "skin"),  # upper lip
        ("c_head", (0.0, 154.4, 8.2), (2.8, 1.8, 3.1), (0, 0, 0), "mouth"),
        ("c_jaw", (0.0, 152.6, 6.0), (5.2, 2.6, 6.0), (-10, 0, 0), "skin"),  # lower lip and chin
    ]
    for side, s in (("l", 1.0), ("r", -1.0)):
        E += [
            (f"{side}_eye", (3.0 * s, 162.6, 11.4), (1.0, 1.0, 1.0), (0, 0, 0), "eye"),
            ("c_head", (8.0 * s, 161.5, 2.0), (1.3, 2.8, 1.9), (0, 0, 0), "skin"),
            (f"{side}_uparm", (14.5 * s, 140.5, -3.0), (6.0, 6.0, 6.0), (0, 0, 0), "shirt"),
        ]
    return E


@dataclass
class Primitives:
    """One frame of proxy geometry (native world, cm).

    Attributes:
        capsules: (N, 16) float32 rows ``p0(3), r0, p1(3), r1, rgb(3), side(3), k0, k1``: a tapered capsule whose
            cross-section is an ellipse with half-width r along ``side`` and half-depth k*r across it (k = 1: round).
        ellipsoids: (M, 15) float32 rows ``centre(3), axis0(3), axis1(3), axis2(3), rgb(3)``; axes are the
            semi-axis vectors (columns of the ellipsoid's linear map).
    """

    capsules: np.ndarray
    ellipsoids: np.ndarray

    def lowest_point(self) -> float:
        """Lowest y (cm) of the surface (capsules exactly, ellipsoids by their axis-aligned extent)."""
        c = self.capsules
        y = min(float(np.min(c[:, 1] - c[:, 3])), float(np.min(c[:, 5] - c[:, 7])))
        e = self.ellipsoids
        if len(e):
            ext = np.sqrt(e[:, 4] ** 2 + e[:, 7] ** 2 + e[:, 10] ** 2)
            y = min(y, float(np.min(e[:, 1] - ext)))
        return y

    def points(self) -> np.ndarray:
        return np.concatenate([self.capsules[:, 0:3], self.capsules[:, 4:7], self.ellipsoids[:, 0:3]])


class ProxyAvatar:
    """Builds :class:`Primitives` from ``mhr_model_params`` (or from FK results).

    Args:
        offsets: (127, 3) subject bone offsets in cm (models.rig.offsets_from_joints); None = generic skeleton.
    """

    def __init__(self, offsets: np.ndarray | None = None) -> None:
        rig = load_rig()
        self.offsets = None if offsets is None else np.asarray(offsets, np.float64)
        R0, X0 = forward_kinematics(np.zeros(204))  # generic rest pose: the design frame
        self._R_rest = np.concatenate([R0, R0[JAW_JOINT:JAW_JOINT + 1]])  # (128, 3, 3)
        self._X_rest = np.concatenate([X0, X0[JAW_JOINT:JAW_JOINT + 1]])
        name = {n: i for i, n in enumerate(rig.joint_names)}

        def anchor(a: Anchor) -> tuple[int, np.ndarray]:
            j = name[a[0]]
            return j, np.zeros(3) if a[1] is None else np.asarray(a[1], np.float64) - X0[j]

        caps = [(a, b, ra, rb, col, 1.0, 1.0) for a, b, ra, rb, col in _capsule_table()]
        caps += [(_TORSO[i][0], _TORSO[i + 1][0], _TORSO[i][1], _TORSO[i + 1][1], _TORSO_COLORS[i], _TORSO[i][2],
                  _TORSO[i + 1][2]) for i in range(len(_TORSO) - 1)]
        ja, da = zip(*(anchor(c[0]) for c in caps))
        jb, db = zip(*(anchor(c[1]) for c in caps))
        self._cap_j = np.array([ja, jb])  # (2, N)
        self._cap_d = np.stack([np.array(da), np.array(db)])  # (2, N, 3)
        self._cap_r = np.array([[c[2], c[3]] for c in caps], np.float32)  # (N, 2)
        self._cap_rgb = np.array([COLORS[c[4]] for c in caps], np.float32)
        self._cap_k = np.array([[c[5], c[6]] for c in caps], np.float32)  # (N, 2)

        ells = _ellipsoid_table()
        ej, ed, ea, ergb = [], [], [], []
        for jn, centre, semi, eul, col in ells:
            j = JAW_PSEUDO if jn == "c_jaw" else name[jn]
            ej.append(j)
            ed.append(np.asarray(centre) - self._X_rest[j])
            ea.append(euler_to_matrix(np.radians(eul)) @ np.diag(semi))
            ergb.append(COLORS[col])
        for side in ("l", "r"):  # palms: flattened ellipsoids spanning the wrist and the knuckles
            w, m1 = X0[name[f"{side}_wrist"]], X0[name[f"{side}_middle1"]]
            along = m1 - w
            across = X0[name[f"{side}_index1"]] - X0[name[f"{side}_pinky1"]]
            a = along / np.linalg.norm(along)
            c = across - (across @ a) * a
            c /= np.linalg.norm(c)
            n = np.cross(a, c)
            ej.append(name[f"{side}_wrist"])
            ed.append((w + m1) / 2 + 0.4 * a - X0[name[f"{side}_wrist"]])
            ea.append(np.stack([a * (np.linalg.norm(along) / 2 + 0.9), c * 3.9, n * 1.6], axis=1))
            ergb.append(COLORS["skin"])
        self._ell_j = np.array(ej)
        self._ell_d = np.array(ed)
        self._ell_a = np.array(ea)  # (M, 3, 3) rest semi-axis columns
        self._ell_rgb = np.array(ergb, np.float32)

    @property
    def n_capsules(self) -> int:
        return len(self._cap_r)

    @property
    def n_ellipsoids(self) -> int:
        return len(self._ell_j)

    def fk(self, model_params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(T, 204) or (204,) -> global rotations (T, 127, 3, 3) and positions (T, 127, 3) in cm."""
        return forward_kinematics(model_params, self.offsets)

    def primitives(self, R: np.ndarray, X: np.ndarray, jaw: np.ndarray | None = None,
                   mouth_open: float | None = None) -> Primitives:
        """One frame of geometry from FK results.

        Args:
            R: (127, 3, 3) global joint rotations.
            X: (127, 3) joint positions, cm.
            jaw: (3,) jaw Euler XYZ (radians, ``body_pose_params[130:133]``).
            mouth_open: jaw opening (radians about the hinge) used when the jaw channel is all zero.
        """
        jaw = np.zeros(3) if jaw is None else np.asarray(jaw, np.float64)
        if mouth_open is not None and not np.any(jaw):
            jaw = np.array([float(mouth_open), 0.0, 0.0])
        Rj = R[JAW_JOINT] @ euler_to_matrix(jaw)
        Re = np.concatenate([R, Rj[None]])
        Xe = np.concatenate([X, X[JAW_JOINT:JAW_JOINT + 1]])
        Rrel = Re @ np.swapaxes(self._R_rest, -1, -2)  # (128, 3, 3)

        pa = Xe[self._cap_j] + np.einsum("knab,knb->kna", Rrel[self._cap_j], self._cap_d)  # (2, N, 3)
        side = Rrel[self._cap_j[0]][:, :, 0]  # the rest-pose +X (subject's left) carried by the first anchor's joint
        caps = np.concatenate([pa[0], self._cap_r[:, :1], pa[1], self._cap_r[:, 1:], self._cap_rgb, side,
                               self._cap_k], axis=1)
        Rj_e = Rrel[self._ell_j]
        centre = Xe[self._ell_j] + np.einsum("nab,nb->na", Rj_e, self._ell_d)
        axes = Rj_e @ self._ell_a  # (M, 3, 3), columns = semi-axes
        ells = np.concatenate([centre, np.swapaxes(axes, 1, 2).reshape(-1, 9), self._ell_rgb], axis=1)
        return Primitives(caps.astype(np.float32), ells.astype(np.float32))

    def pose(self, model_params: np.ndarray, jaw: np.ndarray | None = None,
             mouth_open: float | None = None) -> Primitives:
        """(204,) ``mhr_model_params`` (+ jaw) -> Primitives."""
        R, X = self.fk(np.asarray(model_params)[None])
        return self.primitives(R[0], X[0], jaw, mouth_open)
