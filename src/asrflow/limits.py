"""Request limits as pure ASGI middleware, so they hold however a request arrives (chunked or not, HTTP or
WebSocket): body bytes counted, and only this server's Host names and allowed origins answered."""

from __future__ import annotations

import ipaddress
import json
from urllib.parse import urlsplit


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
            return await refuse(send, 413, str(BodyTooLarge(self.max_bytes)))
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


class SameOrigin:
    """Only this server's names in Host, and no cross-origin caller unless allowed, on every route and WebSocket.

    Without it any web page could use a server on loopback: a form POST needs no CORS preflight, and DNS rebinding
    (a page's name made to resolve to 127.0.0.1) lets the page read the answers. Host must be an IP address,
    localhost, the bound name or an `allowed_hosts` name (a rebinding page's Host is its own name: 421); a request
    with an Origin must come from the page's own origin (this server's) or one of `cors_origins` ('*': any): 403.
    """

    def __init__(self, app, host: str, allowed_hosts=(), cors_origins=()):
        self.app, self.origins = app, {o.rstrip("/").lower() for o in cors_origins}
        self.hosts = {"localhost", host.lower().strip("[]"), *(h.lower() for h in allowed_hosts)}

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = scope.get("headers") or []
        hosts = [v.decode("latin-1").lower() for k, v in headers if k == b"host"]
        origins = [v.decode("latin-1").rstrip("/").lower() for k, v in headers if k == b"origin"]
        host = hosts[0] if len(hosts) == 1 else ""  # none, or two (which would a proxy have read?): unknown
        origin = origins[0] if len(origins) == 1 else "null" if origins else ""
        if not self.known(host):
            status, message = (
                421,
                (
                    f"this server does not answer to the name {host[:100]!r}: use its address, or "
                    "start it with --allowed-host NAME for the name clients use."
                ),
            )
        elif origin and urlsplit(origin).netloc != host and "*" not in self.origins and origin not in self.origins:
            status, message = (
                403,
                (
                    f"requests from the web origin {origin[:100]!r} are refused: start the server "
                    "with --cors-origin ORIGIN to let that site's pages call it."
                ),
            )
        else:
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":  # before the handshake is accepted: the client sees an HTTP 403
            return await send({"type": "websocket.close", "code": 1008, "reason": message[:120]})
        return await refuse(send, status, message)

    def known(self, host: str) -> bool:
        try:
            parts = urlsplit(f"//{host}")  # '[::1]:8000' -> '::1', 'Example.com:80' -> 'example.com'
            name = parts.hostname or ""
            parts.port  # noqa: B018 - a port that is not a number raises ValueError here
        except ValueError:
            return False
        if "@" in parts.netloc or parts.path or parts.query or parts.fragment:  # 'evil.example@localhost' is no name
            return False
        try:
            ipaddress.ip_address(name)
            return True  # an address is never a rebinding page's name
        except ValueError:
            return name in self.hosts


async def refuse(send, status: int, message: str) -> None:
    body = json.dumps(
        {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": status}}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
