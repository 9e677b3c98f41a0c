"""Secrets in every position, through every path that stores text (OTLP ingest with JSON carried
in strings and a tool argument over 256 KiB, the LLM gateway's prompts and model outputs, run
inputs), never appear in the database file, the API, the console or the logs."""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select

from tests.core.test_redact import NAMED_VALUE, NAMES, SHAPED
from tests.gateway.llm_env import MockServer, poll
from tether.config import ProviderConfig, load_settings
from tether.server.app import create_app
from tether.store.engine import make_engine
from tether.store.keys import create_key
from tether.store.migrate import upgrade
from tether.store.tables import metadata, spans


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(logging.Formatter().format(record))


@dataclass
class Env:
    client: TestClient
    engine: Engine
    db_file: Path
    agent_key: str
    admin_key: str
    logs: _Capture
    run_ids: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("redaction")
    mock = MockServer({"replies": []})  # no script: the mock echoes the prompt's first words
    db_file = tmp / "tether.db"
    engine = make_engine(f"sqlite:///{db_file}")
    upgrade(engine)
    provider = ProviderConfig(name="mock", base_url=mock.url + "/v1", models=["mock-small"],
                              max_retries=0)  # fmt: skip
    cfg = load_settings(home=tmp / "home", database_url=f"sqlite:///{db_file}",
                        providers=[provider])  # fmt: skip
    agent_key = create_key(engine, scopes="agent,ingest", agent="redact-agent")[1]
    admin_key = create_key(engine, scopes="admin")[1]
    logs = _Capture()
    root = logging.getLogger()
    root.addHandler(logs)
    level = root.level
    root.setLevel(logging.INFO)
    try:
        with TestClient(create_app(cfg, engine=engine), follow_redirects=False) as client:
            form = client.get("/login")
            token = re.search(r'name="csrf" value="([^"]+)"', form.text)
            assert token
            client.post("/login", data={"api_key": admin_key, "csrf": token[1], "next": "/"})
            yield Env(client, engine, db_file, agent_key, admin_key, logs)
    finally:
        root.removeHandler(logs)
        root.setLevel(level)
        mock.stop()
        engine.dispose()


def _attr(key: str, value: str) -> dict[str, Any]:
    return {"key": key, "value": {"stringValue": value}}


def _otlp(trace: str, run_id: str, shaped: str, name: str, value: str, prose: str) -> bytes:
    pair = json.dumps({name: value})
    # over 256 KiB, secrets first: a cut to size must not come before the redaction
    tool_args = json.dumps({name: value, "note": f"use {shaped}", "query": prose,
                            "blob": "z" * (300 * 1024)})  # fmt: skip
    messages = json.dumps([
        {"role": "user", "content": pair},
        {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": pair}}]},
        {"role": "user", "content": [{"type": "text", "text": f"{prose} {shaped}"}]},
    ])  # fmt: skip
    root = {
        "traceId": trace, "spanId": "a1" * 8, "name": f"invoke_agent {shaped}",
        "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": "1700000001000000000",
        "attributes": [_attr("tether.run_id", run_id), _attr("tether.agent", "redact-agent"),
                       _attr("input.value", messages), _attr("output.value", f"{prose} {shaped}"),
                       _attr("note", f"{name}: {value}"), _attr(name, value),
                       _attr("http.request.header.authorization", f"Bearer {shaped}")],
        "status": {"code": 2, "message": f"upstream said {shaped}"},
        "events": [{"name": "gen_ai.choice", "timeUnixNano": "1700000000500000000",
                    "attributes": [_attr("message", pair)]}],
    }  # fmt: skip
    tool = {
        "traceId": trace, "spanId": "b2" * 8, "parentSpanId": "a1" * 8, "name": "execute_tool f",
        "startTimeUnixNano": "1700000000100000000", "endTimeUnixNano": "1700000000200000000",
        "attributes": [_attr("gen_ai.operation.name", "execute_tool"),
                       _attr("gen_ai.tool.name", "f"),
                       _attr("gen_ai.tool.call.arguments", tool_args),
                       _attr("gen_ai.tool.call.result", json.dumps({"content": [{"type": "text",
                             "text": pair}]}))],
    }  # fmt: skip
    resource = {"attributes": [_attr("service.name", "redact-agent"),
                               _attr("deployment.note", f"{prose} {shaped}")]}  # fmt: skip
    body = {"resourceSpans": [{"resource": resource, "scopeSpans": [{"spans": [root, tool]}]}]}
    return json.dumps(body).encode()


def _everything_visible(env: Env, run_ids: list[str]) -> str:
    """The database file (and WAL), every table, the API, the console pages and the logs."""
    seen: list[str] = []
    for path in (env.db_file, Path(f"{env.db_file}-wal")):
        if path.exists():
            seen.append(path.read_bytes().decode("utf-8", "replace"))
    with env.engine.connect() as conn:
        for table in metadata.sorted_tables:
            seen.extend(repr(tuple(r)) for r in conn.execute(select(table)))
        span_keys = conn.execute(
            select(spans.c.run_id, spans.c.trace_id, spans.c.span_id).where(
                spans.c.run_id.in_(run_ids)
            )
        ).all()
    auth = {"Authorization": f"Bearer {env.admin_key}"}
    for rid in run_ids:
        for url in (f"/api/v1/runs/{rid}", f"/api/v1/runs/{rid}/spans",
                    f"/api/v1/spans?run_id={rid}", f"/runs/{rid}"):  # fmt: skip
            r = env.client.get(url, headers=auth if url.startswith("/api") else {})
            assert r.status_code == 200, (url, r.status_code, r.text[:300])
            seen.append(r.text)
    for rid, trace, sid in span_keys:
        r = env.client.get(f"/runs/{rid}/spans/{trace}/{sid}")
        assert r.status_code == 200, r.text[:300]
        seen.append(r.text)
    seen.extend(env.logs.lines)
    return "\n".join(seen)


SLOW_OK = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]


@settings(max_examples=10, deadline=None, suppress_health_check=SLOW_OK)
@given(shaped=SHAPED, value=NAMED_VALUE, name=NAMES,
       prose=st.text("abcdefghij klmnop", min_size=3, max_size=40))  # fmt: skip
def test_secrets_in_every_position_never_surface(
    env: Env, shaped: str, value: str, name: str, prose: str
) -> None:
    assume(value not in prose and value not in name and value not in "zREDACTED")
    trace = uuid.uuid4().hex
    otlp_run, gw_run = "run_o" + trace[:20], "run_g" + trace[:20]
    agent = {"Authorization": f"Bearer {env.agent_key}"}
    r = env.client.post("/v1/traces", content=_otlp(trace, otlp_run, shaped, name, value, prose),
                        headers={**agent, "content-type": "application/json"})  # fmt: skip
    assert r.status_code == 200, r.text

    pair = json.dumps({name: value})
    body = {"model": "mock-small", "max_tokens": 50, "messages": [
        {"role": "system", "content": pair},
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "c1", "type": "function",
                         "function": {"name": "f", "arguments": pair}}]},
        {"role": "tool", "tool_call_id": "c1", "content": json.dumps({"result": pair})},
        {"role": "user", "content": [{"type": "text", "text": f"{shaped} {name}={value} {prose}"}]},
    ]}  # fmt: skip
    r = env.client.post("/llm/v1/chat/completions", json=body,
                        headers={**agent, "X-Tether-Run-Id": gw_run})  # fmt: skip
    assert r.status_code == 200, r.text
    # the model's output echoes the prompt: the secret came back from the model
    assert shaped in r.json()["choices"][0]["message"]["content"]

    api_run = "run_a" + trace[:20]
    r = env.client.post("/api/v1/runs", headers=agent, json={
        "id": api_run, "agent": "redact-agent", "input": {"task": prose, name: value,
                                                          "note": f"key {shaped}"}})  # fmt: skip
    assert r.status_code == 201, r.text
    assert shaped not in r.text and value not in r.text.replace("[REDACTED]", "")

    def gateway_span_written() -> bool:
        with env.engine.connect() as conn:
            q = select(spans.c.span_id).where(spans.c.run_id == gw_run)
            return conn.execute(q).first() is not None

    poll(gateway_span_written, timeout=30)
    visible = _everything_visible(env, [otlp_run, gw_run, api_run])
    assert shaped not in visible
    assert value not in visible.replace("[REDACTED]", "")
