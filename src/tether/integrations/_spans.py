"""The one way the framework integrations turn a framework's events into tether spans: a tree of
OpenTelemetry spans under one tether run, keyed by the framework's own ids, on the SDK's
exporter. One `SpanTree` is one run; a tree never reads another's keys, so concurrent runs
cannot cross-link.

LLM calls that go through tether's LLM gateway are recorded by the gateway itself (tokens,
cost, the caps); a tree made with `llm_via_gateway=True` (the default) records no LLM spans of
its own, so nothing is counted twice. The run id is the correlation id: send `headers()` with
the model client and the gateway's spans land in the same run. Likewise a tree made with
`tools_via_gateway=True` (tools that call tether's MCP gateway, which records each call) keeps
the framework's tool spans as `chain` spans, so a run's tool calls are the gateway's alone.

Frameworks that deliver events on other threads (CrewAI) pass the events' own times
(`start_time=`, `end_time=`, nanoseconds) and may deliver an end before its start: the end is
kept until the start arrives.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode

from tether.sdk import _values as v
from tether.sdk._config import active

# tether's span kinds in OpenInference's words (what ingest reads)
KINDS = {
    "agent": "AGENT",
    "chain": "CHAIN",
    "llm": "LLM",
    "tool": "TOOL",
    "retrieval": "RETRIEVER",
    "embedding": "EMBEDDING",
    "guardrail": "GUARDRAIL",
}


class SpanTree:
    """Spans of one run. `start(key, parent, ...)` opens a span under `parent` (or the run's
    root), `end(key, ...)` closes it; keys are whatever ids the framework hands out."""

    def __init__(
        self,
        agent: str,
        *,
        task_id: str | None = None,
        user: str | None = None,
        version: str | None = None,
        run_id: str | None = None,
        llm_via_gateway: bool = True,
        tools_via_gateway: bool = False,
        name: str | None = None,
    ) -> None:
        self.agent = agent
        self.task_id = task_id
        self.user = user
        self.version = version
        self.run_id = run_id or f"run_{os.urandom(12).hex()}"
        self.llm_via_gateway = llm_via_gateway
        self.tools_via_gateway = tools_via_gateway
        self.name = name or agent
        self._root: Span | None = None
        self._spans: dict[Any, Span] = {}
        self._early_ends: dict[Any, dict[str, Any]] = {}
        self.finished = False
        self._lock = threading.Lock()

    def headers(self) -> dict[str, str]:
        """For the model client (`default_headers=`): the gateway attributes its calls here."""
        out = {"X-Tether-Run-Id": self.run_id}
        if self.task_id:
            out["X-Tether-Task-Id"] = self.task_id
        if self.user:
            out["X-Tether-User"] = self.user
        return out

    def _attribution(self) -> dict[str, Any]:
        return v.clean(
            {
                v.AGENT: self.agent,
                v.AGENT_VERSION: self.version,
                v.TASK_ID: self.task_id,
                v.USER: self.user,
            }
        )

    def root(self, input: Any = None, *, start_time: int | None = None) -> Span:
        """The run's root AGENT span (opened on first use)."""
        with self._lock:
            if self._root is None:
                attrs = {v.SPAN_KIND: "AGENT", v.RUN_ID: self.run_id, **self._attribution()}
                span = active().tracer.start_span(
                    self.name, context=otel_context.Context(), attributes=attrs,
                    start_time=start_time,
                )  # fmt: skip
                if input is not None:
                    v.set_io(span, v.INPUT, v.INPUT_MIME, input)
                self._root = span
            return self._root

    def start(
        self,
        key: Any,
        parent: Any,
        name: str,
        kind: str,
        *,
        input: Any = None,
        attributes: dict[str, Any] | None = None,
        start_time: int | None = None,
    ) -> Span | None:
        """Opens a span; an LLM span is skipped when the gateway records LLM calls (None)."""
        if kind == "llm" and self.llm_via_gateway:
            return None
        attrs = {**self._attribution(), **v.clean(attributes or {})}
        if kind == "tool" and self.tools_via_gateway:
            # the gateway's span of the same call is the run's tool call; this one is context
            kind, name = "chain", f"tool {name}"
            attrs["tether.framework.tool"] = attrs.pop(v.TOOL_NAME, name[5:])
        attrs[v.SPAN_KIND] = KINDS.get(kind, "CHAIN")
        with self._lock:
            parent_span = self._spans.get(parent)
        parent_span = parent_span or self.root()
        span = active().tracer.start_span(
            name, context=trace.set_span_in_context(parent_span), attributes=attrs,
            start_time=start_time,
        )  # fmt: skip
        if input is not None:
            v.set_io(span, v.INPUT, v.INPUT_MIME, input)
        with self._lock:
            early = self._early_ends.pop(key, None)
            if early is None:
                self._spans[key] = span
        if early is not None:
            _close(span, **early)
        return span

    def is_open(self, key: Any) -> bool:
        with self._lock:
            return key in self._spans

    def end(
        self,
        key: Any,
        *,
        output: Any = None,
        error: BaseException | str | None = None,
        attributes: dict[str, Any] | None = None,
        end_time: int | None = None,
        early: bool = False,
    ) -> None:
        """Closes the span `key`. With `early=True` an end whose start has not arrived yet is
        kept for it (events delivered out of order); otherwise it is ignored."""
        done = {"output": output, "error": error, "attributes": attributes, "end_time": end_time}
        with self._lock:
            span = self._spans.pop(key, None)
            if span is None and early and not self.finished:
                self._early_ends[key] = done
        if span is not None:
            _close(span, **done)

    def finish(
        self,
        *,
        output: Any = None,
        error: BaseException | str | None = None,
        end_time: int | None = None,
    ) -> None:
        """Ends the run: open spans first (a framework that crashed left some), then the root."""
        with self._lock:
            left, self._spans = list(self._spans.values()), {}
            self._early_ends.clear()
            self.finished = True
        for span in left:
            _close(span, None, "the run ended first", None, end_time)
        _close(self.root(), output, error, None, end_time)


def _close(
    span: Span,
    output: Any,
    error: BaseException | str | None,
    attributes: dict[str, Any] | None,
    end_time: int | None = None,
) -> None:
    if attributes:
        span.set_attributes(v.clean(attributes))
    if output is not None:
        v.set_io(span, v.OUTPUT, v.OUTPUT_MIME, output)
    if isinstance(error, BaseException):
        v.mark_error(span, error)
    elif error:
        span.set_status(Status(StatusCode.ERROR, error))
        span.set_attribute(v.ERROR_TYPE, "error")
    else:
        span.set_status(Status(StatusCode.OK))
    span.end(end_time=end_time)
