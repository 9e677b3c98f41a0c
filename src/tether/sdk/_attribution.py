"""The run the calling code is inside (a context variable) and the span processor that stamps
that run's attribution on every span started inside it. Kept apart from `_run` so the SDK's
configuration (`_config`) can install the processor without importing the run machinery."""

from __future__ import annotations

import contextvars
from typing import Protocol

from opentelemetry import context as otel_context
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.trace import Span

from tether.sdk import _values as v


class Attributed(Protocol):
    """What a run says about itself (`tether.Run` is one)."""

    agent: str
    version: str | None
    task_id: str | None
    user: str | None

    @property
    def span(self) -> Span | None: ...


current: contextvars.ContextVar[Attributed | None] = contextvars.ContextVar(
    "tether_run", default=None
)


class RunAttribution(SpanProcessor):
    """Stamps the current run's agent, version, task and user on every span started inside it,
    so each span is attributed even if it reaches tether before the run's root span does."""

    def on_start(self, span: Span, parent_context: otel_context.Context | None = None) -> None:
        run = current.get()
        if run is None or run.span is None:
            return
        present = span.attributes or {}  # type: ignore[attr-defined]
        if v.AGENT in present:  # a run's own root span (e.g. a nested run) says who it is
            return
        attrs = v.clean(
            {
                v.AGENT: run.agent,
                v.AGENT_VERSION: run.version,
                v.TASK_ID: run.task_id,
                v.USER: run.user,
            }
        )
        span.set_attributes({k: x for k, x in attrs.items() if k not in present})
