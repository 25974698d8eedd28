"""Transcriber: decode any audio, check the options against the model, run the backend."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from asrflow.audio import SAMPLE_RATE, AudioInput, decode_audio
from asrflow.backends import Backend, load_backend
from asrflow.errors import InvalidOptionError, ModelNotFoundError
from asrflow.models import DEFAULT_MODEL, ModelSource, resolve_model
from asrflow.options import TranscribeOptions
from asrflow.transcript import Segment, Transcript
from asrflow.vad import is_silent


class Transcriber:
    """A loaded model: `transcribe(audio, **options) -> Transcript`, for any backend."""

    def __init__(self, backend: Backend, source: ModelSource, options: TranscribeOptions | None = None):
        self.backend = backend
        self.source = source
        self.options = options or TranscribeOptions()

    @property
    def multilingual(self) -> bool:
        return self.backend.multilingual

    def transcribe(
        self,
        audio: AudioInput,
        options: TranscribeOptions | None = None,
        sample_rate: int = SAMPLE_RATE,
        allow_urls: bool = False,
        progress: Callable[[Segment], None] | None = None,
        **changes,
    ) -> Transcript:
        options = self.resolve(changes, options)
        samples = decode_audio(audio, sample_rate=sample_rate, allow_urls=allow_urls)
        if is_silent(samples):
            return Transcript("", options.language or ("en" if not self.multilingual else None), None, len(samples) / SAMPLE_RATE)
        return self.backend.transcribe(samples, options, progress)

    def transcribe_batch(self, samples: list[np.ndarray], options: TranscribeOptions | None = None) -> list[Transcript]:
        """Several decoded clips with the same options, in one model call where the backend can."""
        options = options or self.options
        self.check(options)
        results: list[Transcript | None] = [
            Transcript("", options.language or "en", None, len(s) / SAMPLE_RATE) if is_silent(s) else None for s in samples
        ]
        todo = [i for i, r in enumerate(results) if r is None]
        batch = getattr(self.backend, "transcribe_batch", None)
        if batch and len(todo) > 1:
            done = batch([samples[i] for i in todo], options)
        else:
            done = [self.backend.transcribe(samples[i], options) for i in todo]
        for i, transcript in zip(todo, done):
            results[i] = transcript
        return results

    def resolve(self, changes: dict | None = None, base: TranscribeOptions | None = None) -> TranscribeOptions:
        """This model's options (saved with it, unless `base`) with `changes` from any edge, checked for this model."""
        options = (base or self.options).resolve(changes)
        self.check(options)
        return options

    def check(self, options: TranscribeOptions) -> None:
        if self.multilingual:
            return
        if options.language not in (None, "en"):
            raise InvalidOptionError(
                f"{self.source.name} is English-only and cannot transcribe language {options.language!r}: "
                "use a multilingual model such as bundled:base."
            )
        if options.task == "translate":
            raise InvalidOptionError(
                f"{self.source.name} is English-only and cannot translate: use a multilingual model such as bundled:base."
            )


def load_transcriber(
    model: str = DEFAULT_MODEL,
    backend: str | None = None,
    device: str = "cpu",
    compute_type: str = "default",
    options: TranscribeOptions | None = None,
) -> Transcriber:
    """Load `model` with `backend` (ctranslate2 unless the model says otherwise).

    `model` is a bundled name, a local model directory, a hub id, or an MLflow model URI
    (models:/NAME@alias, models:/NAME/VERSION, runs:/RUN/PATH) or local MLflow model directory.
    """
    from asrflow.registry import is_model_uri

    if (Path(model) / "MLmodel").is_file():
        return transcriber_from_dir(Path(model), model, backend)
    if is_model_uri(model):
        from asrflow.registry import download_model, local_model_dir

        local = local_model_dir(model)
        if local is not None and _is_asrflow_pyfunc(_mlmodel(local)):  # no copy, no MLflow import
            return transcriber_from_dir(local, model, backend)
        return transcriber_from_dir(download_model(model), model, backend)
    source = resolve_model(model)
    return Transcriber(load_backend(backend or "ctranslate2", source, device, compute_type), source, options)


def _mlmodel(path: Path) -> dict:
    import yaml

    return yaml.safe_load((path / "MLmodel").read_text()) or {}


def _is_asrflow_pyfunc(meta: dict) -> bool:
    flavors = meta.get("flavors", {})
    return "transformers" not in flavors and flavors.get("python_function", {}).get("loader_module") == "mlflow.pyfunc.model"


def transcriber_from_dir(path: Path, name: str, backend: str | None = None) -> Transcriber:
    """A Transcriber from a logged model's files: the asrflow flavor or MLflow's transformers flavor."""
    meta = _mlmodel(path)
    if "transformers" in meta.get("flavors", {}):
        return load_transcriber(str(_transformers_flavor_dir(path)), backend=backend or "transformers")
    if _is_asrflow_pyfunc(meta):
        config = meta["flavors"]["python_function"].get("config") or {}
        artifacts = path / "artifacts"
        model_dir = next((p for p in artifacts.iterdir() if p.is_dir()), None) if artifacts.is_dir() else None
        return load_transcriber(
            str(model_dir) if model_dir else config["model"],
            backend=backend or config.get("backend", "ctranslate2"),
            compute_type=config.get("compute_type", "default"),
            options=TranscribeOptions.from_dict(config.get("options")),
        )
    raise ModelNotFoundError(f"{name} is not a Whisper model logged by asrflow or MLflow's transformers flavor.")


def _transformers_flavor_dir(path: Path) -> Path:
    """The transformers flavor splits model and components; gather them in one directory."""
    merged = path / "_asrflow_merged"
    if merged.is_dir():
        return merged
    merged.mkdir()
    for part in [path / "model", *(path / "components").glob("*")]:
        for f in part.iterdir() if part.is_dir() else []:
            if not (merged / f.name).exists():
                (merged / f.name).symlink_to(f.resolve())
    return merged
