"""/openapi.json's account of the bodies the routes read themselves, and of every answer, errors included: OpenAI's
audio form (its fields, the newer models', and asrflow's own beyond them, from the tables the form is read with),
MLflow's scoring JSON, and /render's transcript. A client generator or an API fuzzer sees what the server takes."""

from __future__ import annotations

import types
import typing
from dataclasses import fields

from asrflow.options import TranscribeOptions
from asrflow.server.openai_form import FORMATS, NEWER, OPENAI_SPEAKERS, OPTIONS

OPENAI_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "integer", "null"]},
            },
        }
    },
}
MLFLOW_ERROR = {
    "type": "object",
    "required": ["error_code", "message"],
    "properties": {"error_code": {"type": "string"}, "message": {"type": "string"}},
}
# what any route may answer besides its own: a bad request, the API key, a foreign Host or Origin (421, 403), a
# body over the limit, a model not found or not ready, an internal error (its details logged, never sent)
STATUSES = {
    "400": "The request names its problem and the fix.",
    "401": "Missing or wrong API key.",
    "403": "A web origin the server was not started to allow.",
    "404": "No such model (or file).",
    "413": "Over the body, upload or audio-length limit.",
    "415": "Not an audio file type.",
    "421": "A Host name the server does not answer to.",
    "500": "An internal error: the server logged the details.",
    "503": "Overloaded or not ready yet: retry after a moment.",
    "504": "The model did not answer in time.",
}
SEGMENT = {
    "type": "object",
    "required": ["start", "end", "text"],
    "properties": {"start": {"type": "number"}, "end": {"type": "number"}, "text": {"type": "string"}},
}
TRANSCRIPTION = {  # json, verbose_json and diarized_json: OpenAI's Transcription, TranscriptionVerbose, ...Diarized
    "type": "object",
    "required": ["text"],
    "properties": {
        "text": {"type": "string"},
        "task": {"type": "string"},
        "language": {"type": ["string", "null"]},
        "duration": {"type": "number"},
        "segments": {"type": "array", "items": SEGMENT},
        "words": {"type": "array", "items": {"type": "object", "required": ["word", "start", "end"]}},
        "logprobs": {"type": "array", "items": {"type": "object", "required": ["token", "logprob", "bytes"]}},
        "usage": {
            "type": "object",
            "required": ["type", "seconds"],
            "properties": {"type": {"const": "duration"}, "seconds": {"type": "number"}},
        },
    },
}


def errors(schema: dict = OPENAI_ERROR) -> dict:
    return {
        status: {"description": text, "content": {"application/json": {"schema": schema}}}
        for status, text in STATUSES.items()
    }


def option_schema(name: str) -> dict:
    """An option's form field: its type (a list of temperatures is OpenAI's one number, where the fallback
    starts), its help and the values it takes."""
    field = next(f for f in fields(TranscribeOptions) if f.name == name)
    hint = typing.get_type_hints(TranscribeOptions)[name]
    if isinstance(hint, types.UnionType):  # X | None
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    if typing.get_origin(hint) is tuple:
        hint = typing.get_args(hint)[0]
    kind = {bool: "boolean", int: "integer", float: "number"}.get(hint, "string")
    return {
        "type": kind,
        "description": f"{field.metadata['help']} ({field.metadata['expected'].removeprefix('expected ')})",
    }


def audio_form() -> dict:
    """OpenAI's multipart form for /v1/audio/transcriptions and /translations, with asrflow's fields."""
    listed = {"type": "array", "items": {"type": "string"}}
    properties = {
        "file": {"type": "string", "format": "binary", "description": "The audio (any container PyAV opens)."},
        "model": {"type": "string", "description": "whisper-1, a served model's name or alias (GET /v1/models)."},
        "response_format": {"type": "string", "enum": sorted(FORMATS)},
        "timestamp_granularities[]": {"type": "array", "items": {"type": "string", "enum": ["word", "segment"]}},
        "timestamp_granularities": {"type": "array", "items": {"type": "string", "enum": ["word", "segment"]}},
        "stream": {"type": "boolean", "description": "Server-sent events as segments are decoded."},
        "include[]": {
            "type": "array",
            "items": {"type": "string", "enum": ["logprobs"]},
            "description": "logprobs: "
            "each word's log probability (with response_format json; the ctranslate2 backend).",
        },
        "chunking_strategy": {
            "type": "string",
            "description": '"auto", or {"type": "server_vad", "threshold", "prefix_padding_ms", "silence_duration_ms"} '
            "as JSON, or as the openai client sends an object: chunking_strategy[type]=server_vad, "
            "chunking_strategy[threshold]=0.5 ...",
        },
        "known_speaker_names[]": listed | {"maxItems": OPENAI_SPEAKERS},
        "known_speaker_references[]": listed | {"maxItems": OPENAI_SPEAKERS, "description": "Audio data URLs."},
        **{field: listed for field in NEWER},
        **{field: option_schema(option) for field, option in OPTIONS.items()},
    }
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {"type": "object", "required": ["file"], "properties": properties},
                }
            },
        }
    }


def audio_responses() -> dict:
    """The 200 of the audio routes (their errors are every route's: the app's `responses=errors()`)."""
    return {
        "200": {
            "description": "The transcript, in the response_format asked for; server-sent events when streaming.",
            "content": {
                "application/json": {"schema": TRANSCRIPTION},
                "text/plain": {"schema": {"type": "string"}},
                "text/event-stream": {"schema": {"type": "string"}},
            },
        },
    }


def scoring() -> dict:
    """MLflow's scoring protocol: base64 audio in one of its four input shapes, and params."""
    column = {"type": "array", "items": {}}
    shapes = {
        "dataframe_split": {"type": "object", "properties": {"columns": column, "data": column}},
        "dataframe_records": {"type": "array", "items": {"type": "object"}},
        "instances": column,
        "inputs": {},
    }
    body = {"type": "object", "properties": shapes | {"params": {"type": "object"}}}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": body}}}}


def scoring_responses() -> dict:
    predictions = {"type": "object", "required": ["predictions"], "properties": {"predictions": {"type": "array"}}}
    ok = {"description": "A prediction per input.", "content": {"application/json": {"schema": predictions}}}
    return {"200": ok, **errors(MLFLOW_ERROR)}  # MLflow's error shape, over the app's OpenAI one


def render() -> dict:
    """/render/{format}'s body: a transcript as asrflow's json writes it."""
    transcript = {
        "type": "object",
        "required": ["text"],
        "properties": {"text": {"type": "string"}, "segments": {"type": "array", "items": SEGMENT}},
    }
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": transcript}}}}


def render_responses() -> dict:
    ok = {
        "description": "The transcript written in that format.",
        "content": {"text/plain": {"schema": {"type": "string"}}, "application/json": {"schema": {}}},
    }
    return {"200": ok}


def openapi(app) -> dict:
    """The app's OpenAPI document as FastAPI writes it, less the 422 it adds to every route with a parameter: no
    route here has a parameter FastAPI could refuse (each checks its own, and answers a 400 in its protocol's
    shape); were one added, the fuzzer's status check (tests/test_schema.py) would meet its undocumented 422."""
    if app.openapi_schema is None:
        from fastapi.openapi.utils import get_openapi

        document = get_openapi(title=app.title, version=app.version, routes=app.routes)
        for operations in document["paths"].values():
            for operation in operations.values():
                operation.get("responses", {}).pop("422", None)
        for name in ("HTTPValidationError", "ValidationError"):
            document.get("components", {}).get("schemas", {}).pop(name, None)
        app.openapi_schema = document
    return app.openapi_schema
