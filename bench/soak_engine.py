"""Soak benchmark: one engine session fed N minutes of speech as fast as possible; per-minute step cost and memory.

    python bench/soak_engine.py [--minutes 60] [--checkpoint DIR] [--push-ms 20]

A flat table (cost per frame and RSS do not grow with stream time) is what "runs for hours" means: the Mamba state,
the decoder windows and the feature tails are fixed-size, and nothing is kept per frame.
"""
from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a checkout
from models import rates  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=60.0)
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--push-ms", type=float, default=20.0)
    p.add_argument("--backend", default="auto")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    from realtime.demo_audio import demo_audio
    from realtime.engine import load_driver

    d = load_driver(a.checkpoint, backend=a.backend)
    print(f"backends: {d.backends}")
    speech = demo_audio()
    s = d.new_session()
    push = int(a.push_ms / 1000 * rates.MODEL_SAMPLE_RATE)
    per_min = rates.MODEL_SAMPLE_RATE * 60
    total = int(a.minutes * per_min)
    print(f"{'minute':>6} {'ms/frame':>9} {'p95 ms/push':>11} {'RSS MB':>8} {'frames':>8}")
    pos, frames, expect = 0, 0, 0
    t_all = time.perf_counter()
    for minute in range(int(np.ceil(a.minutes))):
        costs, n0, t0 = [], frames, time.perf_counter()
        end = min(total, (minute + 1) * per_min)
        while pos < end:
            n = min(push, end - pos)
            i = pos % len(speech)
            chunk = np.concatenate([speech[i:], speech[:max(0, i + n - len(speech))]])[:n]
            t = time.perf_counter()
            out = s.push(chunk)
            costs.append(time.perf_counter() - t)
            for f in out:
                if f.index != expect:
                    raise SystemExit(f"non-contiguous frame index {f.index}, expected {expect}")
                expect += 1
            frames += len(out)
            pos += n
        dt = time.perf_counter() - t0
        print(f"{minute + 1:>6} {1000 * dt / max(1, frames - n0):>9.3f} {1000 * np.percentile(costs, 95):>11.2f} "
              f"{rss_mb():>8.1f} {frames:>8}", flush=True)
    wall = time.perf_counter() - t_all
    print(f"{a.minutes:.0f} min of audio in {wall:.0f} s: RTF {wall / (a.minutes * 60):.3f}, {frames} frames")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
