"""Reading MLflow's model files: a logged or registered model (asrflow's flavor, or MLflow's transformers flavor,
the tutorial's) -> what to load: the weights or the model it references, the backend, the compute type and the
options saved with it. The library's loader calls this; the flavor (flavor.py) writes these files and calls the
library, never the other way round."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from asrflow.errors import ModelNotFoundError
from asrflow.models import build_once, home_dir, resolve_model
from asrflow.options import TranscribeOptions

FLAVOR_NAME = "asrflow"
REFERENCES = ("bundled", "hub", "local")  # what a reference-only model may name, by default


@dataclass(frozen=True)
class Saved:
    """What an MLflow model says to load: `model` (its weights' directory, or the model it references),
    `backend` and `compute_type` (None and "default": the caller's choice) and the options saved with it."""

    model: str
    backend: str | None
    compute_type: str
    options: TranscribeOptions | None


def is_mlflow_model(model: str) -> bool:
    from asrflow.registry import is_model_uri

    return is_model_uri(model) or (Path(model) / "MLmodel").is_file()


def saved_model(model_uri: str, references: tuple[str, ...] = REFERENCES, name: str | None = None) -> Saved:
    """A models:/, runs:/ or local MLflow model. A registered asrflow model whose files the registry keeps on this
    machine is read in place, not copied. `references`: what a reference-only model may name ("bundled", "hub",
    "local"; a server allows fewer). `name`: how messages refer to the model (default: `model_uri`)."""
    from asrflow.registry import download_model, is_model_uri, local_model_dir

    name = name or model_uri
    if not is_model_uri(model_uri):
        return saved_in(Path(model_uri), name, references)
    local = local_model_dir(model_uri)
    if local is not None and FLAVOR_NAME in read_mlmodel(local).get("flavors", {}):
        return saved_in(local, name, references)
    return saved_in(download_model(model_uri), name, references)


def read_mlmodel(path: Path) -> dict:
    import yaml

    try:
        return yaml.safe_load((path / "MLmodel").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}


def saved_in(path: Path, name: str, references: tuple[str, ...] = REFERENCES) -> Saved:
    """The asrflow flavor's model files, or MLflow's transformers flavor (the tutorial's)."""
    flavors = read_mlmodel(path).get("flavors", {})
    if FLAVOR_NAME in flavors:
        conf = flavors[FLAVOR_NAME]
        files = confined(path, conf, name, references)
        return Saved(
            str(files) if files else conf["model"],
            conf.get("backend", "ctranslate2"),
            conf.get("compute_type", "default"),
            TranscribeOptions.from_dict(conf.get("options")),
        )
    if "transformers" in flavors:
        return Saved(str(_transformers_files(path)), "transformers", "default", None)
    raise ModelNotFoundError(
        f"{name} is not a Whisper model logged with asrflow's flavor or MLflow's transformers flavor: "
        "log it with `asrflow log`."
    )


def confined(path: Path, conf: dict, name: str, references: tuple[str, ...]) -> Path | None:
    """The weights a model's MLmodel names, inside its own directory (None: it references a model by name, which
    must be of a kind in `references`): what an MLmodel says must not make a loader read anything else."""
    if conf.get("model_files"):
        files = (path / str(conf["model_files"])).resolve()
        if not files.is_relative_to(path.resolve()):
            raise ModelNotFoundError(f"{name}'s MLmodel names weights outside its own directory: log it again.")
        return files
    kind = reference_kind(str(conf.get("model") or ""))
    if kind not in references:
        raise ModelNotFoundError(
            f"{name} references a {kind} model, which is not allowed here"
            + (
                " (start the server with --allow-hub to allow hub models)."
                if kind == "hub"
                else ": log it with its weights (not reference-only)."
            )
        )
    return None


def reference_kind(reference: str) -> str:
    """What a reference-only model names: "bundled", "hub" or "local" (a directory, or nothing found)."""
    if reference.startswith("bundled:"):
        return "bundled"
    try:
        return "hub" if resolve_model(reference).format == "hub" else "local"
    except ModelNotFoundError:
        return "local"


def _transformers_files(path: Path) -> Path:
    """The transformers flavor splits model and components; link them into one directory, in asrflow's cache
    (never inside the artifact store)."""

    def link(tmp: Path) -> None:
        for part in [path / "model", *sorted((path / "components").glob("*"))]:
            for f in part.iterdir() if part.is_dir() else []:
                if not (tmp / f.name).exists():
                    (tmp / f.name).symlink_to(f.resolve())

    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    return build_once(home_dir() / "models" / f"mlflow-transformers-{digest}", link)
