"""Reading the window cache written by ``python -m train.data cache``.

``load_cache`` gives the arrays (memory-mapped read-only, opened lazily so each DataLoader worker opens its own),
the sequence table and the statistics. ``WindowDataset`` cuts windows inside sequences (never across them),
keeps a window when at least ``min_valid`` of its frames are valid, and splits train/val by whole sequences,
deterministically. Items are copies: nothing obtained from the dataset shares memory with the cache.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from models import rates
from models.layout import SessionConstants
from train.data import CACHE_FILES, CACHE_FORMAT

_SPF = rates.SAMPLES_PER_FRAME  # audio samples per motion frame

_BUILD_FIX = "build it with `python -m train.data cache DIR --out CACHE`"


@dataclass(frozen=True)
class SequenceInfo:
    """One row of the cache's sequence table: frames [start, start + length) of the concatenated arrays."""

    index: int
    name: str
    start: int
    length: int
    speaker: int
    valid_frames: int
    constants: SessionConstants
    row: dict[str, Any]  # the full manifest row (files, issues, report)


class Cache:
    """A built cache folder. Arrays are np.memmap views opened read-only on first use (per process).

    Attributes:
        root: the cache folder.
        manifest: the parsed manifest.json.
        sequences: the sequence table.
        stats: ``mean``/``std``/``constant`` (320,), ``features_mean``/``features_std`` (160,), ``count``.
        speakers: speaker names (id = position); ``unknown_speaker`` = len(speakers).
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        mp = self.root / "manifest.json"
        if not mp.is_file():
            raise FileNotFoundError(f"{self.root}: no manifest.json, not a window cache; {_BUILD_FIX}")
        try:
            self.manifest: dict[str, Any] = json.loads(mp.read_text(encoding="utf-8"))
        except ValueError as e:
            raise ValueError(f"{mp}: unreadable manifest ({e}); rebuild: {_BUILD_FIX} --force") from e
        if self.manifest.get("format") != CACHE_FORMAT:
            raise ValueError(f"{mp}: format {self.manifest.get('format')!r}, expected {CACHE_FORMAT!r}; rebuild: "
                             f"{_BUILD_FIX} --force")
        missing = [f for f in CACHE_FILES if not (self.root / f).is_file()]
        if missing:
            raise FileNotFoundError(f"{self.root}: missing {missing}; rebuild: {_BUILD_FIX} --force")
        self.sequences = [
            SequenceInfo(i, r["name"], int(r["start"]), int(r["length"]), int(r["speaker"]), int(r["valid_frames"]),
                         SessionConstants.from_dict(r["constants"]), r)
            for i, r in enumerate(self.manifest["sequences"])
        ]
        with np.load(self.root / "stats.npz", allow_pickle=False) as z:
            self.stats = {k: np.array(z[k]) for k in z.files}
        sp = self.manifest["speakers"]
        self.speakers: list[str] = list(sp["names"])
        self.unknown_speaker: int = int(sp["unknown_id"])
        self._arrays: dict[str, np.ndarray] = {}

    @property
    def n_speakers(self) -> int:
        return len(self.speakers)

    def _array(self, name: str) -> np.ndarray:
        a = self._arrays.get(name)
        if a is None:
            a = np.load(self.root / f"{name}.npy", mmap_mode="r", allow_pickle=False)
            self._arrays[name] = a
        return a

    @property
    def motion(self) -> np.ndarray:
        """(N, 320) float32, read-only memmap: never write into it or a view of it."""
        return self._array("motion")

    @property
    def features(self) -> np.ndarray:
        """(N, 160) float32, read-only memmap."""
        return self._array("features")

    @property
    def audio(self) -> np.ndarray:
        """(N * 800,) int16 model-rate audio, read-only memmap; frame k <-> samples [800k, 800k + 800)."""
        return self._array("audio")

    @property
    def valid(self) -> np.ndarray:
        """(N,) bool, read-only memmap."""
        return self._array("valid")

    def feature_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean (160,), std (160,)) float32 of the audio features over valid frames."""
        return (np.asarray(self.stats["features_mean"], np.float32).copy(),
                np.asarray(self.stats["features_std"], np.float32).copy())

    def mean_constants(self) -> SessionConstants:
        """Session constants for a new session: valid-frame-weighted mean of the sequences' constants (the most
        common image size; skeleton scales when every sequence has them). Defaults when the cache is empty."""
        seqs = [s for s in self.sequences if s.valid_frames > 0]
        if not seqs:
            return SessionConstants()
        w = np.array([s.valid_frames for s in seqs], np.float64)
        w /= w.sum()

        def avg(get) -> np.ndarray:
            return np.einsum("s,s...->...", w, np.array([np.asarray(get(s.constants), np.float64) for s in seqs]))

        sizes = [(s.constants.image_width, s.constants.image_height) for s in seqs]
        W, H = max(sorted(set(sizes)), key=sizes.count)
        have_scales = all(s.constants.skeleton_scales is not None for s in seqs)
        return SessionConstants(
            pred_cam_t=avg(lambda c: c.pred_cam_t), focal_length=float(avg(lambda c: c.focal_length)),
            image_width=W, image_height=H, scale_params=avg(lambda c: c.scale_params),
            shape_params=avg(lambda c: c.shape_params), bone_lengths=avg(lambda c: c.bone_lengths),
            skeleton_scales=avg(lambda c: c.skeleton_scales) if have_scales else None)

    def sequence_arrays(self, i: int) -> dict[str, np.ndarray]:
        """Copies of sequence i's motion (T, 320), features (T, 160) and valid (T,)."""
        s = self.sequences[i]
        sl = slice(s.start, s.start + s.length)
        return {"motion": np.array(self.motion[sl]), "features": np.array(self.features[sl]),
                "valid": np.array(self.valid[sl])}

    def close(self) -> None:
        self._arrays.clear()

    def __getstate__(self) -> dict[str, Any]:  # workers re-open their own memmaps
        d = dict(self.__dict__)
        d["_arrays"] = {}
        return d


def load_cache(cache_dir: str | Path) -> Cache:
    """Open a cache folder (arrays are mapped lazily, read-only)."""
    return Cache(cache_dir)


def split_sequences(names: list[str], val_fraction: float, seed: int) -> set[str]:
    """Names of the held-out (val) sequences: the round(val_fraction * n) names with the smallest
    sha1(seed:name), at least one when val_fraction > 0 and n >= 2, never all. Independent of the order of
    ``names``, and a sequence keeps its side when others are added (for a fixed count)."""
    n = len(names)
    if val_fraction <= 0 or n < 2:
        return set()
    k = min(n - 1, max(1, int(round(val_fraction * n))))
    ranked = sorted(names, key=lambda s: hashlib.sha1(f"{seed}:{s}".encode()).hexdigest())
    return set(ranked[:k])


class WindowDataset(Dataset):
    """Fixed-length windows from a cache, inside single sequences.

    Args:
        cache_dir: the cache folder.
        window: frames per window (long windows such as 512-2048 are fine; shorter sequences give none).
        stride: frames between window starts.
        split: 'train', 'val' (held-out whole sequences) or 'all'.
        val_fraction: fraction of sequences held out for 'val'.
        seed: split seed.
        min_valid: keep a window when at least this fraction of its frames is valid.

    Items: ``motion`` (W, 320) float32, ``features`` (W, 160) float32, ``valid`` (W,) bool, ``audio`` (W * 800,)
    float32 model-rate waveform, ``speaker`` () long,
    ``seq`` () long (index in the cache's sequence table), ``start`` () long (first frame inside the sequence).
    """

    def __init__(self, cache_dir: str | Path, window: int = 256, stride: int = 64, split: str = "train",
                 val_fraction: float = 0.1, seed: int = 0, min_valid: float = 0.9):
        if split not in ("train", "val", "all"):
            raise ValueError(f"split must be 'train', 'val' or 'all', got {split!r}")
        if window < 1 or stride < 1:
            raise ValueError(f"window and stride must be >= 1, got {window}, {stride}")
        self.cache = load_cache(cache_dir)
        self.window, self.stride, self.split = int(window), int(stride), split
        val = split_sequences([s.name for s in self.cache.sequences], val_fraction, seed)
        self.sequence_ids = [s.index for s in self.cache.sequences
                             if split == "all" or (s.name in val) == (split == "val")]
        valid = self.cache.valid
        rows = []
        for i in self.sequence_ids:
            s = self.cache.sequences[i]
            if s.length < self.window:
                continue
            cs = np.concatenate([[0], np.cumsum(valid[s.start:s.start + s.length], dtype=np.int64)])
            starts = np.arange(0, s.length - self.window + 1, self.stride)
            frac = (cs[starts + self.window] - cs[starts]) / self.window
            keep = starts[frac >= min_valid]
            rows.append(np.stack([np.full(len(keep), i), keep], 1))
        # (K, 2): [sequence index, start frame inside the sequence]
        self.windows = np.concatenate(rows).astype(np.int64) if rows else np.zeros((0, 2), np.int64)
        self.cache.close()  # opened again lazily in whichever process reads items

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        i, start = (int(x) for x in self.windows[k])
        s = self.cache.sequences[i]
        sl = slice(s.start + start, s.start + start + self.window)
        return {
            "motion": torch.from_numpy(np.array(self.cache.motion[sl], dtype=np.float32)),  # copies
            "features": torch.from_numpy(np.array(self.cache.features[sl], dtype=np.float32)),
            "valid": torch.from_numpy(np.array(self.cache.valid[sl], dtype=bool)),
            "audio": torch.from_numpy(np.asarray(self.cache.audio[sl.start * _SPF:sl.stop * _SPF], np.float32)
                                      / 32767.0),
            "speaker": torch.tensor(s.speaker, dtype=torch.long),
            "seq": torch.tensor(i, dtype=torch.long),
            "start": torch.tensor(start, dtype=torch.long),
        }
