"""The MLflow lifecycle in one call each: log either flavor, register, and the tutorial demo."""

from __future__ import annotations

from dataclasses import dataclass

import mlflow

from asrflow.models import DEFAULT_MODEL
from asrflow.options import TranscribeOptions
from asrflow.registry import DEFAULT_EXPERIMENT, register, set_experiment

FLAVORS = ("asrflow", "transformers")


@dataclass(frozen=True)
class LoggedModel:
    model_uri: str
    run_id: str
    flavor: str
    registered: str | None = None  # models:/NAME/VERSION


def log(
    model: str = DEFAULT_MODEL,
    flavor: str = "asrflow",
    backend: str = "ctranslate2",
    reference_only: bool = False,
    experiment: str = DEFAULT_EXPERIMENT,
    register_as: str | None = None,
    alias: str | None = None,
    options: TranscribeOptions | None = None,
) -> LoggedModel:
    """Log `model` in a new run of `experiment`, then optionally register it and set an alias."""
    from asrflow import flavor as asrflow_flavor
    from asrflow import tutorial
    from asrflow.errors import InvalidOptionError

    if flavor not in FLAVORS:
        raise InvalidOptionError(f"unknown flavor {flavor!r}: choose {' or '.join(FLAVORS)}.")
    if flavor == "transformers" and options is not None:
        raise InvalidOptionError(
            "the transformers flavor saves the tutorial's pipeline, which keeps no decoding options: log the "
            "asrflow flavor to save them, or pass them as params with each prediction."
        )
    if options is not None:  # checked for this model before any run starts (language de on an English model...)
        from asrflow.transcriber import load_transcriber

        load_transcriber(model, backend).check(options)
    set_experiment(experiment)
    audio = tutorial.sample_audio()
    with mlflow.start_run() as run:
        mlflow.set_tags(
            {
                "asrflow.model": model,
                "asrflow.flavor": flavor,
                "asrflow.backend": backend if flavor == "asrflow" else "transformers",
            }
        )
        if flavor == "transformers":
            pipeline = tutorial.transcription_pipeline(model)
            signature = tutorial.tutorial_signature(pipeline, audio)
            info = tutorial.log_transformers_model(
                pipeline, audio=audio, signature=signature, reference_only=reference_only, model=model
            )
        else:
            info = asrflow_flavor.log_model(
                model=model, backend=backend, options=options, reference_only=reference_only, input_example=audio
            )
    registered = None
    if register_as:
        version = register(info.model_uri, register_as, alias)
        registered = f"models:/{register_as}/{version.version}"
    return LoggedModel(info.model_uri, run.info.run_id, flavor, registered)


def latest_logged_model(experiment: str = DEFAULT_EXPERIMENT) -> str:
    """The URI of the model logged last in `experiment`."""
    from asrflow.errors import ModelNotFoundError

    experiment_id = set_experiment(experiment)
    models = mlflow.search_logged_models(
        experiment_ids=[experiment_id],
        order_by=[{"field_name": "creation_time", "ascending": False}],
        max_results=1,
        output_format="list",
    )
    if not models:
        raise ModelNotFoundError(f"no model has been logged in experiment {experiment!r}: run `asrflow log` first.")
    return f"models:/{models[0].model_id}"
