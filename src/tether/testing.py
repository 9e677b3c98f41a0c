"""Helpers for testing your own agents: `tether.testing.capture()` records runs, tool calls and LLM
calls in memory (nothing is sent), answers guarded tools' decisions, and collects feedback.

    from tether.testing import capture

    def test_triage_uses_the_crm():
        with capture() as cap:
            triage("my invoice is wrong")
        assert cap.runs[0].status == "succeeded"
        assert [t.name for t in cap.tool_calls] == ["crm.lookup"]
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode, format_span_id, format_trace_id

from tether.sdk import _values as v
from tether.sdk._config import Sdk, new_provider, swap
from tether.sdk._http import Http

Decide = Callable[[dict[str, Any]], "dict[str, Any] | str"]
Approve = Callable[[str], "dict[str, Any] | str"]


def _parse(text: Any) -> Any:
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


@dataclass(frozen=True)
class CapturedSpan:
    """One recorded span, with the fields agent tests usually assert on."""

    name: str
    kind: str
    run_id: str
    trace_id: str
    span_id: str
    parent_id: str | None
    status: str  # ok | error | unset
    error: str | None
    input: Any
    output: Any
    latency_ms: float | None
    attributes: dict[str, Any] = field(repr=False)

    @property
    def model(self) -> str | None:
        return self.attributes.get(v.RESPONSE_MODEL) or self.attributes.get(v.REQUEST_MODEL)

    @property
    def input_tokens(self) -> int | None:
        return self.attributes.get(v.INPUT_TOKENS)

    @property
    def output_tokens(self) -> int | None:
        return self.attributes.get(v.OUTPUT_TOKENS)


@dataclass(frozen=True)
class CapturedRun(CapturedSpan):
    """A run (root AGENT span): who ran it and how it ended; `status` is succeeded | failed."""

    agent: str | None = None
    version: str | None = None
    task_id: str | None = None
    user: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def _convert(span: ReadableSpan, run_ids: dict[str, str]) -> CapturedSpan:
    attrs: dict[str, Any] = dict(span.attributes or {})
    ctx = span.get_span_context()
    assert ctx is not None
    trace_id = format_trace_id(ctx.trace_id)
    code = span.status.status_code
    status = {StatusCode.OK: "ok", StatusCode.ERROR: "error"}.get(code, "unset")
    latency = None
    if span.end_time is not None and span.start_time is not None:
        latency = (span.end_time - span.start_time) / 1e6
    common: dict[str, Any] = dict(
        name=span.name,
        kind=str(attrs.get(v.SPAN_KIND, "")).lower() or "other",
        run_id=run_ids.get(trace_id, f"run_{trace_id}"),
        trace_id=trace_id,
        span_id=format_span_id(ctx.span_id),
        parent_id=format_span_id(span.parent.span_id) if span.parent else None,
        status=status,
        error=span.status.description if status == "error" else None,
        input=_parse(attrs.get(v.INPUT)),
        output=_parse(attrs.get(v.OUTPUT)),
        latency_ms=latency,
        attributes=attrs,
    )
    if common["kind"] == "agent" and span.parent is None:
        common["status"] = {"ok": "succeeded", "error": "failed"}.get(status, "running")
        return CapturedRun(
            **common,
            agent=_str(attrs.get(v.AGENT)),
            version=_str(attrs.get(v.AGENT_VERSION)),
            task_id=_str(attrs.get(v.TASK_ID)),
            user=_str(attrs.get(v.USER)),
        )
    return CapturedSpan(**common)


class Capture:
    """What the code under test recorded. Lists are in the order spans ended."""

    def __init__(self, exporter: InMemorySpanExporter) -> None:
        self._exporter = exporter
        self.http: Http | None = None
        self._feedback: list[dict[str, Any]] = []
        self._scores: list[dict[str, Any]] = []
        self.decisions: list[dict[str, Any]] = []
        self._values: list[dict[str, Any]] = []

    @property
    def tool_results(self) -> list[dict[str, Any]]:
        """What tools returned into runs, as sent to tether for value provenance, each with
        its `run_id` (`POST /api/v1/runs/{id}/values`)."""
        if self.http is not None:
            self.http.drain()
        return self._values

    @property
    def feedback(self) -> list[dict[str, Any]]:
        """Feedback the code sent (`run.feedback(...)`), each with its `run_id`."""
        if self.http is not None:
            self.http.drain()
        return self._feedback

    @property
    def scores(self) -> list[dict[str, Any]]:
        """Scores the code sent (`run.score(...)`), each with its `run_id`."""
        if self.http is not None:
            self.http.drain()
        return self._scores

    @property
    def raw_spans(self) -> list[ReadableSpan]:
        return list(self._exporter.get_finished_spans())

    @property
    def spans(self) -> list[CapturedSpan]:
        raw = self.raw_spans
        run_ids: dict[str, str] = {}
        for s in raw:
            ctx = s.get_span_context()
            if ctx and s.parent is None and (s.attributes or {}).get(v.SPAN_KIND) == "AGENT":
                tid = format_trace_id(ctx.trace_id)
                run_ids[tid] = str((s.attributes or {}).get(v.RUN_ID) or f"run_{tid}")
        return [_convert(s, run_ids) for s in raw]

    @property
    def runs(self) -> list[CapturedRun]:
        return [s for s in self.spans if isinstance(s, CapturedRun)]

    @property
    def tool_calls(self) -> list[CapturedSpan]:
        return [s for s in self.spans if s.kind == "tool"]

    @property
    def llm_calls(self) -> list[CapturedSpan]:
        return [s for s in self.spans if s.kind == "llm"]

    def run(self, agent: str | None = None) -> CapturedRun:
        """The one run (of `agent`); fails the test if there is not exactly one."""
        runs = [r for r in self.runs if agent is None or r.agent == agent]
        assert len(runs) == 1, f"expected one run of {agent or 'any agent'}, got {len(runs)}"
        return runs[0]

    def clear(self) -> None:
        self._exporter.clear()
        self.feedback.clear()
        self.scores.clear()
        self.decisions.clear()
        self.tool_results.clear()


def _handler(cap: Capture, decide: Decide | None, approve: Approve | None) -> Callable[..., Any]:
    def handle(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        body = json.loads(request.content) if request.content else {}
        if m := re.fullmatch(r"/api/v1/runs/([^/]+)/(feedback|scores)", path):
            target = cap._feedback if m.group(2) == "feedback" else cap._scores
            target.append({"run_id": m.group(1), **body})
            return httpx.Response(201, json={"ok": True})
        if m := re.fullmatch(r"/api/v1/runs/([^/]+)/values", path):
            cap._values.append({"run_id": m.group(1), **body})
            tags = sorted(body.get("tags", []))
            return httpx.Response(200, json={"run_id": m.group(1), "tags": tags,
                                             "untrusted": "untrusted" in tags})  # fmt: skip
        if path == "/api/v1/decide":
            answer: Any = decide(body) if decide else "allow"
            answer = {"decision": answer} if isinstance(answer, str) else answer
            if answer.get("decision") == "approval_required":
                answer.setdefault("approval_id", f"apr_test{len(cap.decisions)}")
            cap.decisions.append({**body, **answer})
            return httpx.Response(200, json=answer)
        if m := re.fullmatch(r"/api/v1/approvals/([^/]+)/wait", path):
            status: Any = approve(m.group(1)) if approve else "approved"
            return httpx.Response(
                200, json={"status": status} if isinstance(status, str) else status
            )
        return httpx.Response(404, json={"error": {"type": "not_found", "message": path}})

    return handle


@contextmanager
def capture(*, decide: Decide | None = None, approve: Approve | None = None) -> Iterator[Capture]:
    """Records everything the SDK does inside the block in memory, instead of sending it.

    `decide(body)` answers guarded tools ("allow", "deny", "approval_required", "rate_limited",
    or the full JSON answer; default "allow"); `approve(approval_id)` answers the wait
    ("approved", "denied", "expired"; default "approved").
    """
    exporter = InMemorySpanExporter()
    provider = new_provider({"service.name": "tether-test"})
    processor = SimpleSpanProcessor(exporter)
    provider.add_span_processor(processor)
    cap = Capture(exporter)
    transport = httpx.MockTransport(_handler(cap, decide, approve))
    http = Http("http://tether.test", None, transport=transport)
    cap.http = http
    # `processor` too: integrations that forward spans of another provider (AutoGen's) use it
    previous = swap(Sdk("http://tether.test", None, provider, http, processor=processor))
    try:
        yield cap
        http.drain()
    finally:
        swap(previous)
        provider.shutdown()
        http.close()


try:  # a pytest fixture, for `pytest_plugins = ["tether.testing"]` or an import in conftest.py
    import pytest

    @pytest.fixture
    def tether_capture() -> Iterator[Capture]:
        """Everything the SDK records during the test (see `capture`)."""
        with capture() as cap:
            yield cap

except ImportError:  # pragma: no cover - pytest is optional for users
    pass
