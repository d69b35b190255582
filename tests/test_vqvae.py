"""Per-part causal VQ-VAE: shapes, streaming == whole decode, bounded look-ahead, quantizer safety, training, ONNX."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models.quantizer import VectorQuantizer
from models.vqvae import MAX_LOOKAHEAD, PartVQVAE, VQConfig, count_parameters


@pytest.fixture(autouse=True)
def one_thread():
    """Small convs run faster on one thread, and 2-thread OpenMP stalls badly when the CPU is shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def small_cfg(**kw) -> VQConfig:
    base = dict(part="body", in_dim=8, code_dim=32, codebook_size=64, hidden=48, n_layers=2, lookahead=1)
    base.update(kw)
    return VQConfig(**base)


def make_model(seed: int = 0, **kw) -> PartVQVAE:
    torch.manual_seed(seed)
    return PartVQVAE(small_cfg(**kw)).eval()


def test_config_json_roundtrip_and_validation():
    cfg = VQConfig(part="hand", in_dim=108, lookahead=2, dead_code_threshold=0.5)
    d = json.loads(json.dumps(cfg.to_dict()))
    assert VQConfig.from_dict(d) == cfg
    assert d["part"] == "hand" and d["code_dim"] == 256 and d["codebook_size"] == 256 and d["ema_decay"] == 0.99
    with pytest.raises(ValueError, match="unknown VQConfig key"):
        VQConfig.from_dict({**d, "bogus": 1})
    with pytest.raises(ValueError, match="part"):
        VQConfig(part="legs", in_dim=4)
    with pytest.raises(ValueError, match="lookahead"):
        VQConfig(part="body", in_dim=4, lookahead=MAX_LOOKAHEAD + 1)
    with pytest.raises(ValueError, match="lookahead"):
        VQConfig(part="body", in_dim=4, kernel_size=1, lookahead=1)  # 1x1 convs cannot look ahead


def test_shapes_and_default_size():
    model = make_model()
    x = torch.randn(3, 40, 8)
    z = model.encode(x)
    q = model.quantize(z)
    assert z.shape == (3, 40, 32)
    assert q.zq.shape == (3, 40, 32) and q.indices.shape == (3, 40) and q.indices.dtype == torch.long
    assert q.loss.shape == () and q.counts.shape == (64,) and float(q.counts.sum()) == 120
    assert 1.0 <= float(q.perplexity) <= 64.0 and 0.0 < float(q.usage) <= 1.0
    recon, q2 = model(x)
    assert recon.shape == (3, 40, 8) and torch.equal(q2.indices, q.indices)
    assert torch.allclose(model.decode_indices(q.indices), recon, atol=1e-6)
    assert model.part == "body" and model.receptive_field == (13, 1)
    full = PartVQVAE(VQConfig(part="face", in_dim=75))  # EMAGE-size (256 x 256 codebook, hidden 256)
    assert full.quantizer.embed.shape == (256, 256)
    assert 1_500_000 < count_parameters(full) < 3_000_000  # EMAGE face VQ: ~2.2M


@pytest.mark.parametrize("lookahead", [0, 1, 2])
def test_stream_decode_equals_whole(lookahead):
    model = make_model(lookahead=lookahead)
    assert model.receptive_field[1] == lookahead
    zq = torch.randn(2, 500, 32)
    with torch.no_grad():
        whole = model.decode(zq)
        sizes = [1, 2, 5, 13] if lookahead == 1 else [1, 7]
        for chunk in sizes:
            state = model.init_decode_state(2)
            outs = []
            for start in range(0, 500, chunk):
                y, state = model.decode_stream(zq[:, start:start + chunk], state)
                # frame t comes out once code t + R has arrived
                assert sum(o.shape[1] for o in outs) + y.shape[1] == max(0, min(500, start + chunk) - lookahead)
                outs.append(y)
            assert state.codes.shape == (2, sum(model.receptive_field), 32)  # fixed-size buffer
            outs.append(model.flush_decode(state))
            streamed = torch.cat(outs, dim=1)
            assert streamed.shape == whole.shape
            assert (streamed - whole).abs().max() <= 1e-5, f"chunk {chunk}"


def test_stream_decode_irregular_chunks_and_short_stream():
    model = make_model(lookahead=2)
    zq = torch.randn(1, 60, 32)
    with torch.no_grad():
        whole = model.decode(zq)
        state, outs, start = model.init_decode_state(1), [], 0
        for chunk in [0, 1, 0, 3, 20, 1, 35]:
            y, state = model.decode_stream(zq[:, start:start + chunk], state)
            outs.append(y)
            start += chunk
        outs.append(model.flush_decode(state))
        assert (torch.cat(outs, 1) - whole).abs().max() <= 1e-5
        # a stream shorter than the look-ahead: everything comes out at flush
        y, state = model.decode_stream(zq[:, :1], model.init_decode_state(1))
        assert y.shape == (1, 0, 8)
        assert (model.flush_decode(state) - model.decode(zq[:, :1])).abs().max() <= 1e-5
    with pytest.raises(ValueError, match="decode_stream"):
        model.decode_stream(torch.randn(2, 3, 32), model.init_decode_state(1))


@pytest.mark.parametrize("lookahead", [0, 1, 3])
def test_decoder_lookahead_and_left_context_are_exact(lookahead):
    model = make_model(lookahead=lookahead)
    left, right = model.receptive_field
    assert right == lookahead
    zq = torch.randn(1, 60, 32)
    t = 30
    with torch.no_grad():
        base = model.decode(zq)
        for j, should_change in [(t + right + 1, False), (t + right, True), (t - left - 1, False), (t - left, True)]:
            bumped = zq.clone()
            bumped[:, j] += 3.0
            diff = (model.decode(bumped)[:, t] - base[:, t]).abs().max()
            assert (diff > 1e-4) == should_change, f"code {j} vs frame {t}: diff {float(diff)}"
        # nothing before frame t depends on codes after t + R
        bumped = zq.clone()
        bumped[:, t + right + 1:] = torch.randn(1, 60 - t - right - 1, 32)
        assert torch.equal(model.decode(bumped)[:, : t + 1], base[:, : t + 1])


def test_encoder_is_causal():
    model = make_model()
    x = torch.randn(1, 40, 8)
    with torch.no_grad():
        z = model.encode(x)
        x2 = x.clone()
        x2[:, 21:] = torch.randn(1, 19, 8)
        z2 = model.encode(x2)
    assert torch.equal(z[:, :21], z2[:, :21]) and not torch.allclose(z[:, 21], z2[:, 21])
    assert model.encoder_receptive_field == (12, 0)


def test_indices_always_in_range_for_extreme_inputs():
    model = make_model()
    z = torch.zeros(4, 10, 32)
    z[0] = 1e30
    z[1] = -1e30
    z[2, :, ::2], z[2, :, 1::2] = 3e38, -3e38  # products overflow to +-inf inside the distance
    z[3] = torch.randn(10, 32) * 1e20
    with torch.no_grad():
        q = model.quantize(z)
    assert q.indices.dtype == torch.long
    assert int(q.indices.min()) >= 0 and int(q.indices.max()) < 64
    assert torch.isfinite(q.zq).all()  # zq is always a codebook row
    with pytest.raises(ValueError, match=r"must be in \[0, 64\)"):
        model.decode_indices(torch.tensor([[0, 64]]))
    with pytest.raises(ValueError, match=r"must be in \[0, 64\)"):
        model.decode_indices(torch.tensor([[-1, 3]]))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_nonfinite_input_raises(bad):
    model = make_model()
    msg = r"NaN/Inf in body VQ input: reject or mask the frames at ingestion \(train.data check\)"
    x = torch.randn(2, 10, 8)
    x[1, 4, 3] = bad
    with pytest.raises(ValueError, match=msg):
        model.encode(x)
    with pytest.raises(ValueError, match=msg):
        model(x)
    z = torch.randn(2, 10, 32)
    z[0, 0, 0] = bad
    with pytest.raises(ValueError, match=msg):
        model.quantize(z)
    face = PartVQVAE(small_cfg(part="face"))
    with pytest.raises(ValueError, match="NaN/Inf in face VQ input"):
        face.encode(x)


def test_ema_init_and_dead_code_restart():
    torch.manual_seed(0)
    vq = VectorQuantizer(codebook_size=32, code_dim=4, dead_code_threshold=1.0, part="hand").train()
    data = torch.randn(8, 64, 4)
    assert not bool(vq.initialized)
    vq(data)  # first training call: codes start on encoder outputs
    assert bool(vq.initialized)
    flat = data.reshape(-1, 4)
    nearest_data = torch.cdist(vq.embed, flat).min(dim=1).values
    assert float(nearest_data.max()) < 1.0  # every code is near the data (EMA moved them slightly)
    # kill all codes but one: they are far away and have no EMA count
    vq.embed[1:] = 1e3
    vq.embed_sum[1:] = 1e3
    vq.cluster_size[1:] = 0.0
    vq.eval()
    assert float(vq(data).usage) == 1 / 32  # collapsed: everything maps to code 0
    vq.train()
    vq(data)
    assert int(vq.restarts) == 31
    vq.eval()
    assert float(vq(data).usage) > 0.5 and float(vq.embed.abs().max()) < 10.0


def test_state_dict_roundtrip_keeps_codebook():
    model = make_model()
    model.train()
    model(torch.randn(4, 32, 8))  # initialises and updates the codebook
    model.eval()
    clone = PartVQVAE(VQConfig.from_dict(model.cfg.to_dict()))
    clone.load_state_dict(model.state_dict())
    clone.eval()
    assert {"quantizer.embed", "quantizer.cluster_size", "quantizer.embed_sum", "quantizer.initialized"} <= set(
        model.state_dict())
    x = torch.randn(2, 20, 8)
    with torch.no_grad():
        assert torch.equal(clone(x)[0], model(x)[0])


def sinusoid_batch(gen: torch.Generator, batch: int, mix: torch.Tensor, frames: int = 64) -> torch.Tensor:
    """(B, T, 8) sums of 2 sinusoids (0.5-2 Hz at 30 fps, random phase) mixed into 8 channels."""
    t = torch.arange(frames).float() / 30.0
    freq = torch.rand(batch, 1, 2, generator=gen) * 1.5 + 0.5
    phase = torch.rand(batch, 1, 2, generator=gen) * 2 * math.pi
    return torch.sin(2 * math.pi * freq * t[None, :, None] + phase) @ mix


def test_tiny_training_reduces_error_without_codebook_collapse():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    mix = torch.randn(2, 8, generator=gen) / math.sqrt(2)
    cfg = VQConfig(part="body", in_dim=8, code_dim=32, codebook_size=128, hidden=64, n_layers=2, lookahead=1)
    model = PartVQVAE(cfg)
    held_out = sinusoid_batch(gen, 64, mix)

    def evaluate() -> tuple[float, float]:
        model.eval()
        with torch.no_grad():
            recon, q = model(held_out)
        model.train()
        return F.mse_loss(recon, held_out).item(), q.usage.item()

    mse_before, _ = evaluate()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(200):
        x = sinusoid_batch(gen, 16, mix)
        recon, q = model(x)
        loss = F.mse_loss(recon, x) + q.loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    mse_after, usage = evaluate()
    assert mse_after < mse_before / 5, (mse_before, mse_after)
    assert usage > 0.10, usage


def test_onnx_export_decode_parity(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model = make_model(lookahead=2)

    class DecodeOnly(torch.nn.Module):
        def __init__(self, vq: PartVQVAE):
            super().__init__()
            self.vq = vq

        def forward(self, zq):
            return self.vq.decode(zq)

    path = tmp_path / "decoder.onnx"
    torch.onnx.export(DecodeOnly(model), (torch.randn(1, 16, 32),), str(path), dynamo=False, opset_version=17,
                      input_names=["zq"], output_names=["motion"],
                      dynamic_axes={"zq": {0: "batch", 1: "time"}, "motion": {0: "batch", 1: "time"}})
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for shape in [(1, 7), (2, 123)]:
        zq = torch.randn(*shape, 32)
        with torch.no_grad():
            ref = model.decode(zq).numpy()
        out = sess.run(None, {"zq": zq.numpy()})[0]
        assert out.shape == ref.shape
        assert np.abs(out - ref).max() <= 1e-4


def test_masked_frames_do_not_touch_codebook_or_loss():
    torch.manual_seed(0)
    vq = VectorQuantizer(codebook_size=16, code_dim=4, part="body").train()
    z = torch.randn(2, 30, 4)
    valid = torch.ones(2, 30, dtype=torch.bool)
    valid[1, 10:] = False
    vq(z[:, :5])  # initialise
    masked = z.clone()
    masked[1, 10:] = 1e6  # garbage (finite) in frames masked at ingestion
    a, b = VectorQuantizer(16, 4, part="body").train(), VectorQuantizer(16, 4, part="body").train()
    a.load_state_dict(vq.state_dict())
    b.load_state_dict(vq.state_dict())
    torch.manual_seed(1)
    qa = a(z, valid)
    torch.manual_seed(1)
    qb = b(masked, valid)
    assert torch.equal(a.embed, b.embed) and torch.equal(a.cluster_size, b.cluster_size)
    assert torch.allclose(qa.loss, qb.loss) and torch.equal(qa.counts, qb.counts) and float(qa.counts.sum()) == 40
    assert qb.indices.shape == (2, 30)
