"""Benchmark of the streaming runtime: latency p50/p95, real-time factor, CPU, and concurrent real-time sessions.

    python bench/bench_realtime.py                         # the real model when realtime.engine loads, else fake
    python bench/bench_realtime.py --checkpoint CKPT --chunks 1,2,4 --seconds 10 --max-sessions 16
    python bench/bench_realtime.py --fake --fake-ms-per-frame 2     # the fake driver with an emulated model cost

Every measurement runs the real server in-process on 127.0.0.1 with network clients pushing 16 kHz audio in real
time (20 ms chunks), exactly as a deployment would. Latency is the server's definition (realtime/stats.py): frame
leaves the server - arrival of the last audio sample of its span. Concurrency: K clients push at once; the
configuration is real time when every frame arrives, p95 latency stays under the budget + ``--slack-ms``, and the
worker is busy less than the wall time.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from realtime.client import StreamClient  # noqa: E402
from realtime.server import AvatarServer, ServerConfig  # noqa: E402
from realtime.sources import synthetic_speech  # noqa: E402
from realtime.stats import LatencyStats  # noqa: E402

RATE = 16_000


def make_driver(args: argparse.Namespace, chunk_frames: int) -> tuple[Any, str]:
    if not args.fake:
        try:
            from realtime.engine import load_driver

            return load_driver(args.checkpoint, chunk_frames=chunk_frames, face_mode=args.face), "real"
        except Exception as e:  # no engine or checkpoint yet: say so and measure the runtime alone
            print(f"realtime.engine unavailable ({type(e).__name__}: {e}); using the fake driver", flush=True)
            args.fake = True
    from tests.fake_driver import FakeDriver

    return FakeDriver(chunk_frames=chunk_frames, compute_ms=args.fake_compute_ms,
                      compute_ms_per_frame=args.fake_ms_per_frame), "fake"


async def _push_realtime(url: str, pcm: np.ndarray, chunk_ms: float = 20.0) -> int:
    """Push one session in real time; returns the number of frames received back."""
    step = int(RATE * chunk_ms / 1000)
    async with StreamClient(url) as c:
        await c.start(RATE, streams=("pose",))
        frames = 0

        async def sender() -> None:
            t0 = time.monotonic()
            for i in range(0, len(pcm), step):
                await asyncio.sleep(max(0.0, t0 + i / RATE - time.monotonic()))
                await c.send_audio(pcm[i:i + step])
            await c.end()

        task = asyncio.create_task(sender())
        async for m in c.messages(timeout=30):
            if isinstance(m, dict):
                if m.get("type") == "end":
                    break
            elif m.__class__.__name__ == "PoseFrame":
                frames += 1
        await task
        return frames


async def run_sessions(driver: Any, n_sessions: int, seconds: float) -> dict:
    """K concurrent real-time pushing sessions against one server; returns the measured numbers."""
    pcm = synthetic_speech(seconds, RATE)
    expected = -(-int(round(len(pcm) * 24_000 / RATE)) // 800)
    warm = driver.new_session()  # first-call costs (kernels, caches) are not part of the measurement
    driver.process([(warm, np.zeros(24_000, np.float32))])
    async with AvatarServer(driver, ServerConfig(port=0, max_sessions=n_sessions + 1)) as srv:
        lat = LatencyStats()
        seen: list = []

        def on_open() -> None:  # collect latencies of every session as they end
            for live in srv.sessions.values():
                if live not in seen:
                    seen.append(live)

        poller = asyncio.create_task(_poll(on_open))
        t0, cpu0 = time.monotonic(), time.process_time()
        frames = await asyncio.gather(*[_push_realtime(srv.url, pcm) for _ in range(n_sessions)])
        wall, cpu = time.monotonic() - t0, time.process_time() - cpu0
        poller.cancel()
        for live in seen:
            lat.hist += live.stats.latency.hist
            lat.count += live.stats.latency.count
            lat.max = max(lat.max, live.stats.latency.max)
        comp = srv.worker.compute
        return {"sessions": n_sessions, "frames_ok": all(f == expected for f in frames),
                "frames": sum(frames), "expected": expected * n_sessions,
                "p50_ms": 1000 * lat.percentile(50), "p95_ms": 1000 * lat.percentile(95), "max_ms": 1000 * lat.max,
                "rtf": comp.rtf, "busy": comp.compute_s / wall, "cpu_percent": 100 * cpu / wall,
                "mean_batch": comp.items / max(1, comp.calls), "budget_ms": srv.budget.get("ms", float("nan"))}


async def _poll(fn: Any) -> None:
    while True:
        fn()
        await asyncio.sleep(0.05)


def realtime_ok(r: dict, slack_ms: float) -> bool:
    return r["frames_ok"] and r["p95_ms"] <= r["budget_ms"] + slack_ms and r["busy"] < 1.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=None, help="model checkpoint for realtime.engine.load_driver")
    p.add_argument("--face", default="auto", help="face mode passed to load_driver")
    p.add_argument("--fake", action="store_true", help="use the fake driver (tests/fake_driver.py)")
    p.add_argument("--fake-compute-ms", type=float, default=2.0, help="fake driver: cost per process() call")
    p.add_argument("--fake-ms-per-frame", type=float, default=1.0, help="fake driver: cost per emitted frame")
    p.add_argument("--chunks", default="1,2,4", help="chunk_frames settings to compare")
    p.add_argument("--seconds", type=float, default=6.0, help="audio per session and measurement")
    p.add_argument("--concurrency-chunk", type=int, default=2, help="chunk_frames for the concurrency sweep")
    p.add_argument("--max-sessions", type=int, default=16, help="largest concurrency tried (doubling from 1)")
    p.add_argument("--slack-ms", type=float, default=100.0, help="p95 allowed above the budget for 'real time'")
    p.add_argument("--json", type=Path, default=None, help="also write the results as JSON")
    args = p.parse_args(argv)

    results: dict[str, Any] = {"chunks": [], "concurrency": []}
    print("one real-time session per chunk setting (CPU% = this process: server and clients; 100 = one core)")
    print(f"{'chunk N':>7} {'budget':>8} {'p50':>8} {'p95':>8} {'max':>8} {'RTF':>7} {'CPU%':>6} {'frames':>9}  driver")
    for n in [int(x) for x in args.chunks.split(",")]:
        driver, kind = make_driver(args, n)
        r = asyncio.run(run_sessions(driver, 1, args.seconds))
        results["chunks"].append({"chunk_frames": n, "driver": kind, **r})
        print(f"{n:>7} {r['budget_ms']:>6.0f}ms {r['p50_ms']:>6.1f}ms {r['p95_ms']:>6.1f}ms {r['max_ms']:>6.1f}ms "
              f"{r['rtf']:>7.3f} {r['cpu_percent']:>6.0f} {r['frames']:>4}/{r['expected']:<4}  {kind}", flush=True)

    print(f"\nconcurrent real-time sessions (chunk N={args.concurrency_chunk}, {args.seconds:g} s each, real time = "
          f"all frames, p95 <= budget + {args.slack_ms:g} ms, worker busy < 100 %)")
    print(f"{'sessions':>8} {'p50':>8} {'p95':>8} {'busy%':>6} {'batch':>6} {'CPU%':>6}  real time?")
    k, best = 1, 0
    while k <= args.max_sessions:
        driver, kind = make_driver(args, args.concurrency_chunk)
        r = asyncio.run(run_sessions(driver, k, args.seconds))
        ok = realtime_ok(r, args.slack_ms)
        results["concurrency"].append({"driver": kind, "realtime": ok, **r})
        print(f"{k:>8} {r['p50_ms']:>6.1f}ms {r['p95_ms']:>6.1f}ms {100 * r['busy']:>6.0f} {r['mean_batch']:>6.2f} "
              f"{r['cpu_percent']:>6.0f}  {'yes' if ok else 'NO'}", flush=True)
        if not ok:
            break
        best, k = k, k * 2
    results["max_realtime_sessions"] = best
    print(f"\nmax concurrent real-time sessions: {best}{'+' if best >= args.max_sessions else ''} "
          f"(machine: {__import__('os').cpu_count()} cores)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=float))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
