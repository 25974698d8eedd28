"""`asrflow demo`: every step of MLflow's Whisper tutorial, offline, on the bundled model."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import mlflow

from asrflow.metrics import normalize
from asrflow.models import DEFAULT_MODEL
from asrflow.registry import DEFAULT_EXPERIMENT, register, set_experiment, tracking_uri
from asrflow.writers import format_timestamp


def run_demo(echo: Callable[[str], None] = print, model: str = DEFAULT_MODEL, name: str = "whisper-tiny-en") -> dict:
    from asrflow import flavor, tutorial
    from asrflow.audio import decode_audio
    from asrflow.transcriber import load_transcriber

    started = time.perf_counter()
    audio = tutorial.sample_audio()
    echo(f"asrflow demo: MLflow's Whisper tutorial on {model}, offline\n")

    echo("1. Transcription pipeline (model + tokenizer + feature extractor), checked on the sample:")
    pipeline = tutorial.transcription_pipeline(model)
    echo(f"   {tutorial.check_pipeline(pipeline, audio)}")
    result = load_transcriber(model).transcribe(audio)
    for segment in result.segments:
        echo(f"   [{format_timestamp(segment.start)} --> {format_timestamp(segment.end)}] {segment.text}")

    echo("\n2. Signature inferred from a real transcription:")
    signature = tutorial.tutorial_signature(pipeline, audio)
    for line in str(signature).strip().splitlines():
        echo(f"   {line}")

    experiment_id = set_experiment(DEFAULT_EXPERIMENT)
    echo(f"\n3. Experiment {DEFAULT_EXPERIMENT!r} (id {experiment_id}) in {tracking_uri()}")

    echo("\n4. Logging both flavors:")
    with mlflow.start_run(run_name="whisper-tutorial") as run:
        hf_info = tutorial.log_transformers_model(pipeline, audio=audio, signature=signature, model=model)
        echo(f"   transformers flavor (mlflow.transformers.log_model): {hf_info.model_uri}")
        ref_info = tutorial.log_transformers_model(
            pipeline, name="whisper-reference", audio=audio, signature=signature, model=model, reference_only=True
        )
        echo(f"   transformers flavor, reference only:                {ref_info.model_uri}")
        af_info = flavor.log_model(model=model, input_example=audio)
        echo(f"   asrflow flavor (CTranslate2):                       {af_info.model_uri}")

    echo("\n5. Loading back and transcribing the sample:")
    native = mlflow.transformers.load_model(hf_info.model_uri)
    texts = {
        "native transformers pipeline": native(decode_audio(audio), **tutorial.TUTORIAL_PARAMS)["text"].strip(),
        "transformers flavor as pyfunc": mlflow.pyfunc.load_model(hf_info.model_uri).predict([audio])[0],
        "asrflow flavor as pyfunc": mlflow.pyfunc.load_model(af_info.model_uri).predict([audio])[0],
    }
    for label, text in texts.items():
        echo(f"   {label + ':':31} {text}")
    match = len({normalize(t) for t in texts.values()}) == 1
    echo(f"   the three transcripts {'match' if match else 'DIFFER'} (after Whisper's English normalizer)")

    echo("\n6. Registry:")
    version = register(af_info.model_uri, name, alias="champion")
    hf_version = register(hf_info.model_uri, f"{name}-transformers", alias="champion")
    echo(f"   models:/{name}@champion -> version {version.version} (asrflow flavor)")
    echo(f"   models:/{name}-transformers@champion -> version {hf_version.version} (transformers flavor)")
    echo(f"   check: {load_transcriber(f'models:/{name}@champion').transcribe(audio).text}")

    echo(f"\nNext (in a shell where `source {Path(sys.executable).parent}/activate` was run):")
    echo(f"   mlflow ui --backend-store-uri {tracking_uri()}")
    echo(
        f"   MLFLOW_TRACKING_URI={tracking_uri()} mlflow models serve -m models:/{name}@champion --env-manager local -p 5001"
    )
    echo(f"\ndone in {time.perf_counter() - started:.0f} s (run {run.info.run_id})")
    return {"texts": texts, "match": match, "run_id": run.info.run_id, "version": version.version}
