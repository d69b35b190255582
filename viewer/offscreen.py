"""Headless rendering: an EGL moderngl context with a multisampled framebuffer, read back as RGB arrays."""
from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import moderngl
import numpy as np

from viewer.avatar import Primitives
from viewer.camera import Camera
from viewer.scene import MeshFrame, Scene


class HeadlessUnavailable(RuntimeError):
    """No headless OpenGL (EGL) context could be created."""


def create_headless_context() -> moderngl.Context:
    """A standalone OpenGL >= 3.3 context through EGL (no display needed)."""
    errors = []
    for kw in ({"backend": "egl"}, {}):
        try:
            return moderngl.create_standalone_context(require=330, **kw)
        except Exception as e:  # noqa: BLE001 - try the next backend, report all at the end
            errors.append(f"{kw or 'default'}: {e}")
    raise HeadlessUnavailable(
        "could not create a headless OpenGL 3.3 context (" + "; ".join(errors) + "). Install EGL/Mesa "
        "(Debian: libegl1 libegl-mesa0 libgl1-mesa-dri) or run under a display.")


class OffscreenRenderer:
    """Renders frames of size ``(width, height)`` off screen.

    Args:
        size: (width, height) in pixels.
        samples: MSAA samples (0 = none).
        ctx: an existing context (default: a new headless EGL one).
    """

    def __init__(self, size: tuple[int, int], samples: int = 4, ctx: moderngl.Context | None = None) -> None:
        self.ctx = ctx or create_headless_context()
        self.size = (int(size[0]), int(size[1]))
        with self.ctx:  # make it current: another context may have been created (or released) since
            self.scene = Scene(self.ctx)
            samples = min(samples, self.ctx.max_samples) if samples else 0
            self.fbo = self.ctx.framebuffer(
                color_attachments=[self.ctx.renderbuffer(self.size)],
                depth_attachment=self.ctx.depth_renderbuffer(self.size))
            self.fbo_ms = None
            if samples > 1:
                self.fbo_ms = self.ctx.framebuffer(
                    color_attachments=[self.ctx.renderbuffer(self.size, samples=samples)],
                    depth_attachment=self.ctx.depth_renderbuffer(self.size, samples=samples))

    def render(self, camera: Camera, prims: Primitives | None = None, mesh: MeshFrame | None = None,
               floor_y: float = 0.0, center: np.ndarray | None = None, show_floor: bool = True) -> np.ndarray:
        """Draw one frame and return it as (H, W, 3) uint8, top row first."""
        with self.ctx:  # make this context current (another renderer may have been created since)
            target = self.fbo_ms or self.fbo
            target.viewport = (0, 0, *self.size)
            self.scene.draw(target, camera, prims, mesh, floor_y, center, show_floor)
            if self.fbo_ms is not None:
                self.ctx.copy_framebuffer(self.fbo, self.fbo_ms)
            data = self.fbo.read(components=3, alignment=1)
        img = np.frombuffer(data, np.uint8).reshape(self.size[1], self.size[0], 3)
        return img[::-1].copy()

    def release(self) -> None:
        self.ctx.release()


def write_png(path: str | os.PathLike, img: np.ndarray) -> None:
    """Write an (H, W, 3) uint8 image as PNG (zlib only, no imaging library needed)."""
    img = np.ascontiguousarray(img, np.uint8)
    h, w = img.shape[:2]
    raw = b"".join(b"\x00" + img[y].tobytes() for y in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(png)


def read_png(path: str | os.PathLike) -> np.ndarray:
    """Read an 8-bit RGB/RGBA PNG written by :func:`write_png` (filter types 0/2 only) -> (H, W, 3) uint8."""
    data = Path(path).read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path}: not a PNG file")
    pos, idat, w, h, ch = 8, b"", 0, 0, 3
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        tag, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        if tag == b"IHDR":
            w, h, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", body)
            if depth != 8 or ctype not in (2, 6) or interlace:
                raise ValueError(f"{path}: only 8-bit RGB/RGBA non-interlaced PNG supported")
            ch = 3 if ctype == 2 else 4
        elif tag == b"IDAT":
            idat += body
        pos += 12 + n
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, 1 + w * ch)
    if np.any((raw[:, 0] != 0) & (raw[:, 0] != 2)):
        raise ValueError(f"{path}: PNG filter types other than 0/2 are not supported by this reader")
    out = raw[:, 1:].copy()
    for y in range(1, h):
        if raw[y, 0] == 2:
            out[y] = out[y] + out[y - 1]  # uint8 wraps like the PNG 'up' filter
    return out.reshape(h, w, ch)[..., :3]
