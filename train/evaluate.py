"""Evaluate a checkpoint bundle against the talker law on held-out speech, with controls.

    python -m train.evaluate --out OUTDIR [--checkpoint DIR] [--data SYNTH_DIR | --synth-seed N --minutes M]
        [--real-wav WAV ...] [--fgd-encoder PATH] [--long-minutes 10] [--strict]

Ground truth is the talker law (``train.law``) applied to the same audio. Without ``--data``, fresh held-out speech
is synthesised with ``--synth-seed`` (new utterances in the training speakers' voices and styles; the training
style seed is read from the bundle's provenance, else ``--style-seed``). The model runs through the streaming
engine (``realtime.engine``, as ``train.infer`` does). Two controls are scored with the same metrics: the model's
motion against SWAPPED audio (clip i's motion vs clip i+1's audio and ground truth) and a FRAME-LOCAL LINEAR
BASELINE (``train.baselines``). Writes OUTDIR/report.json, OUTDIR/report.md (targets with PASS/FAIL, metric tables)
and PNG plots. See docs/EVALUATION.md for every metric and how to read the report.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from models import layout, rates
from models.layout import SessionConstants
from realtime.engine import OVERLAP
from train import metrics as M
from train.plots import COLORS, plot_panels, write_png  # noqa: F401 (write_png: re-exported)

SR = rates.MODEL_SAMPLE_RATE
FPS = rates.MOTION_FPS
DEFAULT_SYNTH_SEED = 100
SIGMAS = (0.3, 0.1)
MAX_LAG = 15


_T0 = time.time()




def log(msg: str) -> None:
    print(f"[evaluate {time.time() - _T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


# ==== held-out data ==================================================================================================

@dataclass
class Clip:
    """One held-out sequence: audio, the law's ground truth on it and how to drive the model.

    Attributes:
        name: identifier.
        wave: (N,) float32 model-rate audio, whole frames.
        gt: (T, 320) the law's motion on ``wave``.
        signals: the law's per-frame signals (envelope, pause, stressed_frames, ...).
        constants: per-sequence constants (FK, outputs).
        speaker: model speaker id (None = the UNKNOWN speaker).
        style_id: the law style's speaker id (baseline regressor key), None when unknown.
        source: 'procedural' | 'tts' | 'file' | 'real'.
    """

    name: str
    wave: np.ndarray
    gt: np.ndarray
    signals: dict[str, np.ndarray]
    constants: SessionConstants
    speaker: int | None
    style_id: int | None
    source: str

    @property
    def n_frames(self) -> int:
        return int(self.gt.shape[0])


def law_clip(name: str, wave: np.ndarray, style, rng, speaker: int | None, source: str) -> Clip:
    """The law on ``wave`` (rng drives the idle phases and beat jitter, as in ``train.synth``)."""
    from train.law import apply_law, audio_descriptors

    T = rates.n_frames(len(wave))
    wave = np.asarray(wave[:T * rates.SAMPLES_PER_FRAME], np.float32)
    gt, sig = apply_law(audio_descriptors(wave, SR), style, rng)
    return Clip(name, wave, gt, sig, style.session_constants(rng), speaker, style.speaker_id, source)


def speaker_style_ids(bundle) -> list[int]:
    """The law style id of each model speaker: parsed from names like 'synth_s03', else the position."""
    out = []
    for i, name in enumerate(bundle.speakers):
        m = re.search(r"s(\d+)$", str(name))
        out.append(int(m.group(1)) if m else i)
    return out


def training_style_seed(bundle) -> tuple[int | None, str]:
    """The train.synth seed the bundle was trained on, from its provenance: generator info -> cache manifest ->
    the synthetic data folder's manifest. (None, why) when the chain is broken."""
    from models.checkpoint import read_meta

    try:
        info = read_meta(bundle.root / bundle.manifest.get("generator", "generator.safetensors"))["info"]
        cache = Path(info["cache"])
        root = Path(json.loads((cache / "manifest.json").read_text())["root"])
        synth = json.loads((root / "manifest.json").read_text())
        return int(synth["seed"]), f"train.synth seed {synth['seed']} of {root} (via {cache})"
    except Exception as e:  # noqa: BLE001 - provenance is best effort; the caller falls back to --style-seed
        return None, f"provenance not found ({type(e).__name__}: {e})"


def heldout_clips(minutes: float, seed: int, style_seed: int, speakers: list[tuple[int | None, int]],
                  clip_seconds: float = 30.0, tts: bool = False, progress: bool = True) -> list[Clip]:
    """Fresh held-out speech: utterances from ``seed`` in the voices/styles of ``style_seed``.

    Args:
        speakers: (model speaker id or None, law style id) pairs, used round robin over clips.
    """
    from train.law import SpeakerStyle
    from train.synth import Plan, make_audio, quantize

    total = minutes * 60.0
    n = max(1, int(total // clip_seconds) + (total % clip_seconds >= 5.0))  # a tail under 5 s is dropped
    clips = []
    for k in tqdm(range(n), desc="held-out speech", unit="clip", disable=not progress, file=sys.stderr):
        model_spk, style_id = speakers[k % len(speakers)]
        sec = min(clip_seconds, total - k * clip_seconds)
        src = "tts" if (tts and k % 2 == 1) else "procedural"
        plan = Plan(f"heldout_{src}_s{style_id:02d}_{k:03d}", src, style_id, max(sec, 2.0), k)
        wave = quantize(make_audio(plan, style_seed, np.random.default_rng([seed, 1, k]))).astype(np.float32) / 32768
        clips.append(law_clip(plan.name, wave, SpeakerStyle.from_seed(style_id, style_seed),
                              np.random.default_rng([seed, 2, k]), model_spk, src))
    return clips


def clips_from_dir(root: Path, style_seed: int, n_model_speakers: int, progress: bool = True) -> list[Clip]:
    """A ``train.synth`` folder: NAME.wav + NAME.npz (the law's motion) per sequence of its manifest."""
    from models.audio import load_audio
    from train.law import SpeakerStyle, apply_law, audio_descriptors

    mf = root / "manifest.json"
    if not mf.is_file():
        raise FileNotFoundError(f"{mf}: --data must be a folder written by `python -m train.synth`")
    man = json.loads(mf.read_text())
    if "law_version" not in man or "sequences" not in man:
        raise ValueError(f"{mf}: not a train.synth manifest (no law_version/sequences); write held-out data with "
                         "`python -m train.synth --seed N`")
    data_seed = int(man.get("seed", 0))
    if data_seed != style_seed:
        log(f"{root}: its speaker styles come from seed {data_seed}, the model's from {style_seed}: the model is "
            "driven as the UNKNOWN speaker")
    clips = []
    for e in tqdm(man["sequences"], desc="held-out data", unit="seq", disable=not progress, file=sys.stderr):
        name, spk = e["name"], int(e["speaker"])
        wave, _ = load_audio(root / f"{name}.wav")
        try:
            with np.load(root / f"{name}.npz", allow_pickle=False) as z:
                d = {k: z[k] for k in z.files}
        except FileNotFoundError as err:
            raise FileNotFoundError(f"{root / name}.npz: listed in {mf} but missing") from err
        gt, const = layout.from_sam3d(d, contact=d.get("foot_contact"))
        T = min(len(gt), rates.n_frames(len(wave)))
        wave = wave[:T * rates.SAMPLES_PER_FRAME]
        style = SpeakerStyle.from_seed(spk, data_seed)
        _, sig = apply_law(audio_descriptors(wave, SR), style, None)  # audio-only signals (envelope, pauses, onsets)
        model_spk = spk if (data_seed == style_seed and spk < n_model_speakers) else None
        clips.append(Clip(name, wave, gt[:T], sig, const, model_spk, spk, str(e.get("source", "file"))))
    return clips


# ==== model runs =====================================================================================================

def generate_clips(driver, clips: list[Clip], progress: bool = True) -> list[np.ndarray]:
    """Whole-clip generation through the streaming engine (``train.infer.generate``), one session per clip."""
    from train.infer import generate

    out = []
    for c in tqdm(clips, desc="generate", unit="clip", disable=not progress, file=sys.stderr):
        motion, _ = generate(driver, c.wave, c.speaker, c.constants, progress=False)
        out.append(motion[:c.n_frames])
    return out


def stream_frames(driver, wave: np.ndarray, speaker: int | None, constants: SessionConstants,
                  push_frames: int) -> tuple[np.ndarray, float]:
    """Stream ``wave`` as a live client would: ``push_frames`` frames of audio per push. -> (motion, seam_max)."""
    s = driver.new_session(speaker=speaker, constants=constants)
    step = push_frames * rates.SAMPLES_PER_FRAME
    frames = []
    for i in range(0, len(wave), step):
        frames += s.push(wave[i:i + step])
    frames += s.flush()
    return np.stack([f.params for f in frames]), float(s.seam_max)


# ==== scoring ========================================================================================================

@dataclass
class Track:
    """A motion sequence with its constants; FK computed once, on demand."""

    motion: np.ndarray
    constants: SessionConstants
    _fk: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)

    @property
    def fk(self) -> tuple[np.ndarray, np.ndarray]:
        if self._fk is None:
            self._fk = M.forward_kinematics(self.motion, self.constants)
        return self._fk

    @property
    def upper(self) -> np.ndarray:
        """(T, 14, 3) upper-body joint positions (cm)."""
        return self.fk[1][:, M.joint_sets().upper_body]

    @property
    def fingers(self) -> np.ndarray:
        return M.fingers_in_wrist_frame(*self.fk)

    @property
    def upper_speed(self) -> np.ndarray:
        """(T,) mean upper-body joint speed (cm/frame)."""
        return M.joint_speed(self.upper).mean(1)


@dataclass
class Ref:
    """What a generated track is scored against: the law's motion and the audio's signals."""

    track: Track
    envelope: np.ndarray
    pause: np.ndarray
    law_onsets: np.ndarray  # seconds
    audio_onsets: np.ndarray | None = None  # seconds, generic detector (real speech)
    duration: float = 0.0


def make_ref(clip: Clip, audio_onsets: bool = False) -> Ref:
    T = clip.n_frames
    return Ref(Track(clip.gt, clip.constants), np.asarray(clip.signals["envelope"], np.float64)[:T],
               np.asarray(clip.signals["pause"], bool)[:T], M.frames_to_times(clip.signals["stressed_frames"]),
               M.detect_onsets(clip.wave, SR) if audio_onsets else None, T / FPS)


def shifted_ref(ref: Ref, frames: int) -> Ref:
    """The same reference with audio and ground truth circularly shifted by ``frames`` (a swapped-audio control
    for a single clip: the motion no longer matches the audio, the statistics stay the same)."""
    T = len(ref.envelope)
    dur = T / FPS

    def shift_t(t: np.ndarray | None) -> np.ndarray | None:
        return None if t is None else np.sort((t + frames / FPS) % dur)

    return Ref(Track(np.roll(ref.track.motion, frames, 0), ref.track.constants), np.roll(ref.envelope, frames),
               np.roll(ref.pause, frames), shift_t(ref.law_onsets), shift_t(ref.audio_onsets), dur)


def _cut(ref: Ref, T: int) -> Ref:
    """A reference truncated to T frames (swapped pairs of unequal length)."""
    if len(ref.envelope) <= T:
        return ref
    dur = T / FPS

    def cut_t(t: np.ndarray | None) -> np.ndarray | None:
        return None if t is None else t[t < dur]

    tr = Track(ref.track.motion[:T], ref.track.constants)
    if ref.track._fk is not None:
        tr._fk = (ref.track._fk[0][:T], ref.track._fk[1][:T])
    return Ref(tr, ref.envelope[:T], ref.pause[:T], cut_t(ref.law_onsets), cut_t(ref.audio_onsets), dur)


def _cut_track(t: Track, T: int) -> Track:
    if len(t.motion) <= T:
        return t
    out = Track(t.motion[:T], t.constants)
    if t._fk is not None:
        out._fk = (t._fk[0][:T], t._fk[1][:T])
    return out


def score(gens: list[Track], refs: list[Ref], law_channels: np.ndarray, bc_trim: int = 60) -> dict[str, Any]:
    """Every per-sequence metric of generated tracks against their references (pooled over the pairs)."""
    n = [min(len(g.motion), len(r.envelope)) for g, r in zip(gens, refs)]
    gens = [_cut_track(g, k) for g, k in zip(gens, n)]
    refs = [_cut(r, k) for r, k in zip(refs, n)]
    G = [g.motion for g in gens]
    R = [r.track.motion for r in refs]
    out: dict[str, Any] = {"frames": int(sum(n))}
    for part in ("body", "hand", "face"):
        ch = layout.VARYING[part]
        out[f"{part}_velocity_ratio"] = M.velocity_ratio([g[:, ch] for g in G], [r[:, ch] for r in R])
        out[f"{part}_hf_ratio"] = M.hf_ratio([g[:, ch] for g in G], [r[:, ch] for r in R])
    gu, ru = [g.upper for g in gens], [r.track.upper for r in refs]
    gf, rf = [g.fingers for g in gens], [r.track.fingers for r in refs]
    out["upper_body_joint_velocity_ratio"] = M.joint_speed_ratio(gu, ru)
    out["upper_body_joint_hf_ratio"] = M.hf_ratio([x.reshape(len(x), -1) for x in gu],
                                                  [x.reshape(len(x), -1) for x in ru])
    out["finger_joint_velocity_ratio"] = M.joint_speed_ratio(gf, rf)
    out["finger_joint_hf_ratio"] = M.hf_ratio([x.reshape(len(x), -1) for x in gf],
                                              [x.reshape(len(x), -1) for x in rf])
    gR, rR = [M.global_rotations(g) for g in G], [M.global_rotations(r) for r in R]
    out["global_rot_std_ratio"] = M.rotation_std_ratio(gR, rR)
    out["global_rot_std_gen_deg"] = math.degrees(M.rotation_std(gR))
    out["global_rot_std_gt_deg"] = math.degrees(M.rotation_std(rR))
    out["global_rot_geodesic_error_deg"] = math.degrees(M.mean_geodesic_error(gR, rR))
    lag, nmse, curve = M.lagged_nmse([g[:, law_channels] for g in G], [r[:, law_channels] for r in R], MAX_LAG)
    out["law_best_lag"] = lag
    out["law_nmse"] = nmse
    out["law_nmse_lag0"] = float(curve[MAX_LAG])
    out["law_nmse_curve"] = [float(x) for x in curve]
    env = [r.envelope for r in refs]
    out["jaw_env_corr"] = M.jaw_envelope_corr(G, env)
    out["jaw_env_corr_gt"] = M.jaw_envelope_corr(R, env)
    onsets = {"law": [r.law_onsets for r in refs]}
    if all(r.audio_onsets is not None for r in refs):
        onsets["audio"] = [r.audio_onsets for r in refs]
    for s in SIGMAS:
        key = f"{s:g}".replace(".", "")
        for src, on in onsets.items():
            for variant, thr in (("", 0.3), ("_all", 0.0)):  # EMAGE's moving minima / every speed minimum
                k = f"bc_{src}{variant}_{key}"
                out[k] = M.pooled_beat_consistency(on, gu, s, trim_frames=bc_trim, threshold=thr)
                out[k + "_gt"] = M.pooled_beat_consistency(on, ru, s, trim_frames=bc_trim, threshold=thr)
    gs, rs = [g.upper_speed for g in gens], [r.track.upper_speed for r in refs]
    out["energy_corr"] = M.energy_correlation(gs, env)
    out["energy_corr_gt"] = M.energy_correlation(rs, env)
    out["pause"] = M.pause_motion(gs, rs, [r.pause for r in refs])
    out["l1div"] = M.l1_diversity([g.fk[1] for g in gens])
    out["l1div_gt"] = M.l1_diversity([r.track.fk[1] for r in refs])
    cv: dict[str, float] = {}
    for g in gens:
        for k, v in M.constant_variation(layout.to_sam3d(g.motion, g.constants)).items():
            cv[k] = max(cv.get(k, 0.0), v)
    out["constant_variation"] = cv
    return out


def law_channels() -> np.ndarray:
    """Channels the law error is measured on: those that depend on the audio (``train.law.AUDIO_DRIVEN_CHANNELS``)."""
    from train.law import AUDIO_DRIVEN_CHANNELS

    return np.asarray(AUDIO_DRIVEN_CHANNELS)


def seam_report(driver_factory, clips: list[Clip], whole: list[np.ndarray], chunks: list[int], seconds: float,
                progress: bool = True) -> dict[str, Any]:
    """Stream the first ``seconds`` of held-out audio with pushes of N frames and emission chunks of N, for each
    N in ``chunks``; per-frame angular speed of the upper body + root (FK global rotations) at chunk-starting
    frames vs interior frames. Also: max |streamed - whole-file| and the engine's overlap mismatch."""
    js = M.joint_sets()
    out: dict[str, Any] = {"seconds": seconds}
    picked, left = [], seconds
    for i, c in enumerate(clips):
        if left <= 0:
            break
        T = min(c.n_frames, max(2, int(round(left * FPS))))
        picked.append((i, T))
        left -= T / FPS
    gt_speed = []
    for i, T in picked:
        R, _ = M.forward_kinematics(clips[i].gt[:T], clips[i].constants)
        gt_speed.append(M.angular_speed(R, js.seam_joints))  # the law has no chunks: its ratio shows the noise
    for N in chunks:
        drv = driver_factory(N)
        # frames near a stream's end see the flush's silence instead of the clip's next audio: stream `extra`
        # frames more than are measured, so every measured frame has the same audio context as the whole file
        extra = drv.lookahead + drv.decoder_right + N + OVERLAP
        speeds, diff, seam_max = [], 0.0, 0.0
        for i, T in tqdm(picked, desc=f"stream N={N}", unit="clip", disable=not progress, file=sys.stderr):
            c = clips[i]
            T = min(T, c.n_frames - extra)
            if T < 2 * N + 2:
                continue
            m, sm = stream_frames(drv, c.wave[:(T + extra) * rates.SAMPLES_PER_FRAME], c.speaker, c.constants, N)
            m = m[:T]
            R, _ = M.forward_kinematics(m, c.constants)
            speeds.append(M.angular_speed(R, js.seam_joints))
            diff = max(diff, float(np.abs(m - whole[i][:len(m)]).max()))
            seam_max = max(seam_max, sm)
        st = M.seam_stats(speeds, N)
        st["max_abs_diff_vs_whole_file"] = diff
        st["engine_seam_max"] = seam_max
        st["gt_reference"] = M.seam_stats(gt_speed, N)
        st["speed_trace"] = [float(x) for x in speeds[0][:min(len(speeds[0]), 4 * FPS)]] if speeds else []
        out[f"N{N}"] = st
    return out


# ==== targets ========================================================================================================

def _t(name: str, measured: Any, goal: str, ok: bool | None, note: str = "") -> dict[str, Any]:
    return {"target": name, "measured": measured, "goal": goal, "pass": ok, "note": note}


def _in(x: float, lo: float, hi: float) -> bool:
    return bool(np.isfinite(x) and lo <= x <= hi)


def _fmt(x: Any) -> str:
    if isinstance(x, bool) or x is None:
        return str(x)
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        if not np.isfinite(x):
            return str(x)
        return f"{x:.3g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.2e}"
    if isinstance(x, (list, tuple)):
        return " / ".join(_fmt(v) for v in x)
    return str(x)


def build_targets(rep: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target of the evaluation issue with the measured number and PASS/FAIL (None = not run)."""
    m, sw, bl = rep["model"], rep["swapped"], rep["baseline"]
    T = []
    for key, label in (("body_velocity_ratio", "body velocity ratio (params)"),
                       ("hand_velocity_ratio", "hand velocity ratio (params)"),
                       ("upper_body_joint_velocity_ratio", "body velocity ratio (FK upper-body joints)"),
                       ("finger_joint_velocity_ratio", "hand velocity ratio (FK fingers in wrist frame)")):
        T.append(_t(label, m[key], "0.85-1.15", _in(m[key], 0.85, 1.15)))
    T.append(_t("global rotation std ratio", m["global_rot_std_ratio"], "<= 1.2", m["global_rot_std_ratio"] <= 1.2))
    jr = m["jaw_env_corr"] / m["jaw_env_corr_gt"] if m["jaw_env_corr_gt"] > 0 else float("nan")
    T.append(_t("jaw-envelope corr / gt", jr, ">= 0.9", bool(jr >= 0.9),
                f"gen {m['jaw_env_corr']:.3f}, gt {m['jaw_env_corr_gt']:.3f}"))
    for key, label in (("bc_law_03", "BC (law onsets, sigma 0.3 s) / gt"),
                       ("bc_law_01", "BC (law onsets, sigma 0.1 s) / gt"),
                       ("bc_law_all_01", "BC all minima (law onsets, sigma 0.1 s) / gt")):
        g, r = m[key], m[key + "_gt"]
        ratio = _div(g, r)
        T.append(_t(label, ratio, ">= 0.95", bool(ratio >= 0.95), f"gen {g:.3f}, gt {r:.3f}"))
    for k, st in rep["seams"].items():
        if not k.startswith("N"):
            continue
        T.append(_t(f"seams N={st['chunk_frames']}: boundary mean / interior mean", st["mean_ratio"], "<= 1.1",
                    bool(st["boundary_mean"] <= 1.1 * st["interior_mean"] * (1 + 1e-9))))
        T.append(_t(f"seams N={st['chunk_frames']}: boundary p99 vs interior p99",
                    [st["boundary_p99"], st["interior_p99"]], "boundary <= interior",
                    bool(st["boundary_p99"] <= st["interior_p99"] * (1 + 1e-9)),
                    f"stream vs whole file max |diff| {st['max_abs_diff_vs_whole_file']:.2e}"))
    cv = max(m["constant_variation"].values()) if m["constant_variation"] else 0.0
    T.append(_t("cam_t / bone lengths / scales variation over frames", cv, "== 0", cv == 0.0,
                ", ".join(f"{k} {v:g}" for k, v in m["constant_variation"].items())))
    p = m["pause"]
    T.append(_t("never frozen in pauses (gen/gt pause speed)", p["ratio"], "> 0.2 and <= gt max",
                bool(p["never_frozen"]), f"gen {p['gen']:.3g}, gt {p['gt']:.3g}, gt max {p['gt_max']:.3g} cm/frame"))
    # controls: "clear margins" (defined in docs/EVALUATION.md)
    T.append(_t("margin vs swapped: law NMSE model / swapped", _div(m["law_nmse"], sw["law_nmse"]), "<= 0.8",
                _div(m["law_nmse"], sw["law_nmse"]) <= 0.8))
    T.append(_t("margin vs swapped: BC all minima (0.1) model / swapped", _div(m["bc_law_all_01"], sw["bc_law_all_01"]),
                ">= 1.1", _div(m["bc_law_all_01"], sw["bc_law_all_01"]) >= 1.1))
    T.append(_t("margin vs swapped: jaw corr model - swapped", m["jaw_env_corr"] - sw["jaw_env_corr"], ">= 0.3",
                m["jaw_env_corr"] - sw["jaw_env_corr"] >= 0.3))
    T.append(_t("margin vs linear baseline: law NMSE model / baseline", _div(m["law_nmse"], bl["law_nmse"]),
                "<= 0.9", _div(m["law_nmse"], bl["law_nmse"]) <= 0.9))
    if rep.get("fgd"):
        f = rep["fgd"]
        T.append(_t("margin vs linear baseline: FGD model < baseline", [f["model"], f["baseline"]], "model < baseline",
                    f["model"] < f["baseline"]))
    for real in rep.get("real", []):
        mm, ss = real["matched"], real["swapped"]
        name = Path(real["wav"]).name
        r_bc = _div(mm["bc_audio_01"], ss["bc_audio_01"])
        lr = real["law_reference"]
        T.append(_t(f"real {name}: BC(0.1, audio onsets) matched / swapped", r_bc, ">= 1.2", r_bc >= 1.2,
                    f"matched {mm['bc_audio_01']:.3f}, swapped {ss['bc_audio_01']:.3f}; the law's own motion: "
                    f"{_fmt(lr['bc_audio_01_ratio'])}"))
        e_m, e_s = mm["energy_corr"], ss["energy_corr"]
        T.append(_t(f"real {name}: energy corr matched vs swapped", [e_m, e_s], "matched >= 1.2 x max(swapped, 0)",
                    bool(e_m > 0 and e_m >= 1.2 * max(e_s, 0.0)),
                    f"the law's own motion: {_fmt(lr['energy_corr'])}"))
        T.append(_t(f"real {name}: jaw follows envelope (corr)", mm["jaw_env_corr"], ">= 0.5",
                    mm["jaw_env_corr"] >= 0.5))
        T.append(_t(f"real {name}: body velocity ratio vs the law", mm["body_velocity_ratio"], "0.7-1.3",
                    _in(mm["body_velocity_ratio"], 0.7, 1.3)))
    lg = rep.get("long")
    if lg:
        for key, label in (("body_velocity_ratio", "velocity ratio"), ("jaw_env_corr", "jaw corr"),
                           ("law_nmse", "law NMSE")):
            a, b = lg["first_minute"][key], lg["last_minute"][key]
            rel = abs(b - a) / abs(a) if a else float("inf")
            T.append(_t(f"long stream: {label} last minute vs first", [a, b], "within 10 %", rel <= 0.1,
                        f"relative change {rel:.1%}"))
    else:
        T.append(_t("long stream: minutes 9-10 vs minute 1", None, "within 10 %", None, "not run (--long-minutes)"))
    return T


def _div(a: float, b: float) -> float:
    return float(a / b) if b and np.isfinite(a) and np.isfinite(b) else float("nan")


# ==== long stream ====================================================================================================

def long_stream(driver, minutes: float, seed: int, style_seed: int, speaker: tuple[int | None, int],
                law_ch: np.ndarray, progress: bool = True) -> dict[str, Any]:
    """One continuous held-out stream of ``minutes``: metrics per minute, first vs last minute."""
    log(f"long stream: {minutes:g} min of held-out speech")
    clip = heldout_clips(minutes, seed + 7, style_seed, [speaker], clip_seconds=minutes * 60.0, progress=progress)[0]
    gen = generate_clips(driver, [clip], progress)[0]
    ref = make_ref(clip)
    per = []
    W = 60 * FPS
    for s in range(0, clip.n_frames - W + 1, W):
        g, r = gen[s:s + W], clip.gt[s:s + W]
        body = layout.VARYING["body"]
        _, nmse, _ = M.lagged_nmse(g[:, law_ch], r[:, law_ch], MAX_LAG)
        per.append({"minute": s // W + 1, "body_velocity_ratio": M.velocity_ratio(g[:, body], r[:, body]),
                    "jaw_env_corr": M.jaw_envelope_corr(g, ref.envelope[s:s + W]), "law_nmse": nmse})
    if not per:
        return {}
    last = per[-1]
    if clip.n_frames % W and clip.n_frames >= W:  # the true last minute, ending at the stream's end
        s = clip.n_frames - W
        g, r = gen[s:], clip.gt[s:]
        _, nmse, _ = M.lagged_nmse(g[:, law_ch], r[:, law_ch], MAX_LAG)
        body = layout.VARYING["body"]
        last = {"minute": "last", "body_velocity_ratio": M.velocity_ratio(g[:, body], r[:, body]),
                "jaw_env_corr": M.jaw_envelope_corr(g, ref.envelope[s:]), "law_nmse": nmse}
    return {"minutes": minutes, "per_minute": per, "first_minute": per[0], "last_minute": last}


# ==== real speech ====================================================================================================

def real_speech(driver, wav: Path, style, model_speaker: int | None, law_ch: np.ndarray,
                progress: bool = True) -> tuple[dict[str, Any], Clip, np.ndarray]:
    """A real recording: ground truth = the law on it; swapped = the same motion against the audio circularly
    shifted by half its length."""
    from models.audio import load_audio

    wave, rep = load_audio(wav)
    clip = law_clip(f"real_{wav.stem}", wave, style, None, model_speaker, "real")
    gen = generate_clips(driver, [clip], progress)[0]
    ref = make_ref(clip, audio_onsets=True)
    shifted = shifted_ref(ref, clip.n_frames // 2)
    matched = score([Track(gen, clip.constants)], [ref], law_ch)
    swapped = score([Track(gen, clip.constants)], [shifted], law_ch)
    # what the law's own motion reaches on the same two controls (a target it cannot reach is not the model's fault)
    law_m, law_s = score([ref.track], [ref], law_ch), score([ref.track], [shifted], law_ch)
    law_ref = {"bc_audio_01_ratio": _div(law_m["bc_audio_01"], law_s["bc_audio_01"]),
               "bc_audio_01": [law_m["bc_audio_01"], law_s["bc_audio_01"]],
               "energy_corr": [law_m["energy_corr"], law_s["energy_corr"]]}
    return ({"wav": str(wav), "seconds": clip.n_frames / FPS, "source_rate": rep.source_rate,
             "onsets_audio": int(len(ref.audio_onsets)), "onsets_law": int(len(ref.law_onsets)),
             "matched": matched, "swapped": swapped, "law_reference": law_ref}, clip, gen)


# ==== the run ========================================================================================================

def evaluate(a: argparse.Namespace) -> dict[str, Any]:
    import torch

    from models.bundle import load_bundle
    from realtime.engine import Driver
    from train.baselines import FrameLinearBaseline, law_training_data
    from train.law import SpeakerStyle

    t0 = time.time()
    progress = not a.quiet
    if a.threads:
        torch.set_num_threads(a.threads)
    bundle = load_bundle(a.checkpoint)
    drivers: dict[int, Any] = {}

    def driver_for(n: int):
        if n not in drivers:
            drivers[n] = Driver(bundle, chunk_frames=n, face_mode=a.face, smooth=None if a.smooth < 0 else a.smooth)
        return drivers[n]

    main_driver = driver_for(a.chunk_frames)
    notes: list[str] = []
    seed_found, why = training_style_seed(bundle)
    style_seed = a.style_seed if a.style_seed is not None else (seed_found if seed_found is not None else 0)
    notes.append(f"speaker styles: seed {style_seed} ("
                 + ("--style-seed" if a.style_seed is not None else why if seed_found is not None
                    else f"assumed train.synth default; {why}") + ")")
    ids = speaker_style_ids(bundle)
    n_spk = min(len(ids), a.speakers) if ids else 0
    speakers: list[tuple[int | None, int]] = [(i, ids[i]) for i in range(n_spk)] or [(None, 0)]
    log(f"checkpoint {bundle.root} (parts {bundle.parts}, L={main_driver.lookahead}, face {main_driver.face_mode}); "
        f"speakers {[s for _, s in speakers]}, style seed {style_seed}")
    synth_seed = a.synth_seed if a.synth_seed is not None else DEFAULT_SYNTH_SEED
    law_seed = style_seed  # the seed of the styles that made the ground truth (the baseline is fitted on them)
    if a.data:
        clips = clips_from_dir(Path(a.data), style_seed, main_driver.n_speakers, progress)
        law_seed = int(json.loads((Path(a.data) / "manifest.json").read_text()).get("seed", 0))
        data_desc = f"{a.data} ({len(clips)} sequences, styles of seed {law_seed})"
    else:
        if synth_seed == style_seed:
            raise ValueError(f"--synth-seed {synth_seed} equals the training seed: choose another so the speech is "
                             "held out")
        clips = heldout_clips(a.minutes, synth_seed, style_seed, speakers, a.clip_seconds, a.tts, progress)
        data_desc = f"fresh held-out speech: {a.minutes:g} min, seed {synth_seed}, {len(clips)} clips"
    if not clips:
        raise ValueError("no held-out clip to evaluate")
    law_ch = law_channels()

    log("generating (model)")
    gen = generate_clips(main_driver, clips, progress)
    log("fitting the frame-local linear baseline")
    styles = {sid: SpeakerStyle.from_seed(sid, law_seed) for sid in sorted({c.style_id for c in clips
                                                                          if c.style_id is not None})}
    if not styles:
        styles = {0: SpeakerStyle.from_seed(0, law_seed)}
    bfeat, bmot, bspk = law_training_data(styles, a.baseline_seconds, seed=synth_seed + 1000, voice_seed=law_seed,
                                          progress=progress)
    baseline = FrameLinearBaseline.fit(bfeat, bmot, bspk)
    from models.features import features_of

    base = [baseline.predict(features_of(c.wave)[:c.n_frames], c.style_id, c.constants) for c in clips]

    log("scoring")
    refs = [make_ref(c) for c in clips]
    tracks = [Track(g, c.constants) for g, c in zip(gen, clips)]
    rep: dict[str, Any] = {"checkpoint": str(bundle.root), "data": data_desc, "notes": notes,
                           "engine": main_driver.budget()}
    rep["model"] = score(tracks, refs, law_ch)
    if len(refs) > 1:
        swap_refs = refs[1:] + refs[:1]
        rep["swap_definition"] = "clip i's generated motion scored against clip i+1's audio and ground truth"
    else:
        swap_refs = [shifted_ref(refs[0], clips[0].n_frames // 2)]
        rep["swap_definition"] = "the clip's motion against its audio and ground truth circularly shifted by T/2"
    rep["swapped"] = score(tracks, swap_refs, law_ch)
    rep["baseline"] = score([Track(b, c.constants) for b, c in zip(base, clips)], refs, law_ch)
    rep["baseline_info"] = {"frames_per_speaker": {str(k): v for k, v in baseline.frames.items()},
                            "alpha": baseline.alpha}
    rep["gt_self"] = score([r.track for r in refs], refs, law_ch)

    log("seams")
    rep["seams"] = seam_report(driver_for, clips, gen, a.seam_chunks, a.seam_seconds, progress)

    log("FGD")
    rep["fgd"] = fgd_report(a, clips, gen, base, bmot, notes, progress)

    rep["real"], real_plot = [], None
    for wav in a.real_wav or []:
        log(f"real speech {wav}")
        sid = speakers[0][1]
        r, rclip, rgen = real_speech(main_driver, Path(wav), SpeakerStyle.from_seed(sid, style_seed),
                                     speakers[0][0], law_ch, progress)
        rep["real"].append(r)
        real_plot = real_plot or (rclip, rgen)
    rep["long"] = (long_stream(main_driver, a.long_minutes, synth_seed, style_seed, speakers[0], law_ch, progress)
                   if a.long_minutes > 0 else None)
    rep["targets"] = build_targets(rep)
    rep["summary"] = {"passed": sum(t["pass"] is True for t in rep["targets"]),
                      "failed": sum(t["pass"] is False for t in rep["targets"]),
                      "not_run": sum(t["pass"] is None for t in rep["targets"]),
                      "seconds": round(time.time() - t0, 1)}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rep["plots"] = write_plots(out, rep, clips[0], gen[0], base[0], real_plot)
    (out / "report.json").write_text(json.dumps(_jsonable(rep), indent=1))
    (out / "report.md").write_text(report_markdown(rep))
    return rep


def fgd_report(a: argparse.Namespace, clips: list[Clip], gen: list[np.ndarray], base: list[np.ndarray],
               train_motions: list[np.ndarray], notes: list[str], progress: bool) -> dict[str, Any] | None:
    from train.fgd_encoder import FGDConfig, FGDEncoder, train_encoder

    if a.fgd_encoder:
        enc = FGDEncoder.load(a.fgd_encoder)
        source = str(a.fgd_encoder)
    else:
        cfg = FGDConfig()
        seqs = [m for m in train_motions + [c.gt for c in clips] if len(m) >= cfg.window]
        if not seqs or a.fgd_steps <= 0:
            notes.append("FGD skipped: no encoder and nothing to train one on")
            return None
        enc = train_encoder(seqs, a.fgd_steps, cfg, progress=progress)
        source = (f"quick encoder trained here on the ground-truth motion ({a.fgd_steps} steps, "
                  f"{sum(len(s) for s in seqs)} frames): numbers compare within this report only")
        notes.append("FGD: " + source)

    def feats(ms: list[np.ndarray]) -> np.ndarray:
        f = [enc.features(m) for m in ms]
        f = [x for x in f if len(x)]
        return np.concatenate(f) if f else np.zeros((0, enc.cfg.latent))

    fg, fm, fb = feats([c.gt for c in clips]), feats(gen), feats(base)
    half_a = feats([c.gt[:c.n_frames // 2] for c in clips])
    half_b = feats([c.gt[c.n_frames // 2:] for c in clips])
    if min(len(fg), len(fm), len(fb)) < 2:
        notes.append("FGD skipped: held-out clips shorter than two encoder windows")
        return None
    out = {"encoder": source, "windows": int(len(fg)), "model": M.frechet_distance(fg, fm),
           "baseline": M.frechet_distance(fg, fb)}
    out["gt_half_vs_half"] = M.frechet_distance(half_a, half_b) if min(len(half_a), len(half_b)) >= 2 else None
    return out


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, float)):
        v = float(x)
        return v if math.isfinite(v) else None
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    return x


# ==== report.md ======================================================================================================

ROWS = [
    ("body_velocity_ratio", "body velocity ratio (params)"),
    ("hand_velocity_ratio", "hand velocity ratio (params)"),
    ("face_velocity_ratio", "face velocity ratio (params)"),
    ("body_hf_ratio", "body HF (> 4 Hz) energy ratio"),
    ("hand_hf_ratio", "hand HF energy ratio"),
    ("upper_body_joint_velocity_ratio", "upper-body joint speed ratio"),
    ("upper_body_joint_hf_ratio", "upper-body joint HF ratio"),
    ("finger_joint_velocity_ratio", "finger joint speed ratio (wrist frame)"),
    ("finger_joint_hf_ratio", "finger joint HF ratio"),
    ("global_rot_std_ratio", "global rotation std ratio"),
    ("global_rot_geodesic_error_deg", "global rotation geodesic error (deg)"),
    ("law_best_lag", "law: best lag (frames, + = late)"),
    ("law_nmse", "law: NMSE at best lag"),
    ("law_nmse_lag0", "law: NMSE at lag 0"),
    ("jaw_env_corr", "jaw-envelope corr"),
    ("bc_law_03", "BC law onsets sigma 0.3"),
    ("bc_law_01", "BC law onsets sigma 0.1"),
    ("bc_law_all_03", "BC law onsets sigma 0.3, all minima"),
    ("bc_law_all_01", "BC law onsets sigma 0.1, all minima"),
    ("bc_audio_03", "BC audio onsets sigma 0.3"),
    ("bc_audio_01", "BC audio onsets sigma 0.1"),
    ("bc_audio_all_01", "BC audio onsets sigma 0.1, all minima"),
    ("energy_corr", "gesture-speech energy corr"),
    ("l1div", "L1 diversity (cm)"),
]


def report_markdown(rep: dict[str, Any]) -> str:
    s = rep["summary"]
    lines = [f"# Evaluation report: `{rep['checkpoint']}`", "",
             f"Data: {rep['data']}. Engine: chunk {rep['engine']['chunk_frames']} frames, look-ahead "
             f"{rep['engine']['lookahead_frames']}, decoder right {rep['engine']['decoder_right_frames']} "
             f"({rep['engine']['ms']:.0f} ms), face {rep['engine']['face_mode']}. "
             f"**{s['passed']} passed, {s['failed']} failed, {s['not_run']} not run** ({s['seconds']} s).", "",
             "## Targets", "", "| target | measured | goal | result | note |", "|---|---|---|---|---|"]
    for t in rep["targets"]:
        res = {True: "PASS", False: "**FAIL**", None: "n/a"}[t["pass"]]
        lines.append(f"| {t['target']} | {_fmt(t['measured'])} | {t['goal']} | {res} | {t['note']} |")
    lines += ["", "## Metrics (held-out speech)", "",
              "gt = the law's own motion (its self-score is the reference for BC, correlations and L1div); swapped = "
              f"{rep['swap_definition']}; baseline = frame-local linear ridge.", "",
              "| metric | model | swapped | baseline | gt |", "|---|---|---|---|---|"]
    m, sw, bl, gt = rep["model"], rep["swapped"], rep["baseline"], rep["gt_self"]
    for key, label in ROWS:
        if key not in m:
            continue
        gtv = m.get(key + "_gt", gt.get(key))
        lines.append(f"| {label} | {_fmt(m[key])} | {_fmt(sw[key])} | {_fmt(bl[key])} | {_fmt(gtv)} |")
    lines.append(f"| pause speed gen/gt | {_fmt(m['pause']['ratio'])} | {_fmt(sw['pause']['ratio'])} | "
                 f"{_fmt(bl['pause']['ratio'])} | 1 |")
    if rep.get("fgd"):
        f = rep["fgd"]
        lines.append(f"| FGD vs gt | {_fmt(f['model'])} | - | {_fmt(f['baseline'])} | "
                     f"{_fmt(f['gt_half_vs_half'])} (half vs half) |")
    lines += ["", "## Seams (angular speed of upper body + root, rad/frame)", "",
              "| N | boundary mean | interior mean | ratio | boundary p99 | interior p99 | gt ratio | "
              "stream vs file max diff |", "|---|---|---|---|---|---|---|---|"]
    for k, st in rep["seams"].items():
        if k.startswith("N"):
            lines.append(f"| {st['chunk_frames']} | {_fmt(st['boundary_mean'])} | {_fmt(st['interior_mean'])} | "
                         f"{_fmt(st['mean_ratio'])} | {_fmt(st['boundary_p99'])} | {_fmt(st['interior_p99'])} | "
                         f"{_fmt(st['gt_reference']['mean_ratio'])} | {_fmt(st['max_abs_diff_vs_whole_file'])} |")
    for r in rep.get("real", []):
        mm, ss = r["matched"], r["swapped"]
        lines += ["", f"## Real speech: `{r['wav']}` ({r['seconds']:.1f} s, {r['onsets_audio']} audio onsets, "
                  f"{r['onsets_law']} law onsets)", "", "| metric | matched | swapped (audio shifted T/2) | law gt |",
                  "|---|---|---|---|"]
        for key, label in ROWS:
            if key in mm:
                lines.append(f"| {label} | {_fmt(mm[key])} | {_fmt(ss[key])} | "
                             f"{_fmt(mm.get(key + '_gt', '-'))} |")
    if rep.get("long"):
        lines += ["", f"## Long stream ({rep['long']['minutes']:g} min)", "",
                  "| minute | body velocity ratio | jaw corr | law NMSE |", "|---|---|---|---|"]
        for p in rep["long"]["per_minute"] + ([rep["long"]["last_minute"]]
                                              if rep["long"]["last_minute"]["minute"] == "last" else []):
            lines.append(f"| {p['minute']} | {_fmt(p['body_velocity_ratio'])} | {_fmt(p['jaw_env_corr'])} | "
                         f"{_fmt(p['law_nmse'])} |")
    lines += ["", "## Notes", ""] + [f"- {n}" for n in rep["notes"]]
    if rep.get("plots"):
        lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in rep["plots"]]
    return "\n".join(lines) + "\n"


# ==== plots (a tiny numpy rasteriser + PNG writer; no matplotlib) ====================================================



def write_plots(out: Path, rep: dict[str, Any], clip: Clip, gen: np.ndarray, base: np.ndarray,
                real: tuple[Clip, np.ndarray] | None) -> list[str]:
    """traces.png, lag.png, spectrum.png, seams.png (+ long.png, real.png when those ran)."""
    files = []
    T = min(clip.n_frames, len(gen), 20 * FPS)
    t = np.arange(T) / FPS
    gt_tr, gen_tr, base_tr = (Track(m[:T], clip.constants) for m in (clip.gt, gen, base))
    body = layout.VARYING["body"]
    ch = body[int(np.argmax(clip.gt[:, body].std(0)))]
    onsets = list(M.frames_to_times(clip.signals["stressed_frames"]))
    files.append(plot_panels(out / "traces.png", [
        {"title": "jaw open (rad)", "series": [(t, clip.gt[:T, layout.JAW_OPEN], COLORS["gt"], "gt"),
                                               (t, gen[:T, layout.JAW_OPEN], COLORS["model"], "model")]},
        {"title": "upper-body speed (cm/frame), law onsets", "vlines": onsets,
         "series": [(t, gt_tr.upper_speed, COLORS["gt"], "gt"), (t, gen_tr.upper_speed, COLORS["model"], "model"),
                    (t, base_tr.upper_speed, COLORS["baseline"], "baseline")]},
        {"title": f"channel {layout.channel_names()[ch]}", "xlabel": "s",
         "series": [(t, clip.gt[:T, ch], COLORS["gt"], "gt"), (t, gen[:T, ch], COLORS["model"], "model"),
                    (t, base[:T, ch], COLORS["baseline"], "baseline")]},
    ]))
    lags = np.arange(-MAX_LAG, MAX_LAG + 1)
    files.append(plot_panels(out / "lag.png", [{"title": "law NMSE vs lag (frames, + = generated late)",
                                                "series": [(lags, rep[k]["law_nmse_curve"], COLORS[c], c)
                                                           for k, c in (("model", "model"), ("swapped", "swapped"),
                                                                        ("baseline", "baseline"))]}]))
    series = []
    for m, c in ((clip.gt, "gt"), (gen, "model"), (base, "baseline")):
        f, pw = M.power_spectrum(m[:, body])
        series.append((f, pw, COLORS[c], c))
    files.append(plot_panels(out / "spectrum.png", [{"title": "body parameter velocity power spectrum", "logy": True,
                                                     "xlabel": "hz", "series": series}]))
    seam_panels = []
    for k, st in rep["seams"].items():
        if k.startswith("N") and st.get("speed_trace"):
            y = np.asarray(st["speed_trace"])
            x = np.arange(len(y)) / FPS
            N = st["chunk_frames"]
            seam_panels.append({"title": f"angular speed (rad/frame), chunk starts N={N}", "xlabel": "s",
                                "vlines": list(np.arange(N, len(y), N) / FPS),
                                "series": [(x, y, COLORS["model"], "model")]})
    if seam_panels:
        files.append(plot_panels(out / "seams.png", seam_panels, panel_h=160))
    if rep.get("long"):
        per = rep["long"]["per_minute"]
        mins = np.array([p["minute"] for p in per], float)
        files.append(plot_panels(out / "long.png", [
            {"title": f"long stream: {key.replace('_', ' ')} per minute", "xlabel": "min",
             "series": [(mins, [p[key] for p in per], COLORS["model"], "model")]}
            for key in ("body_velocity_ratio", "jaw_env_corr", "law_nmse")], panel_h=150))
    if real is not None:
        rclip, rgen = real
        T = min(rclip.n_frames, len(rgen))
        t = np.arange(T) / FPS
        w = FPS
        g_sp = M.moving_average(Track(rgen[:T], rclip.constants).upper_speed, w)
        r_sp = M.moving_average(Track(rclip.gt[:T], rclip.constants).upper_speed, w)
        env = M.moving_average(rclip.signals["envelope"][:T], w)
        files.append(plot_panels(out / "real.png", [
            {"title": "real speech: 1 s upper-body speed", "series": [(t, r_sp, COLORS["gt"], "law"),
                                                                       (t, g_sp, COLORS["model"], "model")]},
            {"title": "real speech: 1 s envelope", "xlabel": "s", "series": [(t, env, COLORS["aux"], "envelope")]},
            {"title": "real speech: jaw", "xlabel": "s",
             "series": [(t, rclip.gt[:T, layout.JAW_OPEN], COLORS["gt"], "law"),
                        (t, rgen[:T, layout.JAW_OPEN], COLORS["model"], "model")]},
        ]))
    return [str(f) for f in files]


# ==== CLI ============================================================================================================

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=None, help="bundle directory (default: the shipped demo)")
    p.add_argument("--out", required=True, help="output folder for report.json, report.md and the plots")
    p.add_argument("--data", default=None, help="held-out train.synth folder (default: synthesise fresh speech)")
    p.add_argument("--synth-seed", "--seed", dest="synth_seed", type=int, default=None,
                   help=f"seed of the fresh held-out speech (default {DEFAULT_SYNTH_SEED}; must differ from training)")
    p.add_argument("--minutes", type=float, default=2.0, help="minutes of fresh held-out speech (default 2)")
    p.add_argument("--clip-seconds", type=float, default=30.0, help="length of one held-out clip (default 30)")
    p.add_argument("--tts", action="store_true", help="mix espeak-ng speech into the held-out set")
    p.add_argument("--style-seed", type=int, default=None,
                   help="train.synth seed of the training speakers' styles (default: from the bundle's provenance, "
                        "else 0)")
    p.add_argument("--speakers", type=int, default=4, help="evaluate at most this many of the model's speakers")
    p.add_argument("--real-wav", nargs="*", default=[], help="real speech recordings (ground truth = the law)")
    p.add_argument("--fgd-encoder", default=None, help="FGD encoder (python -m train.fgd_encoder); default: train a "
                   "quick one here")
    p.add_argument("--fgd-steps", type=int, default=300, help="steps of the quick FGD encoder (0 = no FGD)")
    p.add_argument("--baseline-seconds", type=float, default=60.0,
                   help="law speech per speaker to fit the linear baseline on (default 60)")
    p.add_argument("--long-minutes", type=float, default=0.0, help="also run one continuous stream of this many "
                   "minutes and compare its last minute with its first (e.g. 10)")
    p.add_argument("--chunk-frames", type=int, default=2, help="engine emission chunk for the main run")
    p.add_argument("--seam-chunks", type=int, nargs="+", default=[2, 4], help="chunk sizes N for the seam check")
    p.add_argument("--seam-seconds", type=float, default=60.0,
                   help="seconds of audio streamed N frames per push for the seam check (default 60)")
    p.add_argument("--face", default="auto", choices=["auto", "model", "envelope", "off"])
    p.add_argument("--smooth", type=float, default=-1.0, help="runtime One-Euro smoothing min cutoff (Hz) for all "
                   "parts; 0 = off; default: what the checkpoint recommends")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: the tiny models run fastest single-threaded; 0 = leave as is)")
    p.add_argument("--strict", action="store_true", help="exit 1 when any target fails")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    a = p.parse_args(argv)
    if a.minutes <= 0 or a.clip_seconds < 5:
        p.error("--minutes must be > 0 and --clip-seconds >= 5")
    if any(n < 2 for n in a.seam_chunks):
        p.error("--seam-chunks: chunk sizes must be >= 2 (with 1 every frame is a boundary)")
    try:
        rep = evaluate(a)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    s = rep["summary"]
    print(f"[evaluate] {s['passed']} passed, {s['failed']} failed, {s['not_run']} not run -> "
          f"{Path(a.out) / 'report.md'}")
    for t in rep["targets"]:
        res = {True: "PASS", False: "FAIL", None: "n/a "}[t["pass"]]
        print(f"  {res}  {t['target']}: {_fmt(t['measured'])} (goal {t['goal']})")
    return 1 if (a.strict and s["failed"]) else 0


if __name__ == "__main__":
    sys.exit(main())
