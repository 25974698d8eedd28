"""The models a server answers with: chosen per request by name, loaded on first use, kept in an LRU.

The server's default model loads at start. Any other model a request names (the OpenAI `model` field, the
MLflow scoring param `model`, a realtime session's transcription model) loads on first use, off the event loop
and once however many requests ask for it at the same moment, into an LRU of at most `max_models`; a model
other than the default is unloaded once idle for `model_ttl_s`. An evicted model stays in memory until the
requests already using it are answered. Only registered models (models:/NAME@alias, models:/NAME/VERSION),
bundled names and configured aliases can be asked for: a request never makes the server read a path or a hub.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass, field

from asrflow.errors import AsrflowError, ModelNotFoundError
from asrflow.registry import parse_model_uri
from asrflow.server.errors import HTTPError

LOG = logging.getLogger("asrflow.server")
DEFAULT_ALIASES = ("whisper-1",)  # OpenAI's name: clients send it, it means the server's default


@dataclass
class Served:
    """A loaded model and what identifies it to people: name, registered name, version, alias, backend."""

    name: str
    transcriber: object
    identity: dict
    used: float = field(default_factory=time.monotonic)

    @property
    def headers(self) -> dict:
        """What answered, on every response: the model and, for a registered one, its version."""
        version = self.identity.get("version")
        return {"x-asrflow-model": self.name} | ({"x-asrflow-model-version": str(version)} if version else {})


class ModelPool:
    def __init__(
        self,
        default: str,
        backend: str | None,
        max_models: int = 2,
        ttl_s: float = 600.0,
        aliases: dict[str, str] | None = None,
        transcriber=None,
        on_load=None,
        allow_hub: bool = False,
    ):
        if max_models < 1:
            raise ValueError("max_models must be at least 1.")
        self.default, self.backend, self.max_models, self.ttl_s = default, backend, max_models, ttl_s
        self.aliases = {alias: default for alias in DEFAULT_ALIASES} | dict(aliases or {})
        self.models: OrderedDict[str, Served] = OrderedDict()  # least recently used first
        self.loading: dict[str, Future] = {}
        self.lock = threading.Lock()
        self.preloaded = transcriber  # the default, already loaded by the caller (tests, embedding)
        self.on_load = on_load  # hears the name of each model loaded (metrics)
        # what a registered model's metadata may point at: never a directory of this machine; the hub if allowed
        self.references = ("bundled", "hub") if allow_hub else ("bundled",)
        threading.Thread(target=self._sweep, name="asrflow-model-ttl", daemon=True).start()

    def canonical(self, requested: str | None) -> str:
        """The model a request's name means: empty, the default's name or an alias -> the default."""
        if requested is not None and not isinstance(requested, str):
            raise HTTPError(400, "model must be a model's name, as GET /v1/models lists them.", "model")
        name = (requested or "").strip()
        name = self.aliases.get(name, name) or self.default
        if name == self.default or parse_model_uri(name) or name.startswith("bundled:"):
            return name
        raise HTTPError(
            404,
            f"the model {name!r} does not exist here: GET /v1/models lists what this server answers "
            "with (models:/NAME@alias, models:/NAME/VERSION, bundled:NAME, whisper-1).",
            "model",
            code="model_not_found",
        )

    async def get(self, requested: str | None) -> Served:
        """The loaded model, loading it first if need be (in a thread; one load per model at a time)."""
        return await asyncio.wrap_future(self.load(self.canonical(requested)))

    def load(self, name: str) -> Future:
        with self.lock:
            if (served := self.models.get(name)) is not None:
                self.models.move_to_end(name)
                served.used = time.monotonic()
                done: Future = Future()
                done.set_result(served)
                return done
            if name in self.loading:
                return self.loading[name]
            if len(self.loading) >= self.max_models:  # each load holds a model's memory until it is trimmed
                raise HTTPError(
                    503,
                    f"{len(self.loading)} models are loading: retry shortly.",
                    "model",
                    headers={"Retry-After": "10"},
                )
            future = self.loading[name] = Future()
        threading.Thread(target=self._load, args=(name, future), name="asrflow-load", daemon=True).start()
        return future

    def _load(self, name: str, future: Future) -> None:
        from asrflow.transcriber import load_transcriber

        try:
            preloaded = self.preloaded if name == self.default else None
            transcriber = preloaded or load_transcriber(name, backend=self.backend, references=self.references)
            served = Served(name, transcriber, model_identity(name) | {"backend": transcriber.backend.name})
            if self.on_load:
                self.on_load(name)
        except Exception as e:  # noqa: BLE001 - the requests waiting for it hear why
            with self.lock:
                del self.loading[name]
            future.set_exception(load_error(name, e))
            return
        with self.lock:
            self.models[name] = served
            del self.loading[name]
            while len(self.models) > self.max_models:  # the least recently used; never the default (pinned)
                evicted = next(n for n in self.models if n != self.default)
                del self.models[evicted]
                LOG.info("unloaded %s (least recently used; at most %d models)", evicted, self.max_models)
        future.set_result(served)

    def loaded(self) -> list[Served]:
        with self.lock:
            return list(self.models.values())

    def _sweep(self) -> None:
        """Unload models other than the default once idle for the TTL."""
        while True:
            time.sleep(max(0.5, min(self.ttl_s / 4, 30.0)))
            now = time.monotonic()
            with self.lock:
                for name in [n for n, s in self.models.items() if n != self.default and now - s.used > self.ttl_s]:
                    del self.models[name]
                    LOG.info("unloaded %s (idle for %g s)", name, self.ttl_s)


def load_error(name: str, error: Exception) -> HTTPError:
    """An unknown model (ModelNotFoundError: the registry's lookups raise it too) is a 404; one that exists but
    cannot be loaded here a 400; anything else a 503."""
    if isinstance(error, HTTPError):
        return error
    # the error's own text may name the tracking store or this machine's paths: logged, never sent
    if isinstance(error, ModelNotFoundError):
        LOG.warning("model %s not found: %s", name, error)
        return HTTPError(
            404,
            f"the model {name!r} does not exist here: GET /v1/models lists the models this server answers with.",
            "model",
            code="model_not_found",
        )
    if isinstance(error, AsrflowError):
        LOG.warning("model %s could not be loaded: %s", name, error)
        return HTTPError(
            400, f"the model {name!r} exists but cannot be loaded by this server (its log says why).", "model"
        )
    LOG.error("loading %s failed", name, exc_info=error)
    return HTTPError(
        503,
        f"the model {name!r} could not be loaded: retry later, or ask for another.",
        "model",
        headers={"Retry-After": "10"},
    )


def catalogue(pool: ModelPool) -> list[dict]:
    """What a request may name, in OpenAI's model shape: aliases, the default, bundled models installed here,
    and every registered model's aliases and versions (when the registry answers)."""
    from asrflow.models import installed_bundled

    loaded = {served.name for served in pool.loaded()}
    entries = {name: ("asrflow", 0) for name in [*pool.aliases, pool.default, *installed_bundled()]}
    try:
        entries |= registered_models()
    except Exception as e:  # noqa: BLE001 - the registry may be down: list what is known without it
        LOG.warning("the model registry did not answer (%s): /v1/models lists no registered models", e)
    return [
        {
            "id": name,
            "object": "model",
            "created": created,
            "owned_by": owner,
            "loaded": pool.aliases.get(name, name) in loaded,
        }
        for name, (owner, created) in entries.items()
    ]


def registered_models() -> dict[str, tuple[str, int]]:
    """models:/NAME@alias and models:/NAME/VERSION of every registered model -> (name, created, in seconds)."""
    from mlflow import MlflowClient

    from asrflow.registry import use_tracking

    use_tracking()
    client, entries = MlflowClient(), {}
    for model in client.search_registered_models():
        versions = {v.version: v for v in client.search_model_versions(f"name = '{model.name}'")}
        for alias, number in sorted(model.aliases.items()):
            created = getattr(versions.get(str(number)), "creation_timestamp", 0) or 0
            entries[f"models:/{model.name}@{alias}"] = (model.name, created // 1000)
        for number, version in sorted(versions.items(), key=lambda item: int(item[0])):
            entries[f"models:/{model.name}/{number}"] = (model.name, (version.creation_timestamp or 0) // 1000)
    return entries


def model_identity(model: str) -> dict:
    """Registered name, version and alias behind a models:/ URI, for people to see what answered."""
    from asrflow.registry import parse_model_uri, registered_version

    identity = {"model": model}
    if (parsed := parse_model_uri(model)) is None:
        return identity
    name, alias, number = parsed
    if not alias:
        return identity | {"name": name, "version": number}
    try:
        return identity | {"name": name, "alias": alias, "version": str(registered_version(model).version)}
    except Exception:  # noqa: BLE001 - identity is informative only
        return identity
