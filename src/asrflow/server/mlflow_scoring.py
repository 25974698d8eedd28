"""MLflow's scoring protocol, as `mlflow models serve` speaks it: /invocations, /ping, /version."""

from __future__ import annotations

import ipaddress
import json
import socket
import urllib.parse
from importlib.metadata import version
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from asrflow.errors import AsrflowError
from asrflow.scoring import format_results, parse_params, scoring_items, unwrap
from asrflow.server.errors import HTTPError, mlflow_error
from asrflow.server.holder import ModelHolder, holder

router = APIRouter()
Holder = Annotated[ModelHolder, Depends(holder)]


@router.post("/invocations")
async def invocations(request: Request, model: Holder):
    """inputs / instances / dataframe_split / dataframe_records of base64 audio, plus params."""
    body = await request.body()  # its size is the body limit's to bound (413), as on every route
    try:
        payload = json.loads(body)
        items = scoring_items(payload)
    except (ValueError, AsrflowError) as e:  # not JSON, or not a scoring request
        return mlflow_error(f"Invalid input: {str(e)[:200]}")
    try:
        options, response = parse_params(model.batcher().transcriber, payload.get("params"))
    except AsrflowError as e:
        return mlflow_error(str(e))
    clips = []
    for item in map(unwrap, items):
        if isinstance(item, str) and item.startswith(("http://", "https://")):
            clips.append(await model.decode(check_url(item, model.config.allowed_url_hosts), allow_urls=True))
        elif isinstance(item, str):
            return mlflow_error("each input must be base64-encoded audio (or an allowed http(s) URL).")
        else:
            clips.append(await model.decode(item))
    results = await model.run(clips, options)
    return JSONResponse({"predictions": format_results(list(results), *response)})


@router.get("/ping")
async def ping(model: Holder):
    model.batcher()
    return PlainTextResponse("\n")


@router.get("/version")
async def mlflow_version():
    return PlainTextResponse(version("mlflow"))


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
