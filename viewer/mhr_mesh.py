"""The real MHR mesh from the TorchScript ``mhr_model.pt`` (MHR release assets or a SAM 3D Body checkpoint).

``forward(identity_coeffs (B, 45), model_parameters (B, 204), face_expr_coeffs (B, 72)) -> (verts (B, V, 3) cm,
skel_state (B, 127, 8))`` with skel_state rows ``[t_xyz (cm), q_xyzw, s]``; faces from ``character_torch.mesh.faces``
(or a ``faces`` attribute); linear-blend-skinning weights from ``get_lbsw()`` (a (indices (V, K), weights (V, K)) pair,
or a dense (V, 127) matrix).

The mouth, best effort: MHR's 204 parameters have no jaw slot, so the jaw channel (``body_pose_params[130:133]``,
Euler XYZ in ``c_jaw``'s local frame) is applied after the model: each vertex moves by its skinning weight on the jaw
subtree (``c_jaw`` and its children: teeth, chin, tongue) times the rigid jaw rotation about ``c_jaw``.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from models.rotations import euler_to_matrix, quat_to_matrix

N_IDENTITY, N_PARAMS, N_EXPR, N_JOINTS = 45, 204, 72, 127
JAW_JOINT = 114
JAW_SUBTREE = tuple(range(114, 122))  # c_jaw, c_teeth, c_jaw_null, c_tongue0-4
EXPECTED = ("a TorchScript MHR model (assets/mhr_model.pt from the MHR release or a SAM 3D Body checkpoint) with "
            "forward(identity_coeffs (B,45), model_parameters (B,204), face_expr_coeffs (B,72)) -> "
            "(verts (B,V,3) cm, skel_state (B,127,8)) and faces in character_torch.mesh.faces")


class MHRModelError(ValueError):
    """The file is not a usable MHR TorchScript model; the message names the file and what was expected."""


@dataclass
class MHRMesh:
    """A loaded, validated MHR TorchScript model.

    Attributes:
        module: the TorchScript module.
        path: where it came from.
        faces: (F, 3) int32 triangle indices.
        jaw_weights: (V,) skinning weight of each vertex on the jaw subtree, or None (no weights: mouth stays shut).
        n_verts: V.
        notes: remarks for the user (e.g. missing skinning weights).
    """

    module: torch.jit.ScriptModule
    path: str
    faces: np.ndarray
    jaw_weights: np.ndarray | None
    n_verts: int
    notes: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, path: str | Path) -> MHRMesh:
        """Load and check ``path``; raises :class:`MHRModelError` with the reason and the expected contract."""
        path = Path(path)
        if not path.is_file():
            raise MHRModelError(f"{path}: no such file; expected {EXPECTED}")
        try:
            with warnings.catch_warnings():  # torch >= 2.10 marks TorchScript deprecated; mhr_model.pt is TorchScript
                warnings.simplefilter("ignore", DeprecationWarning)
                module = torch.jit.load(str(path), map_location="cpu")
        except Exception as e:  # noqa: BLE001 - any loader failure means "not TorchScript"
            raise MHRModelError(f"{path}: not a TorchScript archive ({type(e).__name__}: {str(e)[:200]}); "
                                f"expected {EXPECTED}") from e
        module.eval()
        if not hasattr(module, "forward"):
            raise MHRModelError(f"{path}: the TorchScript module has no forward(); expected {EXPECTED}")
        verts, skel = _call(module, path, torch.zeros(1, N_IDENTITY), torch.zeros(1, N_PARAMS), torch.zeros(1, N_EXPR))
        n_verts = int(verts.shape[1])
        faces = _faces(module, path, n_verts)
        notes: list[str] = []
        jaw_w = _jaw_weights(module, path, n_verts, notes)
        return cls(module, str(path), faces, jaw_w, n_verts, notes)

    def forward(self, identity: np.ndarray, model_params: np.ndarray, expr: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
        """Run the model: identity (45,) or (B, 45), model_params (B, 204), expr (B, 72) -> (verts, skel_state)."""
        mp = torch.as_tensor(np.atleast_2d(np.asarray(model_params, np.float32)))
        B = mp.shape[0]
        ident = torch.as_tensor(np.asarray(identity, np.float32)).reshape(-1, N_IDENTITY).expand(B, -1).contiguous()
        ex = torch.zeros(B, N_EXPR) if expr is None else torch.as_tensor(
            np.atleast_2d(np.asarray(expr, np.float32))).reshape(B, N_EXPR)
        v, s = _call(self.module, Path(self.path), ident, mp, ex)
        return v.numpy(), s.numpy()

    def vertices(self, identity: np.ndarray, model_params: np.ndarray, expr: np.ndarray | None = None,
                 jaw: np.ndarray | None = None) -> np.ndarray:
        """(B, V, 3) vertices in native cm, with the jaw channel (B, 3) applied (best effort)."""
        v, skel = self.forward(identity, model_params, expr)
        if jaw is not None and self.jaw_weights is not None:
            v = apply_jaw(v, skel, np.atleast_2d(np.asarray(jaw, np.float64)), self.jaw_weights)
        return v


def apply_jaw(verts: np.ndarray, skel_state: np.ndarray, jaw: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Rotate the jaw-skinned vertices about ``c_jaw`` by the jaw Euler angles (local frame), blended by weight.

    Args:
        verts: (B, V, 3) cm.
        skel_state: (B, 127, 8) ``[t, q_xyzw, s]`` per joint.
        jaw: (B, 3) Euler XYZ radians.
        weights: (V,) in [0, 1].
    """
    out = np.array(verts, np.float64, copy=True)
    for b in range(out.shape[0]):
        if not np.any(jaw[b]):
            continue
        t = skel_state[b, JAW_JOINT, :3].astype(np.float64)
        Rg = quat_to_matrix(skel_state[b, JAW_JOINT, 3:7].astype(np.float64))
        Rd = Rg @ euler_to_matrix(jaw[b]) @ Rg.T
        moved = (out[b] - t) @ Rd.T + t
        out[b] += weights[:, None] * (moved - out[b])
    return out.astype(np.float32)


def _call(module, path: Path, ident: torch.Tensor, mp: torch.Tensor, ex: torch.Tensor):
    try:
        with torch.no_grad():
            out = module(ident, mp, ex)
    except Exception as e:  # noqa: BLE001
        raise MHRModelError(f"{path}: calling forward(identity_coeffs {tuple(ident.shape)}, model_parameters "
                            f"{tuple(mp.shape)}, face_expr_coeffs {tuple(ex.shape)}) failed "
                            f"({type(e).__name__}: {str(e)[:300]}); expected {EXPECTED}") from e
    if not isinstance(out, (tuple, list)) or len(out) < 2 or not all(isinstance(o, torch.Tensor) for o in out[:2]):
        raise MHRModelError(f"{path}: forward returned {type(out).__name__}, not (verts, skel_state); "
                            f"expected {EXPECTED}")
    v, s = out[0], out[1]
    B = mp.shape[0]
    if v.dim() != 3 or v.shape[0] != B or v.shape[2] != 3 or v.shape[1] < 4:
        raise MHRModelError(f"{path}: verts have shape {tuple(v.shape)}, expected ({B}, V, 3); {EXPECTED}")
    if tuple(s.shape) != (B, N_JOINTS, 8):
        raise MHRModelError(f"{path}: skel_state has shape {tuple(s.shape)}, expected ({B}, {N_JOINTS}, 8); "
                            f"{EXPECTED}")
    return v.float(), s.float()


def _faces(module, path: Path, n_verts: int) -> np.ndarray:
    f = None
    for getter in (lambda m: m.character_torch.mesh.faces, lambda m: m.faces, lambda m: m.get_faces()):
        try:
            f = getter(module)
            break
        except Exception:  # noqa: BLE001 - try the next place
            continue
    if f is None:
        raise MHRModelError(f"{path}: no mesh faces (looked for character_torch.mesh.faces, faces, get_faces()); "
                            f"expected {EXPECTED}")
    f = np.asarray(f.detach().cpu().numpy() if isinstance(f, torch.Tensor) else f)
    if f.ndim != 2 or f.shape[1] != 3 or f.dtype.kind not in "iu" or f.min() < 0 or f.max() >= n_verts:
        raise MHRModelError(f"{path}: faces have shape {f.shape} dtype {f.dtype} (range "
                            f"{f.min() if f.size else '-'}..{f.max() if f.size else '-'}), expected (F, 3) integer "
                            f"indices < {n_verts}")
    return f.astype(np.int32)


def _jaw_weights(module, path: Path, n_verts: int, notes: list[str]) -> np.ndarray | None:
    try:
        lbs = module.get_lbsw()
    except Exception:  # noqa: BLE001
        notes.append(f"{path}: no get_lbsw(): the jaw channel cannot open the mouth on this mesh")
        return None
    try:
        if isinstance(lbs, (tuple, list)) and len(lbs) == 2:
            idx = np.asarray(lbs[0].cpu().numpy(), np.int64)
            w = np.asarray(lbs[1].cpu().numpy(), np.float64)
            if idx.shape != w.shape or idx.shape[0] != n_verts:
                raise ValueError(f"indices {idx.shape} / weights {w.shape}, expected (V={n_verts}, K) each")
            jaw = (np.isin(idx, JAW_SUBTREE) * w).sum(1)
        else:
            dense = np.asarray(lbs.cpu().numpy(), np.float64)
            if dense.shape != (n_verts, N_JOINTS):
                raise ValueError(f"dense weights {dense.shape}, expected ({n_verts}, {N_JOINTS})")
            jaw = dense[:, list(JAW_SUBTREE)].sum(1)
    except Exception as e:  # noqa: BLE001
        notes.append(f"{path}: unusable get_lbsw() ({e}): the mouth stays closed")
        return None
    if not np.any(jaw > 0):
        notes.append(f"{path}: no vertex is skinned to c_jaw: the mouth stays closed")
    return np.clip(jaw, 0.0, 1.0).astype(np.float32)
