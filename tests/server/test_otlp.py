from __future__ import annotations

import gzip
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status
from sqlalchemy import Engine, func, select

from tether.config import Settings
from tether.server import otlp
from tether.server.app import create_app
from tether.store.engine import reading
from tether.store.keys import create_key
from tether.store.tables import runs, spans

TRACE = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")
ROOT, LLM, TOOL = b"\x01" * 8, b"\x02" * 8, b"\x03" * 8
T0 = 1_764_072_000_000_000_000


def kv(key: str, value: Any) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=str(value)))


def pb_span(span_id: bytes, parent: bytes | None, name: str, attrs: dict[str, Any],
            error: bool = False) -> Span:  # fmt: skip
    return Span(
        trace_id=TRACE, span_id=span_id, parent_span_id=parent or b"", name=name,
        start_time_unix_nano=T0, end_time_unix_nano=T0 + 2_000_000_000,
        attributes=[kv(k, v) for k, v in attrs.items()],
        status=Status(code=2 if error else 1, message="tool failed" if error else ""),
    )  # fmt: skip


def request_pb(extra: list[Span] | None = None) -> ExportTraceServiceRequest:
    spans_ = [
        pb_span(ROOT, None, "triage", {"gen_ai.operation.name": "invoke_agent",
                                       "input.value": "help me", "output.value": "done"}),
        pb_span(LLM, ROOT, "chat gpt-4o", {
            "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
            "gen_ai.usage.input_tokens": 1000, "gen_ai.usage.output_tokens": 100}),
        pb_span(TOOL, ROOT, "execute_tool lookup", {
            "openinference.span.kind": "TOOL", "tool.name": "crm.lookup",
            "input.value": '{"id": 7}'}, error=True),
        *(extra or []),
    ]  # fmt: skip
    res = [kv("service.name", "triage-bot"), kv("service.version", "v3"), kv("user.id", "alice")]
    return ExportTraceServiceRequest(resource_spans=[ResourceSpans(
        resource={"attributes": res}, scope_spans=[ScopeSpans(spans=spans_)])])  # fmt: skip


def request_json() -> dict[str, Any]:
    def attr(k: str, v: Any) -> dict[str, Any]:
        if isinstance(v, int):
            return {"key": k, "value": {"intValue": str(v)}}
        return {"key": k, "value": {"stringValue": v}}

    return {"resourceSpans": [{
        "resource": {"attributes": [attr("tether.agent", "json-agent")]},
        "scopeSpans": [{"scope": {"name": "t"}, "spans": [
            {"traceId": TRACE.hex(), "spanId": ROOT.hex(), "name": "root", "kind": 1,
             "startTimeUnixNano": str(T0), "endTimeUnixNano": str(T0 + 10**9),
             "attributes": [attr("tether.task_id", "T-42")], "status": {"code": 1}},
            {"traceId": TRACE.hex(), "spanId": LLM.hex(), "parentSpanId": ROOT.hex(),
             "name": "llm", "startTimeUnixNano": T0, "endTimeUnixNano": T0 + 10**8,
             "attributes": [attr("llm.model_name", "mock-small"),
                            attr("openinference.span.kind", "LLM"),
                            attr("llm.token_count.prompt", 100),
                            attr("llm.token_count.completion", 50)]},
        ]}],
    }]}  # fmt: skip


def make_app(settings: Settings, db: Engine) -> FastAPI:
    app = create_app(settings, engine=db)
    if not any(getattr(r, "path", None) == "/v1/traces" for r in app.routes):
        app.include_router(otlp.router)
    return app


@pytest.fixture
async def client(settings: Settings, db: Engine) -> AsyncIterator[httpx.AsyncClient]:
    app = make_app(settings, db)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        c.app = app  # type: ignore[attr-defined]
        yield c


PB = {"content-type": "application/x-protobuf"}


def counts(db: Engine) -> tuple[int, int]:
    with reading(db) as conn:
        return (conn.execute(select(func.count()).select_from(spans)).scalar_one(),
                conn.execute(select(func.count()).select_from(runs)).scalar_one())  # fmt: skip


async def test_protobuf_export_stores_run_and_spans(client: httpx.AsyncClient, db: Engine) -> None:
    r = await client.post("/v1/traces", content=request_pb().SerializeToString(), headers=PB)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/x-protobuf"
    ExportTraceServiceResponse.FromString(r.content)
    with reading(db) as conn:
        run = conn.execute(select(runs)).one()._mapping
        rows = {s.span_id: s for s in conn.execute(select(spans)).all()}
    assert run["id"] == f"run_{TRACE.hex()}"
    assert (run["agent"], run["version"], run["user"]) == ("triage-bot", "v3", "alice")
    assert (run["status"], run["input"], run["output"]) == ("succeeded", "help me", "done")
    assert run["cost_nusd"] == 3_500_000 and run["llm_calls"] == 1 and run["tool_calls"] == 1
    tool = rows[TOOL.hex()]
    assert (tool.kind, tool.name, tool.status, tool.error) == (
        "tool",
        "crm.lookup",
        "error",
        "tool failed",
    )
    assert rows[LLM.hex()].latency_ms == 2000.0
    assert client.app.state.tether.spans_ingested == 3  # type: ignore[attr-defined]


async def test_json_gzip_export_and_json_response(client: httpx.AsyncClient, db: Engine) -> None:
    body = gzip.compress(json.dumps(request_json()).encode())
    r = await client.post(
        "/v1/traces",
        content=body,
        headers={"content-type": "application/json", "content-encoding": "gzip"},
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json" and r.json() == {}
    with reading(db) as conn:
        run = conn.execute(select(runs)).one()._mapping
        llm = conn.execute(select(spans).where(spans.c.kind == "llm")).one()._mapping
    assert (run["agent"], run["task_id"]) == ("json-agent", "T-42")
    assert (llm["input_tokens"], llm["output_tokens"], llm["cost_nusd"]) == (100, 50, 200_000)
    assert llm["parent_id"] == ROOT.hex()


async def test_replay_is_idempotent(client: httpx.AsyncClient, db: Engine) -> None:
    body = request_pb().SerializeToString()
    for _ in range(2):
        assert (await client.post("/v1/traces", content=body, headers=PB)).status_code == 200
    assert counts(db) == (3, 1)


@pytest.mark.parametrize(
    ("body", "headers", "status", "needle"),
    [
        (b"\xff\xff\xff", PB, 400, "not an OTLP"),
        (b"{not json", {"content-type": "application/json"}, 400, "not JSON"),
        (b"[]", {"content-type": "application/json"}, 400, "must be an object"),
        (b"x", {"content-type": "text/plain"}, 400, "unsupported Content-Type"),
        (b"x", {**PB, "content-encoding": "br"}, 400, "unsupported Content-Encoding"),
        (b"not gzip", {**PB, "content-encoding": "gzip"}, 400, "not valid gzip"),
        (json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]})
         .encode(), {"content-type": "application/json"}, 400, "not a hex id"),
    ],
)  # fmt: skip
async def test_malformed_payloads_are_400_and_write_nothing(
    client: httpx.AsyncClient, db: Engine, body: bytes, headers: dict, status: int, needle: str
) -> None:
    r = await client.post("/v1/traces", content=body, headers=headers)
    assert r.status_code == status, r.text
    assert needle in r.json()["error"]["message"]
    assert counts(db) == (0, 0)


async def test_one_bad_span_rejects_the_whole_batch(client: httpx.AsyncClient, db: Engine) -> None:
    bad_id = pb_span(b"\x00" * 8, ROOT, "bad", {})
    r = await client.post("/v1/traces", content=request_pb([bad_id]).SerializeToString(),
                          headers=PB)  # fmt: skip
    assert r.status_code == 400 and "span_id" in r.json()["error"]["message"]
    bad_time = pb_span(b"\x09" * 8, ROOT, "bad", {})
    bad_time.start_time_unix_nano = 0
    r = await client.post("/v1/traces", content=request_pb([bad_time]).SerializeToString(),
                          headers=PB)  # fmt: skip
    assert r.status_code == 400 and "start time" in r.json()["error"]["message"]
    assert counts(db) == (0, 0)


async def test_decompressed_size_is_limited(settings: Settings, db: Engine) -> None:
    app = make_app(settings.model_copy(update={"max_request_bytes": 4096}), db)
    body = gzip.compress(request_pb().SerializeToString() + b"\x00" * 100_000)
    assert len(body) < 4096
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        r = await c.post("/v1/traces", content=body, headers={**PB, "content-encoding": "gzip"})
        assert r.status_code == 413 and r.json()["error"]["type"] == "payload_too_large"
        r = await c.post("/v1/traces", content=b"\x00" * 5000, headers=PB)
        assert r.status_code == 413
    assert counts(db) == (0, 0)


async def test_auth_once_a_key_exists(settings: Settings, db: Engine) -> None:
    _, ingest = create_key(db, scopes="ingest", name="collector")
    _, agent = create_key(db, scopes="agent", agent="bot", name="agent")
    _, admin = create_key(db, scopes="admin", name="admin")
    app = make_app(settings, db)
    body = request_pb().SerializeToString()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        r = await c.post("/v1/traces", content=body, headers=PB)
        assert r.status_code == 401
        r = await c.post("/v1/traces", content=body, headers={**PB, "authorization": "Bearer x"})
        assert r.status_code == 401
        r = await c.post("/v1/traces", content=body,
                         headers={**PB, "authorization": f"Bearer {agent}"})  # fmt: skip
        assert r.status_code == 403 and "ingest" in r.json()["error"]["message"]
        assert counts(db) == (0, 0)
        for secret in (ingest, admin):
            r = await c.post("/v1/traces", content=body,
                             headers={**PB, "authorization": f"Bearer {secret}"})  # fmt: skip
            assert r.status_code == 200
    assert counts(db) == (3, 1)


async def test_no_keys_but_public_bind_requires_auth(settings: Settings, db: Engine) -> None:
    app = make_app(settings.model_copy(update={"host": "0.0.0.0"}), db)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        r = await c.post("/v1/traces", content=request_pb().SerializeToString(), headers=PB)
    assert r.status_code == 401


async def test_pricing_overrides_and_redaction_from_settings(
    settings: Settings, db: Engine
) -> None:
    s = settings.model_copy(update={
        "pricing": {"gpt-4o": {"input_cost_per_token": 1e-6, "output_cost_per_token": 0}},
        "redact_fields": ["ssn"]})  # fmt: skip
    app = make_app(s, db)
    extra = pb_span(b"\x04" * 8, ROOT, "x", {"customer.ssn": "123-45-6789"})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        r = await c.post("/v1/traces", content=request_pb([extra]).SerializeToString(), headers=PB)
    assert r.status_code == 200
    with reading(db) as conn:
        llm = conn.execute(select(spans).where(spans.c.kind == "llm")).one()._mapping
        other = conn.execute(select(spans).where(spans.c.span_id == "04" * 8)).one()._mapping
    assert llm["cost_nusd"] == 1_000_000
    assert other["attributes"]["customer.ssn"] == "[REDACTED]"


async def test_an_agent_bound_key_ingests_only_as_its_agent(settings: Settings, db: Engine) -> None:
    _, bot = create_key(db, scopes="agent,ingest", agent="bot", name="bot")
    _, other = create_key(db, scopes="agent,ingest", agent="other", name="other")
    app = make_app(settings, db)
    body = request_pb().SerializeToString()  # the resource says service.name=triage-bot
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        r = await c.post(
            "/v1/traces", content=body, headers={**PB, "authorization": f"Bearer {bot}"}
        )
        assert r.status_code == 200
        with reading(db) as conn:
            assert conn.execute(select(runs.c.agent)).scalars().all() == ["bot"]
        extra = pb_span(b"\x09" * 8, ROOT, "chat gpt-4o", {
            "gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 10**6})  # fmt: skip
        r = await c.post("/v1/traces", content=request_pb([extra]).SerializeToString(),
                         headers={**PB, "authorization": f"Bearer {other}"})  # fmt: skip
        assert r.status_code == 403 and "belongs to another agent" in r.json()["error"]["message"]
    assert counts(db) == (3, 1)
