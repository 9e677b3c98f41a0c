"""`@tether.tool`: records each call of a sync or async function as a TOOL span (name, JSON input,
output, latency, error) and, for irreversible tools, asks tether for permission first."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode

from tether.sdk import _values as v
from tether.sdk._config import Sdk, active
from tether.sdk._guard import aguard, guard, require_delivered
from tether.sdk._run import Run, current_run

log = logging.getLogger("tether.sdk")

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class ToolSpec:
    name: str
    tags: tuple[str, ...]
    irreversible: bool
    approval_timeout_s: float | None
    signature: inspect.Signature | None

    def arguments(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """The call's arguments by parameter name (`self`/`cls` left out)."""
        if self.signature is None:
            return {"args": list(args), **kwargs}
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError:
            return {"args": list(args), **kwargs}
        bound.apply_defaults()
        out: dict[str, Any] = {}
        for key, value in bound.arguments.items():
            param = self.signature.parameters[key]
            if key in ("self", "cls") and param.kind is param.POSITIONAL_OR_KEYWORD:
                continue
            if param.kind is param.VAR_KEYWORD:
                out.update(value)
            else:
                out[key] = list(value) if param.kind is param.VAR_POSITIONAL else value
        return out

    def decide_body(self, arguments: dict[str, Any]) -> dict[str, Any]:
        run = current_run()
        body: dict[str, Any] = {
            "run_id": run.id if run is not None else None,
            "tool": self.name,
            "arguments": v.to_jsonable(arguments),
            "tags": list(self.tags),
        }
        if run is not None:
            body["agent"] = run.agent  # an agent key must match it; an admin key needs it
            declared = run.declaration()
            if declared is not None:
                body["run"] = declared
        return body


@contextmanager
def _tool_span(sdk: Sdk, spec: ToolSpec, arguments: dict[str, Any]) -> Iterator[Span]:
    attrs = v.clean(
        {
            v.SPAN_KIND: "TOOL",
            v.TOOL_NAME: spec.name,
            v.TOOL_TAGS: list(spec.tags) or None,
            v.TOOL_IRREVERSIBLE: spec.irreversible or None,
        }
    )
    span = sdk.tracer.start_span(spec.name, attributes=attrs)
    v.set_io(span, v.INPUT, v.INPUT_MIME, arguments)
    with trace.use_span(
        span, end_on_exit=True, record_exception=False, set_status_on_exception=False
    ):
        try:
            yield span
        except BaseException as exc:
            v.mark_error(span, exc)
            raise
        span.set_status(Status(StatusCode.OK))


def report_values(sdk: Sdk, spec: ToolSpec, arguments: dict[str, Any], result: Any) -> None:
    """Tells tether, in the background, what the tool returned into the current run, so that
    value provenance sees it as the MCP gateway sees a forwarded result (a later guarded call
    waits until this has been sent). Outside a run there is nothing to attribute it to."""
    run = current_run()
    if run is None or result is None:
        return
    body: dict[str, Any] = {
        "tool": spec.name,
        "tags": list(spec.tags),
        "agent": run.agent,
        "arguments": v.to_jsonable(arguments),
        "output": v.to_text(result)[0],
    }
    declared = run.declaration()
    if declared is not None:
        body["run"] = declared
    run.values_reported += 1
    sdk.http.submit(lambda: _post_values(sdk, run, body))


def _delivered(sdk: Sdk) -> bool:
    """True once every result reported in the current run reached tether (waits for the
    SDK's REST thread, bounded by its timeout); a dropped or refused one makes it False."""
    drained = sdk.http.drain(sdk.http.timeout_s)
    run = current_run()
    return drained and (run is None or run.values_delivered >= run.values_reported)


def _declared(body: dict[str, Any]) -> None:
    run = current_run()
    if run is not None and "run" in body:
        run.declared = True


def _post_values(sdk: Sdk, run: Run, body: dict[str, Any]) -> None:
    resp = sdk.http.request("POST", f"/api/v1/runs/{run.id}/values", json=body)
    if resp.status_code < 300:
        run.values_delivered += 1
        if "run" in body:
            run.declared = True
        return
    sdk.http.failed_jobs += 1
    if not sdk.http.values_warned:  # once: an agent may make thousands of tool calls
        sdk.http.values_warned = True
        log.warning("tether: recording %s's result answered %s: %s (later failures are only "
                    "counted, not logged)", body["tool"], resp.status_code,
                    resp.text[:200])  # fmt: skip


def _wrap(fn: Callable[..., Any], spec: ToolSpec) -> Callable[..., Any]:
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def async_tool(*args: Any, **kwargs: Any) -> Any:
            sdk = active()
            arguments = spec.arguments(args, kwargs)
            with _tool_span(sdk, spec, arguments) as span:
                if spec.irreversible:
                    require_delivered(spec.name, await asyncio.to_thread(_delivered, sdk))
                    body = spec.decide_body(arguments)
                    await aguard(sdk, body, span, spec.approval_timeout_s)
                    _declared(body)
                result = await fn(*args, **kwargs)
                v.set_io(span, v.OUTPUT, v.OUTPUT_MIME, result)
                report_values(sdk, spec, arguments, result)
                return result

        async_tool.__tether_tool__ = spec  # type: ignore[attr-defined]
        return async_tool

    @functools.wraps(fn)
    def sync_tool(*args: Any, **kwargs: Any) -> Any:
        sdk = active()
        arguments = spec.arguments(args, kwargs)
        with _tool_span(sdk, spec, arguments) as span:
            if spec.irreversible:
                require_delivered(spec.name, _delivered(sdk))
                body = spec.decide_body(arguments)
                guard(sdk, body, span, spec.approval_timeout_s)
                _declared(body)
            result = fn(*args, **kwargs)
            v.set_io(span, v.OUTPUT, v.OUTPUT_MIME, result)
            report_values(sdk, spec, arguments, result)
            return result

    sync_tool.__tether_tool__ = spec  # type: ignore[attr-defined]
    return sync_tool


@overload
def tool(func: F, /) -> F: ...
@overload
def tool(
    *,
    name: str | None = None,
    tags: list[str] | tuple[str, ...] | None = None,
    irreversible: bool = False,
    approval_timeout_s: float | None = None,
) -> Callable[[F], F]: ...


def tool(
    func: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    tags: list[str] | tuple[str, ...] | None = None,
    irreversible: bool = False,
    approval_timeout_s: float | None = None,
) -> Any:
    """Records every call of the decorated function (sync or async) as a tool call of the
    current run. Exceptions are recorded and re-raised unchanged.

    With `irreversible=True` tether decides first (`POST /api/v1/decide`); a call that needs a
    person's approval waits for it; a refusal raises `tether.ToolDeniedError`, a rate limit
    `tether.ToolRateLimitedError`, and the function is not called.

        @tether.tool
        def lookup_customer(email: str) -> dict: ...

        @tether.tool(name="mail.send", tags=["egress"], irreversible=True)
        async def send_email(to: str, subject: str, body: str) -> str: ...
    """

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        try:
            signature: inspect.Signature | None = inspect.signature(fn)
        except (TypeError, ValueError):
            signature = None
        spec = ToolSpec(
            name=name or str(getattr(fn, "__name__", "tool")),
            tags=tuple(tags or ()),
            irreversible=irreversible,
            approval_timeout_s=approval_timeout_s,
            signature=signature,
        )
        return _wrap(fn, spec)

    if func is not None:
        return decorate(func)
    return decorate
