"""OpenAI's models API: /v1/models lists what a request's `model` may name; /v1/models/{id} one of them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from starlette.concurrency import run_in_threadpool

from asrflow.server.errors import HTTPError
from asrflow.server.holder import ModelHolder, holder
from asrflow.server.pool import catalogue

router = APIRouter()
Holder = Annotated[ModelHolder, Depends(holder)]


@router.get("/v1/models")
async def list_models(model: Holder):
    return {"object": "list", "data": await run_in_threadpool(catalogue, model.pool)}


@router.get("/v1/models/{model_id:path}")
async def retrieve_model(model_id: str, model: Holder):
    found = [entry for entry in await run_in_threadpool(catalogue, model.pool) if entry["id"] == model_id]
    if not found:
        raise HTTPError(
            404,
            f"the model {model_id!r} does not exist here: GET /v1/models lists them.",
            "model",
            code="model_not_found",
        )
    return found[0]
