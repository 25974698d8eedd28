"""One options type for decoding; the CLI, server and MLflow params all map onto it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from asrflow.errors import InvalidOptionError

TASKS = ("transcribe", "translate")


@dataclass(frozen=True)
class TranscribeOptions:
    language: str | None = None  # None: detect it
    task: str = "transcribe"
    beam_size: int = 5
    temperature: float = 0.0
    initial_prompt: str | None = None
    word_timestamps: bool = False
    vad_filter: bool = False
    chunk_length_s: float = 30.0
    stride_length_s: tuple[float, float] | None = None  # transformers backend only
    batch_size: int = 8

    def __post_init__(self):
        if self.task not in TASKS:
            raise InvalidOptionError(f"task must be one of {', '.join(TASKS)}, not {self.task!r}.")
        if self.beam_size < 1:
            raise InvalidOptionError(f"beam_size must be at least 1, not {self.beam_size}.")
        if not 0.0 <= self.temperature <= 1.0:
            raise InvalidOptionError(f"temperature must be between 0 and 1, not {self.temperature}.")
        if not 1.0 <= self.chunk_length_s <= 30.0:
            raise InvalidOptionError(
                f"chunk_length_s must be between 1 and 30 seconds (Whisper's window), not {self.chunk_length_s}."
            )
        if self.batch_size < 1:
            raise InvalidOptionError(f"batch_size must be at least 1, not {self.batch_size}.")
        if self.language is not None:
            object.__setattr__(self, "language", self.language.strip().lower() or None)
        if self.stride_length_s is not None:
            stride = self.stride_length_s
            if isinstance(stride, (int, float)):
                stride = (float(stride), float(stride))
            stride = tuple(float(s) for s in stride)
            if len(stride) != 2 or any(s < 0 for s in stride) or sum(stride) >= self.chunk_length_s:
                raise InvalidOptionError(
                    "stride_length_s must be one or two non-negative numbers of seconds "
                    f"that add up to less than chunk_length_s ({self.chunk_length_s}), not {self.stride_length_s!r}."
                )
            object.__setattr__(self, "stride_length_s", stride)

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def to_dict(self) -> dict:
        """JSON-ready (tuples as lists), and back with TranscribeOptions(**d)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def updated(self, **changes) -> TranscribeOptions:
        """A copy with `changes`; unknown names are an error naming them."""
        unknown = sorted(set(changes) - set(self.names()))
        if unknown:
            raise InvalidOptionError(
                f"unknown option(s): {', '.join(unknown)}. Known options: {', '.join(self.names())}."
            )
        return replace(self, **changes)
