"""OpenAI's audio form, read: its fields (OpenAI's, the newer models', asrflow's own beyond them) as the options
that do the same, and known speakers' data URLs as clips, each refusal a 400 naming the field."""

from __future__ import annotations

import base64
import json

from fastapi import Request
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException

from asrflow import option_values
from asrflow.audio import SAMPLE_RATE
from asrflow.errors import AsrflowError
from asrflow.options import FALLBACK_TEMPERATURES, TranscribeOptions
from asrflow.server.errors import HTTPError
from asrflow.transcriber import known_voice

# form field -> option, as each option declares (options.py): OpenAI's fields, and asrflow's own beyond them (the
# openai client sends those with extra_body), named as the options are
OPTIONS = TranscribeOptions.openai_fields()
FORMATS = {"json", "text", "srt", "vtt", "verbose_json", "diarized_json"}  # response_format
NEWER = ("keywords[]", "languages[]")  # the newer models' fields: hotwords, and the languages spoken (newer())
FIELDS = {
    "file",
    "model",
    "response_format",
    "timestamp_granularities[]",
    "timestamp_granularities",
    "stream",
    "include[]",
    "chunking_strategy",
    "known_speaker_names[]",
    "known_speaker_references[]",
    *NEWER,
    *OPTIONS,
}
# chunking_strategy server_vad's fields -> the VAD options that do the same
VAD_FIELDS = {
    "threshold": "vad_threshold",
    "silence_duration_ms": "vad_min_silence_duration_ms",
    "prefix_padding_ms": "vad_speech_pad_ms",
}

OPENAI_SPEAKERS, OPENAI_CLIP = 4, (2.0, 10.0)  # known speakers, and each clip's seconds, as OpenAI documents
CLIP_SLACK = 0.1  # seconds either way of OPENAI_CLIP: an encoder's padding


def known_speakers(form) -> list[tuple[str, bytes]] | None:
    """OpenAI's known_speaker_names[] with known_speaker_references[] (audio data URLs, 2-10 s each, at most 4):
    (name, encoded clip) pairs, the known_speakers option, which refuses a name given twice (decoded_speakers
    decodes them). Never a path: text from a client is no file of this server's."""
    names, references = form.getlist("known_speaker_names[]"), form.getlist("known_speaker_references[]")
    if not names and not references:
        return None
    if len(names) != len(references):
        raise HTTPError(
            400,
            "give known_speaker_names[] and known_speaker_references[] in pairs: each name with one clip.",
            "known_speaker_names[]",
        )
    if len(names) > OPENAI_SPEAKERS:
        raise HTTPError(
            400,
            f"at most {OPENAI_SPEAKERS} known speakers, as OpenAI's API takes, not {len(names)}.",
            "known_speaker_names[]",
        )
    speakers = []
    for name, reference in zip(names, references):
        head, _, data = str(reference).partition(",")
        try:
            if not (head.startswith("data:") and head.endswith(";base64")):
                raise ValueError("not a data URL")
            speakers.append((name, base64.b64decode(data, validate=True)))
        except ValueError as e:
            raise reference_error(name, e) from None
    return speakers


def decoded_speakers(references: list[tuple[str, bytes]]) -> list[tuple[str, object]]:
    """(name, samples) pairs (in a worker thread: decoding is no work for the event loop)."""
    try:
        voices = [(name, known_voice(name, clip, OPENAI_CLIP[1] + CLIP_SLACK)) for name, clip in references]
    except AsrflowError as e:
        raise HTTPError(400, str(e), "known_speaker_references[]") from None
    for name, samples in voices:
        seconds = len(samples) / SAMPLE_RATE
        if seconds < OPENAI_CLIP[0] - CLIP_SLACK:
            raise HTTPError(
                400,
                f"known speaker {name!r}: its clip lasts {seconds:.1f} s; OpenAI's API takes clips of "
                f"{OPENAI_CLIP[0]:g} to {OPENAI_CLIP[1]:g} s.",
                "known_speaker_references[]",
            )
    return voices


def reference_error(name: str, e: Exception) -> HTTPError:
    return HTTPError(
        400,
        f"known speaker {name!r}: its reference must be a short clip as a data URL (data:audio/wav;base64,...): {e}",
        "known_speaker_references[]",
    )


def chunking(form) -> dict:
    """OpenAI's chunking_strategy: "auto" or {"type": "server_vad", "threshold", "prefix_padding_ms",
    "silence_duration_ms"} (sent as JSON, or as the openai client sends objects: chunking_strategy[type]=...) cut
    the audio where speech pauses, which asrflow's VAD does, with server_vad's settings as its own."""
    strategy = form.get("chunking_strategy")
    fields = {k[len("chunking_strategy[") : -1]: v for k, v in form.items() if k.startswith("chunking_strategy[")}
    if strategy in (None, "") and not fields:
        return {}
    try:
        fields = fields or ({"type": "auto"} if strategy == "auto" else dict(json.loads(strategy)))
    except (ValueError, TypeError, RecursionError):
        fields = {}
    if fields.get("type") not in ("auto", "server_vad") or (fields["type"] == "auto" and len(fields) > 1):
        raise HTTPError(400, 'chunking_strategy must be "auto" or {"type": "server_vad", ...}.', "chunking_strategy")
    unknown = sorted(set(fields) - {"type", *VAD_FIELDS})
    if unknown:
        raise HTTPError(
            400,
            f"chunking_strategy has no field {unknown[0]!r}: server_vad takes {', '.join(VAD_FIELDS)}.",
            "chunking_strategy",
        )
    changes = {"vad_filter": True} | {VAD_FIELDS[k]: v for k, v in fields.items() if k in VAD_FIELDS}
    try:
        TranscribeOptions.check(changes)  # its values, named as chunking_strategy; resolved with the rest
    except AsrflowError as e:
        raise HTTPError(400, f"chunking_strategy: {e}", "chunking_strategy") from None
    return changes


def form_options(form) -> dict:
    """The form's option fields as options (OpenAI's names mapped, values as sent: the resolver converts them)."""
    changes = {option: form.get(field) for field, option in OPTIONS.items() if form.get(field) not in (None, "")}
    return openai_temperature(changes | chunking(form) | newer(form))


def newer(form) -> dict:
    """The newer models' fields as the options that do the same: keywords[] are hotwords (words to favour);
    languages[], the languages the audio may be in, is `language` when it names one, else `multilingual` with
    `languages` (each segment in its own language, chosen among them). Given with the fields it would set, it is
    refused: which one was meant is not for the server to guess."""
    changes = {}
    if keywords := [k for k in form.getlist("keywords[]") if k.strip()]:
        changes["hotwords"] = " ".join(keywords)
    try:  # normalised as the languages option does (" EN" and "en" are one)
        languages = option_values.languages([code for code in form.getlist("languages[]") if code.strip()])
    except AsrflowError as e:
        raise HTTPError(400, str(e), "languages[]") from None
    if not languages:
        return changes
    if given := [field for field in ("language", "multilingual", "languages") if form.get(field) not in (None, "")]:
        raise HTTPError(
            400, f"languages[] and {given[0]} both say which language is spoken: send one of them.", "languages[]"
        )
    if len(languages) == 1:
        return changes | {"language": languages[0]}
    return changes | {"multilingual": True, "languages": list(languages)}


def openai_temperature(changes: dict) -> dict:
    """OpenAI's temperature: 0 means Whisper's fallback (start at 0, go hotter while the text looks wrong);
    a higher value starts there and falls back from it."""
    if "temperature" not in changes:
        return changes
    try:
        start = float(changes["temperature"])
    except (TypeError, ValueError):
        return changes  # the resolver names the problem
    rest = {k: v for k, v in changes.items() if k != "temperature"}
    if start == 0:
        return rest
    return rest | {"temperature": [start] + [t for t in FALLBACK_TEMPERATURES if t > start]}


async def read_form(request: Request, max_body_bytes: int):
    """The form: any part (a file, or a text field such as a speaker's data URL) is bounded by the body's limit
    (BodyLimit raises BodyTooLarge from receive), which Starlette's own part limit, set to it, never undercuts."""
    try:
        form = await request.form(max_files=1, max_fields=32, max_part_size=max_body_bytes)
    except (MultiPartException, StarletteHTTPException) as e:  # Starlette's own 400 for a malformed form, in an app
        detail = getattr(e, "detail", None) or getattr(e, "message", None) or str(e)
        raise HTTPError(400, f"expected a multipart/form-data body with a 'file' field ({detail}).") from None
    unknown = sorted(k for k in set(form.keys()) - FIELDS if not k.startswith("chunking_strategy["))  # its fields
    if unknown:
        raise HTTPError(400, f"unknown parameter(s): {', '.join(unknown)}.", unknown[0])
    return form
