"""MLflow's scoring protocol for Whisper: pyfunc inputs -> audio, params -> options, transcripts -> outputs.

Shared by the flavor's pyfunc (stock `mlflow models serve`) and asrflow's own `/invocations`. Imports no MLflow:
errors are asrflow's own (InvalidOptionError), mapped to MLflow's by the flavor and to HTTP 400 by the server.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import Any

import numpy as np

from asrflow.errors import InvalidOptionError
from asrflow.options import TranscribeOptions, flag
from asrflow.writers import WRITERS

RESPONSE_FORMATS = ("text", "json", "verbose_json", "srt", "vtt", "tsv")
OUTPUT_PARAMS = ("return_timestamps", "response_format")  # shape the output; every other param is an option
AUDIO_MAGIC = (b"RIFF", b"fLaC", b"OggS", b"ID3\x03", b"ID3\x04", b"\x1aE\xdf\xa3")


def param_names() -> list[str]:
    return TranscribeOptions.param_names() + list(OUTPUT_PARAMS)


def parse_params(transcriber, params: dict[str, Any] | None) -> tuple[TranscribeOptions, tuple[str, bool]]:
    """Params -> options for this model, plus how to shape the output; bad names or values name themselves."""
    if params is not None and not isinstance(params, dict):
        raise InvalidOptionError(f"params must be a JSON object of names and values, not a {type(params).__name__}.")
    params = dict(params or {})
    unknown = sorted(set(map(str, params)) - set(param_names()))
    if unknown:
        raise InvalidOptionError(
            f"unknown param(s) {', '.join(unknown)}: an asrflow model takes {', '.join(param_names())}."
        )
    response_format = params.pop("response_format", "text") or "text"
    if response_format not in RESPONSE_FORMATS:
        raise InvalidOptionError(
            f"response_format cannot be {str(response_format)[:40]!r}: use one of {', '.join(RESPONSE_FORMATS)}."
        )
    timestamps = flag("return_timestamps", params.pop("return_timestamps", False))
    return transcriber.resolve(params), (response_format, timestamps)


def scoring_items(payload) -> list:
    """The audio items of a scoring request: `inputs`, `instances`, `dataframe_split` or `dataframe_records`."""
    formats = "send a JSON object with 'inputs', 'instances', 'dataframe_split' or 'dataframe_records'"
    if not isinstance(payload, dict):
        raise InvalidOptionError(f"the body is not a JSON object: {formats}.")
    if "inputs" in payload or "instances" in payload:
        inputs = payload["inputs"] if "inputs" in payload else payload["instances"]
        if isinstance(inputs, dict):
            inputs = next(iter(inputs.values()), None)
    elif "dataframe_split" in payload:
        data = payload["dataframe_split"].get("data") if isinstance(payload["dataframe_split"], dict) else None
        inputs = [row[0] for row in data if isinstance(row, list) and row] if isinstance(data, list) else None
    elif "dataframe_records" in payload:
        records = payload["dataframe_records"]
        inputs = (
            [next(iter(r.values())) for r in records if isinstance(r, dict) and r]
            if isinstance(records, list)
            else None
        )
    else:
        raise InvalidOptionError(f"no inputs: {formats}.")
    items = inputs if isinstance(inputs, list) else [] if inputs is None else [inputs]
    if not items:
        raise InvalidOptionError(f"no audio in the request: {formats}, holding base64-encoded audio.")
    return items


def format_results(results: list, response_format: str = "text", timestamps: bool = False) -> list:
    """Text per input by default; structured transcripts (not JSON strings) with timestamps."""
    if timestamps or response_format == "verbose_json":
        return [r.to_dict() for r in results]
    if response_format == "json":
        return [{"text": r.text} for r in results]
    if response_format == "text":
        return [r.text for r in results]
    return [WRITERS[response_format](r) for r in results]


def audio_inputs(model_input, paths: bool = True) -> list:
    """The audio items of any pyfunc input: a DataFrame column, a list, an array, bytes or base64 (and, with
    `paths`, local file paths)."""
    import pandas as pd

    if isinstance(model_input, pd.DataFrame):
        items = model_input.iloc[:, 0].tolist()
    elif isinstance(model_input, pd.Series):
        items = model_input.tolist()
    elif isinstance(model_input, np.ndarray) and model_input.dtype != object and model_input.dtype.kind == "f":
        items = [model_input]
    elif isinstance(model_input, (list, tuple, np.ndarray)):
        items = list(model_input)
    elif isinstance(model_input, dict):
        items = list(model_input.values())[:1]
        items = items[0] if items and isinstance(items[0], list) else items
    else:
        items = [model_input]
    return [unwrap(item, paths) for item in items]


def unwrap(item, paths: bool = True):
    """Serving sends base64 text, with or without line breaks; raw bytes and URLs pass through, and so do local
    paths where `paths` allows them. Served (`paths=False`), any other text is refused alike whether or not a file
    of that name exists: a client must neither read the server's files nor learn which exist."""
    if isinstance(item, np.bytes_):
        item = bytes(item)
    if isinstance(item, str) and not (paths and _is_file(item)) and not item.startswith(("http://", "https://")):
        try:
            return base64.b64decode("".join(item.split()), validate=True)
        except (binascii.Error, ValueError):
            if paths:
                return item
            raise InvalidOptionError(
                "each input must be base64-encoded audio (or an http(s) URL, where the server allows them)."
            ) from None
    if isinstance(item, (bytes, bytearray)) and not bytes(item[:4]).startswith(AUDIO_MAGIC):
        try:
            return base64.b64decode(b"".join(bytes(item).split()), validate=True)
        except (binascii.Error, ValueError):
            return bytes(item)
    if not paths and not isinstance(item, (str, bytes, bytearray)):  # served: nothing else is audio
        raise InvalidOptionError(
            "each input must be base64-encoded audio (or an http(s) URL, where the server allows them)."
        )
    return item


def _is_file(text: str) -> bool:
    try:
        return len(text) < 4096 and Path(text).is_file()
    except OSError:
        return False
