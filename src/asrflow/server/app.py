"""The ASGI app: routers per protocol, one guard (auth, errors, metrics), and the body limit outermost."""

from __future__ import annotations

import hmac
import time
from importlib.metadata import version

from fastapi import FastAPI, Request

from asrflow.limits import BodyLimit
from asrflow.server import health, mlflow_scoring, openai_audio, openai_models, pages, realtime
from asrflow.server.errors import HTTPError, error_response, http_error
from asrflow.server.holder import ModelHolder, ServerConfig
from asrflow.server.metrics import ServerMetrics

OPEN_PATHS = {"/health", "/ready", "/ping", "/", "/info"}


def create_app(config: ServerConfig, transcriber=None) -> FastAPI:
    """The model loads in the background: /health answers at once, /ready once it serves."""
    app = FastAPI(title="asrflow", version=version("asrflow"), docs_url="/docs")
    app.state.config, app.state.metrics = config, ServerMetrics()
    app.state.holder = ModelHolder(config, app.state.metrics, transcriber)
    for module in (openai_audio, openai_models, realtime, mlflow_scoring, pages, health):
        app.include_router(module.router)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        started = time.perf_counter()
        try:
            check_key(config.api_key, request)
            response = await call_next(request)
        except Exception as e:  # noqa: BLE001 - the one place exceptions become statuses
            response = error_response(http_error(e, request.method, request.url.path), request.url.path)
        endpoint = getattr(request.scope.get("route"), "path", "unmatched")  # templates, not raw paths: bounded
        app.state.metrics.observe(endpoint, response.status_code, time.perf_counter() - started)
        return response

    @app.exception_handler(HTTPError)
    async def handled(request: Request, e: HTTPError):
        return error_response(e, request.url.path)

    # outermost: counts body bytes on every route, chunked or not (base64 in /invocations is 4/3 of the audio)
    app.add_middleware(BodyLimit, max_bytes=config.max_bytes * 4 // 3 + 64 * 1024)
    return app


def check_key(api_key: str | None, request: Request) -> None:
    path = request.url.path
    if not api_key or path in OPEN_PATHS or path.startswith("/static"):
        return
    given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
    if not hmac.compare_digest(given.encode(), api_key.encode()):
        raise HTTPError(401, "missing or wrong API key: send 'Authorization: Bearer <key>'.")
