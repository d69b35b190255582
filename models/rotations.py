"""Rotation conversions used across the project (numpy; torch versions where models need them).

Convention (MHR / Momentum, SAM 3D Body's ``global_rot``): Euler XYZ angles (rx, ry, rz) in radians with
``R = Rz(rz) @ Ry(ry) @ Rx(rx)`` (x applied first). 6D = the first two COLUMNS of R.
"""
from __future__ import annotations

import numpy as np
import torch


def euler_to_matrix(e: np.ndarray) -> np.ndarray:
    """(..., 3) Euler XYZ -> (..., 3, 3) with R = Rz @ Ry @ Rx."""
    e = np.asarray(e, dtype=np.float64)
    cx, cy, cz = np.cos(e[..., 0]), np.cos(e[..., 1]), np.cos(e[..., 2])
    sx, sy, sz = np.sin(e[..., 0]), np.sin(e[..., 1]), np.sin(e[..., 2])
    R = np.empty(e.shape[:-1] + (3, 3))
    R[..., 0, 0] = cz * cy
    R[..., 0, 1] = cz * sy * sx - sz * cx
    R[..., 0, 2] = cz * sy * cx + sz * sx
    R[..., 1, 0] = sz * cy
    R[..., 1, 1] = sz * sy * sx + cz * cx
    R[..., 1, 2] = sz * sy * cx - cz * sx
    R[..., 2, 0] = -sy
    R[..., 2, 1] = cy * sx
    R[..., 2, 2] = cy * cx
    return R


def matrix_to_euler(R: np.ndarray) -> np.ndarray:
    """(..., 3, 3) -> (..., 3) Euler XYZ (inverse of ``euler_to_matrix``; y in [-pi/2, pi/2])."""
    R = np.asarray(R, dtype=np.float64)
    x = np.arctan2(R[..., 2, 1], R[..., 2, 2])
    y = np.arctan2(-R[..., 2, 0], np.sqrt(R[..., 0, 0] ** 2 + R[..., 1, 0] ** 2))
    z = np.arctan2(R[..., 1, 0], R[..., 0, 0])
    return np.stack([x, y, z], axis=-1)


def matrix_to_6d(R: np.ndarray) -> np.ndarray:
    """(..., 3, 3) -> (..., 6): first column then second column."""
    return np.concatenate([R[..., :, 0], R[..., :, 1]], axis=-1)


def sixd_to_matrix(d6: np.ndarray) -> np.ndarray:
    """(..., 6) -> (..., 3, 3) by Gram-Schmidt on the two columns."""
    d6 = np.asarray(d6, dtype=np.float64)
    a, b = d6[..., :3], d6[..., 3:]
    x = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-8)
    b = b - (x * b).sum(-1, keepdims=True) * x
    y = b / np.maximum(np.linalg.norm(b, axis=-1, keepdims=True), 1e-8)
    z = np.cross(x, y)
    return np.stack([x, y, z], axis=-1)


def matrix_to_quat(R: np.ndarray) -> np.ndarray:
    """(..., 3, 3) -> (..., 4) unit quaternion (x, y, z, w), w >= 0 (vectorised, numerically safe branches)."""
    m = np.asarray(R, dtype=np.float64)
    r00, r11, r22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    # squared magnitudes of each component, from the diagonal; pick the largest for the stable formula
    cand = np.stack([1 + r00 - r11 - r22, 1 - r00 + r11 - r22, 1 - r00 - r11 + r22, 1 + r00 + r11 + r22], -1)
    k = cand.argmax(-1)
    s = np.sqrt(np.maximum(np.take_along_axis(cand, k[..., None], -1)[..., 0], 1e-12)) * 2  # = 4 * |q_k|
    d21, d02, d10 = m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]
    s01, s02, s12 = m[..., 0, 1] + m[..., 1, 0], m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1]
    q = np.stack([
        np.select([k == 0, k == 1, k == 2], [0.25 * s, s01 / s, s02 / s], d21 / s),
        np.select([k == 0, k == 1, k == 2], [s01 / s, 0.25 * s, s12 / s], d02 / s),
        np.select([k == 0, k == 1, k == 2], [s02 / s, s12 / s, 0.25 * s], d10 / s),
        np.select([k == 0, k == 1, k == 2], [d21 / s, d02 / s, d10 / s], 0.25 * s),
    ], -1)
    q /= np.linalg.norm(q, axis=-1, keepdims=True)
    return q * np.where(q[..., 3:4] < 0, -1.0, 1.0)


def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """(..., 4) quaternion (x, y, z, w) -> (..., 3, 3)."""
    q = np.asarray(q, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    x, y, z, w = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    R = np.empty(q.shape[:-1] + (3, 3))
    R[..., 0, 0] = 1 - 2 * (y * y + z * z)
    R[..., 0, 1] = 2 * (x * y - z * w)
    R[..., 0, 2] = 2 * (x * z + y * w)
    R[..., 1, 0] = 2 * (x * y + z * w)
    R[..., 1, 1] = 1 - 2 * (x * x + z * z)
    R[..., 1, 2] = 2 * (y * z - x * w)
    R[..., 2, 0] = 2 * (x * z - y * w)
    R[..., 2, 1] = 2 * (y * z + x * w)
    R[..., 2, 2] = 1 - 2 * (x * x + y * y)
    return R


def slerp(q0: np.ndarray, q1: np.ndarray, t: np.ndarray | float) -> np.ndarray:
    """Spherical interpolation between quaternions (..., 4), shortest path."""
    q0 = np.asarray(q0, dtype=np.float64)
    q1 = np.asarray(q1, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)[..., None]
    dot = (q0 * q1).sum(-1, keepdims=True)
    q1 = np.where(dot < 0, -q1, q1)
    dot = np.abs(dot).clip(-1.0, 1.0)
    theta = np.arccos(dot)
    s = np.sin(theta)
    small = s < 1e-6
    w0 = np.where(small, 1 - t, np.sin((1 - t) * theta) / np.where(small, 1, s))
    w1 = np.where(small, t, np.sin(t * theta) / np.where(small, 1, s))
    out = w0 * q0 + w1 * q1
    return out / np.linalg.norm(out, axis=-1, keepdims=True)


def geodesic_angle(R1: np.ndarray, R2: np.ndarray) -> np.ndarray:
    """Angle (rad) of R1^T R2, (...)."""
    tr = np.einsum("...ji,...ji->...", R1, R2)
    return np.arccos(np.clip((tr - 1) / 2, -1.0, 1.0))


def unwrap_euler(e: np.ndarray) -> np.ndarray:
    """Continuous Euler XYZ over time (T, 3), free of +-pi jumps and gimbal flips.

    Per frame two Euler triples give the same rotation: (x, y, z) and (x+pi, pi-y, z+pi). Near y = +-pi/2 (profile
    views) the extraction can jump between them. We pick, frame by frame, the equivalent triple (each branch
    shifted by multiples of 2*pi) closest to the previous frame, so the angles stay continuous and still encode
    exactly the same rotations.
    """
    e = np.asarray(e, dtype=np.float64)
    if e.ndim != 2 or e.shape[1] != 3:
        raise ValueError(f"unwrap_euler expects (T, 3), got {e.shape}")
    out = e.copy()
    for t in range(1, len(e)):
        prev = out[t - 1]
        best, best_d = None, np.inf
        for cand in (e[t], np.array([e[t, 0] + np.pi, np.pi - e[t, 1], e[t, 2] + np.pi])):
            c = cand + 2 * np.pi * np.round((prev - cand) / (2 * np.pi))
            d = np.abs(c - prev).sum()
            if d < best_d:
                best, best_d = c, d
        out[t] = best
    return out


# ---- torch versions (used inside models / losses) ----------------------------------------------------------------

def sixd_to_matrix_t(d6: torch.Tensor) -> torch.Tensor:
    """(..., 6) -> (..., 3, 3), differentiable Gram-Schmidt."""
    a, b = d6[..., :3], d6[..., 3:]
    x = torch.nn.functional.normalize(a, dim=-1, eps=1e-6)
    b = b - (x * b).sum(-1, keepdim=True) * x
    y = torch.nn.functional.normalize(b, dim=-1, eps=1e-6)
    z = torch.cross(x, y, dim=-1)
    return torch.stack([x, y, z], dim=-1)


def matrix_to_euler_t(R: torch.Tensor) -> torch.Tensor:
    x = torch.atan2(R[..., 2, 1], R[..., 2, 2])
    y = torch.atan2(-R[..., 2, 0], torch.sqrt(R[..., 0, 0] ** 2 + R[..., 1, 0] ** 2))
    z = torch.atan2(R[..., 1, 0], R[..., 0, 0])
    return torch.stack([x, y, z], dim=-1)


def euler_to_matrix_t(e: torch.Tensor) -> torch.Tensor:
    cx, cy, cz = torch.cos(e[..., 0]), torch.cos(e[..., 1]), torch.cos(e[..., 2])
    sx, sy, sz = torch.sin(e[..., 0]), torch.sin(e[..., 1]), torch.sin(e[..., 2])
    row0 = torch.stack([cz * cy, cz * sy * sx - sz * cx, cz * sy * cx + sz * sx], -1)
    row1 = torch.stack([sz * cy, sz * sy * sx + cz * cx, sz * sy * cx - cz * sx], -1)
    row2 = torch.stack([-sy, cy * sx, cy * cx], -1)
    return torch.stack([row0, row1, row2], dim=-2)


def matrix_to_6d_t(R: torch.Tensor) -> torch.Tensor:
    return torch.cat([R[..., :, 0], R[..., :, 1]], dim=-1)
