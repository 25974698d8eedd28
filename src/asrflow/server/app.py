"""The ASGI app: routers per protocol, one guard (auth, errors, metrics), and the body limit outermost."""

from __future__ import annotations

import hmac
import logging
import time
from importlib.metadata import version

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import HTTPConnection

from asrflow.limits import BodyLimit, SameOrigin
from asrflow.process import configure_process
from asrflow.server import health, mlflow_scoring, openai_audio, openai_models, pages, realtime, schema
from asrflow.server.errors import HTTPError, error_response, http_error
from asrflow.server.holder import ModelHolder, ServerConfig
from asrflow.server.metrics import ServerMetrics

OPEN_PATHS = {"/health", "/ready", "/ping", "/", "/info"}


def create_app(config: ServerConfig, transcriber=None) -> FastAPI:
    """The model loads in the background: /health answers at once, /ready once it serves. The server's process
    is asrflow's: its settings are made (process.py)."""
    configure_process()
    uvicorn_log = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, ClientFaultsInOneLine) for f in uvicorn_log.filters):
        uvicorn_log.addFilter(ClientFaultsInOneLine())
    app = FastAPI(title="asrflow", version=version("asrflow"), docs_url="/docs", responses=schema.errors())
    app.state.config, app.state.metrics = config, ServerMetrics()
    app.state.holder = ModelHolder(config, app.state.metrics, transcriber)
    for module in (openai_audio, openai_models, realtime, mlflow_scoring, pages, health):
        app.include_router(module.router)

    @app.exception_handler(HTTPError)
    async def handled(request: Request, e: HTTPError):
        return error_response(e, request.url.path)

    @app.exception_handler(StarletteHTTPException)  # Starlette's own (no route: 404; a wrong method: 405)
    async def routing(request: Request, e: StarletteHTTPException):
        message = f"{request.method} {request.url.path[:200]!r}: {e.detail}."  # 405's Allow header kept
        return error_response(HTTPError(e.status_code, message, headers=dict(e.headers or {})), request.url.path)

    app.openapi = lambda: schema.openapi(app)
    app.add_middleware(Guard, config=config, metrics=app.state.metrics)
    # counts body bytes on every route, chunked or not (base64 in /invocations is 4/3 of the audio)
    app.add_middleware(BodyLimit, max_bytes=config.max_body_bytes)
    if config.cors_origins:  # answers the preflights of the allowed origins' pages
        origins = list(config.cors_origins)
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST"],
            allow_headers=["*"],
            expose_headers=["x-asrflow-model", "x-asrflow-model-version"],
        )
    # outermost: only this server's names and origins reach anything else
    app.add_middleware(
        SameOrigin, host=config.host, allowed_hosts=config.allowed_hosts, cors_origins=config.cors_origins
    )
    return app


class ClientFaultsInOneLine(logging.Filter):
    """uvicorn fails a WebSocket whose client sent invalid UTF-8 in a text frame (1007, as RFC 6455 says) and logs
    it with a traceback: a client's bad input, logged here as the one line it is."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.getMessage().startswith("Invalid UTF-8"):
            record.exc_info, record.exc_text = None, None
        return True


class Guard:
    """The one guard of every HTTP request and WebSocket: the API key (a WebSocket without it is refused before
    it opens), any exception of an HTTP request as its status (errors.http_error), metrics.

    Pure ASGI: Starlette's BaseHTTPMiddleware runs the route in a task group whose cancellation swallows the
    client's http.disconnect, so a departed client's request never saw it go and its work ran on to the end.
    """

    def __init__(self, app, config: ServerConfig, metrics: ServerMetrics):
        self.app, self.config, self.metrics = app, config, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket":
            try:
                check_key(self.config.api_key, HTTPConnection(scope))
            except HTTPError as e:  # closed before it is accepted: the handshake gets a 403
                return await send({"type": "websocket.close", "code": 1008, "reason": e.message[:120]})
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), None

        async def sending(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        path = scope["path"]
        try:
            check_key(self.config.api_key, HTTPConnection(scope))
            await self.app(scope, receive, sending)
        except Exception as e:  # noqa: BLE001 - the one place exceptions become statuses
            error = http_error(e, scope["method"], path)  # logs what is not the client's doing
            if status is None:
                await error_response(error, path)(scope, receive, sending)
        endpoint = getattr(scope.get("route"), "path", "unmatched")  # templates, not raw paths: bounded
        self.metrics.observe(endpoint, status or 499, time.perf_counter() - started)


def check_key(api_key: str | None, request: HTTPConnection) -> None:
    path = request.url.path
    if not api_key or path in OPEN_PATHS or path.startswith("/static"):
        return
    given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
    if not given and request.scope["type"] == "websocket":  # browsers cannot set headers on a WebSocket: OpenAI's
        offered = request.headers.get("sec-websocket-protocol", "").split(",")  # subprotocol carries the key
        prefix = "openai-insecure-api-key."
        given = next((p.strip().removeprefix(prefix) for p in offered if p.strip().startswith(prefix)), "")
    if not hmac.compare_digest(given.encode(), api_key.encode()):
        raise HTTPError(401, "missing or wrong API key: send 'Authorization: Bearer <key>'.")
