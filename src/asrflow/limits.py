"""Request limits that hold however the body arrives: a pure ASGI middleware that counts body bytes."""

from __future__ import annotations


class BodyTooLarge(Exception):
    """Raised from `receive` once a request body passes the limit; the server maps it to 413."""

    def __init__(self, limit: int):
        super().__init__(f"the request body is larger than the server's limit of {limit / 2**20:g} MB.")
        self.limit = limit


class BodyLimit:
    """Counts body bytes as they arrive, chunked or with a Content-Length, on every route.

    A declared length over the limit is refused before reading; otherwise reading stops at the first chunk
    past the limit (the app sees BodyTooLarge from `receive`), so no more than the limit is ever read.
    """

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            return await _refuse(send, BodyTooLarge(self.max_bytes))
        received = 0

        async def counted():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        return await self.app(scope, counted, send)


async def _refuse(send, error: BodyTooLarge) -> None:
    import json

    body = json.dumps({"error": {"message": str(error), "type": "invalid_request_error", "param": None, "code": 413}}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
