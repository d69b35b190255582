"""Tests for the causal MambaTalk-MHR generator (models/generator.py)."""
from __future__ import annotations

import json
import math

import pytest
import torch

from models.generator import (
    GeneratorConfig,
    GeneratorOutput,
    MambaTalkMHR,
    delay,
    euler_to_rot6d,
    generation_mask,
    parameter_counts,
    rot6d_to_euler,
    valid_mask,
)
from models.rates import FEATURE_DIM


@pytest.fixture(autouse=True)
def _one_thread():
    """1-frame steps are tiny ops: one intra-op thread is faster and immune to a busy shared CPU."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _model(**overrides) -> MambaTalkMHR:
    torch.manual_seed(0)
    model = MambaTalkMHR(GeneratorConfig.preset("tiny", n_speakers=4, **overrides)).eval()
    # non-trivial weights everywhere the zero init would hide a path (query, biases of the heads)
    with torch.no_grad():
        model.mask_query.normal_()
    return model


def _inputs(model: MambaTalkMHR, B: int, T: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    audio = torch.randn(B, T, FEATURE_DIM, generator=g)
    speaker = torch.arange(B) % (cfg.n_speakers + 1)
    motion = torch.randn(B, T, cfg.motion_dim, generator=g)
    mask = torch.rand(B, T, cfg.motion_dim, generator=g) < 0.5
    mask[:, : cfg.seed_frames] = False  # observed seed frames, then element-wise masking
    return audio, speaker, motion, mask


def _flat(out: GeneratorOutput) -> dict[str, torch.Tensor]:
    d = {f"latent.{k}": v for k, v in out.latents.items()}
    d.update({f"logits.{k}": v for k, v in out.logits.items()})
    d["global_rot6d"] = out.global_rot6d
    d["contact"] = out.contact
    return d


def _max_diff(a: GeneratorOutput, b: GeneratorOutput, sl: slice = slice(None)) -> float:
    fa, fb = _flat(a), _flat(b)
    assert fa.keys() == fb.keys()
    return max(float((fa[k][:, sl] - fb[k][:, sl]).abs().max()) for k in fa)


def test_shapes_all_parts():
    model = _model()
    cfg = model.config
    assert cfg.parts == ("body", "hand", "face")
    assert cfg.motion_dim == 70 + 108 + 75 + 6 + 4
    assert cfg.n_mamba_layers == 4
    audio, speaker, motion, mask = _inputs(model, 2, 37)
    with torch.no_grad():
        out = model(audio, speaker, motion, mask)
        out_nomotion = model(audio, speaker)
    for o in (out, out_nomotion):
        assert set(o.latents) == {"body", "hand", "face"}
        assert set(o.logits) == {"body", "hand", "face"}
        for v in o.latents.values():
            assert v.shape == (2, 37, cfg.code_dim)
        for v in o.logits.values():
            assert v.shape == (2, 37, cfg.codebook_size)
        assert o.global_rot6d.shape == (2, 37, 6)
        assert o.contact.shape == (2, 37, 4)
        assert o.global_rot_euler().shape == (2, 37, 3)
        assert all(bool(torch.isfinite(t).all()) for t in _flat(o).values())


def test_shapes_face_absent_and_no_face_logits():
    model = _model(part_dims={"hand": 108, "body": 70}, code_dim=32, codebook_size=64)
    cfg = model.config
    assert cfg.parts == ("body", "hand")  # canonical order whatever the caller's order
    assert cfg.motion_dim == 70 + 108 + 10
    assert cfg.n_mamba_layers == 3
    audio, speaker, motion, mask = _inputs(model, 3, 11)
    with torch.no_grad():
        out = model(audio, speaker, motion, mask)
    assert set(out.latents) == set(out.logits) == {"body", "hand"}
    assert out.latents["body"].shape == (3, 11, 32)
    assert out.logits["hand"].shape == (3, 11, 64)
    assert not any(k.startswith("parts.face") for k, _ in model.named_parameters())

    m2 = _model(face_logits=False)
    with torch.no_grad():
        out2 = m2(*_inputs(m2, 1, 5)[:2])
    assert set(out2.latents) == {"body", "hand", "face"} and set(out2.logits) == {"body", "hand"}


def _stepped(model, audio, speaker, motion, mask, chunk):
    state = model.init_state(audio.shape[0])
    outs = []
    for s in range(0, audio.shape[1], chunk):
        o, state = model.step(audio[:, s:s + chunk], speaker, state, motion[:, s:s + chunk], mask[:, s:s + chunk])
        outs.append(o)
    return GeneratorOutput.concat(outs), state


@pytest.mark.slow
def test_forward_equals_step_over_chunks_2000_frames():
    """2000 frames (67 s of speech), batch 1: chunks of 1, 2 and 7 frames reproduce forward within 1e-4."""
    model = _model()
    T = 2000
    audio, speaker, motion, mask = _inputs(model, 1, T, seed=3)
    with torch.no_grad():
        full = model(audio, speaker, motion, mask)
        for chunk in (1, 2, 7):
            stepped, state = _stepped(model, audio, speaker, motion, mask, chunk)
            assert state.frames == T and stepped.n_frames == T
            diff = _max_diff(full, stepped)
            assert diff <= 1e-4, f"chunk {chunk}: forward vs step differ by {diff}"


def test_forward_equals_step_batched():
    model = _model()
    audio, speaker, motion, mask = _inputs(model, 3, 45, seed=4)
    with torch.no_grad():
        full = model(audio, speaker, motion, mask)
        for chunk in (1, 5, 45):
            stepped, state = _stepped(model, audio, speaker, motion, mask, chunk)
            assert state.batch_size == 3
            assert _max_diff(full, stepped) <= 1e-4
        # each stream is independent of the others in the batch
        single = model(audio[1:2], speaker[1:2], motion[1:2], mask[1:2])
    assert _max_diff(single, GeneratorOutput({k: v[1:2] for k, v in full.latents.items()},
                                             {k: v[1:2] for k, v in full.logits.items()},
                                             full.global_rot6d[1:2], full.contact[1:2])) <= 1e-5


def test_unknown_speaker_and_out_of_range_ids():
    model = _model()
    n = model.config.n_speakers
    assert model.UNKNOWN_SPEAKER == n == 4
    assert model.speaker_embedding.num_embeddings == n + 1
    audio = torch.randn(2, 6, FEATURE_DIM)
    with torch.no_grad():
        unk = model(audio, torch.tensor([n, n]))
        known = model(audio, torch.tensor([0, 0]))
    assert _max_diff(unk, known) > 1e-4  # the unknown id has its own embedding row
    for bad in (-1, n + 1):
        with pytest.raises(ValueError, match=f"speaker id {bad} "):
            model(audio, torch.tensor([0, bad]))
    with pytest.raises(ValueError, match="integer"):
        model(audio, torch.tensor([0.0, 1.0]))


def test_causality_audio_and_motion_perturbation():
    model = _model()
    T, t0 = 60, 31
    audio, speaker, motion, mask = _inputs(model, 2, T, seed=5)
    with torch.no_grad():
        ref = model(audio, speaker, motion, mask)
        a2 = audio.clone()
        a2[:, t0] += 3.0
        pert = model(a2, speaker, motion, mask)
        m2 = motion.clone()
        m2[:, t0:] += 2.0
        pert_m = model(audio, speaker, m2, torch.zeros_like(mask))
        ref_m = model(audio, speaker, motion, torch.zeros_like(mask))
    for p, r in ((pert, ref), (pert_m, ref_m)):
        assert _max_diff(p, r, slice(0, t0)) <= 1e-6
        assert _max_diff(p, r, slice(t0, t0 + 1)) > 1e-3  # the perturbation does reach frame t0


def test_masked_entries_ignore_motion_values():
    model = _model()
    audio, speaker, motion, _ = _inputs(model, 2, 9)
    all_masked = torch.ones_like(motion, dtype=torch.bool)
    garbage = torch.full_like(motion, float("nan"))
    with torch.no_grad():
        a = model(audio, speaker)
        b = model(audio, speaker, garbage, all_masked)
        c = model(audio, speaker, motion, torch.zeros_like(all_masked))
    assert _max_diff(a, b) == 0.0
    assert _max_diff(a, c) > 1e-4


def test_generation_never_mutates_inputs_or_state():
    model = _model()
    audio, speaker, motion, mask = _inputs(model, 2, 13)
    with torch.no_grad():
        _, state = model.step(audio[:, :5], speaker, model.init_state(2), motion[:, :5], mask[:, :5])
        before = [t.clone() for t in (audio, speaker, motion, mask)]
        state_before = [t.clone() for t in state.tensors()]
        frames_before = state.frames
        _, new_state = model.step(audio[:, 5:], speaker, state, motion[:, 5:], mask[:, 5:])
        model(audio, speaker, motion, mask)
        _, one = model.step(audio[:, 5:6], speaker, state, motion[:, 5:6], mask[:, 5:6])  # 1-frame (recurrent) path
    for a, b in zip((audio, speaker, motion, mask), before):
        assert torch.equal(a, b)
    assert state.frames == frames_before == 5 and new_state.frames == 13 and one.frames == 6
    assert all(torch.equal(a, b) for a, b in zip(state.tensors(), state_before))
    # the returned state is new data, not views of the old one
    for other in (new_state, one):
        assert not any(a.data_ptr() == b.data_ptr() for a, b in zip(state.tensors(), other.tensors()))


def test_training_backward_reaches_every_parameter():
    model = _model().train()
    audio, speaker, motion, mask = _inputs(model, 2, 40)
    out = model(audio, speaker, motion, mask)
    loss = sum(v.square().mean() for v in _flat(out).values())
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not bool(torch.isfinite(p.grad).all())]
    assert missing == []
    assert float(model.audio_encoder.inp.weight.grad.abs().sum()) > 0


def test_input_validation():
    model = _model()
    audio, speaker, motion, mask = _inputs(model, 2, 4)
    with pytest.raises(ValueError, match="bool"):
        model(audio, speaker, motion, mask.float())
    with pytest.raises(ValueError, match="mask given without motion"):
        model(audio, speaker, None, mask)
    with pytest.raises(ValueError, match="NaN"):
        model(audio.masked_fill(torch.zeros_like(audio, dtype=torch.bool).index_fill(1, torch.tensor([2]), True),
                                float("nan")), speaker)
    with pytest.raises(ValueError, match="motion must be"):
        model(audio, speaker, motion[..., :-1])
    with pytest.raises(ValueError, match="init_state"):
        model.step(audio, speaker, model.init_state(3))


def test_rot6d_euler_round_trip():
    g = torch.Generator().manual_seed(7)
    n = 2000
    euler = torch.stack([
        (torch.rand(n, generator=g) * 2 - 1) * (math.pi - 1e-3),
        (torch.rand(n, generator=g) * 2 - 1) * (math.pi / 2 - 1e-2),
        (torch.rand(n, generator=g) * 2 - 1) * (math.pi - 1e-3),
    ], -1).double()
    d6 = euler_to_rot6d(euler)
    assert d6.shape == (n, 6)
    back = rot6d_to_euler(d6)
    assert float((back - euler).abs().max()) < 1e-8
    # 6D is the first two columns of R = Rz Ry Rx; any positive scale / non-orthogonal 2nd column gives the same angles
    x, y, z = 0.3, -0.4, 1.1
    Rx = torch.tensor([[1, 0, 0], [0, math.cos(x), -math.sin(x)], [0, math.sin(x), math.cos(x)]], dtype=torch.float64)
    Ry = torch.tensor([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]], dtype=torch.float64)
    Rz = torch.tensor([[math.cos(z), -math.sin(z), 0], [math.sin(z), math.cos(z), 0], [0, 0, 1]], dtype=torch.float64)
    R = Rz @ Ry @ Rx
    six = torch.cat([R[:, 0], R[:, 1]])
    assert torch.allclose(euler_to_rot6d(torch.tensor([x, y, z], dtype=torch.float64)), six, atol=1e-12)
    skewed = torch.cat([3.0 * R[:, 0], 2.0 * R[:, 1] + 0.5 * R[:, 0]])
    assert torch.allclose(rot6d_to_euler(skewed), torch.tensor([x, y, z], dtype=torch.float64), atol=1e-10)


def test_global_head_starts_at_identity_bias():
    model = _model()
    bias6 = model.global_head[-1].bias[:6]
    assert torch.equal(bias6, torch.tensor([1.0, 0, 0, 0, 1.0, 0]))
    assert torch.allclose(rot6d_to_euler(bias6.double()), torch.zeros(3, dtype=torch.float64))


def test_config_presets_and_json_round_trip():
    tiny = GeneratorConfig.preset("tiny", code_dim=48)
    base = GeneratorConfig.preset("base")
    assert tiny.code_dim == 48 and tiny.lookahead == 2 and tiny.seed_frames == 4 and tiny.audio_dim == 160
    assert base.hidden == 768 and base.code_dim == 256 and base.codebook_size == 256 and base.n_mamba_layers == 9
    for cfg in (tiny, base, GeneratorConfig.preset("tiny", part_dims={"face": 75})):
        d = json.loads(json.dumps(cfg.to_dict()))
        assert GeneratorConfig.from_dict(d) == cfg
    with pytest.raises(ValueError, match="hiden"):
        GeneratorConfig.preset("tiny", hiden=3)
    with pytest.raises(ValueError, match="nope"):
        GeneratorConfig.from_dict({**tiny.to_dict(), "nope": 1})
    with pytest.raises(ValueError, match="lookahead"):
        GeneratorConfig.preset("tiny", lookahead=9)
    with pytest.raises(ValueError, match="part_dims"):
        GeneratorConfig.preset("tiny", part_dims={"global": 7})
    with pytest.raises(ValueError, match="preset"):
        GeneratorConfig.preset("huge")


def test_parameter_counts_cover_all_parameters():
    model = _model()
    counts = parameter_counts(model)
    total = sum(p.numel() for p in model.parameters())
    assert counts["total"] == total == sum(v for k, v in counts.items() if k != "total")
    assert {"parts.body", "parts.hand", "parts.face", "audio_encoder", "trunk"} <= set(counts)
    assert total < 3_000_000  # tiny stays CPU-trainable


def test_delay_aligns_targets_with_lookahead():
    x = torch.arange(2 * 6 * 3, dtype=torch.float32).reshape(2, 6, 3)
    y = delay(x, 2)
    assert y.shape == x.shape
    assert torch.equal(y[:, 2:], x[:, :4]) and torch.equal(y[:, :2], torch.zeros(2, 2, 3))
    assert torch.equal(delay(x, 0), x)
    assert delay(x, 9).abs().sum() == 0
    assert valid_mask(5, 2).tolist() == [False, False, True, True, True]


def test_motion_slices_and_generation_mask():
    cfg = GeneratorConfig.preset("tiny", lookahead=2, seed_frames=4)
    sl = cfg.motion_slices
    assert list(sl) == ["body", "hand", "face", "global_rot6d", "contact"]
    assert [(v.start, v.stop) for v in sl.values()] == [(0, 70), (70, 178), (178, 253), (253, 259), (259, 263)]
    no_face = GeneratorConfig.preset("tiny", part_dims={"body": 70, "hand": 108})
    assert no_face.motion_slices["global_rot6d"] == slice(178, 184)
    with pytest.raises(ValueError, match="motion_dim"):
        GeneratorConfig.preset("tiny", motion_dim=100).motion_slices  # noqa: B018
    mask = generation_mask(2, 10, cfg)
    assert mask.shape == (2, 10, cfg.motion_dim) and mask.dtype == torch.bool
    observed = (~mask).all(-1)[0].tolist()
    assert observed == [False, False, True, True, True, True, False, False, False, False]
    assert bool(generation_mask(1, 5, cfg, seed_frames=0).all())
