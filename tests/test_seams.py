"""Canaries: the internals of other packages that asrflow leans on (issue 38), each checked where it lives, so that a
release that moves one fails here, naming it and what asrflow needs of it, instead of silently costing accuracy."""

import inspect

import pytest

SEAMS = {
    "BatchedInferencePipeline.generate_segment_batched encodes through self.model.encode": (
        "faster_whisper.transcribe:BatchedInferencePipeline.generate_segment_batched",
        "self.model.encode(",
        "the batched pipeline's model copy has TrimmedEncoder as its encode (backends/ctranslate2.py, encoder.py)",
    ),
    "BatchedInferencePipeline.generate_segment_batched decodes through self.model.model.generate": (
        "faster_whisper.transcribe:BatchedInferencePipeline.generate_segment_batched",
        "self.model.model.generate(",
        "PerItemPrompts stands in for WhisperModel.model and gives each item its own prompt (backends/prompts.py)",
    ),
    "BatchedInferencePipeline.transcribe computes features through self.model.feature_extractor": (
        "faster_whisper.transcribe:BatchedInferencePipeline.transcribe",
        "self.model.feature_extractor(",
        "SilencePaddedExtractor marks a region's frames for padding with silence (backends/features.py)",
    ),
    "BatchedInferencePipeline.transcribe pads each region with pad_or_trim": (
        "faster_whisper.transcribe:BatchedInferencePipeline.transcribe",
        "pad_or_trim(",
        "a region's frames go through pad_or_trim, whose np.pad SilencePadded catches (backends/features.py)",
    ),
    "pad_or_trim pads with np.pad": (
        "faster_whisper.audio:pad_or_trim",
        "np.pad(",
        "SilencePadded pads with the spectrogram's floor, not zeros, by catching np.pad (the fast path's dropped "
        + "last words of a window; README, Performance)",
    ),
    "WhisperModel.generate_segments encodes through self.encode": (
        "faster_whisper.transcribe:WhisperModel.generate_segments",
        "self.encode(",
        "the sequential decoder's copy has TrimmedEncoder as its encode (backends/ctranslate2.py)",
    ),
    "FeatureExtractor keeps its window as n_samples and nb_max_frames": (
        "faster_whisper.feature_extractor:FeatureExtractor.__init__",
        "self.nb_max_frames = self.n_samples // hop_length",
        "WindowedExtractor sets both for a shorter chunk_length (backends/features.py) and the language detection "
        + "reads them (backends/ctranslate2.py)",
    ),
    "WhisperModel.transcribe computes features through self.feature_extractor": (
        "faster_whisper.transcribe:WhisperModel.transcribe",
        "self.feature_extractor(",
        "WindowedExtractor computes the spectrogram a window at a time: bounded memory (backends/features.py)",
    ),
    "transformers' beam search reorders the cache through the model's _reorder_cache": (
        "transformers.generation.utils:GenerationMixin._beam_search",
        "self._reorder_cache(",
        "the transformers backend's beam search skips the cross-attention copy through this hook, 1.75x "
        + "(backends/transformers.py)",
    ),
    "mlflow models serve loads the model while its app module is imported": (
        "mlflow.pyfunc.scoring_server.app",
        "app = scoring_server.init(\n    scoring_server.load_model_with_mlflow_config(os.environ[scoring_server._SERVER_MODEL_PATH])",
        "asrflow tells it is in the scoring server's process by that module being imported (flavor_serving.py)",
    ),
    "mlflow models serve runs that app module, with the model's path in __pyfunc_model_path__": (
        "mlflow.pyfunc.scoring_server",
        '_SERVER_MODEL_PATH = "__pyfunc_model_path__"',
        "flavor_serving.in_scoring_server reads that variable (MODEL_PATH_VARIABLE)",
    ),
    "the scoring server's command starts uvicorn on that app module": (
        "mlflow.pyfunc.scoring_server:get_cmd",
        "mlflow.pyfunc.scoring_server.app:app",
        "flavor_serving.in_scoring_server looks for that module (SERVER_MODULE)",
    ),
    "pyfunc checks params with _enforce_params_schema, looked up in its module": (
        "mlflow.pyfunc:_validate_prediction_input",
        "_enforce_params_schema(params, params_schema)",
        "in the scoring server, unknown params of an asrflow model are a 400 through this name (flavor_serving.py)",
    ),
    "_enforce_params_schema lives in mlflow.models.utils": (
        "mlflow.models.utils:_enforce_params_schema",
        "def _enforce_params_schema(params",
        "flavor_serving.py wraps it there and in mlflow.pyfunc, which imports it by name",
    ),
    "the scoring server calls invocations by its module's name": (
        "mlflow.pyfunc.scoring_server:init",
        "invocations, data, content_type, model, input_schema",
        "in the scoring server, asrflow's errors come without the request's payload through this name "
        + "(flavor_serving.py)",
    ),
    "invocations puts the request's data into prediction errors before 'Error:'": (
        "mlflow.pyfunc.scoring_server:invocations",
        "Failed to predict data '{data}'. \\nError: {e.message}",
        "flavor_serving.py cuts the payload at that separator (ERROR_SEPARATOR)",
    ),
    "the scoring server's invalid-JSON error quotes the parser's exception after ' Error: '": (
        "mlflow.pyfunc.scoring_server:_decode_json_input",
        "Ensure that input is a valid JSON formatted string. \"\n            f\"Error: '{ex!r}'",
        "flavor_serving.py cuts a parse error off there, before the quoted body (PARSE_ERROR)",
    ),
}


_LOADS_A_MODEL = {"mlflow.pyfunc.scoring_server.app"}


def source_of(target: str) -> str:
    import importlib.util

    module, _, path = target.partition(":")
    obj = importlib.import_module(module) if path or module not in _LOADS_A_MODEL else None
    if obj is None:  # a module that runs on import (the scoring server's app): read, not imported
        spec = importlib.util.find_spec(module)
        assert spec is not None, f"{module} is gone"
        return spec.loader.get_source(module)
    for name in filter(None, path.split(".")):
        obj = getattr(obj, name, None)
        assert obj is not None, f"{target} is gone"
    return inspect.getsource(obj)


@pytest.mark.check
@pytest.mark.parametrize("seam", list(SEAMS))
def test_the_internals_asrflow_leans_on_are_where_it_expects_them(seam):
    target, needle, need = SEAMS[seam]
    assert needle in source_of(target), f"{target} no longer has {needle!r}: {need}. Check the seam before upgrading."


@pytest.mark.check
def test_transformers_whisper_language_names_are_where_the_server_reads_them():
    """openai_audio's verbose_json names the language as OpenAI does ("english"), from transformers' table."""
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    assert LANGUAGES["en"] == "english" and LANGUAGES["de"] == "german"


# Run in a fresh interpreter: every module it names is imported before asrflow, and its attributes' identities
# (and sys.modules's entries, warnings' hooks and filters, the environment) recorded before and after asrflow is
# imported, loads a model, transcribes, and MLflow loads and predicts a registered asrflow model.
UNTOUCHED = r"""
import json, logging, os, sys, warnings
import ctranslate2, faster_whisper, faster_whisper.transcribe, numpy, starlette, starlette.formparsers, transformers
import mlflow, mlflow.models.utils, mlflow.pyfunc, mlflow.pyfunc.scoring_server, transformers.utils.logging
names = [
    "transformers.utils.logging", "logging",
    "mlflow", "mlflow.pyfunc", "mlflow.models.utils", "mlflow.pyfunc.scoring_server", "faster_whisper",
    "faster_whisper.transcribe", "ctranslate2", "numpy", "starlette", "starlette.formparsers", "transformers",
    "warnings",
]

def state():  # the objects themselves (vars: no lazy name of transformers is loaded by looking)
    attributes = {n: dict(vars(sys.modules[n])) for n in names}
    levels = {k: v.level for k, v in logging.root.manager.loggerDict.items() if isinstance(v, logging.Logger)}
    return attributes, dict(sys.modules), list(warnings.filters), dict(os.environ), levels

# transformers' own first use replaces its lazy module in sys.modules, and the packages it then imports add warning
# filters (numpy, scipy, sympy): the same with transformers alone, so it happens before the snapshot
import transformers.pipelines
transformers.WhisperForConditionalGeneration, transformers.AutoTokenizer, transformers.AutoFeatureExtractor
changed_marker = object()
before = state()
import asrflow
from asrflow import blocks, load_transcriber
audio = open(sys.argv[1], "rb").read()
text = load_transcriber("bundled:tiny.en").transcribe(audio).text
load_transcriber("bundled:tiny.en", backend="transformers").transcribe(audio)
predicted = mlflow.pyfunc.load_model("models:/untouched/1").predict([audio])[0]
after = state()
changed = [f"{n}.{a}" for n in names for a, v in before[0][n].items() if after[0][n].get(a, changed_marker) is not v]
# a submodule imported since is no patch, nor a name the lazy transformers module loaded from itself
def own(n, a, v):
    return type(v).__name__ == "module" and v.__name__ == f"{n}.{a}" or (
        n == "transformers" and getattr(v, "__module__", "").startswith("transformers."))
added = [f"{n}.{a}" for n in names for a, v in after[0][n].items() if a not in before[0][n] and not own(n, a, v)
         and a != "__warningregistry__"]
levels = sorted(k for k, level in before[4].items() if after[4].get(k) != level)
modules = [m for m, v in before[1].items() if after[1].get(m) is not v]
placeholders = [m for m, v in after[1].items() if v is None and m not in before[1]]
environment = sorted(k for k in set(before[3]) | set(after[3]) if before[3].get(k) != after[3].get(k))
print(json.dumps({"changed": changed, "added": added, "modules": modules, "placeholders": placeholders,
    "filters": before[2] != after[2], "environment": environment, "heap_setting": blocks._heap_kept,
    "levels": levels,
    "texts": [text, predicted]}))
"""


def test_asrflow_patches_nothing_and_leaks_no_process_setting(tmp_path):
    """Importing asrflow, loading and transcribing (both backends), and MLflow loading a registered asrflow model and
    predicting: no attribute of MLflow, faster-whisper, CTranslate2, numpy, Starlette, transformers (its logging
    included), logging or warnings is replaced, no logger's level changed, nothing is hidden in sys.modules, no
    warning filter or environment variable is set, and the allocator is left alone (asrflow's entry points set it: the CLI, the server, the Spark worker; flavor_serving's wrappers
    only in `mlflow models serve`'s process)."""
    import json
    import os
    import subprocess
    import sys

    from conftest import JFK_TEXT, SAMPLE
    from mlflow import MlflowClient

    from asrflow.flavor import save_model
    from asrflow.metrics import word_error_rate

    # registered from here, without setting this process's MLflow state: the child only loads it
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    save_model(tmp_path / "model", "bundled:tiny.en", reference_only=True)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model("untouched")
    client.create_model_version("untouched", source=str(tmp_path / "model"))
    # transformers' pipeline sets TOKENIZERS_PARALLELISM when it runs, unless it is set: set here, as it would be
    # for a pipeline of transformers' own
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "TOKENIZERS_PARALLELISM": "false"}
    env.pop("MLFLOW_REGISTRY_URI", None)
    result = subprocess.run(
        [sys.executable, "-c", UNTOUCHED, str(SAMPLE)], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert all(word_error_rate([JFK_TEXT], [t]) < 0.15 for t in seen.pop("texts"))  # it did the work
    assert seen == {
        "changed": [],
        "added": [],
        "modules": [],
        "placeholders": [],
        "filters": False,
        "environment": [],
        "heap_setting": False,
        "levels": [],
    }


@pytest.mark.check
@pytest.mark.parametrize(
    "target, parameters, need",
    [
        (
            "mlflow.models.utils:_save_example",
            ["mlflow_model", "input_example", "path"],
            "flavor.save_model writes the model's input example with it, as MLflow's own flavors do",
        ),
        (
            "mlflow.utils.environment:_mlflow_conda_env",
            ["additional_pip_deps"],
            "flavor.save_model writes conda.yaml with it",
        ),
        (
            "mlflow.utils.environment:_PythonEnv.current",
            [],
            "flavor.save_model writes python_env.yaml with _PythonEnv.current().to_yaml(path)",
        ),
        (
            "transformers.models.whisper.modeling_whisper:WhisperEncoderLayer.forward",
            ["hidden_states", "attention_mask"],
            "the OpenVINO encoder traces Whisper's encoder calling each layer as layer(x, None) "
            + "(backends/openvino_encoder.py)",
        ),
    ],
)
def test_the_private_functions_asrflow_calls_take_what_it_passes(target, parameters, need):
    import importlib

    module, _, path = target.partition(":")
    obj = importlib.import_module(module)
    for name in path.split("."):
        obj = getattr(obj, name, None)
        assert obj is not None, f"{target} is gone: {need}"
    taken = list(inspect.signature(obj).parameters)
    assert all(p in taken for p in parameters), f"{target} takes {taken}, not {parameters}: {need}"
    if path.startswith("_PythonEnv"):
        assert callable(getattr(obj(), "to_yaml", None)), f"_PythonEnv has no to_yaml: {need}"
