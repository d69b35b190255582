"""The streaming engine: model-rate audio -> causal features -> generator step (carried state) -> VQ decode ->
MHR frames, for many sessions sharing one model.

Per session, nothing is ever recomputed: the feature extractor, the generator (Mamba conv/ssm states, conv tails)
and the decoders carry their state. Output frame k needs audio up to frame k + L (generator look-ahead) and code
k + R (decoder right context), so it leaves (L + R) frames after its own audio, plus the N-frame emission chunk.

Chunks: frames are emitted N at a time. Each decode window holds the 4 frames before the new ones (the overlap)
plus the decoder's receptive field; the overlap, decoded again, is compared with what was already produced and
any mismatch is faded out over the new frames. With exact carried context the mismatch is float rounding (the
fade is skipped below 1e-4 and ``Session.seam_max`` records the largest seen), so the stream is seamless; the fade
matters if a decoder backend changes mid-stream. The global rotation is regressed per frame (no decoder) and kept
continuous on the rotation group (equivalent Euler branch nearest the previous frame). ``train.infer`` runs exactly
this code on a file.
"""
from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from models import layout, rates
from models.features import FeatureState, LogMelFeatures
from models.generator import GeneratorState, rot6d_to_euler
from models.layout import SessionConstants

log = logging.getLogger("realtime")
OVERLAP = 4
_ids = itertools.count()


@dataclass
class Frame:
    index: int
    time: float  # audio time (s) of the end of the frame's span
    params: np.ndarray  # (320,) float32


def envelope_jaw(pcm_frame: np.ndarray, prev: float) -> float:
    """Jaw opening (rad) from one frame of audio: loudness in dB mapped to JAW_OPEN_RANGE, with attack/release."""
    rms = float(np.sqrt(np.mean(np.square(pcm_frame, dtype=np.float64)) + 1e-12))
    db = 20 * np.log10(rms + 1e-9)
    lo, hi = layout.JAW_OPEN_RANGE
    target = lo + (hi - lo) * float(np.clip((db + 45.0) / 30.0, 0.0, 1.0))
    a = 0.6 if target > prev else 0.3  # fast attack, slower release (frame-rate one-pole)
    return prev + a * (target - prev)


@dataclass
class _PartStream:
    codes: list = field(default_factory=list)  # (D,) code vectors, all so far (trimmed to a tail)
    first_code: int = 0  # global index of codes[0]
    decoded: int = 0  # frames decoded and queued
    tail: np.ndarray | None = None  # the last OVERLAP decoded frames (for the overlap crossfade)


class Session:
    """One speaker stream. Use ``Driver.new_session``; ``push``/``flush`` run the shared driver."""

    def __init__(self, driver: Driver, speaker: int | None, constants: SessionConstants | None):
        self.driver = driver
        self.id = f"s{next(_ids)}"
        self.constants = constants or driver.bundle.default_constants()
        self.set_speaker(speaker)
        self.reset()

    # ---- control ---------------------------------------------------------------------------------------------
    def set_speaker(self, speaker: int | None) -> None:
        n = self.driver.n_speakers
        if speaker is None or speaker < 0:
            self.speaker = n  # the dedicated UNKNOWN id
        elif speaker > n:
            raise ValueError(f"speaker {speaker} out of range: this model knows speakers 0..{n - 1} "
                             f"({n} = unknown); use --speaker -1 for unknown")
        else:
            self.speaker = int(speaker)

    def reset(self) -> None:
        d = self.driver
        self.feat_state: FeatureState = d.features.init_state(1)
        self.gen_state: GeneratorState = d.generator.init_state(1)
        self.gen_out = 0  # generator outputs so far (output t = motion frame t - L)
        self.parts = {p: _PartStream() for p in d.parts}
        self.queues: dict[str, list[np.ndarray]] = {p: [] for p in d.parts}
        self.glob: list[np.ndarray] = []  # (7,) global_rot + contact per frame
        self.env: list[float] = []  # jaw from envelope per audio frame not yet emitted (env[0] = frame `emitted`)
        self.env_prev = 0.0
        self.audio_pending = np.zeros(0, np.float32)  # samples not yet making a whole frame (envelope)
        self.samples = 0
        self.emitted = 0
        self.seam_max = 0.0  # largest overlap mismatch seen (0 with exact carried context)
        from realtime.smoothing import OneEuroState

        self.smooth_state = OneEuroState()
        self.prev_euler: np.ndarray | None = None
        self.base = layout.constant_frame(self.constants)
        self.flushed = False

    # ---- API -------------------------------------------------------------------------------------------------
    def push(self, pcm: np.ndarray) -> list[Frame]:
        return self.driver.process([(self, pcm)])[0]

    def flush(self) -> list[Frame]:
        return self.driver.flush(self)

    @property
    def frames_available(self) -> int:
        return min([len(q) for q in self.queues.values()] + [len(self.glob)])


class Driver:
    """Holds the model, shared by every session of the process; ``process`` batches their generator steps."""

    def __init__(self, bundle, chunk_frames: int = 1, face_mode: str = "auto", backend: str = "auto",
                 decode: str = "codes", threads: int | None = None, smooth: float | dict | None = None):
        from realtime.decoders import choose_decoders

        if threads:
            torch.set_num_threads(threads)
        if bundle.generator is None:
            raise ValueError(f"{bundle.root}: bundle has no generator")
        self.bundle = bundle
        self.generator = choose_generator(bundle, backend)
        self.cfg = self.generator.config
        self.parts = tuple(p for p in self.cfg.parts if p in bundle.vqs)
        self.n_speakers = self.cfg.n_speakers
        self.features = LogMelFeatures()
        self.decoders = choose_decoders(bundle, backend)
        self.chunk_frames = max(1, int(chunk_frames))
        self.lookahead = self.cfg.lookahead
        self.rf = {p: self.decoders.receptive_field(p) for p in self.parts}
        self.decoder_right = max((r for _, r in self.rf.values()), default=0)
        if decode not in ("codes", "latents"):
            raise ValueError(f"decode must be 'codes' or 'latents', got {decode!r}")
        self.decode_mode = decode
        has_face = "face" in self.parts
        if face_mode == "auto":
            face_mode = "model" if has_face else "envelope"
        if face_mode == "model" and not has_face:
            reason = bundle.skipped_parts.get("face", "not trained")
            raise ValueError(f"--face model: this checkpoint has no face part ({reason}); use --face envelope or off")
        if face_mode not in ("model", "envelope", "off"):
            raise ValueError(f"face mode must be model|envelope|off, got {face_mode!r}")
        self.face_mode = face_mode
        self.smoother = None
        if smooth is None:  # the checkpoint's recommended runtime smoothing (manifest "runtime"; 0/absent = off)
            smooth = bundle.manifest.get("runtime", {}).get("smooth_hz", 0.0)
        if smooth:
            from realtime.smoothing import OneEuro

            self.smoother = OneEuro(min_cutoff=smooth)
        if not has_face:
            log.info("face: checkpoint has no face part (%s); jaw driven by %s",
                     bundle.skipped_parts.get("face", "absent"), face_mode)

    # ---- sessions --------------------------------------------------------------------------------------------
    def new_session(self, speaker: int | None = None, constants: SessionConstants | None = None) -> Session:
        return Session(self, speaker, constants)

    @property
    def backends(self) -> dict[str, str]:
        return {"generator": getattr(self.generator, "name", "pytorch"), "decoders": self.decoders.name}

    def budget(self) -> dict:
        n = self.chunk_frames + self.lookahead + self.decoder_right
        return {"chunk_frames": self.chunk_frames, "lookahead_frames": self.lookahead,
                "decoder_right_frames": self.decoder_right, "frames": n, "ms": n * rates.FRAME_MS,
                "feature_future_ms": 0.0, "fps": rates.MOTION_FPS, "face_mode": self.face_mode,
                "decoders": self.decoders.name, "generator": getattr(self.generator, "name", "pytorch"),
                "decode": self.decode_mode, "smooth_hz": self.smoother.spec if self.smoother else 0.0}

    # ---- the step --------------------------------------------------------------------------------------------
    @torch.no_grad()
    def process(self, items: list[tuple[Session, np.ndarray]]) -> list[list[Frame]]:
        feats = []
        for s, pcm in items:
            x = np.asarray(pcm, np.float32).reshape(-1)
            if not np.isfinite(x).all():
                raise ValueError("pcm contains NaN/Inf: sanitise it first (models.audio.sanitize)")
            feats.append(self._features(s, x))
        groups: dict[int, list[int]] = {}
        for i, f in enumerate(feats):
            if f.shape[1]:
                groups.setdefault(f.shape[1], []).append(i)
        for idx in groups.values():  # one batched generator step per chunk length
            self._generate([items[i][0] for i in idx], torch.cat([feats[i] for i in idx], 0))
        return [self._emit(s, final=False) for s, _ in items]

    def _features(self, s: Session, x: np.ndarray) -> torch.Tensor:
        s.samples += len(x)
        buf = np.concatenate([s.audio_pending, x])
        n = len(buf) // rates.SAMPLES_PER_FRAME
        for k in range(n):  # envelope per whole frame, same framing as the features
            s.env_prev = envelope_jaw(buf[k * rates.SAMPLES_PER_FRAME:(k + 1) * rates.SAMPLES_PER_FRAME], s.env_prev)
            s.env.append(s.env_prev)
        s.audio_pending = buf[n * rates.SAMPLES_PER_FRAME:]
        f, s.feat_state = self.features(torch.from_numpy(x)[None], s.feat_state)
        return f

    def _generate(self, sessions: list[Session], audio: torch.Tensor) -> None:
        B = len(sessions)
        spk = torch.tensor([s.speaker for s in sessions], dtype=torch.long)
        states = [s.gen_state for s in sessions]
        if B == 1:
            state = states[0]
        else:
            state = states[0].with_tensors([torch.cat(ts, 0) for ts in zip(*[st.tensors() for st in states])])
        out, new = self.generator.step(audio, spk, state)
        for b, s in enumerate(sessions):
            s.gen_state = new if B == 1 else new.with_tensors([t[b:b + 1] for t in new.tensors()])
        T = audio.shape[1]
        euler = rot6d_to_euler(out.global_rot6d).numpy()  # (B, T, 3)
        contact = (out.contact > 0).float().numpy()
        codes = {p: self._codes(p, out) for p in self.parts}
        for b, s in enumerate(sessions):
            keep = [t for t in range(T) if s.gen_out + t >= self.lookahead]  # outputs before L are not frames
            s.gen_out += T
            for t in keep:
                s.glob.append(np.concatenate([euler[b, t], contact[b, t]]))
                for p in self.parts:
                    s.parts[p].codes.append(codes[p][b, t])
            self._decode(s, final=False)

    def _codes(self, part: str, out) -> np.ndarray:
        vq = self.bundle.vqs[part]
        if self.decode_mode == "latents":
            return out.latents[part].numpy()
        if part in out.logits and part != "face":
            idx = out.logits[part].argmax(-1)  # MambaTalk: classification for body and hands
        else:
            lat = out.latents[part]  # face: nearest code to the regressed latent (MambaTalk cf = 0)
            idx = vq.quantizer.nearest(lat.reshape(-1, lat.shape[-1])).reshape(lat.shape[:-1])
        return vq.quantizer.lookup(idx).numpy()

    def _decode(self, s: Session, final: bool) -> None:
        for p in self.parts:
            ps = s.parts[p]
            left, right = self.rf[p]
            n_codes = ps.first_code + len(ps.codes)
            stop = n_codes if final else n_codes - right  # frames decodable now
            if stop <= ps.decoded:
                continue
            a, b = ps.decoded, stop
            w0 = max(0, a - OVERLAP - left)
            w1 = n_codes if final else b + right
            window = np.stack(ps.codes[w0 - ps.first_code:w1 - ps.first_code])[None]
            x = self.decoders.decode(p, window)[0]  # (W, C) normalised
            mean, std = self.bundle.norm[p]
            x = x * std.numpy() + mean.numpy()
            fresh = x[a - w0:b - w0]
            o0 = max(w0, a - OVERLAP)
            if ps.tail is not None and a > o0:  # the overlap, decoded again: crossfade any mismatch away
                redecoded = x[o0 - w0:a - w0]
                delta = ps.tail[-1] - redecoded[-1]
                s.seam_max = max(s.seam_max, float(np.abs(delta).max()))
                if np.abs(delta).max() > 1e-4:
                    w = np.linspace(1.0, 0.0, len(fresh) + 2)[1:-1, None]
                    fresh = fresh + w * delta
            s.queues[p].extend(fresh)
            ps.tail = np.concatenate([ps.tail, fresh])[-OVERLAP:] if ps.tail is not None else fresh[-OVERLAP:]
            ps.decoded = b
            keep_from = max(0, b - OVERLAP - left - right)  # trim history: keep what future windows need
            if keep_from > ps.first_code:
                del ps.codes[:keep_from - ps.first_code]
                ps.first_code = keep_from

    def _emit(self, s: Session, final: bool, limit: int | None = None) -> list[Frame]:
        n = s.frames_available
        if limit is not None:
            n = min(n, limit - s.emitted)
        if not final:
            n -= n % self.chunk_frames  # whole chunks only
        frames: list[Frame] = []
        if n <= 0:
            return frames
        new = np.repeat(s.base[None], n, 0)
        for p in self.parts:
            new[:, layout.VARYING[p]] = np.stack(s.queues[p][:n])
            del s.queues[p][:n]
        glob = np.stack(s.glob[:n])
        del s.glob[:n]
        eul = glob[:, :3].astype(np.float64)
        prev = s.prev_euler if s.prev_euler is not None else eul[0]
        new[:, layout.GLOBAL_ROT] = _continuous_euler(prev, eul)
        new[:, layout.CONTACT] = glob[:, 3:]
        if "face" not in self.parts:
            if self.face_mode == "envelope":
                new[:, layout.JAW_OPEN] = s.env[:n]
        if self.smoother is not None:
            new, s.smooth_state = self.smoother(new, s.smooth_state)
        s.prev_euler = new[-1, layout.GLOBAL_ROT].astype(np.float64)
        for i in range(n):
            k = s.emitted + i
            frames.append(Frame(k, (k + 1) / rates.MOTION_FPS, new[i].astype(np.float32)))
        s.emitted += n
        del s.env[:n]  # nothing per frame is kept once emitted: memory stays flat for hours
        return frames

    @torch.no_grad()
    def flush(self, s: Session) -> list[Frame]:
        """End of stream: complete the partial frame with silence, run L more silent frames through the generator,
        flush the decoders, and emit every remaining frame of the real audio."""
        if s.flushed:
            return []
        total = -(-s.samples // rates.SAMPLES_PER_FRAME)  # frames of real audio (last one zero-padded)
        pad = (total * rates.SAMPLES_PER_FRAME - s.samples) + self.lookahead * rates.SAMPLES_PER_FRAME
        frames = []
        if pad:
            f = self._features(s, np.zeros(pad, np.float32))
            if f.shape[1]:
                self._generate([s], f)
        self._decode(s, final=True)
        frames += self._emit(s, final=True, limit=total)
        s.flushed = True
        return frames


def _continuous_euler(prev: np.ndarray, eul: np.ndarray) -> np.ndarray:
    """Pick, per frame, the Euler triple (of the two equivalent branches, +-2pi) closest to the previous frame."""
    out = np.empty_like(eul)
    p = prev
    for t in range(len(eul)):
        best, bd = None, np.inf
        e = eul[t]
        for c in (e, np.array([e[0] + np.pi, np.pi - e[1], e[2] + np.pi])):
            c = c + 2 * np.pi * np.round((p - c) / (2 * np.pi))
            d = np.abs(c - p).sum()
            if d < bd:
                best, bd = c, d
        out[t] = best
        p = best
    return out


def choose_generator(bundle, backend: str = "auto"):
    """'auto': the ONNX export of this very generator (``<bundle>/onnx``) when present, else PyTorch (logged)."""
    onnx_dir = Path(bundle.root) / "onnx"
    if backend in ("auto", "onnx") and (onnx_dir / "manifest.json").is_file():
        try:
            from exporters.onnx_runtime import OnnxGenerator

            gen = OnnxGenerator.load(onnx_dir, bundle=bundle, threads=1)  # per-frame graphs: 1 thread
            log.info("generator: ONNX Runtime step from %s", onnx_dir)
            return gen
        except Exception as e:  # noqa: BLE001 - fall back, loudly
            if backend == "onnx":
                raise
            log.warning("generator: ONNX step at %s unusable (%s); using PyTorch", onnx_dir, e)
    elif backend == "onnx":
        raise FileNotFoundError(f"{onnx_dir}/manifest.json: no ONNX export; run `python -m exporters.onnx "
                                f"--checkpoint {bundle.root} --generator`")
    log.info("generator: PyTorch")
    bundle.generator.name = "pytorch"
    return bundle.generator.eval()


def load_driver(checkpoint: str | Path | None = None, *, chunk_frames: int = 1, face_mode: str = "auto",
                backend: str = "auto", decode: str = "codes", threads: int | None = None,
                smooth: float | dict | None = None) -> Driver:
    """Load a bundle (None = the shipped demo) and build a driver."""
    from models.bundle import load_bundle

    bundle = load_bundle(checkpoint)
    return Driver(bundle, chunk_frames=chunk_frames, face_mode=face_mode, backend=backend, decode=decode,
                  threads=threads, smooth=smooth)
