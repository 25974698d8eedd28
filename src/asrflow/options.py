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

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from asrflow import option_values as v
from asrflow.errors import InvalidOptionError
from asrflow.option_values import FALLBACK_TEMPERATURES, LANGUAGES, PROMPT_CHARS, TASKS, coerce, flag, identity

__all__ = ["FALLBACK_TEMPERATURES", "LANGUAGES", "PROMPT_CHARS", "TASKS", "TranscribeOptions", "flag", "option"]


def option(
    default,
    convert,
    expected: str,
    help: str,
    *,
    cli: str | None = "",
    openai: str | None = None,
    params: bool = True,
    compare: bool = True,
):
    """One option, declared once: its default; `convert`, which takes any edge's value (text, JSON, Python) to
    the option's, or raises naming the problem; `expected`, what a bad value is told; `help`, for people (the CLI's
    help, the docs); and the edges that expose it besides the library: `cli`, its flag (default: the name in kebab
    case; None: none), `openai`, its field in OpenAI's audio API (None: none), and `params`, whether it is an
    MLflow param (then the server's /invocations takes it too)."""
    metadata = {"convert": convert, "expected": expected, "help": help, "cli": cli, "openai": openai, "params": params}
    return field(default=default, compare=compare, metadata=metadata)


@dataclass(frozen=True)
class TranscribeOptions:
    language: str | None = option(
        None,
        v.language,
        "expected a language code such as en",
        "Language code, e.g. en; detected when omitted.",
        openai="language",
    )
    task: str = option(
        "transcribe", v.task, "expected transcribe or translate", "transcribe, or translate (to English)."
    )
    beam_size: int = option(
        5, v.ranged(v.integer, 1, 20, "beam_size"), "expected a whole number from 1 to 20", "Beam width."
    )
    temperature: tuple[float, ...] = option(
        FALLBACK_TEMPERATURES,
        v.temperatures,
        "expected a number or a list of numbers between 0 and 1",
        "Whisper's fallback: decode at the first temperature, retry at the next while the result looks wrong "
        "(a list such as 0,0.2,0.4).",
        openai="temperature",
    )
    compression_ratio_threshold: float | None = option(
        2.4,
        v.optional(v.ranged(v.number, 0.0, 1000.0, "compression_ratio_threshold")),
        "expected a positive number, or null to turn the check off",
        "Above it a window's text is repetitive: retried hotter.",
        cli=None,
    )
    log_prob_threshold: float | None = option(
        -1.0,
        v.optional(v.ranged(v.number, -1000.0, 0.0, "log_prob_threshold")),
        "expected a negative number, or null to turn the check off",
        "Below it a window's text is unsure: retried hotter.",
        cli=None,
    )
    no_speech_threshold: float | None = option(
        0.6,
        v.optional(v.ranged(v.number, 0.0, 1.0, "no_speech_threshold")),
        "expected a number between 0 and 1, or null to turn the check off",
        "Above it, with a low log-prob, a window is silence: no text.",
        cli=None,
    )
    condition_on_previous_text: bool = option(
        True, v.boolean, "expected true or false", "Condition each window on the text before it."
    )
    initial_prompt: str | None = option(
        None, v.prompt, "expected text", "Text to condition the first window on (names, terms).", openai="prompt"
    )
    hotwords: str | None = option(
        None,
        v.hotwords,
        "expected text (words or phrases, separated by spaces)",
        "Words or phrases to favour (names, jargon), in every window's prompt (faster-whisper's hotwords).",
    )
    word_timestamps: bool = option(False, v.boolean, "expected true or false", "Add per-word timings.")
    vad_filter: bool = option(
        False, v.boolean, "expected true or false", "Skip non-speech with Silero VAD (and batch long audio).", cli="vad"
    )
    # the VAD's settings wherever speech regions are found (vad_filter, multilingual, long audio); faster-whisper's names
    vad_threshold: float = option(
        0.5,
        v.ranged(v.number, 0.01, 0.99, "vad_threshold"),
        "expected a speech probability between 0.01 and 0.99",
        "VAD: speech probability above which audio is speech.",
    )
    vad_min_silence_duration_ms: int = option(
        500,
        v.ranged(v.integer, 100, 10_000, "vad_min_silence_duration_ms"),
        "expected a whole number of milliseconds from 100 to 10000",
        "VAD: a pause this long (ms) ends a speech region.",
    )
    vad_speech_pad_ms: int = option(
        200,
        v.ranged(v.integer, 0, 2_000, "vad_speech_pad_ms"),
        "expected a whole number of milliseconds from 0 to 2000",
        "VAD: padding kept on each side of a speech region (ms).",
    )
    multilingual: bool = option(
        False,
        v.boolean,
        "expected true or false",
        "Detect and keep each segment's language (multilingual models; faster-whisper's name).",
        openai="multilingual",
    )
    languages: tuple[str, ...] | None = option(
        None,
        v.languages,
        "expected language codes such as en,de,fr",
        "With multilingual: the languages spoken, e.g. en,de (detection chooses among them).",
        openai="languages",
    )
    chunk_length_s: float = option(
        30.0,
        v.ranged(v.number, 1.0, 30.0, "chunk_length_s (seconds, at most Whisper's 30 s window)"),
        "expected a number of seconds from 1 to 30",
        "Seconds of audio a window holds.",
        cli=None,
    )
    stride_length_s: tuple[float, float] | None = option(
        None,
        v.stride,
        "expected one or two numbers of seconds",
        "The tutorial's chunking: windows overlapping by these seconds, merged (transformers backend only).",
        cli=None,
    )
    batch_size: int = option(
        8,
        v.ranged(v.integer, 1, 64, "batch_size"),
        "expected a whole number from 1 to 64",
        "Windows decoded together on the fast path (VAD regions of long audio).",
    )
    diarize: bool = option(
        False,
        v.boolean,
        "expected true or false",
        "Label each segment and word with its speaker (A, B, ...), offline; segments split where it changes.",
        openai="diarize",
    )
    num_speakers: int | None = option(
        None,
        v.speakers("num_speakers"),
        v.SPEAKERS,
        "With diarize: how many speakers there are (estimated when omitted).",
        openai="num_speakers",
    )
    min_speakers: int | None = option(
        None,
        v.speakers("min_speakers"),
        v.SPEAKERS,
        "With diarize: at least this many speakers.",
        openai="min_speakers",
    )
    max_speakers: int | None = option(
        None, v.speakers("max_speakers"), v.SPEAKERS, "With diarize: at most this many speakers.", openai="max_speakers"
    )
    known_speakers: tuple[tuple[str, Any], ...] | None = option(
        None,
        v.known_speakers,
        "expected name -> clip pairs (a file's path, encoded bytes or samples)",
        "With diarize: NAME=CLIP, a short clip of a known voice; speakers who sound like it are named after it "
        "(repeat for each).",
        cli="speaker",
        params=False,  # a path in a param would have the server read its own disk; MLflow has no mapping param
        compare=False,
    )
    channels: str = option(
        "mix",
        lambda value: v.choice(value, ("mix", "split"), "channels"),
        "expected mix or split",
        "mix, or split: each channel transcribed by itself, its channel as the speaker (stereo calls).",
        openai="channels",
    )

    def __post_init__(self):
        for f in fields(self):
            object.__setattr__(self, f.name, coerce(f, getattr(self, f.name)))
        counts = {k: v for k in ("num_speakers", "min_speakers", "max_speakers") if (v := getattr(self, k)) is not None}
        if counts and not self.diarize:
            names = " and ".join(counts)
            raise InvalidOptionError(
                f"{names} only apply to diarization: turn diarize on (CLI --diarize), or leave {names} out."
            )
        if self.known_speakers and not self.diarize:
            raise InvalidOptionError(
                "known speakers name the speakers that diarization finds: turn diarize on too (CLI --diarize, "
                "OpenAI response_format=diarized_json)."
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
        """JSON-ready (tuples as lists), and back with TranscribeOptions.resolve(d). Known speakers only when
        given, each clip's path, or the sha256 of its bytes or samples: that identifies them (a journal's header),
        and restores nothing."""
        values = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        values.pop("known_speakers")
        if self.known_speakers:
            values["known_speakers"] = {name: identity(clip) for name, clip in self.known_speakers}
        return values

    def resolve(self, changes: Mapping[str, Any] | None = None, **more) -> TranscribeOptions:
        """A copy with `changes` applied: unknown names, bad types and out-of-range values are errors
        naming the option; text such as "5", "true" or "0,0.2" is converted."""
        changes = {**(changes or {}), **more}
        self.check(changes)
        return replace(self, **changes) if changes else self

    @classmethod
    def check(cls, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Each of `changes` on its own: a known name and a value its option takes. An edge checks what it was
        given before any model loads; how the changes go together (languages needs multilingual...) is known only
        once they are resolved against the model's saved options. Returns them converted."""
        unknown = sorted(set(changes) - set(cls.names()))
        if unknown:
            raise InvalidOptionError(
                f"unknown option(s): {', '.join(map(str, unknown))}. Known options: {', '.join(cls.names())}."
            )
        declared = {f.name: f for f in fields(cls)}
        return {name: coerce(declared[name], value) for name, value in changes.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> TranscribeOptions:
        """Saved options (a model's config): the same checks as any other source. No known speakers: a model
        does not carry recordings of voices, and a path in its files must not make a server read a file."""
        if (data or {}).get("known_speakers"):
            raise InvalidOptionError(
                "the options saved with this model name known speakers, which a model does not carry: give them "
                "with each transcription, and remove known_speakers from the model's MLmodel."
            )
        return cls().resolve({k: v for k, v in (data or {}).items() if k != "known_speakers"})

    @classmethod
    def param_names(cls) -> list[str]:
        """The options that are MLflow params (and /invocations params), as declared."""
        return [f.name for f in fields(cls) if f.metadata["params"]]

    @classmethod
    def openai_fields(cls) -> dict[str, str]:
        """OpenAI's field (or asrflow's extension field) -> the option it sets, as the options declare them."""
        return {f.metadata["openai"]: f.name for f in fields(cls) if f.metadata["openai"]}
