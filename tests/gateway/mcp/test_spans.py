"""Gateway spans: the run of a request, and secrets redacted from inputs and outputs."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from sqlalchemy import Engine, select

from tether.core.records import RunAttribution
from tether.gateway.mcp.spans import CallContext, record_span, redacted, run_for_request
from tether.store.tables import runs, spans

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
REDACT = ("api_key", "password", "secret", "token")


def test_run_for_request() -> None:
    run, attr = run_for_request({"x-tether-run-id": "run_a", "x-tether-user": "ann"}, "triage")
    assert run == "run_a" and attr == RunAttribution(agent="triage", user="ann")
    s1, _ = run_for_request({"mcp-session-id": "abc"}, "triage")
    s2, _ = run_for_request({"mcp-session-id": "abc", "x-tether-run-id": "bad id!"}, "triage")
    assert s1 == s2 and s1.startswith("run_mcp_")
    fresh, _ = run_for_request({}, None)
    assert fresh.startswith("run_") and fresh != run_for_request({}, None)[0]


def test_secrets_are_redacted_from_tool_spans(sqlite_db: Engine) -> None:
    call = CallContext("triage", "key:k", "run_s", RunAttribution(agent="triage"))
    record_span(sqlite_db, call, kind="tool", name="crm.login", started_at=NOW, ended_at=NOW,
                input={"user": "ann", "password": "hunter2"},
                output=json.dumps({"ok": True, "api_key": "sk-live-123"}), error=None,
                attributes={}, now=NOW, redact=REDACT)  # fmt: skip
    with sqlite_db.connect() as conn:
        span = conn.execute(select(spans)).one()
        agent = conn.execute(select(runs.c.agent).where(runs.c.id == "run_s")).scalar()
    assert "hunter2" not in span.input and json.loads(span.input)["user"] == "ann"
    assert "sk-live-123" not in span.output and json.loads(span.output)["ok"] is True
    assert (span.kind, span.status, agent) == ("tool", "ok", "triage")
    assert redacted({"token": "t", "n": [{"secret": "s"}]}, REDACT) == {
        "token": "[REDACTED]", "n": [{"secret": "[REDACTED]"}],
    }  # fmt: skip
