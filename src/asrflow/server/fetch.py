"""URL inputs, closed to SSRF: opt-in hosts, public addresses only (the checked address is the one connected to),
every redirect checked again, the upload byte limit, a time limit, and a clear 400 for every failure."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import urllib.parse
from dataclasses import dataclass

import httpx

from asrflow.server.errors import HTTPError

MAX_REDIRECTS = 3


@dataclass(frozen=True)
class UrlPolicy:
    allowed_hosts: tuple[str, ...] = ()
    allow_private: bool = False  # for fetching from your own network; never on a public server
    max_bytes: int = 25 * 2**20
    timeout_s: float = 30.0


async def fetch_audio(url: str, policy: UrlPolicy) -> bytes:
    """The bytes behind `url`, or an HTTPError (400, 413) that names the problem."""
    try:
        return await asyncio.wait_for(_follow(url, policy), policy.timeout_s)
    except TimeoutError:
        raise HTTPError(
            400, f"downloading {url} took longer than {policy.timeout_s:g} s: send the audio itself."
        ) from None
    except httpx.HTTPError as e:
        raise HTTPError(400, f"could not download {url}: {e or type(e).__name__}.") from None


async def _follow(url: str, policy: UrlPolicy) -> bytes:
    async with httpx.AsyncClient(follow_redirects=False, trust_env=False, timeout=policy.timeout_s) as client:
        for _ in range(MAX_REDIRECTS + 1):
            parsed, address = await checked_address(url, policy)
            data, location = await _get(client, url, parsed, address, policy.max_bytes)
            if location is None:
                return data
            url = urllib.parse.urljoin(url, location)
    raise HTTPError(400, f"more than {MAX_REDIRECTS} redirects: send the final URL or the audio itself.")


async def checked_address(url: str, policy: UrlPolicy) -> tuple[urllib.parse.ParseResult, str]:
    """The URL parsed and the one address to connect to: an allowed host, resolving to public addresses only."""
    parsed = urllib.parse.urlparse(url)
    if not policy.allowed_hosts:
        raise HTTPError(
            400,
            "URL inputs are disabled on this server: send the audio itself (start it with --allow-url-host to enable).",
        )
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise HTTPError(400, f"only http(s) URLs are accepted, not {url!r}.")
    if parsed.hostname not in policy.allowed_hosts:
        raise HTTPError(400, f"host {parsed.hostname!r} is not in the server's allowed URL hosts.")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(parsed.hostname, port, type=socket.SOCK_STREAM)
    except OSError:
        raise HTTPError(400, f"host {parsed.hostname!r} does not resolve.") from None
    addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
    for ip in addresses:
        if not ip.is_global and not policy.allow_private:
            raise HTTPError(400, f"host {parsed.hostname!r} resolves to a non-public address ({ip}): refused.")
    return parsed, str(addresses[0])


async def _get(client: httpx.AsyncClient, url: str, parsed, address: str, max_bytes: int) -> tuple[bytes, str | None]:
    """GET from the checked address itself (no second lookup); (body, None) or (b"", redirect location)."""
    host = f"[{address}]" if ":" in address else address
    pinned = parsed._replace(netloc=f"{host}:{parsed.port}" if parsed.port else host).geturl()
    extensions = {"sni_hostname": parsed.hostname} if parsed.scheme == "https" else {}
    headers = {"Host": parsed.netloc.rsplit("@", 1)[-1]}
    async with client.stream("GET", pinned, headers=headers, extensions=extensions) as response:
        if response.is_redirect and "location" in response.headers:
            return b"", response.headers["location"]
        if response.status_code != 200:
            raise HTTPError(400, f"{url} answered HTTP {response.status_code}: check the URL.")
        too_large = HTTPError(413, f"{url} is larger than the {max_bytes / 2**20:g} MB upload limit.")
        if int(response.headers.get("content-length") or 0) > max_bytes:
            raise too_large
        chunks, size = [], 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > max_bytes:
                raise too_large
            chunks.append(chunk)
    if not size:
        raise HTTPError(400, f"{url} returned no data.")
    return b"".join(chunks), None
