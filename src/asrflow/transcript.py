"""The one result type every backend returns: Transcript -> Segment -> Word."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import NamedTuple


class Draft(NamedTuple):
    """A live hypothesis (Transcriber.draft): its text, and each of its words' probability (the text split at
    spaces) when asked for and the backend gives them, else None."""

    text: str
    probabilities: list[float] | None = None


@dataclass(frozen=True)
class Word:
    start: float
    end: float
    word: str
    probability: float | None = None
    speaker: str | None = None  # diarize=True


@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    text: str
    words: list[Word] = field(default_factory=list)
    language: str | None = None  # the segment's own (multilingual=True), else the transcript's
    language_probability: float | None = None
    speaker: str | None = None  # diarize=True (a speaker label) or channels="split" (the channel's)

    @classmethod
    def from_dict(cls, s: dict) -> Segment:
        """A segment as to_dict wrote it, or as a client sent it: each value checked, an error naming what is wrong."""
        words = s.get("words") or []
        if not isinstance(words, list):
            raise TypeError("a segment's words must be a list.")
        return cls(
            _seconds(s["start"], "start"),
            _seconds(s["end"], "end"),
            _checked(s["text"], str, "text"),
            [
                Word(
                    _seconds(w["start"], "start"),
                    _seconds(w["end"], "end"),
                    _checked(w["word"], str, "word"),
                    _checked(w.get("probability"), float, "probability"),
                    _checked(w.get("speaker"), str, "speaker"),
                )
                for w in words
            ],
            _checked(s.get("language"), str, "language"),
            _checked(s.get("language_probability"), float, "language_probability"),
            _checked(s.get("speaker"), str, "speaker"),
        )


MAX_SECONDS = 1e7  # 115 days: any time beyond is not a recording's


def _seconds(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= MAX_SECONDS:
        raise ValueError(f"{name} must be a number of seconds from 0 to {MAX_SECONDS:g}, not {str(value)[:40]!r}.")
    return float(value)


def _checked(value, kind: type, name: str):
    """`value` if it is None or of `kind` (a float: any finite number), else an error naming it."""
    if value is None:
        return None
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, not {str(value)[:40]!r}.")
        return float(value)
    if not isinstance(value, kind):
        raise TypeError(f"{name} must be {kind.__name__}, not {type(value).__name__}.")
    return value


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str | None
    language_probability: float | None
    duration: float
    segments: list[Segment] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self, **kwargs) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, **kwargs)

    @classmethod
    def from_dict(cls, data: dict) -> Transcript:
        segments = data.get("segments") or []
        if not isinstance(segments, list):
            raise TypeError("segments must be a list.")
        return cls(
            text=_checked(data["text"], str, "text"),
            language=_checked(data.get("language"), str, "language"),
            language_probability=_checked(data.get("language_probability"), float, "language_probability"),
            duration=_seconds(data.get("duration", 0.0), "duration"),
            segments=[Segment.from_dict(s) for s in segments],
        )

    @classmethod
    def from_json(cls, text: str) -> Transcript:
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_segments(cls, segments: list[Segment], language, language_probability, duration) -> Transcript:
        text = " ".join(s.text.strip() for s in segments if s.text.strip())
        return cls(text, language, language_probability, duration, list(segments))


@dataclass
class SegmentStream:
    """A transcript as it is decoded: an iterator of segments, with what is known before the first."""

    segments: Iterator[Segment]
    language: str | None
    language_probability: float | None
    duration: float

    def __iter__(self) -> Iterator[Segment]:
        """The segments. `self.segments` also holds None after each window (or batch) of work that completed no
        segment (diarization's labels come at the end; a batch may finish none): a server's scheduler takes it a
        step at a time, so that no request holds the model longer than one window's work."""
        return (segment for segment in self.segments if segment is not None)

    def transcript(self, segments: list[Segment]) -> Transcript:
        return Transcript.from_segments(segments, self.language, self.language_probability, self.duration)

    def collect(self, progress: Callable[[Segment], None] | None = None) -> Transcript:
        """Decode to the end; `progress(segment)` hears of each segment as it comes."""
        segments = []
        for segment in self:
            segments.append(segment)
            if progress:
                progress(segment)
        return self.transcript(segments)


def fit_segment(start: float, end: float, text: str, words: list[Word], previous_end: float = 0.0) -> Segment:
    """A segment that starts after the previous one ends, with its words inside it.

    Decoders leave small inconsistencies at window edges (a word ending after its segment, a segment
    starting before the last one ended); with words, the segment spans exactly its first to last word.
    """
    fitted, floor = [], previous_end
    for w in words:
        w_start = round(max(w.start, floor), 3)
        w_end = round(max(w.end, w_start), 3)
        fitted.append(replace(w, start=w_start, end=w_end))
        floor = w_end
    if fitted:
        return Segment(fitted[0].start, fitted[-1].end, text, fitted)
    start = round(max(start, previous_end), 3)
    return Segment(start, round(max(end, start), 3), text, [])
