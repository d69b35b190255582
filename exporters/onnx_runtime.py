"""Load the ONNX VQ decoders written by ``exporters.onnx`` and run them with ONNX Runtime (the runtime's default).

Every check fails with ``OnnxExportMismatch`` (a ValueError) naming the file and the fix, a re-export
(``python -m exporters.onnx --checkpoint ... --out ...``): missing or truncated files, a file whose sha256 differs
from the manifest, a different layout version, a different source checkpoint, a graph whose input/output dims
differ from the manifest, a decode call with the wrong code dimension.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from models.checkpoint import file_sha256
from models.layout import LAYOUT_VERSION

log = logging.getLogger("exporters.onnx")
FORMAT = "mhr-onnx-decoders"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"


class OnnxExportMismatch(ValueError):
    """The ONNX export is missing, corrupted or does not belong to the checkpoint in use."""


def default_providers() -> list[str]:
    """CUDA first when onnxruntime-gpu sees a GPU, then CPU."""
    import onnxruntime as ort

    avail = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in avail] or ["CPUExecutionProvider"]


class OnnxDecoders:
    """Per-part VQ decoders in ONNX Runtime; same interface as ``realtime.decoders.TorchDecoders``.

    Use ``OnnxDecoders.load(dir)``. ``decode(part, zq (B, T, D))`` returns normalised varying channels (B, T, C);
    a window of codes [a - left, b + right) gives frames a..b-1 in output rows [left, left + b - a).

    Attributes:
        root: export directory.
        manifest: the parsed manifest.json.
        providers: the execution providers actually used (first part's session).
    """

    name = "onnx"

    def __init__(self, root: Path, manifest: dict[str, Any], sessions: dict[str, Any]):
        self.root = root
        self.manifest = manifest
        self.sessions = sessions
        first = next(iter(sessions.values()))
        self.providers = list(first.get_providers())

    # ---- loading --------------------------------------------------------------------------------------------------
    @classmethod
    def load(cls, root: str | Path, expected_checkpoint_sha: str | dict[str, str] | None = None,
             providers: list[str] | None = None, *, bundle: Any = None, threads: int | None = None,
             verify_files: bool = True) -> OnnxDecoders:
        """Open and check an export directory.

        Args:
            root: directory with manifest.json and decoder_<part>.onnx.
            expected_checkpoint_sha: the source checkpoint's digest (manifest ``source.sha256``) or per-part file
                sha256s {part: sha}; a mismatch raises.
            providers: ONNX Runtime providers (default: CUDA when available, then CPU).
            bundle: a ``models.bundle.Bundle``: its vq_<part>.safetensors files must be the ones exported, and every
                part it has must be exported with the same receptive field and code size.
            threads: intra-op threads per session (default: ONNX Runtime's choice).
            verify_files: check each graph file's sha256 against the manifest (cheap: a few MB).
        """
        import onnxruntime as ort

        root = Path(root)
        mf = root / MANIFEST
        source = None

        def fail(where: Path | str, msg: str) -> OnnxExportMismatch:
            fix = _fix_hint(source, root)
            return OnnxExportMismatch(f"{where}: {msg}; re-export with `{fix}`")

        if not mf.is_file():
            raise fail(mf, "ONNX export manifest not found")
        try:
            manifest = json.loads(mf.read_text())
        except (ValueError, UnicodeDecodeError) as e:
            raise fail(mf, f"unreadable manifest ({e})") from e
        if not isinstance(manifest, dict):
            raise fail(mf, "manifest is not a JSON object")
        source = (manifest.get("source") or {}).get("checkpoint")
        if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
            raise fail(mf, f"format {manifest.get('format')!r} v{manifest.get('format_version')!r} is not "
                           f"{FORMAT!r} v{FORMAT_VERSION}")
        if manifest.get("layout_version") != LAYOUT_VERSION:
            raise fail(mf, f"layout version {manifest.get('layout_version')!r} != this code's {LAYOUT_VERSION!r}")
        parts = manifest.get("parts") or {}
        if not parts:
            raise fail(mf, "no part exported")
        src = manifest.get("source") or {}
        if expected_checkpoint_sha is not None:
            if isinstance(expected_checkpoint_sha, str):
                if src.get("sha256") != expected_checkpoint_sha:
                    raise fail(mf, f"exported from checkpoint sha256 {src.get('sha256')!r}, expected "
                                   f"{expected_checkpoint_sha!r}")
            else:
                got = {p: f.get("sha256") for p, f in (src.get("files") or {}).items()}
                for p, sha in expected_checkpoint_sha.items():
                    if got.get(p) != sha:
                        raise fail(mf, f"part {p!r} exported from checkpoint file sha256 {got.get(p)!r}, expected "
                                       f"{sha!r}")
        if bundle is not None:
            _check_bundle(manifest, bundle, fail, mf)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = int(threads)
            opts.inter_op_num_threads = 1
        provs = providers or default_providers()
        sessions = {}
        for part, entry in parts.items():
            f = root / str(entry.get("file", f"decoder_{part}.onnx"))
            if not f.is_file():
                raise fail(f, f"ONNX graph of part {part!r} not found")
            if verify_files and entry.get("sha256") and file_sha256(f) != entry["sha256"]:
                raise fail(f, "sha256 differs from the manifest (file truncated, corrupted or replaced)")
            try:
                sess = ort.InferenceSession(str(f), sess_options=opts, providers=provs)
            except Exception as e:  # noqa: BLE001 - ORT raises several types for bad graphs
                raise fail(f, f"ONNX Runtime cannot load it ({type(e).__name__}: {str(e)[:200]})") from e
            _check_graph(sess, entry, part, f, fail)
            sessions[part] = sess
        dec = cls(root, manifest, sessions)
        log.info("ONNX decoders %s from %s (providers %s)", sorted(sessions), root, dec.providers)
        return dec

    # ---- the decoder interface ----------------------------------------------------------------------------------
    @property
    def parts(self) -> tuple[str, ...]:
        return tuple(self.sessions)

    def _entry(self, part: str) -> dict[str, Any]:
        try:
            return self.manifest["parts"][part]
        except KeyError:
            raise KeyError(f"{self.root / MANIFEST}: part {part!r} not exported (have {sorted(self.sessions)})") from None

    def receptive_field(self, part: str) -> tuple[int, int]:
        """(left, right): output frame t needs code rows t - left .. t + right."""
        left, right = self._entry(part)["receptive_field"]
        return int(left), int(right)

    def code_dim(self, part: str) -> int:
        return int(self._entry(part)["code_dim"])

    def out_dim(self, part: str) -> int:
        return int(self._entry(part)["out_dim"])

    def norm(self, part: str) -> tuple[np.ndarray, np.ndarray] | None:
        """(mean, std) of the part's varying channels when the export carries them."""
        e = self._entry(part)
        if "norm_mean" not in e:
            return None
        return np.asarray(e["norm_mean"], np.float32), np.asarray(e["norm_std"], np.float32)

    def decode(self, part: str, zq: np.ndarray) -> np.ndarray:
        """(B, T, code_dim) float32 code vectors -> (B, T, out_dim) normalised channels."""
        e = self._entry(part)
        zq = np.ascontiguousarray(zq, dtype=np.float32)
        if zq.ndim != 3 or zq.shape[2] != e["code_dim"] or zq.shape[1] < 1:
            raise ValueError(f"{self.root / e['file']}: {part} decoder expects (B, T>=1, {e['code_dim']}) codes, "
                             f"got {zq.shape}")
        return self.sessions[part].run(None, {self.manifest["io"]["input"]: zq})[0]


def _fix_hint(source: str | None, root: Path) -> str:
    ck = f"--checkpoint {source} " if source else "--checkpoint <bundle> "
    return f"python -m exporters.onnx {ck}--out {root}"


def _check_graph(sess: Any, entry: dict[str, Any], part: str, f: Path, fail) -> None:
    """Input/output names and static dims of the graph must match the manifest entry."""
    ins, outs = sess.get_inputs(), sess.get_outputs()
    if len(ins) != 1 or len(outs) != 1:
        raise fail(f, f"expected 1 input and 1 output, graph has {len(ins)}/{len(outs)}")
    shape_in, shape_out = ins[0].shape, outs[0].shape
    if len(shape_in) != 3 or shape_in[2] != entry.get("code_dim"):
        raise fail(f, f"graph input {ins[0].name!r} has shape {shape_in}; the manifest says part {part!r} takes "
                      f"(B, T, {entry.get('code_dim')})")
    if len(shape_out) != 3 or shape_out[2] != entry.get("out_dim"):
        raise fail(f, f"graph output has shape {shape_out}; the manifest says (B, T, {entry.get('out_dim')})")
    if isinstance(shape_in[1], int):
        raise fail(f, f"graph input has a fixed frame count {shape_in[1]}; exports need a dynamic T")


def _check_bundle(manifest: dict[str, Any], bundle: Any, fail, mf: Path) -> None:
    """The bundle's VQ files must be those exported, with matching receptive fields and code sizes."""
    files = (manifest.get("source") or {}).get("files") or {}
    for part, vq in bundle.vqs.items():
        entry = (manifest.get("parts") or {}).get(part)
        if entry is None:
            raise fail(mf, f"checkpoint {bundle.root} has part {part!r} but the export does not")
        ck = Path(bundle.root) / f"vq_{part}.safetensors"
        want = (files.get(part) or {}).get("sha256")
        if not want:
            raise fail(mf, f"part {part!r} was exported without a source checkpoint hash, cannot pin it to "
                           f"{bundle.root}")
        if ck.is_file() and file_sha256(ck) != want:
            raise fail(mf, f"part {part!r} was exported from a different checkpoint than {ck} (sha256 mismatch)")
        if list(vq.receptive_field) != list(entry["receptive_field"]) or vq.cfg.code_dim != entry["code_dim"]:
            raise fail(mf, f"part {part!r}: export has receptive field {entry['receptive_field']} / code_dim "
                           f"{entry['code_dim']}, checkpoint {list(vq.receptive_field)} / {vq.cfg.code_dim}")
