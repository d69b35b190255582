"""One command that builds the shipped demo checkpoint on a 2-core CPU (<= 30 minutes).

    python -m train.demo [--work runs/demo] [--out models/checkpoints/demo] [--tts] [--minutes 16]

Steps (each a normal CLI you can also run by hand): synthetic talker (4 speakers, procedural speech and, with --tts,
espeak-ng voices) -> window cache -> tiny VQ-VAEs (body, hand, face) -> tiny generator -> copy the bundle to --out
-> ONNX export (decoders + generator step) -> evaluation report on held-out speech.
The default --out is the checkpoint every CLI loads by default.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from models.bundle import DEFAULT_CHECKPOINT

VQ_STEPS = {"body": 1200, "hand": 1200, "face": 800}
DEMO_SMOOTH = "{body: 0.8, hand: 4.0, face: 6.0, global: 1.0}"  # One-Euro min cutoffs (Hz) per part


def run(cmd: list[str]) -> None:
    print("$", " ".join(cmd), flush=True)
    t0 = time.time()
    subprocess.run(cmd, check=True)
    print(f"  ({time.time() - t0:.0f} s)", flush=True)


def generator_command(py: str, cache: Path, vq: Path, gen: Path, a: argparse.Namespace) -> list[str]:
    """The demo generator run: data parallel over ``--procs`` CPU processes (torchrun, gloo), 1 thread each."""
    procs = max(1, a.procs)
    launch = [py, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs)] if procs > 1 else [py]
    return launch + ["-m", "train.generator", "--cache", str(cache), "--vq", str(vq), "--out", str(gen),
                     f"steps={a.gen_steps}", f"seed={a.seed}", "window=256", "tbptt_chunk=128",
                     f"batch_size={max(1, 8 // procs)}", "lr=1.5e-3", "threads=1", "val_every=300",
                     # the tiny VQs' one-code-per-frame quantisation noise leaves 3x GT body speed even on the
                     # VQ round trip; the bundle asks the runtime for per-part One-Euro smoothing (see EVALUATION)
                     f"runtime_smooth={DEMO_SMOOTH}"]


def run_parallel(cmds: list[list[str]]) -> None:
    t0 = time.time()
    procs = []
    for c in cmds:
        print("$", " ".join(c), "&", flush=True)
        procs.append(subprocess.Popen(c))
    codes = [p.wait() for p in procs]
    if any(codes):
        raise SystemExit(f"[demo] a parallel step failed (exit codes {codes})")
    print(f"  ({time.time() - t0:.0f} s)", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default="runs/demo", help="working directory (data, cache, runs)")
    p.add_argument("--out", default=str(DEFAULT_CHECKPOINT), help="where the finished bundle is copied")
    p.add_argument("--minutes", type=float, default=16.0, help="minutes of synthetic training speech")
    p.add_argument("--speakers", type=int, default=4)
    p.add_argument("--tts", action="store_true", help="mix espeak-ng speech into the synthetic set")
    p.add_argument("--gen-steps", type=int, default=1250)
    p.add_argument("--procs", type=int, default=min(2, os.cpu_count() or 1),
                   help="processes for the generator (data parallel on CPU)")
    p.add_argument("--vq-scale", type=float, default=1.0, help="multiply the VQ step counts")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-eval", action="store_true")
    a = p.parse_args(argv)
    py = sys.executable
    work = Path(a.work)
    data, cache, vq, gen = work / "data", work / "cache", work / "vq", work / "generator"
    t0 = time.time()
    synth = [py, "-m", "train.synth", "--out", str(data), "--speakers", str(a.speakers), "--minutes",
             str(a.minutes), "--seed", str(a.seed)]
    run(synth + (["--tts"] if a.tts else []))
    run([py, "-m", "train.data", "cache", str(data), "--out", str(cache), "--window", "64", "--stride", "16"])
    # body and hand train side by side (one thread each: the fastest use of 2 cores), then face
    vq_cmds = {part: [py, "-m", "train.vq", "--part", part, "--cache", str(cache), "--out", str(vq),
                      f"steps={int(steps * a.vq_scale)}", f"seed={a.seed}", "threads=1"]
               for part, steps in VQ_STEPS.items()}
    run_parallel([vq_cmds["body"], vq_cmds["hand"]])
    run(vq_cmds["face"])
    run(generator_command(py, cache, vq, gen, a))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    for f in gen.iterdir():
        if f.suffix in (".safetensors", ".json"):
            shutil.copyfile(f, out / f.name)
    run([py, "-m", "exporters.onnx", "--checkpoint", str(out), "--generator"])  # the runtime's fast path
    print(f"[demo] bundle -> {out}  ({(time.time() - t0) / 60:.1f} min so far)")
    if not a.skip_eval:
        run([py, "-m", "train.evaluate", "--checkpoint", str(out), "--out", str(work / "eval"), "--seed",
             str(a.seed + 100)])
    print(f"[demo] done in {(time.time() - t0) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
