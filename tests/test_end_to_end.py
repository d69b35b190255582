"""The whole chain as a user runs it, at toy size: synth -> cache -> vq -> generator -> infer -> evaluate.

Also proves the end-of-training paths (checkpoint, manifest, TensorBoard logs) and resume after a kill run here
(seed lesson 4: a logging crash at the end of training was only found after a full run).
"""
import json

import numpy as np
import pytest

from models import layout
from models.bundle import load_bundle

pytestmark = pytest.mark.slow

TINY_VQ = ["window=32", "stride=16", "batch_size=8", "code_dim=16", "hidden=16", "codebook_size=32", "log_every=5",
           "ckpt_every=5"]
TINY_GEN = ["window=64", "stride=32", "tbptt_chunk=32", "batch_size=4", "val_every=4", "val_batches=1", "log_every=2",
            "ckpt_every=4", "overrides={hidden: 32, audio_hidden: 32, motion_hidden: 16, mlp_hidden: 64}"]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    from train import data, generator, synth, vq

    root = tmp_path_factory.mktemp("e2e")
    assert synth.main(["--out", str(root / "data"), "--speakers", "2", "--minutes", "0.6", "--seq-seconds", "12",
                       "--seed", "3"]) == 0
    assert data.main(["cache", str(root / "data"), "--out", str(root / "cache"), "--window", "32", "--stride",
                      "16"]) == 0
    for part in layout.VQ_PARTS:
        assert vq.main(["--part", part, "--cache", str(root / "cache"), "--out", str(root / "vq"), "steps=6",
                        *TINY_VQ]) == 0
    assert generator.main(["--cache", str(root / "cache"), "--vq", str(root / "vq"), "--out", str(root / "run"),
                           "steps=4", *TINY_GEN]) == 0
    return root


def test_training_writes_a_complete_bundle_and_resumes(pipeline, capsys):
    from train import vq

    run = pipeline / "run"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["layout_version"] == layout.LAYOUT_VERSION and manifest["n_speakers"] == 2
    b = load_bundle(run)
    assert set(b.parts) | set(b.skipped_parts) == set(layout.VQ_PARTS)
    assert b.generator.config.n_speakers == 2 and b.generator.config.code_dim == 16
    assert any((run / "tb" / "generator").iterdir())  # TensorBoard event file written at the end
    # resume: a second call with more steps continues from the saved step instead of starting over
    capsys.readouterr()
    assert vq.main(["--part", "body", "--cache", str(pipeline / "cache"), "--out", str(pipeline / "vq"), "steps=8",
                    *TINY_VQ]) == 0
    assert "resumed at step 6" in capsys.readouterr().out


def test_infer_output_renders_alone_and_roundtrips(pipeline, tmp_path):
    from models.audio import load_audio, save_wav
    from train import infer

    wav = sorted((pipeline / "data").glob("*.wav"))[0]
    audio, _ = load_audio(wav)
    short = tmp_path / "short.wav"
    save_wav(short, audio[: 24_000 * 4])
    ref = sorted((pipeline / "data").glob("*.npz"))[0]
    out = tmp_path / "out.npz"
    assert infer.main([str(short), "-o", str(out), "--checkpoint", str(pipeline / "run"), "--reference", str(ref),
                       "--speaker", "1"]) == 0
    d = dict(np.load(out))
    T = d["motion"].shape[0]
    assert T == 120  # 4 s at 30 fps
    for key, shape in (("body_pose_params", (T, 133)), ("hand_pose_params", (T, 108)), ("expr_params", (T, 72)),
                       ("global_rot", (T, 3)), ("mhr_model_params", (T, 204)), ("pred_cam_t", (T, 3)),
                       ("scale_params", (T, 28)), ("shape_params", (T, 45)), ("focal_length", (T,))):
        assert d[key].shape == shape, key
    assert np.ptp(d["pred_cam_t"], axis=0).max() == 0  # the camera never breathes
    with np.load(ref) as r:
        np.testing.assert_allclose(d["pred_cam_t"][0], r["pred_cam_t"].mean(0), atol=1e-5)
    motion, const = layout.from_sam3d(d)
    np.testing.assert_array_equal(motion[:, :316], d["motion"][:, :316])
    np.testing.assert_allclose(layout.assemble_model_params(motion, const), d["mhr_model_params"], atol=1e-6)


def test_evaluate_report(pipeline, tmp_path):
    from train import evaluate

    out = tmp_path / "eval"
    assert evaluate.main(["--checkpoint", str(pipeline / "run"), "--out", str(out), "--minutes", "0.25",
                          "--clip-seconds", "7", "--fgd-steps", "20", "--baseline-seconds", "8", "--seam-seconds",
                          "6", "--quiet"]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert "targets" in rep and len(rep["targets"]) >= 8
    assert (out / "report.md").read_text().count("PASS") + (out / "report.md").read_text().count("FAIL") >= 8
    assert list(out.glob("*.png"))


def test_ddp_two_processes_on_gloo(pipeline, tmp_path):
    """The same training scripts under torchrun: 2 CPU processes, gloo backend."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    base = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    subprocess.run(base + ["-m", "train.vq", "--part", "hand", "--cache", str(pipeline / "cache"), "--out",
                           str(tmp_path / "vq"), "steps=3", *TINY_VQ], check=True, env=env, timeout=300)
    for part in ("body", "face"):  # reuse the single-process VQs for the other parts
        for f in (pipeline / "vq").glob(f"vq_{part}.*"):
            (tmp_path / "vq" / f.name).write_bytes(f.read_bytes())
    subprocess.run(base + ["-m", "train.generator", "--cache", str(pipeline / "cache"), "--vq", str(tmp_path / "vq"),
                           "--out", str(tmp_path / "run"), "steps=2", *TINY_GEN], check=True, env=env, timeout=300)
    b = load_bundle(tmp_path / "run")
    assert b.generator is not None and "hand" in b.vqs
