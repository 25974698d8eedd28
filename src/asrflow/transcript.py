"""The one result type every backend returns: Transcript -> Segment -> Word."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Word:
    start: float
    end: float
    word: str
    probability: float | None = None


@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    text: str
    words: list[Word] = field(default_factory=list)


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
        segments = [
            Segment(
                start=s["start"],
                end=s["end"],
                text=s["text"],
                words=[Word(**w) for w in s.get("words") or []],
            )
            for s in data.get("segments") or []
        ]
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
