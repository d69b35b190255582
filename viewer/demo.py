"""A synthetic talking-and-gesturing clip for trying the viewer without a trained model (and for the README picture
until the lead re-renders it from train.infer output). Jaw follows the loudness of an audio file when one is given."""
from __future__ import annotations

import numpy as np

from models.layout import BODY, DIM, GLOBAL_ROT, JAW, SessionConstants

# body_pose_params slots (= model param index - 6), see mhr_spec.md §1.2
R_UPARM_RY, R_UPARM_RZ, R_ELBOW, R_LOWARM_TWIST = 28, 29, 30, 31
L_UPARM_RY, L_UPARM_RZ, L_ELBOW, L_LOWARM_TWIST = 38, 39, 40, 41
NECK_BEND, HEAD_TWIST, HEAD_BEND = 20, 21, 23
SPINE_BEND0 = 5
RELAXED = {R_UPARM_RY: -0.55, L_UPARM_RY: -0.55, R_UPARM_RZ: 0.12, L_UPARM_RZ: 0.12, R_ELBOW: 0.35, L_ELBOW: 0.35}


def relaxed_frame() -> np.ndarray:
    """(320,) a person standing relaxed, arms down, hands at the mean (slightly curled) pose."""
    f = np.zeros(DIM, np.float32)
    for k, v in RELAXED.items():
        f[BODY.start + k] = v
    return f


def loudness_envelope(pcm: np.ndarray, sample_rate: int, n_frames: int, fps: float = 30.0) -> np.ndarray:
    """(n_frames,) RMS loudness per video frame, normalised to [0, 1] (95th percentile = 1)."""
    hop = sample_rate / fps
    env = np.zeros(n_frames)
    for i in range(n_frames):
        seg = pcm[int(i * hop):int((i + 1) * hop)]
        env[i] = np.sqrt(np.mean(seg.astype(np.float64) ** 2)) if len(seg) else 0.0
    ref = np.percentile(env, 95) if np.any(env) else 1.0
    return np.clip(env / max(ref, 1e-6), 0.0, 1.0)


def demo_motion(n_frames: int = 150, fps: float = 30.0, envelope: np.ndarray | None = None, seed: int = 0
                ) -> tuple[np.ndarray, SessionConstants]:
    """A (T, 320) clip: beat gestures with both arms, head nods and a jaw that opens with ``envelope`` (T,)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_frames) / fps
    m = np.tile(relaxed_frame(), (n_frames, 1))
    env = np.zeros(n_frames) if envelope is None else np.asarray(envelope, np.float64)[:n_frames]
    if len(env) < n_frames:
        env = np.pad(env, (0, n_frames - len(env)))
    smooth = np.convolve(np.pad(env, 4, mode="edge"), np.ones(9) / 9, mode="valid")  # (T,)
    ph = rng.uniform(0, 2 * np.pi, 8)

    def b(slot: int, values: np.ndarray) -> None:
        m[:, BODY.start + slot] += values.astype(np.float32)

    # right arm: rises into a raised-forearm gesture and beats; left arm answers more quietly
    b(R_ELBOW, 0.9 * (0.5 - 0.5 * np.cos(2 * np.pi * t / 4.0)) + 0.25 * smooth * np.sin(2 * np.pi * 2.1 * t + ph[0]))
    b(R_UPARM_RZ, 0.35 * (0.5 - 0.5 * np.cos(2 * np.pi * t / 4.0)))
    b(R_UPARM_RY, 0.18 * np.sin(2 * np.pi * t / 3.1 + ph[1]))
    b(R_LOWARM_TWIST, 0.5 * np.sin(2 * np.pi * t / 2.7 + ph[2]))
    b(L_ELBOW, 0.5 * (0.5 - 0.5 * np.cos(2 * np.pi * t / 5.3 + 2.0)) + 0.12 * smooth * np.sin(2 * np.pi * 1.7 * t))
    b(L_UPARM_RZ, 0.2 * (0.5 - 0.5 * np.cos(2 * np.pi * t / 5.3 + 2.0)))
    b(L_LOWARM_TWIST, 0.4 * np.sin(2 * np.pi * t / 3.3 + ph[3]))
    # head and upper body
    b(HEAD_BEND, 0.10 * np.sin(2 * np.pi * t / 1.9 + ph[4]) * (0.4 + smooth))
    b(HEAD_TWIST, 0.15 * np.sin(2 * np.pi * t / 4.7 + ph[5]))
    b(NECK_BEND, 0.05 * np.sin(2 * np.pi * t / 3.7 + ph[6]))
    b(SPINE_BEND0, 0.04 * np.sin(2 * np.pi * t / 5.1 + ph[7]))
    m[:, GLOBAL_ROT.start + 1] = 0.12 * np.sin(2 * np.pi * t / 9.0)
    # fingers: gentle opening/closing of the right hand while it gestures (hand codes around the mean pose)
    m[:, 184:238] += (0.15 * np.sin(2 * np.pi * t / 2.3)[:, None] * rng.standard_normal(54)[None]).astype(np.float32)
    # jaw: opens with loudness (or a syllable rhythm without audio)
    jaw = 0.32 * env if envelope is not None else 0.15 * np.clip(np.sin(2 * np.pi * 4.0 * t), 0, None)
    m[:, JAW.start] = jaw.astype(np.float32)
    return m, SessionConstants(fps=fps)
