"""The HTTP server: OpenAI's audio API and MLflow's scoring protocol over one model, batched."""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import queue
import socket
import threading
import time
import urllib.parse
from collections import defaultdict
from concurrent.futures import Future
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.concurrency import run_in_threadpool

from asrflow.audio import SAMPLE_RATE, decode_audio
from asrflow.errors import AsrflowError, AudioDecodeError
from asrflow.limits import BodyLimit, BodyTooLarge
from asrflow.options import FALLBACK_TEMPERATURES, TranscribeOptions
from asrflow.scoring import format_results, parse_params, scoring_items, unwrap
from asrflow.transcript import Segment, Transcript
from asrflow.writers import WRITERS

AUDIO_EXTENSIONS = {"flac", "mp3", "mp4", "mpeg", "mpga", "m4a", "ogg", "oga", "opus", "wav", "webm", "aac"}
OPENAI_FIELDS = {"file", "model", "language", "prompt", "temperature", "response_format", "timestamp_granularities[]",
                 "timestamp_granularities", "stream"}
OPENAI_FORMATS = {"json", "text", "srt", "vtt", "verbose_json"}
OPENAI_OPTIONS = {"language": "language", "prompt": "initial_prompt", "temperature": "temperature"}  # form field -> option
OPEN_PATHS = {"/health", "/ready", "/ping", "/", "/info"}
PAGE = Path(__file__).parent / "static" / "index.html"
LOG = logging.getLogger("asrflow.server")


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
    allowed_url_hosts: tuple[str, ...] = field(default_factory=tuple)


class HTTPError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.headers = status, message, param, headers or {}


class Batcher:
    """Requests that arrive together go to the model in one call (up to a batch size, within a short wait)."""

    def __init__(self, transcriber, max_batch_size: int, max_wait_s: float, queue_size: int):
        self.transcriber = transcriber
        self.max_batch_size, self.max_wait_s = max_batch_size, max_wait_s
        self.queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self.admission = threading.Lock()  # only submitters put; the batcher only takes, which never refuses them
        threading.Thread(target=self._run, name="asrflow-batcher", daemon=True).start()

    def submit(self, samples: np.ndarray, options: TranscribeOptions, on_segment=None) -> Future:
        return self.submit_all([samples], options, on_segment)[0]

    def submit_all(self, clips: list[np.ndarray], options: TranscribeOptions, on_segment=None) -> list[Future]:
        """Queue every clip of one request, or none: a request is admitted or refused whole."""
        futures = [Future() for _ in clips]
        with self.admission:
            if self.queue.maxsize - self.queue.qsize() < len(clips):
                raise HTTPError(503, "the server is at capacity: retry shortly.", headers={"Retry-After": "2"})
            for samples, future in zip(clips, futures):
                self.queue.put_nowait((samples, options, on_segment, future))
        return futures

    def _run(self):
        while True:
            batch = [self.queue.get()]
            try:
                self._collect_and_serve(batch)
            except Exception as e:  # noqa: BLE001 - nothing may stop the loop: fail this batch, serve the next
                LOG.exception("batch failed")
                for item in batch:
                    if not item[3].done():
                        item[3].set_exception(e)

    def _collect_and_serve(self, batch: list):
        """Wait briefly for company, then serve the batch grouped by options (batch is filled in place)."""
        deadline = time.monotonic() + self.max_wait_s
        while len(batch) < self.max_batch_size and (left := deadline - time.monotonic()) > 0:
            try:
                batch.append(self.queue.get(timeout=left))
            except queue.Empty:
                break
        groups = defaultdict(list)
        for item in batch:
            if item[3].set_running_or_notify_cancel():  # skip requests that timed out while queued
                groups[(item[1], item[2] is None)].append(item)
        for (options, _), items in groups.items():
            self._serve(items, options)

    def _serve(self, items, options):
        try:
            if len(items) == 1:
                samples, _, on_segment, future = items[0]
                results = [self.transcriber.transcribe(samples, options, progress=on_segment)]
            else:
                results = self.transcriber.transcribe_batch([item[0] for item in items], options)
        except Exception as e:  # noqa: BLE001 - every caller must hear back
            for item in items:
                item[3].set_exception(e)
            return
        for item, result in zip(items, results):
            item[3].set_result(result)


def _metrics(registry: CollectorRegistry):
    return {
        "requests": Counter("asrflow_requests_total", "HTTP requests", ["endpoint", "status"], registry=registry),
        "errors": Counter("asrflow_errors_total", "Failed requests", ["endpoint", "status"], registry=registry),
        "latency": Histogram("asrflow_request_seconds", "Request latency", ["endpoint"], registry=registry,
                             buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120)),
        "audio": Counter("asrflow_audio_seconds_total", "Audio seconds transcribed", registry=registry),
        "queue": Gauge("asrflow_queue_depth", "Requests waiting for the model", registry=registry),
    }


def check_url(url: str, allowed_hosts: tuple[str, ...]) -> str:
    """Only http(s) URLs to allowed hosts that resolve to public addresses (no loopback, private, link-local)."""
    parsed = urllib.parse.urlparse(url)
    if not allowed_hosts:
        raise HTTPError(400, "URL inputs are disabled on this server: send the audio itself (start it with --allow-url-host to enable).")
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise HTTPError(400, f"only http(s) URLs are accepted, not {url!r}.")
    if parsed.hostname not in allowed_hosts:
        raise HTTPError(400, f"host {parsed.hostname!r} is not in the server's allowed URL hosts.")
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(parsed.hostname, parsed.port or 443)}
    except OSError:
        raise HTTPError(400, f"host {parsed.hostname!r} does not resolve.") from None
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%")[0])
        if not ip.is_global:
            raise HTTPError(400, f"host {parsed.hostname!r} resolves to a non-public address ({ip}): refused.")
    return url


def create_app(config: ServerConfig, transcriber=None) -> FastAPI:
    """The ASGI app. The model loads in the background: /health answers at once, /ready once loaded."""
    app = FastAPI(title="asrflow", version=version("asrflow"), docs_url="/docs")
    state: dict = {"transcriber": transcriber, "batcher": None, "error": None, "info": {"model": config.model}}
    registry = CollectorRegistry()
    metrics = _metrics(registry)
    max_bytes = int(config.max_upload_mb * 1024 * 1024)

    def load():
        try:
            from asrflow.transcriber import load_transcriber

            state["transcriber"] = state["transcriber"] or load_transcriber(config.model, backend=config.backend)
            state["info"] = model_identity(config.model) | {"backend": state["transcriber"].backend.name}
            state["batcher"] = Batcher(state["transcriber"], config.max_batch_size, config.max_wait_ms / 1000, config.queue_size)
            metrics["queue"].set_function(lambda: state["batcher"].queue.qsize())
        except Exception as e:  # noqa: BLE001 - reported by /ready
            state["error"] = str(e)

    threading.Thread(target=load, daemon=True).start()

    @app.middleware("http")
    async def guard(request: Request, call_next):
        started = time.perf_counter()
        endpoint = request.url.path
        try:
            if config.api_key and endpoint not in OPEN_PATHS and not endpoint.startswith("/static"):
                given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
                if not hmac.compare_digest(given.encode(), config.api_key.encode()):
                    raise HTTPError(401, "missing or wrong API key: send 'Authorization: Bearer <key>'.")
            response = await call_next(request)
        except HTTPError as e:
            response = _error(e)
        except Exception as e:  # noqa: BLE001 - a bug: the client gets a JSON 500 without internals, the log the traceback
            if isinstance(cause := _root_cause(e), BodyTooLarge):
                response = _error(HTTPError(413, str(cause), headers={"Connection": "close"}))
            else:
                LOG.exception("internal error on %s %s", request.method, endpoint)
                response = _error(HTTPError(500, "internal error: the server logged the details."))
        route = request.scope.get("route")
        endpoint = getattr(route, "path", "unmatched")  # route templates, not raw paths: bounded label values
        metrics["requests"].labels(endpoint, response.status_code).inc()
        if response.status_code >= 400:
            metrics["errors"].labels(endpoint, response.status_code).inc()
        metrics["latency"].labels(endpoint).observe(time.perf_counter() - started)
        return response

    @app.exception_handler(HTTPError)
    async def http_error(request: Request, e: HTTPError):
        return _error(e)

    def ready_batcher() -> Batcher:
        if state["batcher"] is None:
            raise HTTPError(503, f"the model is not loaded{': ' + state['error'] if state['error'] else ' yet'}.", headers={"Retry-After": "5"})
        return state["batcher"]

    async def run(clips: list[np.ndarray], options: TranscribeOptions) -> list[Transcript]:
        """Transcribe the clips of one request, admitted together; a timeout cancels what has not started."""
        futures = ready_batcher().submit_all(clips, options)
        try:
            results = await asyncio.wait_for(asyncio.gather(*map(asyncio.wrap_future, futures)), config.timeout_s)
        except asyncio.TimeoutError:
            for future in futures:
                future.cancel()
            raise HTTPError(504, f"transcription took longer than {config.timeout_s:g} s.") from None
        except AsrflowError as e:
            for future in futures:
                future.cancel()
            raise HTTPError(e.http_status if e.http_status < 500 else 400, str(e)) from None
        metrics["audio"].inc(sum(len(c) for c in clips) / SAMPLE_RATE)
        return results

    @app.get("/")
    async def page():
        return FileResponse(PAGE, media_type="text/html")

    @app.get("/info")
    async def info():
        return state["info"]

    @app.post("/render/{format}")
    async def render(format: str, request: Request):
        """A (possibly corrected) transcript as txt/srt/vtt/json, with the same writers as the CLI."""
        if format not in WRITERS:
            raise HTTPError(400, f"format must be one of {', '.join(WRITERS)}.", "format")
        try:
            transcript = Transcript.from_dict(await request.json())
        except (ValueError, KeyError, TypeError) as e:
            raise HTTPError(400, f"expected a transcript as JSON ({e}).") from None
        media = "application/json" if format == "json" else "text/plain; charset=utf-8"
        return Response(WRITERS[format](transcript), media_type=media)

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/ready")
    async def ready():
        """Ready when a probe (a tenth of a second of silence) goes through the scheduler and back, not on a flag."""
        batcher = ready_batcher()
        try:
            [probe] = batcher.submit_all([np.zeros(SAMPLE_RATE // 10, dtype=np.float32)], batcher.transcriber.options)
            await asyncio.wait_for(asyncio.wrap_future(probe), 10)
        except Exception:  # noqa: BLE001 - full queue, dead or stuck scheduler: not ready, whatever the cause
            raise HTTPError(503, "the model is loaded but not answering: retry shortly.", headers={"Retry-After": "5"}) from None
        return {"status": "ready", "model": config.model, "backend": batcher.transcriber.backend.name}

    @app.get("/ping")
    async def ping():
        ready_batcher()
        return PlainTextResponse("\n")

    @app.get("/version")
    async def mlflow_version():
        return PlainTextResponse(version("mlflow"))

    @app.get("/metrics")
    async def prometheus():
        return Response(generate_latest(registry), media_type="text/plain; version=0.0.4")

    @app.post("/v1/audio/transcriptions")
    async def transcriptions(request: Request):
        return await openai_audio(request, "transcribe")

    @app.post("/v1/audio/translations")
    async def translations(request: Request):
        return await openai_audio(request, "translate")

    async def openai_audio(request: Request, task: str):
        form = await _read_form(request, max_bytes)
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise HTTPError(400, "no audio: send the file as multipart field 'file'.", "file")
        extension = (upload.filename or "").rsplit(".", 1)[-1].lower() if "." in (upload.filename or "") else ""
        if extension and extension not in AUDIO_EXTENSIONS:
            raise HTTPError(415, f"unsupported file type .{extension}: send one of {', '.join(sorted(AUDIO_EXTENSIONS))}.", "file")
        data = await upload.read()
        if len(data) > max_bytes:
            raise HTTPError(413, f"the file is larger than the {config.max_upload_mb:g} MB limit.", "file")
        response_format = form.get("response_format") or "json"
        if response_format not in OPENAI_FORMATS:
            raise HTTPError(400, f"response_format must be one of {', '.join(sorted(OPENAI_FORMATS))}.", "response_format")
        granularities = set(form.getlist("timestamp_granularities[]") + form.getlist("timestamp_granularities"))
        if granularities - {"word", "segment"}:
            raise HTTPError(400, "timestamp_granularities[] takes 'word' and/or 'segment'.", "timestamp_granularities[]")
        changes = {"task": task, "word_timestamps": "word" in granularities}
        for field, option in OPENAI_OPTIONS.items():
            if form.get(field) not in (None, ""):
                changes[option] = form.get(field)
        try:
            options = ready_batcher().transcriber.resolve(openai_temperature(changes))
        except AsrflowError as e:
            raise HTTPError(400, str(e)) from None
        samples = await _decode(data, max_seconds=config.max_audio_minutes * 60)
        if str(form.get("stream", "")).lower() == "true":
            return stream_segments(samples, options)
        [result] = await run([samples], options)
        return _openai_response(result, response_format, task, granularities)

    def stream_segments(samples: np.ndarray, options: TranscribeOptions) -> StreamingResponse:
        """Server-sent events: a transcript.text.delta per segment as decoded, then transcript.text.done."""
        loop = asyncio.get_running_loop()
        segments: asyncio.Queue = asyncio.Queue()
        future = ready_batcher().submit(samples, options, lambda s: loop.call_soon_threadsafe(segments.put_nowait, s))
        done = asyncio.wrap_future(future)

        async def events():
            sent = 0
            while True:
                getter = asyncio.ensure_future(segments.get())
                await asyncio.wait({getter, done}, return_when=asyncio.FIRST_COMPLETED, timeout=config.timeout_s)
                if getter.done():
                    segment: Segment = getter.result()
                    sent += 1
                    yield _sse({"type": "transcript.text.delta", "delta": (" " if sent > 1 else "") + segment.text,
                                "segment": {"start": segment.start, "end": segment.end, "text": segment.text}})
                    continue
                getter.cancel()
                if not done.done():
                    yield _sse({"type": "error", "error": {"message": "transcription timed out"}})
                    return
                if done.exception():
                    yield _sse({"type": "error", "error": {"message": str(done.exception())}})
                    return
                result = done.result()
                for segment in result.segments[sent:]:
                    yield _sse({"type": "transcript.text.delta", "delta": " " + segment.text})
                metrics["audio"].inc(len(samples) / SAMPLE_RATE)
                yield _sse({"type": "transcript.text.done", "text": result.text})
                return

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.post("/invocations")
    async def invocations(request: Request):
        """MLflow's scoring protocol: inputs / instances / dataframe_split / dataframe_records, plus params."""
        body = await request.body()
        if len(body) > max_bytes * 4 // 3 + 1024:
            raise HTTPError(413, f"the request is larger than the {config.max_upload_mb:g} MB limit.")
        try:
            payload = json.loads(body)
            items = scoring_items(payload)
        except (ValueError, AsrflowError) as e:  # not JSON, or not a scoring request
            return _mlflow_error(f"Invalid input: {str(e)[:200]}")
        transcriber = ready_batcher().transcriber
        try:
            options, response = parse_params(transcriber, payload.get("params"))
        except AsrflowError as e:
            return _mlflow_error(str(e))
        audios = []
        for item in items:
            item = unwrap(item)
            if isinstance(item, str) and item.startswith(("http://", "https://")):
                check_url(item, config.allowed_url_hosts)
                audios.append(await _decode(item, allow_urls=True, max_seconds=config.max_audio_minutes * 60))
            elif isinstance(item, str):
                return _mlflow_error("each input must be base64-encoded audio (or an allowed http(s) URL).")
            else:
                audios.append(await _decode(item, max_seconds=config.max_audio_minutes * 60))
        results = await run(audios, options)
        return JSONResponse({"predictions": format_results(list(results), *response)})

    # outermost: counts body bytes on every route, chunked or not (base64 in /invocations is 4/3 of the audio)
    app.add_middleware(BodyLimit, max_bytes=max_bytes * 4 // 3 + 64 * 1024)
    return app


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


def openai_temperature(changes: dict) -> dict:
    """OpenAI's temperature: 0 means Whisper's fallback (start at 0, go hotter while the text looks wrong);
    a higher value starts there and falls back from it."""
    if "temperature" not in changes:
        return changes
    try:
        start = float(changes["temperature"])
    except (TypeError, ValueError):
        return changes  # the resolver names the problem
    rest = {k: v for k, v in changes.items() if k != "temperature"}
    if start == 0:
        return rest
    return rest | {"temperature": [start] + [t for t in FALLBACK_TEMPERATURES if t > start]}


def _root_cause(error: BaseException) -> BaseException:
    """The first real exception inside the ExceptionGroups that Starlette's task groups wrap around it."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return error


async def _read_form(request: Request, max_bytes: int):
    try:
        form = await request.form(max_files=1, max_fields=32, max_part_size=max_bytes)
    except Exception as e:  # noqa: BLE001 - a malformed body is the client's error
        e = _root_cause(e)
        if isinstance(e, BodyTooLarge):
            raise e from None
        if "maximum size" in str(e):  # Starlette's part limit, reached while the part streams in
            raise HTTPError(413, f"the file is larger than the {max_bytes / 2**20:g} MB limit.", "file") from None
        raise HTTPError(400, f"expected a multipart/form-data body with a 'file' field ({e}).") from None
    unknown = sorted(set(form.keys()) - OPENAI_FIELDS)
    if unknown:
        raise HTTPError(400, f"unknown parameter(s): {', '.join(unknown)}.", unknown[0])
    return form


async def _decode(data, allow_urls: bool = False, max_seconds: float | None = None) -> np.ndarray:
    try:
        return await run_in_threadpool(decode_audio, data, allow_urls=allow_urls, max_seconds=max_seconds)
    except AudioDecodeError as e:
        raise HTTPError(e.http_status, str(e), "file") from None


def _openai_response(result: Transcript, response_format: str, task: str, granularities: set[str]):
    if response_format == "json":
        return {"text": result.text}
    if response_format == "text":
        return PlainTextResponse(result.text)
    if response_format in ("srt", "vtt"):
        return PlainTextResponse(WRITERS[response_format](result))
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    body = {"task": task, "language": LANGUAGES.get(result.language or "", result.language), "duration": result.duration,
            "text": result.text}
    if "segment" in granularities or not granularities:
        body["segments"] = [
            {"id": i, "seek": 0, "start": s.start, "end": s.end, "text": s.text, "tokens": [], "temperature": 0.0,
             "avg_logprob": 0.0, "compression_ratio": 0.0, "no_speech_prob": 0.0}
            for i, s in enumerate(result.segments)
        ]
    if "word" in granularities:
        body["words"] = [{"word": w.word, "start": w.start, "end": w.end} for s in result.segments for w in s.words]
    return body


def _sse(event: dict) -> str:
    return f"data: {json.dumps(event)}\n\n"


def _error(e: HTTPError) -> JSONResponse:
    kind = "invalid_request_error" if e.status < 500 else "server_error"
    body = {"error": {"message": e.message, "type": kind, "param": e.param, "code": e.status}}
    return JSONResponse(body, status_code=e.status, headers=e.headers)


def _mlflow_error(message: str) -> JSONResponse:
    return JSONResponse({"error_code": "BAD_REQUEST", "message": message}, status_code=400)
