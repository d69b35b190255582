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


def session_options(threads: int | None = None):
    """ONNX Runtime options: full graph optimisation, ``threads`` intra-op threads (default: torch's), 1 inter-op."""
    import onnxruntime as ort
    import torch

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = int(threads) if threads else max(1, torch.get_num_threads())
    opts.inter_op_num_threads = 1
    # per-frame graphs are tiny: spinning worker threads only burn the CPU other sessions need
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


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
            threads: intra-op threads per session (default: ``torch.get_num_threads()``, so the ONNX and PyTorch
                parts of the runtime use the same cores).
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
        opts = session_options(threads)
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
            have = sorted(self.sessions)
            raise KeyError(f"{self.root / MANIFEST}: part {part!r} not exported (have {have})") from None

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


class OnnxGenerator:
    """The generator's streaming step in ONNX Runtime, a drop-in for ``MambaTalkMHR.step`` in the runtime.

    ``step(audio (B, T, 160), speaker (B,), state) -> (GeneratorOutput, GeneratorState)`` with torch tensors, as
    the PyTorch model; the graph takes ``chunk_frames`` frames per call (1), so T frames are T calls. The motion seed
    (``motion``/``mask``) is not part of the graph: seeded generation stays on PyTorch.

    Attributes:
        config: the generator's ``GeneratorConfig``.
        providers: execution providers in use.
    """

    name = "onnx"

    def __init__(self, root: Path, entry: dict[str, Any], session: Any):
        from models.generator import GeneratorConfig

        self.root, self.entry, self.session = root, entry, session
        self.config = GeneratorConfig.from_dict(entry["config"])
        self.providers = list(session.get_providers())
        self.chunk_frames = int(entry["chunk_frames"])

    @classmethod
    def load(cls, root: str | Path, providers: list[str] | None = None, *, bundle: Any = None,
             threads: int | None = None) -> OnnxGenerator:
        """Open ``generator_step.onnx`` of an export directory; with ``bundle`` its generator file must match."""
        import onnxruntime as ort

        root = Path(root)
        mf = root / MANIFEST
        if not mf.is_file():
            raise OnnxExportMismatch(f"{mf}: ONNX export manifest not found; re-export with "
                                     f"`{_fix_hint(None, root)} --generator`")
        manifest = json.loads(mf.read_text())
        source = (manifest.get("source") or {}).get("checkpoint")
        fix = f"{_fix_hint(source, root)} --generator"
        if manifest.get("layout_version") != LAYOUT_VERSION or manifest.get("format") != FORMAT:
            raise OnnxExportMismatch(f"{mf}: format/layout {manifest.get('format')!r}/"
                                     f"{manifest.get('layout_version')!r} is not {FORMAT!r}/{LAYOUT_VERSION!r}; "
                                     f"re-export with `{fix}`")
        entry = manifest.get("generator")
        if not entry:
            raise OnnxExportMismatch(f"{mf}: no generator step exported; re-export with `{fix}`")
        f = root / entry["file"]
        if not f.is_file():
            raise OnnxExportMismatch(f"{f}: generator step graph not found; re-export with `{fix}`")
        if file_sha256(f) != entry.get("sha256"):
            raise OnnxExportMismatch(f"{f}: sha256 differs from the manifest (file truncated, corrupted or replaced); "
                                     f"re-export with `{fix}`")
        if bundle is not None:
            gen_file = Path(bundle.root) / bundle.manifest.get("generator", "generator.safetensors")
            want = (entry.get("source") or {}).get("sha256")
            if not want or not gen_file.is_file() or file_sha256(gen_file) != want:
                raise OnnxExportMismatch(f"{mf}: the generator step was exported from a different checkpoint than "
                                         f"{gen_file}; re-export with `{fix}`")
        opts = session_options(threads)
        try:
            sess = ort.InferenceSession(str(f), sess_options=opts, providers=providers or default_providers())
        except Exception as e:  # noqa: BLE001
            raise OnnxExportMismatch(f"{f}: ONNX Runtime cannot load it ({type(e).__name__}: {str(e)[:200]}); "
                                     f"re-export with `{fix}`") from e
        names = [i.name for i in sess.get_inputs()]
        if names != entry["inputs"]:
            raise OnnxExportMismatch(f"{f}: graph inputs {names} differ from the manifest; re-export with `{fix}`")
        return cls(root, entry, sess)

    def init_state(self, batch_size: int, device: Any = None):
        """Fresh (zero) ``GeneratorState`` for ``batch_size`` streams (CPU tensors)."""
        import torch

        from models.generator import GeneratorState
        from models.mamba import MambaState

        zeros = iter([torch.zeros(batch_size, *s["shape"]) for s in self.entry["state"]])
        st = self.entry["structure"]
        audio = [next(zeros) for _ in range(st["audio_tails"])]
        motion = [next(zeros) for _ in range(st["motion_tails"])]
        mamba = {k: [MambaState(next(zeros), next(zeros)) for _ in range(n)] for k, n in st["mamba"].items()}
        return GeneratorState(audio, motion, mamba, 0)

    def step(self, audio, speaker, state, motion=None, mask=None):
        """Same contract as ``MambaTalkMHR.step`` (without the motion seed); returns (GeneratorOutput, state)."""
        import torch

        from models.generator import GeneratorOutput

        cfg = self.config
        if motion is not None or mask is not None:
            raise NotImplementedError("the ONNX generator step has no motion-seed input; use the PyTorch generator "
                                      "for seeded generation")
        a = np.ascontiguousarray(np.asarray(audio, dtype=np.float32))
        spk = np.asarray(speaker).astype(np.int64).reshape(-1)
        if a.ndim != 3 or a.shape[2] != cfg.audio_dim or a.shape[1] < 1 or a.shape[1] % self.chunk_frames:
            raise ValueError(f"audio must be (B, T, {cfg.audio_dim}) with T a multiple of {self.chunk_frames}, got "
                             f"{a.shape}")
        if not np.isfinite(a).all():
            raise ValueError("audio features contain NaN/Inf: check the audio/feature pipeline (models.features)")
        if spk.shape != (a.shape[0],) or spk.min() < 0 or spk.max() > cfg.n_speakers:
            raise ValueError(f"speaker must be ({a.shape[0]},) ids in [0, {cfg.n_speakers}], got {spk.tolist()}")
        tensors = [t.detach().cpu().numpy().astype(np.float32) for t in state.tensors()]
        if tensors[0].shape[0] != a.shape[0]:
            raise ValueError(f"state is for batch {tensors[0].shape[0]}, audio has batch {a.shape[0]}")
        n_state = len(self.entry["state"])
        outs = []
        for t0 in range(0, a.shape[1], self.chunk_frames):
            res = self.session.run(None, {"audio": a[:, t0:t0 + self.chunk_frames], "speaker": spk,
                                          **dict(zip(self.entry["inputs"][2:], tensors))})
            outs.append(res[:len(res) - n_state])
            tensors = res[len(res) - n_state:]
        cat = [torch.from_numpy(np.concatenate(col, 1)) for col in zip(*outs)]
        parts, lparts = self.entry["parts"], self.entry["logit_parts"]
        latents = dict(zip(parts, cat[:len(parts)]))
        logits = dict(zip(lparts, cat[len(parts):len(parts) + len(lparts)]))
        out = GeneratorOutput(latents, logits, cat[-2], cat[-1])
        return out, state.with_tensors([torch.from_numpy(t) for t in tensors], frames=state.frames + a.shape[1])
