"""The built-in demo input: 34 s of English speech made by this project with espeak-ng (realtime/assets), so the
main command runs on any machine with no microphone. Falls back to procedural speech if the file is missing."""
from __future__ import annotations

from pathlib import Path

import numpy as np

DEMO_FILE = Path(__file__).parent / "assets" / "demo_speech.flac"


def demo_audio() -> np.ndarray:
    """Demo speech as float32 mono at the model rate (24 kHz)."""
    from models.audio import load_audio

    if DEMO_FILE.is_file():
        return load_audio(DEMO_FILE)[0]
    from realtime.sources import synthetic_speech

    return synthetic_speech()
