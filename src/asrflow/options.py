"""One options type for decoding, each option declared once, and the one resolver every edge uses to change it.

Each field of `TranscribeOptions` is declared with `option(...)`: its default, its converter (range included), what
a bad value is told, its help, and the edges that expose it. The CLI's flags (cli_audio.decoding_flags), MLflow's
param schema (flavor.model_signature) and the OpenAI form and realtime session fields (openai_fields) are derived
from those declarations. CLI flags, HTTP form fields, MLflow params, batch/Spark config and the options saved with
a model all go through `TranscribeOptions.resolve`: values are coerced from text or JSON where that is
unambiguous, refused with a message naming the option otherwise, and checked against their ranges.
Precedence: options saved with the model < server/CLI flags < what one call passes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from asrflow.errors import InvalidOptionError

TASKS = ("transcribe", "translate")
# Whisper's language codes (faster-whisper's list, the same in openai/whisper and transformers)
_CODES = (
    "af am ar as az ba be bg bn bo br bs ca cs cy da de el en es et eu fa fi fo fr gl gu ha haw he hi hr ht hu hy "
    "id is it ja jw ka kk km kn ko la lb ln lo lt lv mg mi mk ml mn mr ms mt my ne nl nn no oc pa pl ps pt ro ru sa "
    "sd si sk sl sn so sq sr su sv sw ta te tg th tk tl tr tt uk ur uz vi yi yo zh yue"
)
LANGUAGES = _CODES.split()
FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


def flag(name: str, value: Any) -> bool:
    """A true/false value from any edge (true, "true", 1, "on"...), or an error naming it."""
    try:
        return _boolean(value)
    except ValueError:
        raise InvalidOptionError(f"{name} cannot be {_show(value)}: expected true or false.") from None


def _coerce(declared, value: Any) -> Any:
    try:
        return declared.metadata["convert"](value)
    except InvalidOptionError:
        raise
    except (TypeError, ValueError):
        raise InvalidOptionError(
            f"{declared.name} cannot be {_show(value)}: {declared.metadata['expected']}."
        ) from None


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


SPEAKERS = "expected a whole number of speakers from 1 to 32"


def _speakers(name: str):
    return _optional(_ranged(_integer, 1, 32, name))


def option(default, convert, expected: str, help: str, *, cli: str | None = "", openai: str | None = None):
    """One option, declared once: its default; `convert`, which takes any edge's value (text, JSON, Python) to
    the option's, or raises naming the problem; `expected`, what a bad value is told; `help`, for people (the CLI's
    help, the docs); and the edges that expose it besides the library, MLflow's params and the server's
    /invocations (which take every option): `cli`, its flag (default: the name in kebab case; None: none), and
    `openai`, its field in OpenAI's audio API (None: none)."""
    return field(
        default=default, metadata={"convert": convert, "expected": expected, "help": help, "cli": cli, "openai": openai}
    )


@dataclass(frozen=True)
class TranscribeOptions:
    language: str | None = option(
        None,
        _language,
        "expected a language code such as en",
        "Language code, e.g. en; detected when omitted.",
        openai="language",
    )
    task: str = option(
        "transcribe", _task, "expected transcribe or translate", "transcribe, or translate (to English)."
    )
    beam_size: int = option(
        5, _ranged(_integer, 1, 20, "beam_size"), "expected a whole number from 1 to 20", "Beam width."
    )
    temperature: tuple[float, ...] = option(
        FALLBACK_TEMPERATURES,
        _temperatures,
        "expected a number or a list of numbers between 0 and 1",
        "Whisper's fallback: decode at the first temperature, retry at the next while the result looks wrong "
        "(a list such as 0,0.2,0.4).",
        openai="temperature",
    )
    compression_ratio_threshold: float | None = option(
        2.4,
        _optional(_ranged(_number, 0.0, 1000.0, "compression_ratio_threshold")),
        "expected a positive number, or null to turn the check off",
        "Above it a window's text is repetitive: retried hotter.",
        cli=None,
    )
    log_prob_threshold: float | None = option(
        -1.0,
        _optional(_ranged(_number, -1000.0, 0.0, "log_prob_threshold")),
        "expected a negative number, or null to turn the check off",
        "Below it a window's text is unsure: retried hotter.",
        cli=None,
    )
    no_speech_threshold: float | None = option(
        0.6,
        _optional(_ranged(_number, 0.0, 1.0, "no_speech_threshold")),
        "expected a number between 0 and 1, or null to turn the check off",
        "Above it, with a low log-prob, a window is silence: no text.",
        cli=None,
    )
    condition_on_previous_text: bool = option(
        True, _boolean, "expected true or false", "Condition each window on the text before it."
    )
    initial_prompt: str | None = option(
        None, _prompt, "expected text", "Text to condition the first window on (names, terms).", openai="prompt"
    )
    hotwords: str | None = option(
        None,
        _prompt,
        "expected text (words or phrases, separated by spaces)",
        "Words or phrases to favour (names, jargon), in every window's prompt (faster-whisper's hotwords).",
    )
    word_timestamps: bool = option(False, _boolean, "expected true or false", "Add per-word timings.")
    vad_filter: bool = option(
        False, _boolean, "expected true or false", "Skip non-speech with Silero VAD (and batch long audio).", cli="vad"
    )
    # the VAD's settings wherever speech regions are found (vad_filter, multilingual, long audio); faster-whisper's names
    vad_threshold: float = option(
        0.5,
        _ranged(_number, 0.01, 0.99, "vad_threshold"),
        "expected a speech probability between 0.01 and 0.99",
        "VAD: speech probability above which audio is speech.",
    )
    vad_min_silence_duration_ms: int = option(
        500,
        _ranged(_integer, 100, 10_000, "vad_min_silence_duration_ms"),
        "expected a whole number of milliseconds from 100 to 10000",
        "VAD: a pause this long (ms) ends a speech region.",
    )
    vad_speech_pad_ms: int = option(
        200,
        _ranged(_integer, 0, 2_000, "vad_speech_pad_ms"),
        "expected a whole number of milliseconds from 0 to 2000",
        "VAD: padding kept on each side of a speech region (ms).",
    )
    multilingual: bool = option(
        False,
        _boolean,
        "expected true or false",
        "Detect and keep each segment's language (multilingual models; faster-whisper's name).",
        openai="multilingual",
    )
    languages: tuple[str, ...] | None = option(
        None,
        _languages,
        "expected language codes such as en,de,fr",
        "With multilingual: the languages spoken, e.g. en,de (detection chooses among them).",
        openai="languages",
    )
    chunk_length_s: float = option(
        30.0,
        _ranged(_number, 1.0, 30.0, "chunk_length_s (seconds, at most Whisper's 30 s window)"),
        "expected a number of seconds from 1 to 30",
        "Seconds of audio a window holds.",
        cli=None,
    )
    stride_length_s: tuple[float, float] | None = option(
        None,
        _stride,
        "expected one or two numbers of seconds",
        "The tutorial's chunking: windows overlapping by these seconds, merged (transformers backend only).",
        cli=None,
    )
    batch_size: int = option(
        8,
        _ranged(_integer, 1, 64, "batch_size"),
        "expected a whole number from 1 to 64",
        "Windows decoded together on the fast path (VAD regions of long audio).",
    )
    diarize: bool = option(
        False,
        _boolean,
        "expected true or false",
        "Label each segment and word with its speaker (A, B, ...), offline; segments split where it changes.",
        openai="diarize",
    )
    num_speakers: int | None = option(
        None,
        _speakers("num_speakers"),
        SPEAKERS,
        "With diarize: how many speakers there are (estimated when omitted).",
        openai="num_speakers",
    )
    min_speakers: int | None = option(
        None, _speakers("min_speakers"), SPEAKERS, "With diarize: at least this many speakers.", openai="min_speakers"
    )
    max_speakers: int | None = option(
        None, _speakers("max_speakers"), SPEAKERS, "With diarize: at most this many speakers.", openai="max_speakers"
    )
    channels: str = option(
        "mix",
        lambda value: _choice(value, ("mix", "split"), "channels"),
        "expected mix or split",
        "mix, or split: each channel transcribed by itself, its channel as the speaker (stereo calls).",
        openai="channels",
    )

    def __post_init__(self):
        for f in fields(self):
            object.__setattr__(self, f.name, _coerce(f, getattr(self, f.name)))
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
        self.check(changes)
        return replace(self, **changes) if changes else self

    @classmethod
    def check(cls, changes: Mapping[str, Any]) -> None:
        """Each of `changes` on its own: a known name and a value its option takes. An edge checks what it was
        given before any model loads; how the changes go together (languages needs multilingual...) is known only
        once they are resolved against the model's saved options."""
        unknown = sorted(set(changes) - set(cls.names()))
        if unknown:
            raise InvalidOptionError(
                f"unknown option(s): {', '.join(map(str, unknown))}. Known options: {', '.join(cls.names())}."
            )
        declared = {f.name: f for f in fields(cls)}
        for name, value in changes.items():
            _coerce(declared[name], value)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> TranscribeOptions:
        """Saved options (a model's config): the same checks as any other source."""
        return cls().resolve(data)

    @classmethod
    def openai_fields(cls) -> dict[str, str]:
        """OpenAI's field (or asrflow's extension field) -> the option it sets, as the options declare them."""
        return {f.metadata["openai"]: f.name for f in fields(cls) if f.metadata["openai"]}
