"""Languages per speech region (multilingual=True), for both backends: which one a segment has, and the file's."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace

from asrflow.audio import SAMPLE_RATE
from asrflow.options import TranscribeOptions
from asrflow.transcript import Segment
from asrflow.vad import merged, snapped, speech_edges


def dominant(detected: list[tuple[str, float]], regions: list[tuple[int, int]]) -> tuple[str | None, float | None]:
    """The language spoken longest, and its mean probability over its regions."""
    seconds: dict[str, float] = {}
    for (code, _), (a, b) in zip(detected, regions):
        seconds[code] = seconds.get(code, 0.0) + (b - a)
    if not seconds:
        return None, None
    code = max(seconds, key=seconds.get)
    chances = [p for c, p in detected if c == code]
    return code, round(float(sum(chances) / len(chances)), 4)


def within(segment: Segment, low: float, high: float) -> Segment:
    """The segment, and its words, inside [low, high] seconds."""

    def inside(t: float) -> float:
        return round(min(max(t, low), high), 3)

    words = [replace(w, start=inside(w.start), end=inside(w.end)) for w in segment.words]
    return replace(segment, start=inside(segment.start), end=inside(segment.end), words=words)


def chance_at(seconds: float, run: list) -> float:
    """The detection probability of the region (of `run`: ((start, end), (language, probability))) at `seconds`."""
    at = seconds * SAMPLE_RATE
    (_, (_, probability)) = min(
        run, key=lambda r: 0 if r[0][0] - 0.5 * SAMPLE_RATE <= at < r[0][1] else abs(r[0][0] - at)
    )
    return round(float(probability), 4)


def by_language(
    regions: list[tuple[int, int]],
    detected: list[tuple[str, float]],
    options: TranscribeOptions,
    decode: Callable[[str, list[tuple[int, int]]], Iterable[Segment]],
    length: int,
) -> Iterator[Segment]:
    """Runs of consecutive regions of one language, each decoded by `decode(language, spans)` (its regions joined
    up to chunk_length_s, pauses kept: sample ranges); its segments tagged with the language and their region's
    probability, their bounds snapped to the regions' pauses (`length`: the audio's samples). A segment stays
    within its run's regions: Whisper's last timestamp can overshoot the speech it was given, into the next run's.
    """

    def tagged() -> Iterator[Segment]:
        for code, run in itertools.groupby(zip(regions, detected), key=lambda pair: pair[1][0]):
            run = list(run)
            low, high = run[0][0][0] / SAMPLE_RATE, run[-1][0][1] / SAMPLE_RATE
            for segment in decode(code, merged([region for region, _ in run], options.chunk_length_s)):
                if segment is None:  # a step of work without a segment (SegmentStream)
                    yield segment
                    continue
                segment = within(segment, low, high)
                yield replace(segment, language=code, language_probability=chance_at(segment.start, run))

    return snapped(tagged(), speech_edges(regions, length, options.vad_speech_pad_ms))
