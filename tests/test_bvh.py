"""BVH export: positions recovered from the file alone equal the rig's FK; file is Blender-friendly."""
from __future__ import annotations

import re

import numpy as np
import pytest

from exporters.bvh import (
    BVHFile,
    build_bvh_motion,
    continuous_euler,
    load_motion,
    main,
    matrix_to_euler_zyx,
    read_bvh,
    rest_rotations,
    write_bvh,
)
from models.layout import SessionConstants, to_sam3d
from models.rig import F_CAM, N_JOINTS, forward_kinematics, load_rig
from models.rotations import euler_to_matrix
from tests.conftest import shared_path


def wild_motion(T: int = 16, seed: int = 0) -> np.ndarray:
    """(T, 204) with large rotations on every pose slot (+-170 deg) and a moving root."""
    rng = np.random.default_rng(seed)
    mp = np.zeros((T, 204))
    mp[:, 0:3] = rng.normal(0.0, 20.0, (T, 3))
    mp[:, 3:130] = rng.uniform(-3.0, 3.0, (T, 127))
    mp[:, 136:] = rng.normal(0.0, 0.1, (T, 68))  # scales: not used by the rig, must not matter
    return mp


def file_positions(b: BVHFile) -> tuple[np.ndarray, list[int]]:
    """(F, J, 3) positions by FK of the file, and the MHR joint id of each BVH joint."""
    _, X = b.forward_kinematics()
    names = load_rig().joint_names
    return X, [names.index(n) for n in b.names]


def test_file_fk_equals_rig_fk_large_rotations(tmp_path):
    mp = wild_motion()
    path = write_bvh(tmp_path / "wild.bvh", mp)
    b = read_bvh(path)
    X, ids = file_positions(b)
    R_rig, X_rig = forward_kinematics(mp)
    assert X.shape == (16, N_JOINTS - 1, 3)
    assert sorted(ids) == list(range(1, N_JOINTS))  # every joint but body_world, once
    err = np.abs(X - X_rig[:, ids]).max()
    assert err < 1e-3, err  # cm (brief: <= 0.1 cm)
    R, _ = b.forward_kinematics()
    Rr = rest_rotations()
    # world-aligned rest: BVH global rotation = R_mhr @ R_rest^T
    assert np.abs(R - R_rig[:, ids] @ np.swapaxes(Rr[ids], -1, -2)[None]).max() < 1e-5


def test_rest_pose_is_mhr_zero_pose_and_header(tmp_path):
    path = write_bvh(tmp_path / "rest.bvh", np.zeros((3, 204)))
    b = read_bvh(path)
    text = path.read_text()
    assert b.names[0] == "root" and b.parents[0] == -1
    assert len(set(b.names)) == len(b.names) == 126
    assert all(re.fullmatch(r"[A-Za-z0-9_]+", n) for n in b.names)
    assert b.channels[0] == ["Xposition", "Yposition", "Zposition", "Zrotation", "Yrotation", "Xrotation"]
    assert all(c == ["Zrotation", "Yrotation", "Xrotation"] for c in b.channels[1:])
    assert np.allclose(b.offsets[0], 0.0)
    assert abs(b.frame_time - 1 / 30) < 1e-7 and b.motion.shape == (3, 3 + 3 * 126)
    # zero parameters -> zero rotation channels (up to the float32 rig's non-orthonormality, ~1e-5 deg)
    assert np.abs(b.motion[:, 3:]).max() < 1e-4
    _, X_rig = forward_kinematics(np.zeros(204))
    X, ids = file_positions(b)
    assert np.abs(X[0] - X_rig[ids]).max() < 1e-4
    # rest positions from the OFFSETs alone (what Blender shows in edit mode) = MHR zero pose
    rest = np.zeros((126, 3))
    for j, p in enumerate(b.parents):
        rest[j] = b.motion[0, :3] if p < 0 else rest[p] + b.offsets[j]
    assert np.abs(rest - X_rig[ids]).max() < 1e-4
    numbers = re.findall(r"-?\d+\.\d+", text.split("MOTION")[0] + text.split("Frame Time:")[1].split("\n", 1)[1])
    assert numbers and all(len(n.split(".")[1]) == 6 for n in numbers)
    assert "nan" not in text.lower() and "inf" not in text.lower() and "-0.000000" not in text
    leaves = {i for i in range(126)} - set(b.parents)
    assert set(b.end_sites) == leaves and all(np.linalg.norm(v) >= 1.0 - 1e-6 for v in b.end_sites.values())


def test_units_scale_positions_not_angles(tmp_path):
    mp = wild_motion(T=4, seed=1)
    cm = build_bvh_motion(mp, units="cm")
    m = build_bvh_motion(mp, units="m")
    assert np.allclose(m.offsets, cm.offsets / 100) and np.allclose(m.root_position, cm.root_position / 100)
    assert np.array_equal(m.euler_deg, cm.euler_deg)
    b = read_bvh(write_bvh(tmp_path / "m.bvh", mp, units="m"))
    X, ids = file_positions(b)
    assert np.abs(X * 100 - forward_kinematics(mp)[1][:, ids]).max() < 1e-2


def test_euler_gimbal_and_continuity():
    for y in (np.pi / 2, -np.pi / 2):
        R = euler_to_matrix(np.array([0.7, y, -0.4]))
        e = matrix_to_euler_zyx(R)
        assert np.abs(euler_to_matrix(e) - R).max() < 1e-9
    # a joint spinning past +-180 degrees: the channels keep going instead of jumping by 360
    t = np.linspace(0, 4 * np.pi, 60)
    R = euler_to_matrix(np.stack([0.3 * np.sin(t), 0.2 * np.cos(t), t], -1))
    e = continuous_euler(matrix_to_euler_zyx(R))
    assert np.abs(np.diff(e, axis=0)).max() < 0.5
    assert np.abs(euler_to_matrix(e) - R).max() < 1e-9
    assert e[-1, 2] > 12.0  # 4 pi, unwrapped


def test_input_formats(tmp_path):
    mp = wild_motion(T=5, seed=2)
    np.savez(tmp_path / "single.npz", mhr_model_params=mp[0].astype(np.float32))
    assert load_motion(tmp_path / "single.npz").mp.shape == (1, 204)
    rng = np.random.default_rng(3)
    motion = rng.normal(0, 0.3, (6, 320)).astype(np.float32)
    d = to_sam3d(motion, SessionConstants(fps=25.0))  # the train.infer output format
    np.savez(tmp_path / "gen.npz", **d)
    got = load_motion(tmp_path / "gen.npz")
    assert got.fps == 25.0 and np.allclose(got.mp, d["mhr_model_params"])
    d.pop("mhr_model_params")  # a stacked SAM 3D Body npz without the assembled parameters
    np.savez(tmp_path / "stacked.npz", **d)
    got2 = load_motion(tmp_path / "stacked.npz")
    assert got2.source_key.startswith("global_rot") and np.abs(got2.mp[:, :136] - got.mp[:, :136]).max() < 1e-5
    bad = mp.copy()
    bad[2, 40] = np.nan
    np.savez(tmp_path / "nan.npz", mhr_model_params=bad)
    with pytest.raises(ValueError, match=r"nan\.npz.*NaN/Inf.*frame 2"):
        load_motion(tmp_path / "nan.npz")
    np.savez(tmp_path / "empty.npz", foo=np.zeros(3))
    with pytest.raises(ValueError, match=r"empty\.npz: no motion found"):
        load_motion(tmp_path / "empty.npz")


def test_cli(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    np.savez(tmp_path / "g.npz", mhr_model_params=wild_motion(T=3).astype(np.float32))
    assert main([str(tmp_path / "g.npz"), "-o", str(tmp_path / "g.bvh"), "--offsets", "per-sample-2"]) == 0
    b = read_bvh(tmp_path / "g.bvh")
    X, ids = file_positions(b)
    ref = forward_kinematics(np.load(tmp_path / "g.npz")["mhr_model_params"], load_rig().rest_offsets_per_sample[2])
    assert b.motion.shape[0] == 3 and np.abs(X - ref[1][:, ids]).max() < 1e-3
    assert main([str(tmp_path / "g.npz"), "--offsets", "per-sample-9"]) == 2
    assert "N must be 0..3" in capsys.readouterr().err
    assert main([str(tmp_path / "missing.npz")]) == 2
    assert "missing.npz: input npz not found" in capsys.readouterr().err


@pytest.mark.shared
def test_real_fixtures(tmp_path):
    """The four real SAM 3D Body outputs (../shared; skipped when absent, required under CI)."""
    rig = load_rig()
    FIXTURES = [shared_path("fixtures", "sam3d_body", f"img_subj0{i}.npz") for i in range(4)]
    mps = np.stack([np.load(f)["mhr_model_params"] for f in FIXTURES]).astype(np.float64)  # (4, 204) as a motion
    b = read_bvh(write_bvh(tmp_path / "real.bvh", mps))
    X, ids = file_positions(b)
    assert np.abs(X - forward_kinematics(mps)[1][:, ids]).max() < 1e-3
    # exact subject offsets: the file reproduces SAM 3D Body's own joints
    for k, f in enumerate(FIXTURES):
        out = tmp_path / f"s{k}.bvh"
        assert main([str(f), "-o", str(out), "--offsets", "input"]) == 0
        Xs, ids = file_positions(read_bvh(out))
        pjc = np.load(f)["pred_joint_coords"].astype(np.float64) * 100.0 @ F_CAM.T
        assert np.abs(Xs[0] - pjc[ids]).max() < 1e-2, f
        assert np.abs(Xs[0] - forward_kinematics(mps[k], rig.rest_offsets_per_sample[k])[1][ids]).max() < 1e-2
