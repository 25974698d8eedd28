"""The serve command: the server in this process (uvicorn), or as Ray Serve deployments (--ray: server/ray.py)."""

from __future__ import annotations

import typer

from asrflow.cli import app, friendly_errors
from asrflow.models import DEFAULT_MODEL


@app.command()
@friendly_errors
def serve(
    model_uri: str = typer.Argument(DEFAULT_MODEL, help="models:/NAME@alias, models:/NAME/VERSION, or any model name."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind (loopback by default)."),
    port: int = typer.Option(8000, min=1, max=65535),
    backend: str | None = typer.Option(None, help="ctranslate2 or transformers (default: the model's own)."),
    api_key: str | None = typer.Option(None, envvar="ASRFLOW_API_KEY", help="Require 'Authorization: Bearer KEY'."),
    queue_size: int = typer.Option(
        64, help="Clips admitted at once, all requests together; beyond: 503 with Retry-After."
    ),
    timeout: float = typer.Option(300.0, help="Per-request timeout in seconds (504)."),
    max_upload_mb: float = typer.Option(25.0, help="Larger uploads get 413."),
    max_audio_minutes: float = typer.Option(120.0, help="Longer audio in one request gets 413."),
    max_queued_audio_minutes: float = typer.Option(
        240.0, help="Audio admitted at once, all requests together; beyond: 503."
    ),
    grace: float = typer.Option(
        30.0, help="On SIGTERM: stop accepting, let requests in flight finish this long, exit."
    ),
    allow_url_host: list[str] = typer.Option(
        [], help="Host that URL inputs may fetch from (repeatable); none by default."
    ),
    allow_private_urls: bool = typer.Option(
        False, help="Let allowed hosts resolve to private addresses (your own network)."
    ),
    url_timeout: float = typer.Option(30.0, help="Seconds a URL input may take to download (then 400)."),
    realtime_idle_seconds: float = typer.Option(
        60.0, help="A realtime session with no client event this long (while it awaits no transcript) is closed."
    ),
    max_sessions: int = typer.Option(8, min=1, help="Realtime sessions open at once; one more is refused."),
    allowed_host: list[str] = typer.Option(
        [],
        help="A name clients may use in Host besides the bound address "
        "(repeatable), e.g. when exposed behind a proxy or DNS name.",
    ),
    cors_origin: list[str] = typer.Option(
        [], help="An origin whose pages may call the API (repeatable); none by default: only the server's own page."
    ),
    allow_hub: bool = typer.Option(False, help="Let requests and registry metadata name Hugging Face hub models."),
    max_models: int = typer.Option(2, min=1, help="Models held in memory at once (requests may name others: LRU)."),
    model_ttl: float = typer.Option(600.0, help="Seconds idle after which a model other than the default is unloaded."),
    model_alias: list[str] = typer.Option(
        [], help="NAME=MODEL: a name requests may use for a model (repeatable); whisper-1 means the default."
    ),
    ray: bool = typer.Option(False, "--ray", help="Serve as Ray Serve deployments (pip install 'asrflow[ray]')."),
    ray_address: str | None = typer.Option(
        None, help="With --ray: the Ray cluster to join (e.g. ray://head:10001 or auto); a local one by default."
    ),
    replicas: int = typer.Option(1, min=1, help="With --ray: replicas of the server (the least, with autoscaling)."),
    max_replicas: int | None = typer.Option(
        None, min=1, help="With --ray: autoscale from --replicas up to this many, on ongoing requests."
    ),
    target_ongoing_requests: float = typer.Option(
        2.0, min=0.1, help="With --ray and --max-replicas: ongoing requests per replica that autoscaling aims at."
    ),
):
    """Serve OpenAI's audio API, MLflow's scoring protocol and a web page.

    The given model answers by default; a request may name any registered (models:/...) or bundled model."""
    import uvicorn

    from asrflow.errors import InvalidOptionError
    from asrflow.server import ServerConfig, create_app

    if any("=" not in a or not a.split("=", 1)[0] or not a.split("=", 1)[1] for a in model_alias):
        raise InvalidOptionError("--model-alias takes NAME=MODEL, e.g. challenger=models:/whisper@challenger.")
    config = ServerConfig(
        model_uri,
        backend,
        api_key,
        queue_size,
        timeout,
        max_upload_mb,
        max_audio_minutes,
        max_queued_audio_minutes,
        tuple(allow_url_host),
        allow_private_urls,
        url_timeout_s=url_timeout,
        realtime_idle_s=realtime_idle_seconds,
        max_sessions=max_sessions,
        host=host,
        allowed_hosts=tuple(allowed_host),
        cors_origins=tuple(cors_origin),
        allow_hub=allow_hub,
        max_models=max_models,
        model_ttl_s=model_ttl,
        aliases=dict(a.split("=", 1) for a in model_alias),
    )
    if ray:
        from asrflow.server.ray import Replicas, serve_on_ray

        return serve_on_ray(config, port, Replicas(replicas, max_replicas, target_ongoing_requests), ray_address, grace)
    if ray_address or max_replicas or replicas != 1 or target_ongoing_requests != 2.0:
        raise InvalidOptionError(
            "--ray-address, --replicas, --max-replicas and --target-ongoing-requests go with --ray."
        )
    uvicorn.run(create_app(config), host=host, port=port, log_level="warning", timeout_graceful_shutdown=grace)
