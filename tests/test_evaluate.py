"""train.evaluate end to end on a tiny randomly-initialised bundle over ~20 s of synthetic speech."""
from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from models.bundle import write_manifest
from models.checkpoint import save_model
from models.generator import GeneratorConfig, MambaTalkMHR
from models.layout import PART_DIMS, VQ_PARTS
from models.vqvae import PartVQVAE, VQConfig
from tests.conftest import shared_path
from train import evaluate as E


def tiny_bundle(root: Path) -> Path:
    """Random VQs (code 16, 32 codes) + a narrow tiny generator (L = 2), two speakers, as a complete bundle."""
    torch.manual_seed(0)
    for p in VQ_PARTS:
        vq = PartVQVAE(VQConfig(part=p, in_dim=PART_DIMS[p], code_dim=16, codebook_size=32, hidden=24,
                                lookahead=1)).eval()
        vq.quantizer.embed.normal_()
        save_model(root / f"vq_{p}.safetensors", vq, kind="vq", config=vq.cfg.to_dict(),
                   extra={"norm_mean": torch.zeros(PART_DIMS[p]), "norm_std": torch.full((PART_DIMS[p],), 0.05)})
    cfg = GeneratorConfig.preset("tiny", code_dim=16, codebook_size=32, n_speakers=2, hidden=32, audio_hidden=32,
                                 motion_hidden=16, mlp_hidden=64, lookahead=2)
    save_model(root / "generator.safetensors", MambaTalkMHR(cfg), kind="generator", config=cfg.to_dict())
    write_manifest(root, speakers=["synth_s00", "synth_s01"], skipped_parts={})
    return root


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    bundle = tiny_bundle(tmp_path_factory.mktemp("bundle"))
    out = tmp_path_factory.mktemp("eval")
    rc = E.main(["--checkpoint", str(bundle), "--out", str(out), "--synth-seed", "5", "--minutes", "0.34",
                 "--clip-seconds", "10", "--baseline-seconds", "10", "--seam-seconds", "3", "--fgd-steps", "10",
                 "--quiet", "--threads", "1"])
    return rc, out, json.loads((out / "report.json").read_text())


def test_report_files_and_keys(report):
    rc, out, rep = report
    assert rc == 0  # without --strict failing targets do not change the exit code
    for key in ("checkpoint", "data", "engine", "model", "swapped", "baseline", "gt_self", "seams", "fgd", "targets",
                "summary", "notes", "plots"):
        assert key in rep, key
    for row in ("model", "swapped", "baseline", "gt_self"):
        for k in ("body_velocity_ratio", "hand_velocity_ratio", "body_hf_ratio", "upper_body_joint_velocity_ratio",
                  "finger_joint_velocity_ratio", "global_rot_std_ratio", "law_best_lag", "law_nmse",
                  "jaw_env_corr", "bc_law_03", "bc_law_01", "energy_corr", "pause", "l1div", "constant_variation"):
            assert k in rep[row], (row, k)
    assert rep["model"]["frames"] == 2 * 300  # 20.4 s -> two 10 s clips (a tail under 5 s is dropped)
    md = (out / "report.md").read_text()
    assert "| target | measured | goal | result | note |" in md and ("PASS" in md or "FAIL" in md)
    assert len(rep["targets"]) == sum(rep["summary"][k] for k in ("passed", "failed", "not_run"))
    assert all(t["pass"] in (True, False, None) for t in rep["targets"])
    pngs = sorted(out.glob("*.png"))
    assert {p.name for p in pngs} >= {"traces.png", "lag.png", "spectrum.png", "seams.png"}
    head = pngs[0].read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR"


def test_sanity_rows_and_hygiene(report):
    _, _, rep = report
    gt = rep["gt_self"]
    for k in ("body_velocity_ratio", "hand_velocity_ratio", "upper_body_joint_velocity_ratio", "global_rot_std_ratio"):
        assert gt[k] == pytest.approx(1.0)
    assert gt["law_best_lag"] == 0 and gt["law_nmse"] == pytest.approx(0.0, abs=1e-12)
    assert gt["bc_law_03"] == pytest.approx(gt["bc_law_03_gt"])
    assert all(v == 0.0 for v in rep["model"]["constant_variation"].values())  # constants fixed per session
    for n in ("N2", "N4"):
        st = rep["seams"][n]
        assert st["max_abs_diff_vs_whole_file"] < 1e-4  # N-frame pushes == whole-file generation
        assert st["n_boundary"] > 0 and st["n_interior"] > 0
    f = rep["fgd"]
    assert f["model"] >= 0 and f["baseline"] >= 0 and "quick encoder" in f["encoder"]
    targets = {t["target"] for t in rep["targets"]}
    assert "global rotation std ratio" in targets and "long stream: minutes 9-10 vs minute 1" in targets


def test_png_writer_roundtrip(tmp_path):
    img = np.zeros((7, 5, 3), np.uint8)
    img[2, 3] = (255, 10, 20)
    data = E.write_png(tmp_path / "x.png", img).read_bytes()
    w, h = struct.unpack(">II", data[16:24])
    assert (w, h) == (5, 7)
    idat = data.index(b"IDAT")
    n = struct.unpack(">I", data[idat - 4:idat])[0]
    raw = zlib.decompress(data[idat + 4:idat + 4 + n])
    rows = np.frombuffer(raw, np.uint8).reshape(7, 1 + 15)
    assert (rows[:, 0] == 0).all() and np.array_equal(rows[:, 1:].reshape(7, 5, 3), img)


def test_bad_data_dir_names_the_file(tmp_path, capsys):
    rc = E.main(["--checkpoint", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")])
    assert rc == 2 and "manifest.json" in capsys.readouterr().err


def test_real_speech_controls(tmp_path):
    import soundfile as sf

    from models.audio import load_audio
    from models.bundle import load_bundle
    from realtime.engine import Driver
    from train.law import SpeakerStyle

    wave, _ = load_audio(shared_path("fixtures", "audio", "2_scott_0_3_3.wav"))
    wav = tmp_path / "excerpt.wav"
    sf.write(str(wav), wave[:24_000 * 12], 24_000)  # 12 s keeps the test short
    driver = Driver(load_bundle(tiny_bundle(tmp_path / "b")), chunk_frames=2)
    res, clip, gen = E.real_speech(driver, wav, SpeakerStyle.from_seed(0, 0), 0, E.law_channels(), progress=False)
    assert clip.n_frames == 360 and gen.shape == (360, 320)
    assert res["onsets_audio"] > 10 and res["onsets_law"] > 3
    for k in ("bc_audio_01", "bc_audio_all_01", "energy_corr", "jaw_env_corr", "body_velocity_ratio"):
        assert k in res["matched"] and k in res["swapped"]
    lr = res["law_reference"]  # the law scored against itself: exact on matched audio
    law = E.score([E.Track(clip.gt, clip.constants)], [E.make_ref(clip)], E.law_channels())
    assert law["law_nmse"] == 0.0 and lr["energy_corr"][0] == pytest.approx(law["energy_corr"])


def test_clips_from_synth_folder(tmp_path):
    from train import synth

    assert synth.main(["--out", str(tmp_path / "d"), "--speakers", "1", "--minutes", "0.2", "--seq-seconds", "12",
                       "--seed", "3"]) == 0
    clips = E.clips_from_dir(tmp_path / "d", style_seed=3, n_model_speakers=1, progress=False)
    assert len(clips) == 1 and clips[0].speaker == 0 and clips[0].n_frames == 360
    c = clips[0]
    assert np.allclose(c.gt[:, 310], c.signals["jaw"], atol=1e-6)  # npz ground truth == the law on the wav
    other = E.clips_from_dir(tmp_path / "d", style_seed=0, n_model_speakers=1, progress=False)
    assert other[0].speaker is None  # styles from another seed: driven as the UNKNOWN speaker
