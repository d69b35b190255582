"""Benchmark the Mamba-1 layer: full-sequence scan vs frame-by-frame step, and the per-step cost of a stack.

Table 1, one ``Mamba`` mixer per (d_model, batch): frames/s of
  * ``forward`` over L frames (inference, the blocked parallel scan),
  * ``forward + backward`` over L frames (training; only with --train),
  * ``step`` one frame at a time carrying the state (the realtime path), and its ms per call.
frames/s counts batch * frames. Each number is the best of --repeats runs (the CPU may be shared).
Table 2: ms per ``MambaStack.step`` call (1 frame) of an n-layer stack at batch 1, for MLP hidden widths.

Example:
    python bench/bench_mamba.py --d-models 256 768 --batches 1 8 --length 512 --train
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.mamba import Mamba, MambaStack  # noqa: E402


def best_of(fn, repeats: int) -> float:
    """Best wall time (s) of `repeats` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def step_loop(model, x: torch.Tensor, state):
    for t in range(x.shape[1]):
        _, state = model.step(x[:, t], state)
    return state


def bench_layer(d_model: int, batch: int, length: int, step_frames: int, repeats: int, train: bool,
                chunk_size: int) -> dict:
    torch.manual_seed(0)
    model = Mamba(d_model, chunk_size=chunk_size)
    x = torch.randn(batch, length, d_model)
    with torch.inference_mode():
        t_fwd = best_of(lambda: model(x), repeats)
        xs = x[:, :step_frames]
        t_step = best_of(lambda: step_loop(model, xs, model.init_state(batch)), repeats)
    row = {"d_model": d_model, "batch": batch, "L": length, "fwd_fps": batch * length / t_fwd,
           "step_fps": batch * step_frames / t_step, "step_ms": 1e3 * t_step / step_frames}
    if train:
        xg = x.clone().requires_grad_()

        def fwd_bwd():
            y, _ = model(xg)
            y.square().mean().backward()

        row["train_fps"] = batch * length / best_of(fwd_bwd, max(1, repeats - 1))
    return row


def bench_stack(d_model: int, n_layers: int, mlp_hidden: int | None, steps: int, repeats: int, int8: bool) -> float:
    torch.manual_seed(0)
    stack = MambaStack(d_model, n_layers, mlp_hidden=mlp_hidden).eval()
    if int8:  # dynamic int8 Linear weights: a 4x smaller weight stream (step at batch 1 is memory-bandwidth bound)
        stack = torch.ao.quantization.quantize_dynamic(stack, {torch.nn.Linear}, dtype=torch.qint8)
    x = torch.randn(1, steps, d_model)
    with torch.inference_mode():
        return 1e3 * best_of(lambda: step_loop(stack, x, stack.init_state(1)), repeats) / steps


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--d-models", type=int, nargs="+", default=[256, 768])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--length", type=int, default=512, help="frames per full-sequence forward")
    p.add_argument("--step-frames", type=int, default=128, help="frames timed on the step path")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per number (the best is kept)")
    p.add_argument("--chunk-size", type=int, default=16, help="blocked-scan chunk length")
    p.add_argument("--train", action="store_true", help="also time forward+backward (slow at d_model 768)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--stack-d", type=int, default=768, help="stack width for table 2")
    p.add_argument("--stack-layers", type=int, default=9, help="stack depth for table 2 (0 skips it)")
    p.add_argument("--stack-mlp", type=int, nargs="+", default=[768, 0, -1],
                   help="MLP hidden widths for table 2 (768 = MambaTalk, 0 = no MLP, -1 = mamba-ssm default 8/3*d)")
    p.add_argument("--stack-steps", type=int, default=60)
    p.add_argument("--int8", action="store_true", help="table 2 also with dynamic int8 Linear weights")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, chunk_size {args.chunk_size}")

    head = f"{'d_model':>7} {'B':>3} {'L':>5} {'fwd fr/s':>10} {'fwd+bwd fr/s':>13} {'step fr/s':>10} {'step ms':>8}"
    print("\nMamba layer: full-sequence scan vs step\n" + head, flush=True)
    for d in args.d_models:
        for b in args.batches:
            r = bench_layer(d, b, args.length, args.step_frames, args.repeats, args.train, args.chunk_size)
            train = f"{r['train_fps']:13.0f}" if "train_fps" in r else f"{'-':>13}"
            print(f"{d:7d} {b:3d} {args.length:5d} {r['fwd_fps']:10.0f} {train} {r['step_fps']:10.0f} "
                  f"{r['step_ms']:8.3f}", flush=True)

    if args.stack_layers:
        print(f"\nMambaStack({args.stack_d}, {args.stack_layers} layers).step at batch 1", flush=True)
        for int8 in [False, True] if args.int8 else [False]:
            for hid in args.stack_mlp:
                ms = bench_stack(args.stack_d, args.stack_layers, None if hid < 0 else hid, args.stack_steps,
                                 args.repeats, int8)
                name = "8/3*d default" if hid < 0 else ("none" if hid == 0 else str(hid))
                print(f"  {'int8' if int8 else 'fp32'} mlp hidden {name:>14}: {ms:7.2f} ms/frame", flush=True)


if __name__ == "__main__":
    main()
