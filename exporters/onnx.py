"""Export the per-part VQ decoders (and optionally the generator's streaming step) to ONNX, verified against PyTorch.

    python -m exporters.onnx [--checkpoint BUNDLE] [--out DIR]

Default checkpoint: the shipped demo (``models.bundle.DEFAULT_CHECKPOINT``); default ``--out``: ``BUNDLE/onnx``,
where the runtime looks (``realtime.decoders.choose_decoders``). Writes one ``decoder_<part>.onnx`` per present
part and ``manifest.json`` (see docs/EXPORT.md for every field).

Each graph is ``PartVQVAE.decode``: code vectors ``zq (B, T, code_dim)`` float32 -> normalised varying channels
``x (B, T, C)``, B and T dynamic. The decoder is a causal conv stack with zero padding: output row t sees code rows
[t - left, t + right] (``receptive_field``). The runtime therefore feeds a window of codes ``[a - left, b + right)``
and keeps output rows ``[left, left + (b - a))`` = frames ``a..b-1``, exactly equal to a whole-sequence decode
(rows near the window's edges see zero padding instead of real codes and are discarded).

Verification: every exported graph runs in ONNX Runtime on random latents and on real codes (codebook rows of
random indices, as ``decode_indices``) for several (B, T); the max abs difference to PyTorch is recorded in the
manifest and the export fails above ``--tol`` (1e-4).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from exporters.onnx_runtime import FORMAT, FORMAT_VERSION, MANIFEST
from models.checkpoint import file_sha256
from models.layout import LAYOUT_VERSION, PART_SLICES, VARYING, VQ_PARTS
from models.vqvae import PartVQVAE

DEFAULT_OPSET = 17
DEFAULT_TOL = 1e-4
INPUT_NAME = "zq"
OUTPUT_NAME = "x"
VERIFY_SHAPES = ((1, 1), (1, 15), (2, 40), (1, 97))  # (B, T) checked for every graph


class ExportError(RuntimeError):
    """An exported graph does not match PyTorch (or cannot be exported)."""


class DecoderGraph(nn.Module):
    """``PartVQVAE.decode`` as a standalone module: (B, T, code_dim) -> (B, T, C)."""

    def __init__(self, vq: PartVQVAE):
        super().__init__()
        self.decoder = vq.decoder

    def forward(self, zq: Tensor) -> Tensor:
        return self.decoder(zq)


def reexport_command(checkpoint: str | Path | None, out: str | Path) -> str:
    """The command that regenerates an export (quoted in every error message)."""
    ck = f"--checkpoint {checkpoint} " if checkpoint else ""
    return f"python -m exporters.onnx {ck}--out {out}"


def source_digest(files: Mapping[str, str]) -> str:
    """One sha256 for a set of part files: sha256 over the sorted lines ``part:file_sha256``."""
    import hashlib

    h = hashlib.sha256()
    for part in sorted(files):
        h.update(f"{part}:{files[part]}\n".encode())
    return h.hexdigest()


def export_decoder(vq: PartVQVAE, path: str | Path, opset: int = DEFAULT_OPSET,
                   metadata: Mapping[str, str] | None = None) -> Path:
    """Write one part's decoder graph (dynamic batch and frames) with ``metadata`` in the model's properties."""
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    vq = vq.eval()
    example = torch.zeros(1, sum(vq.receptive_field) + 4, vq.cfg.code_dim)
    tmp = path.with_suffix(".tmp.onnx")
    with torch.no_grad():
        torch.onnx.export(DecoderGraph(vq), (example,), str(tmp), dynamo=False, opset_version=opset,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], do_constant_folding=True,
                          dynamic_axes={INPUT_NAME: {0: "batch", 1: "frames"}, OUTPUT_NAME: {0: "batch", 1: "frames"}})
    model = onnx.load(str(tmp))
    for k, v in (metadata or {}).items():
        model.metadata_props.add(key=str(k), value=str(v))
    model.doc_string = f"MHR {vq.part} VQ decoder: zq (B, T, {vq.cfg.code_dim}) -> x (B, T, {vq.cfg.in_dim}) normalised"
    onnx.checker.check_model(model)
    onnx.save(model, str(tmp))
    tmp.replace(path)
    return path


def verify_decoder(vq: PartVQVAE, path: str | Path, providers: list[str] | None = None,
                   shapes: tuple[tuple[int, int], ...] = VERIFY_SHAPES, seed: int = 0) -> dict[str, float]:
    """Max abs difference ONNX Runtime vs PyTorch on random latents and on real codes (codebook rows).

    Returns {'random': ..., 'codes': ..., 'provider': ...}.
    """
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=providers or ["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(seed)
    diffs = {"random": 0.0, "codes": 0.0}
    vq = vq.eval()
    for b, t in shapes:
        zr = torch.randn(b, t, vq.cfg.code_dim, generator=g)
        idx = torch.randint(0, vq.cfg.codebook_size, (b, t), generator=g)
        with torch.no_grad():
            zc = vq.quantizer.lookup(idx)
            for key, zq, ref in (("random", zr, vq.decode(zr)), ("codes", zc, vq.decode_indices(idx))):
                out = sess.run([OUTPUT_NAME], {INPUT_NAME: zq.numpy().astype(np.float32)})[0]
                if out.shape != tuple(ref.shape):
                    raise ExportError(f"{path}: output shape {out.shape} != PyTorch {tuple(ref.shape)} for T={t}")
                diffs[key] = max(diffs[key], float(np.abs(out - ref.numpy()).max()))
    return {**diffs, "provider": sess.get_providers()[0]}


def export_decoders(vqs: Mapping[str, PartVQVAE], out_dir: str | Path, *,
                    norm: Mapping[str, tuple[Tensor, Tensor]] | None = None,
                    source_files: Mapping[str, str | Path] | None = None, checkpoint: str | Path | None = None,
                    skipped_parts: Mapping[str, str] | None = None, opset: int = DEFAULT_OPSET,
                    tol: float = DEFAULT_TOL, providers: list[str] | None = None, log=print) -> dict[str, Any]:
    """Export, verify and describe every part's decoder; returns the manifest written to ``out_dir``.

    Args:
        vqs: part -> model (eval mode is set here).
        out_dir: export directory (created).
        norm: part -> (mean, std) over its varying channels, copied into the manifest (optional).
        source_files: part -> the checkpoint file the model came from; its sha256 goes into the manifest and the
            runtime refuses the export if the bundle's file differs. Without it the export is marked unpinned.
        checkpoint: the bundle directory (recorded; used in the re-export hint).
        skipped_parts: part -> reason, recorded as is.
        opset: ONNX opset (>= 17).
        tol: max abs difference allowed between ONNX Runtime and PyTorch.
        providers: ONNX Runtime providers for the verification (default CPU).
        log: progress printer.
    """
    import onnx
    import onnxruntime as ort

    if opset < 17:
        raise ValueError(f"opset {opset}: use 17 or newer")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    unknown = sorted(set(vqs) - set(VQ_PARTS))
    if unknown or not vqs:
        raise ValueError(f"parts {sorted(vqs)}: expected a non-empty subset of {VQ_PARTS}")
    shas = {p: file_sha256(f) for p, f in (source_files or {}).items() if p in vqs}
    digest = source_digest(shas) if shas else None
    manifest: dict[str, Any] = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "layout_version": LAYOUT_VERSION, "opset": opset,
        "exported_with": {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": ort.__version__},
        "source": {"checkpoint": str(checkpoint) if checkpoint else None, "sha256": digest,
                   "files": {p: {"file": Path(source_files[p]).name, "sha256": s} for p, s in shas.items()}},
        "io": {"input": INPUT_NAME, "output": OUTPUT_NAME, "dtype": "float32",
               "window": "feed codes [a - left, b + right) and keep output rows [left, left + b - a) (frames a..b-1)"},
        "parts": {}, "skipped_parts": dict(skipped_parts or {}), "tolerance": tol,
    }
    for part in VQ_PARTS:
        if part not in vqs:
            continue
        vq = vqs[part].eval()
        if vq.part != part:
            raise ValueError(f"model given for part {part!r} is a {vq.part!r} VQ")
        t0 = time.time()
        left, right = vq.receptive_field
        fname = f"decoder_{part}.onnx"
        meta = {"format": FORMAT, "layout_version": LAYOUT_VERSION, "part": part, "code_dim": vq.cfg.code_dim,
                "out_dim": vq.cfg.in_dim, "receptive_field": f"{left},{right}", "source_sha256": shas.get(part, "")}
        path = export_decoder(vq, out_dir / fname, opset=opset, metadata=meta)
        diffs = verify_decoder(vq, path, providers=providers)
        worst = max(diffs["random"], diffs["codes"])
        log(f"[onnx] {part}: {fname} ({path.stat().st_size / 1e6:.2f} MB), receptive field ({left}, {right}), "
            f"max |ORT - torch| random {diffs['random']:.2e} codes {diffs['codes']:.2e} "
            f"({time.time() - t0:.1f} s)")
        if worst > tol:
            path.unlink()
            raise ExportError(f"{part}: ONNX Runtime differs from PyTorch by {worst:.3e} > tol {tol:g}; export "
                              f"aborted ({fname} removed). Try another --opset, or report the torch/onnx versions")
        sl = PART_SLICES[part]
        entry: dict[str, Any] = {
            "file": fname, "sha256": file_sha256(path), "code_dim": vq.cfg.code_dim, "out_dim": vq.cfg.in_dim,
            "codebook_size": vq.cfg.codebook_size, "receptive_field": [left, right], "lookahead": vq.cfg.lookahead,
            "slice": [sl.start, sl.stop], "varying": VARYING[part].tolist(),
            "parity": {"random": diffs["random"], "codes": diffs["codes"], "provider": diffs["provider"]},
        }
        if norm and part in norm:
            mean, std = (np.asarray(torch.as_tensor(v).detach().cpu(), np.float64).reshape(-1) for v in norm[part])
            if mean.shape != (vq.cfg.in_dim,) or std.shape != (vq.cfg.in_dim,):
                raise ValueError(f"{part}: norm stats have {mean.shape}/{std.shape}, expected ({vq.cfg.in_dim},)")
            entry["norm_mean"], entry["norm_std"] = mean.tolist(), std.tolist()
        manifest["parts"][part] = entry
    tmp = out_dir / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    tmp.replace(out_dir / MANIFEST)
    return manifest


def export_bundle(checkpoint: str | Path | None, out_dir: str | Path | None = None, *, opset: int = DEFAULT_OPSET,
                  tol: float = DEFAULT_TOL, parts: list[str] | None = None, log=print) -> tuple[Path, dict[str, Any]]:
    """Export the VQ decoders of a checkpoint bundle (None = the shipped demo). Returns (out_dir, manifest)."""
    from models.bundle import DEFAULT_CHECKPOINT, MANIFEST as BUNDLE_MANIFEST, load_vqs

    root = Path(checkpoint) if checkpoint is not None else DEFAULT_CHECKPOINT
    if root.is_file() and root.name == BUNDLE_MANIFEST:
        root = root.parent
    if not (root / BUNDLE_MANIFEST).is_file():
        hint = ("the shipped demo checkpoint is missing: build it with `python -m train.demo`" if checkpoint is None
                else "point --checkpoint at a bundle directory (train.generator / train.demo output)")
        raise FileNotFoundError(f"{root / BUNDLE_MANIFEST}: no checkpoint manifest ({hint})")
    vqs, norm, skipped = load_vqs(root)
    bundle_manifest = json.loads((root / BUNDLE_MANIFEST).read_text())
    skipped.update(bundle_manifest.get("skipped_parts", {}))
    if parts:
        missing = sorted(set(parts) - set(vqs))
        if missing:
            raise ValueError(f"{root}: no VQ for part(s) {missing} (present: {sorted(vqs)})")
        vqs = {p: vqs[p] for p in parts}
    out = Path(out_dir) if out_dir is not None else root / "onnx"
    files = {p: root / f"vq_{p}.safetensors" for p in vqs}
    manifest = export_decoders(vqs, out, norm=norm, source_files=files, checkpoint=root, skipped_parts=skipped,
                               opset=opset, tol=tol, log=log)
    return out, manifest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m exporters.onnx",
        description="Export the VQ decoders of a checkpoint bundle to ONNX (verified against PyTorch) for the "
                    "runtime; see docs/EXPORT.md.")
    ap.add_argument("--checkpoint", default=None, help="bundle directory (default: the shipped demo)")
    ap.add_argument("--out", default=None, help="export directory (default: CHECKPOINT/onnx, where the runtime looks)")
    ap.add_argument("--parts", default=None, help="comma-separated subset of the bundle's parts (default: all)")
    ap.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    ap.add_argument("--tol", type=float, default=DEFAULT_TOL, help="max abs ORT-vs-PyTorch difference (1e-4)")
    ap.add_argument("--generator", action="store_true",
                    help="also export the generator's streaming step (see docs/EXPORT.md: not exported, measured "
                         "not to pay on CPU)")
    args = ap.parse_args(argv)
    if args.generator:
        print("error: --generator: the generator step is not exported (ONNX Runtime was measured slower or no "
              "faster than PyTorch eager per step on CPU; see docs/EXPORT.md 'Generator step')", file=sys.stderr)
        return 2
    try:
        parts = [p.strip() for p in args.parts.split(",") if p.strip()] if args.parts else None
        out, manifest = export_bundle(args.checkpoint, args.out, opset=args.opset, tol=args.tol, parts=parts)
    except (OSError, ValueError, ExportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"[onnx] {len(manifest['parts'])} decoder(s) + {MANIFEST} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
