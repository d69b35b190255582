"""The synthetic talker: audio (procedural speech, espeak-ng, or any wavs) + the law's motion, written as SAM 3D Body
stacked npz files next to 24 kHz int16 wavs, i.e. exactly what the real data loader reads.

    python -m train.synth --out data/synth --speakers 4 --minutes 20 --seed 0 [--tts] [--audio-dir WAVS]

Each sequence NAME gets ``NAME.npz`` + ``NAME.wav``; ``manifest.json`` lists them. The motion is computed from the
int16 samples exactly as written, so descriptors recomputed from the wav give the same ground truth.
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy import signal

from models import layout, rates
from models.audio import load_audio
from models.rig import F_CAM, forward_kinematics
from train.law import LAW_VERSION, LOOKAHEAD_FRAMES, SpeakerStyle, apply_law, audio_descriptors

SR = rates.MODEL_SAMPLE_RATE  # wavs are written at the model rate (24 kHz), int16
CAM_JITTER_M = 0.001  # per-frame pred_cam_t estimation noise (~1 mm): loaders take the mean
MIN_FILE_PIECE_S = 5.0

# ==== procedural speech ============================================================================================

# (F1, F2, F3) Hz of a few vowels for an adult male voice; scaled per speaker
VOWELS = np.array([[730, 1090, 2440], [530, 1840, 2480], [270, 2290, 3010], [570, 840, 2410], [300, 870, 2240],
                   [500, 1500, 2500], [660, 1720, 2410], [390, 1990, 2550]], np.float64)
FORMANT_BW = np.array([80.0, 100.0, 140.0])


@dataclass(frozen=True)
class Voice:
    """Per-speaker parameters of the procedural speech-like signal."""

    f0: float  # Hz, typical pitch
    accent_st: float  # semitones of a stress accent
    syllable_rate: float  # syllables per second
    formant_scale: float
    stress_prob: float
    breathiness: float

    @classmethod
    def from_seed(cls, speaker_id: int, seed: int = 0) -> Voice:
        rng = np.random.default_rng([int(seed), int(speaker_id), 104729])
        female = rng.random() < 0.5
        return cls(
            f0=float(rng.uniform(165, 235) if female else rng.uniform(90, 140)),
            accent_st=float(rng.uniform(2.0, 6.0)), syllable_rate=float(rng.uniform(4.0, 6.0)),
            formant_scale=float(rng.uniform(1.08, 1.2) if female else rng.uniform(0.95, 1.05)),
            stress_prob=float(rng.uniform(0.25, 0.4)), breathiness=float(rng.uniform(0.02, 0.08)),
        )


@lru_cache(maxsize=16)
def _bandpass(lo: int, hi: int, rate: int) -> np.ndarray:
    return signal.butter(2, [lo, hi], "bandpass", fs=rate, output="sos")


def _resonate(x: np.ndarray, freqs: np.ndarray, rate: int) -> np.ndarray:
    """Cascade of 2-pole resonators (unit gain at DC-ish, normalised by peak gain)."""
    y = x
    for f, bw in zip(freqs, FORMANT_BW):
        r = math.exp(-math.pi * bw / rate)
        th = 2 * math.pi * f / rate
        a = [1.0, -2 * r * math.cos(th), r * r]
        y = signal.lfilter([1.0 - r], a, y)
    return y


def _glottal(n: int, f0: np.ndarray, rate: int, phase0: float) -> tuple[np.ndarray, float]:
    """Glottal flow derivative for a per-sample F0 track (Rosenberg-like pulse, 60% open phase)."""
    ph = phase0 + np.cumsum(f0[:n] / rate)
    frac = ph - np.floor(ph)
    flow = np.where(frac < 0.6, 0.5 * (1 - np.cos(2 * np.pi * frac / 0.6)), 0.0)
    return np.diff(np.concatenate([[flow[0]], flow])), float(ph[-1] if n else phase0)


def _ramp(n: int, attack: int, release: int) -> np.ndarray:
    e = np.ones(n)
    a, r = min(attack, n // 2), min(release, n // 2)
    if a:
        e[:a] = 0.5 * (1 - np.cos(np.pi * np.arange(a) / a))
    if r:
        e[n - r:] = 0.5 * (1 + np.cos(np.pi * np.arange(1, r + 1) / r))
    return e


def procedural_speech(seconds: float, voice: Voice, rng: np.random.Generator, rate: int = SR) -> np.ndarray:
    """A speech-like waveform: phrases of syllables (~4-6/s) with stress accents, pauses of 0.2-1.5 s.

    Syllable = optional consonant (fricative noise, plosive closure + burst, or nasal murmur) + a vowel: a glottal
    pulse train on an intonation contour (declination + accents) through three formant resonators. Active speech is
    normalised to -14..-22 dBFS; a -65 dBFS noise floor keeps pauses from being digital zero.
    """
    n_total = int(seconds * rate)
    out = np.zeros(n_total + rate)
    pos = int(rng.uniform(0.1, 0.5) * rate)
    phase = 0.0
    ms = rate // 1000
    while pos < n_total - int(0.3 * rate):
        n_syl = int(rng.integers(4, 18))
        f_start = voice.f0 * 2 ** (rng.uniform(0, 2) / 12)
        decl = rng.uniform(2, 4)  # semitones of declination over the phrase
        last_stressed = False
        for i in range(n_syl):
            stressed = (rng.random() < voice.stress_prob) and not last_stressed
            last_stressed = stressed
            dur = rng.uniform(0.75, 1.25) / voice.syllable_rate * (1.3 if stressed else 1.0)
            n = int(dur * rate)
            kind = rng.choice(["none", "fric", "plos", "nasal"], p=[0.2, 0.35, 0.3, 0.15])
            seg = np.zeros(n)
            c = 0
            if kind == "fric":
                c = int(rng.uniform(0.2, 0.35) * n)
                lo, hi = [(3500, 8000), (2000, 5000), (1000, 7000)][int(rng.integers(3))]
                sos = _bandpass(lo, min(hi, rate // 2 - 100), rate)
                level = 10 ** (rng.uniform(-20, -12) / 20)
                seg[:c] = signal.sosfilt(sos, rng.normal(0, 1, c)) * level * _ramp(c, 5 * ms, 5 * ms)
            elif kind == "plos":
                closure, burst = int(rng.uniform(20, 40) * ms), int(rng.uniform(8, 15) * ms)
                c = closure + burst
                seg[closure:c] = rng.normal(0, 1, burst) * np.exp(-np.arange(burst) / (3 * ms)) * 0.3
            elif kind == "nasal":
                c = int(rng.uniform(40, 60) * ms)
                exc, phase = _glottal(c, np.full(c, f_start), rate, phase)
                seg[:c] = _resonate(exc, np.array([250.0, 1000.0, 2200.0]) * voice.formant_scale, rate) * 0.15
            v = n - c
            t = (i + np.linspace(0, 1, v)) / n_syl
            st = -decl * t + (voice.accent_st * np.sin(np.pi * np.linspace(0, 1, v)) if stressed else 0.0)
            f0 = f_start * 2 ** ((st + rng.normal(0, 0.3)) / 12)
            exc, phase = _glottal(v, f0, rate, phase)
            exc = exc + voice.breathiness * rng.normal(0, 1, v) * np.abs(exc).max()
            formants = VOWELS[int(rng.integers(len(VOWELS)))] * voice.formant_scale * rng.uniform(0.95, 1.05, 3)
            vow = _resonate(exc, formants, rate)
            vow = vow / (np.abs(vow).max() + 1e-9)
            gain = 10 ** ((0.0 if stressed else rng.uniform(-9, -4)) / 20)
            seg[c:] += vow * gain * _ramp(v, int(rng.uniform(10, 25) * ms), int(rng.uniform(30, 60) * ms))
            end = min(pos + n, len(out))
            out[pos:end] += seg[:end - pos]
            pos += n + int(rng.uniform(0, 30) * ms)
            if pos >= n_total:
                break
        pos += int((0.2 + 1.3 * rng.beta(1.5, 2.5)) * rate)  # pause 0.2-1.5 s, mean ~0.7 s
    out = out[:n_total]
    T = n_total // rates.SAMPLES_PER_FRAME
    fr = out[:T * rates.SAMPLES_PER_FRAME].reshape(T, -1)
    rms = np.sqrt((fr ** 2).mean(1))
    active = rms[rms > 1e-6]
    level = np.percentile(active, 90) if active.size else 1.0
    out *= 10 ** (rng.uniform(-22, -14) / 20) / max(level, 1e-9)
    out += rng.normal(0, 10 ** (-65 / 20), n_total)
    return np.clip(out, -0.99, 0.99).astype(np.float32)


# ==== espeak-ng ====================================================================================================

WORDS = (
    "the a this that we you they people time year way day thing man world life hand part child eye woman place work "
    "week case point number group problem fact idea water money story music morning answer question family country "
    "system program city river mountain table window garden house school market letter picture reason moment "
    "really always never often maybe quickly slowly together almost today tomorrow yesterday here there now "
    "think know want give take make find tell ask feel become leave call keep begin seem help show hear play run "
    "move live believe bring happen write provide sit stand lose pay meet include continue learn change lead "
    "understand watch follow stop create speak read spend grow open walk win offer remember love consider appear "
    "good new first last long great little own other old right big high different small large next early young "
    "important few public bad same able honest simple clear strong happy ready certain whole free real best "
    "and but or because if when while although so then also very just only even still already again"
).split()
VOICES = ("en-us", "en", "en-gb-x-rp", "en-gb-scotland", "en-029", "en-gb-x-gbclan", "en-gb-x-gbcwmd")
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5")


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def tts_voice(speaker_id: int, seed: int = 0) -> dict[str, str | int]:
    """A deterministic espeak-ng voice for a speaker: voice+variant, rate (wpm) and pitch (0-99)."""
    rng = np.random.default_rng([int(seed), int(speaker_id), 15485863])
    return {"voice": f"{VOICES[int(rng.integers(len(VOICES)))]}+{VARIANTS[int(rng.integers(len(VARIANTS)))]}",
            "rate": int(rng.integers(135, 186)), "pitch": int(rng.integers(30, 71))}


def _sentence(rng: np.random.Generator) -> str:
    n = int(rng.integers(4, 15))
    words = [WORDS[int(i)] for i in rng.integers(len(WORDS), size=n)]
    if n > 7 and rng.random() < 0.5:
        words[int(rng.integers(3, n - 2))] += ","
    return " ".join(words).capitalize() + str(rng.choice([".", ".", ".", "?", "!"]))


def tts_speech(seconds: float, voice: dict[str, str | int], rng: np.random.Generator) -> np.ndarray:
    """espeak-ng speech of random sentences with 0.2-1.2 s breaks, at the model rate (float32), cut to ``seconds``."""
    if not espeak_available():
        raise RuntimeError("espeak-ng not found on PATH; install it (apt-get install espeak-ng) or drop --tts")
    n_words = int(seconds * int(voice["rate"]) / 60 * 0.85) + 4
    parts, count = [], 0
    while count < n_words:
        s = _sentence(rng)
        count += len(s.split())
        parts.append(f'{s} <break time="{int(rng.uniform(200, 1200))}ms"/>')
    ssml = "<speak>" + " ".join(parts) + "</speak>"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tts.wav"
        cmd = ["espeak-ng", "-m", "-v", str(voice["voice"]), "-s", str(voice["rate"]), "-p", str(voice["pitch"]),
               "-w", str(path), ssml]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0 or not path.is_file():
            raise RuntimeError(f"espeak-ng failed (voice {voice['voice']}): {res.stderr.strip()}")
        x, _ = load_audio(path)
    x = x[:int(seconds * SR)] * 10 ** (rng.uniform(-4, 2) / 20)
    return np.clip(x, -0.99, 0.99).astype(np.float32)


# ==== sequences ======================================================================================================

@dataclass
class Plan:
    """One sequence to write."""

    name: str
    source: str  # 'procedural' | 'tts' | 'file'
    speaker: int
    seconds: float
    index: int
    path: Path | None = None  # source file (for 'file')
    offset_s: float = 0.0


def quantize(x: np.ndarray) -> np.ndarray:
    """float -> int16 exactly as it will sit in the wav."""
    return np.round(np.clip(np.asarray(x, np.float64), -1.0, 32767 / 32768) * 32768).astype(np.int16)


def sequence_arrays(wave_i16: np.ndarray, style: SpeakerStyle, rng: np.random.Generator
                    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """int16 samples at 24 kHz -> (SAM 3D Body stacked dict for the npz, the law's signals)."""
    wave = wave_i16.astype(np.float32) / 32768.0  # what models.audio.load_audio returns for this wav
    desc = audio_descriptors(wave, SR)
    motion, sig = apply_law(desc, style, rng)
    const = style.session_constants(rng)
    d = layout.to_sam3d(motion, const)
    d.pop("motion")
    T = motion.shape[0]
    d["pred_cam_t"] = (const.pred_cam_t[None] + rng.normal(0.0, CAM_JITTER_M, (T, 3))).astype(np.float32)
    _, X = forward_kinematics(d["mhr_model_params"], style.bone_offsets)  # (T, 127, 3) native cm
    d["pred_joint_coords"] = (X @ F_CAM.T / 100.0).astype(np.float32)
    d["valid"] = np.ones(T, bool)
    d["speaker"] = np.array(style.speaker_id, np.int64)
    d["law_version"] = np.array(LAW_VERSION)
    return d, sig


def plan_sequences(n_speakers: int, minutes: float, seq_seconds: float, tts: bool, audio_dir: Path | None
                   ) -> list[Plan]:
    """Files from ``audio_dir`` first (up to the budget), the rest synthetic (half espeak-ng with ``tts``)."""
    budget = minutes * 60.0
    plans: list[Plan] = []
    used = 0.0
    if audio_dir is not None:
        files = sorted(p for p in audio_dir.rglob("*") if p.suffix.lower() in (".wav", ".flac", ".ogg"))
        if not files:
            raise SystemExit(f"--audio-dir {audio_dir}: no .wav/.flac/.ogg files found; point it at a folder of audio")
        import soundfile as sf

        for fi, f in enumerate(files):
            try:
                dur = sf.info(str(f)).duration
            except Exception as e:
                raise SystemExit(f"{f}: cannot read audio header ({e}); remove the file or convert it to WAV") from e
            off = 0.0
            while dur - off >= min(MIN_FILE_PIECE_S, dur) and used < budget and dur - off > 0.5:
                sec = min(seq_seconds, dur - off, budget - used)
                plans.append(Plan(f"file_s{fi % n_speakers:02d}_{len(plans):05d}", "file", fi % n_speakers, sec,
                                  len(plans), f, off))
                used += sec
                off += sec
            if used >= budget:
                break
    rest = budget - used
    n = math.ceil(rest / seq_seconds - 1e-9) if rest > 0.5 else 0
    for i in range(n):
        sec = min(seq_seconds, rest - i * seq_seconds)
        # with --tts, sources alternate and each speaker gets both (speaker = i // 2), else speakers round robin
        src = "tts" if (tts and i % 2 == 1) else "procedural"
        spk = (i // 2 if tts else i) % n_speakers
        k = len(plans)
        plans.append(Plan(f"{'tts' if src == 'tts' else 'proc'}_s{spk:02d}_{k:05d}", src, spk, sec, k))
    return plans


def make_audio(plan: Plan, seed: int, rng: np.random.Generator) -> np.ndarray:
    if plan.source == "procedural":
        return procedural_speech(plan.seconds, Voice.from_seed(plan.speaker, seed), rng)
    if plan.source == "tts":
        return tts_speech(plan.seconds, tts_voice(plan.speaker, seed), rng)
    x, _ = load_audio(plan.path)
    a = int(plan.offset_s * SR)
    return x[a:a + int(plan.seconds * SR)]


def write_sequence(out: Path, plan: Plan, seed: int, styles: dict[int, SpeakerStyle]) -> float:
    """Write NAME.npz + NAME.wav for one plan; returns the seconds written."""
    import soundfile as sf

    rng = np.random.default_rng([int(seed), 1, plan.index])
    wave = quantize(make_audio(plan, seed, rng))
    T = rates.n_frames(len(wave))
    wave = wave[:T * rates.SAMPLES_PER_FRAME]  # whole frames only: wav and npz have the same length
    d, _ = sequence_arrays(wave, styles[plan.speaker], np.random.default_rng([int(seed), 2, plan.index]))
    np.savez_compressed(out / f"{plan.name}.npz", **d)
    sf.write(str(out / f"{plan.name}.wav"), wave, SR, subtype="PCM_16")
    return T / rates.MOTION_FPS


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m train.synth", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="output folder (created)")
    ap.add_argument("--speakers", type=int, default=4, help="number of synthetic speakers (styles)")
    ap.add_argument("--minutes", type=float, default=20.0, help="total minutes to write")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--audio-dir", type=Path, default=None,
                    help="folder of wav/flac files, used first and cut into sequences")
    ap.add_argument("--tts", action="store_true", help="make half of the synthetic audio with espeak-ng")
    ap.add_argument("--seq-seconds", type=float, default=60.0, help="length of one sequence")
    a = ap.parse_args(argv)
    if a.seed < 0:
        ap.error("--seed must be >= 0")
    if a.speakers < 1:
        ap.error("--speakers must be >= 1")
    if a.minutes <= 0 or a.seq_seconds < 1:
        ap.error("--minutes must be > 0 and --seq-seconds >= 1")
    if a.audio_dir is not None and not a.audio_dir.is_dir():
        ap.error(f"--audio-dir {a.audio_dir}: not a folder")
    tts = a.tts
    if tts and not espeak_available():
        print("espeak-ng not found on PATH (apt-get install espeak-ng); --tts ignored, using procedural speech only",
              file=sys.stderr)
        tts = False
    from tqdm import tqdm

    a.out.mkdir(parents=True, exist_ok=True)
    plans = plan_sequences(a.speakers, a.minutes, a.seq_seconds, tts, a.audio_dir)
    styles = {s: SpeakerStyle.from_seed(s, a.seed) for s in range(a.speakers)}
    per_source: dict[str, float] = {}
    entries = []
    for p in tqdm(plans, desc="synth", unit="seq"):
        sec = write_sequence(a.out, p, a.seed, styles)
        per_source[p.source] = per_source.get(p.source, 0.0) + sec
        entries.append({"name": p.name, "source": p.source, "speaker": p.speaker, "seconds": round(sec, 3),
                        **({"file": str(p.path), "offset_s": p.offset_s} if p.path else {})})
    manifest = {"law_version": LAW_VERSION, "lookahead_frames": LOOKAHEAD_FRAMES, "seed": a.seed,
                "speakers": a.speakers, "fps": rates.MOTION_FPS, "sample_rate": SR, "sequences": entries,
                "styles": {s: {k: v for k, v in vars(st).items() if not isinstance(v, np.ndarray)}
                           for s, st in styles.items()}}
    (a.out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    # the loader's speaker table (ROOT/speakers.json): integer ids in the npz index this list
    (a.out / "speakers.json").write_text(json.dumps([f"synth_s{s:02d}" for s in range(a.speakers)]))
    total = sum(per_source.values()) / 60
    src = ", ".join(f"{k} {v / 60:.1f} min" for k, v in sorted(per_source.items()))
    print(f"wrote {len(plans)} sequences, {total:.1f} min, {a.speakers} speakers ({src}) to {a.out} "
          f"[{LAW_VERSION}, look-ahead {LOOKAHEAD_FRAMES} frames]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
