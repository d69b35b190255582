"""Wire protocol: pack/unpack round trips, sizes, version checks, message validation, skeleton FK equivalence."""
from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from models import layout
from models.rig import forward_kinematics, load_rig
from models.rotations import quat_to_matrix
from realtime import protocol as P
from tests.fake_driver import fake_params


def test_pose_round_trip_and_size():
    params = np.random.default_rng(0).standard_normal(320).astype(np.float32)
    b = P.pack_pose(12345678901, 411.5, params, flags=P.FLAG_FLUSH)
    assert len(b) == P.POSE_BYTES == 1300
    assert b[0] == P.KIND_POSE and b[1] == P.PROTOCOL_VERSION
    f = P.unpack(b)
    assert isinstance(f, P.PoseFrame)
    assert (f.index, f.time, f.flags) == (12345678901, 411.5, P.FLAG_FLUSH)
    np.testing.assert_array_equal(f.params, params)


def test_joints_round_trip_and_size():
    rng = np.random.default_rng(1)
    q = rng.standard_normal((127, 4)).astype(np.float32)
    t = np.array([1.0, -2.0, 3.5], np.float32)
    b = P.pack_joints(7, 0.2666, t, q)
    assert len(b) == P.JOINTS_BYTES == 2064
    f = P.unpack(b)
    assert isinstance(f, P.JointsFrame) and f.index == 7 and f.time == 0.2666
    np.testing.assert_array_equal(f.quats, q)
    np.testing.assert_array_equal(f.root_translation, t)


def test_audio_round_trip_is_int16_exact():
    pcm = np.linspace(-1.2, 1.2, 801).astype(np.float32)  # beyond [-1, 1] is clipped
    b = P.pack_audio(48_000, pcm)
    assert len(b) == P.PREFIX.size + 2 * 801
    a = P.unpack(b)
    assert isinstance(a, P.AudioPacket)
    assert a.start_sample == 48_000 and a.time == 2.0
    np.testing.assert_allclose(a.pcm, np.clip(pcm, -1, 1), atol=1.0 / 32767)
    assert a.pcm.max() == 1.0 and a.pcm.min() == -1.0


def test_binary_version_mismatch_and_malformed():
    b = bytearray(P.pack_pose(0, 1 / 30, np.zeros(320, np.float32)))
    b[1] = P.PROTOCOL_VERSION + 1
    with pytest.raises(P.ProtocolError) as e:
        P.unpack(bytes(b))
    assert e.value.code == P.E_VERSION
    with pytest.raises(P.ProtocolError, match="shorter"):
        P.unpack(b"\x01\x01")
    with pytest.raises(P.ProtocolError, match="1300 bytes"):
        P.unpack(P.pack_pose(0, 0.0, np.zeros(320, np.float32))[:-4])
    with pytest.raises(P.ProtocolError, match="unknown binary message kind 9"):
        P.unpack(struct.pack("<BBHQd", 9, P.PROTOCOL_VERSION, 0, 0, 0.0))
    with pytest.raises(ValueError, match="320"):
        P.pack_pose(0, 0.0, np.zeros(319, np.float32))


def test_header_contents_and_version_check():
    c = layout.SessionConstants(pred_cam_t=[0.1, 0.2, 3.0])
    budget = {"frames": 5, "ms": 166.7, "feature_future_ms": 0.0, "chunk_frames": 2}
    h = P.make_header("main", c, budget, "envelope", ("pose", "joints"), speaker=3)
    text = P.encode(h)
    back = P.parse_server_text(text)
    assert back["version"] == P.PROTOCOL_VERSION and back["fps"] == 30 and back["session"] == "main"
    assert back["layout"]["version"] == layout.LAYOUT_VERSION and len(back["layout"]["channels"]) == 320
    assert back["layout"]["parts"]["face"] == [238, 313] and back["layout"]["slices"]["jaw"] == [310, 313]
    assert back["constants"]["pred_cam_t"] == pytest.approx([0.1, 0.2, 3.0])
    assert back["budget"]["frames"] == 5 and back["face_mode"] == "envelope" and back["speaker"] == 3
    j = back["joints"]
    assert len(j["names"]) == len(j["parents"]) == len(j["rest_offsets"]) == 127
    assert j["parents"][0] == -1 and all(0 <= p < i for i, p in enumerate(j["parents"]) if i > 0)  # FK in order
    assert "joints" not in P.make_header("main", c, budget, "off", ("pose",))
    h["version"] = 99
    with pytest.raises(P.ProtocolError) as e:
        P.parse_server_text(json.dumps(h))
    assert e.value.code == P.E_VERSION


@pytest.mark.parametrize("text,code", [
    ("{not json", P.E_BAD_JSON),
    ("[1, 2]", P.E_BAD_MESSAGE),
    ('{"no": "type"}', P.E_BAD_MESSAGE),
    ('{"type": "dance"}', P.E_UNKNOWN_TYPE),
    ('{"type": "subscribe", "version": 2}', P.E_VERSION),
    ('{"type": "ping", "pad": "' + "x" * 70_000 + '"}', P.E_TOO_LARGE),
])
def test_parse_text_errors(text, code):
    with pytest.raises(P.ProtocolError) as e:
        P.parse_text(text)
    assert e.value.code == code


def test_error_message_round_trip():
    m = P.parse_server_text(P.error(P.E_BAD_CHUNK, "odd bytes"))
    assert m == {"type": "error", "code": "bad_chunk", "message": "odd bytes"}


def test_parse_start_validation():
    req = P.parse_start({"type": "start", "format": "pcm_f32le", "rate": 48_000, "channels": 2, "speaker": 4,
                         "streams": ["joints", "pose"], "constants": {"focal_length": 1000.0}})
    assert (req.format, req.rate, req.channels, req.speaker, req.bytes_per_frame) == ("pcm_f32le", 48_000, 2, 4, 8)
    assert req.streams == ("pose", "joints") and req.constants.focal_length == 1000.0
    assert P.parse_start({"format": "pcm_s16le", "rate": 8000, "speaker": -1}).speaker == -1  # unknown speaker
    assert P.parse_speaker(16, n_speakers=16) == 16
    with pytest.raises(P.ProtocolError, match="out of range"):
        P.parse_speaker(17, n_speakers=16)
    for bad, code in [({"format": "mp3", "rate": 16000}, P.E_BAD_FORMAT),
                      ({"format": "pcm_s16le", "rate": 100}, P.E_BAD_FORMAT),
                      ({"format": "pcm_s16le", "rate": 16000, "channels": 0}, P.E_BAD_FORMAT),
                      ({"format": "pcm_s16le", "rate": 16000.5}, P.E_BAD_FORMAT),
                      ({"format": "pcm_s16le", "rate": 16000, "speaker": -2}, P.E_BAD_MESSAGE),
                      ({"format": "pcm_s16le", "rate": 16000, "speaker": True}, P.E_BAD_MESSAGE),
                      ({"format": "pcm_s16le", "rate": 16000, "streams": ["video"]}, P.E_BAD_MESSAGE),
                      ({"format": "pcm_s16le", "rate": 16000, "constants": {"pred_cam_t": [1, 2]}}, P.E_BAD_MESSAGE)]:
        with pytest.raises(P.ProtocolError) as e:
            P.parse_start({"type": "start", **bad})
        assert e.value.code == code, bad


def test_decode_pcm_formats():
    req = P.StartRequest("pcm_s16le", 16_000, 2)
    a = P.decode_pcm(np.array([[16384, -32768], [0, 32767]], "<i2").tobytes(), req)
    np.testing.assert_allclose(a, [[0.5, -1.0], [0.0, 32767 / 32768]])
    with pytest.raises(P.ProtocolError) as e:
        P.decode_pcm(b"\x00" * 6, req)  # 1.5 stereo frames
    assert e.value.code == P.E_BAD_CHUNK
    f32 = P.decode_pcm(np.array([0.25, np.nan], "<f4").tobytes(), P.StartRequest("pcm_f32le", 8_000, 1))
    assert f32.shape == (2, 1) and f32[0, 0] == 0.25 and np.isnan(f32[1, 0])  # sanitising happens later, counted


def _fk_from_quats(root: np.ndarray, quats: np.ndarray, info: dict) -> np.ndarray:
    """The FK recipe of the header (what viewer.js does), in numpy."""
    parents, rest, rj = info["parents"], np.asarray(info["rest_offsets"]), info["root_joint"]
    R = quat_to_matrix(quats.astype(np.float64))
    G = np.zeros_like(R)
    X = np.zeros((len(parents), 3))
    G[0] = R[0]
    for j in range(1, len(parents)):
        p = parents[j]
        G[j] = G[p] @ R[j]
        X[j] = X[p] + G[p] @ (rest[j] + (root if j == rj else 0.0))
    return X


def test_joints_stream_reproduces_rig_forward_kinematics():
    c = layout.SessionConstants()
    params = np.stack([fake_params(k, 0.1 * k, 1, c) for k in range(4)])  # (4, 320)
    params[:, layout.HAND] = np.random.default_rng(2).normal(0, 0.2, (4, 108))
    root, quats = P.joints_from_params(params, c)
    assert root.shape == (4, 3) and quats.shape == (4, 127, 4)
    np.testing.assert_allclose(np.linalg.norm(quats, axis=-1), 1.0, atol=1e-5)
    _, X_ref = forward_kinematics(layout.assemble_model_params(params, c))
    info = P.skeleton_info()
    assert info["names"] == list(load_rig().joint_names)
    for t in range(4):  # through the wire (float32) and back
        f = P.unpack(P.pack_joints(t, (t + 1) / 30, root[t], quats[t]))
        X = _fk_from_quats(f.root_translation, f.quats, info)
        assert np.abs(X - X_ref[t]).max() < 0.01  # cm
    assert np.abs(X_ref[1] - X_ref[0]).max() > 0.5  # the poses differ, so the comparison means something
