"""Checkpoints: safetensors tensors + the JSON config that built them (no pickle, ever).

A single model file (``*.safetensors``) stores its ``state_dict`` plus optional extra tensors (prefixed ``extra.``)
and string metadata: ``kind`` (vq | generator | fgd), ``config`` (JSON), ``layout_version`` and free-form ``info``
(JSON). A *bundle* is a directory holding ``manifest.json`` and one file per model (see ``models.bundle``).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from models.layout import LAYOUT_VERSION


def save_model(path: str | Path, module: torch.nn.Module, *, kind: str, config: dict[str, Any],
               extra: dict[str, torch.Tensor] | None = None, info: dict[str, Any] | None = None) -> Path:
    """Write ``module.state_dict()`` (+ extra tensors) and its config to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    for k, v in (extra or {}).items():
        tensors[f"extra.{k}"] = torch.as_tensor(v).detach().cpu().contiguous()
    meta = {"kind": kind, "config": json.dumps(config), "layout_version": LAYOUT_VERSION,
            "info": json.dumps(info or {})}
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(path)  # atomic: a kill mid-write never leaves a truncated checkpoint
    return path


def read_meta(path: str | Path) -> dict[str, Any]:
    """Metadata of a checkpoint file with ``config`` and ``info`` decoded."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
    except Exception as e:
        raise ValueError(f"{path}: not a safetensors checkpoint ({e})") from e
    for key in ("config", "info"):
        meta[key] = json.loads(meta.get(key) or "{}")
    if "kind" not in meta:
        raise ValueError(f"{path}: checkpoint metadata has no 'kind'; was it written by models.checkpoint.save_model?")
    return meta


def load_model_file(path: str | Path, expect_kind: str | None = None
                    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, Any]]:
    """-> (state_dict, extra tensors, metadata). Checks ``kind`` and the layout version."""
    meta = read_meta(path)
    if expect_kind and meta["kind"] != expect_kind:
        raise ValueError(f"{path}: checkpoint kind is {meta['kind']!r}, expected {expect_kind!r}")
    if meta.get("layout_version") != LAYOUT_VERSION:
        raise ValueError(f"{path}: layout version {meta.get('layout_version')!r} != {LAYOUT_VERSION!r}; "
                         "retrain or convert the checkpoint")
    tensors = load_file(str(path))
    state = {k: v for k, v in tensors.items() if not k.startswith("extra.")}
    extra = {k[len("extra."):]: v for k, v in tensors.items() if k.startswith("extra.")}
    return state, extra, meta


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
