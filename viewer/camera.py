"""Cameras for the viewer: the source (video) camera, a front camera and an orbit/zoom camera.

World = native MHR frame in centimetres (+Y up, the subject faces +Z, subject's left = +X). Matrices are numpy
row-major (column vectors: ``clip = proj @ view @ [x, y, z, 1]``); ``Camera.vp_gl`` gives the column-major bytes GL
expects.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from models.layout import SessionConstants

NEAR_CM = 5.0
FAR_CM = 20000.0


@dataclass
class Camera:
    """A camera ready to draw with.

    Attributes:
        view: (4, 4) world -> eye.
        proj: (4, 4) eye -> clip (OpenGL conventions).
        eye: (3,) camera position in world cm.
    """

    view: np.ndarray
    proj: np.ndarray
    eye: np.ndarray

    @property
    def vp(self) -> np.ndarray:
        return self.proj @ self.view

    def vp_gl(self) -> bytes:
        return np.ascontiguousarray(self.vp.T, np.float32).tobytes()

    def yaw_light(self, direction=(-0.35, 0.85, 0.45)) -> np.ndarray:
        """A key-light direction (towards the light) given in the camera's yaw frame: follows orbiting, stays above."""
        fwd = -self.view[2, :3]  # camera looks along -Z of eye space
        f = np.array([fwd[0], 0.0, fwd[2]])
        n = np.linalg.norm(f)
        f = f / n if n > 1e-6 else np.array([0.0, 0.0, -1.0])
        right = np.cross(f, [0.0, 1.0, 0.0])
        back = -f
        d = np.asarray(direction, np.float64)
        v = right * d[0] + np.array([0.0, 1.0, 0.0]) * d[1] + back * d[2]
        return v / np.linalg.norm(v)


def perspective(fov_y_rad: float, aspect: float, near: float = NEAR_CM, far: float = FAR_CM) -> np.ndarray:
    f = 1.0 / math.tan(fov_y_rad / 2)
    return np.array([
        [f / aspect, 0, 0, 0],
        [0, f, 0, 0],
        [0, 0, (far + near) / (near - far), 2 * far * near / (near - far)],
        [0, 0, -1, 0],
    ])


def look_at(eye, target, up=(0.0, 1.0, 0.0)) -> np.ndarray:
    eye, target, up = (np.asarray(a, np.float64) for a in (eye, target, up))
    z = eye - target
    z /= max(np.linalg.norm(z), 1e-9)
    x = np.cross(up, z)
    if np.linalg.norm(x) < 1e-6:  # looking straight up/down
        x = np.cross([0.0, 0.0, 1.0], z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    m = np.eye(4)
    m[0, :3], m[1, :3], m[2, :3] = x, y, z
    m[:3, 3] = -m[:3, :3] @ eye
    return m


def source_camera(constants: SessionConstants, aspect: float | None = None) -> Camera:
    """The original video's camera (mhr_spec.md §4 option B).

    OpenGL camera at ``100 * (-tx, +ty, +tz)`` cm with identity rotation (looking down -Z at the subject's front),
    ``fov_y = 2 atan(H / 2f)``. ``aspect`` defaults to the source image's W/H; a different aspect keeps fov_y.
    """
    t = np.asarray(constants.pred_cam_t, np.float64)
    eye = 100.0 * np.array([-t[0], t[1], t[2]])
    fov = 2.0 * math.atan(constants.image_height / (2.0 * constants.focal_length))
    a = aspect or constants.image_width / constants.image_height
    view = np.eye(4)
    view[:3, 3] = -eye
    near = max(NEAR_CM, 0.05 * abs(eye[2])) if eye[2] > 0 else NEAR_CM
    return Camera(view, perspective(fov, a, near=near), eye)


@dataclass
class OrbitCamera:
    """A turntable camera around ``target`` (cm); mouse drag rotates, scroll zooms, shift-drag pans.

    Yaw 0 looks at the subject's front (camera on +Z). Pitch is kept above the floor.
    """

    target: np.ndarray
    distance: float = 400.0
    yaw: float = 0.0  # radians, about +Y
    pitch: float = 0.12  # radians, positive = above
    fov_y_deg: float = 35.0

    def eye(self) -> np.ndarray:
        cp = math.cos(self.pitch)
        d = np.array([math.sin(self.yaw) * cp, math.sin(self.pitch), math.cos(self.yaw) * cp])
        return np.asarray(self.target, np.float64) + self.distance * d

    def camera(self, aspect: float) -> Camera:
        eye = self.eye()
        near = max(NEAR_CM, self.distance * 0.02)
        return Camera(look_at(eye, self.target), perspective(math.radians(self.fov_y_deg), aspect, near=near), eye)

    def rotate(self, dx_px: float, dy_px: float, speed: float = 0.008) -> None:
        self.yaw -= dx_px * speed
        self.pitch = float(np.clip(self.pitch - dy_px * speed, math.radians(-5), math.radians(85)))

    def zoom(self, steps: float) -> None:
        self.distance = float(np.clip(self.distance * (0.9 ** steps), 40.0, 5000.0))

    def pan(self, dx_px: float, dy_px: float) -> None:
        eye = self.eye()
        v = look_at(eye, self.target)
        k = self.distance * 0.0015
        self.target = np.asarray(self.target, np.float64) - v[0, :3] * dx_px * k - v[1, :3] * dy_px * k


def framing(points_cm: np.ndarray, fov_y_deg: float = 35.0, aspect: float = 16 / 9, margin: float = 1.15):
    """Target and distance that fit a cloud of points (..., 3) cm in view from the front."""
    p = np.asarray(points_cm, np.float64).reshape(-1, 3)
    p = p[np.isfinite(p).all(1)]
    lo, hi = p.min(0), p.max(0)
    target = (lo + hi) / 2
    half_h = (hi[1] - lo[1]) / 2 * margin
    half_w = max(hi[0] - lo[0], hi[2] - lo[2]) / 2 * margin
    t = math.tan(math.radians(fov_y_deg) / 2)
    dist = max(half_h / t, half_w / (t * aspect)) + (hi[2] - lo[2]) / 2
    return target, float(max(dist, 60.0))
