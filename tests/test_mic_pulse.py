"""A real microphone path through a virtual PulseAudio microphone (null sink monitor) and PortAudio.

A private pulseaudio daemon gets a null sink; `python -m realtime.mic --mic` (with the fake driver) records its
monitor source while `paplay` plays a tone into the sink. The fake driver's jaw channel follows loudness, so the
saved motion shows whether the tone went all the way through. Marked `system`: skipped without pulseaudio, failing
under CI=true.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from models import layout
from tests.conftest import REPO, require_tool

pytestmark = pytest.mark.system

CAPTURE = """
import sys
from realtime.mic import main
from tests.fake_driver import FakeDriver
sys.exit(main(["--mic", "--no-server", "--duration", sys.argv[2], "--out", sys.argv[1]], driver=FakeDriver()))
"""


def _wait_for(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise TimeoutError(what)


def test_virtual_microphone_through_pulseaudio(tmp_path: Path):
    pulseaudio = require_tool("pulseaudio", "virtual microphone test")
    paplay = require_tool("paplay", "virtual microphone test (pulseaudio-utils)")
    sock = tmp_path / "pulse.sock"
    env = {**os.environ, "HOME": str(tmp_path), "XDG_RUNTIME_DIR": str(tmp_path), "PULSE_SERVER": f"unix:{sock}"}
    daemon = subprocess.Popen(
        [pulseaudio, "-n", "--daemonize=no", "--exit-idle-time=-1", "--use-pid-file=no", "--disallow-exit",
         f"--load=module-native-protocol-unix socket={sock} auth-anonymous=1",
         "--load=module-null-sink sink_name=vsink rate=16000 channels=1"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    capture = None
    try:
        _wait_for(sock.exists, 10, "pulseaudio did not create its socket")
        tone = tmp_path / "tone.wav"
        t = np.arange(int(1.5 * 16_000)) / 16_000
        sf.write(tone, 0.5 * np.sin(2 * np.pi * 440 * t), 16_000, subtype="PCM_16")
        out = tmp_path / "mic.npz"
        cap_env = {**env, "PULSE_SOURCE": "vsink.monitor", "PYTHONPATH": str(REPO)}
        capture = subprocess.Popen([sys.executable, "-c", CAPTURE, str(out), "5"], cwd=REPO, env=cap_env,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   start_new_session=True)
        lines: list[str] = []
        deadline = time.monotonic() + 60  # the first import of the model code can be slow on a busy machine
        while time.monotonic() < deadline:
            line = capture.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("input: mic"):
                break
        assert any(x.startswith("input: mic") for x in lines), "".join(lines)
        time.sleep(2.0)  # PortAudio's first callback comes ~1.3 s after the stream opens
        subprocess.run([paplay, "-d", "vsink", str(tone)], env=env, timeout=15, check=True)
        rest, _ = capture.communicate(timeout=30)
        assert capture.returncode == 0, "".join(lines) + rest
    finally:
        for p in (capture, daemon):
            if p is not None and p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(10)
    with np.load(out) as d:
        idx, jaw = d["frame_index"], d["motion"][:, layout.JAW.start]
    assert list(idx) == list(range(len(idx))) and len(idx) == 150  # 5 s of microphone audio, contiguous
    loud = int((jaw > 0.3).sum())  # the fake driver's jaw = 0.4 * min(1, 5 * rms): the tone's frames
    assert 25 <= loud <= 50, f"{loud} loud frames; expected the 1.5 s tone (45 frames)"
    assert int((jaw < 0.05).sum()) >= 30  # and silence around it
