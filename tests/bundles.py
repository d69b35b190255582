"""Tiny randomly-initialised checkpoint bundles for tests (a few hundred kB, built in milliseconds)."""
from __future__ import annotations

from pathlib import Path

import torch

from models import layout
from models.bundle import write_manifest
from models.checkpoint import save_model
from models.generator import GeneratorConfig, MambaTalkMHR
from models.vqvae import PartVQVAE, VQConfig


def make_tiny_bundle(root: str | Path, parts=("body", "hand", "face"), lookahead: int = 2, vq_lookahead: int = 0,
                     n_speakers: int = 2, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    code_dim = 16
    for p in parts:
        cfg = VQConfig(part=p, in_dim=layout.PART_DIMS[p], code_dim=code_dim, codebook_size=32, hidden=16,
                       n_layers=2, lookahead=vq_lookahead)
        vq = PartVQVAE(cfg)
        with torch.no_grad():
            vq.quantizer.embed.normal_()  # a spread codebook, as after training
            if hasattr(vq.quantizer, "initialized"):
                vq.quantizer.initialized.fill_(1)
        d = layout.PART_DIMS[p]
        save_model(root / f"vq_{p}.safetensors", vq, kind="vq", config=cfg.to_dict(),
                   extra={"norm_mean": torch.zeros(d), "norm_std": torch.full((d,), 0.1)})
    gcfg = GeneratorConfig.preset("tiny", n_speakers=n_speakers, code_dim=code_dim, codebook_size=32,
                                  lookahead=lookahead, part_dims={p: layout.PART_DIMS[p] for p in parts},
                                  hidden=32, audio_hidden=32, motion_hidden=16, mlp_hidden=64)
    gen = MambaTalkMHR(gcfg)
    save_model(root / "generator.safetensors", gen, kind="generator", config=gcfg.to_dict())
    skipped = {p: "test: absent" for p in layout.VQ_PARTS if p not in parts}
    write_manifest(root, speakers=[f"spk{i}" for i in range(n_speakers)], skipped_parts=skipped)
    return root
