"""GLSL 330 shaders for the viewer (instanced capsules and ellipsoids, a mesh, the floor grid, the backdrop)."""

_LIGHTING = """
uniform vec3 u_eye;
uniform vec3 u_light;       // direction towards the key light (unit)
vec3 shade(vec3 base, vec3 n, vec3 p) {
    vec3 v = normalize(u_eye - p);
    if (dot(n, v) < 0.0) n = -n;
    float key = max(dot(n, u_light), 0.0);
    vec3 fill_dir = normalize(vec3(-u_light.x, 0.25, -u_light.z));
    float fill = max(dot(n, fill_dir), 0.0);
    float hemi = 0.5 + 0.5 * n.y;
    vec3 ambient = mix(vec3(0.30, 0.28, 0.27), vec3(0.50, 0.53, 0.58), hemi);
    vec3 h = normalize(u_light + v);
    float spec = pow(max(dot(n, h), 0.0), 40.0) * 0.18;
    float rim = pow(1.0 - max(dot(n, v), 0.0), 3.0) * 0.22;
    vec3 c = base * (ambient + key * vec3(0.80, 0.77, 0.72) + fill * vec3(0.16, 0.18, 0.22));
    return c + spec + rim * vec3(0.55, 0.62, 0.75);
}
"""

_SHADOW_PROJECT = """
uniform int u_shadow;       // 1: flatten onto the floor along u_light (planar shadow pass)
uniform float u_floor;
vec3 to_floor(vec3 p) {
    float t = (p.y - u_floor) / max(u_light.y, 0.2);
    return vec3(p.x - u_light.x * t, u_floor, p.z - u_light.z * t);
}
"""

_SOLID_FRAG = """
#version 330
in vec3 v_n;
in vec3 v_p;
in vec3 v_c;
uniform int u_shadow;
uniform vec3 u_shadow_color;
out vec4 f_color;
""" + _LIGHTING + """
void main() {
    if (u_shadow == 1) { f_color = vec4(u_shadow_color, 1.0); return; }
    vec3 c = shade(v_c, normalize(v_n), v_p);
    f_color = vec4(pow(c, vec3(1.0 / 1.1)), 1.0);
}
"""

CAPSULE_VERT = """
#version 330
in vec3 in_dir;             // unit-sphere direction, local frame with the capsule axis along +z
in float in_end;            // 0: cap/ring at p0, 1: at p1
in vec3 i_p0;
in float i_r0;
in vec3 i_p1;
in float i_r1;
in vec3 i_color;
in vec3 i_side;             // width direction of an elliptical cross-section
in vec2 i_k;                // depth/width ratio at p0, p1 (1 = round)
uniform mat4 u_vp;
uniform vec3 u_light;
out vec3 v_n;
out vec3 v_p;
out vec3 v_c;
""" + _SHADOW_PROJECT + """
void main() {
    vec3 ax = i_p1 - i_p0;
    float len = length(ax);
    vec3 w = len > 1e-5 ? ax / len : vec3(0.0, 1.0, 0.0);
    vec3 s = i_side - dot(i_side, w) * w;
    vec3 a = abs(w.y) < 0.9 ? vec3(0.0, 1.0, 0.0) : vec3(1.0, 0.0, 0.0);
    vec3 u = dot(s, s) > 1e-4 ? normalize(s) : normalize(cross(a, w));
    vec3 v = cross(w, u);
    float r = mix(i_r0, i_r1, in_end);
    float k = mix(i_k.x, i_k.y, in_end);
    vec3 off = r * (u * in_dir.x + v * (k * in_dir.y) + w * (k * in_dir.z));
    vec3 p = mix(i_p0, i_p1, in_end) + off;
    if (u_shadow == 1) p = to_floor(p);
    v_n = normalize(u * in_dir.x + v * (in_dir.y / k) + w * (in_dir.z / k));
    v_p = p;
    v_c = i_color;
    gl_Position = u_vp * vec4(p, 1.0);
}
"""

ELLIPSOID_VERT = """
#version 330
in vec3 in_dir;             // unit sphere
in vec3 i_c;
in vec3 i_a0;
in vec3 i_a1;
in vec3 i_a2;
in vec3 i_color;
uniform mat4 u_vp;
uniform vec3 u_light;
out vec3 v_n;
out vec3 v_p;
out vec3 v_c;
""" + _SHADOW_PROJECT + """
void main() {
    mat3 m = mat3(i_a0, i_a1, i_a2);
    vec3 p = i_c + m * in_dir;
    v_n = normalize(transpose(inverse(m)) * in_dir);
    if (u_shadow == 1) p = to_floor(p);
    v_p = p;
    v_c = i_color;
    gl_Position = u_vp * vec4(p, 1.0);
}
"""

MESH_VERT = """
#version 330
in vec3 in_pos;
in vec3 in_normal;
uniform mat4 u_vp;
uniform vec3 u_light;
uniform vec3 u_color;
out vec3 v_n;
out vec3 v_p;
out vec3 v_c;
""" + _SHADOW_PROJECT + """
void main() {
    vec3 p = in_pos;
    if (u_shadow == 1) p = to_floor(p);
    v_n = in_normal;
    v_p = p;
    v_c = u_color;
    gl_Position = u_vp * vec4(p, 1.0);
}
"""

SOLID_FRAG = _SOLID_FRAG

FLOOR_VERT = """
#version 330
in vec2 in_xz;
uniform mat4 u_vp;
uniform float u_floor;
out vec3 v_p;
void main() {
    v_p = vec3(in_xz.x, u_floor, in_xz.y);
    gl_Position = u_vp * vec4(v_p, 1.0);
}
"""

FLOOR_FRAG = """
#version 330
in vec3 v_p;
uniform vec3 u_center;
uniform vec3 u_floor_color;
uniform vec3 u_line_color;
uniform vec3 u_fog_color;
uniform float u_cell;
uniform vec3 u_shadow;      // colour factor under the shadow
uniform sampler2D u_mask;   // screen-space shadow mask (1 = in shadow)
out vec4 f_color;
void main() {
    vec2 g = v_p.xz / u_cell;
    vec2 d = abs(fract(g - 0.5) - 0.5) / max(fwidth(g), vec2(1e-4));
    float line = 1.0 - min(min(d.x, d.y), 1.0);
    vec2 g5 = v_p.xz / (u_cell * 5.0);
    vec2 d5 = abs(fract(g5 - 0.5) - 0.5) / max(fwidth(g5), vec2(1e-4));
    float line5 = 1.0 - min(min(d5.x, d5.y) / 1.5, 1.0);
    float dist = length(v_p.xz - u_center.xz);
    float fade = exp(-dist / 700.0);
    vec3 c = mix(u_floor_color, u_line_color, max(line * 0.55, line5 * 0.8) * fade);
    c *= 0.93 + 0.07 * exp(-dist / 250.0);
    float m = texelFetch(u_mask, ivec2(gl_FragCoord.xy), 0).r;
    c *= mix(vec3(1.0), u_shadow, m);
    c = mix(u_fog_color, c, exp(-dist / 2500.0));
    f_color = vec4(c, 1.0);
}
"""

BACKDROP_VERT = """
#version 330
in vec2 in_xy;
out float v_t;
void main() {
    v_t = in_xy.y * 0.5 + 0.5;
    gl_Position = vec4(in_xy, 0.9999, 1.0);
}
"""

BACKDROP_FRAG = """
#version 330
in float v_t;
uniform vec3 u_top;
uniform vec3 u_bottom;
out vec4 f_color;
void main() {
    f_color = vec4(mix(u_bottom, u_top, smoothstep(0.0, 1.0, v_t)), 1.0);
}
"""
