"""Quality vs generator look-ahead L: train a small generator per L and evaluate each against the talker law.

    python bench/lookahead_sweep.py --cache CACHE --vq RUN_VQ --out runs/sweep [--lookaheads 0 2 4 8] [--steps 600]
        [--minutes 1] [key=value ...]

For every L: ``train.generator.Trainer`` (same cache, same frozen VQs, ``lookahead=L``, the given steps and any
GenTrainConfig overrides) writes a bundle to OUT/L<L>, then ``train.evaluate`` scores it on fresh held-out speech
(OUT/L<L>/eval). Prints a table (law NMSE and best lag, velocity ratios, jaw and BC relative to the law, FGD, the
latency budget) and writes OUT/sweep.json. The law itself looks 4 frames ahead (``train.law.LOOKAHEAD_FRAMES``), so
L < 4 must anticipate strokes from the audio so far. L above ``models.generator.MAX_LOOKAHEAD`` is reported as
skipped (the generator refuses it). A benchmark: minutes of CPU per L, never run by the tests.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.generator import MAX_LOOKAHEAD  # noqa: E402
from train import evaluate as E  # noqa: E402
from train.config import load_config  # noqa: E402
from train.generator import GenTrainConfig, Trainer  # noqa: E402

COLUMNS = ("L", "steps", "train_s", "law_nmse", "lag", "body_vel", "hand_vel", "jaw/gt", "bc01/gt", "fgd",
           "latency_ms", "failed")


def row_of(L: int, steps: int, train_s: float, rep: dict) -> dict:
    m = rep["model"]
    return {
        "L": L, "steps": steps, "train_s": round(train_s, 1), "law_nmse": m["law_nmse"], "lag": m["law_best_lag"],
        "body_vel": m["body_velocity_ratio"], "hand_vel": m["hand_velocity_ratio"],
        "jaw/gt": E._div(m["jaw_env_corr"], m["jaw_env_corr_gt"]), "bc01/gt": E._div(m["bc_law_01"], m["bc_law_01_gt"]),
        "fgd": (rep.get("fgd") or {}).get("model"), "latency_ms": rep["engine"]["ms"],
        "failed": rep["summary"]["failed"],
    }


def format_table(rows: list[dict]) -> str:
    lines = ["  ".join(f"{c:>10s}" for c in COLUMNS)]
    for r in rows:
        if "skipped" in r:
            lines.append(f"{r['L']:>10d}  skipped: {r['skipped']}")
            continue
        lines.append("  ".join(f"{E._fmt(r[c]):>10s}" for c in COLUMNS))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", required=True, help="window cache (python -m train.data cache)")
    p.add_argument("--vq", required=True, help="directory with the trained vq_<part>.safetensors")
    p.add_argument("--out", required=True, help="sweep directory (one bundle per L)")
    p.add_argument("--lookaheads", type=int, nargs="+", default=[0, 2, 4, 8])
    p.add_argument("--steps", type=int, default=600, help="generator training steps per L")
    p.add_argument("--minutes", type=float, default=1.0, help="held-out speech per evaluation")
    p.add_argument("--synth-seed", type=int, default=E.DEFAULT_SYNTH_SEED)
    p.add_argument("--style-seed", type=int, default=None, help="training speakers' train.synth seed (default: "
                   "from the bundle's provenance)")
    p.add_argument("--fgd-encoder", default=None, help="FGD encoder file (default: a quick one per evaluation)")
    p.add_argument("overrides", nargs="*", help="GenTrainConfig key=value overrides, e.g. preset=tiny batch_size=4")
    a = p.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for L in a.lookaheads:
        if not 0 <= L <= MAX_LOOKAHEAD:
            msg = f"L={L} > models.generator.MAX_LOOKAHEAD={MAX_LOOKAHEAD}"
            print(f"[sweep] {msg}: skipped (raising the limit is a change to models/generator.py)", file=sys.stderr)
            rows.append({"L": L, "skipped": msg})
            continue
        cfg = load_config(GenTrainConfig, None, [f"lookahead={L}", f"steps={a.steps}", *a.overrides])
        run = out / f"L{L}"
        print(f"[sweep] L={L}: training {a.steps} steps -> {run}", file=sys.stderr)
        t0 = time.time()
        Trainer(a.cache, a.vq, run, cfg, quiet=True).run()
        train_s = time.time() - t0
        args = ["--checkpoint", str(run), "--out", str(run / "eval"), "--synth-seed", str(a.synth_seed),
                "--minutes", str(a.minutes), "--seam-seconds", "5", "--quiet"]
        if a.style_seed is not None:
            args += ["--style-seed", str(a.style_seed)]
        if a.fgd_encoder:
            args += ["--fgd-encoder", a.fgd_encoder]
        rep = E.evaluate(E.build_parser().parse_args(args))
        rows.append(row_of(L, a.steps, train_s, rep))
        print(format_table(rows[-1:]), file=sys.stderr)
    (out / "sweep.json").write_text(json.dumps(E._jsonable(rows), indent=1))
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
