"""Speaker ids for training data: a table of known speakers plus the dedicated UNKNOWN id (= n_speakers).

Unknown, empty or -1 speakers map to the unknown id and are never aliased to a real speaker (seed lesson 1); with a
speakers.json, an out-of-range id or an unknown name is an error naming the file."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

UNKNOWN_LABELS = ("", "unknown", "none", "-1")


def normalize_speaker_label(raw: Any) -> str | int | None:
    """A raw ``speaker`` value (array, int, str) -> int, str, or None for unknown (-1, '', 'unknown')."""
    if raw is None:
        return None
    a = np.asarray(raw)
    if a.size == 0:
        return None
    u = np.unique(a.reshape(-1))
    if u.size != 1:
        raise ValueError(f"several speakers in one sequence: {u[:5].tolist()}")
    v = u[0].item()
    if isinstance(v, bytes):
        v = v.decode("utf-8", "replace")
    if isinstance(v, str):
        v = v.strip()
        return None if v.lower() in UNKNOWN_LABELS else v
    if isinstance(v, float):
        if not math.isfinite(v) or v != int(v):
            raise ValueError(f"speaker id {v} is not an integer")
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"speaker must be an int or a str, got {type(v).__name__}")
    return None if v == -1 else v


@dataclass(frozen=True)
class SpeakerTable:
    """Speaker names and how labels map to ids. ``unknown_id`` = n_speakers is never a real speaker.

    Attributes:
        names: speaker names; id = position.
        int_ids: integer labels are ids (from speakers.json or an all-integer dataset); else they are names.
        from_file: the table came from a speakers.json: labels outside it are errors.
    """

    names: tuple[str, ...] = ()
    int_ids: bool = True
    from_file: bool = False

    @property
    def n_speakers(self) -> int:
        return len(self.names)

    @property
    def unknown_id(self) -> int:
        return len(self.names)

    @classmethod
    def from_labels(cls, labels: list[str | int | None]) -> SpeakerTable:
        """Build from the labels found in a dataset (no speakers.json): all ints -> ids kept, else sorted names."""
        known = [lab for lab in labels if lab is not None and not (isinstance(lab, int) and lab < 0)]
        if all(isinstance(lab, int) for lab in known):  # negative ids other than -1 are rejected by resolve()
            n = max(known) + 1 if known else 0
            return cls(tuple(str(i) for i in range(n)), int_ids=True)
        return cls(tuple(sorted({str(lab) for lab in known})), int_ids=False)

    @classmethod
    def load(cls, path: str | Path) -> SpeakerTable:
        """speakers.json: a list of names, ``{"speakers": [...]}``, or ``{name: id}`` with ids 0..n-1."""
        p = Path(path)
        try:
            data = json.loads(p.read_text())
        except (OSError, ValueError) as e:
            raise ValueError(f"{p}: cannot read speakers JSON ({e}); expected a list of names") from e
        if isinstance(data, dict) and "speakers" in data:
            data = data["speakers"]
        if isinstance(data, dict):
            ids = sorted(data.values()) if all(isinstance(v, int) for v in data.values()) else None
            if ids != list(range(len(data))):
                raise ValueError(f"{p}: a name->id mapping must use the ids 0..{len(data) - 1} once each")
            names = [None] * len(data)
            for k, v in data.items():
                names[v] = str(k)
            data = names
        if not isinstance(data, list) or not all(isinstance(x, str) for x in data) or len(set(data)) != len(data):
            raise ValueError(f"{p}: expected a list of distinct speaker names (id = position)")
        return cls(tuple(data), int_ids=True, from_file=True)

    def resolve(self, label: str | int | None) -> int:
        """Label -> id. Raises ValueError (with the fix) for ids/names outside the table."""
        if label is None:
            return self.unknown_id
        src = "speakers.json" if self.from_file else "the dataset's speaker table"
        if isinstance(label, int) and self.int_ids:
            if 0 <= label < self.n_speakers:
                return label
            raise ValueError(f"speaker id {label} is out of range [0, {self.n_speakers}) of {src}")
        name = str(label)
        if name in self.names:
            return self.names.index(name)
        raise ValueError(f"speaker {name!r} is not in {src} ({self.n_speakers} names)")

    def to_dict(self) -> dict[str, Any]:
        return {"names": list(self.names), "int_ids": self.int_ids, "from_file": self.from_file,
                "n_speakers": self.n_speakers, "unknown_id": self.unknown_id}
