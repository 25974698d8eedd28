"""Liveness, readiness (a probe through the scheduler, not a flag) and Prometheus metrics."""

from __future__ import annotations

import asyncio
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.responses import PlainTextResponse, Response

from asrflow.audio import SAMPLE_RATE
from asrflow.server.errors import HTTPError
from asrflow.server.holder import ModelHolder, holder

router = APIRouter()


@router.get("/health")
async def health():
    return {"status": "ok"}


@router.get("/ready")
async def ready(model: Annotated[ModelHolder, Depends(holder)]):
    """Ready when a tenth of a second of silence goes through the scheduler and back within 10 s."""
    scheduler = model.ready()
    served = (model.pool.loaded() or [model.default])[-1]  # the model used last: no load for a probe
    try:
        probe = scheduler.submit(
            served.transcriber, np.zeros(SAMPLE_RATE // 10, dtype=np.float32), served.transcriber.options
        )
        await asyncio.wait_for(asyncio.wrap_future(probe.future), 10)
    except Exception:  # noqa: BLE001 - full queue, dead or stuck scheduler: not ready, whatever the cause
        raise HTTPError(
            503, "the model is loaded but not answering: retry shortly.", headers={"Retry-After": "5"}
        ) from None
    return {"status": "ready", "model": model.config.model, "backend": model.default.transcriber.backend.name}


@router.get("/metrics", response_class=PlainTextResponse)
async def prometheus(request: Request):
    return Response(request.app.state.metrics.text(), media_type="text/plain; version=0.0.4")
