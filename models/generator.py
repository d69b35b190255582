"""MambaTalk-MHR: the causal speech -> motion-latent generator (MambaTalk's structure, made streamable).

Data flow per frame (all shapes (B, T, C); every temporal operator is causal):

    audio (160 log-mel) --normalise--> AudioEncoder (Linear + causal dilated convs) --------------------- a (A)
    motion seed --(mask: learnable query)--> MotionEncoder (Linear + causal convs) ----------------------- m (Hm)
    GlobalScan:  f = MambaStack(a), b = MambaStack(m), global_features = Linear([f, b])                     (H)
                 trunk = MambaStack(Linear([a, m]) + speaker)                                                (H)
                 (replaces MambaTalk's speaker/motion transformer encoder and its 8-layer audio cross-attention
                 decoder, which are bidirectional; a Mamba stack over the fused streams is causal)
    LocalScan:   per part X in (body, hand, face) present: x = MLP_X(trunk) (+ global_features for the face)
                 branch_X = MambaStack(Linear([x + speaker, sum of the other parts' x]))
                 latent_X = Linear(branch_X + x)  (regressed code vector), logits_X = MLP(latent_X)
    global head: MLP(trunk) -> global_rot6d (6) and contact logits (4)

Differences from MambaTalk (NeurIPS'24; its generator = GlobalScan + LocalScan over 64-frame windows):
    * No attention at all: MambaTalk's MambaModel (1-layer 8-head self-attention + Mamba block) becomes a Mamba
      stack only, so per-step cost and memory are constant and there is no window. No positional encoding.
    * No BatchNorm (train/eval mismatch in streaming), no centred convolutions, no text input.
    * One speaker embedding with a dedicated UNKNOWN id = ``n_speakers``; ids outside [0, n_speakers] raise.
    * Targets: body/hand/face code latents and logits; global_rot as continuous 6D (first two columns of R, see
      ``models.rotations``) and 4 foot-contact logits. cam_t, scale and bone lengths are per-session constants and
      never outputs.

Look-ahead (a fixed target delay, ``config.lookahead`` = L frames): the network is strictly causal over its input
index, and output index t is the prediction for motion frame t - L. Audio index t is audio frame t; so the motion
of frame k is predicted once audio frame k + L has arrived (L * 33.3 ms of algorithmic latency). The motion seed
``motion``/``mask`` is aligned with the OUTPUT index: motion[:, t] holds motion frame t - L, channels per
``GeneratorConfig.motion_slices`` (the present parts' normalised varying channels in (body, hand, face) order, then
global_rot 6D and contact). Training therefore delays its targets and seed by L frames:
``target_aligned = delay(target, L)``, the loss ignores indices t < L (``valid_mask``), and MambaTalk's generation
pass uses ``generation_mask`` (seed frames observed at indices [L, L + seed_frames)).

Streaming: ``init_state`` -> ``step`` (any chunk length T >= 1) carries every conv tail and Mamba state in an
explicit ``GeneratorState``; ``forward`` is exactly ``step`` from a fresh state, so forward == step over chunks.
Inputs and the state passed in are never modified (a new state object is returned).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
from torch import Tensor, nn

from models.layout import PART_DIMS, VQ_PARTS
from models.mamba import MambaStack, MambaState
from models.rates import FEATURE_DIM
from models.rotations import euler_to_matrix_t, matrix_to_6d_t, matrix_to_euler_t, sixd_to_matrix_t

GLOBAL_ROT6D_DIM = 6
CONTACT_DIM = 4
GLOBAL_DIM = GLOBAL_ROT6D_DIM + CONTACT_DIM  # global_rot 6D + contact, appended to the parts in the motion vector
IDENTITY_6D = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
MAX_LOOKAHEAD = 8  # the default is 2 (67 ms); up to 8 for the quality-vs-look-ahead sweep

_PRESETS: dict[str, dict[str, Any]] = {
    # ~4 Mamba layers (trunk 1 + one per part); trains on a 2-core CPU in minutes
    "tiny": dict(hidden=128, audio_hidden=128, motion_hidden=64, code_dim=64, codebook_size=256,
                 audio_conv_layers=2, motion_conv_layers=1, audio_scan_layers=0, motion_scan_layers=0,
                 trunk_layers=1, face_layers=1, part_layers=1, mlp_hidden=256, dropout=0.0),
    # base's structure (9 Mamba layers) at width 512: ~25M parameters, less than half base's per-step weight reads
    "small": dict(hidden=512, audio_hidden=256, motion_hidden=128, code_dim=256, codebook_size=256,
                  audio_conv_layers=3, motion_conv_layers=2, audio_scan_layers=1, motion_scan_layers=1,
                  trunk_layers=2, face_layers=3, part_layers=1, mlp_hidden=512, dropout=0.1),
    # MambaTalk-like widths (H 768, audio 512, motion 256, codes 256x256) and 9 Mamba layers:
    # audio scan 1 + motion scan 1 + trunk 2 + face 3 + body 1 + hand 1
    "base": dict(hidden=768, audio_hidden=512, motion_hidden=256, code_dim=256, codebook_size=256,
                 audio_conv_layers=3, motion_conv_layers=3, audio_scan_layers=1, motion_scan_layers=1,
                 trunk_layers=2, face_layers=3, part_layers=1, mlp_hidden=768, dropout=0.1),
}


@dataclass(frozen=True)
class GeneratorConfig:
    """Hyper-parameters of ``MambaTalkMHR`` (JSON-safe via ``to_dict``/``from_dict``).

    Attributes:
        preset_name: the preset these values started from ('tiny' | 'small' | 'base'); informational. (Not
            ``preset``: that name is the constructor ``GeneratorConfig.preset(name, **overrides)``.)
        audio_dim: audio features per frame (``models.rates.FEATURE_DIM`` = 160).
        n_speakers: known speakers; id ``n_speakers`` is the dedicated UNKNOWN speaker.
        part_dims: VQ parts present -> varying channels (subset of body 70, hand 108, face 75).
        motion_dim: M, channels of the motion seed vector (concat of present parts + global 6D + contact 4);
            0 means "derive": sum(part_dims) + 10.
        hidden: trunk / part-branch width H.
        audio_hidden: audio encoder width A.
        motion_hidden: motion encoder width Hm.
        code_dim: VQ code vector size (must equal the VQ-VAEs' ``code_dim``).
        codebook_size: VQ codebook size K (must equal the VQ-VAEs').
        lookahead: L, fixed target delay in frames (0..8, default 2): output t predicts motion frame t - L.
        seed_frames: frames of observed motion given at the start of generation (MambaTalk's pre_frames).
        audio_conv_layers / motion_conv_layers: causal conv blocks (dilations 1, 2, 4, ...).
        conv_kernel: kernel of the causal convs.
        audio_scan_layers / motion_scan_layers / trunk_layers / face_layers / part_layers: Mamba blocks per stack
            (part_layers is used by body and hand).
        d_state / d_conv / expand: Mamba-1 settings.
        mlp_hidden: GatedMLP hidden size inside each Mamba block.
        face_logits: also predict face code logits (MambaTalk trains them in the masked passes).
        dropout: dropout on the fused features (training only).
    """

    preset_name: str = "tiny"
    audio_dim: int = FEATURE_DIM
    n_speakers: int = 16
    part_dims: dict[str, int] = field(default_factory=lambda: dict(PART_DIMS))
    motion_dim: int = 0
    hidden: int = 128
    audio_hidden: int = 128
    motion_hidden: int = 64
    code_dim: int = 64
    codebook_size: int = 256
    lookahead: int = 2
    seed_frames: int = 4
    audio_conv_layers: int = 2
    motion_conv_layers: int = 1
    conv_kernel: int = 3
    audio_scan_layers: int = 0
    motion_scan_layers: int = 0
    trunk_layers: int = 1
    face_layers: int = 1
    part_layers: int = 1
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    mlp_hidden: int = 256
    face_logits: bool = True
    dropout: float = 0.0

    def __post_init__(self) -> None:
        dims = dict(self.part_dims)
        unknown = [p for p in dims if p not in VQ_PARTS]
        if not dims or unknown:
            raise ValueError(f"GeneratorConfig.part_dims: parts {unknown or '{}'} invalid; use a non-empty subset of "
                             f"{list(VQ_PARTS)}")
        # canonical order (body, hand, face) so parameter names and output dicts never depend on the caller's order
        object.__setattr__(self, "part_dims", {p: int(dims[p]) for p in VQ_PARTS if p in dims})
        if self.motion_dim == 0:
            object.__setattr__(self, "motion_dim", sum(self.part_dims.values()) + GLOBAL_DIM)
        if not 0 <= self.lookahead <= MAX_LOOKAHEAD:
            raise ValueError(f"GeneratorConfig.lookahead={self.lookahead}: must be in [0, {MAX_LOOKAHEAD}] frames")
        if self.n_speakers < 0:
            raise ValueError(f"GeneratorConfig.n_speakers={self.n_speakers}: must be >= 0")
        for name in ("audio_dim", "motion_dim", "hidden", "audio_hidden", "motion_hidden", "code_dim",
                     "codebook_size", "conv_kernel", "d_state", "d_conv", "expand", "mlp_hidden"):
            if getattr(self, name) < 1:
                raise ValueError(f"GeneratorConfig.{name}={getattr(self, name)}: must be >= 1")

    @classmethod
    def preset_names(cls) -> list[str]:
        return sorted(_PRESETS)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> GeneratorConfig:
        """Config of a named preset ('tiny' | 'small' | 'base') with field overrides (e.g. ``code_dim=vq.code_dim``)."""
        if name not in _PRESETS:
            raise ValueError(f"unknown generator preset {name!r}; choose one of {sorted(_PRESETS)}")
        valid = {f.name for f in fields(cls)}
        bad = sorted(set(overrides) - valid)
        if bad:
            raise ValueError(f"GeneratorConfig.preset({name!r}): unknown override(s) {bad}; valid: {sorted(valid)}")
        return cls(**{**_PRESETS[name], "preset_name": name, **overrides})

    @property
    def parts(self) -> tuple[str, ...]:
        return tuple(self.part_dims)

    @property
    def motion_slices(self) -> dict[str, slice]:
        """Channel layout of the motion seed vector M: present parts in (body, hand, face) order, then
        'global_rot6d' (6) and 'contact' (4). Only defined when ``motion_dim`` is the derived default."""
        if self.motion_dim != sum(self.part_dims.values()) + GLOBAL_DIM:
            raise ValueError(f"GeneratorConfig.motion_dim={self.motion_dim} is custom: the standard layout needs "
                             f"{sum(self.part_dims.values()) + GLOBAL_DIM} (parts + 6 + 4); leave motion_dim=0")
        out, start = {}, 0
        for name, n in [*self.part_dims.items(), ("global_rot6d", GLOBAL_ROT6D_DIM), ("contact", CONTACT_DIM)]:
            out[name] = slice(start, start + n)
            start += n
        return out

    @property
    def unknown_speaker(self) -> int:
        return self.n_speakers

    @property
    def n_mamba_layers(self) -> int:
        parts = sum(self.face_layers if p == "face" else self.part_layers for p in self.parts)
        return self.audio_scan_layers + self.motion_scan_layers + self.trunk_layers + parts

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (round-trips through ``from_dict``)."""
        d = asdict(self)
        d["part_dims"] = dict(self.part_dims)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GeneratorConfig:
        """Inverse of ``to_dict``; unknown keys raise ValueError naming them."""
        valid = {f.name for f in fields(cls)}
        bad = sorted(set(d) - valid)
        if bad:
            raise ValueError(f"GeneratorConfig.from_dict: unknown key(s) {bad} (written by a newer version?); "
                             f"valid keys: {sorted(valid)}")
        return cls(**dict(d))


@dataclass
class GeneratorOutput:
    """Per-frame generator outputs; index t is the prediction for motion frame t - lookahead.

    Attributes:
        latents: part -> (B, T, code_dim) regressed code vectors.
        logits: part -> (B, T, codebook_size) code logits (body, hand; face when ``config.face_logits``).
        global_rot6d: (B, T, 6) continuous 6D of global_rot (first two columns of R, not normalised).
        contact: (B, T, 4) foot-contact logits (l_foot, l_ball, r_foot, r_ball).
    """

    latents: dict[str, Tensor]
    logits: dict[str, Tensor]
    global_rot6d: Tensor
    contact: Tensor

    @property
    def n_frames(self) -> int:
        return self.global_rot6d.shape[1]

    def global_rot_euler(self) -> Tensor:
        """(B, T, 3) global_rot as Euler XYZ (R = Rz Ry Rx), the MHR parameter convention."""
        return rot6d_to_euler(self.global_rot6d)

    @staticmethod
    def concat(outputs: Iterable[GeneratorOutput]) -> GeneratorOutput:
        """Concatenate outputs of consecutive chunks along time."""
        outs = list(outputs)
        if not outs:
            raise ValueError("GeneratorOutput.concat: no outputs to concatenate")
        return GeneratorOutput(
            latents={k: torch.cat([o.latents[k] for o in outs], 1) for k in outs[0].latents},
            logits={k: torch.cat([o.logits[k] for o in outs], 1) for k in outs[0].logits},
            global_rot6d=torch.cat([o.global_rot6d for o in outs], 1),
            contact=torch.cat([o.contact for o in outs], 1),
        )


@dataclass
class GeneratorState:
    """Everything ``MambaTalkMHR.step`` carries between chunks (never stored on the module).

    Attributes:
        audio_tails: per audio conv block, (B, context, A) last normalised inputs.
        motion_tails: per motion conv block, (B, context, Hm).
        mamba: stack name ('audio_scan', 'motion_scan', 'trunk', 'body', 'hand', 'face') -> per-layer MambaState.
        frames: frames consumed so far (the next chunk starts at this input index).
    """

    audio_tails: list[Tensor]
    motion_tails: list[Tensor]
    mamba: dict[str, list[MambaState]]
    frames: int = 0

    @property
    def batch_size(self) -> int | None:
        """Batch size of the state (None for a model without any temporal state)."""
        tensors = self.tensors()
        return tensors[0].shape[0] if tensors else None

    def tensors(self) -> list[Tensor]:
        """All state tensors in a fixed order (for export / inspection); see ``with_tensors``."""
        out = list(self.audio_tails) + list(self.motion_tails)
        for states in self.mamba.values():
            for s in states:
                out += [s.conv_state, s.ssm_state]
        return out

    def with_tensors(self, tensors: list[Tensor], frames: int | None = None) -> GeneratorState:
        """A state of the same structure holding ``tensors`` (in ``tensors()`` order)."""
        it = iter(tensors)
        audio = [next(it) for _ in self.audio_tails]
        motion = [next(it) for _ in self.motion_tails]
        mamba = {k: [MambaState(next(it), next(it)) for _ in v] for k, v in self.mamba.items()}
        return GeneratorState(audio, motion, mamba, self.frames if frames is None else frames)

    def clone(self) -> GeneratorState:
        return self.with_tensors([t.clone() for t in self.tensors()])

    def detach(self) -> GeneratorState:
        """Cut the autograd graph (truncated BPTT across training chunks)."""
        return self.with_tensors([t.detach() for t in self.tensors()])

    def to(self, device: torch.device | str) -> GeneratorState:
        return self.with_tensors([t.to(device) for t in self.tensors()])


# ---- rotation helpers (conventions live in models.rotations) -------------------------------------------------------

def rot6d_to_euler(d6: Tensor) -> Tensor:
    """(..., 6) 6D (first two columns of R, any scale) -> (..., 3) Euler XYZ with R = Rz(z) Ry(y) Rx(x).

    x = atan2(R21, R22), y = atan2(-R20, sqrt(R00^2 + R10^2)), z = atan2(R10, R00); y in [-pi/2, pi/2].
    """
    return matrix_to_euler_t(sixd_to_matrix_t(d6))


def euler_to_rot6d(euler: Tensor) -> Tensor:
    """(..., 3) Euler XYZ (R = Rz Ry Rx) -> (..., 6) first two columns of R (the generator's target)."""
    return matrix_to_6d_t(euler_to_matrix_t(euler))


# ---- target alignment for the look-ahead ---------------------------------------------------------------------------

def delay(x: Tensor, frames: int, fill: float = 0.0) -> Tensor:
    """Shift (B, T, ...) right by ``frames`` along time: y[:, t] = x[:, t - frames], y[:, :frames] = fill.

    Use it to align motion targets (and the motion seed) with the generator's output index (frames = lookahead).
    """
    if frames == 0:
        return x
    pad = x.new_full((x.shape[0], min(frames, x.shape[1]), *x.shape[2:]), fill)
    return torch.cat([pad, x[:, : max(x.shape[1] - frames, 0)]], 1)


def valid_mask(n_frames: int, lookahead: int, device: torch.device | str | None = None) -> Tensor:
    """(T,) bool: output indices that correspond to a real motion frame (t >= lookahead)."""
    return torch.arange(n_frames, device=device) >= lookahead


def generation_mask(batch_size: int, n_frames: int, config: GeneratorConfig, seed_frames: int | None = None,
                    device: torch.device | str | None = None) -> Tensor:
    """(B, T, M) bool mask of MambaTalk's generation pass in output-index alignment: every entry masked (True)
    except the ``seed_frames`` (default ``config.seed_frames``) seed frames, i.e. indices [L, L + seed_frames)
    holding motion frames 0.. seed_frames-1 (indices < L are before the first frame and stay masked).

    Pair it with ``motion = delay(motion_vector, L)``. ``seed_frames=0`` gives the unseeded (all-masked) pass that a
    fresh realtime session runs (there ``motion=None`` is equivalent).
    """
    seed = config.seed_frames if seed_frames is None else seed_frames
    mask = torch.ones(batch_size, n_frames, config.motion_dim, dtype=torch.bool, device=device)
    mask[:, config.lookahead: config.lookahead + seed] = False
    return mask


# ---- building blocks ------------------------------------------------------------------------------------------------

def _zero_bias(module: nn.Module) -> None:
    """Zero every Linear bias (MambaTalk's init) except those marked ``_no_reinit`` (Mamba's dt_proj bias)."""
    for m in module.modules():
        if isinstance(m, nn.Linear) and m.bias is not None and not getattr(m.bias, "_no_reinit", False):
            nn.init.zeros_(m.bias)


class CausalConvBlock(nn.Module):
    """Pre-norm residual causal conv: x + Linear(LeakyReLU(conv_causal(LN(x)))); the tail carries the past.

    The dilated causal conv is one Linear over the ``kernel`` taps stacked oldest-first ([x_{t-(k-1)d}, ..., x_t]):
    the same maths as ``nn.Conv1d`` with left zero padding, but far cheaper than a conv call for 1-frame steps.
    """

    def __init__(self, channels: int, kernel: int, dilation: int):
        super().__init__()
        self.norm = nn.LayerNorm(channels)
        self.conv = nn.Linear(kernel * channels, channels)
        self.act = nn.LeakyReLU(0.2)
        self.proj = nn.Linear(channels, channels)
        self.channels = channels
        self.kernel = kernel
        self.dilation = dilation
        self.context = (kernel - 1) * dilation

    def init_tail(self, batch_size: int, device: torch.device | str | None = None,
                  dtype: torch.dtype | None = None) -> Tensor:
        return torch.zeros(batch_size, self.context, self.channels, device=device, dtype=dtype)

    def forward(self, x: Tensor, tail: Tensor) -> tuple[Tensor, Tensor]:
        T = x.shape[1]
        h = torch.cat([tail, self.norm(x)], 1)  # (B, context + T, C); zero tail == causal zero padding
        new_tail = h[:, h.shape[1] - self.context:].clone()  # (B, context, C)
        taps = torch.cat([h[:, j * self.dilation: j * self.dilation + T] for j in range(self.kernel)], -1)  # (B,T,kC)
        return x + self.proj(self.act(self.conv(taps))), new_tail


class CausalConvEncoder(nn.Module):
    """Linear(in -> C) + causal conv blocks (dilations 1, 2, 4, ...) + LayerNorm."""

    def __init__(self, in_dim: int, channels: int, n_layers: int, kernel: int):
        super().__init__()
        self.inp = nn.Linear(in_dim, channels)
        self.blocks = nn.ModuleList(CausalConvBlock(channels, kernel, 2 ** i) for i in range(n_layers))
        self.norm = nn.LayerNorm(channels)

    def init_tails(self, batch_size: int, device=None, dtype=None) -> list[Tensor]:
        return [b.init_tail(batch_size, device, dtype) for b in self.blocks]

    def forward(self, x: Tensor, tails: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        h = self.inp(x)  # (B, T, C)
        new = []
        for block, tail in zip(self.blocks, tails):
            h, t = block(h, tail)
            new.append(t)
        return self.norm(h), new


class Scan(nn.Module):
    """A causal Mamba stack (``models.mamba.MambaStack``: n blocks + final LayerNorm) or, with 0 layers, the identity.

    Chunks of one frame use the recurrent ``step`` path (cheapest per frame), longer chunks the blocked parallel scan;
    both carry the same per-layer ``MambaState`` list.
    """

    def __init__(self, d_model: int, n_layers: int, cfg: GeneratorConfig):
        super().__init__()
        self.stack = MambaStack(d_model, n_layers, mlp_hidden=cfg.mlp_hidden, d_state=cfg.d_state, d_conv=cfg.d_conv,
                                expand=cfg.expand) if n_layers else None

    def init_state(self, batch_size: int, device=None, dtype=None) -> list[MambaState]:
        return [] if self.stack is None else self.stack.init_state(batch_size, device, dtype)

    def forward(self, x: Tensor, states: list[MambaState]) -> tuple[Tensor, list[MambaState]]:
        if self.stack is None:
            return x, []
        if x.shape[1] == 1:
            y, new = self.stack.step(x[:, 0], states)  # (B, D)
            return y[:, None], new
        return self.stack(x, states)


def _mlp(d_in: int, d_hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.LeakyReLU(0.2), nn.Linear(d_hidden, d_out))


class PartBranch(nn.Module):
    """LocalScan branch of one part: Mamba stack over Linear([part feature + speaker, sum of the other parts])."""

    def __init__(self, cfg: GeneratorConfig, n_layers: int, logits: bool):
        super().__init__()
        H = cfg.hidden
        self.feature = _mlp(H, H, H)
        self.fuse = nn.Linear(2 * H, H)
        self.scan = Scan(H, n_layers, cfg)
        self.latent = nn.Linear(H, cfg.code_dim)
        self.classifier = _mlp(cfg.code_dim, H, cfg.codebook_size) if logits else None


# ---- the generator --------------------------------------------------------------------------------------------------

class MambaTalkMHR(nn.Module):
    """Causal MambaTalk generator for MHR: audio features + speaker (+ masked motion seed) -> per-part code latents.

    See the module docstring for the structure, the look-ahead convention and the differences from MambaTalk
    (notably: no attention; Mamba stacks only).

    Args:
        config: ``GeneratorConfig`` (e.g. ``GeneratorConfig.preset('tiny', code_dim=vq.code_dim)``).

    Buffers ``audio_mean``/``audio_std`` (160,) normalise the audio features inside the model (identity until
    ``set_audio_stats`` is called), so checkpoints carry their input statistics.
    """

    def __init__(self, config: GeneratorConfig):
        super().__init__()
        self.config = cfg = config
        H = cfg.hidden
        self.register_buffer("audio_mean", torch.zeros(cfg.audio_dim))
        self.register_buffer("audio_std", torch.ones(cfg.audio_dim))
        self.speaker_embedding = nn.Embedding(cfg.n_speakers + 1, H)
        self.mask_query = nn.Parameter(torch.zeros(cfg.motion_dim))  # MambaTalk: zero-initialised learnable query
        self.audio_encoder = CausalConvEncoder(cfg.audio_dim, cfg.audio_hidden, cfg.audio_conv_layers,
                                               cfg.conv_kernel)
        self.motion_encoder = CausalConvEncoder(cfg.motion_dim, cfg.motion_hidden, cfg.motion_conv_layers,
                                                cfg.conv_kernel)
        self.audio_scan = Scan(cfg.audio_hidden, cfg.audio_scan_layers, cfg)
        self.motion_scan = Scan(cfg.motion_hidden, cfg.motion_scan_layers, cfg)
        self.global_features = nn.Linear(cfg.audio_hidden + cfg.motion_hidden, H)
        self.trunk_in = nn.Linear(cfg.audio_hidden + cfg.motion_hidden, H)
        self.trunk = Scan(H, cfg.trunk_layers, cfg)
        self.dropout = nn.Dropout(cfg.dropout)
        self.parts = nn.ModuleDict({
            p: PartBranch(cfg, cfg.face_layers if p == "face" else cfg.part_layers,
                          logits=(p != "face" or cfg.face_logits))
            for p in cfg.parts})
        self.global_head = _mlp(H, H, GLOBAL_DIM)
        _zero_bias(self)
        with torch.no_grad():
            self.global_head[-1].bias[:GLOBAL_ROT6D_DIM] = torch.tensor(IDENTITY_6D)  # start at identity rotation

    @property
    def UNKNOWN_SPEAKER(self) -> int:  # noqa: N802 (contract name)
        """The dedicated id for speakers not seen in training (= n_speakers)."""
        return self.config.n_speakers

    @torch.no_grad()
    def set_audio_stats(self, mean: Tensor, std: Tensor, eps: float = 1e-5) -> None:
        """Store per-channel (160,) audio feature statistics used to normalise inputs inside the model."""
        mean = torch.as_tensor(mean, dtype=self.audio_mean.dtype).reshape(-1)
        std = torch.as_tensor(std, dtype=self.audio_std.dtype).reshape(-1)
        if mean.numel() != self.config.audio_dim or std.numel() != self.config.audio_dim:
            raise ValueError(f"set_audio_stats: mean/std need {self.config.audio_dim} values, got "
                             f"{mean.numel()}/{std.numel()}")
        self.audio_mean.copy_(mean)
        self.audio_std.copy_(std.clamp_min(eps))

    # ---- state ----------------------------------------------------------------------------------------------------

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> GeneratorState:
        """Fresh (all-zero) streaming state for ``batch_size`` streams."""
        if device is None:
            device = self.audio_mean.device
        dtype = self.audio_mean.dtype
        mamba = {"audio_scan": self.audio_scan.init_state(batch_size, device, dtype),
                 "motion_scan": self.motion_scan.init_state(batch_size, device, dtype),
                 "trunk": self.trunk.init_state(batch_size, device, dtype)}
        for p, branch in self.parts.items():
            mamba[p] = branch.scan.init_state(batch_size, device, dtype)
        return GeneratorState(self.audio_encoder.init_tails(batch_size, device, dtype),
                              self.motion_encoder.init_tails(batch_size, device, dtype), mamba, 0)

    # ---- input checks ---------------------------------------------------------------------------------------------

    def _check_inputs(self, audio: Tensor, speaker: Tensor, motion: Tensor | None, mask: Tensor | None) -> None:
        cfg = self.config
        if audio.ndim != 3 or audio.shape[-1] != cfg.audio_dim or audio.shape[1] < 1:
            raise ValueError(f"audio must be (B, T>=1, {cfg.audio_dim}) features, got {tuple(audio.shape)}")
        if not bool(torch.isfinite(audio).all()):
            raise ValueError("audio features contain NaN/Inf: check the audio/feature pipeline (models.features)")
        B, T = audio.shape[:2]
        if speaker.ndim != 1 or speaker.shape[0] != B:
            raise ValueError(f"speaker must be (B,) = ({B},) ids, got {tuple(speaker.shape)}")
        if speaker.dtype.is_floating_point or speaker.dtype == torch.bool:
            raise ValueError(f"speaker must be an integer (long) tensor, got {speaker.dtype}")
        lo, hi = torch.aminmax(speaker)
        if int(lo) < 0 or int(hi) > cfg.n_speakers:
            bad = speaker[(speaker < 0) | (speaker > cfg.n_speakers)]
            raise ValueError(f"speaker id {int(bad[0])} is outside [0, {cfg.n_speakers}] (n_speakers="
                             f"{cfg.n_speakers}); map unseen speakers to UNKNOWN_SPEAKER={cfg.n_speakers}")
        if motion is None:
            if mask is not None:
                raise ValueError("mask given without motion: pass motion (B, T, M) too, or neither")
            return
        if motion.shape != (B, T, cfg.motion_dim):
            raise ValueError(f"motion must be (B, T, M) = ({B}, {T}, {cfg.motion_dim}), got {tuple(motion.shape)}")
        if mask is not None:
            if mask.dtype != torch.bool:
                raise ValueError(f"mask must be a bool tensor (True = masked), got {mask.dtype}")
            if mask.shape != motion.shape:
                raise ValueError(f"mask shape {tuple(mask.shape)} != motion shape {tuple(motion.shape)}")
        observed = motion if mask is None else motion.masked_fill(mask, 0.0)
        if not bool(torch.isfinite(observed).all()):
            raise ValueError("motion seed has NaN/Inf in observed (unmasked) entries: mask them (mask=True)")

    # ---- forward / step -------------------------------------------------------------------------------------------

    def forward(self, audio: Tensor, speaker: Tensor, motion: Tensor | None = None,
                mask: Tensor | None = None) -> GeneratorOutput:
        """Whole sequence from a fresh state (== ``step`` over any chunking from ``init_state``).

        Args:
            audio: (B, T, 160) causal log-mel features, index t = audio frame t.
            speaker: (B,) long ids in [0, n_speakers]; n_speakers = UNKNOWN.
            motion: optional (B, T, M) motion seed aligned with the output index (motion frame t - L).
            mask: optional (B, T, M) bool, True = masked (replaced by the learnable query). motion without mask =
                all observed; no motion = all masked.

        Returns:
            ``GeneratorOutput`` with T frames; index t predicts motion frame t - lookahead.
        """
        out, _ = self.step(audio, speaker, self.init_state(audio.shape[0], audio.device), motion, mask)
        return out

    def step(self, audio: Tensor, speaker: Tensor, state: GeneratorState, motion: Tensor | None = None,
             mask: Tensor | None = None) -> tuple[GeneratorOutput, GeneratorState]:
        """Process the next chunk of T >= 1 frames, carrying ``state``; returns (outputs, new state).

        Neither the inputs nor ``state`` are modified.
        """
        self._check_inputs(audio, speaker, motion, mask)
        if state.batch_size not in (None, audio.shape[0]):
            raise ValueError(f"state is for batch {state.batch_size}, audio has batch {audio.shape[0]}: "
                             "call init_state(batch_size) for this batch")
        B, T = audio.shape[:2]
        q = self.mask_query.expand(B, T, -1)  # (B, T, M)
        if motion is None:
            x_motion = q
        else:
            x_motion = motion if mask is None else torch.where(mask, q, motion)

        a, audio_tails = self.audio_encoder((audio - self.audio_mean) / self.audio_std, state.audio_tails)  # (B,T,A)
        m, motion_tails = self.motion_encoder(x_motion, state.motion_tails)  # (B, T, Hm)
        mamba: dict[str, list[MambaState]] = {}

        # GlobalScan
        f, mamba["audio_scan"] = self.audio_scan(a, state.mamba["audio_scan"])
        b, mamba["motion_scan"] = self.motion_scan(m, state.mamba["motion_scan"])
        global_features = self.global_features(torch.cat([f, b], -1))  # (B, T, H)
        spk = self.speaker_embedding(speaker.long())[:, None]  # (B, 1, H)
        g = self.dropout(self.trunk_in(torch.cat([a, m], -1))) + spk
        g, mamba["trunk"] = self.trunk(g, state.mamba["trunk"])  # (B, T, H)

        # LocalScan
        feats = {p: br.feature(g) for p, br in self.parts.items()}
        if "face" in feats:
            feats["face"] = feats["face"] + global_features
        total = sum(feats.values())
        latents: dict[str, Tensor] = {}
        logits: dict[str, Tensor] = {}
        for p, br in self.parts.items():
            x = br.fuse(torch.cat([feats[p] + spk, total - feats[p]], -1))  # (B, T, H)
            y, mamba[p] = br.scan(self.dropout(x), state.mamba[p])
            latents[p] = br.latent(y + feats[p])  # (B, T, code_dim)
            if br.classifier is not None:
                logits[p] = br.classifier(latents[p])  # (B, T, K)
        glob = self.global_head(g)  # (B, T, 10)
        out = GeneratorOutput(latents, logits, glob[..., :GLOBAL_ROT6D_DIM], glob[..., GLOBAL_ROT6D_DIM:])
        new_state = GeneratorState(audio_tails, motion_tails, mamba, state.frames + T)
        return out, new_state


# ---- inspection -----------------------------------------------------------------------------------------------------

def parameter_counts(model: nn.Module) -> dict[str, int]:
    """Parameters per top-level submodule (part branches listed as 'parts.<name>'), plus 'total'."""
    counts: dict[str, int] = {}
    for name, p in model.named_parameters():
        head = name.split(".")
        key = ".".join(head[:2]) if head[0] == "parts" else head[0]
        counts[key] = counts.get(key, 0) + p.numel()
    counts["total"] = sum(p.numel() for p in model.parameters())
    return counts


def format_parameter_counts(model: nn.Module) -> str:
    """Human-readable table of ``parameter_counts``."""
    counts = parameter_counts(model)
    width = max(len(k) for k in counts)
    return "\n".join(f"{k:<{width}}  {v:>12,d}  ({v / 1e6:6.2f} M)" for k, v in counts.items())


def print_parameter_counts(model: nn.Module) -> None:
    """Print parameter counts per submodule."""
    print(format_parameter_counts(model))


__all__ = [
    "CONTACT_DIM", "GLOBAL_DIM", "GLOBAL_ROT6D_DIM", "GeneratorConfig", "GeneratorOutput", "GeneratorState",
    "MambaTalkMHR", "delay", "euler_to_rot6d", "generation_mask", "format_parameter_counts", "parameter_counts",
    "print_parameter_counts", "rot6d_to_euler", "valid_mask",
]
