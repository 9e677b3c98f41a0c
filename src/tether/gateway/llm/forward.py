"""Sending one call upstream over the shared HTTP/1.1 keep-alive pool, with retries only where a
retry cannot double-bill (no connection made, or 502/503/529 before any byte) and fallbacks."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx

from tether.core.errors import TetherError, UpstreamError
from tether.gateway.llm.errors import from_status, from_transport
from tether.gateway.llm.provider import Target

RETRY_STATUS = frozenset({502, 503, 529})
# a failed attempt that the next provider in the fallback list may take over
FALLBACK_STATUS = RETRY_STATUS | {500, 504}
BACKOFF_S = 0.05


def make_client(max_connections: int = 512) -> httpx.AsyncClient:
    """One client per process: HTTP/1.1 with keep-alive, timeouts set per request."""
    return httpx.AsyncClient(
        limits=httpx.Limits(
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            keepalive_expiry=30.0,
        ),
        timeout=httpx.Timeout(60.0, connect=5.0),
        follow_redirects=False,
        trust_env=False,
    )


class Attempt:
    """What happened: the target that answered and its response (open when streaming)."""

    def __init__(self, target: Target, response: httpx.Response, tries: int) -> None:
        self.target = target
        self.response = response
        self.tries = tries


async def send(
    client: httpx.AsyncClient,
    targets: list[Target],
    endpoint: str,
    body_for: Callable[[Target], bytes],
    *,
    stream: bool,
) -> Attempt:
    """The first successful answer among `targets`; raises the last clear error otherwise.

    A 2xx response is returned open when `stream` (the caller relays and closes it).
    """
    last: TetherError | None = None
    tries = 0
    for target in targets:
        cfg = target.provider.config
        url = target.provider.url(endpoint)
        content = body_for(target)
        timeout = httpx.Timeout(cfg.timeout_s, connect=cfg.connect_timeout_s)
        for attempt in range(cfg.max_retries + 1):
            if attempt:
                await asyncio.sleep(BACKOFF_S * 2 ** (attempt - 1))
            tries += 1
            request = client.build_request(
                "POST", url, content=content, headers=target.provider.headers(), timeout=timeout
            )
            try:
                response = await client.send(request, stream=stream)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                last = from_transport(exc, cfg.name, url)
                continue  # nothing reached the provider: safe to retry
            except httpx.HTTPError as exc:
                # it may have been processed (and billed): no retry, no fallback
                raise from_transport(exc, cfg.name, url) from None
            if response.status_code < 400:
                return Attempt(target, response, tries)
            raw = await response.aread() if stream else response.content
            await response.aclose()
            err = from_status(response.status_code, raw, cfg.name)
            if response.status_code in RETRY_STATUS:
                last = err
                continue
            if response.status_code in FALLBACK_STATUS:
                last = err
                break
            raise err
    raise last or UpstreamError("no provider could be tried")
