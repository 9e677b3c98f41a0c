"""A raw OTLP/HTTP trace the way an OpenInference-instrumented app (say a LangGraph support bot)
would send it — no tether SDK involved — to show tether ingesting other people's traces."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status


def _kv(key: str, value: Any) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=str(value)))


@dataclass
class TraceBuilder:
    """Builds one trace's spans with explicit timing (offsets in ms from the trace's start)."""

    trace_id: bytes = field(default_factory=lambda: os.urandom(16))
    start_ns: int = field(default_factory=time.time_ns)
    spans: list[Span] = field(default_factory=list)

    def span(
        self,
        name: str,
        *,
        parent: Span | None,
        start_ms: float,
        end_ms: float,
        attributes: dict[str, Any],
        error: str | None = None,
    ) -> Span:
        span = Span(
            trace_id=self.trace_id,
            span_id=os.urandom(8),
            parent_span_id=parent.span_id if parent is not None else b"",
            name=name,
            kind=Span.SPAN_KIND_INTERNAL,
            start_time_unix_nano=self.start_ns + int(start_ms * 1e6),
            end_time_unix_nano=self.start_ns + int(end_ms * 1e6),
            attributes=[_kv(k, v) for k, v in attributes.items()],
            status=Status(
                code=Status.STATUS_CODE_ERROR if error else Status.STATUS_CODE_OK,
                message=error or "",
            ),
        )
        self.spans.append(span)
        return span

    def request(self, resource: dict[str, Any]) -> ExportTraceServiceRequest:
        return ExportTraceServiceRequest(
            resource_spans=[
                ResourceSpans(
                    resource=Resource(attributes=[_kv(k, v) for k, v in resource.items()]),
                    scope_spans=[ScopeSpans(spans=self.spans)],
                )
            ]
        )

    @property
    def run_id(self) -> str:
        return "run_" + self.trace_id.hex()


def support_bot_trace(question: str, user: str, session: str) -> TraceBuilder:
    """A LangGraph-style support bot: an agent span, a retrieval, a tool call and two LLM calls,
    with OpenInference attribute names (llm.model_name, llm.token_count.*, session.id, user.id).
    """
    t = TraceBuilder()
    root = t.span(
        "SupportGraph",
        parent=None,
        start_ms=0,
        end_ms=2350,
        attributes={
            "openinference.span.kind": "AGENT",
            "input.value": question,
            "output.value": "Your plan renews on the 1st; I have emailed the invoice.",
            "session.id": session,
            "user.id": user,
        },
    )
    t.span(
        "retrieve_docs",
        parent=root,
        start_ms=20,
        end_ms=180,
        attributes={
            "openinference.span.kind": "RETRIEVER",
            "input.value": question,
            "output.value": json.dumps(["billing-faq.md#renewal", "plans.md#pro"]),
        },
    )
    t.span(
        "ChatOpenAI",
        parent=root,
        start_ms=200,
        end_ms=1100,
        attributes={
            "openinference.span.kind": "LLM",
            "llm.model_name": "gpt-4o-mini",
            "llm.token_count.prompt": 1420,
            "llm.token_count.completion": 96,
            "input.value": json.dumps([{"role": "user", "content": question}]),
            "output.value": "call get_invoice(customer=acme)",
        },
    )
    t.span(
        "get_invoice",
        parent=root,
        start_ms=1120,
        end_ms=1290,
        attributes={
            "openinference.span.kind": "TOOL",
            "tool.name": "billing.get_invoice",
            "input.value": json.dumps({"customer": "acme"}),
            "output.value": json.dumps({"invoice": "INV-2041", "amount_usd": 420.0}),
        },
    )
    t.span(
        "ChatOpenAI",
        parent=root,
        start_ms=1300,
        end_ms=2300,
        attributes={
            "openinference.span.kind": "LLM",
            "llm.model_name": "gpt-4o-mini",
            "llm.token_count.prompt": 1650,
            "llm.token_count.completion": 58,
            "output.value": "Your plan renews on the 1st; I have emailed the invoice.",
        },
    )
    return t


def send_trace(url: str, api_key: str | None, trace: TraceBuilder, service: str) -> None:
    """POSTs the trace as OTLP/HTTP protobuf to `{url}/v1/traces`; raises on a non-2xx answer."""
    headers = {"Content-Type": "application/x-protobuf"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    body = trace.request({"service.name": service, "service.version": "2.1.0"})
    resp = httpx.post(
        url.rstrip("/") + "/v1/traces",
        content=body.SerializeToString(),
        headers=headers,
        timeout=10,
    )
    resp.raise_for_status()
