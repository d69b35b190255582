"""Train one part's causal VQ-VAE on a window cache.

    python -m train.vq --part body --cache CACHE --out RUN [--config vq.yaml] [key=value ...]

Loss: MSE reconstruction + velocity MSE (first differences, so the decoder does not add jitter) + the quantizer's
commitment loss, over valid frames of normalised varying channels. A part whose channels are constant in the
dataset (real SAM 3D Body output: expression and jaw are all zero) is skipped with a message, and RUN records it in
``vq_<part>.skipped.json`` so the bundle and the runtime know. Checkpoints: ``RUN/vq_<part>.safetensors``
(+ ``.resume.pt``; a killed run resumes from the last interval). Works under ``torchrun`` (DDP).
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from models import layout
from models.checkpoint import save_model
from models.vqvae import PartVQVAE, VQConfig, count_parameters
from train import common
from train.config import config_dict, load_config


@dataclass
class VQTrainConfig:
    window: int = 64
    stride: int = 16
    batch_size: int = 32
    steps: int = 1500
    lr: float = 3e-4
    weight_decay: float = 0.0
    vel_weight: float = 1.0
    grad_clip: float = 1.0
    code_dim: int = 128
    codebook_size: int = 256
    hidden: int = 128
    n_layers: int = 2
    lookahead: int = 0
    beta: float = 0.25
    val_fraction: float = 0.1
    log_every: int = 50
    ckpt_every: int = 250
    num_workers: int = 0
    seed: int = 0
    device: str = "auto"
    threads: int = 1  # torch intra-op threads; 1 is fastest on a shared 2-core CPU (2 threads can be 30x slower)
    constant_std: float = 1e-6  # a channel whose std is below this is constant


def part_stats(cache, part: str, eps: float) -> tuple[np.ndarray, np.ndarray, bool]:
    """(mean, std, is_constant) over the part's varying channels from the cache statistics."""
    idx = layout.VARYING[part]
    mean = np.asarray(cache.stats["mean"], np.float64)[idx]
    std = np.asarray(cache.stats["std"], np.float64)[idx]
    constant = bool((std < eps).all())
    std = np.where(std < eps, 1.0, std)  # a constant channel is left as (x - mean): always 0
    return mean.astype(np.float32), std.astype(np.float32), constant


def vq_loss(model, x: torch.Tensor, valid: torch.Tensor, vel_weight: float):
    x = torch.where(valid[..., None], x, torch.zeros_like(x))  # masked (NaN-at-source) frames never reach the VQ
    recon, q = model(x, valid)  # masked frames stay out of the codebook update and the commitment loss
    m = valid[..., None].float()
    denom = m.sum().clamp_min(1.0) * x.shape[-1]
    rec = (((recon - x) ** 2) * m).sum() / denom
    mv = (m[:, 1:] * m[:, :-1])
    vel = ((((recon[:, 1:] - recon[:, :-1]) - (x[:, 1:] - x[:, :-1])) ** 2) * mv).sum() / (
        mv.sum().clamp_min(1.0) * x.shape[-1])
    return rec + vel_weight * vel + q.loss, {"rec": rec.item(), "vel": vel.item(), "commit": q.loss.item(),
                                              "perplexity": q.perplexity.item(), "usage": q.usage.item()}


def train_vq(part: str, cache_dir: str | Path, out: str | Path, cfg: VQTrainConfig, quiet: bool = False) -> Path:
    """Train and write ``out/vq_<part>.safetensors`` (or ``vq_<part>.skipped.json``). Returns the written path."""
    from train.dataset import WindowDataset, load_cache

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    device = common.pick_device(cfg.device)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    d = common.setup_distributed(device)
    common.seed_everything(cfg.seed + d.rank)
    cache = load_cache(cache_dir)
    mean, std, constant = part_stats(cache, part, cfg.constant_std)
    if constant:
        path = out / f"vq_{part}.skipped.json"
        msg = (f"part {part!r}: all its channels are constant in {cache_dir} (e.g. SAM 3D Body zeroes expression "
               f"and jaw): nothing to learn, VQ skipped. The runtime drives the jaw from the audio envelope.")
        print(msg)
        if d.main:
            path.write_text(json.dumps({"part": part, "skipped": True, "reason": "constant in the dataset",
                                        "message": msg}, indent=1))
        return path
    idx = torch.as_tensor(layout.VARYING[part])
    mean_t, std_t = torch.from_numpy(mean).to(device), torch.from_numpy(std).to(device)
    vq_cfg = VQConfig(part=part, in_dim=len(idx), code_dim=cfg.code_dim, codebook_size=cfg.codebook_size,
                      hidden=cfg.hidden, n_layers=cfg.n_layers, lookahead=cfg.lookahead, beta=cfg.beta)
    model = PartVQVAE(vq_cfg).to(device)
    if d.main and not quiet:
        print(f"[vq:{part}] {count_parameters(model):,} parameters, receptive field {model.receptive_field}")
    ds = WindowDataset(cache_dir, window=cfg.window, stride=cfg.stride, split="train",
                       val_fraction=cfg.val_fraction, seed=cfg.seed)
    if len(ds) == 0:
        raise ValueError(f"{cache_dir}: no training window of {cfg.window} frames; lower window= or add data")
    sampler = DistributedSampler(ds, num_replicas=d.world, rank=d.rank, seed=cfg.seed) if d.world > 1 else None
    loader = DataLoader(ds, batch_size=cfg.batch_size, shuffle=sampler is None, sampler=sampler, drop_last=True,
                        num_workers=cfg.num_workers, persistent_workers=cfg.num_workers > 0)
    net = DDP(model) if d.world > 1 else model
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99))
    ckpt, resume = out / f"vq_{part}.safetensors", out / f"vq_{part}.resume.pt"
    step = 0
    state = common.load_resume(resume)
    if state is not None and ckpt.is_file():
        from models.checkpoint import load_model_file

        sd, _, _ = load_model_file(ckpt, "vq")
        model.load_state_dict(sd)
        opt.load_state_dict(state["optimizer"])
        step = int(state["step"])
        print(f"[vq:{part}] resumed at step {step} from {resume}")
    logger = common.RunLogger(out / "tb" / f"vq_{part}", enabled=d.main)
    batches = common.infinite(loader)
    bar = tqdm(total=cfg.steps, initial=step, desc=f"vq {part}", disable=not d.main or quiet, dynamic_ncols=True)

    def write(step_: int) -> None:
        if not d.main:
            return
        save_model(ckpt, model, kind="vq", config=vq_cfg.to_dict(),
                   extra={"norm_mean": mean_t.cpu(), "norm_std": std_t.cpu()},
                   info={"step": step_, "train": config_dict(cfg), "cache": str(cache_dir)})
        common.save_resume(resume, step_, opt)

    model.train()
    while step < cfg.steps:
        batch = next(batches)
        x = ((batch["motion"][..., idx].to(device) - mean_t) / std_t)
        valid = batch["valid"].to(device).bool()
        loss, logs = vq_loss(net, x, valid, cfg.vel_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        step += 1
        bar.update(1)
        if step % cfg.log_every == 0 or step == cfg.steps:
            logger.scalars(step, logs, prefix=f"vq_{part}/")
            bar.set_postfix(rec=f"{logs['rec']:.4f}", vel=f"{logs['vel']:.4f}", ppl=f"{logs['perplexity']:.0f}")
        if step % cfg.ckpt_every == 0:
            write(step)
    bar.close()
    write(step)
    logger.close()
    if d.main and not quiet:
        print(f"[vq:{part}] wrote {ckpt}")
    return ckpt


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.vq", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", required=True, choices=layout.VQ_PARTS)
    p.add_argument("--cache", required=True, help="window cache built by `python -m train.data cache`")
    p.add_argument("--out", required=True, help="run directory (checkpoints, TensorBoard logs)")
    p.add_argument("--config", help="YAML/JSON file with VQTrainConfig keys")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. steps=3000 lr=1e-4")
    a = p.parse_args(argv)
    cfg = load_config(VQTrainConfig, a.config, a.overrides)
    try:
        train_vq(a.part, a.cache, a.out, cfg)
    finally:
        common.cleanup_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main())
