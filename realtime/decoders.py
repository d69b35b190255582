"""Windowed VQ decoding backends for the runtime: PyTorch (always) and ONNX Runtime (when exported).

A backend decodes a window of code vectors ``(B, W, D) -> (B, W, C)`` for one part; the engine gives it enough
left context (the decoder's receptive field) that the frames it keeps equal a whole-sequence decode.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger("realtime")


class TorchDecoders:
    name = "pytorch"

    def __init__(self, vqs: dict):
        self.vqs = vqs

    def receptive_field(self, part: str) -> tuple[int, int]:
        return self.vqs[part].receptive_field

    @torch.no_grad()
    def decode(self, part: str, zq: np.ndarray) -> np.ndarray:
        return self.vqs[part].decode(torch.from_numpy(np.ascontiguousarray(zq, np.float32))).numpy()


def choose_decoders(bundle, backend: str = "auto", onnx_dir: str | Path | None = None):
    """'auto': ONNX decoders when an export of this very checkpoint exists (``<bundle>/onnx``), else PyTorch."""
    if backend == "pytorch":
        log.info("decoders: PyTorch (requested)")
        return TorchDecoders(bundle.vqs)
    onnx_dir = Path(onnx_dir) if onnx_dir else Path(bundle.root) / "onnx"
    if (onnx_dir / "manifest.json").is_file():
        try:
            from exporters.onnx_runtime import OnnxDecoders

            dec = OnnxDecoders.load(onnx_dir, bundle=bundle, threads=1)
            log.info("decoders: ONNX Runtime from %s", onnx_dir)
            return dec
        except Exception as e:  # noqa: BLE001 - fall back, loudly
            if backend == "onnx":
                raise
            log.warning("decoders: ONNX export at %s unusable (%s); falling back to PyTorch", onnx_dir, e)
    elif backend == "onnx":
        raise FileNotFoundError(f"{onnx_dir}/manifest.json: no ONNX export; run `python -m exporters.onnx --out "
                                f"{onnx_dir}`")
    log.info("decoders: PyTorch (no ONNX export found at %s)", onnx_dir)
    return TorchDecoders(bundle.vqs)
