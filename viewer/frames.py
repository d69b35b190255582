"""Per-frame drawables for a :class:`~viewer.sequence.Sequence`: proxy primitives or the MHR mesh, plus the
sequence-level floor height and framing (so the floor and the orbit target do not wobble)."""
from __future__ import annotations

import numpy as np

from models.layout import EXPR
from viewer.avatar import Primitives, ProxyAvatar
from viewer.camera import framing
from viewer.mhr_mesh import MHRMesh
from viewer.scene import MeshFrame
from viewer.sequence import Sequence

_CHUNK = 64


class SequenceDrawables:
    """Builds what to draw for frame ``i`` of a sequence (FK / mesh computed in chunks and cached).

    Args:
        seq: the sequence.
        mhr: a loaded MHR model (draw its mesh) or None (draw the proxy avatar).
        mouth_open: jaw opening (rad) used on frames whose jaw channel is zero (None: leave the mouth as it is).
    """

    def __init__(self, seq: Sequence, mhr: MHRMesh | None = None, mouth_open: float | None = None) -> None:
        self.seq = seq
        self.mhr = mhr
        self.mouth_open = mouth_open
        self.avatar = ProxyAvatar(seq.offsets)
        self._chunk: tuple[int, object] | None = None
        sample = np.unique(np.linspace(0, len(seq) - 1, min(len(seq), 24)).astype(int))
        R, X = self.avatar.fk(seq.model_params[sample])
        if mhr is None:
            self.floor_y = min(self.avatar.primitives(R[k], X[k]).lowest_point() for k in range(len(sample)))
        else:
            v = mhr.vertices(seq.constants.shape_params, seq.model_params[sample], seq.motion[sample, EXPR])
            self.floor_y = float(v[..., 1].min())
        self.points = X.reshape(-1, 3)  # sampled joint positions: framing for any fov/aspect
        self.center, self.distance = framing(self.points)

    def jaw(self, i: int) -> np.ndarray:
        j = np.asarray(self.seq.jaw[i], np.float64)
        if self.mouth_open is not None and not np.any(j):
            j = np.array([self.mouth_open, 0.0, 0.0])
        return j

    def __len__(self) -> int:
        return len(self.seq)

    def frame(self, i: int) -> tuple[Primitives | None, MeshFrame | None]:
        """Drawables of frame ``i``: (primitives, None) for the proxy avatar or (None, mesh) with MHR assets."""
        c0 = (i // _CHUNK) * _CHUNK
        if self._chunk is None or self._chunk[0] != c0:
            sl = slice(c0, min(c0 + _CHUNK, len(self.seq)))
            if self.mhr is None:
                self._chunk = (c0, self.avatar.fk(self.seq.model_params[sl]))
            else:
                jaw = np.stack([self.jaw(k) for k in range(sl.start, sl.stop)])
                v = self.mhr.vertices(self.seq.constants.shape_params, self.seq.model_params[sl],
                                      self.seq.motion[sl, EXPR], jaw)
                self._chunk = (c0, v)
        data = self._chunk[1]
        k = i - c0
        if self.mhr is None:
            R, X = data
            return self.avatar.primitives(R[k], X[k], self.jaw(i)), None
        return None, MeshFrame(data[k], self.mhr.faces)
