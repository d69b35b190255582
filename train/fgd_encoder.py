"""An MHR-native motion encoder for FGD (Frechet Gesture Distance), trained by this project.

    python -m train.fgd_encoder --cache CACHE --out fgd.safetensors [--steps 3000] [--window 32] [--latent 64]

EMAGE/MambaTalk compute FGD with a skeleton autoencoder trained on SMPL-X, which cannot read MHR parameters (the
seed port had to skip FGD). This module trains a small convolutional autoencoder on windows of ``window`` frames
of the layout's varying channels (body 70 + hand 108 + face 75) plus the global rotation as 6D (259 inputs,
normalised per channel); its bottleneck (``latent`` values per window) is the FGD feature. The file is a normal
checkpoint (``models.checkpoint.save_model``, kind 'fgd') with the normalisation stats in ``extra``.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from models import layout
from models.rotations import euler_to_matrix, matrix_to_6d

FGD_CHANNELS = np.concatenate([layout.VARYING[p] for p in layout.VQ_PARTS])  # 253 varying channels
FGD_INPUT_DIM = len(FGD_CHANNELS) + 6  # + global rotation 6D
STD_FLOOR = 1e-2  # channels (nearly) constant in the training data are compared in units of this


@dataclass(frozen=True)
class FGDConfig:
    """Hyper-parameters of the FGD autoencoder.

    Attributes:
        in_dim: input channels per frame (``FGD_INPUT_DIM``).
        window: frames per window (a multiple of 8: three stride-2 stages).
        latent: feature size per window.
        hidden: conv channels.
    """

    in_dim: int = FGD_INPUT_DIM
    window: int = 32
    latent: int = 64
    hidden: int = 128

    def __post_init__(self) -> None:
        if self.window < 8 or self.window % 8:
            raise ValueError(f"FGDConfig.window must be a multiple of 8 (>= 8), got {self.window}")
        for k in ("in_dim", "latent", "hidden"):
            if getattr(self, k) < 1:
                raise ValueError(f"FGDConfig.{k} must be >= 1, got {getattr(self, k)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FGDConfig:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def fgd_input(motion: np.ndarray) -> np.ndarray:
    """(T, 320) motion -> (T, 259) encoder input: varying channels + global rotation 6D (un-normalised)."""
    m = np.asarray(motion, np.float64)
    rot6 = matrix_to_6d(euler_to_matrix(m[:, layout.GLOBAL_ROT]))
    return np.concatenate([m[:, FGD_CHANNELS], rot6], axis=1).astype(np.float32)


def windows_of(x: np.ndarray, window: int, stride: int) -> np.ndarray:
    """(T, C) -> (N, window, C) windows starting every ``stride`` frames (none when T < window)."""
    T = len(x)
    if T < window:
        return np.zeros((0, window) + x.shape[1:], x.dtype)
    starts = np.arange(0, T - window + 1, max(1, stride))
    return np.stack([x[s:s + window] for s in starts])


class MotionAutoencoder(nn.Module):
    """Conv autoencoder over (B, W, C) windows: 3 stride-2 stages down to W/8 frames, a linear bottleneck of
    ``latent`` values (the FGD feature), and the mirror image back up."""

    def __init__(self, cfg: FGDConfig):
        super().__init__()
        self.cfg = cfg
        H, W8 = cfg.hidden, cfg.window // 8
        act = nn.LeakyReLU(0.2)
        self.encoder = nn.Sequential(
            nn.Conv1d(cfg.in_dim, H, 3, padding=1), act,
            nn.Conv1d(H, H, 4, stride=2, padding=1), act,
            nn.Conv1d(H, H, 4, stride=2, padding=1), act,
            nn.Conv1d(H, H, 4, stride=2, padding=1), act,
        )
        self.to_latent = nn.Linear(H * W8, cfg.latent)
        self.from_latent = nn.Linear(cfg.latent, H * W8)
        self.decoder = nn.Sequential(
            act, nn.ConvTranspose1d(H, H, 4, stride=2, padding=1), act,
            nn.ConvTranspose1d(H, H, 4, stride=2, padding=1), act,
            nn.ConvTranspose1d(H, H, 4, stride=2, padding=1), act,
            nn.Conv1d(H, cfg.in_dim, 3, padding=1),
        )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, W, C) normalised windows -> (B, latent)."""
        h = self.encoder(x.transpose(1, 2))  # (B, H, W/8)
        return self.to_latent(h.flatten(1))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, latent) -> (B, W, C)."""
        h = self.from_latent(z).view(len(z), self.cfg.hidden, self.cfg.window // 8)
        return self.decoder(h).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encode(x)
        return self.decode(z), z


class FGDEncoder:
    """A trained autoencoder + its input normalisation: motion in, FGD features out.

    Args:
        model: the autoencoder (eval mode).
        mean, std: (in_dim,) normalisation of ``fgd_input`` channels (std already floored).
    """

    def __init__(self, model: MotionAutoencoder, mean: np.ndarray, std: np.ndarray, info: dict | None = None):
        self.model = model.eval()
        self.mean = np.asarray(mean, np.float32)
        self.std = np.asarray(std, np.float32)
        self.info = info or {}

    @property
    def cfg(self) -> FGDConfig:
        return self.model.cfg

    def normalise(self, motion: np.ndarray) -> np.ndarray:
        return (fgd_input(motion) - self.mean) / self.std

    @torch.no_grad()
    def features(self, motion: np.ndarray, stride: int | None = None) -> np.ndarray:
        """(T, 320) motion -> (N, latent) features of its windows (stride default window / 4)."""
        w = windows_of(self.normalise(motion), self.cfg.window, stride or self.cfg.window // 4)
        if len(w) == 0:
            return np.zeros((0, self.cfg.latent), np.float32)
        return np.concatenate([self.model.encode(torch.from_numpy(w[i:i + 512])).numpy()
                               for i in range(0, len(w), 512)])

    def save(self, path: str | Path, info: dict | None = None) -> Path:
        from models.checkpoint import save_model

        return save_model(path, self.model, kind="fgd", config=self.cfg.to_dict(),
                          extra={"norm_mean": torch.from_numpy(self.mean), "norm_std": torch.from_numpy(self.std)},
                          info={**self.info, **(info or {})})

    @classmethod
    def load(cls, path: str | Path) -> FGDEncoder:
        from models.checkpoint import load_model_file

        state, extra, meta = load_model_file(path, expect_kind="fgd")
        for k in ("norm_mean", "norm_std"):
            if k not in extra:
                raise ValueError(f"{path}: FGD encoder lacks extra.{k}; retrain with `python -m train.fgd_encoder`")
        model = MotionAutoencoder(FGDConfig.from_dict(meta["config"]))
        model.load_state_dict(state)
        return cls(model, extra["norm_mean"].numpy(), extra["norm_std"].numpy(), meta.get("info", {}))


def normalisation(seqs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and floored std of ``fgd_input`` over motion sequences."""
    x = np.concatenate([fgd_input(s) for s in seqs]).astype(np.float64)
    return x.mean(0).astype(np.float32), np.maximum(x.std(0), STD_FLOOR).astype(np.float32)


def train_encoder(seqs: list[np.ndarray], steps: int = 300, cfg: FGDConfig = FGDConfig(), batch_size: int = 64,
                  lr: float = 1e-3, seed: int = 0, progress: bool = True) -> FGDEncoder:
    """Train an encoder on motion sequences (T_i, 320) (each at least one window long).

    Loss: MSE reconstruction + 0.5 x MSE of first differences, over normalised channels.
    """
    seqs = [np.asarray(s, np.float32) for s in seqs if len(s) >= cfg.window]
    if not seqs:
        raise ValueError(f"train_encoder: no sequence of at least {cfg.window} frames")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    mean, std = normalisation(seqs)
    data = [(fgd_input(s) - mean) / std for s in seqs]
    lengths = np.array([len(d) - cfg.window + 1 for d in data], np.float64)
    model = MotionAutoencoder(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, steps), eta_min=lr * 0.1)
    model.train()
    bar = tqdm(range(steps), desc="fgd encoder", unit="step", disable=not progress, dynamic_ncols=True,
               file=sys.stderr)
    for _ in bar:
        which = rng.choice(len(data), size=batch_size, p=lengths / lengths.sum())
        starts = (rng.random(batch_size) * lengths[which]).astype(np.int64)
        x = torch.from_numpy(np.stack([data[i][s:s + cfg.window] for i, s in zip(which, starts)]))  # (B, W, C)
        rec, _ = model(x)
        loss = ((rec - x) ** 2).mean() + 0.5 * ((rec.diff(dim=1) - x.diff(dim=1)) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.4f}")
    return FGDEncoder(model.eval(), mean, std, {"steps": steps, "frames": int(sum(len(s) for s in seqs)),
                                                "final_loss": float(loss.item())})


def cache_sequences(cache_dir: str | Path, max_frames: int = 500_000, min_len: int = 32) -> list[np.ndarray]:
    """Valid runs (>= ``min_len`` frames) of a window cache's sequences, up to ``max_frames`` frames in total."""
    from train.dataset import load_cache

    cache = load_cache(cache_dir)
    out, total = [], 0
    for s in cache.sequences:
        a = cache.sequence_arrays(s.index)
        m, v = a["motion"], a["valid"]
        edges = np.flatnonzero(np.diff(np.concatenate([[0], v.astype(np.int8), [0]])))
        for lo, hi in zip(edges[::2], edges[1::2]):
            if hi - lo >= min_len:
                out.append(m[lo:hi])
                total += hi - lo
        if total >= max_frames:
            break
    cache.close()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.fgd_encoder", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", required=True, help="window cache (python -m train.data cache)")
    p.add_argument("--out", required=True, help="output .safetensors file")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--window", type=int, default=32, help="frames per window (multiple of 8)")
    p.add_argument("--latent", type=int, default=64, help="feature size per window")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--max-frames", type=int, default=500_000, help="frames of the cache to read at most")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    try:
        cfg = FGDConfig(window=a.window, latent=a.latent, hidden=a.hidden)
        seqs = cache_sequences(a.cache, a.max_frames, cfg.window)
        if not seqs:
            raise ValueError(f"{a.cache}: no valid run of at least {cfg.window} frames; rebuild the cache or lower "
                             "--window")
        enc = train_encoder(seqs, a.steps, cfg, a.batch_size, a.lr, a.seed)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    enc.save(a.out, {"cache": str(a.cache)})
    print(f"[fgd] {sum(len(s) for s in seqs)} frames, {a.steps} steps, final loss {enc.info['final_loss']:.4f} "
          f"-> {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
