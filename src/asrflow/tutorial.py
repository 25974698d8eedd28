"""MLflow's Whisper tutorial, step by step, with the transformers flavor, minus its flaws.

The tutorial: build the pipeline, infer the signature, create the experiment, log with
`mlflow.transformers.log_model`, load natively and as pyfunc. asrflow fixes, at each step:
the torchvision crash (real pip requirements), fp32 weights (kept fp16), the serving example
the server rejects (one-line base64), and a reference-only log that works offline.
"""

from __future__ import annotations

import contextlib
from unittest import mock

import mlflow

from asrflow.audio import decode_audio
from asrflow.backends.transformers import build_pipeline
from asrflow.errors import InvalidOptionError
from asrflow.flavor import compact_example, fix_logged_serving_example, get_default_pip_requirements, provenance
from asrflow.models import DEFAULT_MODEL, resolve_model, transformers_dir

TUTORIAL_PARAMS = {"chunk_length_s": 20, "stride_length_s": [5, 3]}
# where the bundled checkpoints come from, for reference-only logs
UPSTREAM = {"bundled:tiny.en": "openai/whisper-tiny.en", "bundled:base": "openai/whisper-base"}


def transcription_pipeline(model: str = DEFAULT_MODEL):
    """Step 1: the tutorial's pipeline (model, tokenizer, feature extractor; alignment heads set)."""
    return build_pipeline(transformers_dir(resolve_model(model)))


def check_pipeline(pipeline, audio) -> str:
    """Step 1b: transcribe sample audio before saving anything."""
    return pipeline(decode_audio(audio), **TUTORIAL_PARAMS)["text"].strip()


def tutorial_signature(pipeline, audio: bytes):
    """Step 2: binary in, string out, chunking params callers may override (and return_timestamps)."""
    from mlflow.models import infer_signature

    # the pipeline gets samples decoded by PyAV: given bytes, transformers would run an ffmpeg executable
    output = mlflow.transformers.generate_signature_output(pipeline, decode_audio(audio))
    return infer_signature(audio, output, params={**TUTORIAL_PARAMS, "return_timestamps": False})


@contextlib.contextmanager
def _fp16_weights(pipeline):
    """Save fp16 weights when that loses nothing (MLflow saves the in-memory fp32: twice the size)."""
    import torch

    model = pipeline.model
    original = model.dtype
    lossless = original == torch.float32 and all(torch.equal(p, p.half().float()) for p in model.parameters())
    if lossless:
        model.half()
    try:
        yield
    finally:
        model.to(original)


def log_transformers_model(
    pipeline,
    name: str = "whisper",
    audio: bytes | None = None,
    signature=None,
    model_config: dict | None = None,
    reference_only: bool = False,
    model: str = DEFAULT_MODEL,
    registered_model_name: str | None = None,
):
    """Step 4: `mlflow.transformers.log_model`, as the tutorial calls it, in the active run."""
    import torch

    kwargs = {
        "transformers_model": pipeline,
        "name": name,
        "signature": signature,
        "input_example": compact_example(audio),
        "model_config": model_config or dict(TUTORIAL_PARAMS),
        "pip_requirements": get_default_pip_requirements("transformers"),
        "torch_dtype": torch.float32,
        "metadata": {"asrflow": provenance(resolve_model(model), "transformers", "float32")},
        "registered_model_name": registered_model_name,
    }
    with _hub_reference(pipeline, model) if reference_only else _fp16_weights(pipeline):
        info = mlflow.transformers.log_model(save_pretrained=not reference_only, **kwargs)
    fix_logged_serving_example(info)
    return info


@contextlib.contextmanager
def _hub_reference(pipeline, model: str):
    """Point the pipeline at its hub repository so MLflow records a reference, not weights.

    Offline, the hub cannot tell the latest commit; the reference then pins the `main` revision.
    """
    from mlflow.transformers import flavor_config

    repo = UPSTREAM.get(model, model)
    if resolve_model(model).format != "hub" and model not in UPSTREAM:
        raise InvalidOptionError(
            f"reference_only needs a model on the Hugging Face hub; {model} is a local model, so log its weights."
        )
    parts = [pipeline.model, pipeline.tokenizer, pipeline.feature_extractor]
    saved = [getattr(p, "name_or_path", None) for p in parts]
    for part in parts:
        part.name_or_path = repo

    import huggingface_hub

    try:
        revision = huggingface_hub.HfApi().model_info(repo, timeout=5).sha
        offline = False
    except Exception:  # noqa: BLE001 - offline or unreachable: pin the branch, and skip MLflow's hub look-ups
        revision, offline = "main", True
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(mock.patch.object(flavor_config, "get_latest_commit_for_repo", lambda _: revision))
            if offline:
                stack.enter_context(mock.patch.object(huggingface_hub.constants, "HF_HUB_OFFLINE", True))
            yield
    finally:
        for part, name in zip(parts, saved):
            part.name_or_path = name


def sample_audio() -> bytes:
    from importlib.resources import files

    return (files("asrflow") / "samples" / "jfk.flac").read_bytes()
