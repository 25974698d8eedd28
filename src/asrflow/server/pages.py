"""The web page, what answered, and rendering a (corrected) transcript with the CLI's writers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, Response

from asrflow.server.errors import HTTPError
from asrflow.server.holder import ModelHolder, holder
from asrflow.transcript import Transcript
from asrflow.writers import WRITERS

PAGE = Path(__file__).parents[1] / "static" / "index.html"
router = APIRouter()


@router.get("/")
async def page():
    return FileResponse(PAGE, media_type="text/html")


@router.get("/info")
async def info(model: Annotated[ModelHolder, Depends(holder)]):
    return model.info


@router.post("/render/{format}")
async def render(format: str, request: Request):
    """A (possibly corrected) transcript as txt/srt/vtt/json, with the same writers as the CLI."""
    if format not in WRITERS:
        raise HTTPError(400, f"format must be one of {', '.join(WRITERS)}.", "format")
    try:
        transcript = Transcript.from_dict(await request.json())
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise HTTPError(400, f"expected a transcript as JSON ({e}).") from None
    media = "application/json" if format == "json" else "text/plain; charset=utf-8"
    return Response(WRITERS[format](transcript), media_type=media)
