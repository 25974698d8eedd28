"""One options type for decoding, and the one resolver every edge uses to change it.

CLI flags, HTTP form fields, MLflow params, batch/Spark config and the options saved with a model all
go through `TranscribeOptions.resolve`: values are coerced from text or JSON where that is unambiguous,
refused with a message naming the option otherwise, and checked against their ranges.
Precedence: options saved with the model < server/CLI flags < what one call passes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from asrflow.errors import InvalidOptionError

TASKS = ("transcribe", "translate")
# Whisper's language codes (faster-whisper's list, the same in openai/whisper and transformers)
LANGUAGES = [
    "af",
    "am",
    "ar",
    "as",
    "az",
    "ba",
    "be",
    "bg",
    "bn",
    "bo",
    "br",
    "bs",
    "ca",
    "cs",
    "cy",
    "da",
    "de",
    "el",
    "en",
    "es",
    "et",
    "eu",
    "fa",
    "fi",
    "fo",
    "fr",
    "gl",
    "gu",
    "ha",
    "haw",
    "he",
    "hi",
    "hr",
    "ht",
    "hu",
    "hy",
    "id",
    "is",
    "it",
    "ja",
    "jw",
    "ka",
    "kk",
    "km",
    "kn",
    "ko",
    "la",
    "lb",
    "ln",
    "lo",
    "lt",
    "lv",
    "mg",
    "mi",
    "mk",
    "ml",
    "mn",
    "mr",
    "ms",
    "mt",
    "my",
    "ne",
    "nl",
    "nn",
    "no",
    "oc",
    "pa",
    "pl",
    "ps",
    "pt",
    "ro",
    "ru",
    "sa",
    "sd",
    "si",
    "sk",
    "sl",
    "sn",
    "so",
    "sq",
    "sr",
    "su",
    "sv",
    "sw",
    "ta",
    "te",
    "tg",
    "th",
    "tk",
    "tl",
    "tr",
    "tt",
    "uk",
    "ur",
    "uz",
    "vi",
    "yi",
    "yo",
    "zh",
    "yue",
]
FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


@dataclass(frozen=True)
class TranscribeOptions:
    language: str | None = None  # None: detect it
    task: str = "transcribe"
    beam_size: int = 5
    # Whisper's fallback: decode at the first temperature, retry at the next while the result looks wrong
    temperature: tuple[float, ...] = FALLBACK_TEMPERATURES
    compression_ratio_threshold: float | None = 2.4  # above it: repetitive, retry hotter
    log_prob_threshold: float | None = -1.0  # below it: unsure, retry hotter
    no_speech_threshold: float | None = 0.6  # with a low log-prob: silence, no text
    condition_on_previous_text: bool = True
    initial_prompt: str | None = None
    hotwords: str | None = None  # faster-whisper's: hint phrases put in every window's prompt
    word_timestamps: bool = False
    vad_filter: bool = False
    # the VAD's settings wherever speech regions are found (vad_filter, multilingual, long audio): Silero's speech
    # probability threshold, the pause that ends a region, and the padding kept on each side (faster-whisper's names)
    vad_threshold: float = 0.5
    vad_min_silence_duration_ms: int = 500
    vad_speech_pad_ms: int = 200
    multilingual: bool = False  # faster-whisper's name: the language of each speech region, detected and kept
    languages: tuple[str, ...] | None = None  # multilingual: the languages spoken (detection chooses among them)
    chunk_length_s: float = 30.0
    stride_length_s: tuple[float, float] | None = None  # transformers backend only
    batch_size: int = 8
    diarize: bool = False  # a speaker on every segment and word (diarize.py); segments split where it changes
    num_speakers: int | None = None  # diarize: how many, when known (else estimated within min..max)
    min_speakers: int | None = None
    max_speakers: int | None = None
    channels: str = "mix"  # or "split": each channel transcribed by itself, its segments' speaker the channel's

    def __post_init__(self):
        for f in fields(self):
            object.__setattr__(self, f.name, _coerce(f.name, getattr(self, f.name)))
        counts = {k: v for k in ("num_speakers", "min_speakers", "max_speakers") if (v := getattr(self, k)) is not None}
        if counts and not self.diarize:
            names = " and ".join(counts)
            raise InvalidOptionError(
                f"{names} only apply to diarization: turn diarize on (CLI --diarize), or leave {names} out."
            )
        if self.languages and not self.multilingual:
            raise InvalidOptionError(
                "languages lists the languages that multilingual detection chooses among: turn multilingual on "
                "(CLI --multilingual), or leave languages out."
            )
        if self.channels == "split" and self.diarize:
            raise InvalidOptionError(
                "channels=split already tells the speakers apart (one a channel), so it cannot be used with diarize: "
                "choose one."
            )
        if (self.min_speakers or 1) > (self.max_speakers or 32):
            raise InvalidOptionError(
                f"min_speakers ({self.min_speakers}) is more than max_speakers ({self.max_speakers})."
            )
        if self.stride_length_s is not None and sum(self.stride_length_s) >= self.chunk_length_s:
            raise InvalidOptionError(
                f"stride_length_s {list(self.stride_length_s)} must add up to less than chunk_length_s "
                f"({self.chunk_length_s:g})."
            )

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def to_dict(self) -> dict:
        """JSON-ready (tuples as lists), and back with TranscribeOptions.resolve(d)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def resolve(self, changes: Mapping[str, Any] | None = None, **more) -> TranscribeOptions:
        """A copy with `changes` applied: unknown names, bad types and out-of-range values are errors
        naming the option; text such as "5", "true" or "0,0.2" is converted."""
        changes = {**(changes or {}), **more}
        unknown = sorted(set(changes) - set(self.names()))
        if unknown:
            raise InvalidOptionError(
                f"unknown option(s): {', '.join(map(str, unknown))}. Known options: {', '.join(self.names())}."
            )
        return replace(self, **changes) if changes else self

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> TranscribeOptions:
        """Saved options (a model's config): the same checks as any other source."""
        return cls().resolve(data)


def flag(name: str, value: Any) -> bool:
    """A true/false value from any edge (true, "true", 1, "on"...), or an error naming it."""
    try:
        return _boolean(value)
    except ValueError:
        raise InvalidOptionError(f"{name} cannot be {_show(value)}: expected true or false.") from None


def _coerce(name: str, value: Any) -> Any:
    try:
        return _CONVERTERS[name](value)
    except InvalidOptionError:
        raise
    except (TypeError, ValueError):
        raise InvalidOptionError(f"{name} cannot be {_show(value)}: {_EXPECTED[name]}.") from None


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _integer(value: Any) -> int:
    if isinstance(value, bool) or value is None:
        raise TypeError
    if isinstance(value, str):
        value = value.strip()
    number = float(value)
    if not number.is_integer():
        raise ValueError
    return int(number)


def _number(value: Any) -> float:
    if isinstance(value, bool) or value is None or isinstance(value, (list, tuple, dict)):
        raise TypeError
    number = float(value.strip() if isinstance(value, str) else value)
    if not math.isfinite(number):
        raise ValueError
    return number


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
        return value.strip().lower() in ("true", "1", "yes", "on")
    raise ValueError


def _numbers(value: Any) -> tuple[float, ...]:
    if isinstance(value, str):
        value = [v for v in value.replace(",", " ").split()]
    if not isinstance(value, (list, tuple)):
        value = [value]
    return tuple(_number(v) for v in value)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError
    return value or None


# Whisper reads only a prompt's last 223 tokens (hotwords' too), never more than a few thousand characters: what
# comes before cannot change a transcript, and tokenizing megabytes of it would hold the model.
PROMPT_CHARS = 8000


def _prompt(value: Any) -> str | None:
    text = _text(value)
    return text[-PROMPT_CHARS:] if text else text


def _ranged(convert, low: float, high: float, name: str):
    def check(value):
        number = convert(value)
        if not low <= number <= high:
            raise InvalidOptionError(f"{name} must be between {low:g} and {high:g}, not {number:g}.")
        return number

    return check


def _optional(convert):
    return lambda value: None if value is None or value == "" else convert(value)


def _language(value: Any) -> str | None:
    code = _text(value)
    if code is None:
        return None
    code = code.strip().lower()
    if code not in LANGUAGES:
        raise InvalidOptionError(
            f"language {_show(value)} is not a Whisper language code: use an ISO 639-1 code such as en, de, fr, "
            "es or zh, or leave it out to detect the language."
        )
    return code


def _languages(value: Any) -> tuple[str, ...] | None:
    if value is None or (isinstance(value, (str, list, tuple)) and len(value) == 0):
        return None
    codes = value.replace(",", " ").split() if isinstance(value, str) else value
    if not isinstance(codes, (list, tuple)):
        raise TypeError
    known = {c: c.strip().lower() if isinstance(c, str) else None for c in codes}
    unknown = [c for c, code in known.items() if code not in LANGUAGES]
    if unknown:
        raise InvalidOptionError(
            f"languages: {_show(unknown[0])} is not a Whisper language code: list ISO 639-1 codes such as en,de,fr."
        )
    return tuple(dict.fromkeys(known.values())) or None


def _choice(value: Any, choices: tuple[str, ...], name: str) -> str:
    if value not in choices:
        raise InvalidOptionError(f"{name} must be one of {', '.join(choices)}, not {_show(value)}.")
    return value


def _task(value: Any) -> str:
    if value not in TASKS:
        raise InvalidOptionError(f"task must be one of {', '.join(TASKS)}, not {_show(value)}.")
    return value


def _temperatures(value: Any) -> tuple[float, ...]:
    temperatures = _numbers(value)
    if not temperatures or any(not 0.0 <= t <= 1.0 for t in temperatures):
        raise InvalidOptionError(
            f"temperature must be one number or a list of numbers between 0 and 1 (the fallback sequence), "
            f"not {_show(value)}."
        )
    if len(temperatures) > len(FALLBACK_TEMPERATURES):  # each is one more decode of a window: bounded
        raise InvalidOptionError(
            f"temperature takes at most {len(FALLBACK_TEMPERATURES)} values (a fallback sequence such as "
            f"{','.join(f'{t:g}' for t in FALLBACK_TEMPERATURES)}), not {len(temperatures)}."
        )
    return temperatures


def _stride(value: Any) -> tuple[float, float] | None:
    if value is None or (isinstance(value, (str, list, tuple)) and len(value) == 0):  # also MLflow's [] default
        return None
    stride = _numbers(value)
    stride = stride * 2 if len(stride) == 1 else stride
    if len(stride) != 2 or any(s < 0 for s in stride):
        raise InvalidOptionError(
            f"stride_length_s must be one or two non-negative numbers of seconds, not {_show(value)}."
        )
    return stride


_CONVERTERS = {
    "language": _language,
    "task": _task,
    "beam_size": _ranged(_integer, 1, 20, "beam_size"),
    "temperature": _temperatures,
    "compression_ratio_threshold": _optional(_ranged(_number, 0.0, 1000.0, "compression_ratio_threshold")),
    "log_prob_threshold": _optional(_ranged(_number, -1000.0, 0.0, "log_prob_threshold")),
    "no_speech_threshold": _optional(_ranged(_number, 0.0, 1.0, "no_speech_threshold")),
    "condition_on_previous_text": _boolean,
    "initial_prompt": _prompt,
    "hotwords": _prompt,
    "word_timestamps": _boolean,
    "vad_filter": _boolean,
    "vad_threshold": _ranged(_number, 0.01, 0.99, "vad_threshold"),
    "vad_min_silence_duration_ms": _ranged(_integer, 100, 10_000, "vad_min_silence_duration_ms"),
    "vad_speech_pad_ms": _ranged(_integer, 0, 2_000, "vad_speech_pad_ms"),
    "multilingual": _boolean,
    "languages": _languages,
    "chunk_length_s": _ranged(_number, 1.0, 30.0, "chunk_length_s (seconds, at most Whisper's 30 s window)"),
    "stride_length_s": _stride,
    "batch_size": _ranged(_integer, 1, 64, "batch_size"),
    "diarize": _boolean,
    "channels": lambda value: _choice(value, ("mix", "split"), "channels"),
    **{k: _optional(_ranged(_integer, 1, 32, k)) for k in ("num_speakers", "min_speakers", "max_speakers")},
}
_EXPECTED = {
    "language": "expected a language code such as en",
    "task": "expected transcribe or translate",
    "beam_size": "expected a whole number from 1 to 20",
    "temperature": "expected a number or a list of numbers between 0 and 1",
    "compression_ratio_threshold": "expected a positive number, or null to turn the check off",
    "log_prob_threshold": "expected a negative number, or null to turn the check off",
    "no_speech_threshold": "expected a number between 0 and 1, or null to turn the check off",
    "condition_on_previous_text": "expected true or false",
    "initial_prompt": "expected text",
    "hotwords": "expected text (words or phrases, separated by spaces)",
    "word_timestamps": "expected true or false",
    "vad_filter": "expected true or false",
    "vad_threshold": "expected a speech probability between 0.01 and 0.99",
    "vad_min_silence_duration_ms": "expected a whole number of milliseconds from 100 to 10000",
    "vad_speech_pad_ms": "expected a whole number of milliseconds from 0 to 2000",
    "multilingual": "expected true or false",
    "languages": "expected language codes such as en,de,fr",
    "chunk_length_s": "expected a number of seconds from 1 to 30",
    "stride_length_s": "expected one or two numbers of seconds",
    "batch_size": "expected a whole number from 1 to 64",
    "diarize": "expected true or false",
    "channels": "expected mix or split",
    **{k: "expected a whole number of speakers from 1 to 32" for k in ("num_speakers", "min_speakers", "max_speakers")},
}
