"""The guard for irreversible tools: ask tether (`POST /api/v1/decide`) before the call, wait for a
person's approval when policy says so, and raise a typed error on deny / rate limit. Fails closed:
if tether cannot be asked, the irreversible call does not happen."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from opentelemetry.trace import Span

from tether.core.errors import PolicyDeniedError, RateLimitedError
from tether.sdk import _values as v
from tether.sdk._config import Sdk

_WAIT_CHUNK_S = 30.0
_MAX_WAIT_ERRORS = 3
_FINAL = ("approved", "denied", "expired")


class ToolDeniedError(PolicyDeniedError):
    """tether's policy (or a person) refused a guarded tool call; the tool did not run."""

    def __init__(
        self,
        message: str,
        *,
        tool: str,
        decision: str,
        reason: str | None = None,
        rule: str | None = None,
        approval_id: str | None = None,
    ) -> None:
        super().__init__(
            message, tool=tool, decision=decision, reason=reason, rule=rule, approval_id=approval_id
        )
        self.tool = tool
        self.decision = decision
        self.reason = reason
        self.rule = rule
        self.approval_id = approval_id


class ToolRateLimitedError(RateLimitedError):
    """The tool's rate limit is used up; retry after `retry_after_s` seconds."""

    def __init__(
        self,
        message: str,
        *,
        tool: str,
        retry_after_s: float | None = None,
        rule: str | None = None,
    ) -> None:
        super().__init__(message, tool=tool, retry_after_s=retry_after_s, rule=rule)
        self.tool = tool
        self.retry_after_s = retry_after_s
        self.rule = rule


Send = Callable[..., httpx.Response]
ASend = Callable[..., Awaitable[httpx.Response]]


def _decision(resp: httpx.Response, tool: str) -> dict[str, Any]:
    if resp.status_code >= 300:
        raise ToolDeniedError(
            f"tether refused to decide on {tool} (HTTP {resp.status_code}: {resp.text[:200]}); "
            "the irreversible call was not made",
            tool=tool,
            decision="error",
        )
    data = _json_object(resp, tool)
    if "decision" not in data:
        raise ToolDeniedError(
            f"tether's decision on {tool} was malformed: {data!r}", tool=tool, decision="error"
        )
    return data


def _json_object(resp: httpx.Response, tool: str) -> dict[str, Any]:
    """The reply as a JSON object, or ToolDeniedError: a guarded call fails closed."""
    try:
        data = resp.json()
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise ToolDeniedError(
            f"tether answered about {tool} with something that is not a JSON object "
            f"({resp.text[:100]!r}); the irreversible call was not made",
            tool=tool,
            decision="error",
        )
    return data


def _record(span: Span, data: dict[str, Any]) -> None:
    span.set_attributes(
        v.clean(
            {
                v.DECISION: data.get("decision"),
                v.DECISION_RULE: data.get("rule"),
                v.DECISION_REASON: data.get("reason"),
                v.APPROVAL_ID: data.get("approval_id"),
            }
        )
    )


def _unreachable(tool: str, exc: Exception) -> ToolDeniedError:
    return ToolDeniedError(
        f"could not ask tether whether {tool} may run ({type(exc).__name__}: {exc}); irreversible "
        "tools fail closed, so the call was not made. Is `tether serve` running?",
        tool=tool,
        decision="unreachable",
    )


def _verdict(tool: str, data: dict[str, Any]) -> str | None:
    """Raises for deny/rate_limited/unknown; returns None to proceed, or an approval id to wait."""
    decision = data.get("decision")
    reason, rule = data.get("reason"), data.get("rule")
    if decision == "allow":
        return None
    if decision == "rate_limited":
        retry = data.get("retry_after_s")
        raise ToolRateLimitedError(
            f"{tool} is rate limited"
            + (f" (rule {rule})" if rule else "")
            + (f"; retry after {retry}s" if retry is not None else ""),
            tool=tool,
            retry_after_s=retry,
            rule=rule,
        )
    if decision == "approval_required" and data.get("approval_id"):
        return str(data["approval_id"])
    raise ToolDeniedError(
        f"{tool} was denied by tether"
        + (f" (rule {rule})" if rule else "")
        + (f": {reason}" if reason else ""),
        tool=tool,
        decision=str(decision),
        reason=reason,
        rule=rule,
    )


def _after_wait(tool: str, approval_id: str, data: dict[str, Any]) -> None:
    status = data.get("status")
    if status == "approved":
        return
    reason = data.get("reason")
    raise ToolDeniedError(
        f"{tool} was not approved ({status})" + (f": {reason}" if reason else ""),
        tool=tool,
        decision=str(status),
        reason=reason,
        approval_id=approval_id,
    )


def _held(tool: str, resp: httpx.Response, span: Span) -> str | None:
    """Reads the decision into the span; the approval id to wait on, None when allowed.
    Raises the typed error for a denial or a rate limit."""
    data = _decision(resp, tool)
    _record(span, data)
    approval_id = _verdict(tool, data)
    if approval_id is not None:
        span.add_event("tether.approval.waiting", {v.APPROVAL_ID: approval_id})
    return approval_id


def _resolved(tool: str, approval_id: str, result: dict[str, Any], span: Span) -> None:
    """Returns when the wait ended approved; raises ToolDeniedError otherwise (a wait the SDK
    gave up on counts as expired)."""
    span.add_event("tether.approval.resolved", v.clean({"status": result.get("status")}))
    if result.get("status") not in _FINAL:
        result = {"status": "expired", "reason": "the SDK stopped waiting (approval_timeout_s)"}
    _after_wait(tool, approval_id, result)


def require_delivered(tool: str, delivered: bool) -> None:
    """What earlier tools returned must reach tether before it decides (value provenance):
    if the SDK could not deliver all of it, the guarded call fails closed."""
    if not delivered:
        raise ToolDeniedError(
            f"tether did not receive all that earlier tools returned in this run, so it cannot "
            f"judge where {tool}'s arguments came from; the irreversible call was not made",
            tool=tool,
            decision="unreachable",
        )


def guard(sdk: Sdk, body: dict[str, Any], span: Span, timeout_s: float | None) -> None:
    """Blocks until tether allows the call described by `body`, or raises."""
    tool = body["tool"]
    try:
        resp = sdk.http.request("POST", "/api/v1/decide", json=body)
    except httpx.HTTPError as exc:
        raise _unreachable(tool, exc) from exc
    approval_id = _held(tool, resp, span)
    if approval_id is None:
        return
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    errors = 0
    while True:
        chunk = _chunk(deadline)
        try:
            resp = sdk.http.request(
                "GET",
                f"/api/v1/approvals/{approval_id}/wait",
                params={"timeout_s": chunk},
                timeout_s=chunk + 10,
            )
            resp.raise_for_status()
            result = _json_object(resp, tool)
            errors = 0
        except httpx.HTTPError as exc:
            errors += 1
            if errors >= _MAX_WAIT_ERRORS:
                raise _unreachable(tool, exc) from exc
            time.sleep(1.0)
            continue
        if result.get("status") in _FINAL or _expired(deadline):
            break
    _resolved(tool, approval_id, result, span)


async def aguard(sdk: Sdk, body: dict[str, Any], span: Span, timeout_s: float | None) -> None:
    """`guard` for async tools: waits without blocking the event loop."""
    tool = body["tool"]
    try:
        resp = await sdk.http.arequest("POST", "/api/v1/decide", json=body)
    except httpx.HTTPError as exc:
        raise _unreachable(tool, exc) from exc
    approval_id = _held(tool, resp, span)
    if approval_id is None:
        return
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    errors = 0
    while True:
        chunk = _chunk(deadline)
        try:
            resp = await sdk.http.arequest(
                "GET",
                f"/api/v1/approvals/{approval_id}/wait",
                params={"timeout_s": chunk},
                timeout_s=chunk + 10,
            )
            resp.raise_for_status()
            result = _json_object(resp, tool)
            errors = 0
        except httpx.HTTPError as exc:
            errors += 1
            if errors >= _MAX_WAIT_ERRORS:
                raise _unreachable(tool, exc) from exc
            await asyncio.sleep(1.0)
            continue
        if result.get("status") in _FINAL or _expired(deadline):
            break
    _resolved(tool, approval_id, result, span)


def _chunk(deadline: float | None) -> float:
    if deadline is None:
        return _WAIT_CHUNK_S
    return max(0.0, min(_WAIT_CHUNK_S, deadline - time.monotonic()))


def _expired(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() >= deadline
