"""Mamba-1 selective-SSM layer in pure PyTorch, with explicit recurrent state and optional mamba-ssm kernels.

Parameter names and shapes equal ``mamba_ssm.modules.mamba_simple.Mamba`` (and ``MambaBlock`` / ``MambaStack`` use the
names of mamba-ssm's ``Block`` / ``MixerModel``), so a state_dict moves between the two unchanged.

Recurrence per channel d and state n (delta > 0 after softplus, A < 0):
    h_t = exp(delta_t * A) * h_{t-1} + delta_t * u_t * B_t          y_t = <C_t, h_t> + D * u_t,   out = y * silu(z)

Full-sequence scan (``selective_scan``): a blocked two-level scan with an analytic backward. The sequence is cut into
chunks of T frames, K chunks per group. All chunks of a group advance together over the positions inside a chunk (one
vectorised op per position, over batch x chunks); a short loop over chunks carries the chunk-start states; then every
position is corrected in closed form, h_t = local_t + P_t * h_start, with P_t the cumulative product of the decays
exp(delta * A) <= 1 since the chunk start (no division, no exp of a positive number: nothing can overflow, however
strong the decay). Python loops run T + K times per group instead of T * K. Groups batch several chunks only for small
layers (see SCAN_GROUP_ELEMS); for large ones a group is one chunk scanned from its true start state. The backward
runs the same blocked scan in reverse on recomputed group states (decay suffixes from exp(A * reversed cumsum)), so
memory holds the inputs plus one group's (T, B*K, d_inner, d_state) work tensors, never the whole sequence's states.
Why not the SSD masked-segment-sum form: Mamba-1 decays differ per (channel, state), so that form needs a
(T, T, d_inner, d_state) tensor per chunk: T times the work, measured 6-10x slower on CPU. The exp(-cumsum) ratio form
overflows float32 past a total decay of ~88 per chunk and lost precision (3e-5) in our measurements.

``selective_scan_ref`` is the naive sequential reference with the same signature (tests compare the two).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Optional CUDA kernels (GPU path, untested on the CPU-only dev box). Import failures of any kind leave them None.
try:
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
except Exception:  # noqa: BLE001 - mamba_ssm raises non-ImportErrors without CUDA
    selective_scan_fn = None
try:
    from mamba_ssm.ops.triton.selective_state_update import selective_state_update
except Exception:  # noqa: BLE001
    selective_state_update = None
try:
    from causal_conv1d import causal_conv1d_fn, causal_conv1d_update
except Exception:  # noqa: BLE001
    causal_conv1d_fn, causal_conv1d_update = None, None

KERNELS_AVAILABLE = None not in (selective_scan_fn, selective_state_update, causal_conv1d_fn, causal_conv1d_update)

# Chunks are batched into one scan group (K > 1) only while a group's (T, batch*K, d_inner, d_state) work tensor stays
# under this many elements (512 KiB in float32): that saves Python dispatch for small layers; for large ones the extra
# correction passes cost more than they save (measured), so each group is one chunk scanned from its true state.
SCAN_GROUP_ELEMS = 1 << 17


@dataclass
class MambaState:
    """Recurrent state of one Mamba layer; passed in and returned, never stored on the module.

    Args:
        conv_state: (B, d_inner, d_conv) the last d_conv pre-convolution inputs, oldest first (mamba-ssm layout).
        ssm_state: (B, d_inner, d_state) the SSM hidden state h.
    """

    conv_state: Tensor
    ssm_state: Tensor

    def detach(self) -> MambaState:
        """A copy cut from the autograd graph (truncated backprop through time)."""
        return MambaState(self.conv_state.detach(), self.ssm_state.detach())


# ----------------------------------------------------------------------------------------------------------------
# Selective scan: reference and blocked parallel version (layout: time before channels, i.e. (B, L, d_inner))
# ----------------------------------------------------------------------------------------------------------------


def _finish(y: Tensor, u: Tensor, D: Tensor | None, z: Tensor | None) -> Tensor:
    if D is not None:
        y = y + D * u
    if z is not None:
        y = y * F.silu(z)
    return y


def selective_scan_ref(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None, z: Tensor | None = None,
    h0: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Naive sequential selective scan (the reference; one Python step per frame).

    Args:
        u: (B, L, d_inner) input.  delta: (B, L, d_inner) step sizes, already softplus'ed (> 0).
        A: (d_inner, d_state) negative.  B, C: (B, L, d_state).  D: (d_inner,) skip.  z: (B, L, d_inner) gate.
        h0: (B, d_inner, d_state) initial state (zeros if None).

    Returns:
        y (B, L, d_inner), h_last (B, d_inner, d_state).
    """
    batch, L, d_inner = u.shape
    h = u.new_zeros(batch, d_inner, A.shape[1]) if h0 is None else h0
    ys = []
    for t in range(L):
        dA = torch.exp(delta[:, t, :, None] * A)  # (B, d_inner, d_state)
        h = dA * h + (delta[:, t] * u[:, t])[:, :, None] * B[:, t, None, :]
        ys.append((h * C[:, t, None, :]).sum(-1))  # (B, d_inner)
    return _finish(torch.stack(ys, 1), u, D, z), h


def _to_chunks(x: Tensor, T: int) -> Tensor:
    """(B, K*T, C) -> (T, B*K, C): position-in-chunk first, so x[t] is one contiguous slab over all chunks."""
    batch, length, ch = x.shape
    return x.reshape(batch, length // T, T, ch).permute(2, 0, 1, 3).reshape(T, -1, ch).contiguous()


def _from_chunks(x: Tensor, batch: int) -> Tensor:
    """(T, B*K, C) -> (B, K*T, C)."""
    T, m, ch = x.shape
    return x.reshape(T, batch, m // batch, ch).permute(1, 2, 0, 3).reshape(batch, -1, ch)


def _group_states(u: Tensor, dl: Tensor, A: Tensor, Bm: Tensor, h0: Tensor):
    """Blocked scan of one group. u, dl: (T, M, Di); Bm: (T, M, N); h0: (batch, Di, N); M = batch*K chunks.

    Returns h (T, M, Di, N) states, a (T, M, Di, N) per-step decays, H (M, Di, N) chunk-start states,
    P_end (M, Di, N) whole-chunk decays (None when K == 1), h_last (batch, Di, N).
    """
    T, M, Di = u.shape
    batch, _, N = h0.shape
    K = M // batch
    a = (dl[..., None] * A).exp_()  # (T, M, Di, N)
    h = (dl * u)[..., None] * Bm[:, :, None, :]  # (T, M, Di, N) inputs, scanned in place into states
    if K == 1:  # one chunk: start from the true state, nothing to correct
        h[0].addcmul_(a[0], h0)
    for t in range(1, T):  # all chunks advance together
        h[t].addcmul_(a[t], h[t - 1])
    if K == 1:
        return h, a, h0, None, h[-1].clone()  # clone: a view would keep the whole group tensor alive
    P = torch.cumprod(a, 0)  # (T, M, Di, N) decay from chunk start through t
    h_end, P_end = h[-1].view(batch, K, Di, N), P[-1].view(batch, K, Di, N)
    carry, starts = h0, []
    for k in range(K):  # carry chunk-start states across the group's chunks
        starts.append(carry)
        carry = torch.addcmul(h_end[:, k], P_end[:, k], carry)
    H = torch.stack(starts, 1).view(M, Di, N)
    h.addcmul_(P, H)  # closed-form correction: h_t = local_t + P_t * H
    return h, a, H, P[-1], carry


def _group_backward(u, dl, A, Bm, Cm, h0, gy, g_last):
    """Gradients of one group given gy (T, M, Di) and g_last (batch, Di, N) = dLoss/d(group's final state)."""
    T, M, Di = u.shape
    batch, _, N = h0.shape
    K = M // batch
    h, a, H, P_end, _ = _group_states(u, dl, A, Bm, h0)
    lam = gy[..., None] * Cm[:, :, None, :]  # (T, M, Di, N) becomes dLoss/dh_t
    if K == 1:
        lam[-1].add_(g_last)
    for t in range(T - 2, -1, -1):  # reverse scan (chunk-local when K > 1)
        lam[t].addcmul_(a[t + 1], lam[t + 1])
    if K == 1:
        g_h0 = a[0] * lam[0]
    else:
        # decay from after t to the chunk end; suffix sums by a reversed cumsum keep precision relative to their size
        after = torch.flip(torch.cumsum(torch.flip(dl, [0]), 0), [0]) - dl  # (T, M, Di)
        R = (after[..., None] * A).exp_()  # (T, M, Di, N)
        into = (a[0] * lam[0]).view(batch, K, Di, N)
        P_end = P_end.view(batch, K, Di, N)
        g_h0, ends = g_last, [None] * K
        for k in range(K - 1, -1, -1):  # gradient entering each chunk's last state from the future
            ends[k] = g_h0
            g_h0 = torch.addcmul(into[:, k], P_end[:, k], g_h0)
        lam.addcmul_(R, torch.stack(ends, 1).view(M, Di, N))
        del R
    w = lam * a  # dLoss/d(log-decay) = lam * a * h_{t-1}
    w[0].mul_(H)
    w[1:].mul_(h[:-1])
    gA = (w * dl[..., None]).sum((0, 1))  # (Di, N)
    gdl = (w.mul_(A)).sum(-1)  # (T, M, Di)
    q = torch.einsum("tmdn,tmn->tmd", lam, Bm)  # (T, M, Di)
    gdl = gdl + q * u
    gu = q * dl
    gB = torch.einsum("tmd,tmdn->tmn", dl * u, lam)  # (T, M, N)
    gC = torch.einsum("tmd,tmdn->tmn", gy, h)  # (T, M, N)
    return gu, gdl, gA, gB, gC, g_h0


def _plan(batch: int, length: int, d_inner: int, d_state: int, chunk_size: int, group_elems: int) -> tuple[int, int]:
    """(T frames per chunk, K chunks per group): K > 1 only while a group tensor stays under group_elems elements."""
    T = max(1, min(chunk_size, length))
    K = max(1, group_elems // (T * batch * d_inner * d_state))
    return T, min(K, math.ceil(length / T))


class _BlockedScan(torch.autograd.Function):
    """y_ssm = <C, h> (no D, no gate) and the final state, with a recompute-per-group analytic backward."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, h0, chunk_size, group_elems):
        batch, L, Di = u.shape
        T, K = _plan(batch, L, Di, A.shape[1], chunk_size, group_elems)
        span = T * K  # frames per group; the last group may hold fewer chunks
        pad = (-L) % T  # padded frames have delta = 0: decay 1, input 0, so the state passes through unchanged
        padded = [F.pad(x, (0, 0, 0, pad)) for x in (u, delta, B, C)]
        ys, starts, h = [], [], h0
        for s in range(0, L + pad, span):
            uc, dc, bc, cc = (_to_chunks(x[:, s:s + span], T) for x in padded)
            starts.append(h)
            states, _, _, _, h = _group_states(uc, dc, A, bc, h)
            ys.append(_from_chunks(torch.einsum("tmdn,tmn->tmd", states, cc), batch))  # einsum: ~5x faster than matmul
        ctx.save_for_backward(u, delta, A, B, C, torch.stack(starts))
        ctx.plan = (T, span, pad)
        return torch.cat(ys, 1)[:, :L], h

    @staticmethod
    def backward(ctx, gy, g_last):
        u, delta, A, B, C, starts = ctx.saved_tensors
        T, span, pad = ctx.plan
        batch, L, Di = u.shape
        padded = [F.pad(x, (0, 0, 0, pad)) for x in (u, delta, B, C, gy)]
        g_last = torch.zeros_like(starts[0]) if g_last is None else g_last
        grads = {k: [] for k in ("u", "dl", "B", "C")}
        gA = torch.zeros_like(A)
        for i, s in reversed(list(enumerate(range(0, L + pad, span)))):
            uc, dc, bc, cc, gc = (_to_chunks(x[:, s:s + span], T) for x in padded)
            gu, gdl, ga, gb, gcc, g_last = _group_backward(uc, dc, A, bc, cc, starts[i], gc, g_last)
            gA += ga
            for key, g in zip(grads, (gu, gdl, gb, gcc)):
                grads[key].insert(0, _from_chunks(g, batch))
        gu, gdl, gB, gC = (torch.cat(grads[k], 1)[:, :L] for k in grads)
        return gu, gdl, gA, gB, gC, g_last, None, None


def selective_scan(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None, z: Tensor | None = None,
    h0: Tensor | None = None, chunk_size: int = 16, group_elems: int = SCAN_GROUP_ELEMS,
) -> tuple[Tensor, Tensor]:
    """Blocked parallel selective scan; same arguments and results as ``selective_scan_ref``.

    Args:
        chunk_size: T, frames per chunk (the inner loop length).
        group_elems: several chunks (K > 1) are batched into one group only while a (T, B*K, d_inner, d_state) work
            tensor stays under this many elements (small layers, where per-op dispatch cost dominates).
    """
    if h0 is None:
        h0 = u.new_zeros(u.shape[0], u.shape[2], A.shape[1])
    y, h_last = _BlockedScan.apply(u, delta, A, B, C, h0, chunk_size, group_elems)
    return _finish(y, u, D, z), h_last


# ----------------------------------------------------------------------------------------------------------------
# Modules
# ----------------------------------------------------------------------------------------------------------------


class Mamba(nn.Module):
    """Mamba-1 mixer (d_state 16, d_conv 4, expand 2 by default) with explicit state.

    Args:
        d_model: model width D.
        d_state: SSM state size N per channel.
        d_conv: depthwise causal conv width.
        expand: d_inner = expand * d_model.
        dt_rank: rank of the dt projection; "auto" = ceil(d_model / 16).
        dt_min, dt_max, dt_init_floor: softplus(dt_proj.bias) is log-uniform in [dt_min, dt_max] at init.
        use_kernels: None = mamba-ssm kernels when installed and the input is on CUDA; True = require them;
            False = pure PyTorch always.
        chunk_size: chunk length T of the pure-PyTorch blocked scan.
    """

    def __init__(
        self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2, dt_rank: int | str = "auto",
        dt_min: float = 1e-3, dt_max: float = 0.1, dt_init_floor: float = 1e-4, use_kernels: bool | None = None,
        chunk_size: int = 16,
    ):
        super().__init__()
        if use_kernels and not KERNELS_AVAILABLE:
            raise RuntimeError("Mamba(use_kernels=True) needs mamba-ssm and causal-conv1d with CUDA; "
                               "install the 'gpu' extra or pass use_kernels=None/False")
        self.d_model, self.d_state, self.d_conv = d_model, d_state, d_conv
        self.d_inner = expand * d_model
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.use_kernels, self.chunk_size = use_kernels, chunk_size
        di = self.d_inner
        self.in_proj = nn.Linear(d_model, 2 * di, bias=False)
        self.conv1d = nn.Conv1d(di, di, d_conv, groups=di, padding=d_conv - 1, bias=True)
        self.x_proj = nn.Linear(di, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, di, bias=True)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(di, 1))
        self.D = nn.Parameter(torch.ones(di))
        self.out_proj = nn.Linear(di, d_model, bias=False)
        # dt init as mamba-ssm: weight U(+-rank^-0.5), bias = softplus^-1(dt), dt log-uniform in [dt_min, dt_max]
        std = self.dt_rank ** -0.5
        nn.init.uniform_(self.dt_proj.weight, -std, std)
        dt = torch.exp(torch.rand(di) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        self.dt_proj.bias._no_reinit = True  # mamba-ssm's marker: keep it when zeroing Linear biases
        self.A_log._no_weight_decay = True
        self.D._no_weight_decay = True

    def init_state(self, batch_size: int, device=None, dtype=None) -> MambaState:
        """Zero state (the same shapes as mamba-ssm's allocate_inference_cache)."""
        device = self.D.device if device is None else device  # D: a plain parameter even after Linear quantization
        dtype = self.D.dtype if dtype is None else dtype
        return MambaState(torch.zeros(batch_size, self.d_inner, self.d_conv, device=device, dtype=dtype),
                          torch.zeros(batch_size, self.d_inner, self.d_state, device=device, dtype=dtype))

    def _kernels_for(self, x: Tensor) -> bool:
        if self.use_kernels is None:
            return KERNELS_AVAILABLE and x.is_cuda
        return bool(self.use_kernels)

    def _ssm_params(self, xc: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        dt, Bm, Cm = torch.split(self.x_proj(xc), [self.dt_rank, self.d_state, self.d_state], dim=-1)
        return F.softplus(self.dt_proj(dt)), Bm, Cm  # delta (..., Di) > 0; B, C (..., N)

    def forward(self, x: Tensor, state: MambaState | None = None) -> tuple[Tensor, MambaState]:
        """Full sequence. x (B, L, D), state from init_state/step/forward or None (zeros) -> (y (B, L, D), state)."""
        # kernels: from zero state, or stepping from a carried state when no gradient is needed (the Triton step
        # kernel has no backward; training from a carried state takes the pure path, which also runs on CUDA)
        if self._kernels_for(x) and (state is None or not torch.is_grad_enabled()):
            return self._forward_kernels(x, state)
        batch, L, _ = x.shape
        state = self.init_state(batch, x.device, x.dtype) if state is None else state
        xi, z = self.in_proj(x).chunk(2, dim=-1)  # (B, L, Di) each
        # causal depthwise conv over [last d_conv-1 inputs of the state, x]
        hist = torch.cat([state.conv_state[:, :, 1:].transpose(1, 2), xi], 1)  # (B, L+W-1, Di)
        w = self.conv1d.weight[:, 0, :]  # (Di, W)
        xc = self.conv1d.bias + sum(hist[:, k:k + L] * w[:, k] for k in range(self.d_conv))
        xc = F.silu(xc)  # (B, L, Di)
        delta, Bm, Cm = self._ssm_params(xc)
        A = -torch.exp(self.A_log)  # (Di, N)
        y, h = selective_scan(xc, delta, A, Bm, Cm, self.D, z, state.ssm_state, self.chunk_size)
        new_conv = hist[:, -self.d_conv:].transpose(1, 2).contiguous()  # (B, Di, W)
        return self.out_proj(y), MambaState(new_conv, h)

    def step(self, x: Tensor, state: MambaState) -> tuple[Tensor, MambaState]:
        """One frame. x (B, D) -> (y (B, D), new state); the given state's tensors are not modified."""
        if self._kernels_for(x):
            return self._step_kernels(x, state)
        xi, z = self.in_proj(x).chunk(2, dim=-1)  # (B, Di)
        conv = torch.cat([state.conv_state[:, :, 1:], xi[:, :, None]], -1)  # (B, Di, W)
        xc = F.silu((conv * self.conv1d.weight[:, 0, :]).sum(-1) + self.conv1d.bias)  # (B, Di)
        delta, Bm, Cm = self._ssm_params(xc)  # (B, Di), (B, N), (B, N)
        dA = torch.exp(delta[:, :, None] * -torch.exp(self.A_log))  # (B, Di, N)
        h = dA * state.ssm_state + (delta * xc)[:, :, None] * Bm[:, None, :]
        y = torch.matmul(h, Cm[:, :, None]).squeeze(-1) + self.D * xc  # (B, Di)
        return self.out_proj(y * F.silu(z)), MambaState(conv, h)

    # --- mamba-ssm kernel path: CUDA only, NOT exercised by the CPU test suite (tests marked gpu) ---------------
    # The final ssm state returned by selective_scan_fn carries no gradient (truncated BPTT across calls stops there).

    def _forward_kernels(self, x: Tensor, state: MambaState | None) -> tuple[Tensor, MambaState]:
        if state is not None:  # the fused Mamba-1 scan cannot start from a state: step frame by frame
            ys = []
            for t in range(x.shape[1]):
                y, state = self._step_kernels(x[:, t], state)
                ys.append(y)
            return torch.stack(ys, 1), state
        L = x.shape[1]
        xi, z = self.in_proj(x).transpose(1, 2).chunk(2, dim=1)  # (B, Di, L) each
        xi = xi.contiguous()
        xc = causal_conv1d_fn(xi, self.conv1d.weight[:, 0, :], self.conv1d.bias, activation="silu")  # (B, Di, L)
        dt, Bm, Cm = torch.split(self.x_proj(xc.transpose(1, 2)), [self.dt_rank, self.d_state, self.d_state], -1)
        dt = (dt @ self.dt_proj.weight.t()).transpose(1, 2).contiguous()  # (B, Di, L), bias added in the kernel
        y, h = selective_scan_fn(
            xc, dt, -torch.exp(self.A_log.float()), Bm.transpose(1, 2).contiguous(), Cm.transpose(1, 2).contiguous(),
            self.D.float(), z=z.contiguous(), delta_bias=self.dt_proj.bias.float(), delta_softplus=True,
            return_last_state=True)
        conv = F.pad(xi, (self.d_conv - L, 0))  # (B, Di, W) last d_conv inputs, zero-padded on the left
        return self.out_proj(y.transpose(1, 2)), MambaState(conv, h.to(x.dtype))

    def _step_kernels(self, x: Tensor, state: MambaState) -> tuple[Tensor, MambaState]:
        conv, ssm = state.conv_state.clone(), state.ssm_state.clone()  # the kernels update in place
        xi, z = self.in_proj(x).chunk(2, dim=-1)
        xc = causal_conv1d_update(xi, conv, self.conv1d.weight[:, 0, :], self.conv1d.bias, activation="silu")
        dt, Bm, Cm = torch.split(self.x_proj(xc), [self.dt_rank, self.d_state, self.d_state], dim=-1)
        y = selective_state_update(ssm, xc, dt @ self.dt_proj.weight.t(), -torch.exp(self.A_log.float()), Bm, Cm,
                                   self.D, z=z, dt_bias=self.dt_proj.bias, dt_softplus=True)
        return self.out_proj(y), MambaState(conv, ssm)


class GatedMLP(nn.Module):
    """mamba-ssm GatedMLP: fc1 d -> 2*hidden (no bias), y * silu(gate), fc2 hidden -> d.

    Args:
        d_model: input/output width.
        hidden: hidden width before rounding (None = int(8 * d_model / 3) as mamba-ssm).
        multiple_of: hidden is rounded up to a multiple of this.
    """

    def __init__(self, d_model: int, hidden: int | None = None, multiple_of: int = 128):
        super().__init__()
        hidden = int(8 * d_model / 3) if hidden is None else hidden
        self.hidden = (hidden + multiple_of - 1) // multiple_of * multiple_of
        self.fc1 = nn.Linear(d_model, 2 * self.hidden, bias=False)
        self.fc2 = nn.Linear(self.hidden, d_model, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        y, gate = self.fc1(x).chunk(2, dim=-1)
        return self.fc2(y * F.silu(gate))


class MambaBlock(nn.Module):
    """Pre-norm residual block as MambaTalk (mamba-ssm Block): h = x + Mamba(LN(x)); y = h + GatedMLP(LN2(h)).

    Args:
        d_model: width.
        mlp_hidden: GatedMLP hidden width (None = mamba-ssm default 8/3*d, 0 = no MLP and no norm2).
        mlp_multiple_of: the hidden width is rounded up to a multiple of this.
        norm_eps: LayerNorm epsilon.
        **mamba_kwargs: passed to ``Mamba`` (d_state, d_conv, expand, dt_rank, use_kernels, chunk_size, ...).
    """

    def __init__(self, d_model: int, mlp_hidden: int | None = None, mlp_multiple_of: int = 128,
                 norm_eps: float = 1e-5, **mamba_kwargs):
        super().__init__()
        self.norm = nn.LayerNorm(d_model, eps=norm_eps)
        self.mixer = Mamba(d_model, **mamba_kwargs)
        if mlp_hidden == 0:
            self.norm2, self.mlp = None, None
        else:
            self.norm2 = nn.LayerNorm(d_model, eps=norm_eps)
            self.mlp = GatedMLP(d_model, mlp_hidden, mlp_multiple_of)

    def init_state(self, batch_size: int, device=None, dtype=None) -> MambaState:
        return self.mixer.init_state(batch_size, device, dtype)

    def _mlp(self, h: Tensor) -> Tensor:
        return h if self.mlp is None else h + self.mlp(self.norm2(h))

    def forward(self, x: Tensor, state: MambaState | None = None) -> tuple[Tensor, MambaState]:
        """x (B, L, D) -> (y (B, L, D), state)."""
        m, state = self.mixer(self.norm(x), state)
        return self._mlp(x + m), state

    def step(self, x: Tensor, state: MambaState) -> tuple[Tensor, MambaState]:
        """x (B, D) -> (y (B, D), state)."""
        m, state = self.mixer.step(self.norm(x), state)
        return self._mlp(x + m), state


def init_mamba_weights(module: nn.Module, n_layers: int, n_residuals_per_layer: int = 2) -> None:
    """mamba-ssm's _init_weights: zero Linear biases (except dt_proj's) and rescale the residual output projections
    (out_proj, fc2) to kaiming_uniform(a=sqrt(5)) / sqrt(n_residuals_per_layer * n_layers)."""
    for m in module.modules():
        if isinstance(m, nn.Linear) and m.bias is not None and not getattr(m.bias, "_no_reinit", False):
            nn.init.zeros_(m.bias)
    for name, p in module.named_parameters():
        if name.endswith("out_proj.weight") or name.endswith("fc2.weight"):
            nn.init.kaiming_uniform_(p, a=math.sqrt(5))
            with torch.no_grad():
                p /= math.sqrt(n_residuals_per_layer * n_layers)


class MambaStack(nn.Module):
    """n MambaBlocks then a final LayerNorm (names as mamba-ssm MixerModel: layers.i.*, norm_f).

    Args:
        d_model: width.
        n_layers: number of blocks.
        mlp_hidden, mlp_multiple_of, norm_eps, **mamba_kwargs: as ``MambaBlock``.
    """

    def __init__(self, d_model: int, n_layers: int, mlp_hidden: int | None = None, mlp_multiple_of: int = 128,
                 norm_eps: float = 1e-5, **mamba_kwargs):
        super().__init__()
        self.layers = nn.ModuleList(
            MambaBlock(d_model, mlp_hidden, mlp_multiple_of, norm_eps, **mamba_kwargs) for _ in range(n_layers))
        self.norm_f = nn.LayerNorm(d_model, eps=norm_eps)
        init_mamba_weights(self, n_layers, 1 if mlp_hidden == 0 else 2)

    def init_state(self, batch_size: int, device=None, dtype=None) -> list[MambaState]:
        return [layer.init_state(batch_size, device, dtype) for layer in self.layers]

    def forward(self, x: Tensor, state: list[MambaState] | None = None) -> tuple[Tensor, list[MambaState]]:
        """x (B, L, D) -> (y (B, L, D), per-layer states)."""
        state = [None] * len(self.layers) if state is None else state
        new = []
        for layer, s in zip(self.layers, state, strict=True):
            x, s = layer(x, s)
            new.append(s)
        return self.norm_f(x), new

    def step(self, x: Tensor, state: list[MambaState]) -> tuple[Tensor, list[MambaState]]:
        """x (B, D) -> (y (B, D), per-layer states)."""
        new = []
        for layer, s in zip(self.layers, state, strict=True):
            x, s = layer.step(x, s)
            new.append(s)
        return self.norm_f(x), new
