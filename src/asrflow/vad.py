"""Voice activity detection: Silero VAD as faster-whisper ships it (an ONNX model, no download)."""

from __future__ import annotations

import numpy as np
from faster_whisper.vad import VadOptions, get_speech_timestamps

from asrflow.audio import SAMPLE_RATE


SLICE_SECONDS = 60  # Silero's cost grows with what it is given at once (180 MB for 10 minutes): a minute at a time


def speech_regions(audio: np.ndarray, max_seconds: float = 30.0, merge: bool = True) -> list[tuple[int, int]]:
    """Sample ranges that hold speech; neighbours are merged up to `max_seconds` to keep context (unless not
    `merge`: each stretch of speech between pauses of half a second by itself, e.g. to tell languages apart).
    Silero looks at a minute at a time, cut at the quietest moment near its end (audio up to a minute and a half
    is one slice)."""
    from asrflow.blocks import quiet_cut

    options = VadOptions(max_speech_duration_s=max_seconds, min_silence_duration_ms=500, speech_pad_ms=200)
    found: list[tuple[int, int]] = []
    start, size = 0, SLICE_SECONDS * SAMPLE_RATE
    while start < len(audio):
        stop = len(audio) if len(audio) - start <= 1.5 * size else start + quiet_cut(audio[start : start + size], size // 4)
        found += [(start + r["start"], start + r["end"]) for r in get_speech_timestamps(audio[start:stop], options)]
        start = stop
    return merged(found, max_seconds) if merge else found


def merged(regions: list[tuple[int, int]], max_seconds: float) -> list[tuple[int, int]]:
    """Consecutive regions joined (with the pauses between them) as long as the whole spans at most `max_seconds`."""
    joined: list[tuple[int, int]] = []
    for a, b in regions:
        if joined and b - joined[-1][0] <= max_seconds * SAMPLE_RATE:
            joined[-1] = (joined[-1][0], b)
        else:
            joined.append((a, b))
    return joined


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
