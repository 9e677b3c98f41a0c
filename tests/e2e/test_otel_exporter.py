"""The real OpenTelemetry SDK exporter (OTLP proto/http) against a `tether serve` subprocess."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode
from sqlalchemy import Engine, select

from tests.conftest import ServerProcess
from tether.store.engine import make_engine, reading
from tether.store.keys import create_key
from tether.store.migrate import upgrade
from tether.store.tables import runs, spans

pytestmark = pytest.mark.slow
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    e = make_engine(db_url, pool_size=2)
    upgrade(e)
    yield e
    e.dispose()


def emit(provider: TracerProvider) -> None:
    """One GenAI-instrumented agent run and one OpenInference-instrumented run."""
    tracer = provider.get_tracer("tests.e2e")
    with tracer.start_as_current_span("invoke_agent support", attributes={
        "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "support",
        "tether.task_id": "T-100", "input.value": "refund order 7",
    }) as root:  # fmt: skip
        with tracer.start_as_current_span("chat gpt-4o-mini", attributes={
            "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
            "gen_ai.usage.input_tokens": 1200, "gen_ai.usage.output_tokens": 300,
            "gen_ai.usage.cache_read_input_tokens": 200,
        }):  # fmt: skip
            pass
        with tracer.start_as_current_span("execute_tool refund", attributes={
            "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "shop.refund",
            "gen_ai.tool.call.arguments": '{"order": 7, "api_key": "sk-live-1"}',
        }) as tool:  # fmt: skip
            tool.set_status(Status(StatusCode.ERROR, "refund window closed"))
        root.set_attribute("output.value", "could not refund")
    with tracer.start_as_current_span("pipeline", attributes={
        "openinference.span.kind": "CHAIN", "user.id": "dana", "session.id": "S-5",
    }):  # fmt: skip
        with tracer.start_as_current_span("llm", attributes={
            "openinference.span.kind": "LLM", "llm.model_name": "claude-sonnet-4-5",
            "llm.token_count.prompt": 500, "llm.token_count.completion": 40,
            "input.value": "summarise", "output.value": "summary",
        }):  # fmt: skip
            pass
        with tracer.start_as_current_span("retrieve", attributes={
            "openinference.span.kind": "RETRIEVER", "input.value": "q"}):  # fmt: skip
            pass


def send(url: str, headers: dict[str, str] | None = None,
         compression: Compression = Compression.NoCompression) -> tuple[
             SpanExportResult, list[ReadableSpan]]:  # fmt: skip
    """Exports the emitted spans in one request; returns the result and what was sent."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "shop-agents",
                                                        "service.version": "2.1"}))  # fmt: skip
    provider.add_span_processor(SimpleSpanProcessor(memory))
    emit(provider)
    provider.shutdown()
    sent = list(memory.get_finished_spans())
    exporter = OTLPSpanExporter(endpoint=f"{url}/v1/traces", headers=headers,
                                compression=compression, timeout=10)  # fmt: skip
    result = exporter.export(sent)
    exporter.shutdown()
    return result, sent


def stored(engine: Engine) -> tuple[dict[str, Any], dict[str, Any]]:
    with reading(engine) as conn:
        span_rows = {r.span_id: dict(r._mapping) for r in conn.execute(select(spans))}
        run_rows = {r.id: dict(r._mapping) for r in conn.execute(select(runs))}
    return span_rows, run_rows


def check_exact(sent: list[ReadableSpan], engine: Engine) -> None:
    span_rows, run_rows = stored(engine)
    assert len(span_rows) == len(sent)
    for s in sent:
        ctx = s.get_span_context()
        row = span_rows[f"{ctx.span_id:016x}"]
        assert row["trace_id"] == f"{ctx.trace_id:032x}"
        assert row["parent_id"] == (f"{s.parent.span_id:016x}" if s.parent else None)
        assert row["run_id"] == f"run_{ctx.trace_id:032x}"
        assert row["started_at"] == EPOCH + timedelta(microseconds=(s.start_time or 0) // 1000)
        assert row["ended_at"] == EPOCH + timedelta(microseconds=(s.end_time or 0) // 1000)
        expected = {"tether.task_id", "gen_ai.agent.name", "gen_ai.request.model",
                    "gen_ai.usage.input_tokens", "openinference.span.kind", "user.id"}  # fmt: skip
        for key in expected & set(s.attributes or {}):
            assert row["attributes"][key] == s.attributes[key]  # type: ignore[index]
    by_name = {r["name"]: r for r in span_rows.values()}
    llm = by_name["chat gpt-4o-mini"]
    # gpt-4o-mini: 1000 x 1.5e-7 + 200 x 7.5e-8 + 300 x 6e-7 = 0.000345 USD
    assert (llm["kind"], llm["model"], llm["model_served"]) == (
        "llm",
        "gpt-4o-mini",
        "gpt-4o-mini-2024-07-18",
    )
    assert (llm["input_tokens"], llm["output_tokens"], llm["cached_tokens"]) == (1200, 300, 200)
    assert llm["cost_nusd"] == 345_000 and not llm["cost_unknown"]
    tool = by_name["shop.refund"]
    assert (tool["kind"], tool["status"], tool["error"]) == (
        "tool",
        "error",
        "refund window closed",
    )
    assert "sk-live-1" not in tool["input"] and '"order":7' in tool["input"]
    claude = by_name["llm"]
    assert claude["cost_nusd"] == 500 * 3_000 + 40 * 15_000
    assert by_name["retrieve"]["kind"] == "retrieval"
    assert by_name["pipeline"]["kind"] == "chain"

    assert len(run_rows) == 2
    support = next(r for r in run_rows.values() if r["agent"] == "support")
    assert (support["status"], support["task_id"], support["version"]) == (
        "succeeded",
        "T-100",
        "2.1",
    )
    assert (support["input"], support["output"]) == ("refund order 7", "could not refund")
    assert (support["llm_calls"], support["tool_calls"], support["span_count"]) == (1, 1, 3)
    assert support["cost_nusd"] == 345_000
    pipeline = next(r for r in run_rows.values() if r["agent"] == "shop-agents")
    assert (pipeline["user"], pipeline["task_id"], pipeline["cost_nusd"]) == (
        "dana",
        "S-5",
        2_100_000,
    )


def test_sdk_exporter_open_local_ingest(tmp_path: Path, db_url: str, engine: Engine) -> None:
    server = ServerProcess(tmp_path / "home", db_url)
    try:
        result, sent = send(server.url, compression=Compression.Gzip)
        assert result == SpanExportResult.SUCCESS
        check_exact(sent, engine)
    finally:
        server.stop()


def test_sdk_exporter_with_ingest_key(tmp_path: Path, db_url: str, engine: Engine) -> None:
    _, secret = create_key(engine, scopes="ingest", name="otel-collector")
    server = ServerProcess(tmp_path / "home", db_url)
    try:
        result, _ = send(server.url)
        assert result == SpanExportResult.FAILURE  # 401: a key exists now
        assert stored(engine) == ({}, {})
        result, sent = send(server.url, headers={"authorization": f"Bearer {secret}"})
        assert result == SpanExportResult.SUCCESS
        check_exact(sent, engine)
    finally:
        server.stop()
