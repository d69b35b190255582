"""Live avatar driver: audio in (microphone, file, demo or network) -> MHR frames streamed over WebSockets.

    python -m realtime.mic --demo --stats --duration 20      # no microphone needed
    python -m realtime.mic                                   # the microphone if there is one, else the demo
    python -m realtime.mic --wav talk.wav --fast --out talk_motion.npz --no-server
    python -m realtime.mic --push-only --host 0.0.0.0 --token SECRET   # network clients push audio

Open http://127.0.0.1:8765/ for the browser skeleton view; clients connect to ws://127.0.0.1:8765/ (PROTOCOL.md).
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from realtime import sources
from realtime.sources import AudioSource, NoInputDeviceError

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m realtime.mic", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("input (default: the microphone if one exists, else the built-in demo audio)")
    g.add_argument("--demo", action="store_true", help="built-in demo audio (needs no microphone)")
    g.add_argument("--mic", action="store_true", help="the microphone (fails with a clear message if there is none)")
    g.add_argument("--device", default=None, help="microphone device index or name (implies --mic)")
    g.add_argument("--list-devices", action="store_true", help="list audio devices and exit")
    g.add_argument("--rate", type=int, default=None, help="microphone capture rate (default: the device's rate)")
    g.add_argument("--wav", type=Path, default=None, metavar="FILE", help="play an audio file in real time")
    g.add_argument("--fast", action="store_true", help="with --wav/--demo: as fast as possible, not real time")
    g.add_argument("--loop", action="store_true", help="with --wav/--demo: start over at the end")
    g.add_argument("--push-only", action="store_true", help="no local input: serve network clients that push audio")
    g.add_argument("--chunk-ms", type=float, default=20.0, help="input chunk length (ms)")
    g = p.add_argument_group("model")
    g.add_argument("--checkpoint", default=None, help="model checkpoint (default: the one realtime.engine picks)")
    g.add_argument("--chunk-frames", type=int, default=None,
                   help="N: new frames per model step, latency vs cost (default: the engine's)")
    g.add_argument("--face", default="auto", choices=["auto", "model", "envelope", "off"], help="face source")
    g.add_argument("--smooth", type=float, default=None, help="One-Euro output smoothing min cutoff (Hz), all "
                   "parts; 0 = off; default: what the checkpoint recommends")
    g.add_argument("--backend", default="auto", help="engine backend (see realtime.engine.load_driver)")
    g.add_argument("--speaker", type=int, default=None, help="speaker id (default or -1: the model's unknown speaker)")
    g.add_argument("--reference", type=Path, default=None, metavar="SEQ.npz",
                   help="take the session constants (camera, shape, bone lengths) from a motion sequence file")
    g = p.add_argument_group("server")
    g.add_argument("--host", default="127.0.0.1", help="bind address (non-loopback needs --token)")
    g.add_argument("--port", type=int, default=8765, help="TCP port for WebSocket + the browser page (0: any)")
    g.add_argument("--token", default=None, help="shared secret clients must send")
    g.add_argument("--no-server", action="store_true", help="run the model without listening (with --out/--stats)")
    g.add_argument("--serve-forever", action="store_true", help="keep serving after the input ends (Ctrl-C stops)")
    g = p.add_argument_group("output")
    g.add_argument("--stats", action="store_true", help="print latency p50/p95, RTF, drops periodically and at the end")
    g.add_argument("--stats-interval", type=float, default=2.0, help="seconds between --stats lines")
    g.add_argument("--duration", type=float, default=None, help="stop after S seconds of input audio (wall time "
                                                                 "with --push-only)")
    g.add_argument("--out", type=Path, default=None, metavar="OUT.npz", help="save the main session's motion")
    return p


def _fail(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr, flush=True)
    return EXIT_USAGE


def make_source(args: argparse.Namespace, demo_audio: Any = None, sd: Any = None) -> AudioSource | None:
    """The main session's input from the arguments (None with --push-only). Raises NoInputDeviceError/OSError."""
    realtime = not args.fast
    if args.push_only:
        return None
    if args.wav is not None:
        return sources.WavSource(args.wav, realtime=realtime, chunk_ms=args.chunk_ms, loop=args.loop)
    want_mic = args.mic or args.device is not None
    if not want_mic and not args.demo:  # auto: the microphone when there is one
        try:
            sources.find_input_device(None, sd)
            want_mic = True
        except NoInputDeviceError:
            print("no microphone found: playing the built-in demo audio (--wav FILE plays a file; --push-only "
                  "serves network clients; --list-devices shows devices)", flush=True)
    if want_mic:
        device = int(args.device) if args.device is not None and args.device.isdigit() else args.device
        return sources.MicSource(device, args.rate, chunk_ms=args.chunk_ms, sd=sd)
    got = (demo_audio or sources.default_demo_audio)()
    pcm, rate = got if isinstance(got, tuple) else (got, 24_000)
    return sources.ArraySource(pcm, rate, realtime=realtime, chunk_ms=args.chunk_ms, loop=args.loop, name="demo")


def reference_constants(path: Path) -> Any:
    """Session constants from a sequence file: a SAM 3D Body-style dict npz, or one holding ``constants`` JSON."""
    from models import layout

    if not path.is_file():
        raise FileNotFoundError(f"{path}: reference sequence not found (--reference expects an .npz)")
    with np.load(path, allow_pickle=False) as z:
        d = {k: z[k] for k in z.files}
    if "constants" in d:
        return layout.SessionConstants.from_dict(json.loads(str(d["constants"])))
    missing = [k for k in ("global_rot", "body_pose_params") if k not in d]
    if missing:
        raise KeyError(f"{path}: no key {missing[0]!r}; --reference needs a SAM 3D Body-style sequence (global_rot, "
                       f"body_pose_params, ...) or a 'constants' JSON entry; keys found: {sorted(d)}")
    return layout.from_sam3d(d)[1]


def load_driver(args: argparse.Namespace) -> Any:
    from realtime.engine import load_driver as _load  # lazy: tests inject a driver instead

    kw = {} if args.chunk_frames is None else {"chunk_frames": args.chunk_frames}
    if args.smooth is not None:
        kw["smooth"] = args.smooth
    return _load(args.checkpoint, face_mode=args.face, backend=args.backend, **kw)


class Recorder:
    """Collects the main session's frames for --out."""

    def __init__(self) -> None:
        self.frames: list[Any] = []

    def __call__(self, frames: list[Any]) -> None:
        self.frames.extend(frames)

    def save(self, path: Path, constants: Any) -> None:
        from models import layout

        motion = (np.stack([np.asarray(f.params, np.float32) for f in self.frames]) if self.frames
                  else np.zeros((0, layout.DIM), np.float32))
        out = layout.to_sam3d(motion, constants)
        out["frame_index"] = np.array([f.index for f in self.frames], np.int64)
        out["frame_time"] = np.array([f.time for f in self.frames], np.float64)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **out)


def main(argv: list[str] | None = None, *, driver: Any = None, demo_audio: Any = None, sd: Any = None) -> int:
    """CLI entry point. ``driver``, ``demo_audio`` and ``sd`` (the sounddevice module) are injectable for tests."""
    args = build_parser().parse_args(argv)
    if args.list_devices:
        try:
            print(sources.list_devices(sd))
        except NoInputDeviceError as e:
            return _fail(str(e))
        return 0
    if args.chunk_frames is not None and args.chunk_frames < 1:
        return _fail(f"--chunk-frames must be >= 1, got {args.chunk_frames}")
    from realtime.server import check_bind

    try:
        if not args.no_server:
            check_bind(args.host, args.token)
        source = make_source(args, demo_audio, sd)
        constants = reference_constants(args.reference) if args.reference else None
    except (NoInputDeviceError, OSError, ValueError, KeyError) as e:
        return _fail(str(e).strip("'\""))
    if source is None and args.no_server:
        return _fail("--push-only needs the server (drop --no-server)")
    if driver is None:
        try:
            driver = load_driver(args)
        except ImportError as e:
            return _fail(f"cannot load the realtime engine ({e})")
        except (FileNotFoundError, ValueError, KeyError) as e:
            return _fail(str(e))
    try:
        return asyncio.run(_run(args, driver, source, constants))
    except KeyboardInterrupt:
        return 130


async def _run(args: argparse.Namespace, driver: Any, source: AudioSource | None, constants: Any) -> int:
    from realtime.server import AvatarServer, ServerConfig
    from realtime.stats import format_budget, format_line

    server = AvatarServer(driver, ServerConfig(host=args.host, port=args.port, token=args.token))
    print(format_budget(server.budget) + f" | face {driver.face_mode}", flush=True)
    bundle = getattr(driver, "bundle", None)
    if bundle is not None:
        print(f"model: {bundle.root} | backends {getattr(driver, 'backends', {})} | output smoothing "
              f"{driver.budget().get('smooth_hz', 0) or 'off'}", flush=True)
        if "face" not in getattr(driver, "parts", ("face",)):
            why = bundle.skipped_parts.get("face", "not in this checkpoint")
            print(f"face: this checkpoint has no face part ({why}); the jaw is driven by the audio envelope "
                  f"(--face {driver.face_mode})", flush=True)
    await server.start(listen=not args.no_server)
    if not args.no_server:
        shown = f"{args.host}:{server.port}"
        print(f"serving ws://{shown}/ (browser view: http://{shown}/"
              f"{'?token=...' if args.token else ''})", flush=True)
    live, recorder, reporter = None, Recorder(), None
    t0 = time.monotonic()
    try:
        if source is not None:
            live = server.open_session("main", args.speaker, constants)
            live.listeners.append(recorder)
            print(f"input: {source.name}" + ("" if args.duration is None else f" for {args.duration:g} s"),
                  flush=True)

        def report() -> None:
            for name, s in list(server.sessions.items()) or ([("main", live)] if live else []):
                print(format_line(name, s.stats, server.worker.compute), flush=True)

        if args.stats:
            reporter = asyncio.create_task(_every(args.stats_interval, report))
        if source is not None:
            await server.pump(source, live, args.duration)
            await server.drain()
        if source is None or args.serve_forever:
            print("serving until Ctrl-C" if args.duration is None or source is not None
                  else f"serving for {args.duration:g} s", flush=True)
            await asyncio.sleep(args.duration if source is None and args.duration else 1e9)
    finally:
        if reporter is not None:
            reporter.cancel()
        await server.stop()
        if live is not None:
            print(format_line("main", live.stats, server.worker.compute) + f" | wall {time.monotonic() - t0:.1f} s"
                  + " (final)", flush=True)
        if args.out is not None and live is not None:
            recorder.save(args.out, live.engine.constants)
            print(f"wrote {args.out} ({len(recorder.frames)} frames)", flush=True)
    return 0


async def _every(seconds: float, fn: Any) -> None:
    with contextlib.suppress(asyncio.CancelledError):
        while True:
            await asyncio.sleep(seconds)
            fn()


if __name__ == "__main__":
    raise SystemExit(main())
