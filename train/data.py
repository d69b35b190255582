"""Dataset validation and the window cache.

    python -m train.data check DIR [--person N] [--max-bad-fraction 0.1] [--smooth SIGMA] [--json]
    python -m train.data cache DIR --out CACHE [--window 256] [--stride 64] [--person N] [--force]

``check`` reads every sequence (``train.ingest``), prints each file's findings (file, key, fix) and a summary table
(files ok/warn/rejected, minutes, speakers, per-part constant channels); it exits 1 when a file is rejected.

``cache`` writes, without pickle: ``manifest.json`` (config, source fingerprints, speakers, sequence table,
rejected files), ``motion.npy`` (N, 320) float32, ``features.npy`` (N, 160) float32, ``valid.npy`` (N,) bool and
``stats.npz`` (per-channel mean/std over valid frames, a ``constant`` mask). It is rebuilt when a source file or
the config changes, and a rebuild from the same inputs is byte-identical. Read it with ``train.dataset``.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models import layout, rates
from train.ingest import (
    IngestConfig,
    IngestError,
    Issue,
    Sequence,
    SequenceSource,
    SpeakerTable,
    discover,
    read_sequence,
    read_speaker_label,
)

CACHE_FORMAT = "mhr-window-cache-v2"
CONSTANT_TOL = 1e-6  # a channel whose std over the dataset's valid frames is below this is constant
FACE_CONSTANT_MESSAGE = ("face: nothing to learn (all expr/jaw constant) — the face VQ will be skipped and the "
                         "runtime drives the jaw from the audio envelope")
HASH_FULL_LIMIT = 2 << 20  # files up to 2 MiB are hashed whole; larger ones by their first and last MiB
CACHE_FILES = ("motion.npy", "features.npy", "valid.npy", "audio.npy", "stats.npz")

#: channel groups reported for constant status (indices into the 320-vector)
REPORT_PARTS: dict[str, np.ndarray] = {
    "body": layout.BODY.start + layout.VARYING["body"],
    "hand": layout.VARYING["hand"],
    "face": layout.VARYING["face"],
    "global_rot": np.arange(layout.GLOBAL_ROT.start, layout.GLOBAL_ROT.stop),
    "contact": np.arange(layout.CONTACT.start, layout.CONTACT.stop),
}


# ---- statistics ---------------------------------------------------------------------------------------------------

class ChannelStats:
    """Running per-channel mean/variance (Chan et al. merge, float64): deterministic for a fixed input order."""

    def __init__(self, dim: int):
        self.n = 0
        self.mean = np.zeros(dim)
        self.m2 = np.zeros(dim)

    def add(self, x: np.ndarray) -> None:
        """x: (n, dim) rows to include."""
        x = np.asarray(x, np.float64)
        nb = len(x)
        if nb == 0:
            return
        mb = x.mean(0)
        m2b = ((x - mb) ** 2).sum(0)
        n = self.n + nb
        d = mb - self.mean
        self.mean = self.mean + d * (nb / n)
        self.m2 = self.m2 + m2b + d ** 2 * (self.n * nb / n)
        self.n = n

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self.m2 / max(self.n, 1))

    def constant(self, tol: float = CONSTANT_TOL) -> np.ndarray:
        return self.std < tol


def part_status(stats: ChannelStats, tol: float = CONSTANT_TOL) -> dict[str, dict[str, Any]]:
    """Per reported part: channel count, how many are constant over the dataset, and a status line."""
    const = stats.constant(tol)
    names = layout.channel_names()
    out: dict[str, dict[str, Any]] = {}
    for part, idx in REPORT_PARTS.items():
        c = const[idx] & (stats.n > 0)
        n_c, n = int(c.sum()), len(idx)
        if stats.n == 0:
            status = "no data"
        elif n_c == n:
            status = FACE_CONSTANT_MESSAGE if part == "face" else f"{part}: all {n} channels constant: nothing to learn"
        elif n_c:
            shown = ", ".join(names[i] for i in idx[c][:6]) + (", ..." if n_c > 6 else "")
            status = f"{n_c} of {n} channels constant ({shown})"
        else:
            status = "varying"
        out[part] = {"channels": n, "constant": n_c, "status": status}
    return out


# ---- dataset pass -------------------------------------------------------------------------------------------------

@dataclass
class FileResult:
    """What happened to one sequence: status 'ok' | 'warn' | 'rejected'."""

    name: str
    file: str
    status: str
    issues: list[Issue]
    frames: int = 0
    valid_frames: int = 0
    speaker: int | None = None
    speaker_label: str | int | None = None
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return self.frames / rates.MOTION_FPS

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["issues"] = [i.to_dict() for i in self.issues]
        d["seconds"] = self.seconds
        return d


def _status(issues: list[Issue], rejected: bool) -> str:
    if rejected:
        return "rejected"
    return "warn" if any(i.severity == "warning" for i in issues) else "ok"


def speaker_table(root: Path, sources: list[SequenceSource], speakers_path: str | Path | None
                  ) -> tuple[SpeakerTable, list[Issue]]:
    """speakers.json (``--speakers`` or ROOT/speakers.json) when present, else the labels found in the files."""
    issues: list[Issue] = []
    p = Path(speakers_path) if speakers_path else (root / "speakers.json" if root.is_dir() else None)
    if p is not None and p.is_file():
        try:
            return SpeakerTable.load(p), issues
        except ValueError as e:
            issues.append(Issue("error", str(p), "speakers", str(e), "write speakers.json as a JSON list of names"))
            return SpeakerTable(), issues
    if speakers_path:
        issues.append(Issue("error", str(p), "speakers", "file not found", "pass an existing --speakers file"))
    return SpeakerTable.from_labels([read_speaker_label(s) for s in sources]), issues


@dataclass
class DatasetReport:
    """The outcome of a dataset pass (``check`` or ``cache``)."""

    root: str
    config: dict[str, Any]
    files: list[FileResult]
    dataset_issues: list[Issue]
    speakers: SpeakerTable
    parts: dict[str, dict[str, Any]]

    @property
    def n_rejected(self) -> int:
        return sum(f.status == "rejected" for f in self.files) + sum(
            i.severity == "error" for i in self.dataset_issues)

    def summary(self) -> dict[str, Any]:
        acc = [f for f in self.files if f.status != "rejected"]
        per_speaker: dict[str, int] = {}
        for f in acc:
            key = "unknown" if f.speaker == self.speakers.unknown_id else self.speakers.names[f.speaker]
            per_speaker[key] = per_speaker.get(key, 0) + 1
        return {
            "files": {s: sum(f.status == s for f in self.files) for s in ("ok", "warn", "rejected")},
            "minutes": sum(f.seconds for f in acc) / 60.0,
            "valid_minutes": sum(f.valid_frames for f in acc) / rates.MOTION_FPS / 60.0,
            "speakers": {"n_speakers": self.speakers.n_speakers, "unknown_id": self.speakers.unknown_id,
                         "files_per_speaker": per_speaker},
            "parts": self.parts,
        }

    def to_dict(self) -> dict[str, Any]:
        return {"root": self.root, "config": self.config, "files": [f.to_dict() for f in self.files],
                "dataset_issues": [i.to_dict() for i in self.dataset_issues], "speakers": self.speakers.to_dict(),
                "summary": self.summary()}

    def format_text(self, verbose: bool = True) -> str:
        lines = []
        for f in self.files:
            what = "" if f.status == "rejected" else (
                f" {f.frames} frames ({f.seconds:.1f} s, {f.valid_frames} valid), speaker {f.speaker}")
            lines.append(f"[{f.status:8s}] {f.name}:{what}  <- {f.file}")
            for i in f.issues:
                if verbose or i.severity != "info":
                    lines.append("    " + str(i).replace("\n", "\n    "))
            hb, ha = f.report.get("hf_energy_before"), f.report.get("hf_energy_after")
            if hb and ha and hb != ha:
                lines.append("    smoothing, high-frequency energy before -> after: " + ", ".join(
                    f"{k} {hb[k]:.3g} -> {ha[k]:.3g}" for k in hb))
        for i in self.dataset_issues:
            lines.append(str(i))
        s = self.summary()
        fc = s["files"]
        lines += ["", "summary", "-------",
                  f"files      {fc['ok']} ok, {fc['warn']} warn, {fc['rejected']} rejected",
                  f"minutes    {s['minutes']:.2f} ({s['valid_minutes']:.2f} valid)",
                  f"speakers   {s['speakers']['n_speakers']} named (+ unknown id {s['speakers']['unknown_id']}); "
                  + ", ".join(f"{k}: {v}" for k, v in sorted(s['speakers']['files_per_speaker'].items())),
                  "", f"{'part':11s}{'channels':>9s}{'constant':>10s}  status"]
        for part, d in self.parts.items():
            lines.append(f"{part:11s}{d['channels']:>9d}{d['constant']:>10d}  {d['status']}")
        return "\n".join(lines)


class DatasetPass:
    """One ordered pass over a dataset: discovery, the speaker table, reading every sequence, channel statistics."""

    def __init__(self, root: str | Path, config: IngestConfig = IngestConfig(),
                 speakers_path: str | Path | None = None):
        self.root = Path(root)
        self.config = config
        self.sources = discover(self.root)
        self.speakers, self.dataset_issues = speaker_table(self.root, self.sources, speakers_path)
        self.files: list[FileResult] = []
        self.stats = ChannelStats(layout.DIM)
        names = [s.name for s in self.sources]
        for n in sorted({n for n in names if names.count(n) > 1}):
            self.dataset_issues.append(Issue("warning", str(self.root), "name", f"two sources are named {n!r} "
                                             "(an npz and a folder?)", "rename one of them"))
        if not self.sources:
            self.dataset_issues.append(Issue("error", str(self.root), "-", "no sequence found (no .npz files)",
                                             "point at a folder of NAME.npz + NAME.wav pairs or per-frame folders"))

    def __iter__(self) -> Iterator[tuple[SequenceSource, Sequence | None, FileResult]]:
        speaker_error = any(i.severity == "error" and i.key == "speakers" for i in self.dataset_issues)
        for src in self.sources:
            if speaker_error:
                r = FileResult(src.name, str(src.path), "rejected", [Issue(
                    "error", str(src.path), "speaker", "the speaker table could not be read", "fix speakers.json")])
                self.files.append(r)
                yield src, None, r
                continue
            try:
                seq = read_sequence(src, self.config, self.speakers)
            except IngestError as e:
                r = FileResult(src.name, str(src.path), "rejected", e.issues)
                self.files.append(r)
                yield src, None, r
                continue
            r = FileResult(src.name, str(src.path), _status(seq.issues, False), seq.issues, seq.n_frames,
                           int(seq.valid.sum()), seq.speaker, seq.speaker_label, seq.report)
            self.stats.add(seq.motion[seq.valid])
            self.files.append(r)
            yield src, seq, r

    def report(self) -> DatasetReport:
        parts = part_status(self.stats)
        issues = list(self.dataset_issues)
        if self.stats.n:
            for part, d in parts.items():
                if part == "face" and d["constant"] == d["channels"]:
                    issues.append(Issue("warning", str(self.root), "expr_params/jaw", FACE_CONSTANT_MESSAGE,
                                        "nothing to do for SAM 3D Body data (it zeroes expression and jaw)"))
                elif d["constant"] and part != "contact":
                    issues.append(Issue("info", str(self.root), part, d["status"], ""))
        return DatasetReport(str(self.root), self.config.to_dict(), self.files, issues, self.speakers, parts)


def check_dataset(root: str | Path, config: IngestConfig = IngestConfig(), speakers_path: str | Path | None = None,
                  progress: bool = False) -> DatasetReport:
    """Read every sequence under ``root`` and report (nothing is written)."""
    dp = DatasetPass(root, config, speakers_path)
    for _ in _progress(dp, len(dp.sources), "check", progress):
        pass
    return dp.report()


def _progress(it, total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(it, total=total, desc=desc, unit="seq", disable=not enabled, dynamic_ncols=True, file=sys.stderr)


# ---- the cache ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CacheConfig:
    """Everything the cache content depends on (a change rebuilds it)."""

    ingest: IngestConfig = IngestConfig()
    window: int = 256
    stride: int = 64

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": CACHE_FORMAT, "layout_version": layout.LAYOUT_VERSION, "ingest": self.ingest.to_dict(),
            "window": self.window, "stride": self.stride,
            "features": {"kind": "causal-logmel", "sample_rate": rates.MODEL_SAMPLE_RATE, "fps": rates.MOTION_FPS,
                         "samples_per_frame": rates.SAMPLES_PER_FRAME, "hop": rates.HOP_LENGTH,
                         "win": rates.WIN_LENGTH, "n_fft": rates.N_FFT, "n_mels": rates.N_MELS,
                         "fmin": rates.MEL_FMIN, "fmax": rates.MEL_FMAX, "dim": rates.FEATURE_DIM},
            "constant_tol": CONSTANT_TOL,
        }


@dataclass
class CacheResult:
    """``rebuilt`` False when the existing cache was current (``reason`` says why a rebuild happened)."""

    path: Path
    rebuilt: bool
    reason: str
    manifest: dict[str, Any]
    report: DatasetReport | None = None


def file_fingerprint(p: Path) -> dict[str, Any]:
    """size, mtime_ns and sha1 (whole file up to 2 MiB, else first + last MiB)."""
    st = p.stat()
    h = hashlib.sha1()
    with open(p, "rb") as f:
        if st.st_size <= HASH_FULL_LIMIT:
            kind = "full"
            h.update(f.read())
        else:
            kind = "head_tail_1MiB"
            h.update(f.read(1 << 20))
            f.seek(-(1 << 20), os.SEEK_END)
            h.update(f.read(1 << 20))
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha1": h.hexdigest(), "hash": kind}


def source_fingerprints(root: Path, sources: list[SequenceSource], speakers_path: str | Path | None
                        ) -> dict[str, Any]:
    files: set[Path] = set()
    for s in sources:
        files.update(s.files())
    sp = Path(speakers_path) if speakers_path else (root / "speakers.json" if root.is_dir() else None)
    if sp is not None and sp.is_file():
        files.add(sp)
    base = root if root.is_dir() else root.parent

    def rel(p: Path) -> str:
        try:
            return p.resolve().relative_to(base.resolve()).as_posix()
        except ValueError:
            return str(p.resolve())

    return {rel(p): file_fingerprint(p) for p in sorted(files, key=rel)}


def _manifest_path(out: Path) -> Path:
    return out / "manifest.json"


def cache_status(root: str | Path, out: str | Path, config: CacheConfig = CacheConfig(),
                 speakers_path: str | Path | None = None) -> str | None:
    """None when ``out`` holds a current cache of ``root`` built with ``config``; else the reason to rebuild."""
    root, out = Path(root), Path(out)
    mp = _manifest_path(out)
    if not mp.is_file():
        return "no manifest"
    try:
        man = json.loads(mp.read_text())
    except ValueError:
        return "unreadable manifest"
    if man.get("config") != _jsonable(config.to_dict()):
        return "config changed"
    if man.get("root") != str(root.resolve()):
        return "dataset folder changed"
    if any(not (out / f).is_file() for f in CACHE_FILES):
        return "array file missing"
    now = source_fingerprints(root, discover(root), speakers_path)
    old = man.get("sources", {})
    if now != old:
        changed = sorted(k for k in set(now) | set(old) if now.get(k) != old.get(k))
        return f"source files changed: {', '.join(changed[:5])}" + (" ..." if len(changed) > 5 else "")
    return None


def _jsonable(x: Any) -> Any:
    return json.loads(json.dumps(x))


def save_npz_deterministic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """np.savez without timestamps (fixed zip dates, sorted keys, no compression): same arrays -> same bytes."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for k in sorted(arrays):
            info = zipfile.ZipInfo(k + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED
            info.external_attr = 0o644 << 16
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arrays[k]), allow_pickle=False)
            zf.writestr(info, buf.getvalue())


def _raw_to_npy(raw: Path, npy: Path, dtype: str, shape: tuple[int, ...]) -> None:
    with open(npy, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                                 "fortran_order": False, "shape": shape})
        with open(raw, "rb") as r:
            shutil.copyfileobj(r, f, 1 << 20)


def audio_features(audio: np.ndarray, chunk_frames: int = 1800) -> np.ndarray:
    """(T * 800,) model-rate audio -> (T, 160) float32 causal log-mel, computed in chunks (== whole file)."""
    import torch

    from models.features import LogMelFeatures

    fe = LogMelFeatures()
    step = chunk_frames * rates.SAMPLES_PER_FRAME
    outs, state = [], None
    with torch.no_grad():
        for s in range(0, len(audio), step):
            f, state = fe(torch.from_numpy(np.ascontiguousarray(audio[s:s + step], np.float32))[None], state)
            outs.append(f[0].numpy())
    if not outs:
        return np.zeros((0, rates.FEATURE_DIM), np.float32)
    return np.concatenate(outs).astype(np.float32)


def build_cache(root: str | Path, out: str | Path, config: CacheConfig = CacheConfig(),
                speakers_path: str | Path | None = None, force: bool = False, progress: bool = True) -> CacheResult:
    """Build (or reuse) the window cache of ``root`` in ``out``. See the module docstring for the files."""
    root, out = Path(root), Path(out)
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such dataset folder")
    reason = "forced" if force else cache_status(root, out, config, speakers_path)
    if reason is None:
        return CacheResult(out, False, "current", json.loads(_manifest_path(out).read_text()))
    out.mkdir(parents=True, exist_ok=True)
    _manifest_path(out).unlink(missing_ok=True)  # a half-built cache is never taken for a current one
    tmp = out / ".build"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    dp = DatasetPass(root, config.ingest, speakers_path)
    fingerprints = source_fingerprints(root, dp.sources, speakers_path)
    fstats = ChannelStats(rates.FEATURE_DIM)
    table, rejected = [], []
    n = 0
    base = root if root.is_dir() else root.parent
    with open(tmp / "motion.raw", "wb") as fm, open(tmp / "features.raw", "wb") as ff, \
            open(tmp / "valid.raw", "wb") as fv, open(tmp / "audio.raw", "wb") as fa:
        for src, seq, res in _progress(dp, len(dp.sources), "cache", progress):
            if seq is None:
                rejected.append({"name": res.name, "file": res.file, "issues": [i.to_dict() for i in res.issues]})
                continue
            feats = audio_features(seq.audio)
            if len(feats) != seq.n_frames:
                raise RuntimeError(f"{src.path}: {len(feats)} feature rows for {seq.n_frames} frames")
            fm.write(np.ascontiguousarray(seq.motion, np.float32).tobytes())
            ff.write(np.ascontiguousarray(feats, np.float32).tobytes())
            fv.write(np.ascontiguousarray(seq.valid, np.bool_).tobytes())
            if len(seq.audio) != seq.n_frames * rates.SAMPLES_PER_FRAME:
                raise RuntimeError(f"{src.path}: {len(seq.audio)} audio samples for {seq.n_frames} frames")
            # model-rate audio as int16 (frame k <-> samples [800k, 800k + 800)): training recomputes features
            # from it after waveform augmentation
            fa.write(np.round(np.clip(seq.audio, -1, 1) * 32767).astype("<i2").tobytes())
            fstats.add(feats[seq.valid])
            table.append({
                "name": seq.name, "start": n, "length": seq.n_frames, "valid_frames": int(seq.valid.sum()),
                "speaker": seq.speaker, "speaker_label": seq.speaker_label, "person": seq.person,
                "source_fps": seq.source_fps, "constants": seq.constants.to_dict(),
                "files": [_rel(p, base) for p in seq.files],
                "issues": [i.to_dict() for i in seq.issues if i.severity != "info"], "report": seq.report,
            })
            n += seq.n_frames
    _raw_to_npy(tmp / "motion.raw", tmp / "motion.npy", "<f4", (n, layout.DIM))
    _raw_to_npy(tmp / "features.raw", tmp / "features.npy", "<f4", (n, rates.FEATURE_DIM))
    _raw_to_npy(tmp / "valid.raw", tmp / "valid.npy", "|b1", (n,))
    _raw_to_npy(tmp / "audio.raw", tmp / "audio.npy", "<i2", (n * rates.SAMPLES_PER_FRAME,))
    st = dp.stats
    save_npz_deterministic(tmp / "stats.npz", {
        "mean": st.mean.astype(np.float32), "std": st.std.astype(np.float32),
        "constant": st.constant(CONSTANT_TOL), "count": np.array(st.n, np.int64),
        "constant_tol": np.array(CONSTANT_TOL, np.float64),
        "features_mean": fstats.mean.astype(np.float32), "features_std": fstats.std.astype(np.float32),
    })
    for f in CACHE_FILES:
        os.replace(tmp / f, out / f)
    shutil.rmtree(tmp, ignore_errors=True)
    report = dp.report()
    manifest = {
        "format": CACHE_FORMAT, "layout_version": layout.LAYOUT_VERSION, "config": config.to_dict(),
        "root": str(root.resolve()), "sources": fingerprints, "speakers": dp.speakers.to_dict(),
        "n_frames": n, "n_valid_frames": int(st.n),
        "arrays": {"motion": [n, layout.DIM, "float32"], "features": [n, rates.FEATURE_DIM, "float32"],
                   "valid": [n, "bool"], "audio": [n * rates.SAMPLES_PER_FRAME, "int16"]},
        "sequences": table, "rejected": rejected, "parts": report.parts,
        "dataset_issues": [i.to_dict() for i in report.dataset_issues],
    }
    text = json.dumps(_jsonable(manifest), indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    tmp_manifest = out / "manifest.json.tmp"
    tmp_manifest.write_text(text, encoding="utf-8")
    os.replace(tmp_manifest, _manifest_path(out))
    return CacheResult(out, True, reason, json.loads(text), report)


def _rel(p: Path, base: Path) -> str:
    try:
        return p.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return str(p)


# ---- CLI ----------------------------------------------------------------------------------------------------------

def _add_ingest_args(p: argparse.ArgumentParser) -> None:
    d = IngestConfig()
    p.add_argument("dir", help="dataset folder (NAME.npz + NAME.wav pairs and/or per-frame folders), one .npz, "
                   "or one per-frame folder")
    p.add_argument("--person", type=int, default=None, help="person (track id, or index on the person axis) to "
                   "take from multi-person files (default: the one with most valid frames)")
    p.add_argument("--max-bad-fraction", type=float, default=d.max_bad_fraction,
                   help="reject a file with more NaN/Inf or missing frames than this fraction (default %(default)s)")
    p.add_argument("--audio-tolerance", type=float, default=d.audio_tolerance_s,
                   help="audio/motion length mismatch (s) trimmed with a warning; rejected beyond (default "
                        "%(default)s)")
    p.add_argument("--contact-threshold", type=float, default=d.contact_threshold_cm,
                   help="foot contact when the joint moves less than this many cm per frame at 30 fps "
                        "(default %(default)s)")
    p.add_argument("--smooth", type=float, default=0.0, metavar="SIGMA_FRAMES",
                   help="Gaussian smoothing of estimation jitter, sigma in frames (default 0 = off)")
    p.add_argument("--default-fps", type=float, default=d.default_fps,
                   help="frame rate of files without an `fps` key (default %(default)s)")
    p.add_argument("--speakers", default=None, help="speakers.json (default: DIR/speakers.json when present)")


def _ingest_config(a: argparse.Namespace) -> IngestConfig:
    return IngestConfig(person=a.person, max_bad_fraction=a.max_bad_fraction, audio_tolerance_s=a.audio_tolerance,
                        contact_threshold_cm=a.contact_threshold, smooth_sigma=a.smooth, default_fps=a.default_fps)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m train.data", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    pc = sub.add_parser("check", help="validate a dataset: per-file findings + summary; exit 1 if a file is "
                        "rejected")
    _add_ingest_args(pc)
    pc.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    pc.add_argument("--quiet", action="store_true", help="hide info lines")
    pk = sub.add_parser("cache", help="build the window cache (rebuilt only when sources or config change)")
    _add_ingest_args(pk)
    pk.add_argument("--out", required=True, help="cache folder")
    pk.add_argument("--window", type=int, default=256, help="default training window in frames (default %(default)s)")
    pk.add_argument("--stride", type=int, default=64, help="default window stride in frames (default %(default)s)")
    pk.add_argument("--force", action="store_true", help="rebuild even when the cache is current")
    pk.add_argument("--strict", action="store_true", help="exit 1 when any file is rejected")
    a = ap.parse_args(argv)
    cfg = _ingest_config(a)
    try:
        if a.cmd == "check":
            rep = check_dataset(a.dir, cfg, a.speakers, progress=not a.json)
            if a.json:
                print(json.dumps(_jsonable(rep.to_dict()), indent=1))
            else:
                print(rep.format_text(verbose=not a.quiet))
            return 1 if rep.n_rejected else 0
        res = build_cache(a.dir, a.out, CacheConfig(cfg, a.window, a.stride), a.speakers, force=a.force)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not res.rebuilt:
        print(f"{res.path}: cache is current ({res.manifest['n_frames']} frames, "
              f"{len(res.manifest['sequences'])} sequences); --force to rebuild")
        return 0
    print(res.report.format_text(verbose=False))
    m = res.manifest
    print(f"\nwrote {res.path} ({res.reason}): {m['n_frames']} frames, {len(m['sequences'])} sequences, "
          f"{len(m['rejected'])} rejected")
    if not m["sequences"]:
        print("error: no usable sequence: nothing to train on", file=sys.stderr)
        return 1
    return 1 if (a.strict and m["rejected"]) else 0


if __name__ == "__main__":
    sys.exit(main())
