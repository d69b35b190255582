"""A checkpoint bundle: everything the runtime needs, in one directory.

    manifest.json            layout version, parts present / skipped (and why), speakers, default constants
    vq_<part>.safetensors    per present part: PartVQVAE weights + extra.norm_mean / extra.norm_std
    generator.safetensors    MambaTalkMHR weights (its config in the metadata)

``load_bundle(None)`` loads the shipped demo (``models/checkpoints/demo``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from models.checkpoint import load_model_file, read_meta
from models.generator import GeneratorConfig, MambaTalkMHR
from models.layout import LAYOUT_VERSION, VQ_PARTS, SessionConstants
from models.vqvae import PartVQVAE, VQConfig

DEFAULT_CHECKPOINT = Path(__file__).parent / "checkpoints" / "demo"
MANIFEST = "manifest.json"


@dataclass
class Bundle:
    root: Path
    manifest: dict[str, Any]
    generator: MambaTalkMHR | None
    generator_config: GeneratorConfig | None
    vqs: dict[str, PartVQVAE]
    norm: dict[str, tuple[torch.Tensor, torch.Tensor]]
    skipped_parts: dict[str, str] = field(default_factory=dict)

    @property
    def parts(self) -> tuple[str, ...]:
        return tuple(p for p in VQ_PARTS if p in self.vqs)

    @property
    def speakers(self) -> list[str]:
        return list(self.manifest.get("speakers", []))

    def default_constants(self) -> SessionConstants:
        c = self.manifest.get("default_constants")
        return SessionConstants.from_dict(c) if c else SessionConstants()


def load_vq(path: str | Path, device: str | torch.device = "cpu") -> tuple[PartVQVAE, torch.Tensor, torch.Tensor]:
    """-> (model in eval mode, norm mean, norm std)."""
    state, extra, meta = load_model_file(path, expect_kind="vq")
    model = PartVQVAE(VQConfig.from_dict(meta["config"]))
    model.load_state_dict(state)
    model.eval().to(device)
    for key in ("norm_mean", "norm_std"):
        if key not in extra:
            raise ValueError(f"{path}: VQ checkpoint lacks extra.{key} (normalisation stats); retrain with train.vq")
    return model, extra["norm_mean"].to(device), extra["norm_std"].to(device)


def load_vqs(root: str | Path, device: str | torch.device = "cpu"
             ) -> tuple[dict[str, PartVQVAE], dict[str, tuple[torch.Tensor, torch.Tensor]], dict[str, str]]:
    """Every ``vq_<part>.safetensors`` in ``root`` + parts recorded as skipped (``vq_<part>.skipped.json``)."""
    root = Path(root)
    vqs, norm, skipped = {}, {}, {}
    for part in VQ_PARTS:
        f = root / f"vq_{part}.safetensors"
        s = root / f"vq_{part}.skipped.json"
        if f.is_file():
            vqs[part], mean, std = load_vq(f, device)
            norm[part] = (mean, std)
        elif s.is_file():
            skipped[part] = json.loads(s.read_text()).get("reason", "skipped")
    if not vqs:
        raise FileNotFoundError(f"{root}: no vq_<part>.safetensors found; train them with `python -m train.vq`")
    return vqs, norm, skipped


def load_generator(path: str | Path, device: str | torch.device = "cpu") -> MambaTalkMHR:
    state, _, meta = load_model_file(path, expect_kind="generator")
    model = MambaTalkMHR(GeneratorConfig.from_dict(meta["config"]))
    model.load_state_dict(state)
    return model.eval().to(device)


def load_bundle(path: str | Path | None = None, device: str | torch.device = "cpu",
                require_generator: bool = True) -> Bundle:
    """Load a bundle directory (or the shipped demo when ``path`` is None)."""
    root = Path(path) if path is not None else DEFAULT_CHECKPOINT
    if root.is_file() and root.name == MANIFEST:
        root = root.parent
    mf = root / MANIFEST
    if not mf.is_file():
        hint = ("the shipped demo checkpoint is missing: reinstall, or rebuild it with `python -m train.demo`"
                if path is None else "point --checkpoint at a directory written by train.generator / train.demo")
        raise FileNotFoundError(f"{mf}: no checkpoint manifest ({hint})")
    manifest = json.loads(mf.read_text())
    if manifest.get("layout_version") != LAYOUT_VERSION:
        raise ValueError(f"{mf}: layout version {manifest.get('layout_version')!r} != {LAYOUT_VERSION!r}")
    vqs, norm, skipped = load_vqs(root, device)
    skipped.update(manifest.get("skipped_parts", {}))
    gen_path = root / manifest.get("generator", "generator.safetensors")
    generator = cfg = None
    if gen_path.is_file():
        generator = load_generator(gen_path, device)
        cfg = generator.config
        missing = [p for p in cfg.parts if p not in vqs]
        if missing:
            raise ValueError(f"{gen_path}: generator predicts parts {missing} but {root} has no VQ for them")
        for p in cfg.parts:
            if vqs[p].cfg.code_dim != cfg.code_dim or vqs[p].cfg.codebook_size != cfg.codebook_size:
                raise ValueError(f"{gen_path}: code_dim/codebook_size {cfg.code_dim}/{cfg.codebook_size} do not "
                                 f"match vq_{p} ({vqs[p].cfg.code_dim}/{vqs[p].cfg.codebook_size})")
    elif require_generator:
        raise FileNotFoundError(f"{gen_path}: generator checkpoint missing; train it with `python -m train.generator`")
    return Bundle(root, manifest, generator, cfg, vqs, norm, skipped)


def write_manifest(root: str | Path, *, speakers: list[str], skipped_parts: dict[str, str],
                   default_constants: SessionConstants | None = None, info: dict[str, Any] | None = None,
                   runtime: dict[str, Any] | None = None) -> Path:
    """``runtime``: recommended runtime settings the engine applies by default, e.g.
    ``{"smooth_hz": {"body": 1.0, ...}}`` (see ``realtime.smoothing``)."""
    root = Path(root)
    files = {p: f"vq_{p}.safetensors" for p in VQ_PARTS if (root / f"vq_{p}.safetensors").is_file()}
    data = {
        "layout_version": LAYOUT_VERSION,
        "parts": list(files),
        "skipped_parts": skipped_parts,
        "vq_files": files,
        "generator": "generator.safetensors",
        "speakers": speakers,
        "n_speakers": len(speakers),
        "default_constants": (default_constants or SessionConstants()).to_dict(),
        "info": info or {},
        "runtime": runtime or {},
    }
    if (root / "generator.safetensors").is_file():
        data["generator_config"] = read_meta(root / "generator.safetensors")["config"]
    path = root / MANIFEST
    path.write_text(json.dumps(data, indent=1))
    return path
