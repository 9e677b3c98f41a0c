"""Errors as LLM clients expect them: OpenAI-shaped on /llm/v1, Anthropic-shaped on /llm/anthropic,
as JSON responses before a stream starts and as a final SSE event once it has started."""

from __future__ import annotations

import json
from typing import Any

import httpx
from starlette.responses import Response

from tether.core.errors import TetherError, UpstreamError, UpstreamTimeoutError


def _fields(exc: TetherError) -> dict[str, Any]:
    extra = {k: v for k, v in exc.details.items() if k not in ("message", "type", "code")}
    return extra


def openai_error(exc: TetherError) -> dict[str, Any]:
    body = {"message": exc.message, "type": exc.type, "code": exc.code, "param": None}
    body.update(_fields(exc))
    return {"error": body}


def anthropic_error(exc: TetherError) -> dict[str, Any]:
    body = {"type": exc.type, "message": exc.message}
    body.update(_fields(exc))
    return {"type": "error", "error": body}


def error_response(exc: TetherError, anthropic: bool) -> Response:
    body = anthropic_error(exc) if anthropic else openai_error(exc)
    headers = {}
    retry = exc.details.get("retry_after_s")
    if retry is not None:
        headers["retry-after"] = str(max(1, int(retry)))
    return Response(json.dumps(body), exc.http_status, headers, media_type="application/json")


def sse_error(exc: TetherError, anthropic: bool) -> bytes:
    """The last event of a stream that tether ends (kill, upstream fault): SDKs raise on it."""
    if anthropic:
        return f"event: error\ndata: {json.dumps(anthropic_error(exc))}\n\n".encode()
    return f"data: {json.dumps(openai_error(exc))}\n\n".encode()


def safe_url(url: str) -> str:
    """The URL without user:password, which a provider's base_url may carry."""
    try:
        return str(httpx.URL(url).copy_with(userinfo=b""))
    except (httpx.InvalidURL, TypeError, ValueError):
        return "(invalid URL)"


def from_transport(exc: httpx.HTTPError, provider: str, url: str) -> UpstreamError:
    """A clear error for a request that got no usable HTTP answer."""
    url = safe_url(url)
    if isinstance(exc, httpx.TimeoutException):
        what = "connecting to" if isinstance(exc, httpx.ConnectTimeout) else "waiting for"
        return UpstreamTimeoutError(
            f"provider {provider} timed out ({what} {url}); raise timeout_s in tether.yaml "
            "or retry later",
            provider=provider,
        )
    if isinstance(exc, httpx.ConnectError):
        return UpstreamError(
            f"cannot connect to provider {provider} at {url}: {exc or 'connection refused'}",
            code="upstream_unreachable",
            provider=provider,
        )
    return UpstreamError(
        f"provider {provider} broke off the response ({type(exc).__name__}: {exc})",
        code="upstream_disconnected",
        provider=provider,
    )


def from_status(status: int, body: bytes, provider: str) -> TetherError:
    """An upstream error status: the agent's own mistakes (400, 404, 413, 422, 429) keep their
    status and the provider's message; a rejected provider key and 5xx become 502."""
    message = _upstream_message(body)
    if status in (400, 404, 413, 422, 429):
        err = TetherError(f"provider {provider}: {message}", code=f"upstream_{status}")
        err.type = "invalid_request_error" if status != 429 else "rate_limit_error"  # type: ignore[misc]
        err.http_status = status  # type: ignore[misc]
        return err
    if status in (401, 403):
        return UpstreamError(
            f"provider {provider} rejected tether's API key (HTTP {status}); check its "
            "api_key_env / api_key_file in tether.yaml",
            code="upstream_auth",
            provider=provider,
        )
    return UpstreamError(
        f"provider {provider} failed with HTTP {status}: {message}",
        code=f"upstream_{status}",
        provider=provider,
        upstream_status=status,
    )


def _upstream_message(body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return body[:200].decode(errors="replace") or "(empty body)"
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return str(err["message"])
        if isinstance(err, str):
            return err
    return json.dumps(data)[:200]


def malformed(provider: str, detail: str) -> UpstreamError:
    return UpstreamError(
        f"provider {provider} sent a malformed reply ({detail})",
        code="upstream_malformed",
        provider=provider,
    )
