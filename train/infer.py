"""Whole-file generation through the same chunked streaming path the runtime uses.

    python -m train.infer AUDIO.wav -o OUT.npz [--checkpoint DIR] [--speaker N] [--reference SEQ.npz]

The output is self-contained (renders on its own): SAM 3D Body-style per-frame arrays (body_pose_params 133 incl.
jaw, hand_pose_params 108, expr_params 72, global_rot 3, mhr_model_params 204, foot_contact 4, the 320-dim
``motion``) plus the per-sequence constants (pred_cam_t, focal_length, scale_params, shape_params, image_size,
fps) taken from ``--reference`` (a SAM 3D Body sequence or single-frame npz) or the checkpoint's defaults.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from models import layout, rates
from models.audio import load_audio


def reference_constants(path: str | Path) -> layout.SessionConstants:
    """Per-sequence constants of a SAM 3D Body npz (stacked (T, ...) or one frame)."""
    p = Path(path)
    try:
        with np.load(p, allow_pickle=False) as z:
            d = {k: z[k] for k in z.files}
    except Exception as e:
        raise ValueError(f"{p}: cannot read reference npz ({e})") from e
    missing = [k for k in ("global_rot", "body_pose_params", "hand_pose_params", "pred_cam_t") if k not in d]
    if missing:
        raise ValueError(f"{p}: reference lacks keys {missing}; give a SAM 3D Body output (or train.infer output)")
    if np.ndim(d["global_rot"]) == 1:  # one frame: add the T axis
        d = {k: (v[None] if k in layout.SAM3D_SHAPES and v.ndim == len(layout.SAM3D_SHAPES[k]) else v)
             for k, v in d.items()}
    T = d["global_rot"].shape[0]
    d.setdefault("expr_params", np.zeros((T, 72), np.float32))
    d.setdefault("scale_params", np.zeros((T, 28), np.float32))
    d.setdefault("shape_params", np.zeros((T, 45), np.float32))
    _, const = layout.from_sam3d(d)
    return const


def generate(driver, wave: np.ndarray, speaker: int | None = None, constants=None, chunk_seconds: float = 0.5,
             progress: bool = True) -> tuple[np.ndarray, layout.SessionConstants]:
    """Model-rate audio -> (motion (T, 320), constants) via a streaming Session fed in chunks."""
    session = driver.new_session(speaker=speaker, constants=constants)
    step = max(1, int(chunk_seconds * rates.MODEL_SAMPLE_RATE))
    frames = []
    for i in tqdm(range(0, len(wave), step), desc="infer", unit="chunk", disable=not progress):
        frames += session.push(wave[i:i + step])
    frames += session.flush()
    idx = [f.index for f in frames]
    if idx != list(range(len(frames))):
        raise RuntimeError("internal error: non-contiguous frame indices from the engine")
    motion = np.stack([f.params for f in frames]) if frames else np.zeros((0, layout.DIM), np.float32)
    return motion, session.constants


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.infer", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("audio", help="audio file (WAV/FLAC, any rate, mono or stereo)")
    p.add_argument("-o", "--out", required=True, help="output .npz")
    p.add_argument("--checkpoint", help="bundle directory (default: the shipped demo)")
    p.add_argument("--speaker", type=int, default=-1, help="speaker id (-1 = unknown speaker)")
    p.add_argument("--reference", help="SAM 3D Body npz whose constants (camera, shape, scale) to use")
    p.add_argument("--chunk-seconds", type=float, default=0.5, help="audio pushed per engine call")
    p.add_argument("--chunk-frames", type=int, default=1)
    p.add_argument("--face", default="auto", choices=["auto", "model", "envelope", "off"])
    p.add_argument("--decode", default="codes", choices=["codes", "latents"])
    p.add_argument("--backend", default="auto", choices=["auto", "pytorch", "onnx"])
    p.add_argument("--smooth", type=float, default=None, help="One-Euro output smoothing min cutoff (Hz), all "
                   "parts; 0 = off; default: what the checkpoint recommends")
    a = p.parse_args(argv)
    from realtime.engine import load_driver

    driver = load_driver(a.checkpoint, chunk_frames=a.chunk_frames, face_mode=a.face, backend=a.backend,
                         decode=a.decode, smooth=a.smooth)
    wave, rep = load_audio(a.audio)
    if rep.nonfinite or rep.clipped:
        print(f"[infer] {a.audio}: {rep.nonfinite} NaN/Inf samples zeroed, {rep.clipped} clipped")
    const = reference_constants(a.reference) if a.reference else None
    motion, const = generate(driver, wave, a.speaker, const, a.chunk_seconds)
    out = layout.to_sam3d(motion, const)
    out.update(audio_path=np.array(str(a.audio)), speaker=np.array(a.speaker),
               checkpoint=np.array(str(driver.bundle.root)),
               frame_time=(np.arange(len(motion)) + 1.0) / rates.MOTION_FPS)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(a.out, **out)
    print(f"[infer] {len(motion)} frames ({len(motion) / rates.MOTION_FPS:.1f} s) -> {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
