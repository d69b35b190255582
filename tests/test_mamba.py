"""Mamba-1 layer: mamba-ssm compatible parameters, blocked scan == sequential reference, streaming == full."""
import math

import pytest
import torch
import torch.nn.functional as F

from models.mamba import (
    KERNELS_AVAILABLE,
    Mamba,
    MambaBlock,
    MambaStack,
    MambaState,
    selective_scan,
    selective_scan_ref,
)

# state_dict of mamba_ssm.modules.mamba_simple.Mamba(d_model) with defaults (d_state 16, d_conv 4, expand 2,
# dt_rank ceil(d/16), conv_bias True, bias False), written out from its __init__ (mamba-ssm is not installable here).
MAMBA_SSM_TABLE = {
    768: {
        "in_proj.weight": (3072, 768), "conv1d.weight": (1536, 1, 4), "conv1d.bias": (1536,),
        "x_proj.weight": (80, 1536), "dt_proj.weight": (1536, 48), "dt_proj.bias": (1536,),
        "A_log": (1536, 16), "D": (1536,), "out_proj.weight": (768, 1536),
    },
    256: {
        "in_proj.weight": (1024, 256), "conv1d.weight": (512, 1, 4), "conv1d.bias": (512,),
        "x_proj.weight": (48, 512), "dt_proj.weight": (512, 16), "dt_proj.bias": (512,),
        "A_log": (512, 16), "D": (512,), "out_proj.weight": (256, 512),
    },
    100: {  # dt_rank = ceil(100 / 16) = 7
        "in_proj.weight": (400, 100), "conv1d.weight": (200, 1, 4), "conv1d.bias": (200,),
        "x_proj.weight": (39, 200), "dt_proj.weight": (200, 7), "dt_proj.bias": (200,),
        "A_log": (200, 16), "D": (200,), "out_proj.weight": (100, 200),
    },
}


def _shapes(module):
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


@pytest.mark.parametrize("d_model", sorted(MAMBA_SSM_TABLE))
def test_state_dict_matches_mamba_ssm(d_model):
    assert _shapes(Mamba(d_model)) == MAMBA_SSM_TABLE[d_model]


def test_block_and_stack_names_match_mamba_ssm_block_and_mixer_model():
    # mamba_ssm Block(norm, mixer, norm2, mlp=GatedMLP(fc1, fc2)); MambaTalk's d=768 blocks use hidden 768
    block = _shapes(MambaBlock(768, mlp_hidden=768))
    expected = {f"mixer.{k}": v for k, v in MAMBA_SSM_TABLE[768].items()}
    expected.update({"norm.weight": (768,), "norm.bias": (768,), "norm2.weight": (768,), "norm2.bias": (768,),
                     "mlp.fc1.weight": (1536, 768), "mlp.fc2.weight": (768, 768)})
    assert block == expected
    # GatedMLP default hidden int(8*256/3) = 682 rounds up to 768; 700 -> 768; 0 = no MLP (and no norm2)
    assert _shapes(MambaBlock(256))["mlp.fc1.weight"] == (1536, 256)
    assert _shapes(MambaBlock(256, mlp_hidden=700))["mlp.fc2.weight"] == (256, 768)
    assert set(_shapes(MambaBlock(256, mlp_hidden=0))) == {"norm.weight", "norm.bias"} | {
        f"mixer.{k}" for k in MAMBA_SSM_TABLE[256]}
    stack = _shapes(MambaStack(256, 2, mlp_hidden=0))
    assert {"layers.0.mixer.A_log", "layers.1.mixer.out_proj.weight", "norm_f.weight", "norm_f.bias"} <= set(stack)
    assert len(stack) == 2 * (len(MAMBA_SSM_TABLE[256]) + 2) + 2


def test_init_follows_mamba_ssm():
    torch.manual_seed(0)
    m = Mamba(256)
    assert torch.allclose(m.A_log.exp(), torch.arange(1.0, 17.0).expand(512, 16))
    assert torch.equal(m.D, torch.ones(512))
    dt = F.softplus(m.dt_proj.bias)
    assert dt.min() >= 1e-3 * 0.999 and dt.max() <= 0.1 * 1.001
    assert dt.max() > 0.05 and dt.min() < 0.002  # log-uniform over the whole range
    assert m.dt_proj.weight.abs().max() <= 16 ** -0.5
    assert m.in_proj.bias is None and m.out_proj.bias is None and m.conv1d.bias is not None
    # MambaStack rescales the residual projections by 1/sqrt(2 * n_layers) (MLP present)
    stack = MambaStack(64, 3, mlp_hidden=64)
    bound = 1 / math.sqrt(128) / math.sqrt(6)
    w = stack.layers[0].mixer.out_proj.weight.abs().max()
    assert 0.8 * bound < w <= bound


def _scan_inputs(batch, length, d_inner, d_state, dtype, log_delta_shift=-3.0, seed=0):
    g = torch.Generator().manual_seed(seed)

    def r(*s):
        return torch.randn(*s, generator=g, dtype=dtype)

    delta = F.softplus(r(batch, length, d_inner) + log_delta_shift)
    A = -torch.rand(d_inner, d_state, generator=g, dtype=dtype) * 16 - 0.1
    return [r(batch, length, d_inner), delta, A, r(batch, length, d_state), r(batch, length, d_state),
            r(d_inner), r(batch, length, d_inner), r(batch, d_inner, d_state)]


# (chunk_size, group_elems) -> T frames per chunk, K chunks per group (one frame here is 2*6*16 = 192 elements)
SCAN_PLANS = {
    "default": (16, 1 << 17),  # one group, K = 5 chunks, the last one padded
    "T32-one-group": (32, 1 << 22),  # K = 3
    "T5-K3-groups": (5, 3000),  # 5 groups, the last one short
    "T8-K1-groups": (8, 1),  # single-chunk groups: scanned from the true state, no correction
    "T1": (1, 1 << 22),
}


@pytest.mark.parametrize("chunk_size,group_elems", SCAN_PLANS.values(), ids=SCAN_PLANS.keys())
def test_blocked_scan_equals_reference(chunk_size, group_elems):
    args = _scan_inputs(2, 70, 6, 16, torch.float32)
    y_ref, h_ref = selective_scan_ref(*args)
    y, h = selective_scan(*args, chunk_size=chunk_size, group_elems=group_elems)
    assert y.shape == (2, 70, 6) and h.shape == (2, 6, 16)
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(h, h_ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("group_elems", [1 << 17, 1], ids=["K5", "K1"])
def test_blocked_scan_stable_with_strong_decay_long_sequence(group_elems):
    # channels 0-3 decay by up to ~exp(-130) per frame, 4-7 barely decay (long memory): no overflow, no precision loss
    args = _scan_inputs(2, 300, 8, 16, torch.float32, log_delta_shift=0.0, seed=1)
    args[1][:, :, :4] += 5.0
    args[1][:, :, 4:] *= 1e-3
    args = [a.requires_grad_() for a in args]
    y_ref, h_ref = selective_scan_ref(*args)
    y, h = selective_scan(*args, chunk_size=64, group_elems=group_elems)
    assert torch.isfinite(y).all() and torch.isfinite(h).all()
    torch.testing.assert_close(y, y_ref, atol=1e-4, rtol=1e-5)  # |y| reaches ~190 here
    torch.testing.assert_close(h, h_ref, atol=1e-5, rtol=1e-5)
    g_ref = torch.autograd.grad((y_ref.square().mean() + h_ref.sum()), args)
    g = torch.autograd.grad((y.square().mean() + h.sum()), args)
    for a, b in zip(g, g_ref):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("group_elems", [150, 1], ids=["K2", "K1"])
def test_blocked_scan_gradcheck_float64(group_elems):
    # 11 frames, chunks of 3 (one padded frame): K = 2 chunks per group (2 groups) or single-chunk groups (4 groups)
    args = [a.requires_grad_() for a in _scan_inputs(2, 11, 3, 4, torch.float64, log_delta_shift=0.0)]
    assert torch.autograd.gradcheck(lambda *a: selective_scan(*a, chunk_size=3, group_elems=group_elems), args)


def test_mamba_gradcheck_float64():
    torch.manual_seed(0)
    m = Mamba(4, chunk_size=4).double()
    x = torch.randn(2, 6, 4, dtype=torch.float64, requires_grad=True)
    conv = torch.randn(2, 8, 4, dtype=torch.float64, requires_grad=True)
    ssm = torch.randn(2, 8, 16, dtype=torch.float64, requires_grad=True)

    def f(x, conv, ssm):
        y, s = m(x, MambaState(conv, ssm))
        return y, s.conv_state, s.ssm_state

    assert torch.autograd.gradcheck(f, (x, conv, ssm))
    # and the parameters: gradients agree with the sequential-reference forward
    y, s = m(x)
    ref = Mamba(4).double()
    ref.load_state_dict(m.state_dict())
    params = list(m.parameters())
    g = torch.autograd.grad(y.sum() + s.ssm_state.sum(), params)
    y_ref, s_ref = _step_loop(ref, x)
    g_ref = torch.autograd.grad(y_ref.sum() + s_ref.ssm_state.sum(), list(ref.parameters()))
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-8)


def _step_loop(model, x, state=None):
    state = model.init_state(x.shape[0], x.device, x.dtype) if state is None else state
    ys = []
    for t in range(x.shape[1]):
        y, state = model.step(x[:, t], state)
        ys.append(y)
    return torch.stack(ys, 1), state


def _chunked(model, x, size):
    ys, state = [], None
    for s in range(0, x.shape[1], size):
        y, state = model(x[:, s:s + size], state)
        ys.append(y)
    return torch.cat(ys, 1), state


def _states(state):
    states = state if isinstance(state, list) else [state]
    return [t for s in states for t in (s.conv_state, s.ssm_state)]


@pytest.mark.parametrize("make", [lambda: Mamba(32), lambda: MambaBlock(32, mlp_hidden=64),
                                  lambda: MambaStack(32, 2, mlp_hidden=0)], ids=["mamba", "block", "stack"])
def test_step_and_chunked_forward_equal_full_scan(make):
    torch.manual_seed(0)
    model = make().eval()
    x = torch.randn(2, 83, 32)
    with torch.no_grad():
        y_full, s_full = model(x)
        assert y_full.shape == (2, 83, 32)
        results = {"step": _step_loop(model, x)}
        results.update({f"chunk{c}": _chunked(model, x, c) for c in (1, 3, 8, 17)})
    assert y_full.abs().max() > 0.1  # the comparison is not between zeros
    for name, (y, s) in results.items():
        torch.testing.assert_close(y, y_full, atol=1e-5, rtol=0, msg=name)
        for a, b in zip(_states(s), _states(s_full)):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0, msg=name)


def test_forward_matches_sequential_reference_and_state_shapes():
    torch.manual_seed(0)
    m = Mamba(24)
    x = torch.randn(3, 40, 24)
    with torch.no_grad():
        y, s = m(x)
        y_ref, s_ref = _step_loop(m, x)
    assert s.conv_state.shape == (3, 48, 4) and s.ssm_state.shape == (3, 48, 16)
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=0)
    # conv state holds the last d_conv pre-conv inputs (mamba-ssm: F.pad(x, (d_conv - L, 0)))
    xi = m.in_proj(x)[..., :48]
    torch.testing.assert_close(s.conv_state, xi[:, -4:].transpose(1, 2))
    _, s2 = m(x[:, :2])
    torch.testing.assert_close(s2.conv_state, F.pad(xi[:, :2].transpose(1, 2), (2, 0)))


def test_forward_and_step_do_not_mutate_inputs():
    torch.manual_seed(0)
    model = MambaBlock(16, mlp_hidden=32)
    x = torch.randn(2, 9, 16)
    state = MambaState(torch.randn(2, 32, 4), torch.randn(2, 32, 16))
    before = [t.clone() for t in (x, state.conv_state, state.ssm_state)]
    _, s1 = model(x, state)
    _, s2 = model.step(x[:, 0], state)
    for t, b in zip((x, state.conv_state, state.ssm_state), before):
        assert torch.equal(t, b)
    assert not torch.equal(s1.ssm_state, state.ssm_state) and not torch.equal(s2.conv_state, state.conv_state)


def test_state_detach_cuts_graph():
    m = Mamba(8)
    _, s = m(torch.randn(1, 5, 8))
    assert s.ssm_state.requires_grad and not s.detach().ssm_state.requires_grad


@pytest.mark.gpu
@pytest.mark.skipif(not (torch.cuda.is_available() and KERNELS_AVAILABLE), reason="needs CUDA + mamba-ssm")
def test_kernel_path_matches_pure_torch():
    torch.manual_seed(0)
    pure = Mamba(64, use_kernels=False).cuda()
    fused = Mamba(64, use_kernels=True).cuda()
    fused.load_state_dict(pure.state_dict())
    x = torch.randn(2, 50, 64, device="cuda")
    with torch.no_grad():
        y0, s0 = pure(x)
        y1, s1 = fused(x)
        torch.testing.assert_close(y1, y0, atol=1e-3, rtol=1e-3)
        for a, b in zip(_states(s1), _states(s0)):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
        y2, _ = _chunked(fused, x, 7)  # carried state -> kernel step loop
        torch.testing.assert_close(y2, y0, atol=1e-3, rtol=1e-3)
