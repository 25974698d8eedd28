"""The one result type every backend returns: Transcript -> Segment -> Word."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace


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
        return cls(
            s["start"],
            s["end"],
            s["text"],
            [Word(**w) for w in s.get("words") or []],
            s.get("language"),
            s.get("language_probability"),
            s.get("speaker"),
        )


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
        segments = [Segment.from_dict(s) for s in data.get("segments") or []]
        return cls(
            text=data["text"],
            language=data.get("language"),
            language_probability=data.get("language_probability"),
            duration=data.get("duration", 0.0),
            segments=segments,
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
