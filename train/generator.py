"""Train the causal MambaTalk-MHR generator against frozen per-part VQ-VAEs.

    python -m train.generator --cache CACHE --vq RUN_VQ --out RUN [--config gen.yaml] [key=value ...]

Objective (the seed port's V3, all weights in the config): latent MSE (body 3, hand 3, face 3, global 3), code NLL
(body 1, hand 2, face 0), velocity losses on the *decoded* motion (frozen VQ decoders; body 0.5, hand 1.0, face 0.5,
global 2.0 on the 6D rotation) and foot-contact BCE; plus, optionally, MambaTalk's masked-motion pass.

Trained the way it serves: long windows processed in truncated-BPTT chunks that carry the recurrent state (detached)
from chunk to chunk, so the model sees states far from zero, exactly as the runtime does after minutes. Audio is
augmented on the waveform (gain, noise, reverb, band-limiting) and speakers are dropped to UNKNOWN at random, so
real microphones and unseen voices work. Output: RUN is a complete bundle (VQs copied in, generator, manifest).
"""
from __future__ import annotations

import argparse
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from models import layout
from models.bundle import load_vqs, write_manifest
from models.checkpoint import load_model_file, save_model
from models.features import LogMelFeatures
from models.generator import (
    GeneratorConfig,
    GeneratorOutput,
    MambaTalkMHR,
    delay,
    euler_to_rot6d,
    format_parameter_counts,
)
from train import common
from train.augment import AugmentConfig, augment_batch
from train.config import config_dict, load_config


@dataclass
class GenTrainConfig:
    preset: str = "tiny"
    lookahead: int = 2
    window: int = 384
    stride: int = 96
    tbptt_chunk: int = 128  # frames per backward; state carried (detached) across chunks of a window
    batch_size: int = 8
    steps: int = 3000
    lr: float = 1e-3
    lr_min_ratio: float = 0.1  # cosine decay to lr * ratio
    warmup: int = 100
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    w_latent: dict = field(default_factory=lambda: {"body": 3.0, "hand": 3.0, "face": 3.0, "global": 3.0})
    w_cls: dict = field(default_factory=lambda: {"body": 1.0, "hand": 2.0, "face": 0.0})
    w_vel: dict = field(default_factory=lambda: {"body": 0.5, "hand": 1.0, "face": 0.5, "global": 2.0})
    w_contact: float = 1.0
    masked_pass: bool = False  # MambaTalk's masked-motion modelling pass (doubles the cost)
    w_masked: float = 1.0
    seed_prob: float = 0.3  # fraction of items whose first seed_frames motion frames are observed
    speaker_dropout: float = 0.15  # replace the speaker by UNKNOWN
    augment: bool = True
    val_fraction: float = 0.1
    val_batches: int = 4
    val_every: int = 250
    log_every: int = 25
    ckpt_every: int = 250
    num_workers: int = 0
    seed: int = 0
    device: str = "auto"
    threads: int = 1  # torch intra-op threads; 1 is fastest on a shared 2-core CPU (2 threads can be 30x slower)
    overrides: dict = field(default_factory=dict)  # GeneratorConfig overrides, e.g. {hidden: 192}
    # recommended runtime output smoothing written into the bundle (realtime.smoothing; {} = off), e.g.
    # {body: 1.0, hand: 4.0, face: 3.0, global: 1.0} (One-Euro min cutoffs in Hz)
    runtime_smooth: dict = field(default_factory=dict)


@dataclass
class Targets:
    x: dict[str, torch.Tensor]  # part -> (B, T, C) normalised varying channels, delayed by L
    zq: dict[str, torch.Tensor]  # part -> (B, T, D) code vectors
    idx: dict[str, torch.Tensor]  # part -> (B, T) code ids
    rot6d: torch.Tensor  # (B, T, 6)
    contact: torch.Tensor  # (B, T, 4)
    valid: torch.Tensor  # (B, T) bool
    motion: torch.Tensor  # (B, T, M) motion-seed vector


@torch.no_grad()
def make_targets(batch: dict, vqs, norm, cfg: GeneratorConfig, device) -> Targets:
    L = cfg.lookahead
    motion = batch["motion"].to(device)
    valid = batch["valid"].to(device).bool()
    x, zq, idx = {}, {}, {}
    for p in cfg.parts:
        mean, std = norm[p]
        xp = (motion[..., torch.as_tensor(layout.VARYING[p], device=device)] - mean) / std
        xp = torch.where(valid[..., None], xp, torch.zeros_like(xp))  # masked frames never reach the VQ as NaN
        q = vqs[p].quantize(vqs[p].encode(xp))
        x[p], zq[p], idx[p] = delay(xp, L), delay(q.zq, L), delay(q.indices[..., None], L)[..., 0]
    rot6d = delay(euler_to_rot6d(motion[..., layout.GLOBAL_ROT]), L)
    contact = delay(motion[..., layout.CONTACT], L)
    v = delay(valid[..., None].float(), L)[..., 0] > 0.5  # indices t < L hold no motion frame
    seed_vec = torch.cat([x[p] for p in cfg.parts] + [rot6d, contact], -1)
    return Targets(x, zq, idx, rot6d, contact, v, seed_vec)


def _masked_mean(err: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Mean of (B, T, ...) errors over the (B, T) mask."""
    e = err.reshape(*err.shape[:2], -1).mean(-1)
    return (e * m).sum() / m.sum().clamp_min(1.0)


def chunk_loss(out: GeneratorOutput, tg: Targets, sl: slice, vqs, w: GenTrainConfig, dec_tail: dict
               ) -> tuple[torch.Tensor, dict[str, float], dict]:
    """Loss of one chunk (time slice ``sl`` of the targets). ``dec_tail`` carries decoder left context."""
    m = tg.valid[:, sl].float()
    mv = m[:, 1:] * m[:, :-1]
    total = out.global_rot6d.new_zeros(())
    logs: dict[str, float] = {}
    new_tail = {}
    for p, lat in out.latents.items():
        l_lat = _masked_mean((lat - tg.zq[p][:, sl]) ** 2, m)
        total = total + w.w_latent.get(p, 0.0) * l_lat
        logs[f"latent_{p}"] = l_lat.item()
        if p in out.logits and w.w_cls.get(p, 0.0) > 0:
            ce = F.cross_entropy(out.logits[p].transpose(1, 2), tg.idx[p][:, sl], reduction="none")
            l_cls = (ce * m).sum() / m.sum().clamp_min(1.0)
            total = total + w.w_cls[p] * l_cls
            logs[f"cls_{p}"] = l_cls.item()
        if w.w_vel.get(p, 0.0) > 0:
            left = vqs[p].receptive_field[0]
            ctx = dec_tail.get(p)
            seq = lat if ctx is None else torch.cat([ctx, lat], 1)
            dec = vqs[p].decode(seq)[:, seq.shape[1] - lat.shape[1]:]  # (B, T, C) decoded prediction
            new_tail[p] = seq[:, -left:].detach() if left > 0 else None
            vel_err = ((dec[:, 1:] - dec[:, :-1]) - (tg.x[p][:, sl][:, 1:] - tg.x[p][:, sl][:, :-1])) ** 2
            l_vel = _masked_mean(vel_err, mv)
            total = total + w.w_vel[p] * l_vel
            logs[f"vel_{p}"] = l_vel.item()
    rot = out.global_rot6d
    l_rot = _masked_mean((rot - tg.rot6d[:, sl]) ** 2, m)
    l_rvel = _masked_mean(((rot[:, 1:] - rot[:, :-1]) - (tg.rot6d[:, sl][:, 1:] - tg.rot6d[:, sl][:, :-1])) ** 2, mv)
    l_con = _masked_mean(F.binary_cross_entropy_with_logits(out.contact, tg.contact[:, sl], reduction="none"), m)
    total = total + w.w_latent.get("global", 0.0) * l_rot + w.w_vel.get("global", 0.0) * l_rvel + w.w_contact * l_con
    logs.update(rot=l_rot.item(), vel_global=l_rvel.item(), contact=l_con.item(), total=total.item())
    return total, logs, new_tail


def generation_mask(tg: Targets, cfg: GeneratorConfig, seed_prob: float, g: torch.Generator) -> torch.Tensor:
    """All masked except, for some items, the first ``seed_frames`` real frames (MambaTalk's pre-frames)."""
    B, T, M = tg.motion.shape
    mask = torch.ones(B, T, M, dtype=torch.bool, device=tg.motion.device)
    L, S = cfg.lookahead, cfg.seed_frames
    has_seed = (torch.rand(B, generator=g) < seed_prob).to(mask.device)
    mask[has_seed, L:L + S] = False
    return mask


class Trainer:
    def __init__(self, cache: str | Path, vq_dir: str | Path, out: str | Path, cfg: GenTrainConfig,
                 quiet: bool = False):
        from train.dataset import WindowDataset, load_cache

        self.cfg, self.out, self.quiet = cfg, Path(out), quiet
        self.out.mkdir(parents=True, exist_ok=True)
        self.device = common.pick_device(cfg.device)
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        self.dist = common.setup_distributed(self.device)
        common.seed_everything(cfg.seed + self.dist.rank)
        self.cache_dir, self.vq_dir = Path(cache), Path(vq_dir)
        self.cache = load_cache(cache)
        self.vqs, self.norm, self.skipped = load_vqs(vq_dir, self.device)
        for v in self.vqs.values():
            v.requires_grad_(False)
        first = next(iter(self.vqs.values())).cfg
        self.speakers = list(self.cache.speakers)
        self.gcfg = GeneratorConfig.preset(
            cfg.preset, lookahead=cfg.lookahead, n_speakers=len(self.speakers), code_dim=first.code_dim,
            codebook_size=first.codebook_size, part_dims={p: v.cfg.in_dim for p, v in self.vqs.items()},
            **cfg.overrides)
        self.model = MambaTalkMHR(self.gcfg).to(self.device)
        fstats = self.cache.feature_stats()
        self.model.set_audio_stats(torch.as_tensor(fstats[0]), torch.as_tensor(fstats[1]))
        if self.dist.main and not quiet:
            print(f"[generator] preset {cfg.preset}, parts {self.gcfg.parts}, L={cfg.lookahead}, "
                  f"{len(self.speakers)} speakers\n{format_parameter_counts(self.model)}")
        if self.dist.world > 1:  # data parallel by hand: same initial weights, gradients averaged per step
            # (DDP's hooks do not fit truncated BPTT, where each step runs several forward/backward chunks whose
            # outputs include the carried state)
            for t in self.model.state_dict().values():
                dist.broadcast(t, 0)
        self.features = LogMelFeatures().to(self.device)
        self.train_ds = WindowDataset(cache, window=cfg.window, stride=cfg.stride, split="train",
                                      val_fraction=cfg.val_fraction, seed=cfg.seed)
        self.val_ds = WindowDataset(cache, window=cfg.window, stride=cfg.window, split="val",
                                    val_fraction=cfg.val_fraction, seed=cfg.seed)
        if len(self.train_ds) == 0:
            raise ValueError(f"{cache}: no training window of {cfg.window} frames; lower window= or add data")
        sampler = (DistributedSampler(self.train_ds, self.dist.world, self.dist.rank, seed=cfg.seed)
                   if self.dist.world > 1 else None)
        self.loader = DataLoader(self.train_ds, batch_size=cfg.batch_size, shuffle=sampler is None, sampler=sampler,
                                 drop_last=True, num_workers=cfg.num_workers)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                     betas=(0.9, 0.99))
        self.g = torch.Generator().manual_seed(cfg.seed + 1000 * self.dist.rank)
        self.ckpt, self.resume = self.out / "generator.safetensors", self.out / "generator.resume.pt"
        self.step = 0

    # ---- data --------------------------------------------------------------------------------------------------
    def audio_features(self, batch: dict, augment: bool) -> torch.Tensor:
        if "audio" not in batch:
            return batch["features"].to(self.device)
        wave = batch["audio"].to(self.device).float()
        if augment:
            wave = augment_batch(wave.cpu(), AugmentConfig(), self.g).to(self.device)
        feats, _ = self.features(wave)
        return feats[:, : batch["motion"].shape[1]]

    def speakers_of(self, batch: dict, train: bool) -> torch.Tensor:
        spk = batch["speaker"].to(self.device).long()
        if train and self.cfg.speaker_dropout > 0:
            drop = (torch.rand(spk.shape, generator=self.g) < self.cfg.speaker_dropout).to(self.device)
            spk = torch.where(drop, torch.full_like(spk, self.gcfg.unknown_speaker), spk)
        return spk

    # ---- one window --------------------------------------------------------------------------------------------
    def window_pass(self, batch: dict, train: bool) -> dict[str, float]:
        cfg = self.cfg
        audio = self.audio_features(batch, augment=train and cfg.augment)
        spk = self.speakers_of(batch, train)
        tg = make_targets(batch, self.vqs, self.norm, self.gcfg, self.device)
        passes = [generation_mask(tg, self.gcfg, cfg.seed_prob, self.g)]
        if train and cfg.masked_pass:
            ratio = 0.05 + 0.95 * min(1.0, self.step / max(cfg.steps, 1))
            passes.append(torch.rand(tg.motion.shape, generator=self.g).to(self.device) < ratio)
        T = audio.shape[1]
        C = cfg.tbptt_chunk if cfg.tbptt_chunk > 0 else T
        agg: dict[str, float] = {}
        n = 0
        for k, mask in enumerate(passes):
            state = self.model.init_state(audio.shape[0], self.device)
            tail: dict = {}
            for s in range(0, T, C):
                sl = slice(s, min(T, s + C))
                out, state = self.model.step(audio[:, sl], spk, state, tg.motion[:, sl], mask[:, sl])
                loss, logs, tail = chunk_loss(out, tg, sl, self.vqs, cfg, tail)
                if k > 0:
                    loss = loss * cfg.w_masked
                if train:
                    loss.backward()
                state = state.detach()
                for key, v in logs.items():
                    agg[key] = agg.get(key, 0.0) + v
                n += 1
        return {k: v / n for k, v in agg.items()}

    def lr_at(self, step: int) -> float:
        import math

        cfg = self.cfg
        if step < cfg.warmup:
            return cfg.lr * (step + 1) / cfg.warmup
        t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return cfg.lr * (cfg.lr_min_ratio + (1 - cfg.lr_min_ratio) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        if len(self.val_ds) == 0:
            return {}
        self.model.eval()
        loader = DataLoader(self.val_ds, batch_size=self.cfg.batch_size, shuffle=False)
        agg: dict[str, float] = {}
        n = 0
        for i, batch in enumerate(loader):
            if i >= self.cfg.val_batches:
                break
            for k, v in self.window_pass(batch, train=False).items():
                agg[k] = agg.get(k, 0.0) + v
            n += 1
        self.model.train()
        return {k: v / max(n, 1) for k, v in agg.items()}

    def save(self) -> None:
        if not self.dist.main:
            return
        save_model(self.ckpt, self.model, kind="generator", config=self.gcfg.to_dict(),
                   info={"step": self.step, "train": config_dict(self.cfg), "cache": str(self.cache_dir),
                         "vq": str(self.vq_dir), "speakers": self.speakers})
        common.save_resume(self.resume, self.step, self.opt)
        for p in list(self.vqs) + list(self.skipped):  # make RUN a complete bundle
            for suffix in (".safetensors", ".skipped.json"):
                src = self.vq_dir / f"vq_{p}{suffix}"
                if src.is_file() and src.resolve() != (self.out / src.name).resolve():
                    shutil.copyfile(src, self.out / src.name)
        write_manifest(self.out, speakers=self.speakers, skipped_parts=self.skipped,
                       default_constants=self.cache.mean_constants(),
                       info={"step": self.step, "lookahead": self.cfg.lookahead, "preset": self.cfg.preset},
                       runtime={"smooth_hz": dict(self.cfg.runtime_smooth)} if self.cfg.runtime_smooth else {})

    def run(self) -> Path:
        cfg = self.cfg
        state = common.load_resume(self.resume)
        if state is not None and self.ckpt.is_file():
            sd, _, _ = load_model_file(self.ckpt, "generator")
            self.model.load_state_dict(sd)
            self.opt.load_state_dict(state["optimizer"])
            self.step = int(state["step"])
            if not self.quiet:
                print(f"[generator] resumed at step {self.step} from {self.resume}")
        logger = common.RunLogger(self.out / "tb" / "generator", enabled=self.dist.main)
        bar = tqdm(total=cfg.steps, initial=self.step, desc="generator", disable=not self.dist.main or self.quiet,
                   dynamic_ncols=True)
        batches = common.infinite(self.loader)
        self.model.train()
        while self.step < cfg.steps:
            for group in self.opt.param_groups:
                group["lr"] = self.lr_at(self.step)
            self.opt.zero_grad(set_to_none=True)
            logs = self.window_pass(next(batches), train=True)
            if self.dist.world > 1:
                for p in self.model.parameters():
                    if p.grad is None:
                        p.grad = torch.zeros_like(p)
                    dist.all_reduce(p.grad)
                    p.grad /= self.dist.world
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            self.opt.step()
            self.step += 1
            bar.update(1)
            if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                logger.scalars(self.step, logs, "train/")
                bar.set_postfix(loss=f"{logs['total']:.3f}", rot=f"{logs['rot']:.4f}")
            if cfg.val_every and self.step % cfg.val_every == 0:
                val = self.validate()
                logger.scalars(self.step, val, "val/")
                if self.dist.main and not self.quiet and val:
                    tqdm.write(f"[generator] step {self.step} val total {val['total']:.4f}")
            if self.step % cfg.ckpt_every == 0:
                self.save()
        bar.close()
        self.save()
        logger.close()
        if self.dist.main and not self.quiet:
            print(f"[generator] wrote bundle {self.out}")
        return self.out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.generator", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", required=True, help="window cache (python -m train.data cache)")
    p.add_argument("--vq", required=True, help="directory with vq_<part>.safetensors (python -m train.vq)")
    p.add_argument("--out", required=True, help="run directory; becomes a complete checkpoint bundle")
    p.add_argument("--config", help="YAML/JSON with GenTrainConfig keys")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. steps=500 lookahead=4")
    a = p.parse_args(argv)
    cfg = load_config(GenTrainConfig, a.config, a.overrides)
    try:
        Trainer(a.cache, a.vq, a.out, cfg).run()
    finally:
        common.cleanup_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main())
