"""The one exception -> HTTP status mapping of the server, and its two error formats (OpenAI's, MLflow's)."""

from __future__ import annotations

import logging

from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect

from asrflow.errors import AsrflowError
from asrflow.limits import BodyTooLarge

LOG = logging.getLogger("asrflow.server")


class HTTPError(Exception):
    def __init__(
        self, status: int, message: str, param: str | None = None, headers: dict | None = None, code: str | None = None
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.headers = status, message, param, headers or {}
        self.code = code or status  # OpenAI's code: a string where it names one (model_not_found)


def http_error(error: BaseException, method: str = "", path: str = "") -> HTTPError:
    """Any exception as the HTTPError the client gets: asrflow's by their status, the body limit as 413, a client
    gone mid-body as 499, anything else as a 500 without internals (its traceback goes to the log)."""
    if isinstance(error, HTTPError):
        return error
    if isinstance(error, ClientDisconnect):  # it left while its body was being read: nobody to answer, no fault
        return HTTPError(499, "the client closed the connection.")
    if isinstance(error, BodyTooLarge):
        return HTTPError(413, str(error), headers={"Connection": "close"})
    if isinstance(error, AsrflowError) and error.http_status < 500:
        return HTTPError(error.http_status, str(error))
    LOG.error("internal error on %s %s", method, path, exc_info=error)
    return HTTPError(500, "internal error: the server logged the details.")


def error_response(e: HTTPError, path: str) -> JSONResponse:
    """In the format of the protocol the path belongs to: MLflow's for /invocations, OpenAI's elsewhere."""
    if path == "/invocations":
        return mlflow_error(e.message, e.status, e.headers)
    return openai_error(e)


def openai_error(e: HTTPError) -> JSONResponse:
    kind = "invalid_request_error" if e.status < 500 else "server_error"
    body = {"error": {"message": e.message, "type": kind, "param": e.param, "code": e.code}}
    return JSONResponse(body, status_code=e.status, headers=e.headers)


def mlflow_error(message: str, status: int = 400, headers: dict | None = None) -> JSONResponse:
    code = "RESOURCE_DOES_NOT_EXIST" if status == 404 else "BAD_REQUEST" if status < 500 else "INTERNAL_ERROR"
    return JSONResponse({"error_code": code, "message": message}, status_code=status, headers=headers)
