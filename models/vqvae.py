"""Per-part causal VQ-VAE (EMAGE/MambaTalk VQEncoderV5/VQDecoderV5 layout, made causal with bounded look-ahead).

One code per frame (no temporal down-sampling), LeakyReLU(0.2), no norm, xavier-normal init. Every convolution is
a ``CausalConv1d``: output frame t sees inputs up to t + (that layer's look-ahead). The encoder is causal
(``encoder_lookahead`` frames, 0 by default: it only runs on training data and targets). The decoder sees past codes
and at most ``lookahead`` = R future codes in total, all taken by its first convolutions, so a streaming runtime
emits frame t as soon as code t + R arrives. ``decode_stream`` does that with a fixed-size buffer of the last
``left + R`` codes and gives exactly the frames of a whole-sequence ``decode``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.quantizer import QuantizeResult, VectorQuantizer, check_finite

PARTS = ("body", "hand", "face")
MAX_LOOKAHEAD = 4  # frames of future codes the decoder may use (latency budget: 4 frames = 133 ms)
NEGATIVE_SLOPE = 0.2


@dataclass(frozen=True)
class VQConfig:
    """Hyper-parameters of one part's VQ-VAE (stored as JSON in checkpoints).

    Args:
        part: 'body' | 'hand' | 'face'.
        in_dim: channels per frame of this part's normalised varying parameters.
        code_dim: latent / code vector size.
        codebook_size: number of codes.
        hidden: conv channels.
        n_layers: EMAGE ``vae_layer`` (encoder stages; the decoder has n_layers - 1 extra convs).
        kernel_size: temporal kernel of every conv (dilation 1).
        lookahead: R, future codes the decoder sees (0..MAX_LOOKAHEAD); output frame t needs codes <= t + R.
        encoder_lookahead: future input frames the encoder sees (0 = causal).
        beta: commitment loss weight.
        ema_decay: codebook EMA decay.
        dead_code_threshold: EMA count (assignments per step) below which a code is restarted; 0 disables.
    """

    part: str
    in_dim: int
    code_dim: int = 256
    codebook_size: int = 256
    hidden: int = 256
    n_layers: int = 2
    kernel_size: int = 3
    lookahead: int = 1
    encoder_lookahead: int = 0
    beta: float = 0.25
    ema_decay: float = 0.99
    dead_code_threshold: float = 1.0

    def __post_init__(self):
        if self.part not in PARTS:
            raise ValueError(f"VQConfig.part must be one of {PARTS}, got {self.part!r}")
        for name in ("in_dim", "code_dim", "codebook_size", "hidden", "n_layers", "kernel_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"VQConfig.{name} must be >= 1, got {getattr(self, name)}")
        dec_cap = decoder_conv_count(self.n_layers) * (self.kernel_size - 1)
        if not 0 <= self.lookahead <= min(MAX_LOOKAHEAD, dec_cap):
            raise ValueError(f"VQConfig.lookahead must be in [0, {min(MAX_LOOKAHEAD, dec_cap)}] "
                             f"(MAX_LOOKAHEAD={MAX_LOOKAHEAD}, decoder capacity {dec_cap}), got {self.lookahead}")
        enc_cap = encoder_conv_count(self.n_layers) * (self.kernel_size - 1)
        if not 0 <= self.encoder_lookahead <= enc_cap:
            raise ValueError(f"VQConfig.encoder_lookahead must be in [0, {enc_cap}], got {self.encoder_lookahead}")
        if not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"VQConfig.ema_decay must be in (0, 1), got {self.ema_decay}")
        if self.dead_code_threshold < 0 or self.beta < 0:
            raise ValueError("VQConfig.dead_code_threshold and VQConfig.beta must be >= 0")

    def to_dict(self) -> dict:
        """JSON-safe dict (all values are str/int/float)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> VQConfig:
        """Inverse of ``to_dict``; unknown keys raise ValueError naming them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown VQConfig key(s) {unknown}; known keys: {sorted(known)} "
                             "(checkpoint written by a newer version? update the code or drop the keys)")
        return cls(**d)


def encoder_conv_count(n_layers: int) -> int:
    """Temporal convs in the encoder: per stage one conv + a ResBlock (2 convs)."""
    return 3 * n_layers


def decoder_conv_count(n_layers: int) -> int:
    """Temporal convs in the decoder: 2 ResBlocks (4) + (n_layers - 1) + conv to C + final conv."""
    return 4 + (n_layers - 1) + 2


def split_lookahead(total: int, n_convs: int, kernel_size: int) -> list[int]:
    """Give the look-ahead to the first convs, each taking at most kernel_size - 1 frames."""
    plan = []
    for _ in range(n_convs):
        take = min(total, kernel_size - 1)
        plan.append(take)
        total -= take
    if total:
        raise ValueError(f"look-ahead too large for {n_convs} convs of kernel {kernel_size}")
    return plan


class CausalConv1d(nn.Module):
    """Conv1d with asymmetric zero padding: output t sees inputs [t - left, t + lookahead].

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: temporal kernel.
        dilation: temporal dilation.
        lookahead: future frames this layer sees, 0 <= lookahead <= dilation * (kernel_size - 1).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1, lookahead: int = 0):
        super().__init__()
        span = dilation * (kernel_size - 1)
        if not 0 <= lookahead <= span:
            raise ValueError(f"lookahead {lookahead} must be in [0, {span}] for kernel {kernel_size}")
        self.left = span - lookahead
        self.right = lookahead
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, dilation=dilation)
        nn.init.xavier_normal_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, T) -> (B, C_out, T)."""
        return self.conv(F.pad(x, (self.left, self.right)))


class ResBlock(nn.Module):
    """x + conv(lrelu(conv(x))), no norm (EMAGE ResBlock). lookaheads: per-conv future frames."""

    def __init__(self, channels: int, kernel_size: int, lookaheads: tuple[int, int] = (0, 0)):
        super().__init__()
        self.conv1 = CausalConv1d(channels, channels, kernel_size, lookahead=lookaheads[0])
        self.conv2 = CausalConv1d(channels, channels, kernel_size, lookahead=lookaheads[1])

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, T) -> (B, C, T)."""
        return x + self.conv2(F.leaky_relu(self.conv1(x), NEGATIVE_SLOPE))


def _receptive_field(module: nn.Module) -> tuple[int, int]:
    """(left, right) frames of a conv chain (residual skips never widen it)."""
    convs = [m for m in module.modules() if isinstance(m, CausalConv1d)]
    return sum(c.left for c in convs), sum(c.right for c in convs)


class VQEncoder(nn.Module):
    """Causal VQEncoderV5: n_layers x [conv, LReLU, ResBlock] then a 1x1 projection to code_dim."""

    def __init__(self, cfg: VQConfig):
        super().__init__()
        k = cfg.kernel_size
        plan = split_lookahead(cfg.encoder_lookahead, encoder_conv_count(cfg.n_layers), k)
        layers: list[nn.Module] = []
        for i in range(cfg.n_layers):
            la = plan[3 * i: 3 * i + 3]
            layers += [CausalConv1d(cfg.in_dim if i == 0 else cfg.hidden, cfg.hidden, k, lookahead=la[0]),
                       nn.LeakyReLU(NEGATIVE_SLOPE), ResBlock(cfg.hidden, k, (la[1], la[2]))]
        layers.append(CausalConv1d(cfg.hidden, cfg.code_dim, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """(B, T, C) -> (B, T, code_dim)."""
        return self.net(x.transpose(1, 2)).transpose(1, 2)


class VQDecoder(nn.Module):
    """Causal VQDecoderV5: 1x1 in-projection, 2 ResBlocks, (n_layers-1) x [conv, LReLU], conv to C, LReLU, conv.

    Exportable as is (no data-dependent control flow): (B, T, code_dim) -> (B, T, C) with a dynamic T.
    """

    def __init__(self, cfg: VQConfig):
        super().__init__()
        k, h = cfg.kernel_size, cfg.hidden
        la = iter(split_lookahead(cfg.lookahead, decoder_conv_count(cfg.n_layers), k))
        layers: list[nn.Module] = [CausalConv1d(cfg.code_dim, h, 1),
                                   ResBlock(h, k, (next(la), next(la))), ResBlock(h, k, (next(la), next(la)))]
        for _ in range(cfg.n_layers - 1):
            layers += [CausalConv1d(h, h, k, lookahead=next(la)), nn.LeakyReLU(NEGATIVE_SLOPE)]
        layers += [CausalConv1d(h, cfg.in_dim, k, lookahead=next(la)), nn.LeakyReLU(NEGATIVE_SLOPE),
                   CausalConv1d(cfg.in_dim, cfg.in_dim, k, lookahead=next(la))]
        self.net = nn.Sequential(*layers)

    def forward(self, zq: Tensor) -> Tensor:
        """(B, T, code_dim) -> (B, T, C)."""
        return self.net(zq.transpose(1, 2)).transpose(1, 2)


@dataclass
class DecodeState:
    """Streaming decode state (explicit; passed in and returned, never stored on the module).

    Attributes:
        codes: (B, W, D) the last W = left + R codes received, newest last (left context + pending codes that wait
            for their look-ahead); while fewer than W codes were received only the last ``n_seen`` rows are real.
        n_seen: number of codes received since the start of the stream.
    """

    codes: Tensor
    n_seen: int = 0


class PartVQVAE(nn.Module):
    """One body part's VQ-VAE: causal encoder, EMA vector quantizer, decoder with bounded look-ahead.

    Args:
        cfg: VQConfig. Inputs are the part's normalised varying channels (B, T, cfg.in_dim).
    """

    def __init__(self, cfg: VQConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = VQEncoder(cfg)
        self.quantizer = VectorQuantizer(cfg.codebook_size, cfg.code_dim, beta=cfg.beta, decay=cfg.ema_decay,
                                         dead_code_threshold=cfg.dead_code_threshold, part=cfg.part)
        self.decoder = VQDecoder(cfg)

    @property
    def part(self) -> str:
        """'body' | 'hand' | 'face'."""
        return self.cfg.part

    @property
    def receptive_field(self) -> tuple[int, int]:
        """(left, right) frames of code context output frame t needs: codes [t - left, t + right]; right == R."""
        return _receptive_field(self.decoder)

    @property
    def encoder_receptive_field(self) -> tuple[int, int]:
        """(left, right) frames of input the encoder's output frame t needs."""
        return _receptive_field(self.encoder)

    def encode(self, x: Tensor) -> Tensor:
        """(B, T, in_dim) -> (B, T, code_dim). NaN/Inf raise ValueError."""
        check_finite(x, self.part, "encode()")
        return self.encoder(x)

    def quantize(self, z: Tensor, valid: Tensor | None = None) -> QuantizeResult:
        """Nearest codes of (B, T, code_dim) latents (EMA codebook update in training mode).

        ``valid`` (B, T) bool, optional: frames masked at ingestion (False) get codes but do not update the codebook
        nor count in the loss and statistics.
        """
        return self.quantizer(z, valid)

    def decode(self, zq: Tensor) -> Tensor:
        """(B, T, code_dim) -> (B, T, in_dim); frame t sees codes <= t + R (zero padding at both ends)."""
        return self.decoder(zq)

    def decode_indices(self, indices: Tensor) -> Tensor:
        """(B, T) long code ids -> (B, T, in_dim)."""
        return self.decode(self.quantizer.lookup(indices))

    def forward(self, x: Tensor, valid: Tensor | None = None) -> tuple[Tensor, QuantizeResult]:
        """Reconstruct (B, T, in_dim); returns (recon (B, T, in_dim), QuantizeResult). ``valid``: see ``quantize``."""
        q = self.quantize(self.encode(x), valid)
        return self.decode(q.zq), q

    def init_decode_state(self, batch: int, device: torch.device | str | None = None,
                          dtype: torch.dtype | None = None) -> DecodeState:
        """Fresh streaming state (no code received yet)."""
        left, right = self.receptive_field
        dtype = dtype or self.quantizer.embed.dtype
        return DecodeState(codes=torch.zeros(batch, left + right, self.cfg.code_dim, device=device, dtype=dtype))

    def decode_stream(self, zq_chunk: Tensor, state: DecodeState) -> tuple[Tensor, DecodeState]:
        """Decode the next chunk of codes; frames come out R codes after their own code.

        Args:
            zq_chunk: (B, T, code_dim) the next T code vectors (any T >= 0).
            state: from ``init_decode_state`` or the previous call.

        Returns:
            (x_ready (B, T_ready, in_dim), new state). Concatenating every x_ready and ``flush_decode`` gives exactly
            ``decode`` of the whole sequence.
        """
        buf = state.codes
        if zq_chunk.dim() != 3 or zq_chunk.shape[0] != buf.shape[0] or zq_chunk.shape[2] != buf.shape[2]:
            raise ValueError(f"{self.part} decode_stream: expected (B={buf.shape[0]}, T, {buf.shape[2]}) codes, "
                             f"got {tuple(zq_chunk.shape)}")
        width = buf.shape[1]
        n_valid = min(state.n_seen, width)
        window = torch.cat([buf[:, width - n_valid:], zq_chunk.to(buf.dtype)], dim=1)  # (B, n_valid + T, D)
        n_seen = state.n_seen + zq_chunk.shape[1]
        start = state.n_seen - n_valid  # global index of window[0]; 0 or >= left + R before the first emitted frame
        first, stop = max(0, state.n_seen - self.cfg.lookahead), max(0, n_seen - self.cfg.lookahead)
        full = torch.cat([buf, zq_chunk.to(buf.dtype)], dim=1)
        new_state = DecodeState(codes=full[:, full.shape[1] - width:].clone(), n_seen=n_seen)
        if stop <= first:
            return zq_chunk.new_zeros(buf.shape[0], 0, self.cfg.in_dim), new_state
        return self.decode(window)[:, first - start: stop - start], new_state

    def flush_decode(self, state: DecodeState) -> Tensor:
        """The last min(R, n_seen) frames (end of stream, zero right padding as in ``decode``): (B, <=R, in_dim).

        The stream is over afterwards; start the next one with ``init_decode_state``.
        """
        width = state.codes.shape[1]
        n_valid = min(state.n_seen, width)
        pending = min(self.cfg.lookahead, state.n_seen)
        if pending == 0:
            return state.codes.new_zeros(state.codes.shape[0], 0, self.cfg.in_dim)
        window = state.codes[:, width - n_valid:]  # (B, n_valid, D)
        return self.decode(window)[:, n_valid - pending:]


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of ``module`` (buffers such as the EMA codebook are not parameters)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
