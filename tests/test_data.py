"""Real data path: ingestion (train.ingest), check and cache (train.data), windows (train.dataset)."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from models import layout, rates
from models.audio import save_wav
from models.layout import GLOBAL_ROT, VARYING
from models.rig import F_CAM, forward_kinematics
from models.rotations import euler_to_matrix, matrix_to_euler
from train import data as tdata
from train.data import FACE_CONSTANT_MESSAGE, CacheConfig, build_cache, cache_status, check_dataset
from train.dataset import WindowDataset, load_cache, split_sequences
from train.ingest import (
    IngestConfig,
    IngestError,
    SequenceSource,
    SpeakerTable,
    discover,
    foot_contact,
    foot_joints_fk,
    ingest_arrays,
    read_sequence,
    unwrap_motion,
)

SHARED = Path(__file__).resolve().parents[2] / "shared"
FIXTURES = SHARED / "fixtures" / "sam3d_body"
FIXTURE_KEYS = ("global_rot", "body_pose_params", "hand_pose_params", "expr_params", "scale_params", "shape_params",
                "pred_cam_t", "mhr_model_params", "pred_joint_coords")


# ---- synthetic inputs ---------------------------------------------------------------------------------------------

def make_arrays(T: int, fps: float = 30.0, seed: int = 0, speaker=0) -> dict[str, np.ndarray]:
    """A plausible stacked SAM 3D Body sequence: smooth body/hand motion, zero face, constant identity."""
    rng = np.random.default_rng(seed)
    t = np.arange(T) / fps
    body = np.zeros((T, 133), np.float32)
    for j in VARYING["body"]:
        body[:, j] = 0.2 * np.sin(2 * np.pi * rng.uniform(0.2, 1.5) * t + rng.uniform(0, 6))
    body[:, 124:130] = rng.normal(0, 0.1, 6)
    g = np.stack([0.05 * np.sin(2 * np.pi * 0.3 * t), 0.3 * np.sin(2 * np.pi * 0.2 * t), 0.02 * np.cos(t)], 1)
    return {
        "global_rot": g.astype(np.float32), "body_pose_params": body,
        "hand_pose_params": (0.1 * np.sin(t[:, None] * np.linspace(1, 5, 108))).astype(np.float32),
        "expr_params": np.zeros((T, 72), np.float32),
        "scale_params": np.tile(rng.normal(0, 0.3, 28), (T, 1)).astype(np.float32),
        "shape_params": np.tile(rng.normal(0, 0.3, 45), (T, 1)).astype(np.float32),
        "pred_cam_t": np.tile([0.1, 1.0, 5.0], (T, 1)).astype(np.float32) + rng.normal(0, 0.01, (T, 3)).astype(
            np.float32),
        "focal_length": np.full(T, 1500.0, np.float32), "fps": np.array(fps, np.float32),
        "image_size": np.array([1280, 720]), "speaker": np.array(speaker),
    }


def noise(seconds: float, rate: int = rates.MODEL_SAMPLE_RATE, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(round(seconds * rate)))).astype(np.float32)


def write_seq(folder: Path, name: str, arrays: dict, audio_s: float | None = None, rate: int = 24_000,
              seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / f"{name}.npz"
    np.savez(p, **arrays)
    T, fps = len(arrays["global_rot"]), float(arrays.get("fps", 30.0))
    save_wav(folder / f"{name}.wav", noise(T / fps if audio_s is None else audio_s, rate, seed), rate)
    return p


def src_of(p: Path) -> SequenceSource:
    (s,) = discover(p)
    return s


def rejected(fn, *a, **k) -> list:
    with pytest.raises(IngestError) as e:
        fn(*a, **k)
    return [i for i in e.value.issues if i.severity == "error"]


# ---- real fixtures ------------------------------------------------------------------------------------------------

def _fixture_arrays(repeat: int = 3) -> dict[str, np.ndarray]:
    files = sorted(FIXTURES.glob("*.npz"))
    if len(files) != 4:
        pytest.skip(f"{FIXTURES} not available (../shared absent)")
    ds = [np.load(f, allow_pickle=False) for f in files]
    arr = {k: np.repeat(np.stack([d[k] for d in ds]), repeat, axis=0) for k in FIXTURE_KEYS}
    T = len(arr["global_rot"])
    arr.update(focal_length=np.full(T, 2535.27, np.float32), image_size=np.array([1920, 890]),
               fps=np.array(30.0), speaker=np.array("subj"))
    return arr


def test_real_fixtures_stacked_round_trip_exact(tmp_path):
    arr = _fixture_arrays()
    seq = read_sequence(src_of(write_seq(tmp_path, "fx", arr)))
    m = seq.motion
    assert m.shape == (12, 320) and seq.valid.all() and seq.audio.shape == (12 * rates.SAMPLES_PER_FRAME,)
    back = layout.to_sam3d(m, seq.constants)
    assert np.array_equal(back["global_rot"], arr["global_rot"])
    assert np.array_equal(back["hand_pose_params"], arr["hand_pose_params"])
    assert np.array_equal(back["expr_params"], arr["expr_params"])
    pose = np.setdiff1d(np.arange(133), np.arange(124, 130))  # all but the per-sequence bone lengths (means)
    assert np.array_equal(back["body_pose_params"][:, pose], arr["body_pose_params"][:, pose])
    np.testing.assert_allclose(seq.constants.bone_lengths, arr["body_pose_params"][:, 124:130].mean(0), atol=1e-6)
    mp = layout.assemble_model_params(m, seq.constants)
    keep = np.setdiff1d(np.arange(3, 136), 6 + np.arange(124, 130))
    np.testing.assert_allclose(mp[:, keep], arr["mhr_model_params"][:, keep], atol=1e-6)  # hands decode exactly
    np.testing.assert_allclose(seq.constants.pred_cam_t, arr["pred_cam_t"].mean(0), atol=1e-5)
    assert seq.constants.focal_length == pytest.approx(2535.27, abs=1e-3)
    assert (seq.constants.image_width, seq.constants.image_height) == (1920, 890)
    # contact from pred_joint_coords: still within each repeated pose, moving at the 3 subject changes
    assert seq.report["contact_source"] == "pred_joint_coords"
    moving = np.array([3, 6, 9])
    assert (m[moving][:, layout.CONTACT] == 0).all()
    assert (np.delete(m, moving, 0)[:, layout.CONTACT] == 1).all()
    assert (m[:, layout.FACE] == 0).all()


def test_real_fixtures_per_frame_folder_equals_stacked(tmp_path):
    arr = _fixture_arrays(repeat=1)
    T = 4
    folder = tmp_path / "clip"
    folder.mkdir()
    for t in range(T):
        np.savez(folder / f"frame_{t + 1:06d}.npz", **{k: arr[k][t] for k in FIXTURE_KEYS},
                 focal_length=np.float32(2535.27), image_size=np.array([1920, 890]))
    save_wav(tmp_path / "clip.wav", noise(T / 30))
    (src,) = discover(folder)
    assert src.kind == "frames" and src.audio == tmp_path / "clip.wav"
    seq = read_sequence(src)
    stacked = read_sequence(src_of(write_seq(tmp_path / "st", "clip", arr)))
    assert seq.valid.all() and np.array_equal(seq.motion, stacked.motion)


# ---- formats ------------------------------------------------------------------------------------------------------

def test_per_frame_folder_with_gap_and_people_list(tmp_path):
    arr = make_arrays(40)
    folder = tmp_path / "ds" / "talk"
    folder.mkdir(parents=True)
    for t in range(40):
        if t in (10, 11):  # frames with no file: missing
            continue
        frame = {k: arr[k][t] for k in layout.SAM3D_REQUIRED_KEYS}
        if t == 20:  # a list of two people on this frame: (P, ...) arrays with track ids
            frame = {k: np.stack([v + 1.0, v]) for k, v in frame.items()}
            frame["track_ids"] = np.array([5, 0])
        else:
            frame["track_ids"] = np.array([0])
        np.savez(folder / f"frame_{t:06d}.npz", **frame, fps=np.float32(30))
    save_wav(folder / "audio.wav", noise(40 / 30))  # audio inside the folder
    (src,) = discover(tmp_path / "ds")
    assert (src.kind, src.name) == ("frames", "talk")
    seq = read_sequence(src)
    assert seq.n_frames == 40 and seq.person == 0
    assert not seq.valid[[10, 11]].any() and seq.valid.sum() == 38
    ref = ingest_arrays(arr, noise(40 / 30))
    ok = seq.valid
    np.testing.assert_array_equal(seq.motion[ok][:, :313], ref.motion[ok][:, :313])
    assert any("missing" in i.message for i in seq.issues if i.severity == "warning")


def test_multi_person_default_and_choice(tmp_path):
    T, P = 60, 3
    base = make_arrays(T)
    arr = {k: (np.stack([v] * P, 1) if k in layout.SAM3D_REQUIRED_KEYS or k == "focal_length" else v)
           for k, v in base.items()}
    arr["body_pose_params"] = arr["body_pose_params"].copy()
    arr["body_pose_params"][:, 1, 0] += 0.5  # a mark for person 1
    arr["global_rot"] = arr["global_rot"].copy()
    arr["global_rot"][:30, 0] = np.nan  # person 0: half missing
    valid = np.ones((T, P), bool)
    valid[:, 2] = False
    valid[:40, 2] = True  # person 2: 40 valid frames
    arr["valid"] = valid
    seq = ingest_arrays(arr, noise(T / 30))
    assert seq.person == 1 and seq.valid.all()
    np.testing.assert_allclose(seq.motion[:, 0], base["body_pose_params"][:, 0] + 0.5, atol=1e-6)
    assert any(i.key == "person" and "most" in i.message for i in seq.issues)
    seq2 = ingest_arrays(arr, noise(T / 30), config=IngestConfig(person=2))
    assert seq2.person == 2 and seq2.valid.sum() == 40
    errs = rejected(ingest_arrays, arr, noise(T / 30), config=IngestConfig(person=7))
    assert errs[0].key == "person"


def test_pickle_needed_is_refused(tmp_path):
    arr = make_arrays(30)
    p = write_seq(tmp_path, "obj", {**arr, "global_rot": np.array(list(arr["global_rot"]) + [None], dtype=object)})
    errs = rejected(read_sequence, src_of(p))
    assert errs[0].file == str(p) and errs[0].key == "global_rot" and "pickle" in errs[0].message and errs[0].fix
    # an unused key that needs pickle (SAM 3D Body's mask=None) is never loaded
    p2 = write_seq(tmp_path, "mask", {**arr, "mask": np.array(None, dtype=object)})
    assert read_sequence(src_of(p2)).n_frames == 30


# ---- bad cases: one test each -------------------------------------------------------------------------------------

def test_missing_key_rejected_with_file_key_fix(tmp_path):
    arr = make_arrays(30)
    del arr["hand_pose_params"]
    p = write_seq(tmp_path, "nohand", arr)
    (e,) = rejected(read_sequence, src_of(p))
    assert (e.file, e.key) == (str(p), "hand_pose_params") and "missing" in e.message and "108" in e.fix


def test_wrong_shape_rejected(tmp_path):
    arr = make_arrays(30)
    arr["body_pose_params"] = arr["body_pose_params"][:, :100]
    p = write_seq(tmp_path, "short", arr)
    (e,) = rejected(read_sequence, src_of(p))
    assert e.key == "body_pose_params" and "(30, 100)" in e.message and "133" in e.message and e.fix


def test_nan_frames_masked_below_fraction():
    arr = make_arrays(100)
    arr["body_pose_params"][[10, 11, 12, 50], 5] = np.nan
    arr["pred_cam_t"][70, 2] = np.inf
    seq = ingest_arrays(arr, noise(100 / 30))
    assert np.flatnonzero(~seq.valid).tolist() == [10, 11, 12, 50, 70]
    assert np.isfinite(seq.motion).all()
    w = [i for i in seq.issues if i.severity == "warning" and "NaN" in i.message]
    assert w and "body_pose_params" in w[0].key and "pred_cam_t" in w[0].key and "10-12" in w[0].message
    np.testing.assert_allclose(seq.constants.pred_cam_t, arr["pred_cam_t"][seq.valid].mean(0), atol=1e-6)


def test_nan_frames_above_fraction_rejected():
    arr = make_arrays(100)
    arr["global_rot"][:15] = np.nan
    (e,) = rejected(ingest_arrays, arr, noise(100 / 30), file="bad.npz")
    assert e.file == "bad.npz" and "15 of 100" in e.message and "--max-bad-fraction" in e.fix
    seq = ingest_arrays(arr, noise(100 / 30), config=IngestConfig(max_bad_fraction=0.2))
    assert seq.valid.sum() == 85


def test_audio_length_trimmed_within_tolerance_rejected_beyond(tmp_path):
    arr = make_arrays(90)  # 3.0 s
    short = read_sequence(src_of(write_seq(tmp_path, "short", arr, audio_s=2.8)))
    assert short.n_frames == 84 and short.audio.shape == (84 * 800,)
    assert any(i.key == "audio" and i.severity == "warning" and "shorter" in i.message for i in short.issues)
    long = read_sequence(src_of(write_seq(tmp_path, "long", arr, audio_s=3.3, rate=16_000)))
    assert long.n_frames == 90 and long.audio.shape == (90 * 800,)
    assert any(i.key == "audio" and "longer" in i.message for i in long.issues)
    p = write_seq(tmp_path, "cut", arr, audio_s=2.0)
    (e,) = rejected(read_sequence, src_of(p))
    assert e.key == "audio" and "-1.00 s" in e.message and e.fix
    os.remove(p.with_suffix(".wav"))
    (e,) = rejected(read_sequence, src_of(p))
    assert e.key == "audio" and "cut.wav" in e.fix


def test_fps_mismatch_resampled_to_30():
    T, fps = 100, 25.0  # 4 s
    arr = make_arrays(T, fps=fps)
    t = np.arange(T) / fps
    arr["global_rot"] = np.stack([np.zeros(T), np.zeros(T), 0.5 * t], 1).astype(np.float32)  # constant yaw rate
    arr["body_pose_params"][:, 0] = (0.3 * t).astype(np.float32)
    seq = ingest_arrays(arr, noise(4.0))
    assert seq.n_frames == 120 and seq.source_fps == 25.0 and seq.fps == 30.0
    t30 = np.arange(120) / 30.0
    inside = t30 <= t[-1]
    np.testing.assert_allclose(seq.motion[inside, GLOBAL_ROT.start + 2], 0.5 * t30[inside], atol=1e-5)  # slerp
    np.testing.assert_allclose(seq.motion[inside, 0], 0.3 * t30[inside], atol=1e-5)
    assert any(i.key == "fps" and "resampled" in i.message for i in seq.issues)
    arr["fps"] = np.array(5.0)
    (e,) = rejected(ingest_arrays, arr, noise(20.0))
    assert e.key == "fps"


def test_read_only_inputs_never_written(tmp_path):
    arr = make_arrays(75, fps=25.0)
    arr["body_pose_params"][5:7] = np.nan
    arr["global_rot"][:, 1] += np.where(np.arange(75) > 40, 2 * np.pi, 0.0).astype(np.float32)  # a 2*pi jump
    maps = {}
    for k, v in arr.items():
        np.save(tmp_path / f"{k}.npy", v)
        maps[k] = np.load(tmp_path / f"{k}.npy", mmap_mode="r")
        assert not maps[k].flags.writeable
    before = {k: np.array(v) for k, v in maps.items()}
    seq = ingest_arrays(maps, noise(3.0), config=IngestConfig(smooth_sigma=1.0))
    assert seq.n_frames == 90 and not seq.valid[6:8].all()
    for k in arr:
        assert np.array_equal(maps[k], before[k], equal_nan=True), k
    with pytest.raises(ValueError):
        maps["global_rot"][0, 0] = 1.0  # really read-only


def test_speaker_minus_one_is_unknown_and_out_of_range_rejected(tmp_path):
    ds = tmp_path / "ds"
    write_seq(ds, "a", make_arrays(30, speaker=1))
    write_seq(ds, "b", make_arrays(30, speaker=-1))
    write_seq(ds, "c", make_arrays(30, speaker="bob"))
    write_seq(ds, "d", make_arrays(30, speaker=5))
    (ds / "speakers.json").write_text(json.dumps(["alice", "bob"]))
    rep = check_dataset(ds)
    by = {f.name: f for f in rep.files}
    assert by["a"].speaker == 1 and by["c"].speaker == 1
    assert by["b"].speaker == 2 == rep.speakers.unknown_id == rep.speakers.n_speakers  # never a real speaker
    assert by["d"].status == "rejected"
    (e,) = [i for i in by["d"].issues if i.severity == "error"]
    assert e.key == "speaker" and e.file.endswith("d.npz") and "out of range" in e.message and e.fix
    assert rep.n_rejected == 1
    # without speakers.json: integer ids are kept, -1 -> n_speakers
    table = SpeakerTable.from_labels([0, 3, None])
    assert table.n_speakers == 4 and table.resolve(None) == 4 and table.resolve(3) == 3


def test_constant_face_reported_and_check_cli(tmp_path, capsys):
    ds = tmp_path / "ds"
    write_seq(ds, "a", make_arrays(60, seed=1))
    write_seq(ds, "b", make_arrays(45, seed=2))
    rep = check_dataset(ds)
    assert rep.parts["face"] == {"channels": 75, "constant": 75, "status": FACE_CONSTANT_MESSAGE}
    assert rep.parts["body"]["constant"] == 0 and rep.parts["hand"]["constant"] == 0
    assert any(i.message == FACE_CONSTANT_MESSAGE for i in rep.dataset_issues)
    assert tdata.main(["check", str(ds)]) == 0
    out = capsys.readouterr().out
    assert FACE_CONSTANT_MESSAGE in out and "2 ok, 0 warn, 0 rejected" in out
    bad = make_arrays(30)
    del bad["expr_params"]
    write_seq(ds, "c", bad)
    assert tdata.main(["check", str(ds), "--json"]) == 1
    js = json.loads(capsys.readouterr().out)
    assert js["summary"]["files"] == {"ok": 2, "warn": 0, "rejected": 1}
    (c,) = [f for f in js["files"] if f["name"] == "c"]
    assert c["issues"][0]["key"] == "expr_params" and c["file"].endswith("c.npz")


# ---- angles, contact ----------------------------------------------------------------------------------------------

def test_unwrap_full_turn_through_gimbal():
    T = 100
    theta = np.linspace(0, 2 * np.pi, T)  # a full turn about y: passes y = +-pi/2 twice
    # a full turn, tilted a little (x = 0.1, z = 0.05) so the samples near y = +-pi/2 are not exactly degenerate
    R = euler_to_matrix(np.stack([np.full(T, 0.1), theta, np.full(T, 0.05)], 1))
    raw = matrix_to_euler(R)
    assert np.abs(np.diff(raw, axis=0)).max() > 2.0  # the raw extraction jumps
    m = np.zeros((T, 320))
    m[:, GLOBAL_ROT] = raw
    twist = np.angle(np.exp(1j * np.linspace(0, 3 * np.pi, T)))  # a body 1-DoF angle wrapping at +-pi
    m[:, 7] = twist
    out, fixes = unwrap_motion(m, np.ones(T, bool))
    g = out[:, GLOBAL_ROT]
    assert np.abs(np.diff(g, axis=0)).max() < 0.2
    assert np.abs(euler_to_matrix(g) - R).max() <= 1e-6
    assert np.abs(np.diff(out[:, 7])).max() < 0.2
    np.testing.assert_allclose(np.angle(np.exp(1j * out[:, 7])), twist, atol=1e-9)
    assert fixes["global_rot"] >= 2 and fixes["body"] >= 1
    # the same through the reader (valid frames only; rotation matrices unchanged)
    arr = make_arrays(T)
    arr["global_rot"] = raw.astype(np.float32)
    seq = ingest_arrays(arr, noise(T / 30))
    assert np.abs(np.diff(seq.motion[:, GLOBAL_ROT], axis=0)).max() < 0.2
    assert np.abs(euler_to_matrix(seq.motion[:, GLOBAL_ROT]) - euler_to_matrix(raw.astype(np.float32))).max() < 1e-6


def test_smoothing_off_by_default_and_reported():
    T = 120
    arr = make_arrays(T)
    rng = np.random.default_rng(7)
    arr["body_pose_params"][:, VARYING["body"]] += rng.normal(0, 0.02, (T, 70)).astype(np.float32)  # jitter
    arr["global_rot"] += rng.normal(0, 0.01, (T, 3)).astype(np.float32)
    plain = ingest_arrays(arr, noise(T / 30))
    assert plain.report["hf_energy_before"] == plain.report["hf_energy_after"]
    np.testing.assert_array_equal(plain.motion[:, GLOBAL_ROT], arr["global_rot"])  # off: untouched
    sm = ingest_arrays(arr, noise(T / 30), config=IngestConfig(smooth_sigma=2.0))
    hb, ha = sm.report["hf_energy_before"], sm.report["hf_energy_after"]
    assert hb == plain.report["hf_energy_before"]
    for k in ("body", "global_rot"):  # the jittered parts
        assert ha[k] < 0.2 * hb[k], k
    assert ha["hand"] <= hb["hand"]
    body = VARYING["body"]
    assert np.abs(sm.motion[:, body] - plain.motion[:, body]).mean() < 0.03  # the motion itself is kept


def test_foot_contact_walking_like():
    # direct: stance (still) / swing (4 cm per frame) alternating between the feet every 15 frames
    T = 120
    swing_left = (np.arange(T) // 15) % 2 == 1
    x = np.zeros((T, 4, 3))
    for j, side in enumerate([swing_left, swing_left, ~swing_left, ~swing_left]):
        x[:, j, 2] = np.cumsum(np.where(side, 4.0, 0.0))
    c = foot_contact(x, threshold_cm=1.0)
    expect = np.stack([~swing_left, ~swing_left, swing_left, swing_left], 1).astype(np.float32)
    expect[0] = expect[1]  # frame 0 takes frame 1's speed
    assert np.array_equal(c, expect)
    # through FK: the right hip swings, the left leg stays still
    m = np.zeros((T, 320), np.float32)
    m[:, 45] = 0.4 * np.sin(2 * np.pi * np.arange(T) / 30)  # body slot 45 = model 51 = r_upleg_ry
    feet = foot_joints_fk(m, layout.SessionConstants())
    c = foot_contact(feet, 1.0)
    assert (c[:, :2] == 1).all()  # left foot and ball never move
    assert c[:, 2].mean() < 0.35 and c[:, 3].mean() < 0.35
    speed = np.linalg.norm(np.diff(feet[:, 2], axis=0), axis=-1)
    assert speed.max() > 3.0


def test_contact_from_joint_coords_uses_native_cm():
    from train.ingest import camera_joints_to_native

    _, X = forward_kinematics(np.zeros(204))
    cam = (X @ F_CAM.T) / 100.0  # native cm -> camera metres (no cam_t), what pred_joint_coords holds
    np.testing.assert_allclose(camera_joints_to_native(cam), X, atol=1e-9)


# ---- cache and dataset --------------------------------------------------------------------------------------------

def _dataset(root: Path) -> Path:
    write_seq(root, "s0", make_arrays(150, seed=0, speaker=0), seed=0)
    write_seq(root, "s1", make_arrays(100, seed=1, speaker=1), seed=1)
    bad = make_arrays(100, seed=2, speaker=1)
    bad["global_rot"][40:60] = np.nan  # 20/100 > 10%: rejected
    write_seq(root, "s2", bad, seed=2)
    write_seq(root, "s3", make_arrays(70, seed=3, speaker=0), seed=3)
    return root


def _read_all(cache: Path) -> dict[str, bytes]:
    return {f: (cache / f).read_bytes() for f in ("manifest.json", *tdata.CACHE_FILES)}


def test_cache_rebuild_on_change_and_byte_identical(tmp_path):
    ds, out = _dataset(tmp_path / "ds"), tmp_path / "cache"
    cfg = CacheConfig(window=64, stride=32)
    r1 = build_cache(ds, out, cfg, progress=False)
    assert r1.rebuilt and [s["name"] for s in r1.manifest["sequences"]] == ["s0", "s1", "s3"]
    assert [r["name"] for r in r1.manifest["rejected"]] == ["s2"]
    first = _read_all(out)
    assert not build_cache(ds, out, cfg, progress=False).rebuilt
    assert cache_status(ds, out, cfg) is None
    assert build_cache(ds, out, cfg, progress=False, force=True).rebuilt
    assert _read_all(out) == first  # same inputs -> same bytes
    # touching a source rebuilds; the content is unchanged
    st = os.stat(ds / "s1.wav")
    os.utime(ds / "s1.wav", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert "s1.wav" in cache_status(ds, out, cfg)
    assert build_cache(ds, out, cfg, progress=False).rebuilt
    now = _read_all(out)
    assert all(now[f] == first[f] for f in tdata.CACHE_FILES)
    # modifying a source changes the arrays
    arr = make_arrays(150, seed=0, speaker=0)
    arr["body_pose_params"][:, 0] += 0.1
    np.savez(ds / "s0.npz", **arr)
    r = build_cache(ds, out, cfg, progress=False)
    assert r.rebuilt and "s0.npz" in r.reason
    assert (out / "motion.npy").read_bytes() != first["motion.npy"]
    # a config change rebuilds
    cfg2 = CacheConfig(window=64, stride=16)
    assert cache_status(ds, out, cfg2) == "config changed"
    assert build_cache(ds, out, cfg2, progress=False).rebuilt
    # a new file rebuilds
    write_seq(ds, "s4", make_arrays(100, seed=4))
    assert "s4" in cache_status(ds, out, cfg2)


def test_cache_contents_and_stats(tmp_path):
    ds, out = _dataset(tmp_path / "ds"), tmp_path / "cache"
    build_cache(ds, out, CacheConfig(window=64, stride=32), progress=False)
    c = load_cache(out)
    assert c.motion.shape == (320, 320) and c.features.shape == (320, 160) and c.valid.shape == (320,)
    assert c.motion.dtype == np.float32 and not c.motion.flags.writeable
    assert [(s.name, s.start, s.length, s.speaker) for s in c.sequences] == [
        ("s0", 0, 150, 0), ("s1", 150, 100, 1), ("s3", 250, 70, 0)]
    assert c.speakers == ["0", "1"] and c.unknown_speaker == 2
    seq = read_sequence(src_of(ds / "s1.npz"))
    np.testing.assert_array_equal(c.sequence_arrays(1)["motion"], seq.motion)
    from models.features import features_of

    np.testing.assert_allclose(c.sequence_arrays(1)["features"], features_of(seq.audio), atol=1e-5)
    m = np.asarray(c.motion, np.float64)
    np.testing.assert_allclose(c.stats["mean"], m.mean(0), atol=1e-5)
    np.testing.assert_allclose(c.stats["std"], m.std(0), atol=1e-5)
    assert c.stats["constant"][layout.FACE].all() and not c.stats["constant"][VARYING["hand"]].any()
    assert c.sequences[0].constants.focal_length == 1500.0
    fm, fs = c.feature_stats()
    np.testing.assert_allclose(fm, np.asarray(c.features, np.float64).mean(0), atol=1e-5)
    np.testing.assert_allclose(fs, np.asarray(c.features, np.float64).std(0), atol=1e-5)
    mc = c.mean_constants()
    w = np.array([150, 100, 70]) / 320
    np.testing.assert_allclose(mc.pred_cam_t, sum(wi * s.constants.pred_cam_t for wi, s in zip(w, c.sequences)),
                               atol=1e-6)
    assert (mc.image_width, mc.image_height, mc.focal_length) == (1280, 720, 1500.0)


def test_window_dataset_split_windows_and_copies(tmp_path):
    ds, out = tmp_path / "ds", tmp_path / "cache"
    for i, T in enumerate([600, 300, 260, 520, 90]):
        arr = make_arrays(T, seed=i, speaker=i % 2)
        if i == 3:
            arr["global_rot"][100:140] = np.nan  # 40/520 masked: windows over them are dropped
        write_seq(ds, f"q{i}", arr, seed=i)
    build_cache(ds, out, CacheConfig(), progress=False, force=True)
    c = load_cache(out)
    tr = WindowDataset(out, window=256, stride=64, split="train", val_fraction=0.25, seed=0)
    va = WindowDataset(out, window=256, stride=64, split="val", val_fraction=0.25, seed=0)
    tr_seqs, va_seqs = set(tr.windows[:, 0].tolist()), set(va.windows[:, 0].tolist())
    assert va_seqs and tr_seqs and not (tr_seqs & va_seqs)
    assert set(tr.sequence_ids).isdisjoint(va.sequence_ids) and len(tr.sequence_ids) + len(va.sequence_ids) == 5
    assert np.array_equal(WindowDataset(out, 256, 64, "train", 0.25, 0).windows, tr.windows)  # deterministic
    assert split_sequences(["q4", "q0", "q1", "q3", "q2"], 0.25, 0) == {c.sequences[i].name for i in va.sequence_ids}
    for ds_ in (tr, va):
        for k in range(len(ds_)):
            i, start = ds_.windows[k]
            s = c.sequences[i]
            assert start + 256 <= s.length  # never crosses a sequence
            assert c.valid[s.start + start:s.start + start + 256].mean() >= 0.9
    allw = WindowDataset(out, window=256, stride=64, split="all")
    starts_q3 = allw.windows[allw.windows[:, 0] == 3, 1].tolist()
    assert 0 not in starts_q3 and 64 not in starts_q3 and 256 in starts_q3  # >10% invalid frames are dropped
    assert not (allw.windows[:, 0] == 4).any()  # 90 frames < window
    item = allw[0]
    assert item["motion"].shape == (256, 320) and item["features"].shape == (256, 160)
    assert item["valid"].dtype == torch.bool and item["speaker"].dtype == torch.long and item["speaker"].shape == ()
    i, start = allw.windows[0]
    g = c.sequences[i].start + start
    np.testing.assert_array_equal(item["motion"].numpy(), c.motion[g:g + 256])
    # items are copies: writing into one changes neither the cache nor the next read
    assert not np.shares_memory(item["motion"].numpy(), allw.cache.motion)
    item["motion"][:] = 123.0
    item["features"][:] = 5.0
    again = allw[0]
    np.testing.assert_array_equal(again["motion"].numpy(), c.motion[g:g + 256])
    assert float(again["features"].abs().max()) < 5.0
    # long windows for streaming training
    long = WindowDataset(out, window=512, stride=64, split="all")
    assert len(long) > 0 and long[0]["motion"].shape == (512, 320)
    # several DataLoader workers (each maps the cache itself)
    loader = torch.utils.data.DataLoader(allw, batch_size=4, num_workers=2)
    b = next(iter(loader))
    ref = torch.stack([allw[k]["motion"] for k in range(4)])
    assert torch.equal(b["motion"], ref)


def test_cache_cli(tmp_path, capsys):
    ds = tmp_path / "ds"
    write_seq(ds, "a", make_arrays(100))
    out = tmp_path / "c"
    assert tdata.main(["cache", str(ds), "--out", str(out), "--window", "64", "--stride", "16"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert tdata.main(["cache", str(ds), "--out", str(out), "--window", "64", "--stride", "16"]) == 0
    assert "cache is current" in capsys.readouterr().out
    assert json.loads((out / "manifest.json").read_text())["config"]["stride"] == 16
    shutil.rmtree(ds)
    assert tdata.main(["cache", str(ds), "--out", str(out)]) == 2
