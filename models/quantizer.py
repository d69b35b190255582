"""Vector quantizer for the per-part VQ-VAEs: nearest code by squared L2, EMA codebook, dead-code restart.

Why EMA (and not a learnable codebook as in EMAGE/MambaTalk): the codebook update then does not depend on the
optimiser (EMAGE trains with Adam beta1=0.5 at lr 1.5e-4, where a gradient-trained codebook drifts slowly and
collapses onto a few codes). The EMA update moves each code to the running mean of the encoder outputs assigned
to it, with Laplace smoothing so rarely used codes do not divide by ~0. EMA alone cannot move a code that is never
picked, so codes whose EMA count falls below ``dead_code_threshold`` are restarted from random encoder outputs of
the current batch (Jukebox-style). The codebook is also initialised from encoder outputs of the first training
batch, so no code starts far away from the data. With an EMA codebook the VQ loss is only the commitment term
``beta * mean((z - sg(zq))^2)``: the codebook term of EMAGE's loss has no learnable parameter here.

All codebook state lives in buffers (saved in checkpoints, never touched by the optimiser); updates happen only in
training mode.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def nonfinite_message(part: str) -> str:
    """The one error message for NaN/Inf reaching a VQ model (see seed lesson 2: never nan_to_num)."""
    return f"NaN/Inf in {part} VQ input: reject or mask the frames at ingestion (train.data check)"


def check_finite(x: Tensor, part: str, where: str) -> None:
    """Raise ValueError if ``x`` holds NaN or Inf.

    Args:
        x: any float tensor.
        part: part name for the message ('body' | 'hand' | 'face').
        where: which input was checked (e.g. 'encode()'), appended to the message.
    """
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{nonfinite_message(part)} [{bad} non-finite values in {where}, shape {tuple(x.shape)}]")


@dataclass
class QuantizeResult:
    """Output of ``VectorQuantizer.forward``.

    Attributes:
        zq: (B, T, D) quantized latents; straight-through (gradient flows to z) when z requires grad, otherwise the
            exact codebook vectors.
        indices: (B, T) long code ids, always in [0, codebook_size).
        loss: scalar commitment loss ``beta * mean((z - sg(zq))^2)``.
        perplexity: scalar exp(entropy) of this batch's code histogram (1 = collapse, K = uniform).
        usage: scalar fraction of codebook entries used at least once in this batch.
        counts: (K,) float histogram of this batch's code ids (valid frames only).
    """

    zq: Tensor
    indices: Tensor
    loss: Tensor
    perplexity: Tensor
    usage: Tensor
    counts: Tensor


class VectorQuantizer(nn.Module):
    """EMA vector quantizer with Laplace smoothing and dead-code restart.

    Args:
        codebook_size: number of codes K.
        code_dim: code vector size D.
        beta: commitment loss weight.
        decay: EMA decay of the code counts and sums (0.99).
        dead_code_threshold: a code whose EMA count (assignments per training step) is below this is restarted from
            a random encoder output of the current batch; 0 disables restarts.
        eps: Laplace smoothing constant.
        part: part name, used in error messages.

    Buffers: ``embed`` (K, D) codebook, ``embed_sum`` (K, D) and ``cluster_size`` (K,) EMA statistics (usage counts),
    ``initialized``; ``restarts`` (not saved) is the number of codes restarted by the last training update.
    """

    def __init__(self, codebook_size: int, code_dim: int, beta: float = 0.25, decay: float = 0.99,
                 dead_code_threshold: float = 1.0, eps: float = 1e-5, part: str = "body"):
        super().__init__()
        self.codebook_size = codebook_size
        self.code_dim = code_dim
        self.beta = beta
        self.decay = decay
        self.dead_code_threshold = dead_code_threshold
        self.eps = eps
        self.part = part
        embed = torch.empty(codebook_size, code_dim).uniform_(-1.0 / codebook_size, 1.0 / codebook_size)
        self.register_buffer("embed", embed)  # (K, D) the codebook
        self.register_buffer("embed_sum", embed.clone())  # (K, D) EMA of the sum of assigned z
        self.register_buffer("cluster_size", torch.ones(codebook_size))  # (K,) EMA of assignment counts
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        self.register_buffer("restarts", torch.zeros((), dtype=torch.long), persistent=False)  # in the last update

    @property
    def restart_count(self) -> float:
        """EMA count given to a freshly (re)started code: it stays alive only if it is used enough next step."""
        return self.dead_code_threshold if self.dead_code_threshold > 0 else 1.0

    def nearest(self, z: Tensor) -> Tensor:
        """Code ids of the nearest codebook entries by squared L2.

        Args:
            z: (N, D) finite latents.

        Returns:
            (N,) long ids in [0, K). ``|z|^2`` is dropped (constant per row), so inputs up to ~1e36 do not overflow.
        """
        embed = self.embed.float()
        dist = (embed * embed).sum(1)[None, :] - 2.0 * z.float() @ embed.t()  # (N, K)
        return dist.argmin(dim=1)

    def lookup(self, indices: Tensor) -> Tensor:
        """Codebook vectors for ids: (B, T) long -> (B, T, D). Raises ValueError for ids outside [0, K)."""
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.codebook_size):
            raise ValueError(f"{self.part} VQ code ids must be in [0, {self.codebook_size}), got "
                             f"[{int(indices.min())}, {int(indices.max())}]: check the checkpoint's codebook_size")
        return F.embedding(indices, self.embed)

    def forward(self, z: Tensor, valid: Tensor | None = None) -> QuantizeResult:
        """Quantize latents (updates the codebook in training mode).

        Args:
            z: (B, T, D) encoder outputs.
            valid: optional (B, T) bool, False for frames masked at ingestion: they still get an index, but are
                left out of the codebook update, the loss and the statistics.

        Returns:
            QuantizeResult.
        """
        check_finite(z, self.part, "quantize()")
        b, t, d = z.shape
        flat = z.detach().reshape(b * t, d).float()  # (N, D)
        keep = None if valid is None else valid.reshape(b * t).to(device=z.device, dtype=torch.bool)  # (N,)
        stats = flat if keep is None else flat[keep]  # (N_valid, D)
        update = self.training and stats.shape[0] > 0
        if update and not bool(self.initialized):  # data-dependent init: codes start on encoder outputs
            self._restart(stats, torch.ones(self.codebook_size, dtype=torch.bool, device=flat.device))
            self.initialized.fill_(True)
        indices = self.nearest(flat)  # (N,)
        zq = F.embedding(indices, self.embed).view(b, t, d).to(z.dtype)  # (B, T, D) codebook before the update
        used = indices if keep is None else indices[keep]  # (N_valid,)
        if update:
            self._update(stats, used)
        if keep is None:
            loss = self.beta * F.mse_loss(z, zq.detach()) if z.numel() else z.new_zeros(())
        else:
            m = keep.view(b, t, 1).to(z.dtype)
            loss = self.beta * (((z - zq.detach()) ** 2) * m).sum() / (m.sum() * d).clamp_min(1.0)
        counts = torch.bincount(used, minlength=self.codebook_size).float()  # (K,)
        probs = counts / counts.sum().clamp_min(1.0)
        perplexity = torch.exp(-(probs * torch.log(probs.clamp_min(1e-10))).sum())
        usage = (counts > 0).float().mean()
        if z.requires_grad:
            zq = z + (zq - z).detach()  # straight-through estimator
        return QuantizeResult(zq=zq, indices=indices.view(b, t), loss=loss, perplexity=perplexity, usage=usage,
                              counts=counts)

    @torch.no_grad()
    def _update(self, flat: Tensor, indices: Tensor) -> None:
        """One EMA step on this batch's assignments, then restart dead codes. flat: (N, D) float, indices: (N,)."""
        counts = torch.bincount(indices, minlength=self.codebook_size).float()  # (K,)
        sums = torch.zeros_like(self.embed_sum).index_add_(0, indices, flat)  # (K, D)
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1.0 - self.decay)
        self.embed_sum.mul_(self.decay).add_(sums, alpha=1.0 - self.decay)
        total = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (total + self.codebook_size * self.eps) * total  # Laplace
        self.embed.copy_(self.embed_sum / smoothed[:, None])
        if self.dead_code_threshold > 0:
            dead = self.cluster_size < self.dead_code_threshold  # (K,)
            self.restarts.fill_(int(dead.sum()))
            if bool(dead.any()):
                self._restart(flat, dead)

    @torch.no_grad()
    def _restart(self, flat: Tensor, which: Tensor) -> None:
        """Set codes ``which`` (K,) bool to random rows of ``flat`` (N, D), with a fresh EMA count."""
        n_codes = int(which.sum())
        pick = torch.randint(0, flat.shape[0], (n_codes,), device=flat.device)
        if flat.shape[0] >= n_codes:  # distinct samples when the batch is large enough
            pick = torch.randperm(flat.shape[0], device=flat.device)[:n_codes]
        samples = flat[pick]  # (n_codes, D)
        self.embed[which] = samples
        self.embed_sum[which] = samples * self.restart_count
        self.cluster_size[which] = self.restart_count
