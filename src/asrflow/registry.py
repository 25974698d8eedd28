"""Tracking and registry: the default store, experiments, registering, aliases, model URIs."""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import unquote, urlparse

from asrflow.errors import ModelNotFoundError
from asrflow.models import home_dir

DEFAULT_EXPERIMENT = "Whisper Transcription ASR"
MODEL_URI_PREFIXES = ("models:/", "runs:/", "m-")
_REGISTRY_SET_HERE: str | None = None


def embedded_store_uri() -> str:
    return f"sqlite:///{home_dir() / 'mlflow.db'}"


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI if set, else an embedded SQLite store in asrflow's data directory."""
    return os.environ.get("MLFLOW_TRACKING_URI") or embedded_store_uri()


def use_tracking() -> str:
    import mlflow

    if os.environ.get("MLFLOW_LOGGING_LEVEL", "").upper() in ("ERROR", "CRITICAL"):
        from mlflow.utils.logging_utils import disable_logging

        disable_logging()  # its prints ("Successfully registered model ...") follow its log level too
    global _REGISTRY_SET_HERE
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    chosen = os.environ.get("MLFLOW_REGISTRY_URI")  # MLflow's set_registry_uri sets it too
    if not chosen or chosen == _REGISTRY_SET_HERE:  # a registry the user chose stays theirs
        mlflow.set_registry_uri(uri)
        _REGISTRY_SET_HERE = uri
    return uri


def set_experiment(name: str = DEFAULT_EXPERIMENT) -> str:
    """Create (or reuse) the experiment; with the embedded store, artifacts go beside the database."""
    import mlflow

    embedded = use_tracking() == embedded_store_uri()
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is None:
        location = (home_dir() / "mlartifacts").as_uri() if embedded else None
        experiment_id = mlflow.create_experiment(name, artifact_location=location)
    else:
        experiment_id = experiment.experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def is_model_uri(name: str) -> bool:
    return name.startswith(MODEL_URI_PREFIXES)


def register(model_uri: str, name: str, alias: str | None = None, tags: dict | None = None):
    """Register `model_uri` as a new version of `name`, optionally pointing `alias` at it."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    use_tracking()
    try:
        version = mlflow.register_model(model_uri, name, tags=tags)
        if alias:
            MlflowClient().set_registered_model_alias(name, alias, version.version)
    except MlflowException as e:
        raise ModelNotFoundError(
            f"could not register {model_uri} as {name!r} ({e.message.splitlines()[0][:200]}): check the model URI "
            "(`asrflow log` prints it) and the tracking store (MLFLOW_TRACKING_URI)."
        ) from None
    return version


def parse_model_uri(uri: str) -> tuple[str, str | None, str | None] | None:
    """models:/NAME@alias or models:/NAME/VERSION -> (name, alias, version); None for any other model name."""
    found = re.fullmatch(r"models:/([^/@]+)(?:@([\w-]+)|/(\d+))", uri)
    return found.groups() if found else None


def registered_version(uri: str):
    """The registry's ModelVersion behind models:/NAME@alias or models:/NAME/VERSION; None for other names."""
    parsed = parse_model_uri(uri)
    if parsed is None:
        return None
    from mlflow import MlflowClient

    use_tracking()
    name, alias, version = parsed
    client = MlflowClient()
    return client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)


def download_model(uri: str) -> Path:
    """Fetch a logged or registered model's files; say clearly when it does not exist."""
    import mlflow
    from mlflow.exceptions import MlflowException

    use_tracking()
    try:
        return Path(mlflow.artifacts.download_artifacts(uri))
    except MlflowException as e:
        raise not_found(uri, e) from None


def not_found(uri: str, e) -> ModelNotFoundError:
    return ModelNotFoundError(
        f"no model at {uri} in the tracking store {tracking_uri()} ({e.message.splitlines()[0]}): "
        "check the name, version or alias with `mlflow ui`, or set MLFLOW_TRACKING_URI."
    )


def local_model_dir(uri: str) -> Path | None:
    """The files of models:/NAME@alias or models:/NAME/VERSION where the registry keeps them on this machine, to be
    read in place rather than copied (a model's weights are hundreds of MB); None for other names, and where the
    files are elsewhere (the caller downloads them). Asked of MLflow's client, in the store and workspace MLflow
    itself would use; a version it cannot find (or a store it cannot reach) is a ModelNotFoundError at once,
    not asked again by a download."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        version = registered_version(uri)
        if version is None:
            return None
        location = urlparse(MlflowClient().get_model_version_download_uri(version.name, version.version))
    except MlflowException as e:
        raise not_found(uri, e) from None
    if location.scheme not in ("file", ""):
        return None
    path = Path(unquote(location.path))
    return path if (path / "MLmodel").is_file() else None
