// Browser view of the avatar stream: subscribes to the `joints` stream and draws the 127-joint skeleton.
// Forward kinematics from local quaternions + rest offsets + parents (all in the header), as PROTOCOL.md describes.
// No external code: plain canvas 2D. URL parameters: ?session=main&token=T&view=front|side
"use strict";

const qs = new URLSearchParams(location.search);
const SESSION = qs.get("session") || "main";
const TOKEN = qs.get("token");
const VIEW = qs.get("view") || "front";
const PREFIX_BYTES = 20, KIND_JOINTS = 3, VERSION = 1;

const el = (id) => document.getElementById(id);
const canvas = el("view"), ctx = canvas.getContext("2d");
let skel = null;          // header.joints
let nFrames = 0, lastIndex = -1, gaps = 0, fpsT0 = performance.now(), fpsN = 0;
let fit = null;           // {cx, cy, scale} from the first frame

function status(text) { el("status").textContent = text; }

function quatToMat(q, o, m) {  // q[o..o+3] = x, y, z, w -> row-major 3x3 into m
  const x = q[o], y = q[o + 1], z = q[o + 2], w = q[o + 3];
  m[0] = 1 - 2 * (y * y + z * z); m[1] = 2 * (x * y - z * w);     m[2] = 2 * (x * z + y * w);
  m[3] = 2 * (x * y + z * w);     m[4] = 1 - 2 * (x * x + z * z); m[5] = 2 * (y * z - x * w);
  m[6] = 2 * (x * z - y * w);     m[7] = 2 * (y * z + x * w);     m[8] = 1 - 2 * (x * x + y * y);
}

function forwardKinematics(root, quats) {  // -> Float64Array(n * 3) joint positions (cm, MHR native frame)
  const par = skel.parents, rest = skel.rest_offsets, n = par.length, rj = skel.root_joint;
  const R = new Float64Array(n * 9), P = new Float64Array(n * 3), L = new Float64Array(9);
  quatToMat(quats, 0, R);
  for (let j = 1; j < n; j++) {
    const p = par[j], rp = 9 * p;
    quatToMat(quats, 4 * j, L);
    for (let a = 0; a < 3; a++) for (let b = 0; b < 3; b++) {
      R[9 * j + 3 * a + b] = R[rp + 3 * a] * L[b] + R[rp + 3 * a + 1] * L[3 + b] + R[rp + 3 * a + 2] * L[6 + b];
    }
    let ox = rest[j][0], oy = rest[j][1], oz = rest[j][2];
    if (j === rj) { ox += root[0]; oy += root[1]; oz += root[2]; }
    for (let a = 0; a < 3; a++) {
      P[3 * j + a] = P[3 * p + a] + R[rp + 3 * a] * ox + R[rp + 3 * a + 1] * oy + R[rp + 3 * a + 2] * oz;
    }
  }
  return P;
}

function project(P, j) {  // front: look at the subject from +Z (its left = screen right); side: from +X
  const u = VIEW === "side" ? -P[3 * j + 2] : P[3 * j];
  return [fit.cx + fit.scale * (u - fit.u0), fit.cy - fit.scale * (P[3 * j + 1] - fit.v0)];
}

function draw(P) {
  const dpr = window.devicePixelRatio || 1, w = canvas.clientWidth || 640, h = canvas.clientHeight || 480;
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
    canvas.width = Math.round(w * dpr); canvas.height = Math.round(h * dpr); fit = null;
  }
  const n = skel.parents.length;
  if (!fit) {  // frame the first pose: 80 % of the canvas height
    let umin = Infinity, umax = -Infinity, vmin = Infinity, vmax = -Infinity;
    for (let j = 0; j < n; j++) {
      const u = VIEW === "side" ? -P[3 * j + 2] : P[3 * j], v = P[3 * j + 1];
      umin = Math.min(umin, u); umax = Math.max(umax, u); vmin = Math.min(vmin, v); vmax = Math.max(vmax, v);
    }
    const scale = 0.8 * Math.min(canvas.height / Math.max(vmax - vmin, 1), canvas.width / Math.max(umax - umin, 1));
    fit = {cx: canvas.width / 2, cy: canvas.height / 2, scale, u0: (umin + umax) / 2, v0: (vmin + vmax) / 2};
  }
  ctx.fillStyle = "#15171c";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  ctx.lineWidth = 2 * dpr;
  for (let j = 1; j < n; j++) {
    const p = skel.parents[j];
    if (p <= 0) continue;  // the world joint sits at the origin: no bone to it
    const name = skel.names[j];
    ctx.strokeStyle = name.startsWith("l_") ? "#4fc3f7" : name.startsWith("r_") ? "#ff8a65" : "#e0e0e0";
    const a = project(P, p), b = project(P, j);
    ctx.beginPath(); ctx.moveTo(a[0], a[1]); ctx.lineTo(b[0], b[1]); ctx.stroke();
  }
  ctx.fillStyle = "#ffd54f";
  for (let j = 1; j < n; j++) {
    const a = project(P, j);
    ctx.fillRect(a[0] - 1.5 * dpr, a[1] - 1.5 * dpr, 3 * dpr, 3 * dpr);
  }
}

function onJoints(buf) {
  const dv = new DataView(buf);
  const index = Number(dv.getBigUint64(4, true)), time = dv.getFloat64(12, true);
  const root = new Float32Array(buf, PREFIX_BYTES, 3);
  const quats = new Float32Array(buf, PREFIX_BYTES + 12, 4 * skel.parents.length);
  const P = forwardKinematics(root, quats);
  draw(P);
  if (lastIndex >= 0 && index !== lastIndex + 1) gaps++;
  lastIndex = index; nFrames++; fpsN++;
  const now = performance.now();
  if (now - fpsT0 > 1000) { el("fps").textContent = (1000 * fpsN / (now - fpsT0)).toFixed(1); fpsT0 = now; fpsN = 0; }
  el("frames").textContent = nFrames; el("index").textContent = index;
  el("time").textContent = time.toFixed(2) + " s"; el("gaps").textContent = gaps;
  document.title = "frames " + nFrames;
  // machine-readable probe (tests compare it with models.rig.forward_kinematics)
  el("probe").textContent = JSON.stringify({index, frames: nFrames, positions: Array.from(P, (v) => +v.toFixed(3))});
}

function connect() {
  const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/";
  const ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  const subscribe = () => {
    if (ws.readyState !== WebSocket.OPEN) return;
    status("subscribing…");
    const msg = {type: "subscribe", version: VERSION, session: SESSION, streams: ["joints"]};
    if (TOKEN) msg.token = TOKEN;
    ws.send(JSON.stringify(msg));
  };
  ws.onopen = subscribe;
  ws.onmessage = (ev) => {
    if (typeof ev.data === "string") {
      const m = JSON.parse(ev.data);
      if (m.type === "header") {
        if (m.version !== VERSION) { status("protocol version " + m.version + " (viewer speaks " + VERSION + ")"); ws.close(); return; }
        skel = m.joints; fit = null; el("session").textContent = m.session; status("streaming (" + m.face_mode + " face)");
      } else if (m.type === "error") {
        status("error " + m.code + ": " + m.message);
        if (m.code === "unknown_session") setTimeout(subscribe, 2000);  // the session may start later
      } else if (m.type === "end") {
        status("session ended after " + m.frames + " frames");
      } else if (m.type === "reset") {
        lastIndex = -1;
      }
      return;
    }
    const dv = new DataView(ev.data);
    if (dv.getUint8(1) !== VERSION) { status("binary version mismatch"); return; }
    if (dv.getUint8(0) === KIND_JOINTS && skel) onJoints(ev.data);
  };
  ws.onclose = () => { status("disconnected; retrying…"); setTimeout(connect, 1000); };
}

connect();
