"""The served model: its configuration, loading in the background, identity, readiness and admission."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field

import numpy as np
from fastapi import Request
from starlette.concurrency import run_in_threadpool

from asrflow.audio import SAMPLE_RATE, decode_audio
from asrflow.errors import AsrflowError, AudioDecodeError
from asrflow.options import TranscribeOptions
from asrflow.server.errors import HTTPError
from asrflow.server.metrics import ServerMetrics
from asrflow.server.scheduler import Batcher
from asrflow.transcript import Transcript


@dataclass
class ServerConfig:
    model: str = "bundled:tiny.en"
    backend: str | None = None
    api_key: str | None = None
    max_batch_size: int = 8
    max_wait_ms: float = 15.0
    queue_size: int = 64
    timeout_s: float = 300.0
    max_upload_mb: float = 25.0
    max_audio_minutes: float = 120.0  # per request: a small compressed file can hold hours of audio
    max_queued_audio_minutes: float = 240.0  # admitted and not yet answered, all requests together
    allowed_url_hosts: tuple[str, ...] = field(default_factory=tuple)

    @property
    def max_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)


class ModelHolder:
    """Loads the model in the background (/health answers at once), then serves it through one Batcher."""

    def __init__(self, config: ServerConfig, metrics: ServerMetrics, transcriber=None):
        self.config, self.metrics = config, metrics
        self.transcriber, self.scheduler, self.error = transcriber, None, None
        self.info = {"model": config.model}
        threading.Thread(target=self._load, name="asrflow-load", daemon=True).start()

    def _load(self) -> None:
        try:
            from asrflow.transcriber import load_transcriber

            self.transcriber = self.transcriber or load_transcriber(self.config.model, backend=self.config.backend)
            self.info = model_identity(self.config.model) | {"backend": self.transcriber.backend.name}
            config = self.config
            self.scheduler = Batcher(self.transcriber, config.max_batch_size, config.max_wait_ms / 1000, config.queue_size,
                                     config.max_queued_audio_minutes * 60)
            self.metrics.queue.set_function(self.scheduler.queue.qsize)
            self.metrics.admitted.set_function(lambda: self.scheduler.admitted_s)
        except Exception as e:  # noqa: BLE001 - reported by /ready
            self.error = str(e)

    def batcher(self) -> Batcher:
        if self.scheduler is None:
            reason = f": {self.error}" if self.error else " yet"
            raise HTTPError(503, f"the model is not loaded{reason}.", headers={"Retry-After": "5"})
        return self.scheduler

    def resolve(self, changes: dict) -> TranscribeOptions:
        return self.batcher().transcriber.resolve(changes)

    async def decode(self, data, allow_urls: bool = False) -> np.ndarray:
        """Audio of one request, within the duration limit (413), or a clear 400."""
        try:
            return await run_in_threadpool(decode_audio, data, allow_urls=allow_urls,
                                           max_seconds=self.config.max_audio_minutes * 60)
        except AudioDecodeError as e:
            raise HTTPError(e.http_status, str(e), "file") from None

    async def run(self, clips: list[np.ndarray], options: TranscribeOptions) -> list[Transcript]:
        """Transcribe the clips of one request, admitted together; a timeout cancels what has not started."""
        futures = self.batcher().submit_all(clips, options)
        try:
            results = await asyncio.wait_for(asyncio.gather(*map(asyncio.wrap_future, futures)), self.config.timeout_s)
        except asyncio.TimeoutError:
            for future in futures:
                future.cancel()
            raise HTTPError(504, f"transcription took longer than {self.config.timeout_s:g} s.") from None
        except AsrflowError as e:
            for future in futures:
                future.cancel()
            raise HTTPError(e.http_status if e.http_status < 500 else 400, str(e)) from None
        self.metrics.audio.inc(sum(len(c) for c in clips) / SAMPLE_RATE)
        return results


def holder(request: Request) -> ModelHolder:
    """FastAPI dependency: the app's model holder."""
    return request.app.state.holder


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
