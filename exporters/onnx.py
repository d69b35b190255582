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
import warnings
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
VERIFY_SHAPES = ((1, 1), (2, 17), (1, 64))  # (B, T) checked for every graph


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
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Constant folding.*")  # F.pad's reversed Slice: harmless
        warnings.filterwarnings("ignore", category=DeprecationWarning)  # the TorchScript exporter, chosen on purpose
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


def base_manifest(opset: int, tol: float, checkpoint: str | Path | None = None) -> dict[str, Any]:
    """The manifest fields shared by every export (decoders and/or generator step)."""
    import onnx
    import onnxruntime as ort

    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "layout_version": LAYOUT_VERSION, "opset": opset,
        "exported_with": {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": ort.__version__},
        "source": {"checkpoint": str(checkpoint) if checkpoint else None, "sha256": None, "files": {}},
        "io": {"input": INPUT_NAME, "output": OUTPUT_NAME, "dtype": "float32",
               "window": "feed codes [a - left, b + right) and keep output rows [left, left + b - a) (frames a..b-1)"},
        "parts": {}, "skipped_parts": {}, "tolerance": tol,
    }


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
    if opset < 17:
        raise ValueError(f"opset {opset}: use 17 or newer")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    unknown = sorted(set(vqs) - set(VQ_PARTS))
    if unknown or not vqs:
        raise ValueError(f"parts {sorted(vqs)}: expected a non-empty subset of {VQ_PARTS}")
    shas = {p: file_sha256(f) for p, f in (source_files or {}).items() if p in vqs}
    manifest = base_manifest(opset, tol, checkpoint)
    manifest["source"]["sha256"] = source_digest(shas) if shas else None
    manifest["source"]["files"] = {p: {"file": Path(source_files[p]).name, "sha256": s} for p, s in shas.items()}
    manifest["skipped_parts"] = dict(skipped_parts or {})
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
                  tol: float = DEFAULT_TOL, parts: list[str] | None = None, generator: bool = False,
                  log=print) -> tuple[Path, dict[str, Any]]:
    """Export the VQ decoders (and with ``generator`` the generator's streaming step) of a checkpoint bundle
    (None = the shipped demo). Returns (out_dir, manifest)."""
    from models.bundle import DEFAULT_CHECKPOINT, load_vqs
    from models.bundle import MANIFEST as BUNDLE_MANIFEST

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
    if generator:
        from models.bundle import load_generator

        gen_file = root / bundle_manifest.get("generator", "generator.safetensors")
        if not gen_file.is_file():
            raise FileNotFoundError(f"{gen_file}: --generator needs the bundle's generator checkpoint")
        manifest = export_generator(load_generator(gen_file), out, manifest, source_file=gen_file, opset=opset,
                                    tol=tol, log=log)
    return out, manifest


# ---- generator streaming step ------------------------------------------------------------------------------------

GENERATOR_FILE = "generator_step.onnx"


def _frame_loop_forward(self, x: Tensor, state=None):
    """Mamba.forward as a loop of ``Mamba.step`` (same math, <= 1e-5): exportable with an unrolled fixed T."""
    state = self.init_state(x.shape[0], x.device, x.dtype) if state is None else state
    ys = []
    for t in range(x.shape[1]):
        y, state = self.step(x[:, t], state)
        ys.append(y)
    return torch.stack(ys, 1), state


def stepwise_copy(gen: nn.Module) -> nn.Module:
    """A deep copy of the generator whose Mamba layers run frame by frame (the export graph; the original is kept)."""
    import copy
    import types

    from models.mamba import Mamba

    g = copy.deepcopy(gen).eval()
    for m in g.modules():
        if isinstance(m, Mamba):
            m.forward = types.MethodType(_frame_loop_forward, m)
    return g


def generator_io(gen: nn.Module) -> dict[str, Any]:
    """Input/output names of the step graph and the state layout (``GeneratorState.tensors()`` order)."""
    st = gen.init_state(1)
    cfg = gen.config
    state = [{"name": f"state_{i}", "shape": list(t.shape[1:])} for i, t in enumerate(st.tensors())]
    logit_parts = [p for p in cfg.parts if p != "face" or cfg.face_logits]
    outputs = ([f"latents_{p}" for p in cfg.parts] + [f"logits_{p}" for p in logit_parts]
               + ["global_rot6d", "contact"] + [f"{s['name']}_out" for s in state])
    return {"inputs": ["audio", "speaker"] + [s["name"] for s in state], "outputs": outputs, "state": state,
            "structure": {"audio_tails": len(st.audio_tails), "motion_tails": len(st.motion_tails),
                          "mamba": {k: len(v) for k, v in st.mamba.items()}},
            "parts": list(cfg.parts), "logit_parts": logit_parts}


class GeneratorStepGraph(nn.Module):
    """(audio (B, T, 160), speaker (B,) int64, *state) -> (latents..., logits..., rot6d, contact, *new state)."""

    def __init__(self, gen: nn.Module):
        super().__init__()
        self.gen = stepwise_copy(gen)
        self.io = generator_io(gen)

    def forward(self, audio: Tensor, speaker: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        template = self.gen.init_state(audio.shape[0])
        out, new = self.gen.step(audio, speaker, template.with_tensors(list(state)))
        return (tuple(out.latents[p] for p in self.io["parts"]) + tuple(out.logits[p] for p in self.io["logit_parts"])
                + (out.global_rot6d, out.contact) + tuple(new.tensors()))


def export_generator_step(gen: nn.Module, path: str | Path, chunk_frames: int = 1, opset: int = DEFAULT_OPSET,
                          metadata: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Write the generator's streaming step (state as explicit inputs/outputs, dynamic batch, T = chunk_frames)."""
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    graph = GeneratorStepGraph(gen.eval())
    io = graph.io
    st = gen.init_state(1)
    audio = torch.zeros(1, chunk_frames, gen.config.audio_dim)
    speaker = torch.zeros(1, dtype=torch.long)
    dyn = {n: {0: "batch"} for n in io["inputs"] + io["outputs"]}
    tmp = path.with_suffix(".tmp.onnx")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings from the (python-side) input checks, TorchScript deprecation
        torch.onnx.export(graph, (audio, speaker, *st.tensors()), str(tmp), dynamo=False, opset_version=opset,
                          input_names=io["inputs"], output_names=io["outputs"], dynamic_axes=dyn,
                          do_constant_folding=True)
    model = onnx.load(str(tmp))
    for k, v in (metadata or {}).items():
        model.metadata_props.add(key=str(k), value=str(v))
    model.doc_string = f"MambaTalkMHR streaming step, {chunk_frames} frame(s) per call, state in/out"
    onnx.checker.check_model(model)
    onnx.save(model, str(tmp))
    tmp.replace(path)
    return io


def verify_generator_step(gen: nn.Module, path: str | Path, chunk_frames: int = 1, steps: int = 6, batch: int = 2,
                          providers: list[str] | None = None, seed: int = 0) -> float:
    """Max abs difference (all outputs and carried states) of ``steps`` chained ONNX steps vs ``gen.step``."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=providers or ["CPUExecutionProvider"])
    io = generator_io(gen)
    g = torch.Generator().manual_seed(seed)
    state = gen.init_state(batch)
    feeds_state = [t.numpy() for t in state.tensors()]
    speaker = torch.randint(0, gen.config.n_speakers + 1, (batch,), generator=g)
    worst = 0.0
    for _ in range(steps):
        audio = torch.randn(batch, chunk_frames, gen.config.audio_dim, generator=g)
        with torch.no_grad():
            out, state = gen.step(audio, speaker, state)
        ref = ([out.latents[p] for p in io["parts"]] + [out.logits[p] for p in io["logit_parts"]]
               + [out.global_rot6d, out.contact] + state.tensors())
        got = sess.run(None, {"audio": audio.numpy(), "speaker": speaker.numpy(),
                              **dict(zip(io["inputs"][2:], feeds_state))})
        for r, o in zip(ref, got):
            worst = max(worst, float(np.abs(r.numpy() - o).max()))
        feeds_state = got[len(got) - len(io["state"]):]  # carry ONNX's own state: errors would accumulate
    return worst


def export_generator(gen: nn.Module, out_dir: str | Path, manifest: dict[str, Any] | None = None, *,
                     source_file: str | Path | None = None, chunk_frames: int = 1, opset: int = DEFAULT_OPSET,
                     tol: float = DEFAULT_TOL, log=print) -> dict[str, Any]:
    """Export + verify the generator step into ``out_dir``, add its entry to ``manifest`` (default: a fresh one)
    and write the manifest."""
    out_dir = Path(out_dir)
    manifest = manifest if manifest is not None else base_manifest(opset, tol)
    t0 = time.time()
    sha = file_sha256(source_file) if source_file else None
    path = out_dir / GENERATOR_FILE
    io = export_generator_step(gen, path, chunk_frames, opset,
                               metadata={"format": FORMAT, "layout_version": LAYOUT_VERSION, "kind": "generator_step",
                                         "chunk_frames": str(chunk_frames), "source_sha256": sha or ""})
    diff = verify_generator_step(gen, path, chunk_frames)
    log(f"[onnx] generator: {GENERATOR_FILE} ({path.stat().st_size / 1e6:.2f} MB), {chunk_frames} frame(s) per "
        f"call, {len(io['state'])} state tensors, max |ORT - torch| over chained steps {diff:.2e} "
        f"({time.time() - t0:.1f} s)")
    if diff > tol:
        path.unlink()
        raise ExportError(f"generator: ONNX Runtime differs from PyTorch by {diff:.3e} > tol {tol:g}; export aborted")
    manifest["generator"] = {
        "file": GENERATOR_FILE, "sha256": file_sha256(path), "chunk_frames": chunk_frames,
        "source": {"file": Path(source_file).name if source_file else None, "sha256": sha},
        "config": gen.config.to_dict(), "lookahead": gen.config.lookahead, **io,
        "parity": {"chained_steps": diff},
    }
    tmp = out_dir / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    tmp.replace(out_dir / MANIFEST)
    return manifest


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
                    help="also export the generator's streaming step (1 frame per call, state tensors as explicit "
                         "inputs/outputs) as generator_step.onnx")
    args = ap.parse_args(argv)
    try:
        parts = [p.strip() for p in args.parts.split(",") if p.strip()] if args.parts else None
        out, manifest = export_bundle(args.checkpoint, args.out, opset=args.opset, tol=args.tol, parts=parts,
                                      generator=args.generator)
    except (OSError, ValueError, ExportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    extra = " + generator step" if "generator" in manifest else ""
    print(f"[onnx] {len(manifest['parts'])} decoder(s){extra} + {MANIFEST} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
