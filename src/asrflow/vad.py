"""Voice activity detection: Silero VAD as faster-whisper ships it (an ONNX model, no download)."""

from __future__ import annotations

import numpy as np
from faster_whisper.vad import VadOptions, get_speech_timestamps

from asrflow.audio import SAMPLE_RATE


def speech_regions(audio: np.ndarray, max_seconds: float = 30.0) -> list[tuple[int, int]]:
    """Sample ranges that hold speech; neighbours are merged up to `max_seconds` to keep context."""
    options = VadOptions(max_speech_duration_s=max_seconds, min_silence_duration_ms=500, speech_pad_ms=200)
    merged: list[tuple[int, int]] = []
    for r in get_speech_timestamps(audio, options):
        if merged and r["end"] - merged[-1][0] <= max_seconds * SAMPLE_RATE:
            merged[-1] = (merged[-1][0], r["end"])
        else:
            merged.append((r["start"], r["end"]))
    return merged


def is_silent(audio: np.ndarray, threshold: float = 0.002) -> bool:
    """True when no 30 ms frame is louder than about -54 dBFS: nothing for Whisper to hear.
    Looked at a minute at a time, stopping at the first loud frame (hours of audio cost no copy)."""
    frame = int(0.03 * SAMPLE_RATE)
    usable = len(audio) // frame * frame
    block = frame * 2000
    for start in range(0, usable, block):
        part = audio[start : min(start + block, usable)].reshape(-1, frame)
        if float(np.sqrt(np.mean(part**2, axis=1)).max()) >= threshold:
            return False
    return True
