"""Read one talking-video sequence (SAM 3D Body output + its audio) into an MHR-native training ``Sequence``.

Two on-disk forms (see docs/DATA.md):

* stacked: ``NAME.npz`` with a leading T axis (optionally a person axis: ``(T, P, ...)``) + ``NAME.wav``/``.flac``;
* per-frame: a folder of SAM 3D Body demo dicts (``frame_000001.npz`` ..., no T axis, optionally ``(P, ...)`` people)
  with ``FOLDER.wav`` beside the folder or one audio file inside it.

Every file is read with ``np.load(allow_pickle=False)``: a file (or a key we use) that needs pickle is refused.
Inputs are never written: every array is copied before it is modified. Problems come back as ``Issue`` objects that
name the file, the key and the fix; a rejected sequence raises ``IngestError`` carrying all its issues.

Processing order: person selection -> NaN/Inf and missing frames masked (valid=False, filled from neighbours) ->
``models.layout.from_sam3d`` -> angle unwrapping -> resampling to 30 fps -> optional smoothing -> foot contact ->
audio alignment (trim within a tolerance, reject beyond).
"""
from __future__ import annotations

import math
import os
import re
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models import rates
from models.audio import AudioReport, load_audio, resample, sanitize, to_mono_float
from models.layout import (
    CONTACT,
    DIM,
    SessionConstants,
    from_sam3d,
)
from models.rig import N_JOINTS
from train.motion_ops import (  # re-exported: part of the ingestion API
    camera_joints_to_native,
    contact_joint_ids,
    fill_invalid,
    foot_contact,
    foot_joints_fk,
    gaussian_smooth,
    high_freq_energy,
    resample_linear,
    resample_motion,
    smooth_motion,
    unwrap_motion,
)
from train.speakers import SpeakerTable, normalize_speaker_label  # re-exported

AUDIO_EXTS = (".wav", ".flac", ".ogg")

#: per-frame keys (shape of one frame for one person)
FRAME_KEYS: dict[str, tuple[int, ...]] = {
    "global_rot": (3,), "body_pose_params": (133,), "hand_pose_params": (108,), "expr_params": (72,),
    "pred_cam_t": (3,),
}
#: keys that may be per frame or one value for the whole sequence
MAYBE_CONSTANT_KEYS: dict[str, tuple[int, ...]] = {"scale_params": (28,), "shape_params": (45,), "focal_length": ()}
OPTIONAL_FRAME_KEYS: dict[str, tuple[int, ...]] = {"mhr_model_params": (204,), "pred_joint_coords": (127, 3)}
REQUIRED_KEYS = tuple(FRAME_KEYS) + ("scale_params", "shape_params")
META_KEYS = ("image_size", "image_width", "image_height", "fps", "valid", "speaker", "frame_indices",
             "person_index", "track_ids")
USED_KEYS = tuple(FRAME_KEYS) + tuple(MAYBE_CONSTANT_KEYS) + tuple(OPTIONAL_FRAME_KEYS) + META_KEYS

KEY_HELP = {
    "global_rot": "(T, 3) Euler XYZ root rotation, SAM 3D Body's `global_rot`",
    "body_pose_params": "(T, 133) SAM 3D Body's `body_pose_params`",
    "hand_pose_params": "(T, 108) SAM 3D Body's `hand_pose_params` (left 54 | right 54)",
    "expr_params": "(T, 72) SAM 3D Body's `expr_params` (zeros are fine)",
    "pred_cam_t": "(T, 3) SAM 3D Body's `pred_cam_t` (metres, camera frame)",
    "scale_params": "(T, 28) or (28,) SAM 3D Body's `scale_params`",
    "shape_params": "(T, 45) or (45,) SAM 3D Body's `shape_params`",
    "focal_length": "(T,) or () SAM 3D Body's `focal_length` in pixels",
    "mhr_model_params": "(T, 204) SAM 3D Body's `mhr_model_params`",
    "pred_joint_coords": "(T, 127, 3) SAM 3D Body's `pred_joint_coords` (metres, camera axes)",
}



# ---- issues ------------------------------------------------------------------------------------------------------

@dataclass
class Issue:
    """One finding about one file: ``severity`` is 'info', 'warning' or 'error' (an error rejects the file)."""

    severity: str
    file: str
    key: str
    message: str
    fix: str = ""

    def __str__(self) -> str:
        s = f"{self.severity.upper():7s} {self.file} [{self.key}]: {self.message}"
        return s + (f"\n        fix: {self.fix}" if self.fix else "")

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


class IngestError(Exception):
    """A sequence was rejected; ``issues`` holds every finding (errors and the warnings gathered so far)."""

    def __init__(self, issues: list[Issue]):
        self.issues = list(issues)
        errors = [str(i) for i in self.issues if i.severity == "error"] or ["rejected"]
        super().__init__("\n".join(errors))


class _Issues(list):
    """A list of Issue with helpers bound to one file."""

    def __init__(self, file: str):
        super().__init__()
        self.file = file

    def add(self, severity: str, key: str, message: str, fix: str = "") -> None:
        self.append(Issue(severity, self.file, key, message, fix))

    @property
    def has_errors(self) -> bool:
        return any(i.severity == "error" for i in self)

    def raise_if_errors(self) -> None:
        if self.has_errors:
            raise IngestError(list(self))


# ---- configuration / results --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class IngestConfig:
    """How sequences are read. All fields end up in the cache manifest (a change rebuilds the cache).

    Attributes:
        person: person to take from multi-person files (a track id when the file has ``track_ids``/``person_index``,
            else the index on the person axis); None = the person with most valid frames.
        max_bad_fraction: a file with more NaN/Inf or missing frames than this fraction is rejected.
        audio_tolerance_s: audio/motion length mismatch trimmed (with a warning) up to this; rejected beyond.
        contact_threshold_cm: a foot joint slower than this (cm per frame at 30 fps, native MHR frame) is in contact.
        smooth_sigma: Gaussian smoothing of per-frame estimation jitter, in frames at 30 fps (0 = off).
        default_fps: frame rate assumed when a file has no ``fps`` key.
        min_fps: files below this frame rate are rejected (too coarse to resample to 30 fps).
    """

    person: int | None = None
    max_bad_fraction: float = 0.1
    audio_tolerance_s: float = 0.5
    contact_threshold_cm: float = 1.0
    smooth_sigma: float = 0.0
    default_fps: float = float(rates.MOTION_FPS)
    min_fps: float = 10.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Sequence:
    """One ingested sequence at 30 fps, ready for the cache.

    Attributes:
        name: sequence name (path relative to the dataset root, no suffix).
        motion: (T, 320) float32 MHR layout, angles unwrapped, contact filled.
        constants: per-sequence ``SessionConstants`` (means over valid frames).
        valid: (T,) bool; False for NaN/Inf, missing or file-marked-invalid frames (their motion is interpolated).
        speaker: speaker index; ``SpeakerTable.unknown_id`` (= n_speakers) when unknown.
        audio: (T * 800,) float32 at the model rate (24 kHz), aligned with the motion.
        fps: motion frame rate (always 30).
        issues: everything noticed while reading (info and warnings; errors raise ``IngestError``).
    """

    name: str
    motion: np.ndarray
    constants: SessionConstants
    valid: np.ndarray
    speaker: int
    audio: np.ndarray
    fps: float
    issues: list[Issue] = field(default_factory=list)
    speaker_label: str | int | None = None
    person: int | None = None
    source_fps: float = float(rates.MOTION_FPS)
    files: list[Path] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def n_frames(self) -> int:
        return int(self.motion.shape[0])


@dataclass(frozen=True)
class SequenceSource:
    """Where one sequence lives: a stacked npz or a per-frame folder, and its audio (None when not found)."""

    name: str
    path: Path
    kind: str  # 'stacked' | 'frames'
    audio: Path | None

    def files(self) -> list[Path]:
        """Every file the sequence is read from (for change detection)."""
        fs = sorted(self.path.glob("*.npz")) if self.kind == "frames" else [self.path]
        return fs + ([self.audio] if self.audio is not None else [])


# ---- discovery ----------------------------------------------------------------------------------------------------

def _audio_beside(stem_path: Path) -> Path | None:
    for ext in AUDIO_EXTS:
        p = stem_path.with_name(stem_path.name + ext)
        if p.is_file():
            return p
    return None


def _peek_frame_ndim(npz: Path) -> int | None:
    try:
        with np.load(npz, allow_pickle=False) as z:
            if "global_rot" in z.files:
                return int(z["global_rot"].ndim)
    except Exception:  # noqa: BLE001 - a peek only; the real read reports the problem
        return None
    return None


def _frame_folder_audio(d: Path) -> tuple[bool, Path | None]:
    """(is a per-frame folder, its audio). A folder is per-frame when no npz in it has a same-stem audio and it has
    its audio (FOLDER.wav beside it or one audio file inside), or its first npz holds a single frame (no T axis)."""
    npzs = sorted(d.glob("*.npz"))
    if not npzs:
        return False, None
    if any(_audio_beside(p.with_suffix("")) for p in npzs):
        return False, None
    audio = _audio_beside(d)
    if audio is None:
        inside = sorted(p for p in d.iterdir() if p.suffix.lower() in AUDIO_EXTS and p.is_file())
        audio = inside[0] if len(inside) == 1 else None
    if audio is not None:
        return True, audio
    return _peek_frame_ndim(npzs[0]) == 1, None


def discover(root: str | Path) -> list[SequenceSource]:
    """Every sequence under ``root`` (a dataset folder, a single npz, or one per-frame folder), sorted by name."""
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such file or folder")
    if root.is_file():
        if root.suffix != ".npz":
            raise ValueError(f"{root}: expected a .npz sequence or a folder of them")
        return [SequenceSource(root.stem, root, "stacked", _audio_beside(root.with_suffix("")))]
    is_frames, audio = _frame_folder_audio(root)
    if is_frames:
        return [SequenceSource(root.name, root, "frames", audio)]
    out: list[SequenceSource] = []
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        dirnames.sort()
        if d != root:
            is_frames, audio = _frame_folder_audio(d)
            if is_frames:
                out.append(SequenceSource(d.relative_to(root).as_posix(), d, "frames", audio))
                dirnames[:] = []
                continue
        for fn in sorted(filenames):
            if fn.endswith(".npz"):
                p = d / fn
                out.append(SequenceSource(p.relative_to(root).with_suffix("").as_posix(), p, "stacked",
                                          _audio_beside(p.with_suffix(""))))
    return sorted(out, key=lambda s: s.name)


# ---- loading ------------------------------------------------------------------------------------------------------

def load_npz(path: Path, issues: _Issues, keys: tuple[str, ...] = USED_KEYS, quiet: bool = False
             ) -> dict[str, np.ndarray] | None:
    """Read ``keys`` from an npz without pickle. Returns None (with an error issue) when the file cannot be used."""
    refuse = ("holds Python objects that need pickle to load: refused (unpickling untrusted data can run code)")
    fix = "re-save with plain numeric arrays: np.savez(path, **{key: np.asarray(value, np.float32)})"
    try:
        z = np.load(path, allow_pickle=False)
    except ValueError as e:
        if "pickle" in str(e):
            issues.add("error", "-", "file " + refuse, fix)
        else:
            issues.add("error", "-", f"cannot read ({e})", "re-write the file with np.savez")
        return None
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        issues.add("error", "-", f"cannot read ({e})", "re-write the file with np.savez")
        return None
    if not isinstance(z, np.lib.npyio.NpzFile):
        issues.add("error", "-", "is a single .npy array, not an npz archive of named arrays",
                   "save the SAM 3D Body dict with np.savez(path, **outputs)")
        return None
    out: dict[str, np.ndarray] = {}
    with z:
        for k in keys:
            if k not in z.files:
                continue
            try:
                out[k] = z[k]
            except ValueError as e:
                if "pickle" in str(e):
                    if not quiet:
                        issues.add("error", k, "key " + refuse, fix)
                    return None
                raise
            except (OSError, zipfile.BadZipFile) as e:
                issues.add("error", k, f"cannot read this key ({e})", "re-write the file with np.savez")
                return None
    return out


def read_speaker_label(src: SequenceSource) -> str | int | None:
    """The raw speaker label of a sequence (cheap: reads one key). None when absent or unreadable."""
    path = src.path
    if src.kind == "frames":
        files = sorted(src.path.glob("*.npz"))
        if not files:
            return None
        path = files[0]
    d = load_npz(path, _Issues(str(path)), keys=("speaker",), quiet=True)
    try:
        return normalize_speaker_label(d.get("speaker")) if d else None
    except ValueError:
        return None


def _ranges(idx: np.ndarray, limit: int = 6) -> str:
    """[3,4,5,9] -> 'frames 3-5, 9'."""
    idx = np.asarray(idx, int)
    if idx.size == 0:
        return "no frames"
    breaks = np.flatnonzero(np.diff(idx) != 1) + 1
    parts = []
    for run in np.split(idx, breaks)[:limit]:
        parts.append(f"{run[0]}" if len(run) == 1 else f"{run[0]}-{run[-1]}")
    more = len(breaks) + 1 - limit
    return "frames " + ", ".join(parts) + (f" (+{more} more runs)" if more > 0 else "")


def _bool_valid(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype == bool:
        return a.copy()
    return np.nan_to_num(a.astype(np.float64), nan=0.0) != 0


def _check_keys(arrays: dict[str, np.ndarray], lead: tuple[int, ...], issues: _Issues) -> dict[str, np.ndarray]:
    """Validate shapes against the leading axes ``lead``; returns per-frame arrays broadcast to lead + shape."""
    out: dict[str, np.ndarray] = {}
    T = lead[0] if lead else None
    for k, shp in {**FRAME_KEYS, **OPTIONAL_FRAME_KEYS}.items():
        if k not in arrays:
            continue
        a = arrays[k]
        if a.shape != lead + shp:
            want = "(" + ", ".join(["T"] + (["P"] if len(lead) > 1 else []) + [str(s) for s in shp]) + ")"
            if not lead:
                want = str(shp)
            elif len(lead) == 1 and len(shp) == 0:
                want = "(T,)"
            issues.add("error", k, f"shape {a.shape} but expected {want} with T={T}" + (
                f", P={lead[1]}" if len(lead) > 1 else "") + " (T, P from global_rot)",
                f"store {KEY_HELP.get(k, k)} with one row per video frame")
            continue
        out[k] = a
    for k, shp in MAYBE_CONSTANT_KEYS.items():
        if k not in arrays:
            continue
        a = arrays[k]
        if k == "focal_length" and a.shape[-1:] == (1,):
            a = a[..., 0]
        ok = [lead + shp, shp] + ([lead[:1] + shp] if len(lead) > 1 else [])
        if a.shape not in ok:
            issues.add("error", k, f"shape {a.shape} but expected one of {[tuple(s) for s in ok]} (T={T})",
                       f"store {KEY_HELP[k]}")
            continue
        if a.shape == lead[:1] + shp and len(lead) > 1:
            a = a.reshape(lead[:1] + (1,) + shp)
        out[k] = np.broadcast_to(a, lead + shp)
    _missing(arrays, issues)
    for k, a in out.items():
        if not np.issubdtype(a.dtype, np.number) or np.issubdtype(a.dtype, np.complexfloating):
            issues.add("error", k, f"dtype {a.dtype} is not a real number type",
                       f"store {KEY_HELP.get(k, k)} as float32")
    return out


def _missing(arrays: dict[str, np.ndarray], issues: _Issues) -> None:
    for k in REQUIRED_KEYS:
        if k not in arrays and not any(i.key == k for i in issues):
            issues.add("error", k, "missing key", f"add {KEY_HELP[k]}")


def _meta(arrays: dict[str, np.ndarray], issues: _Issues, default_fps: float) -> dict[str, Any]:
    """fps, image size, speaker label from an array dict."""
    meta: dict[str, Any] = {}
    if "fps" in arrays:
        try:
            fps = float(np.asarray(arrays["fps"], np.float64).reshape(-1)[0])
        except (ValueError, IndexError):
            fps = float("nan")
        meta["fps"] = fps
    else:
        meta["fps"] = float(default_fps)
        issues.add("info", "fps", f"no fps key: assuming {default_fps:g} fps",
                   "store `fps` in the npz (or pass --default-fps)")
    if "image_size" in arrays:
        s = np.asarray(arrays["image_size"]).reshape(-1)
        if s.size < 2:
            issues.add("error", "image_size", f"shape {arrays['image_size'].shape}; expected (2,) = (width, height)",
                       "store image_size as [width, height] in pixels")
        else:
            meta["image_size"] = np.array([int(s[0]), int(s[1])])
    elif "image_width" in arrays and "image_height" in arrays:
        meta["image_size"] = np.array([int(np.asarray(arrays["image_width"]).reshape(-1)[0]),
                                       int(np.asarray(arrays["image_height"]).reshape(-1)[0])])
    else:
        issues.add("warning", "image_size", "no image size: renders assume 1280x720",
                   "store `image_size` = [width, height] (or image_width/image_height)")
    try:
        meta["speaker"] = normalize_speaker_label(arrays.get("speaker"))
    except ValueError as e:
        issues.add("error", "speaker", str(e), "store one speaker per sequence (int id, name, or -1 for unknown)")
    return meta


def _stacked(path: Path, arrays: dict[str, np.ndarray], issues: _Issues
             ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """Stacked npz -> (per-frame arrays (T, P, ...), ids (T, P), present (T, P), file-valid (T, P))."""
    g = arrays.get("global_rot")
    if g is None:
        _missing(arrays, issues)
        issues.raise_if_errors()
    if g.ndim == 1 and g.shape == (3,):
        issues.add("error", "global_rot", "single frame (no T axis): this is a per-frame SAM 3D Body dict",
                   f"put per-frame files in a folder (e.g. {path.stem}/frame_000001.npz) with the audio beside it "
                   f"({path.stem}.wav), or stack them along a new first axis")
        issues.raise_if_errors()
    if g.ndim not in (2, 3) or g.shape[-1] != 3 or g.shape[0] == 0:
        issues.add("error", "global_rot", f"shape {g.shape}; expected (T, 3) or (T, P, 3) with T > 0",
                   f"store {KEY_HELP['global_rot']}")
        issues.raise_if_errors()
    lead = g.shape[:-1]
    T = lead[0]
    per = _check_keys(arrays, lead, issues)
    P = lead[1] if len(lead) > 1 else 1
    valid = np.ones((T, P), bool)
    if "valid" in arrays:
        v = np.asarray(arrays["valid"])
        if v.shape == lead:
            valid = _bool_valid(v).reshape(T, P)
        elif v.shape == (T,):
            valid = np.repeat(_bool_valid(v)[:, None], P, axis=1)
        else:
            issues.add("error", "valid", f"shape {v.shape}; expected {lead}", "store valid as (T,) bool")
    ids = np.tile(np.arange(P), (T, 1))
    id_key = next((k for k in ("track_ids", "person_index") if k in arrays), None)
    if id_key is not None and len(lead) > 1:
        a = np.asarray(arrays[id_key])
        if a.shape == (P,):
            ids = np.tile(a.astype(np.int64), (T, 1))
        elif a.shape == (T, P):
            ids = a.astype(np.int64)
        else:
            issues.add("error", id_key, f"shape {a.shape}; expected ({P},) or ({T}, {P}) track ids per person column",
                       "store one integer track id per person column (-1 for an empty column)")
    present = ids >= 0
    if "frame_indices" in arrays:
        fi = np.asarray(arrays["frame_indices"]).reshape(-1)
        if fi.shape != (T,) or not np.issubdtype(fi.dtype, np.integer) or (T > 1 and np.any(np.diff(fi) <= 0)):
            issues.add("error", "frame_indices", f"shape {fi.shape}, dtype {fi.dtype}: expected ({T},) strictly "
                       "increasing integers", "store the video frame number of each row, ascending")
        elif T > 1 and np.any(np.diff(fi) > 1):
            per, ids, present, valid = _expand_gaps(per, ids, present, valid, fi - fi[0])
            issues.add("warning", "frame_indices", f"{int(fi[-1] - fi[0] + 1 - T)} video frames have no row "
                       "(gaps in frame_indices): inserted as missing (valid=False)",
                       "nothing to do if the person was simply not detected there")
    issues.raise_if_errors()
    if len(lead) == 1:
        per = {k: a[:, None] for k, a in per.items()}
    return per, ids, present, valid


def _expand_gaps(per, ids, present, valid, pos):
    """Place rows at frame positions ``pos``; the frames in the gaps are missing."""
    Tf = int(pos[-1]) + 1
    out = {}
    for k, a in per.items():
        b = np.full((Tf,) + a.shape[1:], np.nan, np.float64)
        b[pos] = a
        out[k] = b
    ids2 = np.full((Tf,) + ids.shape[1:], -1, np.int64)
    ids2[pos] = ids
    pr2 = np.zeros((Tf,) + present.shape[1:], bool)
    pr2[pos] = present
    v2 = np.zeros((Tf,) + valid.shape[1:], bool)
    v2[pos] = valid
    return out, ids2, pr2, v2


_FRAME_NUM = re.compile(r"(\d+)$")


def _frames(folder: Path, issues: _Issues
            ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Per-frame folder -> (per-frame arrays (T, Pmax, ...), ids, present, valid, first frame's meta arrays)."""
    files = sorted(folder.glob("*.npz"))
    if not files:
        issues.add("error", "-", "no .npz frame files in the folder", "write one npz per video frame")
        issues.raise_if_errors()
    nums = [_FRAME_NUM.search(p.stem) for p in files]
    if all(nums):
        order = sorted(range(len(files)), key=lambda i: int(nums[i].group(1)))
        pos = np.array([int(nums[i].group(1)) for i in order])
        if len(set(pos.tolist())) != len(pos):
            issues.add("error", "-", "two frame files have the same frame number", "remove the duplicates")
            issues.raise_if_errors()
        pos = pos - pos[0]
    else:
        order = list(range(len(files)))
        pos = np.arange(len(files))
        issues.add("info", "-", "frame files are not numbered: using name order",
                   "name frames frame_000001.npz, frame_000002.npz, ...")
    files = [files[i] for i in order]
    T = int(pos[-1]) + 1
    frames: list[tuple[int, dict[str, np.ndarray], np.ndarray, np.ndarray | None]] = []
    problems: dict[tuple[str, str], list[str]] = {}
    meta_arrays: dict[str, np.ndarray] = {}
    for p, t in zip(files, pos):
        fi = _Issues(p.name)
        d = load_npz(p, fi)
        if d is None:
            for i in fi:
                problems.setdefault((i.key, i.message), []).append(p.name)
            continue
        g = d.get("global_rot")
        if g is None or g.ndim not in (1, 2) or g.shape[-1] != 3:
            key = "global_rot"
            msg = "missing key" if g is None else f"shape {g.shape}; expected (3,) or (P, 3)"
            problems.setdefault((key, msg), []).append(p.name)
            continue
        lead = () if g.ndim == 1 else g.shape[:1]
        per = _check_keys(d, lead, fi)
        if fi.has_errors:
            for i in fi:
                if i.severity == "error":
                    problems.setdefault((i.key, i.message), []).append(p.name)
            continue
        if not meta_arrays:
            meta_arrays = {k: d[k] for k in META_KEYS if k in d and k not in ("valid", "track_ids", "person_index")}
        Pf = 1 if not lead else lead[0]
        if not lead:
            per = {k: a[None] for k, a in per.items()}
        id_key = next((k for k in ("track_ids", "person_index") if k in d), None)
        if id_key:
            meta_arrays["_explicit_ids"] = True
        ids = np.asarray(d[id_key]).reshape(-1).astype(np.int64) if id_key else np.arange(Pf)
        if ids.shape != (Pf,):
            problems.setdefault((id_key, f"shape {d[id_key].shape}; expected ({Pf},)"), []).append(p.name)
            continue
        v = _bool_valid(d["valid"]).reshape(-1) if "valid" in d else np.ones(Pf, bool)
        if v.shape != (Pf,):
            v = np.broadcast_to(v[:1], (Pf,)).copy()
        frames.append((int(t), per, ids, v))
    for (key, msg), names in problems.items():
        issues.add("warning", key, f"{msg} in {len(names)} frame file(s) ({', '.join(names[:3])}"
                   f"{', ...' if len(names) > 3 else ''}): those frames are missing",
                   f"re-write those frames with {KEY_HELP.get(key, key)}")
    if not frames:
        issues.add("error", "-", f"none of the {len(files)} frame files is usable (see the warnings)",
                   "fix the frame files")
        issues.raise_if_errors()
    keys = set.intersection(*(set(f[1]) for f in frames))
    for k in set.union(*(set(f[1]) for f in frames)) - keys:
        issues.add("info", k, "present in some frame files only: ignored", "write it in every frame or none")
    Pmax = max(len(f[2]) for f in frames)
    per_all = {k: np.full((T, Pmax) + frames[0][1][k].shape[1:], np.nan, np.float64) for k in keys}
    ids_all = np.full((T, Pmax), -1, np.int64)
    valid_all = np.zeros((T, Pmax), bool)
    for t, per, ids, v in frames:
        n = len(ids)
        for k in keys:
            per_all[k][t, :n] = per[k]
        ids_all[t, :n] = ids
        valid_all[t, :n] = v
    missing_rows = T - len(frames)
    if missing_rows:
        issues.add("warning", "frames", f"{missing_rows} of {T} frames have no usable frame file (gaps in the "
                   "numbering or unreadable files): missing (valid=False)", "nothing to do if the person was not "
                   "detected there")
    return per_all, ids_all, ids_all >= 0, valid_all, meta_arrays


def _select_person(per: dict[str, np.ndarray], ids: np.ndarray, present: np.ndarray, valid: np.ndarray,
                   requested: int | None, issues: _Issues, explicit_ids: bool
                   ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, int | None]:
    """(T, P, ...) -> (T, ...) for one person. Returns (arrays (copies), present (T,), valid (T,), chosen id)."""
    T, P = ids.shape
    finite = np.ones((T, P), bool)
    for a in per.values():
        finite &= np.isfinite(np.asarray(a, np.float64).reshape(T, P, -1)).all(-1)
    good = present & valid & finite
    uniq = np.unique(ids[present])
    counts = {int(u): int((good & (ids == u)).sum()) for u in uniq}
    if P == 1 and not explicit_ids:
        requested = None  # --person applies to multi-person files only
    if requested is None:
        if not counts:
            issues.add("error", "frames", "no person in any frame", "check the estimator ran on this video")
            issues.raise_if_errors()
        chosen = max(sorted(counts), key=lambda u: counts[u])
        if len(counts) > 1:
            others = ", ".join(f"{u} ({counts[u]})" for u in sorted(counts) if u != chosen)
            what = "track id" if explicit_ids else "person"
            issues.add("info", "person", f"{len(counts)} people in the file: using {what} {chosen} "
                       f"({counts[chosen]}/{T} valid frames, the most); others: {others}",
                       "choose another with --person N")
    else:
        chosen = int(requested)
        if chosen not in counts:
            issues.add("error", "person", f"--person {chosen} is not in the file (people: {sorted(counts)})",
                       f"pick one of {sorted(counts)}")
            issues.raise_if_errors()
    hit = ids == chosen
    col = np.where(hit.any(1), hit.argmax(1), -1)
    rows = np.arange(T)
    pres = col >= 0
    c = np.maximum(col, 0)
    out = {}
    for k, a in per.items():
        b = np.array(np.asarray(a)[rows, c], dtype=np.float64, copy=True)  # fancy indexing: always a copy
        b[~pres] = np.nan
        out[k] = b
    return out, pres, valid[rows, c] & pres, (chosen if (P > 1 or explicit_ids) else None)


# ---- audio --------------------------------------------------------------------------------------------------------

def _align_audio(audio: np.ndarray, n_frames: int, tol_s: float, issues: _Issues, audio_name: str
                 ) -> tuple[np.ndarray, int]:
    """Trim audio and motion to a common whole-frame length. Returns (audio (T' * 800,), T')."""
    spf = rates.SAMPLES_PER_FRAME
    a_s = len(audio) / rates.MODEL_SAMPLE_RATE
    m_s = n_frames / rates.MOTION_FPS
    diff = a_s - m_s
    if abs(diff) > tol_s:
        issues.add("error", "audio", f"audio {a_s:.2f} s vs motion {m_s:.2f} s ({diff:+.2f} s, beyond the "
                   f"{tol_s:g} s tolerance) in {audio_name}", "check that the wav belongs to this npz and covers the "
                   "same span (cut both to the same start/end), or raise --audio-tolerance")
        return audio, n_frames
    T = min(n_frames, len(audio) // spf)
    if diff < -1.0 / rates.MOTION_FPS:
        issues.add("warning", "audio", f"audio is {-diff:.2f} s shorter than the motion: motion trimmed from "
                   f"{n_frames} to {T} frames", "nothing to do within the tolerance")
    elif diff > 1.0 / rates.MOTION_FPS:
        issues.add("warning", "audio", f"audio is {diff:.2f} s longer than the motion: audio trimmed to {T} frames",
                   "nothing to do within the tolerance")
    return np.array(audio[:T * spf], dtype=np.float32, copy=True), T


# ---- the reader ---------------------------------------------------------------------------------------------------

def read_sequence(src: SequenceSource, config: IngestConfig = IngestConfig(),
                  speakers: SpeakerTable | None = None) -> Sequence:
    """Read one sequence. Raises ``IngestError`` (all issues, errors first-class) when it is rejected."""
    file = str(src.path)
    issues = _Issues(file)
    if src.audio is None:
        where = (f"{src.path}.wav beside the folder or one audio file inside it" if src.kind == "frames"
                 else f"{src.path.with_suffix('.wav')} (or .flac)")
        issues.add("error", "audio", "no audio file found", f"put the audio at {where}")
    if src.kind == "frames":
        per, ids, present, valid, meta_arrays = _frames(src.path, issues)
        explicit = bool(meta_arrays.pop("_explicit_ids", False))
    else:
        arrays = load_npz(src.path, issues)
        if arrays is None:
            issues.raise_if_errors()
        per, ids, present, valid = _stacked(src.path, arrays, issues)
        meta_arrays = {k: arrays[k] for k in META_KEYS if k in arrays}
        explicit = any(k in arrays for k in ("track_ids", "person_index")) and ids.shape[1] > 1
    issues.raise_if_errors()
    try:
        audio, rep = load_audio(src.audio)
    except (ValueError, OSError, RuntimeError) as e:
        issues.add("error", "audio", str(e), "re-encode the audio as 16-bit PCM WAV")
        issues.raise_if_errors()
    return _ingest(per, ids, present, valid, meta_arrays, audio, rep, src.name, issues, config, speakers,
                   explicit_ids=explicit, audio_name=src.audio.name, files=src.files())


def ingest_arrays(arrays: dict[str, np.ndarray], audio: np.ndarray, *, name: str = "memory",
                  audio_rate: int = rates.MODEL_SAMPLE_RATE, config: IngestConfig = IngestConfig(),
                  speakers: SpeakerTable | None = None, file: str = "<memory>") -> Sequence:
    """In-memory form of ``read_sequence`` for a stacked dict (T[, P], ...) and mono audio at ``audio_rate``.

    The input arrays are never written (read-only or memory-mapped arrays are fine).
    """
    issues = _Issues(file)
    arrays = {k: np.asarray(v) for k, v in arrays.items() if k in USED_KEYS}
    per, ids, present, valid = _stacked(Path(file), arrays, issues)
    meta_arrays = {k: arrays[k] for k in META_KEYS if k in arrays}
    explicit = any(k in arrays for k in ("track_ids", "person_index")) and ids.shape[1] > 1
    mono, n_bad, n_clip = sanitize(to_mono_float(audio))
    wave = resample(mono, int(audio_rate))
    rep = AudioReport(int(audio_rate), 1, len(wave), n_bad, n_clip)
    return _ingest(per, ids, present, valid, meta_arrays, wave, rep, name, issues, config, speakers,
                   explicit_ids=explicit, audio_name="audio")


def _ingest(per, ids, present, valid, meta_arrays, audio, audio_report, name, issues: _Issues,
            config: IngestConfig, speakers: SpeakerTable | None, explicit_ids: bool, audio_name: str,
            files: list[Path] | None = None) -> Sequence:
    meta = _meta(meta_arrays, issues, config.default_fps)
    src_fps = meta["fps"]
    if not math.isfinite(src_fps) or src_fps < config.min_fps:
        issues.add("error", "fps", f"frame rate {src_fps:g} is not usable (minimum {config.min_fps:g} fps)",
                   "store the video's real frame rate in `fps`")
    issues.raise_if_errors()
    arrays, present1, file_valid, chosen = _select_person(per, ids, present, valid, config.person, issues,
                                                          explicit_ids)
    T = len(present1)
    finite = np.ones(T, bool)
    bad_keys = []
    for k, a in arrays.items():
        f = np.isfinite(a.reshape(T, -1)).all(1) | ~present1
        if not f.all():
            bad_keys.append(k)
        finite &= f
    nonfinite = ~finite
    missing = ~present1
    bad = nonfinite | missing
    valid1 = present1 & finite & file_valid
    if nonfinite.any():
        issues.add("warning", ",".join(bad_keys), f"NaN/Inf in {int(nonfinite.sum())} of {T} frames "
                   f"({_ranges(np.flatnonzero(nonfinite))}): masked (valid=False)",
                   "re-run the estimator on those frames if there are many")
    if missing.any() and ids.shape[1] > 1:
        issues.add("warning", "person", f"the chosen person is absent in {int(missing.sum())} of {T} frames: masked",
                   "nothing to do, or pick another person with --person N")
    frac = float(bad.mean())
    if frac > config.max_bad_fraction:
        issues.add("error", ",".join(bad_keys) or "frames", f"{int(bad.sum())} of {T} frames ({100 * frac:.1f}%) are "
                   f"NaN/Inf or missing, more than --max-bad-fraction {config.max_bad_fraction:g}",
                   "re-run the estimator on this video, or raise --max-bad-fraction")
    elif not valid1.any():
        issues.add("error", "valid", "no valid frame", "check `valid` and the estimator output")
    try:
        speaker = (speakers or SpeakerTable.from_labels([meta.get("speaker")])).resolve(meta.get("speaker"))
    except ValueError as e:
        speaker = -1
        issues.add("error", "speaker", str(e), "add the speaker to speakers.json, or set speaker to -1 (unknown)")
    issues.raise_if_errors()
    if meta.get("speaker") is None and "speaker" not in meta_arrays:
        issues.add("info", "speaker", "no speaker key: using the unknown-speaker id",
                   "store `speaker` (int id or name) in the npz to condition on the speaker")
    if "focal_length" not in arrays:
        issues.add("warning", "focal_length", "missing: renders use sqrt(W^2 + H^2) (SAM 3D Body's default without "
                   "a FOV estimator)", f"store {KEY_HELP['focal_length']}")

    # masked frames take their neighbours' values so every derived quantity stays finite
    clean = {k: fill_invalid(np.where(np.isfinite(a), a, 0.0), valid1) for k, a in arrays.items()}
    if "image_size" in meta:
        clean["image_size"] = meta["image_size"]
    clean["fps"] = np.array(float(rates.MOTION_FPS))
    try:
        motion, constants = from_sam3d(clean, valid=valid1)
    except ValueError as e:
        issues.add("error", "-", f"cannot build the MHR layout: {e}", "check the key shapes against docs/DATA.md")
        issues.raise_if_errors()
    m, fixes = unwrap_motion(motion, valid1)
    if any(fixes.values()):
        issues.add("info", "angles", "unwrapped " + ", ".join(f"{k}: {n} frames" for k, n in fixes.items() if n)
                   + " (2*pi jumps / gimbal flips; same rotations)", "")
    feet = camera_joints_to_native(clean["pred_joint_coords"][:, contact_joint_ids()]) \
        if "pred_joint_coords" in clean else None
    v = valid1
    if abs(src_fps - rates.MOTION_FPS) > 1e-3:
        T0 = len(m)
        m, v = resample_motion(m, v, src_fps)
        if feet is not None:
            feet = resample_linear(feet, src_fps)
        issues.add("warning", "fps", f"motion at {src_fps:g} fps resampled to {rates.MOTION_FPS} fps ({T0} -> "
                   f"{len(m)} frames; global_rot by slerp, other channels linearly)", "")
    report: dict[str, Any] = {"hf_energy_before": high_freq_energy(m, v)}
    if config.smooth_sigma > 0:
        m = smooth_motion(m, config.smooth_sigma)
        if feet is not None:
            feet = gaussian_smooth(feet.reshape(len(feet), -1), config.smooth_sigma).reshape(feet.shape)
    report["hf_energy_after"] = high_freq_energy(m, v)
    if feet is None:
        feet = foot_joints_fk(m, constants)
        report["contact_source"] = "fk"
    else:
        report["contact_source"] = "pred_joint_coords"
    m[:, CONTACT] = foot_contact(feet, config.contact_threshold_cm)

    if audio_report.nonfinite:
        issues.add("warning", "audio", f"{audio_report.nonfinite} NaN/Inf audio samples replaced by 0", "")
    if audio_report.clipped:
        issues.add("warning", "audio", f"{audio_report.clipped} audio samples beyond [-1, 1] clipped",
                   "lower the recording gain")
    audio_out, Tn = _align_audio(audio, len(m), config.audio_tolerance_s, issues, audio_name)
    issues.raise_if_errors()
    m, v = m[:Tn], v[:Tn]
    if not v.any():
        issues.add("error", "valid", "no valid frame left after aligning with the audio", "")
        issues.raise_if_errors()
    motion_out = m.astype(np.float32)
    if not np.isfinite(motion_out).all():  # cannot happen after filling; guard the cache anyway
        issues.add("error", "-", "non-finite values after processing", "report this file")
        issues.raise_if_errors()
    report.update({
        "frames": int(Tn), "valid_frames": int(v.sum()), "nonfinite_frames": int(nonfinite.sum()),
        "missing_frames": int(missing.sum()), "unwrap_fixes": fixes, "source_fps": src_fps,
        "audio_source_rate": audio_report.source_rate, "seconds": Tn / rates.MOTION_FPS,
        "contact_fraction": [float(x) for x in motion_out[v][:, CONTACT].mean(0)],
    })
    return Sequence(name=name, motion=motion_out, constants=constants, valid=np.array(v, bool), speaker=int(speaker),
                    audio=audio_out, fps=float(rates.MOTION_FPS), issues=list(issues),
                    speaker_label=meta.get("speaker"), person=chosen, source_fps=src_fps, files=list(files or []),
                    report=report)


assert DIM == 320 and N_JOINTS == 127
