"""Sending one call upstream over the shared HTTP/1.1 keep-alive pool, with retries only where a
retry cannot double-bill (no connection made, 502/503/529 before any byte, or a 401 answered
to a key that has since been rotated) and fallbacks."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable

import httpx

from tether.core.errors import TetherError, UpstreamError
from tether.gateway.llm.errors import from_status, from_transport
from tether.gateway.llm.provider import Target
from tether.gateway.llm.wire import LeanTransport, StaleConnection

RETRY_STATUS = frozenset({502, 503, 529})
# a failed attempt that the next provider in the fallback list may take over
FALLBACK_STATUS = RETRY_STATUS | {500, 504}
BACKOFF_S = 0.05
# raised by send() only for a pooled connection the server closed before any byte of the reply;
# a fresh connection dropped, or one whose reply had begun, may have reached the provider
STALE_CONNECTION = (StaleConnection,)


class _NoCookies(httpx.Cookies):
    """Cookies a provider sets are not kept: the pool is shared by every agent, and a cookie
    of one must never ride along on another's call (this also spares a parse per response)."""

    def extract_cookies(self, response: httpx.Response) -> None:
        return None

    def set_cookie_header(self, request: httpx.Request) -> None:
        return None


async def _read_body(response: httpx.Response, provider: str, url: str) -> bytes:
    """The whole body, then the connection goes back to the pool."""
    try:
        return await response.aread()
    except httpx.HTTPError as exc:
        raise from_transport(exc, provider, url) from None
    finally:
        await response.aclose()


def make_client(max_connections: int = 256) -> httpx.AsyncClient:
    """An HTTP/1.1 client with keep-alive (wire.py), no cookie jar; timeouts are set per
    request."""
    client = httpx.AsyncClient(
        transport=LeanTransport(
            max_connections=max_connections, max_keepalive=max_connections, keepalive_expiry=30.0
        ),
        timeout=httpx.Timeout(60.0, connect=5.0),
        follow_redirects=False,
        trust_env=False,
    )
    client._cookies = _NoCookies()  # httpx has no switch for this; the attribute is stable
    return client


class Upstream:
    """The process's keep-alive pool: one client over the lean transport (wire.py)."""

    def __init__(self, max_connections: int = 256) -> None:
        self.client = make_client(max_connections)

    def next(self) -> httpx.AsyncClient:
        return self.client

    async def aclose(self) -> None:
        await self.client.aclose()


@functools.lru_cache(maxsize=256)
def _url(url: str) -> httpx.URL:
    return httpx.URL(url)


@functools.lru_cache(maxsize=64)
def _timeouts(read_s: float, connect_s: float) -> dict[str, float]:
    return httpx.Timeout(read_s, connect=connect_s).as_dict()  # type: ignore[return-value]


def _headers(target: Target, extra: dict[str, str] | None) -> dict[str, str]:
    headers = target.provider.headers()
    return {**headers, **extra} if extra else headers


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
    extra_headers: dict[str, str] | None = None,
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
        headers = _headers(target, extra_headers)
        timeout = _timeouts(cfg.timeout_s, cfg.connect_timeout_s)
        attempt = 0
        stale_retry = key_retry = True
        while attempt <= cfg.max_retries:
            if attempt:
                await asyncio.sleep(BACKOFF_S * 2 ** (attempt - 1))
            attempt += 1
            tries += 1
            # built directly: the client's URL merging and default headers cost more than
            # tether's own work on a call
            request = httpx.Request(
                "POST", _url(url), content=content, headers=headers,
                extensions={"timeout": timeout},
            )  # fmt: skip
            try:
                # always opened as a stream: an error before the status line is told apart
                # from one while the body is read
                response = await client.send(request, stream=True)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                last = from_transport(exc, cfg.name, url)
                continue  # nothing reached the provider: safe to retry
            except STALE_CONNECTION as exc:
                # a pooled keep-alive connection the server had just closed: once, at once,
                # whatever max_retries says (urllib3 does the same)
                if stale_retry:
                    stale_retry = False
                    attempt -= 1
                    continue
                raise from_transport(exc, cfg.name, url) from None
            except httpx.HTTPError as exc:
                # it may have been processed (and billed): no retry, no fallback
                raise from_transport(exc, cfg.name, url) from None
            if response.status_code < 400:
                if not stream:
                    await _read_body(response, cfg.name, url)
                return Attempt(target, response, tries)
            raw = await _read_body(response, cfg.name, url)
            err = from_status(response.status_code, raw, cfg.name)
            if response.status_code in RETRY_STATUS:
                last = err
                continue
            if response.status_code in FALLBACK_STATUS:
                last = err
                break
            if response.status_code == 401 and key_retry:
                # refused before any work (nothing billed): the key may have been rotated
                # upstream before it reached us; re-read it now and, if the key differs from
                # the one refused (this re-read or another call's found a new one), try again
                key_retry = False
                await asyncio.to_thread(target.provider.keys.refresh)
                fresh = _headers(target, extra_headers)
                if fresh != headers:
                    headers = fresh
                    attempt -= 1
                    continue
            raise err
    raise last or UpstreamError("no provider could be tried")
