"""The wire protocol of the avatar stream: the one module that packs and parses every message (see PROTOCOL.md).

Text messages are JSON objects with a ``type``. Binary messages start with a 20-byte little-endian prefix
``<BBHQd`` = (kind, protocol version, flags, index, time) followed by a fixed payload:

| kind | name   | index                     | time (s)                   | payload                                    |
|------|--------|---------------------------|----------------------------|--------------------------------------------|
| 1    | pose   | frame index               | audio time of frame's end  | 320 float32 (models.layout)                |
| 2    | audio  | first sample (model rate) | audio time of first sample | int16 PCM, mono, 24 kHz                    |
| 3    | joints | frame index               | audio time of frame's end  | root translation 3 float32 (cm) + 127 x 4  |
|      |        |                           |                            | float32 local quaternions (x, y, z, w)     |

Every frame's time is audio time from the session start (``(index + 1) / 30``), never wall clock, so bursts and
replays stay aligned. The server sends a JSON header (names, layout, constants, budget, skeleton) once, then binary
frames: the names-once design of NVIDIA A2F's animation stream, without protobuf.
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from models import layout
from models.rates import MODEL_SAMPLE_RATE, MOTION_FPS

PROTOCOL_NAME = "mhr-avatar-stream"
PROTOCOL_VERSION = 1

KIND_POSE = 1
KIND_AUDIO = 2
KIND_JOINTS = 3
KIND_NAMES = {KIND_POSE: "pose", KIND_AUDIO: "audio", KIND_JOINTS: "joints"}
STREAMS = ("pose", "audio", "joints")  # what a subscriber may ask for
DEFAULT_STREAMS = ("pose",)

FLAG_FLUSH = 0x0001  # emitted by the end-of-stream flush (the held-back look-ahead frames)

PREFIX = struct.Struct("<BBHQd")  # kind, version, flags, index | first sample, time (s): 20 bytes
N_JOINTS = 127
POSE_BYTES = PREFIX.size + layout.DIM * 4  # 1300
JOINTS_BYTES = PREFIX.size + (3 + N_JOINTS * 4) * 4  # 2064
AUDIO_FORMAT = "pcm_s16le"  # the audio stream: int16 mono at MODEL_SAMPLE_RATE

#: formats a pushing client may declare: name -> (numpy dtype, bytes per sample)
PUSH_FORMATS: dict[str, tuple[str, int]] = {"pcm_s16le": ("<i2", 2), "pcm_f32le": ("<f4", 4)}
MAX_PUSH_CHANNELS = 8
PUSH_RATE_RANGE = (4_000, 192_000)

CLIENT_TYPES = ("subscribe", "unsubscribe", "start", "end", "reset", "speaker", "stats", "ping")
SERVER_TYPES = ("header", "started", "error", "reset", "speaker", "end", "stats", "pong")

# error codes (JSON {"type": "error", "code": ..., "message": ...})
E_BAD_JSON = "bad_json"
E_BAD_MESSAGE = "bad_message"
E_UNKNOWN_TYPE = "unknown_type"
E_VERSION = "version_mismatch"
E_UNAUTHORIZED = "unauthorized"
E_UNKNOWN_SESSION = "unknown_session"
E_SESSION_EXISTS = "session_exists"
E_BAD_FORMAT = "bad_format"
E_BAD_CHUNK = "bad_chunk"
E_TOO_LARGE = "too_large"
E_NO_START = "no_start"
E_ALREADY_STARTED = "already_started"
E_NOT_ALLOWED = "not_allowed"
E_BUSY = "busy"
E_INTERNAL = "internal"


class ProtocolError(ValueError):
    """A message that breaks the protocol; ``code`` is the error code sent back to the peer."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


# ---- binary frames ---------------------------------------------------------------------------------------------

@dataclass
class PoseFrame:
    """One pose frame: ``params`` (320,) float32 in the models.layout order."""

    index: int
    time: float
    params: np.ndarray
    flags: int = 0


@dataclass
class JointsFrame:
    """One skeleton frame: local joint rotations and the root translation (MHR native frame, cm)."""

    index: int
    time: float
    root_translation: np.ndarray  # (3,) cm, added to the rest offset of the header's ``root_joint``
    quats: np.ndarray  # (127, 4) local rotations (x, y, z, w)
    flags: int = 0


@dataclass
class AudioPacket:
    """A time-coded piece of the session's audio (mono, MODEL_SAMPLE_RATE)."""

    start_sample: int
    time: float
    pcm: np.ndarray  # (n,) float32 in [-1, 1]
    flags: int = 0


def pack_pose(index: int, time: float, params: np.ndarray, flags: int = 0) -> bytes:
    p = np.ascontiguousarray(params, dtype="<f4").reshape(-1)
    if p.shape != (layout.DIM,):
        raise ValueError(f"pose params must have {layout.DIM} values, got {np.shape(params)}")
    return PREFIX.pack(KIND_POSE, PROTOCOL_VERSION, flags, index, time) + p.tobytes()


def pack_joints(index: int, time: float, root_translation: np.ndarray, quats: np.ndarray, flags: int = 0) -> bytes:
    t = np.ascontiguousarray(root_translation, dtype="<f4").reshape(-1)
    q = np.ascontiguousarray(quats, dtype="<f4")
    if t.shape != (3,) or q.shape != (N_JOINTS, 4):
        raise ValueError(f"joints need root (3,) and quats ({N_JOINTS}, 4), got {t.shape} and {q.shape}")
    return PREFIX.pack(KIND_JOINTS, PROTOCOL_VERSION, flags, index, time) + t.tobytes() + q.tobytes()


def pack_audio(start_sample: int, pcm: np.ndarray, flags: int = 0) -> bytes:
    """Float PCM (mono, model rate) -> an audio message with int16 samples (clipped to [-1, 1])."""
    x = np.clip(np.asarray(pcm, np.float32).reshape(-1), -1.0, 1.0)
    s16 = np.round(x * 32767.0).astype("<i2")
    time = start_sample / MODEL_SAMPLE_RATE
    return PREFIX.pack(KIND_AUDIO, PROTOCOL_VERSION, flags, start_sample, time) + s16.tobytes()


def unpack(data: bytes | bytearray | memoryview) -> PoseFrame | JointsFrame | AudioPacket:
    """Parse any binary server message. Raises ProtocolError on a short, unknown or wrong-version message."""
    buf = memoryview(data)
    if len(buf) < PREFIX.size:
        raise ProtocolError(E_BAD_MESSAGE, f"binary message of {len(buf)} bytes is shorter than the "
                                           f"{PREFIX.size}-byte prefix")
    kind, version, flags, index, time = PREFIX.unpack_from(buf, 0)
    if version != PROTOCOL_VERSION:
        raise ProtocolError(E_VERSION, f"binary message has protocol version {version}, this code speaks "
                                       f"{PROTOCOL_VERSION}")
    body = buf[PREFIX.size:]
    if kind == KIND_POSE:
        _expect_len(buf, POSE_BYTES, "pose")
        return PoseFrame(index, time, np.frombuffer(body, "<f4").astype(np.float32), flags)
    if kind == KIND_JOINTS:
        _expect_len(buf, JOINTS_BYTES, "joints")
        a = np.frombuffer(body, "<f4").astype(np.float32)
        return JointsFrame(index, time, a[:3], a[3:].reshape(N_JOINTS, 4), flags)
    if kind == KIND_AUDIO:
        if len(body) % 2:
            raise ProtocolError(E_BAD_MESSAGE, f"audio payload of {len(body)} bytes is not whole int16 samples")
        pcm = np.frombuffer(body, "<i2").astype(np.float32) / 32767.0
        return AudioPacket(index, time, pcm, flags)
    raise ProtocolError(E_BAD_MESSAGE, f"unknown binary message kind {kind}")


def _expect_len(buf: memoryview, n: int, name: str) -> None:
    if len(buf) != n:
        raise ProtocolError(E_BAD_MESSAGE, f"{name} message must be {n} bytes, got {len(buf)}")


# ---- skeleton (the `joints` stream) -----------------------------------------------------------------------------

def joints_from_params(params: np.ndarray, constants: layout.SessionConstants) -> tuple[np.ndarray, np.ndarray]:
    """(T, 320) pose params -> root translation (T, 3) cm and local rotations (T, 127, 4) quaternions (x, y, z, w).

    Uses models.layout.assemble_model_params + models.rig.local_rotations, so a client that runs the FK of
    ``skeleton_info()`` on these reproduces models.rig.forward_kinematics exactly.
    """
    from models.rig import local_rotations
    from models.rotations import matrix_to_quat

    mp = layout.assemble_model_params(np.atleast_2d(params), constants)  # (T, 204)
    rot = local_rotations(mp)  # (T, 127, 3, 3)
    rot[:, 0] = np.eye(3)  # FK keeps the world joint at identity
    return mp[:, 0:3].astype(np.float32), matrix_to_quat(rot).astype(np.float32)


@lru_cache(maxsize=1)
def skeleton_info() -> dict[str, Any]:
    """What a client needs to pose the skeleton from the ``joints`` stream without MHR itself."""
    from models.rig import load_rig

    rig = load_rig()
    return {
        "names": list(rig.joint_names),
        "parents": [int(p) for p in rig.parents],
        "rest_offsets": np.round(rig.rest_offsets, 5).tolist(),  # (127, 3) cm, in the parent's frame
        "root_joint": 1,
        "units": "cm",
        "quat_order": "xyzw",
        "frame": "MHR native: +Y up, subject faces +Z, subject's left = +X",
        "fk": "R[0] = q[0]; P[0] = 0; R[j] = R[p] q[j]; P[j] = P[p] + R[p] (rest_offsets[j] + (j == root_joint ? "
              "root_translation : 0)) for j >= 1 in index order (parents come first)",
        "to_camera": "x_cam = diag(1, -1, -1) P / 100 + constants.pred_cam_t (metres, OpenCV axes)",
    }


@lru_cache(maxsize=1)
def _layout_info() -> dict[str, Any]:
    return {
        "version": layout.LAYOUT_VERSION,
        "dim": layout.DIM,
        "channels": layout.channel_names(),
        "parts": {k: [s.start, s.stop] for k, s in layout.PART_SLICES.items()},
        "slices": {n: [s.start, s.stop] for n, s in (
            ("hand_left", layout.HAND_LEFT), ("hand_right", layout.HAND_RIGHT), ("expr", layout.EXPR),
            ("jaw", layout.JAW), ("global_rot", layout.GLOBAL_ROT), ("contact", layout.CONTACT))},
    }


# ---- JSON messages ----------------------------------------------------------------------------------------------

def make_header(session: str, constants: layout.SessionConstants, budget: dict[str, Any], face_mode: str,
                streams: tuple[str, ...] | list[str], speaker: int | None = None) -> dict[str, Any]:
    """The first message a subscriber gets: everything that is fixed for the stream."""
    h: dict[str, Any] = {
        "type": "header", "protocol": PROTOCOL_NAME, "version": PROTOCOL_VERSION, "session": session,
        "fps": MOTION_FPS, "streams": list(streams), "layout": _layout_info(), "constants": constants.to_dict(),
        "speaker": speaker, "budget": _json_safe(budget), "face_mode": face_mode,
        "binary": {"prefix": "<BBHQd", "prefix_bytes": PREFIX.size,
                   "kinds": {"pose": KIND_POSE, "audio": KIND_AUDIO, "joints": KIND_JOINTS},
                   "pose_bytes": POSE_BYTES, "joints_bytes": JOINTS_BYTES, "flags": {"flush": FLAG_FLUSH}},
        "audio": {"rate": MODEL_SAMPLE_RATE, "format": AUDIO_FORMAT, "channels": 1},
    }
    if "joints" in streams:
        h["joints"] = skeleton_info()
    return h


def encode(msg: dict[str, Any]) -> str:
    return json.dumps(msg, separators=(",", ":"), allow_nan=False)


def error(code: str, message: str, **extra: Any) -> str:
    """An error reply (JSON text)."""
    return encode({"type": "error", "code": code, "message": message, **extra})


def parse_text(text: str, *, max_bytes: int = 65_536, allowed: tuple[str, ...] = CLIENT_TYPES) -> dict[str, Any]:
    """Parse a JSON text message -> dict with a known ``type``. Raises ProtocolError with the reply code."""
    if len(text) > max_bytes:
        raise ProtocolError(E_TOO_LARGE, f"text message of {len(text)} bytes exceeds the limit of {max_bytes}")
    try:
        msg = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        raise ProtocolError(E_BAD_JSON, f"message is not valid JSON ({e})") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        raise ProtocolError(E_BAD_MESSAGE, 'message must be a JSON object with a string "type"')
    if "version" in msg and msg["version"] != PROTOCOL_VERSION:
        raise ProtocolError(E_VERSION, f"peer speaks protocol version {msg['version']!r}, this server speaks "
                                       f"{PROTOCOL_VERSION}")
    if msg["type"] not in allowed:
        raise ProtocolError(E_UNKNOWN_TYPE, f"unknown message type {msg['type']!r}; expected one of {list(allowed)}")
    return msg


def parse_server_text(text: str) -> dict[str, Any]:
    """Client side: parse a server JSON message; a header of another protocol version raises ProtocolError."""
    msg = parse_text(text, max_bytes=1 << 24, allowed=SERVER_TYPES)
    if msg["type"] == "header" and msg.get("version") != PROTOCOL_VERSION:
        raise ProtocolError(E_VERSION, f"server header has version {msg.get('version')!r}, expected {PROTOCOL_VERSION}")
    return msg


@dataclass
class StartRequest:
    """A validated ``start`` message: what a pushing client declared."""

    format: str
    rate: int
    channels: int
    speaker: int | None = None
    constants: layout.SessionConstants | None = None
    session: str | None = None
    streams: tuple[str, ...] = DEFAULT_STREAMS

    @property
    def bytes_per_frame(self) -> int:
        return PUSH_FORMATS[self.format][1] * self.channels


def parse_start(msg: dict[str, Any]) -> StartRequest:
    fmt = msg.get("format")
    if fmt not in PUSH_FORMATS:
        raise ProtocolError(E_BAD_FORMAT, f"format {fmt!r} is not supported; use one of {list(PUSH_FORMATS)}")
    rate, channels = msg.get("rate"), msg.get("channels", 1)
    lo, hi = PUSH_RATE_RANGE
    if not isinstance(rate, int) or isinstance(rate, bool) or not lo <= rate <= hi:
        raise ProtocolError(E_BAD_FORMAT, f"rate must be an integer sample rate in [{lo}, {hi}] Hz, got {rate!r}")
    if not isinstance(channels, int) or isinstance(channels, bool) or not 1 <= channels <= MAX_PUSH_CHANNELS:
        raise ProtocolError(E_BAD_FORMAT, f"channels must be an integer in [1, {MAX_PUSH_CHANNELS}], got {channels!r}")
    constants = None
    if msg.get("constants") is not None:
        if not isinstance(msg["constants"], dict):
            raise ProtocolError(E_BAD_MESSAGE, '"constants" must be an object (see SessionConstants)')
        try:
            constants = layout.SessionConstants.from_dict(msg["constants"])
        except (TypeError, ValueError) as e:
            raise ProtocolError(E_BAD_MESSAGE, f"bad session constants: {e}") from None
    session = msg.get("session")
    if session is not None and (not isinstance(session, str) or not 0 < len(session) <= 64):
        raise ProtocolError(E_BAD_MESSAGE, '"session" must be a name of 1-64 characters')
    return StartRequest(fmt, rate, channels, parse_speaker(msg.get("speaker"), optional=True), constants, session,
                        parse_streams(msg.get("streams", list(DEFAULT_STREAMS))))


def parse_speaker(value: Any, optional: bool = False, n_speakers: int | None = None) -> int | None:
    """A speaker id: 0..n_speakers-1, or -1 for the model's dedicated unknown speaker (None where optional)."""
    if value is None and optional:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < -1:
        raise ProtocolError(E_BAD_MESSAGE, f"speaker must be an integer >= 0 (or -1: unknown), got {value!r}")
    if n_speakers is not None and value > n_speakers:
        raise ProtocolError(E_BAD_MESSAGE, f"speaker {value} is out of range: the model knows speakers "
                                           f"0..{n_speakers - 1} ({n_speakers} or -1 = unknown)")
    return value


def parse_streams(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise ProtocolError(E_BAD_MESSAGE, f'"streams" must be a list of names from {list(STREAMS)}')
    bad = [s for s in value if s not in STREAMS]
    if bad:
        raise ProtocolError(E_BAD_MESSAGE, f"unknown stream(s) {bad}; available: {list(STREAMS)}")
    return tuple(s for s in STREAMS if s in value)


def decode_pcm(data: bytes | bytearray | memoryview, req: StartRequest) -> np.ndarray:
    """A binary PCM chunk of a pushing client -> (n, channels) float32 (not yet sanitised)."""
    n = len(data)
    if n == 0 or n % req.bytes_per_frame:
        raise ProtocolError(E_BAD_CHUNK, f"PCM chunk of {n} bytes is not a whole number of {req.channels}-channel "
                                         f"{req.format} frames ({req.bytes_per_frame} bytes each)")
    dtype = PUSH_FORMATS[req.format][0]
    a = np.frombuffer(data, dtype).reshape(-1, req.channels).astype(np.float32)
    if req.format == "pcm_s16le":
        a /= 32768.0
    return a


def _json_safe(d: Any) -> Any:
    if isinstance(d, dict):
        return {str(k): _json_safe(v) for k, v in d.items()}
    if isinstance(d, list | tuple):
        return [_json_safe(v) for v in d]
    if isinstance(d, np.generic):
        return d.item()
    if isinstance(d, float) and not np.isfinite(d):
        return None
    return d
