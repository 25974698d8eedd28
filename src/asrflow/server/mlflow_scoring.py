"""MLflow's scoring protocol, as `mlflow models serve` speaks it: /invocations, /ping, /version."""

from __future__ import annotations

import json
from importlib.metadata import version
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from asrflow.errors import AsrflowError
from asrflow.scoring import format_results, parse_params, scoring_items, unwrap
from asrflow.server import schema
from asrflow.server.errors import mlflow_error
from asrflow.server.holder import ModelHolder, holder

router = APIRouter()
Holder = Annotated[ModelHolder, Depends(holder)]


@router.post("/invocations", openapi_extra=schema.scoring(), responses=schema.scoring_responses())
async def invocations(request: Request, model: Holder):
    """inputs / instances / dataframe_split / dataframe_records of base64 audio, plus params."""
    body = await request.body()  # its size is the body limit's to bound (413), as on every route
    try:
        payload = json.loads(body)
        items = scoring_items(payload)
    except (ValueError, RecursionError, AsrflowError) as e:  # not JSON (or nested too deep), or not a scoring request
        return mlflow_error(f"Invalid input: {str(e)[:200]}")
    params = payload.get("params")
    params = dict(params) if isinstance(params, dict) else params
    # asrflow's server also takes the param `model`: any model it serves (GET /v1/models), by name
    served = await model.model(params.pop("model", None) if isinstance(params, dict) else None)
    try:
        options, response = parse_params(served.transcriber, params)
    except AsrflowError as e:
        return mlflow_error(str(e))
    try:
        inputs = [unwrap(item, paths=False) for item in items]
    except AsrflowError as e:
        return mlflow_error(str(e))
    reservation = await model.admit(inputs)  # a request is admitted or refused whole
    results = await model.run(served, reservation, options, receive=request.receive)
    return JSONResponse({"predictions": format_results(list(results), *response)}, headers=served.headers)


@router.get("/ping", response_class=PlainTextResponse)
async def ping(model: Holder):
    model.ready()
    return PlainTextResponse("\n")


@router.get("/version", response_class=PlainTextResponse)
async def mlflow_version():
    return PlainTextResponse(version("mlflow"))
