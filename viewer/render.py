"""Offline, headless rendering of a motion file to mp4 (with audio), PNG frames or a GIF.

    python -m viewer.render OUT.npz --audio speech.wav -o OUT.mp4
    python -m viewer.render OUT.npz --png frames/ --at 0,30,60
    python -m viewer.render --demo --gif docs/avatar.gif --frames 60 --size 480x360 --camera front

Input: train.infer output (models.layout.to_sam3d), a stacked SAM 3D Body sequence, or a single SAM 3D Body frame.
Rendering uses an EGL context (no display), the proxy avatar by default or the real MHR mesh with --mhr-model.
"""
from __future__ import annotations

import argparse
import math
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from viewer.camera import Camera, OrbitCamera, framing, source_camera
from viewer.frames import SequenceDrawables
from viewer.sequence import Sequence, from_motion, load_sequence

CAMERAS = ("source", "front", "orbit")
ORBIT_PERIOD_S = 12.0


@dataclass
class RenderJob:
    """What to render: a sequence, how, and which frames."""

    seq: Sequence
    size: tuple[int, int]
    camera: str = "front"  # source | front | orbit
    fps: float = 30.0
    start: int = 0
    n_frames: int | None = None
    mhr_model: str | None = None
    mouth_open: float | None = None
    samples: int = 4
    show_floor: bool = True


def facing_yaw(seq: Sequence) -> float:
    """Mean heading (rad about +Y) the subject faces over the sequence; 0 = facing +Z (towards the source camera)."""
    from models.rotations import euler_to_matrix

    g = seq.model_params[:, 3:6].astype(np.float64)
    fwd = euler_to_matrix(g)[:, :, 2]  # root +Z axis per frame
    v = fwd[:, [0, 2]].mean(0)
    return float(math.atan2(v[0], v[1])) if np.linalg.norm(v) > 1e-6 else 0.0


def default_size(seq: Sequence, camera: str, height: int = 720) -> tuple[int, int]:
    if camera == "source":
        c = seq.constants
        w = int(round(height * c.image_width / c.image_height / 2)) * 2
        return max(w, 2), height
    return 1280, height


def camera_for(job: RenderJob, draw: SequenceDrawables, k: int) -> Camera:
    """The camera of output frame ``k``."""
    aspect = job.size[0] / job.size[1]
    if job.camera == "source":
        return source_camera(job.seq.constants, aspect)
    fov = 32.0
    target, dist = framing(draw.points, fov, aspect)
    yaw = facing_yaw(job.seq) + 0.35
    if job.camera == "orbit":
        yaw += 2 * math.pi * (k / job.fps) / ORBIT_PERIOD_S
    return OrbitCamera(target, dist, yaw=yaw, pitch=0.12, fov_y_deg=fov).camera(aspect)


def iter_frames(job: RenderJob, progress: bool = True) -> Iterator[np.ndarray]:
    """Yield (H, W, 3) uint8 frames of the job, resampled in time to ``job.fps``."""
    from viewer.mhr_mesh import MHRMesh
    from viewer.offscreen import OffscreenRenderer

    mhr = MHRMesh.load(job.mhr_model) if job.mhr_model else None
    if mhr is not None:
        for n in mhr.notes:
            print(f"note: {n}", file=sys.stderr)
    draw = SequenceDrawables(job.seq, mhr, job.mouth_open)
    n_src = len(job.seq) - job.start
    n_out = int(math.floor(n_src * job.fps / job.seq.fps + 1e-6))
    if job.n_frames is not None:
        n_out = min(n_out, job.n_frames)
    renderer = OffscreenRenderer(job.size, samples=job.samples)
    it = range(n_out)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="render", unit="frame", file=sys.stderr)
    try:
        for k in it:
            i = min(job.start + int(round(k * job.seq.fps / job.fps)), len(job.seq) - 1)
            prims, mesh = draw.frame(i)
            yield renderer.render(camera_for(job, draw, k), prims, mesh, draw.floor_y, draw.center, job.show_floor)
    finally:
        renderer.release()


def count_output_frames(job: RenderJob) -> int:
    n = int(math.floor((len(job.seq) - job.start) * job.fps / job.seq.fps + 1e-6))
    return n if job.n_frames is None else min(n, job.n_frames)


def write_mp4(job: RenderJob, path: str | Path, audio: str | Path | None = None, progress: bool = True) -> int:
    """Render to an h264 mp4 (+ AAC audio from ``audio``, trimmed to the video); returns the frame count."""
    import imageio_ffmpeg

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = count_output_frames(job)
    out_params = ["-t", f"{n / job.fps:.6f}", "-movflags", "+faststart"]
    kw = {}
    if audio is not None:
        if not Path(audio).is_file():
            raise FileNotFoundError(f"{audio}: audio file not found (--audio expects a .wav/.flac to mux in)")
        kw = {"audio_path": str(audio), "audio_codec": "aac"}
    w = imageio_ffmpeg.write_frames(str(path), job.size, fps=job.fps, codec="libx264", macro_block_size=2,
                                    quality=7, output_params=out_params, ffmpeg_log_level="error", **kw)
    w.send(None)
    count = 0
    try:
        for img in iter_frames(job, progress):
            w.send(np.ascontiguousarray(img))
            count += 1
    finally:
        w.close()
    return count


def write_gif(job: RenderJob, path: str | Path, gif_fps: float = 15.0, progress: bool = True) -> int:
    """Render to an optimised-palette GIF (ffmpeg palettegen/paletteuse); returns the frame count rendered."""
    import imageio_ffmpeg

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = job.size
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24",
           "-s", f"{w}x{h}", "-r", f"{job.fps}", "-i", "-", "-vf",
           f"fps={gif_fps},split[a][b];[a]palettegen=max_colors=128:stats_mode=diff[p];[b][p]paletteuse=dither=bayer"
           ":bayer_scale=4", "-loop", "0", str(path)]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE)
    count = 0
    try:
        for img in iter_frames(job, progress):
            proc.stdin.write(np.ascontiguousarray(img).tobytes())
            count += 1
    finally:
        proc.stdin.close()
        rc = proc.wait()
    if rc != 0:
        raise RuntimeError(f"{path}: ffmpeg failed to write the GIF (exit {rc})")
    return count


def write_pngs(job: RenderJob, target: str | Path, at: list[int] | None = None, progress: bool = True) -> list[Path]:
    """Write frames as PNG: every frame into a folder, or the ``at`` frame indices; ``target`` ending in .png with
    one index writes that single file."""
    from viewer.offscreen import write_png

    target = Path(target)
    single = target.suffix.lower() == ".png"
    if single and at and len(at) > 1:
        raise ValueError(f"{target}: one .png file but {len(at)} frames requested with --at; pass a folder instead")
    n = count_output_frames(job)
    wanted = set(range(n)) if not at else {a for a in at if 0 <= a < n}
    if at and len(wanted) != len(set(at)):
        raise ValueError(f"--at {at}: indices must be in [0, {n}) for this sequence ({n} frames at {job.fps} fps)")
    if single and not at:
        wanted = {0}
    out: list[Path] = []
    last = max(wanted) + 1 if wanted else 0
    sub = RenderJob(**{**job.__dict__, "n_frames": last})
    for k, img in enumerate(iter_frames(sub, progress and len(wanted) > 1)):
        if k in wanted:
            p = target if single else target / f"frame_{k:05d}.png"
            write_png(p, img)
            out.append(p)
    return out


def _parse_size(s: str) -> tuple[int, int]:
    try:
        w, h = (int(x) for x in s.lower().split("x"))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"--size {s!r}: expected WIDTHxHEIGHT, e.g. 1280x720") from e
    if w < 16 or h < 16 or w % 2 or h % 2:
        raise argparse.ArgumentTypeError(f"--size {s!r}: width and height must be even and >= 16 (h264 needs even)")
    return w, h


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m viewer.render", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", nargs="?", help="motion .npz (train.infer output or SAM 3D Body); omit with --demo")
    p.add_argument("-o", "--output", help="output .mp4 (default: INPUT with .mp4 when no --png/--gif is given)")
    p.add_argument("--audio", help="audio file muxed into the mp4 (AAC); also drives the jaw of --demo")
    p.add_argument("--png", help="write PNG frames: a folder (all frames, or those in --at) or one FILE.png")
    p.add_argument("--at", help="comma-separated output frame indices for --png, e.g. 0,30,60")
    p.add_argument("--gif", help="write an animated GIF (e.g. docs/avatar.gif)")
    p.add_argument("--gif-fps", type=float, default=15.0, help="GIF frame rate (default 15)")
    p.add_argument("--frames", type=int, help="render at most this many frames")
    p.add_argument("--start", type=int, default=0, help="first source frame (default 0)")
    p.add_argument("--size", type=_parse_size, help="WIDTHxHEIGHT (default: 1280x720; source camera: image aspect)")
    p.add_argument("--camera", choices=CAMERAS, default="front",
                   help="source: the original video's camera; front: facing the subject; orbit: turntable")
    p.add_argument("--fps", type=float, default=30.0, help="output frame rate (default 30)")
    p.add_argument("--mhr-model", help="path to MHR's TorchScript mhr_model.pt: render the real mesh")
    p.add_argument("--mouth-open", type=float, help="jaw opening (rad) on frames whose jaw channel is 0")
    p.add_argument("--samples", type=int, default=4, help="MSAA samples (0 = off; default 4)")
    p.add_argument("--no-floor", action="store_true", help="no floor grid and shadows")
    p.add_argument("--demo", action="store_true", help="render a synthetic gesture clip instead of an input file")
    p.add_argument("--demo-seconds", type=float, default=5.0, help="length of the --demo clip (default 5 s)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return p


def load_input(args: argparse.Namespace) -> Sequence:
    if args.demo:
        from viewer.demo import demo_motion, loudness_envelope

        n = int(round(args.demo_seconds * 30))
        env = None
        if args.audio:
            from models.audio import load_audio

            pcm, _ = load_audio(args.audio, 16000)
            n = int(len(pcm) / 16000 * 30)
            env = loudness_envelope(pcm, 16000, n)
        m, c = demo_motion(n, envelope=env)
        seq = from_motion(m, c)
        seq.notes.append("synthetic demo clip (viewer.demo)")
        return seq
    if not args.input:
        raise SystemExit("error: give an input .npz (or --demo); see --help")
    return load_sequence(args.input)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        seq = load_input(args)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for n in seq.notes:
        print(f"note: {n}", file=sys.stderr)
    size = args.size or default_size(seq, args.camera)
    at = [int(x) for x in args.at.split(",")] if args.at else None
    job = RenderJob(seq, size, args.camera, args.fps, args.start, args.frames, args.mhr_model, args.mouth_open,
                    args.samples, not args.no_floor)
    if args.start < 0 or args.start >= len(seq):
        print(f"error: --start {args.start} outside the sequence (0..{len(seq) - 1})", file=sys.stderr)
        return 2
    output = args.output
    if output is None and not args.png and not args.gif:
        if not args.input:
            print("error: --demo needs -o, --png or --gif", file=sys.stderr)
            return 2
        output = str(Path(args.input).with_suffix(".mp4"))
    progress = not args.quiet
    from viewer.mhr_mesh import MHRModelError
    from viewer.offscreen import HeadlessUnavailable

    try:
        if output:
            n = write_mp4(job, output, args.audio, progress)
            print(f"wrote {output}: {n} frames {size[0]}x{size[1]} @ {job.fps:g} fps"
                  + (f" + audio {args.audio}" if args.audio else ""), file=sys.stderr)
        if args.gif:
            n = write_gif(job, args.gif, args.gif_fps, progress)
            print(f"wrote {args.gif}: {n} frames rendered, {args.gif_fps:g} fps GIF", file=sys.stderr)
        if args.png:
            paths = write_pngs(job, args.png, at, progress)
            print(f"wrote {len(paths)} PNG(s) to {args.png}", file=sys.stderr)
    except (MHRModelError, HeadlessUnavailable, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
