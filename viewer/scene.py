"""The GL scene: backdrop, floor grid, planar shadows and the avatar (proxy primitives or an MHR mesh).

Works on any moderngl context: a headless EGL one (viewer.render) or a pyglet window's (viewer.app). One draw call
per primitive kind (instanced), so a frame is cheap even on llvmpipe.
"""
from __future__ import annotations

from dataclasses import dataclass

import moderngl
import numpy as np

from viewer import shaders
from viewer.avatar import Primitives
from viewer.camera import Camera

BACKDROP_TOP = (0.80, 0.84, 0.89)
BACKDROP_BOTTOM = (0.93, 0.93, 0.94)
FLOOR_COLOR = (0.86, 0.86, 0.87)
LINE_COLOR = (0.62, 0.64, 0.68)
SHADOW_MULTIPLY = (0.70, 0.71, 0.74)  # floor colour factor under the shadow
MESH_COLOR = (0.78, 0.70, 0.64)


@dataclass
class MeshFrame:
    """A triangle mesh to draw (native world, cm): vertices (V, 3), faces (F, 3) int, optional normals (V, 3)."""

    vertices: np.ndarray
    faces: np.ndarray
    normals: np.ndarray | None = None


def sphere_directions(n_lon: int = 32, n_lat: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """A UV sphere: unit directions (V, 3) and triangle indices (F, 3)."""
    th = np.linspace(0, np.pi, n_lat + 1)
    ph = np.linspace(0, 2 * np.pi, n_lon + 1)
    T, P = np.meshgrid(th, ph, indexing="ij")
    d = np.stack([np.sin(T) * np.cos(P), np.sin(T) * np.sin(P), np.cos(T)], -1).reshape(-1, 3)
    idx = []
    w = n_lon + 1
    for i in range(n_lat):
        for j in range(n_lon):
            a, b = i * w + j, i * w + j + 1
            c, e = a + w, b + w
            idx += [(a, c, b), (b, c, e)]
    return d.astype(np.float32), np.array(idx, np.int32)


def capsule_template(n_lon: int = 16, n_half: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Capsule mesh around +z: rows (dir x, y, z, end) and triangle indices; end 1 = the +z hemisphere at p1."""
    rows = []
    # rings from the -z pole (end 0) up to the equator, then the equator again (end 1) up to the +z pole
    th0 = np.linspace(np.pi, np.pi / 2, n_half + 1)
    th1 = np.linspace(np.pi / 2, 0, n_half + 1)
    rings = [(t, 0.0) for t in th0] + [(t, 1.0) for t in th1]
    for t, end in rings:
        for k in range(n_lon + 1):
            p = 2 * np.pi * k / n_lon
            rows.append((np.sin(t) * np.cos(p), np.sin(t) * np.sin(p), np.cos(t), end))
    w = n_lon + 1
    idx = []
    for i in range(len(rings) - 1):
        for j in range(n_lon):
            a, b = i * w + j, i * w + j + 1
            c, e = a + w, b + w
            idx += [(a, b, c), (b, e, c)]
    return np.array(rows, np.float32), np.array(idx, np.int32)


def vertex_normals(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    """Area-weighted vertex normals (V, 3) of a triangle mesh."""
    v = np.asarray(v, np.float32)
    tri = v[f]
    fn = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    n = np.zeros_like(v)
    for k in range(3):
        for c in range(3):
            n[:, c] += np.bincount(f[:, k], weights=fn[:, c], minlength=len(v))
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-9)


class Scene:
    """Everything drawable, built once per GL context.

    Args:
        ctx: the moderngl context.
        max_instances: capacity of the instance buffers.
    """

    def __init__(self, ctx: moderngl.Context, max_instances: int = 256) -> None:
        self.ctx = ctx
        self.solid_cap = ctx.program(vertex_shader=shaders.CAPSULE_VERT, fragment_shader=shaders.SOLID_FRAG)
        self.solid_ell = ctx.program(vertex_shader=shaders.ELLIPSOID_VERT, fragment_shader=shaders.SOLID_FRAG)
        self.solid_mesh = ctx.program(vertex_shader=shaders.MESH_VERT, fragment_shader=shaders.SOLID_FRAG)
        self.floor_prog = ctx.program(vertex_shader=shaders.FLOOR_VERT, fragment_shader=shaders.FLOOR_FRAG)
        self.back_prog = ctx.program(vertex_shader=shaders.BACKDROP_VERT, fragment_shader=shaders.BACKDROP_FRAG)

        cap_rows, cap_idx = capsule_template()
        self._cap_vbo = ctx.buffer(cap_rows.tobytes())
        self._cap_ibo = ctx.buffer(cap_idx.tobytes())
        self._cap_inst = ctx.buffer(reserve=max_instances * 16 * 4, dynamic=True)
        self.cap_vao = ctx.vertex_array(self.solid_cap, [
            (self._cap_vbo, "3f 1f", "in_dir", "in_end"),
            (self._cap_inst, "3f 1f 3f 1f 3f 3f 2f/i", "i_p0", "i_r0", "i_p1", "i_r1", "i_color", "i_side", "i_k"),
        ], index_buffer=self._cap_ibo)

        sph, sph_idx = sphere_directions()
        self._sph_vbo = ctx.buffer(sph.tobytes())
        self._sph_ibo = ctx.buffer(sph_idx.tobytes())
        self._ell_inst = ctx.buffer(reserve=max_instances * 15 * 4, dynamic=True)
        self.ell_vao = ctx.vertex_array(self.solid_ell, [
            (self._sph_vbo, "3f", "in_dir"),
            (self._ell_inst, "3f 3f 3f 3f 3f/i", "i_c", "i_a0", "i_a1", "i_a2", "i_color"),
        ], index_buffer=self._sph_ibo)
        self.max_instances = max_instances

        s = 20000.0
        quad = np.array([[-s, -s], [s, -s], [-s, s], [s, s]], np.float32)
        self.floor_vao = ctx.vertex_array(self.floor_prog, [(ctx.buffer(quad.tobytes()), "2f", "in_xz")])
        tri = np.array([[-1, -1], [3, -1], [-1, 3]], np.float32)
        self.back_vao = ctx.vertex_array(self.back_prog, [(ctx.buffer(tri.tobytes()), "2f", "in_xy")])
        self._mesh: dict[str, object] = {}

    # ---- drawing ------------------------------------------------------------------------------------------------

    def draw(self, fbo: moderngl.Framebuffer, camera: Camera, prims: Primitives | None = None,
             mesh: MeshFrame | None = None, floor_y: float = 0.0, center: np.ndarray | None = None,
             show_floor: bool = True) -> None:
        """Render one frame into ``fbo`` (its viewport must already cover the target)."""
        ctx = self.ctx
        light = camera.yaw_light().astype(np.float32)
        vp = camera.vp_gl()
        eye = tuple(float(x) for x in camera.eye)
        center = np.zeros(3) if center is None else np.asarray(center)
        ctx.disable(moderngl.DEPTH_TEST | moderngl.CULL_FACE | moderngl.BLEND)
        for prog in (self.solid_cap, self.solid_ell, self.solid_mesh):
            prog["u_vp"].write(vp)
            prog["u_light"].value = tuple(float(x) for x in light)
            prog["u_eye"].value = eye
            prog["u_floor"].value = float(floor_y)
            prog["u_shadow_color"].value = (1.0, 1.0, 1.0)
        if mesh is not None:
            self._upload_mesh(mesh)
            self.solid_mesh["u_color"].value = MESH_COLOR
        if prims is not None:
            self._upload_prims(prims)

        if show_floor:
            # planar shadow: the geometry flattened onto the floor along the light, written as 1.0 into a
            # screen-sized mask (idempotent: overlapping layers cannot darken twice); the floor shader reads it
            mask_fbo = self._shadow_mask(fbo.viewport[2:])
            mask_fbo.use()
            ctx.clear(0.0, 0.0, 0.0, 0.0)
            self._render_geometry(prims, mesh, shadow=1)

        fbo.use()
        ctx.clear(*BACKDROP_BOTTOM, 1.0, depth=1.0)
        self.back_prog["u_top"].value = BACKDROP_TOP
        self.back_prog["u_bottom"].value = BACKDROP_BOTTOM
        self.back_vao.render(moderngl.TRIANGLES)
        ctx.enable(moderngl.DEPTH_TEST)
        if show_floor:
            fp = self.floor_prog
            fp["u_vp"].write(vp)
            fp["u_floor"].value = float(floor_y)
            fp["u_center"].value = tuple(float(x) for x in center)
            fp["u_floor_color"].value = FLOOR_COLOR
            fp["u_line_color"].value = LINE_COLOR
            fp["u_fog_color"].value = BACKDROP_BOTTOM
            fp["u_cell"].value = 50.0
            fp["u_shadow"].value = SHADOW_MULTIPLY
            self._mask_tex.use(0)
            fp["u_mask"].value = 0
            self.floor_vao.render(moderngl.TRIANGLE_STRIP)
        ctx.enable(moderngl.CULL_FACE)
        ctx.front_face = "ccw"
        self._render_geometry(prims, mesh, shadow=0)
        ctx.disable(moderngl.CULL_FACE | moderngl.DEPTH_TEST)

    def _shadow_mask(self, size: tuple[int, int]) -> moderngl.Framebuffer:
        size = (max(int(size[0]), 1), max(int(size[1]), 1))
        if getattr(self, "_mask_size", None) != size:
            if getattr(self, "_mask_fbo", None) is not None:
                self._mask_fbo.release()
                self._mask_tex.release()
            self._mask_tex = self.ctx.texture(size, 1, dtype="f1")
            self._mask_tex.filter = moderngl.NEAREST, moderngl.NEAREST
            self._mask_fbo = self.ctx.framebuffer(color_attachments=[self._mask_tex])
            self._mask_size = size
        return self._mask_fbo

    def _render_geometry(self, prims: Primitives | None, mesh: MeshFrame | None, shadow: int) -> None:
        if prims is not None:
            self.solid_cap["u_shadow"].value = shadow
            self.solid_ell["u_shadow"].value = shadow
            self.cap_vao.render(moderngl.TRIANGLES, instances=len(prims.capsules))
            self.ell_vao.render(moderngl.TRIANGLES, instances=len(prims.ellipsoids))
        if mesh is not None:
            self.solid_mesh["u_shadow"].value = shadow
            cull = shadow == 0  # meshes may have either winding: never cull them
            self.ctx.disable(moderngl.CULL_FACE)
            self._mesh["vao"].render(moderngl.TRIANGLES)
            if cull:
                self.ctx.enable(moderngl.CULL_FACE)

    def _upload_prims(self, prims: Primitives) -> None:
        n_c, n_e = len(prims.capsules), len(prims.ellipsoids)
        if max(n_c, n_e) > self.max_instances:
            raise ValueError(f"too many primitives ({n_c}, {n_e}); Scene(max_instances={self.max_instances})")
        self._cap_inst.write(np.ascontiguousarray(prims.capsules, np.float32).tobytes())
        self._ell_inst.write(np.ascontiguousarray(prims.ellipsoids, np.float32).tobytes())

    def _upload_mesh(self, mesh: MeshFrame) -> None:
        v = np.ascontiguousarray(mesh.vertices, np.float32)
        f = np.ascontiguousarray(mesh.faces, np.int32)
        n = mesh.normals if mesh.normals is not None else vertex_normals(v, f)
        data = np.ascontiguousarray(np.concatenate([v, np.asarray(n, np.float32)], 1))
        key = (len(v), len(f), int(f.sum()))
        if self._mesh.get("key") != key:
            self._mesh["vbo"] = self.ctx.buffer(data.tobytes(), dynamic=True)
            self._mesh["ibo"] = self.ctx.buffer(f.tobytes())
            self._mesh["vao"] = self.ctx.vertex_array(
                self.solid_mesh, [(self._mesh["vbo"], "3f 3f", "in_pos", "in_normal")], index_buffer=self._mesh["ibo"])
            self._mesh["key"] = key
        else:
            self._mesh["vbo"].write(data.tobytes())
