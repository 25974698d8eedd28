"""Voice activity detection: Silero VAD as faster-whisper ships it (an ONNX model, no download)."""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
from faster_whisper.vad import VadOptions, get_speech_timestamps

from asrflow.audio import SAMPLE_RATE
from asrflow.backends.workers import cores
from asrflow.options import TranscribeOptions
from asrflow.transcript import Segment

SLICE_SECONDS = 60  # Silero's cost grows with what it is given at once (180 MB for 10 minutes): a minute at a time
FRAME = SAMPLE_RATE // 20  # 50 ms: the loudness of audio is measured a frame at a time (quiet_cut)
SNAP_SECONDS = 1.0  # a segment bound this close to a pause (or to the first onset, the last offset) moves there


def vad_settings(options: TranscribeOptions, max_speech_s: float = float("inf")) -> VadOptions:
    """Silero's settings from the options (the one place they are read): vad_threshold, a pause of
    vad_min_silence_duration_ms ends a region, vad_speech_pad_ms kept on each side."""
    return VadOptions(
        threshold=options.vad_threshold,
        min_silence_duration_ms=options.vad_min_silence_duration_ms,
        speech_pad_ms=options.vad_speech_pad_ms,
        max_speech_duration_s=max_speech_s,
    )


def speech_regions(audio: np.ndarray, options: TranscribeOptions) -> list[tuple[int, int]]:
    """Sample ranges that hold speech, each stretch between pauses by itself (at most chunk_length_s; `merged`
    joins neighbours to keep context), as the options' VAD settings find them. Silero looks at a minute at a time,
    cut at the quietest moment near its end (audio up to a minute and a half is one slice); the slices are
    independent, so they are looked at on every core at once (Silero runs on one thread)."""
    settings = vad_settings(options, options.chunk_length_s)
    cuts, size = [0], SLICE_SECONDS * SAMPLE_RATE
    while cuts[-1] < len(audio):
        start = cuts[-1]
        cuts.append(
            len(audio)
            if len(audio) - start <= 1.5 * size
            else start + quiet_cut(audio[start : start + size], size // 4)
        )
    slices = list(itertools.pairwise(cuts))
    with ThreadPoolExecutor(min(len(slices), cores()) or 1) as pool:
        found = pool.map(lambda ab: get_speech_timestamps(audio[ab[0] : ab[1]], settings), slices)
        return [(start + r["start"], start + r["end"]) for (start, _), regions in zip(slices, found) for r in regions]


def merged(regions: list[tuple[int, int]], max_seconds: float) -> list[tuple[int, int]]:
    """Consecutive regions joined (with the pauses between them) as long as the whole spans at most `max_seconds`."""
    joined: list[tuple[int, int]] = []
    for a, b in regions:
        if joined and b - joined[-1][0] <= max_seconds * SAMPLE_RATE:
            joined[-1] = (joined[-1][0], b)
        else:
            joined.append((a, b))
    return joined


def speech_edges(spans: list[tuple[int, int]], length: int, pad_ms: int) -> list[tuple[float, float]]:
    """Where the speech of each span (`speech_regions`, in samples) starts and stops, in
    seconds: the padding (`pad_ms`) taken off, except where a span meets the audio's start or end, or meets
    another span (Silero splits a pause shorter than two pads between its neighbours)."""
    pad = pad_ms * SAMPLE_RATE // 1000
    before = [0] + [b for _, b in spans]  # where the span before each ends (the audio's start for the first)
    after = [a for a, _ in spans[1:]] + [length]
    return [
        ((a + pad if a != before[k] else a) / SAMPLE_RATE, (b - pad if b != after[k] else b) / SAMPLE_RATE)
        for k, (a, b) in enumerate(spans)
    ]


def snapped(
    segments: Iterable[Segment], edges: list[tuple[float, float]], tolerance: float = SNAP_SECONDS
) -> Iterator[Segment]:
    """Segments (in time order) whose bounds are moved to where speech starts and stops (`speech_edges`): the
    bound between two segments into the pause nearest it, the first start to the nearest onset, the last end to
    the nearest offset, each when it is within `tolerance` seconds. Whisper's timestamps (tiny.en's especially)
    often fall on a grid of whole seconds from the window's start, up to a second off the speech: on the bench's
    long audio the bounds were 0.29 s off on average and a fifth of them over half a second; snapped, 0.04 s
    and none (README, Use). A bound inside speech, with no pause near, stays where it is. The words at a moved
    bound move with it (word timestamps, aligned by attention, were 0.16 s off at segment bounds; snapped, 0.04)."""
    pauses = [(b, a) for (_, b), (a, _) in itertools.pairwise(edges)]
    middles = [(b + a) / 2 for b, a in pauses]
    previous = None
    for segment in segments:
        if segment is None:  # a step of work without a segment (SegmentStream): passed on
            yield segment
            continue
        if previous is None:
            segment = _moved(segment, start=_nearest([a for a, _ in edges], segment.start, tolerance))
        else:
            k = _nearest_index(middles, (previous.end + segment.start) / 2, tolerance)
            if k is not None and previous.start < pauses[k][0] and pauses[k][1] < segment.end:
                previous, segment = _moved(previous, end=pauses[k][0]), _moved(segment, start=pauses[k][1])
        if previous is not None:
            yield previous
        previous = segment
    if previous is not None:
        yield _moved(previous, end=_nearest([b for _, b in edges], previous.end, tolerance))


def _moved(segment: Segment, start: float | None = None, end: float | None = None) -> Segment:
    """The segment with new bounds, and its first word's start and last word's end with them (unless that would
    leave a word with no time)."""
    start = segment.start if start is None else round(start, 3)
    end = segment.end if end is None else round(end, 3)
    words = list(segment.words)
    if not start < end or (words and (start >= words[0].end or end <= words[-1].start)):
        return segment
    if words:
        words[0] = replace(words[0], start=start)
        words[-1] = replace(words[-1], end=end)
    return replace(segment, start=start, end=end, words=words)


def _nearest(values: list[float], t: float, tolerance: float) -> float | None:
    k = _nearest_index(values, t, tolerance)
    return None if k is None else values[k]


def _nearest_index(values: list[float], t: float, tolerance: float) -> int | None:
    """The index of the sorted value nearest `t`, if it is within `tolerance`."""
    k = bisect.bisect_left(values, t)
    near = min((i for i in (k - 1, k) if 0 <= i < len(values)), key=lambda i: abs(values[i] - t), default=None)
    return near if near is not None and abs(values[near] - t) <= tolerance else None


def quiet_cut(samples: np.ndarray, search: int) -> int:
    """The sample at the centre of the quietest half second within the last `search` samples."""
    tail = samples[len(samples) - search :]
    energy = np.square(tail[: len(tail) // FRAME * FRAME].reshape(-1, FRAME)).mean(axis=1)
    smoothed = np.convolve(energy, np.ones(10) / 10, mode="same")
    return len(samples) - search + int(np.argmin(smoothed)) * FRAME + FRAME // 2


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
