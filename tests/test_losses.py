"""Seed lessons 8-9 (bodies jittered at 2.4x GT speed, hands stiff at 0.47x): the generator objective penalises
frame-to-frame velocity errors in decoded motion, with the V3 weights, so jitter and stiffness both cost loss."""
import torch

from models.generator import GeneratorOutput
from tests.bundles import make_tiny_bundle
from train.generator import GenTrainConfig, Targets, chunk_loss


def _setup(tmp_path):
    from models.bundle import load_bundle

    b = load_bundle(make_tiny_bundle(tmp_path / "b", parts=("body", "hand")))
    torch.manual_seed(0)
    B, T = 2, 40
    zq = {p: torch.randn(B, T, 16) for p in b.vqs}
    with torch.no_grad():
        x = {p: b.vqs[p].decode(zq[p]) for p in b.vqs}
    tg = Targets(x=x, zq=zq, idx={p: torch.zeros(B, T, dtype=torch.long) for p in b.vqs},
                 rot6d=torch.tensor([1.0, 0, 0, 0, 1, 0]).expand(B, T, 6), contact=torch.ones(B, T, 4),
                 valid=torch.ones(B, T, dtype=torch.bool), motion=torch.zeros(B, T, 1))
    return b, tg


def _out(lat, tg):
    B, T = tg.valid.shape
    return GeneratorOutput(latents=lat, logits={}, global_rot6d=tg.rot6d.clone(), contact=torch.full((B, T, 4), 9.0))


def test_v3_weights_are_the_defaults():
    cfg = GenTrainConfig()
    assert cfg.w_latent == {"body": 3.0, "hand": 3.0, "face": 3.0, "global": 3.0}
    assert cfg.w_cls == {"body": 1.0, "hand": 2.0, "face": 0.0}
    assert (cfg.w_vel["global"], cfg.w_vel["body"], cfg.w_vel["hand"]) == (2.0, 0.5, 1.0)


def test_jitter_and_stiffness_cost_more_than_a_smooth_error(tmp_path):
    b, tg = _setup(tmp_path)
    T = tg.valid.shape[1]
    sign = torch.tensor([(-1.0) ** t for t in range(T)])[None, :, None]
    smooth = {p: tg.zq[p] + 0.3 for p in b.vqs}  # constant offset: same latent MSE, no velocity error
    jitter = {p: tg.zq[p] + 0.3 * sign for p in b.vqs}  # alternating offset: same latent MSE, fast motion
    frozen_first = {p: tg.zq[p][:, :1].expand_as(tg.zq[p]) for p in b.vqs}  # stiff: never moves
    cfg = GenTrainConfig()
    sl = slice(0, T)
    l_smooth, logs_s, _ = chunk_loss(_out(smooth, tg), tg, sl, b.vqs, cfg, {})
    l_jitter, logs_j, _ = chunk_loss(_out(jitter, tg), tg, sl, b.vqs, cfg, {})
    _, logs_f, _ = chunk_loss(_out(frozen_first, tg), tg, sl, b.vqs, cfg, {})
    for p in b.vqs:
        assert abs(logs_s[f"latent_{p}"] - logs_j[f"latent_{p}"]) < 1e-5  # equal per-frame error
        assert logs_j[f"vel_{p}"] > 3 * logs_s[f"vel_{p}"]  # jitter is what the velocity term sees
        assert logs_f[f"vel_{p}"] > 3 * logs_s[f"vel_{p}"]  # so is a stiff, motionless prediction
    assert float(l_jitter) > float(l_smooth)
    no_vel = GenTrainConfig(w_vel={"body": 0.0, "hand": 0.0, "face": 0.0, "global": 0.0})
    a, _, _ = chunk_loss(_out(smooth, tg), tg, sl, b.vqs, no_vel, {})
    c, _, _ = chunk_loss(_out(jitter, tg), tg, sl, b.vqs, no_vel, {})
    assert abs(float(a) - float(c)) < 1e-4  # without the velocity term the two were indistinguishable
