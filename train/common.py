"""Shared training plumbing: device, distributed (torchrun/DDP), logging (tqdm + TensorBoard), resumable state.

Resume files hold optimiser state and counters; they are written by us and read back with
``torch.load(weights_only=True)`` (tensors and plain containers only: no arbitrary unpickling). Model weights that
leave a run are safetensors (``models.checkpoint``).
"""
from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: torch.device) -> Dist:
    """Initialise torch.distributed when launched by torchrun (gloo on CPU, nccl on CUDA); no-op otherwise."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Dist()
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    d = Dist(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=int(os.environ.get("LOCAL_RANK", 0)))
    if device.type == "cuda":
        torch.cuda.set_device(d.local_rank)
    return d


def cleanup_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_mean(x: torch.Tensor, d: Dist) -> torch.Tensor:
    if d.world > 1:
        x = x.detach().clone()
        dist.all_reduce(x)
        x /= d.world
    return x


class RunLogger:
    """TensorBoard scalars (rank 0 only) + a concise line printer."""

    def __init__(self, log_dir: str | Path | None, enabled: bool = True):
        self.writer = None
        if log_dir and enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(log_dir))
            except Exception as e:  # noqa: BLE001 - TensorBoard is optional at run time
                print(f"[log] TensorBoard unavailable ({e}); logging to stdout only")
        self.t0 = time.time()

    def scalars(self, step: int, values: dict[str, float], prefix: str = "") -> None:
        if self.writer is None:
            return
        for k, v in values.items():
            self.writer.add_scalar(f"{prefix}{k}", float(v), step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()


def save_resume(path: str | Path, step: int, optimizer: torch.optim.Optimizer, extra: dict[str, Any] | None = None
                ) -> None:
    """Atomic write of the optimiser state + counters (model weights go to the safetensors checkpoint)."""
    path = Path(path)
    tmp = path.with_suffix(".tmp")
    torch.save({"step": step, "optimizer": optimizer.state_dict(), "extra": extra or {},
                "rng": torch.get_rng_state()}, tmp)
    tmp.replace(path)


def load_resume(path: str | Path) -> dict[str, Any] | None:
    path = Path(path)
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)


def infinite(loader):
    """Yield batches forever (re-iterating the loader each epoch; DistributedSampler epochs advance)."""
    epoch = 0
    while True:
        sampler = getattr(loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        yield from loader
        epoch += 1
