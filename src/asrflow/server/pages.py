"""The web page, what answered, and rendering a (corrected) transcript with the CLI's writers."""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Request
from fastapi import Path as PathParameter
from fastapi.responses import FileResponse, HTMLResponse, Response

from asrflow.server import schema
from asrflow.server.errors import HTTPError
from asrflow.server.holder import ModelHolder, holder
from asrflow.transcript import Transcript
from asrflow.writers import WRITERS

STATIC = Path(__file__).parents[1] / "static"
FILES = {"page.js": "text/javascript; charset=utf-8", "page.css": "text/css; charset=utf-8"}  # all /static serves
# The page holds the API key: scripts only from our own files (no inline ones, so injected markup cannot run),
# audio from blob: URLs, live captions over a WebSocket to this host.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "media-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
    "form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
# The page links to the docs: where `make docs` serves them, unless ASRFLOW_DOCS_URL names a hosted copy
DOCS_URL = "http://127.0.0.1:8001/"
router = APIRouter()


@router.get("/", response_class=HTMLResponse)
async def page():
    return HTMLResponse(page_html(), headers=SECURITY_HEADERS)


def page_html() -> str:
    """index.html with its link to the docs: ASRFLOW_DOCS_URL when it is an http(s) URL, else DOCS_URL."""
    url = os.environ.get("ASRFLOW_DOCS_URL", "").strip()
    url = url if urlsplit(url).scheme.lower() in ("http", "https") and urlsplit(url).netloc else DOCS_URL
    page = (STATIC / "index.html").read_text(encoding="utf-8")
    return page.replace("{{ docs_url }}", html.escape(url, quote=True))


@router.get("/static/{name}", responses={200: {"content": {t.split(";")[0]: {} for t in FILES.values()}}})
async def static(name: str):
    """The page's script and style, by name from a fixed list: no path reaches another file."""
    if name not in FILES:
        raise HTTPError(404, f"no static file {name!r}.")
    return FileResponse(STATIC / name, media_type=FILES[name], headers=SECURITY_HEADERS)


@router.get("/info")
async def info(model: Annotated[ModelHolder, Depends(holder)]):
    return model.info


@router.post("/render/{format}", openapi_extra=schema.render(), responses=schema.render_responses())
async def render(format: Annotated[str, PathParameter(json_schema_extra={"enum": list(WRITERS)})], request: Request):
    """A (possibly corrected) transcript as txt/srt/vtt/json, with the same writers as the CLI."""
    if format not in WRITERS:
        raise HTTPError(400, f"format must be one of {', '.join(WRITERS)}.", "format")
    try:
        transcript = Transcript.from_dict(await request.json())
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:  # bad JSON, or nested too deep
        raise HTTPError(400, f"expected a transcript as JSON ({e}).") from None
    media = "application/json" if format == "json" else "text/plain; charset=utf-8"
    return Response(WRITERS[format](transcript), media_type=media)
