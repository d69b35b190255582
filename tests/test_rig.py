import numpy as np
import pytest

from models import rig
from models.rotations import euler_to_matrix, matrix_to_euler
from tests.conftest import shared_path


def _fixture(i):
    return dict(np.load(shared_path("fixtures", "sam3d_body", f"img_subj0{i}.npz")))


def test_zero_pose_check_values():  # mhr_rig.md §12.1
    r = rig.load_rig()
    _, X = rig.forward_kinematics(np.zeros(204))
    expect = {"root": (0, 92.40, 0), "c_head": (0, 154.21, 3.89), "c_jaw": (0, 156.01, 5.77),
              "c_jaw_null": (-0.01, 151.71, 13.65), "c_head_null": (0, 173.29, 3.89),
              "l_wrist": (50.13, 110.20, 13.06), "r_wrist": (-50.14, 110.21, 13.01)}
    for name, pos in expect.items():
        np.testing.assert_allclose(X[r.joint(name)], pos, atol=0.011)


def test_subj01_generic_skeleton_accuracy():  # §12.2
    r = rig.load_rig()
    d = _fixture(1)
    _, X = rig.forward_kinematics(d["mhr_model_params"])
    Y = d["pred_joint_coords"] * 100 @ rig.F_CAM.T
    err = np.linalg.norm(X - Y, axis=-1)
    assert err[r.main24].mean() == pytest.approx(0.878, abs=0.01)
    assert err[r.main24].max() == pytest.approx(2.051, abs=0.01)
    assert err.mean() == pytest.approx(1.12, abs=0.01)
    np.testing.assert_allclose(X[r.joint("r_wrist")], (-14.30, 193.82, 24.33), atol=0.01)


@pytest.mark.parametrize("i", range(4))
def test_own_offsets_exact_and_hands_decode(i):  # §6, §12.2-3
    d = _fixture(i)
    mp = d["mhr_model_params"]
    offs = rig.offsets_from_joints(mp, d["pred_joint_coords"])
    _, X = rig.forward_kinematics(mp, offs)
    assert np.abs(X - d["pred_joint_coords"] * 100 @ rig.F_CAM.T).max() < 1e-4
    _, X2 = rig.forward_kinematics(mp, rig.load_rig().rest_offsets_per_sample[i])
    assert np.abs(X2 - d["pred_joint_coords"] * 100 @ rig.F_CAM.T).max() < 1e-3
    assert np.abs(rig.hand_params_to_model(d["hand_pose_params"]) - mp[68:122]).max() < 1e-6


def test_mean_hand_check_values():  # §12.3
    e = np.degrees(rig.decode_hand(np.zeros(54)))
    np.testing.assert_allclose(e[15:18], (0.68, -4.59, 17.72), atol=0.01)
    assert e[20] == pytest.approx(12.74, abs=0.01)
    np.testing.assert_allclose(e[22:25], (-16.17, -28.18, 5.04), atol=0.01)


def test_projection_subj01():  # §12.4
    r = rig.load_rig()
    d = _fixture(1)
    P = d["pred_joint_coords"] + d["pred_cam_t"]
    uv = rig.project(P, 2535.27, 1920, 890)
    np.testing.assert_allclose(uv[r.joint("root")], (336.23, 523.26), atol=0.05)
    np.testing.assert_allclose(uv[r.joint("c_head")], (344.96, 328.08), atol=0.05)
    np.testing.assert_allclose(rig.project(d["pred_keypoints_3d"] + d["pred_cam_t"], 2535.27, 1920, 890),
                               d["pred_keypoints_2d"], atol=0.01)


def test_fk_batched_equals_single():
    rng = np.random.default_rng(1)
    mp = rng.normal(scale=0.3, size=(5, 204))
    mp[:, 136:] = 0
    R, X = rig.forward_kinematics(mp)
    for t in range(5):
        R1, X1 = rig.forward_kinematics(mp[t])
        np.testing.assert_allclose(X[t], X1, atol=1e-9)
        np.testing.assert_allclose(R[t], R1, atol=1e-12)
    # root rotation is the global_rot Euler convention R = Rz Ry Rx
    np.testing.assert_allclose(R[:, 1], euler_to_matrix(mp[:, 3:6]), atol=1e-6)  # prerot is float32
    np.testing.assert_allclose(matrix_to_euler(euler_to_matrix(mp[:, 3:6])), mp[:, 3:6], atol=1e-9)
