import numpy as np
import pytest

from models import layout as L
from tests.conftest import shared_path


def _fixture(i):
    return dict(np.load(shared_path("fixtures", "sam3d_body", f"img_subj0{i}.npz")))


def test_slices_partition_320():
    covered = np.zeros(L.DIM, int)
    for s in (L.BODY, L.HAND, L.FACE, L.GLOBAL):
        covered[s] += 1
    assert covered.min() == 1 and covered.max() == 1
    assert (L.HAND_LEFT.stop - L.HAND_LEFT.start, L.HAND_RIGHT.stop - L.HAND_RIGHT.start) == (54, 54)
    assert (L.EXPR.stop - L.EXPR.start, L.JAW.stop - L.JAW.start) == (72, 3)
    assert L.PART_DIMS == {"body": 70, "hand": 108, "face": 75}
    body = set(L.VARYING["body"].tolist())
    assert not body & set(L.BODY_ZERO_SLOTS.tolist()) and not body & set(L.BODY_BONE_LENGTH_SLOTS.tolist())
    assert len(L.channel_names()) == 320 and L.channel_names()[L.BODY.start + 30] == "r_elbow_bend"


def test_roundtrip_exact_random():
    rng = np.random.default_rng(0)
    T = 50
    d = {
        "global_rot": rng.normal(size=(T, 3)).astype(np.float32),
        "body_pose_params": rng.normal(size=(T, 133)).astype(np.float32),
        "hand_pose_params": rng.normal(size=(T, 108)).astype(np.float32) * 0.1,
        "expr_params": rng.normal(size=(T, 72)).astype(np.float32),
        "scale_params": np.tile(rng.normal(size=28), (T, 1)).astype(np.float32),
        "shape_params": np.tile(rng.normal(size=45), (T, 1)).astype(np.float32),
        "pred_cam_t": np.tile([0.1, 0.9, 5.0], (T, 1)).astype(np.float32),
    }
    d["body_pose_params"][:, 62:116] = 0
    d["body_pose_params"][:, 124:130] = d["body_pose_params"][0, 124:130]  # per-person constants
    before = {k: v.copy() for k, v in d.items()}
    motion, const = L.from_sam3d(d)
    out = L.to_sam3d(motion, const)
    for k in ("global_rot", "body_pose_params", "hand_pose_params", "expr_params"):
        np.testing.assert_array_equal(out[k], d[k])
    motion2, const2 = L.from_sam3d(out)
    np.testing.assert_array_equal(motion2, motion)
    np.testing.assert_allclose(const2.pred_cam_t, const.pred_cam_t)
    for k, v in before.items():  # inputs never modified
        np.testing.assert_array_equal(d[k], v)
    assert out["mhr_model_params"].shape == (T, 204)


def test_constants_are_means_and_json_roundtrip():
    T = 10
    cam = np.stack([np.zeros(T), np.ones(T), np.linspace(3, 5, T)], 1)
    d = {"global_rot": np.zeros((T, 3)), "body_pose_params": np.zeros((T, 133)), "hand_pose_params": np.zeros((T, 108)),
         "expr_params": np.zeros((T, 72)), "scale_params": np.zeros((T, 28)), "shape_params": np.zeros((T, 45)),
         "pred_cam_t": cam, "focal_length": np.full(T, 1000.0), "image_size": np.array([640, 480])}
    valid = np.ones(T, bool)
    valid[-1] = False
    _, c = L.from_sam3d(d, valid=valid)
    assert c.pred_cam_t[2] == pytest.approx(cam[:-1, 2].mean(), rel=1e-6)
    assert (c.image_width, c.image_height, c.focal_length) == (640, 480, 1000.0)
    c2 = L.SessionConstants.from_dict(c.to_dict())
    np.testing.assert_array_equal(c2.pred_cam_t, c.pred_cam_t)
    with pytest.raises(ValueError, match="pred_cam_t"):
        L.SessionConstants(pred_cam_t=[0, 1])


@pytest.mark.parametrize("i", range(4))
def test_assembly_reproduces_real_model_params(i):
    d = _fixture(i)
    motion, const = L.from_sam3d({k: v[None] for k, v in d.items()})
    mp = L.assemble_model_params(motion, const)[0]
    np.testing.assert_allclose(mp, d["mhr_model_params"], atol=2e-7)  # incl. the decoded fingers 68..121


def test_write_varying_never_touches_input():
    m = np.zeros((4, L.DIM), np.float32)
    out = L.write_varying(m, "hand", np.ones((4, 108)))
    assert m.sum() == 0 and out[:, L.HAND].sum() == 4 * 108
