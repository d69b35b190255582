"""ONNX decoder export: parity with PyTorch, the runtime's window contract, and clear errors for bad exports."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")

from exporters.onnx import ExportError, export_decoders, export_generator, main, source_digest  # noqa: E402
from exporters.onnx_runtime import OnnxDecoders, OnnxExportMismatch, OnnxGenerator  # noqa: E402
from models.checkpoint import file_sha256, save_model  # noqa: E402
from models.generator import GeneratorConfig, MambaTalkMHR  # noqa: E402
from models.layout import LAYOUT_VERSION, PART_DIMS, VARYING  # noqa: E402
from models.vqvae import PartVQVAE, VQConfig  # noqa: E402

CODE_DIM = 16


def tiny_vq(part: str, lookahead: int, seed: int) -> PartVQVAE:
    torch.manual_seed(seed)
    vq = PartVQVAE(VQConfig(part=part, in_dim=PART_DIMS[part], code_dim=CODE_DIM, codebook_size=32, hidden=24,
                            lookahead=lookahead)).eval()
    vq.quantizer.embed.normal_()  # codebook rows of unit scale, like a trained codebook
    return vq


def small_generator(parts: tuple[str, ...] = ("body",), seed: int = 0) -> MambaTalkMHR:
    torch.manual_seed(seed)
    cfg = GeneratorConfig.preset("tiny", code_dim=CODE_DIM, codebook_size=32, n_speakers=3, hidden=32,
                                 audio_hidden=32, motion_hidden=16, mlp_hidden=64,
                                 part_dims={p: PART_DIMS[p] for p in parts})
    gen = MambaTalkMHR(cfg).eval()
    with torch.no_grad():
        for p in gen.parameters():  # move away from the zero-bias init so every path carries signal
            p.add_(0.05 * torch.randn_like(p))
    return gen


def save_vqs(root: Path, vqs: dict[str, PartVQVAE]) -> dict[str, Path]:
    files = {}
    for p, vq in vqs.items():
        d = PART_DIMS[p]
        files[p] = save_model(root / f"vq_{p}.safetensors", vq, kind="vq", config=vq.cfg.to_dict(),
                              extra={"norm_mean": torch.linspace(-1, 1, d), "norm_std": torch.full((d,), 2.0)})
    return files


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Tiny body (R = 1) and hand (R = 0) VQs saved as checkpoint files and exported once."""
    root = tmp_path_factory.mktemp("ckpt")
    vqs = {"body": tiny_vq("body", 1, 0), "hand": tiny_vq("hand", 0, 1)}
    files = save_vqs(root, vqs)
    norm = {p: (torch.linspace(-1, 1, PART_DIMS[p]), torch.full((PART_DIMS[p],), 2.0)) for p in vqs}
    manifest = export_decoders(vqs, root / "onnx", norm=norm, source_files=files, checkpoint=root,
                               skipped_parts={"face": "constant in the dataset"}, log=lambda *_: None)
    return root, vqs, files, manifest


def copy_export(exported, tmp_path) -> Path:
    dst = tmp_path / "onnx"
    shutil.copytree(exported[0] / "onnx", dst)
    return dst


def test_manifest_and_parity(exported):
    root, vqs, files, manifest = exported
    assert manifest["layout_version"] == LAYOUT_VERSION and manifest["opset"] >= 17
    assert set(manifest["parts"]) == {"body", "hand"}
    assert manifest["skipped_parts"] == {"face": "constant in the dataset"}
    shas = {p: file_sha256(f) for p, f in files.items()}
    assert manifest["source"]["files"]["body"]["sha256"] == shas["body"]
    assert manifest["source"]["sha256"] == source_digest(shas)
    body = manifest["parts"]["body"]
    assert body["receptive_field"] == list(vqs["body"].receptive_field) and body["receptive_field"][1] == 1
    assert body["varying"] == VARYING["body"].tolist() and body["slice"] == [0, 130]
    assert body["code_dim"] == CODE_DIM and body["out_dim"] == 70 and len(body["norm_std"]) == 70
    for p in ("body", "hand"):
        assert manifest["parts"][p]["parity"]["random"] <= 1e-4 and manifest["parts"][p]["parity"]["codes"] <= 1e-4

    dec = OnnxDecoders.load(root / "onnx", expected_checkpoint_sha=manifest["source"]["sha256"])
    assert dec.name == "onnx" and "CPUExecutionProvider" in dec.providers
    rng = np.random.default_rng(0)
    for part, vq in vqs.items():
        assert dec.receptive_field(part) == vq.receptive_field
        idx = torch.from_numpy(rng.integers(0, 32, (2, 23)))
        zq = vq.quantizer.lookup(idx).numpy()
        with torch.no_grad():
            ref = vq.decode_indices(idx).numpy()
        out = dec.decode(part, zq)
        assert out.shape == (2, 23, PART_DIMS[part]) and out.dtype == np.float32
        assert np.abs(out - ref).max() <= 1e-4
        assert np.abs(ref).mean() > 1e-3  # a real signal, not zeros
    mean, std = dec.norm("hand")
    assert mean.shape == (108,) and np.allclose(std, 2.0)


@pytest.mark.parametrize("n_new", [1, 2, 4])
def test_windowed_decode_equals_whole_sequence(exported, n_new):
    """The runtime contract: codes [a - left, b + right) -> rows [left, left + b - a) are frames a..b-1."""
    root, vqs, _, _ = exported
    dec = OnnxDecoders.load(root / "onnx")
    rng = np.random.default_rng(n_new)
    for part, vq in vqs.items():
        left, right = dec.receptive_field(part)
        T = 40
        zq = vq.quantizer.lookup(torch.from_numpy(rng.integers(0, 32, (1, T)))).numpy()
        with torch.no_grad():
            whole = vq.decode(torch.from_numpy(zq)).numpy()[0]
        got = []
        for a in range(0, T - right, n_new):
            b = min(a + n_new, T - right)
            w0 = max(0, a - left)  # at the stream start the zero padding IS the whole decode's padding
            out = dec.decode(part, zq[:, w0:b + right])[0]
            got.append(out[a - w0:b - w0])
        got = np.concatenate(got)
        assert got.shape == (T - right, PART_DIMS[part])
        assert np.abs(got - whole[:T - right]).max() <= 1e-4


def test_decode_rejects_wrong_dims(exported):
    dec = OnnxDecoders.load(exported[0] / "onnx")
    with pytest.raises(ValueError, match=r"decoder_body\.onnx: body decoder expects \(B, T>=1, 16\)"):
        dec.decode("body", np.zeros((1, 5, CODE_DIM + 1), np.float32))
    with pytest.raises(KeyError, match="face"):
        dec.receptive_field("face")


def test_truncated_file(exported, tmp_path):
    d = copy_export(exported, tmp_path)
    f = d / "decoder_body.onnx"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(OnnxExportMismatch, match=r"decoder_body\.onnx: sha256 differs.*python -m exporters\.onnx "
                                                 r"--checkpoint .* --out "):
        OnnxDecoders.load(d)
    with pytest.raises(OnnxExportMismatch, match=r"decoder_body\.onnx: ONNX Runtime cannot load it"):
        OnnxDecoders.load(d, verify_files=False)


def test_missing_file_and_manifest(exported, tmp_path):
    d = copy_export(exported, tmp_path)
    (d / "decoder_hand.onnx").unlink()
    with pytest.raises(OnnxExportMismatch, match=r"decoder_hand\.onnx: ONNX graph of part 'hand' not found"):
        OnnxDecoders.load(d)
    with pytest.raises(OnnxExportMismatch, match=r"manifest\.json: ONNX export manifest not found"):
        OnnxDecoders.load(tmp_path / "nowhere")
    (d / "manifest.json").write_text("{not json")
    with pytest.raises(OnnxExportMismatch, match="unreadable manifest"):
        OnnxDecoders.load(d)


def edit_manifest(d: Path, fn) -> None:
    m = json.loads((d / "manifest.json").read_text())
    fn(m)
    (d / "manifest.json").write_text(json.dumps(m))


def test_wrong_layout_version(exported, tmp_path):
    d = copy_export(exported, tmp_path)
    edit_manifest(d, lambda m: m.update(layout_version="mhr320-v0"))
    with pytest.raises(OnnxExportMismatch, match=r"manifest\.json: layout version 'mhr320-v0' != .*mhr320-v1"):
        OnnxDecoders.load(d)


def test_wrong_checkpoint_hash(exported, tmp_path):
    root, _, files, manifest = exported
    with pytest.raises(OnnxExportMismatch, match=r"exported from checkpoint sha256 .* expected '0{64}'"):
        OnnxDecoders.load(root / "onnx", expected_checkpoint_sha="0" * 64)
    with pytest.raises(OnnxExportMismatch, match=r"part 'hand' exported from checkpoint file sha256"):
        OnnxDecoders.load(root / "onnx", expected_checkpoint_sha={"hand": "f" * 64})
    ok = OnnxDecoders.load(root / "onnx", expected_checkpoint_sha={p: file_sha256(f) for p, f in files.items()})
    assert ok.parts == ("body", "hand")


def test_wrong_input_dims(exported, tmp_path):
    d = copy_export(exported, tmp_path)
    edit_manifest(d, lambda m: m["parts"]["body"].update(code_dim=CODE_DIM * 2))
    with pytest.raises(OnnxExportMismatch, match=r"decoder_body\.onnx: graph input 'zq' has shape .*\(B, T, 32\)"):
        OnnxDecoders.load(d)
    # the hand graph put in place of the body graph (hashes updated): output dims give it away
    d2 = copy_export(exported, tmp_path / "swap")
    shutil.copyfile(d2 / "decoder_hand.onnx", d2 / "decoder_body.onnx")
    edit_manifest(d2, lambda m: m["parts"]["body"].update(sha256=file_sha256(d2 / "decoder_body.onnx")))
    with pytest.raises(OnnxExportMismatch, match=r"decoder_body\.onnx: graph output has shape .*\(B, T, 70\)"):
        OnnxDecoders.load(d2)


def test_export_fails_above_tolerance(tmp_path):
    vq = tiny_vq("face", 0, 3)
    with pytest.raises(ExportError, match=r"face: ONNX Runtime differs from PyTorch by .* > tol"):
        export_decoders({"face": vq}, tmp_path, tol=-1.0, log=lambda *_: None)  # any difference >= 0 fails
    assert not (tmp_path / "decoder_face.onnx").exists() and not (tmp_path / "manifest.json").exists()


def test_generator_step_equals_pytorch_over_chunks(tmp_path):
    gen = small_generator()
    export_generator(gen, tmp_path, log=lambda *_: None)
    og = OnnxGenerator.load(tmp_path)
    assert og.chunk_frames == 1 and og.config == gen.config
    st_t, st_o = gen.init_state(2), og.init_state(2)
    assert [t.shape for t in st_o.tensors()] == [t.shape for t in st_t.tensors()]
    spk = torch.tensor([0, 3])  # 3 = UNKNOWN_SPEAKER
    worst, signal = 0.0, 0.0
    g = torch.Generator().manual_seed(1)
    for T in (1, 3, 2, 7):
        audio = torch.randn(2, T, 160, generator=g)
        with torch.no_grad():
            ref, st_t = gen.step(audio, spk, st_t)
        out, st_o = og.step(audio, spk, st_o)
        pairs = [(ref.latents["body"], out.latents["body"]), (ref.logits["body"], out.logits["body"]),
                 (ref.global_rot6d, out.global_rot6d), (ref.contact, out.contact)]
        pairs += list(zip(st_t.tensors(), st_o.tensors()))
        worst = max([worst] + [float((a - b).abs().max()) for a, b in pairs])
        signal = max(signal, float(ref.latents["body"].abs().mean()))
    assert worst <= 1e-4 and signal > 1e-2
    assert st_o.frames == st_t.frames == 13
    with pytest.raises(NotImplementedError, match="motion-seed"):
        og.step(audio, spk, st_o, motion=torch.zeros(2, 7, gen.config.motion_dim))
    with pytest.raises(ValueError, match=r"speaker must be \(2,\) ids in \[0, 3\]"):
        og.step(audio, torch.tensor([0, 4]), st_o)
    f = tmp_path / "generator_step.onnx"
    f.write_bytes(f.read_bytes()[:1000])
    with pytest.raises(OnnxExportMismatch, match=r"generator_step\.onnx: sha256 differs.*--generator"):
        OnnxGenerator.load(tmp_path)


def test_bundle_export_cli_and_pinning(tmp_path):
    bundle_mod = pytest.importorskip("models.bundle")
    root = tmp_path / "bundle"
    vqs = {"body": tiny_vq("body", 0, 4), "face": tiny_vq("face", 1, 5)}
    save_vqs(root, vqs)
    gen = small_generator(("body", "face"))
    save_model(root / "generator.safetensors", gen, kind="generator", config=gen.config.to_dict())
    bundle_mod.write_manifest(root, speakers=["a"], skipped_parts={"hand": "test"})
    # default --out: <bundle>/onnx, where the runtime looks
    assert main(["--checkpoint", str(root), "--generator"]) == 0
    bundle = bundle_mod.load_bundle(root)
    dec = OnnxDecoders.load(root / "onnx", bundle=bundle)
    assert dec.parts == ("body", "face") and dec.manifest["skipped_parts"]["hand"] == "test"
    assert dec.manifest["source"]["checkpoint"] == str(root)
    og = OnnxGenerator.load(root / "onnx", bundle=bundle)
    assert og.entry["parts"] == ["body", "face"] and og.entry["lookahead"] == gen.config.lookahead
    # retrain (here: re-save different weights) without re-exporting: the runtime must refuse the stale export
    save_vqs(root, {"face": tiny_vq("face", 1, 6)})
    stale = bundle_mod.load_bundle(root)
    with pytest.raises(OnnxExportMismatch, match=rf"part 'face' was exported from a different checkpoint.*"
                                                 rf"--checkpoint {root} --out {root / 'onnx'}"):
        OnnxDecoders.load(root / "onnx", bundle=stale)
    gen2 = small_generator(("body", "face"), seed=7)
    save_model(root / "generator.safetensors", gen2, kind="generator", config=gen2.config.to_dict())
    with pytest.raises(OnnxExportMismatch, match="generator step was exported from a different checkpoint"):
        OnnxGenerator.load(root / "onnx", bundle=bundle_mod.load_bundle(root))
    assert main(["--checkpoint", str(tmp_path / "none")]) == 2
