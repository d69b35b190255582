"""Evaluation metrics on constructed cases with known answers (train.metrics, train.baselines, train.fgd_encoder)."""
from __future__ import annotations

import numpy as np
import pytest

from models import layout
from models.rotations import euler_to_matrix
from train import metrics as M


def smooth_signal(T: int, C: int, seed: int = 0) -> np.ndarray:
    """Low-pass random signal (T, C): cumulative sums of noise smoothed over 9 frames."""
    rng = np.random.default_rng(seed)
    x = np.cumsum(rng.normal(0, 0.05, (T + 16, C)), axis=0)
    k = np.ones(9) / 9
    return np.stack([np.convolve(x[:, c], k, mode="valid")[:T] for c in range(C)], 1)


def beat_track(T: int = 300, period: int = 16, t0: int = 5) -> np.ndarray:
    """(T, 1, 3) joint moving along x with speed 1 - 0.589 cos(2 pi (t - t0) / period): minima exactly at
    t0 + k * period, normalised speed there 0.41 (> 0.3, so they are EMAGE beats)."""
    t = np.arange(T, dtype=np.float64)
    x = t - 1.5 * np.sin(2 * np.pi * (t - t0) / period)
    X = np.zeros((T, 1, 3))
    X[:, 0, 0] = x
    return X


# ---- ratios -----------------------------------------------------------------------------------------------------

def test_gt_vs_gt_ratios_are_one():
    gt = smooth_signal(400, 6)
    assert M.velocity_ratio(gt, gt) == 1.0
    assert M.hf_ratio(gt, gt) == 1.0
    X = np.stack([gt[:, :3], gt[:, 3:]], 1)  # (T, 2, 3)
    assert M.joint_speed_ratio(X, X) == 1.0
    R = euler_to_matrix(gt[:, :3] * 0.1)
    assert M.rotation_std_ratio(R, R) == 1.0
    assert M.mean_geodesic_error(R, R) < 1e-6
    lag, nmse, curve = M.lagged_nmse(gt, gt)
    assert lag == 0 and nmse == 0.0 and curve.shape == (31,)


def test_jittered_copy_is_faster_and_has_more_hf_energy():
    gt = smooth_signal(600, 8)
    jit = gt + np.random.default_rng(1).normal(0, 0.01, gt.shape)
    assert M.velocity_ratio(jit, gt) > 1.2
    assert M.hf_ratio(jit, gt) > 2.0
    assert M.velocity_ratio(gt, jit) < 1.0


def test_pooling_over_sequences_weights_by_frames():
    a, b = smooth_signal(300, 4, 2), smooth_signal(100, 4, 3)
    pooled = M.mean_abs_velocity([a, b])
    manual = (np.abs(np.diff(a, axis=0)).sum() + np.abs(np.diff(b, axis=0)).sum()) / (299 * 4 + 99 * 4)
    assert pooled == pytest.approx(manual, rel=1e-12)
    assert M.velocity_ratio([a, b], [a * 2, b * 2]) == pytest.approx(0.5, rel=1e-12)


@pytest.mark.parametrize("shift", [5, -7, 15])
def test_time_shifted_copy_lag_is_found_exactly(shift):
    gt = smooth_signal(500, 5, 4)
    gen = np.roll(gt, shift, axis=0)  # gen[t] = gt[t - shift]: late by `shift`
    lag, nmse, curve = M.lagged_nmse(gen, gt, max_lag=15)
    assert lag == shift
    assert nmse < 0.05 < curve[15]  # aligned error small, lag-0 error larger


def test_rotation_std_of_known_spread():
    a = 0.2
    ang = np.where(np.arange(200) % 2 == 0, a, -a)
    R = euler_to_matrix(np.stack([np.zeros(200), ang, np.zeros(200)], 1))
    assert M.rotation_std(R) == pytest.approx(a, abs=1e-6)
    R2 = euler_to_matrix(np.stack([np.zeros(200), 2 * ang, np.zeros(200)], 1))
    assert M.rotation_std_ratio(R2, R) == pytest.approx(2.0, rel=1e-5)
    assert np.degrees(M.mean_geodesic_error(R2, R)) == pytest.approx(np.degrees(a), rel=1e-5)


# ---- pauses ------------------------------------------------------------------------------------------------------

def test_frozen_copy_fails_never_frozen_and_live_copy_passes():
    rng = np.random.default_rng(5)
    gt_speed = 0.5 + rng.random(300)
    pause = np.zeros(300, bool)
    pause[100:160] = True
    frozen = gt_speed.copy()
    frozen[pause] = 0.0
    bad = M.pause_motion(frozen, gt_speed, pause)
    assert bad["never_frozen"] is False and bad["ratio"] == 0.0 and bad["frames"] == 60
    good = M.pause_motion(gt_speed * 0.5, gt_speed, pause)
    assert good["never_frozen"] is True and good["ratio"] == pytest.approx(0.5)
    wild = M.pause_motion(gt_speed * 10, gt_speed, pause)  # faster than anything in the ground truth
    assert wild["never_frozen"] is False


# ---- seams -------------------------------------------------------------------------------------------------------

def rotation_stream(T: int, jump_every: int = 0, jump: float = 0.05) -> np.ndarray:
    """(T, 3, 3, 3) three joints turning at a constant 0.02 rad/frame; optional extra jump at chunk starts."""
    step = np.full(T, 0.02)
    if jump_every:
        step[np.arange(T) % jump_every == 0] += jump
    theta = np.cumsum(step)
    e = np.zeros((T, 3, 3))
    e[:, 0, 0], e[:, 1, 1], e[:, 2, 2] = theta, 0.5 * theta, theta
    return euler_to_matrix(e)


@pytest.mark.parametrize("N", [2, 4])
def test_seam_stats_pass_on_smooth_and_fail_on_boundary_jumps(N):
    smooth = M.angular_speed(rotation_stream(400))
    assert smooth[0] == 0.0 and np.allclose(smooth[1:], smooth[1], rtol=1e-6)
    st = M.seam_stats(smooth, N)
    assert st["pass"] and st["mean_ratio"] == pytest.approx(1.0, abs=1e-6)
    assert st["n_boundary"] == len(range(N, 400, N))
    jumpy = M.angular_speed(rotation_stream(400, jump_every=N))
    st = M.seam_stats(jumpy, N)
    assert not st["pass"] and st["mean_ratio"] > 2.0 and st["boundary_p99"] > st["interior_p99"]


def test_seam_stats_mean_ok_but_tail_fails():
    s = np.full(400, 0.1)
    s[np.arange(4, 400, 4)[:3]] = 0.3  # three big boundary jumps: mean within 1.1x, p99 above interior
    st = M.seam_stats(s, 4)
    assert st["boundary_mean"] <= 1.1 * st["interior_mean"] and st["boundary_p99"] > st["interior_p99"]
    assert not st["pass"]


# ---- correlations, rhythm ------------------------------------------------------------------------------------------

def test_jaw_envelope_and_energy_correlations():
    env = np.clip(smooth_signal(300, 1, 6)[:, 0], 0, None)
    m = np.zeros((300, layout.DIM))
    m[:, layout.JAW_OPEN] = 0.3 * env + 0.01
    assert M.jaw_envelope_corr(m, env) == pytest.approx(1.0, abs=1e-9)
    assert M.jaw_envelope_corr(np.zeros((300, layout.DIM)), env) == 0.0  # a constant jaw: no correlation
    assert M.energy_correlation(env * 3, env) == pytest.approx(1.0, abs=1e-9)
    assert M.energy_correlation(-env, env) == pytest.approx(-1.0, abs=1e-9)


def test_beat_consistency_known_values():
    X = beat_track()
    beats = M.motion_beats(X)[0]
    assert list(beats) == list(range(5, 300, 16))  # every speed minimum, ends included
    on = M.frames_to_times(np.arange(5 + 16 * 4, 240, 16))  # onsets exactly on beats (inside the trim)
    bc, n = M.beat_consistency(on, X, sigma=0.1)
    assert bc == pytest.approx(1.0) and n == len(on)
    bc_late, _ = M.beat_consistency(on + 0.1, X, sigma=0.1)  # 0.1 s late: exp(-1/2)
    assert bc_late == pytest.approx(np.exp(-0.5), rel=1e-6)
    bc_wide, _ = M.beat_consistency(on + 0.1, X, sigma=0.3)
    assert bc_wide == pytest.approx(np.exp(-0.1 ** 2 / (2 * 0.3 ** 2)), rel=1e-6)
    # gt vs gt: the self value, deterministic and identical for a copy
    assert M.beat_consistency(on, X.copy(), 0.3) == M.beat_consistency(on, X, 0.3)
    assert M.pooled_beat_consistency([on, on], [X, X], 0.1) == pytest.approx(1.0)
    still = np.concatenate([X, np.zeros_like(X)], axis=1)  # a second joint that never moves: no beats, scores 0
    assert M.beat_consistency(on, still, 0.1)[0] == pytest.approx(0.5)


def test_standstill_minima_are_not_beats():
    X = np.zeros((200, 1, 3))
    X[:, 0, 0] = np.where(np.arange(200) % 20 < 10, np.arange(200) % 20, 0.0)  # move, then stand still
    beats = M.motion_beats(X)[0]
    v = np.zeros(200)
    v[1:-1] = np.abs(X[2:, 0, 0] - X[:-2, 0, 0]) / 2
    assert all(v[b] / v.mean() > 0.3 for b in beats)
    # a stroke that comes (almost) to rest at t0 + 16k: EMAGE's threshold drops those minima, threshold 0 keeps them
    t = np.arange(300, dtype=np.float64)
    Y = np.zeros((300, 1, 3))
    Y[:, 0, 0] = t - 16 / (2 * np.pi) * np.sin(2 * np.pi * (t - 5) / 16)
    assert len(M.motion_beats(Y)[0]) == 0
    assert list(M.motion_beats(Y, threshold=0.0)[0]) == list(range(5, 300, 16))


def test_detect_onsets_finds_clicks():
    sr = 24_000
    x = np.random.default_rng(7).normal(0, 1e-4, sr * 4)
    times = [0.5, 1.3, 2.0, 3.1]
    for t in times:
        i = int(t * sr)
        x[i:i + 2400] += np.sin(2 * np.pi * 300 * np.arange(2400) / sr) * np.exp(-np.arange(2400) / 600)
    on = M.detect_onsets(x, sr)
    assert len(on) == len(times)
    assert np.abs(on - np.array(times)).max() < 0.03


# ---- diversity, FGD, hygiene ---------------------------------------------------------------------------------------

def test_l1_diversity_known_value():
    X = np.zeros((100, 2, 3))
    X[:, 0, 0] = np.where(np.arange(100) % 2 == 0, 1.0, -1.0)
    assert M.l1_diversity(X) == pytest.approx(1.0)
    assert M.l1_diversity(X + 5.0) == pytest.approx(1.0)  # translation does not change diversity


def test_frechet_distance():
    f = np.random.default_rng(8).normal(0, 1, (200, 8))
    assert M.frechet_distance(f, f) == pytest.approx(0.0, abs=1e-4)
    assert M.frechet_distance(f, f + 2.0) == pytest.approx(8 * 4.0, rel=1e-3)
    assert M.frechet_distance(f, f * 2) > 1.0
    with pytest.raises(ValueError, match="feature sets"):
        M.frechet_distance(f[:1], f)


def test_constant_variation_is_exactly_zero_for_layout_output():
    motion = smooth_signal(50, layout.DIM, 9).astype(np.float32)
    const = layout.SessionConstants(bone_lengths=np.arange(6) * 0.1, pred_cam_t=[0.1, 0.8, 4.0])
    cv = M.constant_variation(layout.to_sam3d(motion, const))
    assert set(cv) >= {"pred_cam_t", "focal_length", "scale_params", "shape_params", "bone_lengths",
                       "skeleton_scales"}
    assert all(v == 0.0 for v in cv.values())
    d = layout.to_sam3d(motion, const)
    d["pred_cam_t"][10, 2] += 0.25  # a breathing camera is caught
    assert M.constant_variation(d)["pred_cam_t"] == pytest.approx(0.25)


def test_joint_sets_and_fk_shapes():
    js = M.joint_sets()
    assert len(js.upper_body) == 14 and js.root == 1 and len(js.seam_joints) == 15
    assert len(js.fingers_left) == len(js.fingers_right) == 22
    motion = np.zeros((5, layout.DIM), np.float32)
    R, X = M.forward_kinematics(motion)
    assert R.shape == (5, 127, 3, 3) and X.shape == (5, 127, 3)
    F = M.fingers_in_wrist_frame(R, X)
    assert F.shape == (5, 44, 3)
    # rotating the whole body leaves the fingers in the wrist frame unchanged
    motion[:, layout.GLOBAL_ROT] = [0.3, -0.4, 0.2]
    R2, X2 = M.forward_kinematics(motion)
    assert np.allclose(M.fingers_in_wrist_frame(R2, X2), F, atol=1e-9)


# ---- baseline and FGD encoder ------------------------------------------------------------------------------------

def test_linear_baseline_recovers_a_linear_law():
    from train.baselines import POOLED, TARGET_CHANNELS, FrameLinearBaseline

    rng = np.random.default_rng(10)
    feats = [rng.normal(0, 1, (400, 160)) for _ in range(2)]
    W = rng.normal(0, 0.05, (160, len(TARGET_CHANNELS)))
    motions = []
    for f in feats:
        m = np.zeros((400, layout.DIM), np.float32)
        m[:, TARGET_CHANNELS] = f @ W + 0.1
        m[:, layout.CONTACT] = 1.0
        motions.append(m)
    model = FrameLinearBaseline.fit(feats, motions, speakers=[0, 1], alpha=1e-9)
    assert set(model.weights) == {POOLED, 0, 1} and model.frames[POOLED] == 800
    pred = model.predict(feats[0], speaker=0)
    assert pred.shape == (400, layout.DIM)
    assert np.abs(pred[:, TARGET_CHANNELS] - motions[0][:, TARGET_CHANNELS]).max() < 1e-3
    assert np.abs(pred[:, layout.GLOBAL_ROT]).max() < 1e-6 and (pred[:, layout.CONTACT] == 1).all()
    assert np.allclose(model.predict(feats[1], speaker=7), model.predict(feats[1]))  # unknown speaker: pooled


def test_fgd_encoder_train_save_load(tmp_path):
    from train.fgd_encoder import FGD_INPUT_DIM, FGDConfig, FGDEncoder, fgd_input, train_encoder

    seqs = [smooth_signal(80, layout.DIM, s).astype(np.float32) for s in range(2)]
    assert fgd_input(seqs[0]).shape == (80, FGD_INPUT_DIM)
    enc = train_encoder(seqs, steps=3, cfg=FGDConfig(window=16, latent=8, hidden=16), batch_size=4,
                        progress=False)
    f = enc.features(seqs[0], stride=4)
    assert f.shape == (len(range(0, 80 - 16 + 1, 4)), 8)
    path = enc.save(tmp_path / "fgd.safetensors")
    back = FGDEncoder.load(path)
    assert np.allclose(back.features(seqs[0], stride=4), f, atol=1e-6)
    assert M.frechet_distance(f, back.features(seqs[0], stride=4)) == pytest.approx(0.0, abs=1e-4)
    with pytest.raises(ValueError, match="multiple of 8"):
        FGDConfig(window=12)
