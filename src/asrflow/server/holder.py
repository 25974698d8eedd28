"""The served model: its configuration, loading in the background, identity, readiness, and admission in audio seconds."""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from dataclasses import dataclass, field

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from asrflow.audio import declared_seconds, too_long
from asrflow.errors import AudioDecodeError
from asrflow.options import TranscribeOptions
from asrflow.server.errors import HTTPError
from asrflow.server.fetch import UrlPolicy, fetch_audio
from asrflow.server.metrics import ServerMetrics
from asrflow.server.pool import ModelPool, Served
from asrflow.server.scheduler import Scheduler
from asrflow.server.uploads import DecodeAhead
from asrflow.transcript import Transcript

MAX_BATCH = 8  # batch_size a served request may ask for (the default): one turn's work


@dataclass
class ServerConfig:
    model: str = "bundled:tiny.en"
    backend: str | None = None
    api_key: str | None = None
    queue_size: int = 64  # clips admitted and not yet answered, all requests together
    timeout_s: float = 300.0
    max_upload_mb: float = 25.0
    max_audio_minutes: float = 120.0  # per request: a small compressed file can hold hours of audio
    max_queued_audio_minutes: float = 240.0  # admitted and not yet answered, all requests together
    allowed_url_hosts: tuple[str, ...] = field(default_factory=tuple)
    allow_private_urls: bool = False
    max_urls: int = 4  # per request
    url_timeout_s: float = 30.0
    realtime_idle_s: float = 60.0  # a realtime session with no client event this long (owed no transcript) is closed
    max_sessions: int = 8  # realtime sessions open at once
    host: str = "127.0.0.1"  # the bound address: requests must name it (or an allowed host) in Host
    allowed_hosts: tuple[str, ...] = field(default_factory=tuple)  # more names clients may use in Host
    cors_origins: tuple[str, ...] = field(default_factory=tuple)  # other origins whose pages may call the API
    allow_hub: bool = False  # requests and registry metadata may name Hugging Face hub ids
    max_models: int = 2  # models held in memory at once (least recently used unloaded first)
    model_ttl_s: float = 600.0  # a model other than the default is unloaded once idle this long
    aliases: dict[str, str] = field(default_factory=dict)  # names requests may use -> models (whisper-1: the default)

    @property
    def max_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)

    @property
    def max_body_bytes(self) -> int:
        """A request's body: the upload, or its base64 in /invocations' JSON, and room for the other fields."""
        return self.max_bytes * 4 // 3 + 64 * 1024

    @property
    def max_audio_seconds(self) -> float:
        return self.max_audio_minutes * 60


class Reservation:
    """Audio seconds and clips held for one request from before decoding until it is answered."""

    def __init__(self, admission: Admission, seconds: float, clips: int):
        self.admission, self.seconds, self.clips, self.count = admission, seconds, clips, clips
        self.clips_ahead: list[DecodeAhead] = []  # each clip, decoding ahead of the model
        self.declared: float | None = None  # the clips' length by their headers, where they all say
        self.bounds: dict[int, float] = {}  # clip -> decoded seconds, once decoded

    def settle_clip(self, clip: int, seconds: float) -> None:
        """A clip is decoded: hold its length, not the bound it was admitted with."""
        with self.admission.lock:
            self.bounds[clip] = seconds
        if len(self.bounds) == self.count:
            self.settle(sum(self.bounds.values()))

    def settle(self, seconds: float) -> None:
        """Hold what the request turned out to need (decoded), not the bound it was admitted with."""
        with self.admission.lock:
            self.admission.seconds += seconds - self.seconds
            self.seconds = seconds

    def release(self) -> None:
        for ahead in self.clips_ahead:
            ahead.discard()
        self.settle(0.0)
        with self.admission.lock:
            self.admission.clips -= self.clips
            self.clips = 0
            if self.admission.clips == 0:
                self.admission.seconds = 0.0  # no drift from sums of floats


class Admission:
    """One limit over decoding, queueing and transcribing, counted in audio seconds (and clips): beyond it, 503 at once."""

    def __init__(self, max_seconds: float, max_clips: int):
        self.max_seconds, self.max_clips = max_seconds, max_clips
        self.lock = threading.Lock()
        self.seconds, self.clips = 0.0, 0

    def reserve(self, seconds: float, clips: int) -> Reservation:
        with self.lock:
            if self.seconds + seconds > self.max_seconds or self.clips + clips > self.max_clips:
                raise HTTPError(503, "the server is at capacity: retry shortly.", headers={"Retry-After": "2"})
            self.seconds += seconds
            self.clips += clips
        return Reservation(self, seconds, clips)


class ModelHolder:
    """The server's models (ModelPool: the default loads in the background, so /health answers at once), admission
    in audio seconds, and the one Scheduler that every request's clips go through."""

    def __init__(self, config: ServerConfig, metrics: ServerMetrics, transcriber=None):
        self.config, self.metrics = config, metrics
        self.pool = ModelPool(
            config.model,
            config.backend,
            config.max_models,
            config.model_ttl_s,
            config.aliases,
            transcriber,
            on_load=lambda name: metrics.model_loads.labels(name).inc(),
            allow_hub=config.allow_hub,
        )
        self.scheduler, self.error, self.default = None, None, None
        self.admission = Admission(config.max_queued_audio_minutes * 60, config.queue_size)
        self.urls = UrlPolicy(
            config.allowed_url_hosts, config.allow_private_urls, config.max_bytes, config.url_timeout_s
        )
        metrics.admitted.set_function(lambda: self.admission.seconds)
        self.pool.load(config.model).add_done_callback(self._loaded)

    def _loaded(self, future) -> None:
        if future.exception() is not None:
            self.error = getattr(future.exception(), "message", str(future.exception()))  # reported by /ready
            return
        self.default = future.result()
        self.scheduler = Scheduler(on_turn=self.metrics.turns.observe)
        self.metrics.queue.set_function(self.scheduler.depth)

    @property
    def info(self) -> dict:
        """What answers requests that name no model."""
        return self.default.identity if self.default else {"model": self.config.model}

    def ready(self) -> Scheduler:
        if self.scheduler is None:
            reason = f": {self.error}" if self.error else " yet"
            raise HTTPError(503, f"the model is not loaded{reason}.", headers={"Retry-After": "5"})
        return self.scheduler

    async def model(self, requested: str | None = None) -> Served:
        """The model a request names (OpenAI's `model`, MLflow's param), loaded; the default when it names none."""
        self.ready()
        served = await self.pool.get(requested)
        self.metrics.model_requests.labels(served.name, str(served.identity.get("version") or "")).inc()
        return served

    async def admit(self, inputs: list) -> Reservation:
        """Fetch the URLs, refuse audio whose header is over the limit (413), reserve its seconds (503), start
        decoding it ahead of the model (uploads.DecodeAhead) and check that it is audio (400).

        Audio without a duration in its header is reserved at the per-request limit until it is decoded.
        """
        self.ready()
        if sum(isinstance(x, str) for x in inputs) > self.config.max_urls:
            raise HTTPError(400, f"at most {self.config.max_urls} URLs per request: send the rest in other requests.")
        data = [await fetch_audio(x, self.urls) if isinstance(x, str) else x for x in inputs]
        declared = [await run_in_threadpool(self._declared, item) for item in data]
        limit = self.config.max_audio_seconds
        bounds = [limit if d is None else min(limit, d * 1.05 + 1) for d in declared]  # decoding enforces the margin
        reservation = self.admission.reserve(sum(bounds), len(data))
        reservation.declared = None if None in declared else sum(declared)
        try:
            for i, (item, bound) in enumerate(zip(data, bounds)):
                ahead = DecodeAhead(item, bound, declared[i] is not None, functools.partial(reservation.settle_clip, i))
                reservation.clips_ahead.append(ahead)
                await run_in_threadpool(self._checked, ahead.check)
        except BaseException:
            reservation.release()
            raise
        return reservation

    def _declared(self, data) -> float | None:
        """What the header declares; over the per-request limit: 413 before anything is decoded."""
        limit = self.config.max_audio_seconds
        try:  # what is not audio is refused before its seconds are reserved (a forged header must not fill the queue)
            declared = declared_seconds(data, "the audio file")
        except AudioDecodeError as e:
            raise HTTPError(e.http_status, str(e), "file") from None
        if declared is not None and declared > limit:
            raise HTTPError(413, too_long(limit).args[0], "file")
        return declared

    @staticmethod
    def _checked(check) -> None:
        try:
            check()
        except AudioDecodeError as e:
            raise HTTPError(e.http_status, str(e), "file") from None

    async def run(
        self,
        served: Served,
        reservation: Reservation,
        options: TranscribeOptions,
        on_segment=None,
        receive=None,
    ) -> list[Transcript]:
        """Schedule the admitted clips on the `served` model and wait for them all; on any exit (timeout,
        disconnect, error) the work left is withdrawn, the decoders stopped and the reservation released.
        `receive`: the request's ASGI receive, its body already read (it tells when the client leaves)."""
        if options.batch_size > MAX_BATCH:  # a batch is one turn of the shared model
            reservation.release()
            raise HTTPError(
                400,
                f"batch_size takes at most {MAX_BATCH} on this server (a batch is one turn of the "
                "model that every request shares): send a smaller one, or leave it out.",
                "batch_size",
            )
        limit = self.config.max_audio_seconds
        jobs = [
            self.ready().submit(
                served.transcriber,
                self._audio(ahead, options),
                options,
                on_segment=on_segment,
                max_seconds=limit,
            )
            for ahead in reservation.clips_ahead
        ]
        try:
            results = await self._wait([job.future for job in jobs], receive)
        finally:
            for job in jobs:
                job.future.cancel()
            reservation.release()
            served.used = time.monotonic()  # idle (for its TTL) from its last answer, not its last request
        self.metrics.audio.inc(sum(r.duration for r in results))
        return results

    @staticmethod
    def _audio(ahead: DecodeAhead, options: TranscribeOptions):
        """The decoded pieces; channels=split decodes each channel of the encoded bytes by itself instead."""
        return ahead.encoded() if options.channels == "split" else ahead.pieces()

    async def _wait(self, futures, receive) -> list[Transcript]:
        """The answers, or a 504 past the timeout, or a 499 the moment the client leaves (its http.disconnect
        arrives: nothing is polled, so a departure withdraws the work before the next turn)."""
        answers = asyncio.ensure_future(all_of(futures))
        departure = asyncio.ensure_future(departed(receive)) if receive is not None else asyncio.Future()
        try:
            done, _ = await asyncio.wait(
                {answers, departure}, timeout=self.config.timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            departure.cancel()
            answers.cancel()  # nothing, once done
        if answers not in done:
            if departure in done:
                raise HTTPError(499, "the client closed the connection.")
            raise HTTPError(504, f"transcription took longer than {self.config.timeout_s:g} s.")
        return answers.result()  # a failure: errors.http_error gives its status (a server's own fault: a 500)


async def all_of(futures) -> list:
    return [await asyncio.wrap_future(f) for f in futures]


async def departed(receive) -> None:
    """Returns when the client has gone: a request's body is read before its work is scheduled, so what its
    receive gives from then on is the http.disconnect."""
    while (await receive())["type"] != "http.disconnect":
        pass


def holder(request: Request) -> ModelHolder:
    """FastAPI dependency: the app's model holder."""
    return request.app.state.holder
