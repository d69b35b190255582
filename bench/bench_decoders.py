"""Per-chunk VQ decode cost: ONNX Runtime vs PyTorch eager, same process, same thread count.

    python bench/bench_decoders.py [--checkpoint BUNDLE] [--threads 1] [--chunks 1,2,4] [--iters 400]

A chunk decode is what the runtime does every N new frames: decode a window of code vectors
``left + N + right`` long (``--overlap 4`` adds the engine's 4 re-decoded overlap frames) and keep N rows.
Without ``--checkpoint`` (or when the shipped demo is absent) the VQs are randomly initialised with the demo's
training sizes (code_dim 128, hidden 128, 2 layers, R = 0): cost does not depend on the weights' values.
Both backends get the same thread count (torch.set_num_threads / ORT intra_op_num_threads, inter-op 1).
Prints a table (median and p90 microseconds per call) and optionally writes JSON (--json).

``--generator`` also times the generator's streaming step (tiny preset, code_dim 128, B = 1): PyTorch eager
``MambaTalkMHR.step`` on N frames vs the exported 1-frame ONNX step called N times (``OnnxGenerator.step``).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from exporters.onnx import export_decoders, export_generator  # noqa: E402
from exporters.onnx_runtime import OnnxDecoders, OnnxGenerator  # noqa: E402
from models.layout import PART_DIMS, VQ_PARTS  # noqa: E402
from models.vqvae import PartVQVAE, VQConfig  # noqa: E402


def random_vqs(code_dim: int, hidden: int, n_layers: int, lookahead: int) -> dict[str, PartVQVAE]:
    torch.manual_seed(0)
    return {p: PartVQVAE(VQConfig(part=p, in_dim=PART_DIMS[p], code_dim=code_dim, hidden=hidden, n_layers=n_layers,
                                  lookahead=lookahead)).eval() for p in VQ_PARTS}


def time_calls(fn, iters: int, warmup: int) -> np.ndarray:
    for _ in range(warmup):
        fn()
    out = np.empty(iters)
    for i in range(iters):
        t0 = time.perf_counter()
        fn()
        out[i] = time.perf_counter() - t0
    return out * 1e6  # microseconds


def bench_generator(a: argparse.Namespace, chunks: list[int]) -> list[dict]:
    """Generator step per chunk: torch eager step(N frames) vs the 1-frame ONNX step called N times."""
    from models.generator import GeneratorConfig, MambaTalkMHR

    torch.manual_seed(0)
    gen = MambaTalkMHR(GeneratorConfig.preset("tiny", code_dim=a.code_dim, n_speakers=4)).eval()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        export_generator(gen, tmp, log=lambda *_: None)
        og = OnnxGenerator.load(tmp, providers=["CPUExecutionProvider"], threads=a.threads)
        print("# generator step (tiny preset, B=1)")
        print(f"{'N':>2s} {'torch us (p50/p90)':>20s} {'ORT us (p50/p90)':>18s} {'speedup':>7s} {'max|diff|':>9s}")
        spk = torch.tensor([1])
        for n in chunks:
            audio = torch.randn(1, n, 160)
            st_t, st_o = gen.init_state(1), og.init_state(1)

            def run_torch(x=audio, s=st_t):
                with torch.inference_mode():
                    return gen.step(x, spk, s)

            def run_ort(x=audio, s=st_o):
                return og.step(x, spk, s)

            diff = float((run_torch()[0].latents["body"] - run_ort()[0].latents["body"]).abs().max())
            t_torch, t_ort = [], []
            for _ in range(4):
                t_torch.append(time_calls(run_torch, a.iters // 8, a.warmup // 4))
                t_ort.append(time_calls(run_ort, a.iters // 8, a.warmup // 4))
            tt, to = np.concatenate(t_torch), np.concatenate(t_ort)
            r = {"n": n, "torch_p50_us": float(np.median(tt)), "torch_p90_us": float(np.percentile(tt, 90)),
                 "ort_p50_us": float(np.median(to)), "ort_p90_us": float(np.percentile(to, 90)), "max_abs_diff": diff}
            r["speedup_p50"] = r["torch_p50_us"] / r["ort_p50_us"]
            rows.append(r)
            print(f"{n:2d} {r['torch_p50_us']:9.0f} / {r['torch_p90_us']:8.0f} {r['ort_p50_us']:8.0f} / "
                  f"{r['ort_p90_us']:7.0f} {r['speedup_p50']:6.2f}x {diff:9.1e}")
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench/bench_decoders.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=None, help="bundle directory (default: random demo-sized VQs)")
    ap.add_argument("--threads", type=int, default=1, help="threads for BOTH backends (default 1)")
    ap.add_argument("--chunks", default="1,2,4", help="new frames N per chunk")
    ap.add_argument("--overlap", type=int, default=0, help="extra re-decoded frames per window (engine: 4)")
    ap.add_argument("--iters", type=int, default=400)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--code-dim", type=int, default=128)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--lookahead", type=int, default=0)
    ap.add_argument("--generator", action="store_true", help="also time the generator step (tiny preset)")
    ap.add_argument("--json", default=None, help="also write the results here")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    if a.checkpoint:
        from models.bundle import load_vqs

        vqs, _, _ = load_vqs(a.checkpoint)
        source = str(a.checkpoint)
    else:
        vqs = random_vqs(a.code_dim, a.hidden, a.layers, a.lookahead)
        source = f"random VQs code_dim={a.code_dim} hidden={a.hidden} layers={a.layers} R={a.lookahead}"
    chunks = [int(x) for x in a.chunks.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        export_decoders(vqs, tmp, log=lambda *_: None)
        ort_dec = OnnxDecoders.load(tmp, providers=["CPUExecutionProvider"], threads=a.threads)
        print(f"# {source}; threads={a.threads}; torch {torch.__version__}; providers {ort_dec.providers}")
        print(f"{'part':5s} {'N':>2s} {'window':>6s} {'torch us (p50/p90)':>20s} {'ORT us (p50/p90)':>18s} "
              f"{'speedup':>7s} {'max|diff|':>9s}")
        rng = np.random.default_rng(0)
        for part, vq in vqs.items():
            left, right = vq.receptive_field
            for n in chunks:
                w = a.overlap + left + n + right
                idx = torch.from_numpy(rng.integers(0, vq.cfg.codebook_size, (1, w)))
                zq_t = vq.quantizer.lookup(idx).contiguous()
                zq_n = zq_t.numpy()

                def run_torch(z=zq_t, m=vq):
                    with torch.inference_mode():
                        return m.decode(z)

                def run_ort(z=zq_n, p=part):
                    return ort_dec.decode(p, z)

                diff = float(np.abs(run_torch().numpy() - run_ort()).max())
                # interleave the two backends in blocks so load changes on the shared CPU hit both alike
                t_torch, t_ort = [], []
                for _ in range(4):
                    t_torch.append(time_calls(run_torch, a.iters // 4, a.warmup // 4))
                    t_ort.append(time_calls(run_ort, a.iters // 4, a.warmup // 4))
                tt, to = np.concatenate(t_torch), np.concatenate(t_ort)
                r = {"part": part, "n": n, "window": w, "torch_p50_us": float(np.median(tt)),
                     "torch_p90_us": float(np.percentile(tt, 90)), "ort_p50_us": float(np.median(to)),
                     "ort_p90_us": float(np.percentile(to, 90)), "max_abs_diff": diff}
                r["speedup_p50"] = r["torch_p50_us"] / r["ort_p50_us"]
                rows.append(r)
                print(f"{part:5s} {n:2d} {w:6d} {r['torch_p50_us']:9.0f} / {r['torch_p90_us']:8.0f} "
                      f"{r['ort_p50_us']:8.0f} / {r['ort_p90_us']:7.0f} {r['speedup_p50']:6.2f}x {diff:9.1e}")
    sp = [r["speedup_p50"] for r in rows]
    print(f"# speedup ORT vs torch eager (p50): min {min(sp):.2f}x, median {np.median(sp):.2f}x, max {max(sp):.2f}x")
    gen_rows = bench_generator(a, chunks) if a.generator else []
    if a.json:
        Path(a.json).write_text(json.dumps({"source": source, "threads": a.threads, "overlap": a.overlap,
                                            "torch": torch.__version__, "rows": rows, "generator": gen_rows},
                                           indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
