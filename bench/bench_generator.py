"""Benchmark the generator's streaming step: wall time per 1-frame step (p50 / p95 / mean) per preset and batch.

Each configuration runs ``--warmup`` steps, then ``--steps`` timed steps, each feeding one frame (B, 1, 160) of
random audio features and carrying the state (the realtime path). The weights are random (timing does not depend
on them). Targets (project budget at 30 fps), per 1-frame step: tiny p50 <= 3 ms, small/base p95 <= 33 ms.
A step at batch B advances B streams by one frame each; ``p50/strm`` = p50 / B is the per-stream throughput cost.
On a shared machine compare the ``cpu`` columns (this thread's CPU time; excludes waiting for the core).

Example:
    python bench/bench_generator.py --presets tiny base --batch 1 8 --threads 1
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.generator import GeneratorConfig, MambaTalkMHR, format_parameter_counts  # noqa: E402
from models.rates import FEATURE_DIM, FRAME_MS  # noqa: E402

TARGETS_MS = {"tiny": ("p50", 3.0), "small": ("p95", 33.0), "base": ("p95", 33.0)}


def percentile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))]


def bench_one(preset: str, batch: int, warmup: int, steps: int, progress: bool) -> dict:
    torch.manual_seed(0)
    model = MambaTalkMHR(GeneratorConfig.preset(preset)).eval()
    n_params = sum(p.numel() for p in model.parameters())
    state = model.init_state(batch)
    audio = torch.randn(warmup + steps, batch, 1, FEATURE_DIM)
    speaker = torch.full((batch,), model.UNKNOWN_SPEAKER, dtype=torch.long)
    times: list[float] = []
    cpu: list[float] = []
    total = warmup + steps
    with torch.inference_mode():
        for i in range(total):
            c0, t0 = time.thread_time(), time.perf_counter()
            _, state = model.step(audio[i], speaker, state)
            dt, dc = (time.perf_counter() - t0) * 1e3, (time.thread_time() - c0) * 1e3
            if i >= warmup:
                times.append(dt)
                cpu.append(dc)
            if progress and (i + 1) % 100 == 0:
                print(f"\r  {preset} batch {batch}: step {i + 1}/{total}", end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    which, target = TARGETS_MS[preset]
    res = {
        "preset": preset, "batch": batch, "params": n_params, "mamba_layers": model.config.n_mamba_layers,
        "p50_ms": percentile(times, 50), "p95_ms": percentile(times, 95), "mean_ms": statistics.fmean(times),
        "max_ms": max(times), "cpu_p50_ms": percentile(cpu, 50), "cpu_p95_ms": percentile(cpu, 95),
        "target": f"{which} <= {target} ms",
    }
    res["p50_ms_per_stream_frame"] = res["p50_ms"] / batch  # throughput view: one step advances B streams
    res["meets_target"] = res[f"{which}_ms"] <= target
    res["realtime_factor"] = FRAME_MS / res["p95_ms"]  # > 1: a 1-frame step finishes within one 33.3 ms frame
    return res


def profile_base(batch: int, steps: int) -> str:
    """Top operators of the base step (to say what dominates when it misses its target)."""
    torch.manual_seed(0)
    model = MambaTalkMHR(GeneratorConfig.preset("base")).eval()
    state = model.init_state(batch)
    audio = torch.randn(batch, 1, FEATURE_DIM)
    speaker = torch.zeros(batch, dtype=torch.long)
    with torch.inference_mode():
        for _ in range(20):
            _, state = model.step(audio, speaker, state)
        with torch.profiler.profile() as prof:
            for _ in range(steps):
                _, state = model.step(audio, speaker, state)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["tiny", "base"], choices=GeneratorConfig.preset_names())
    ap.add_argument("--batch", nargs="+", type=int, default=[1, 8], help="batch sizes (concurrent streams)")
    ap.add_argument("--warmup", type=int, default=300, help="untimed steps first")
    ap.add_argument("--steps", type=int, default=500, help="timed 1-frame steps")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (1 is fastest for 1-frame steps on a shared 2-core CPU)")
    ap.add_argument("--params", action="store_true", help="print parameter counts per submodule")
    ap.add_argument("--profile", action="store_true", help="print the top operators of a base step (batch 1)")
    ap.add_argument("--json", type=Path, help="also write the results to this JSON file")
    ap.add_argument("--quiet", action="store_true", help="no progress on stderr")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    if args.params:
        for preset in args.presets:
            print(f"== {preset} parameters")
            print(format_parameter_counts(MambaTalkMHR(GeneratorConfig.preset(preset))))
    results = []
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, warmup {args.warmup}, steps {args.steps}")
    print("wall = perf_counter per step; cpu = this thread's CPU time per step (excludes time the OS gave the core to "
          "other processes: the unloaded estimate on a shared machine; meaningful with --threads 1)")
    print(f"{'preset':<6} {'batch':>5} {'params':>10} {'p50 ms':>8} {'p95 ms':>8} {'mean ms':>8} {'max ms':>8} "
          f"{'cpu p50':>8} {'cpu p95':>8} {'p50/strm':>8}  target (per step, wall)")
    for preset in args.presets:
        for batch in args.batch:
            r = bench_one(preset, batch, args.warmup, args.steps, not args.quiet)
            results.append(r)
            ok = "ok" if r["meets_target"] else "MISS"
            print(f"{preset:<6} {batch:>5} {r['params'] / 1e6:>9.2f}M {r['p50_ms']:>8.2f} {r['p95_ms']:>8.2f} "
                  f"{r['mean_ms']:>8.2f} {r['max_ms']:>8.2f} {r['cpu_p50_ms']:>8.2f} {r['cpu_p95_ms']:>8.2f} "
                  f"{r['p50_ms_per_stream_frame']:>8.2f}  "
                  f"{r['target']} {ok}", flush=True)
    if args.profile:
        print(profile_base(1, 50))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
