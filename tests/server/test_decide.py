"""`POST /api/v1/decide`, the SDK guard's contract: allow, deny, approval_required (with a hold to
wait on) and rate_limited; unknown tools registered as kind sdk; scopes; every decision audited."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis
from sqlalchemy import Engine

from tests.conftest import REDIS_URL
from tests.server.api_helpers import Api, make_api
from tether.config import Settings
from tether.core.records import RunAttribution
from tether.store import audit, policies
from tether.store import tools as registry
from tether.store.budgets import ledger_id
from tether.store.engine import make_engine
from tether.store.ingest import ensure_run, set_run_status
from tether.store.migrate import upgrade

POLICY = """\
agent: triage
tools:
  - {match: "billing.lookup", allow: true, rate_limit: "2/minute"}
  - {match: "billing.refund", approval: required}
  - {match: "billing.delete", allow: false, reason: "never"}
  - {match: "web.*", allow: true}
  - {match: "mail.*", allow: true}
data_flow:
  - {after_tag: untrusted, require_approval_for_tag: egress}
on_uncertain: deny
approval: {timeout_s: 120}
"""


@pytest.fixture
def api(settings: Settings, db: Engine) -> Api:
    policies.apply_policy(db, POLICY, "test", datetime.now(UTC))
    return make_api(settings, db)


def decide(api: Api, tool: str, headers: dict[str, str] | None = None, **body: object) -> dict:
    r = api.client.post("/api/v1/decide", json={"tool": tool, **body},
                        headers=headers or api.triage)  # fmt: skip
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def test_outcomes_of_the_contract(api: Api) -> None:
    ok = decide(api, "billing.lookup", run_id="run_d1", arguments={"id": 1})
    assert ok == {"decision": "allow", "approval_id": None, "reason": "billing.lookup is allowed",
                  "rule": 'tools[0] match "billing.lookup"', "retry_after_s": None}  # fmt: skip
    no = decide(api, "billing.delete", run_id="run_d1")
    assert (no["decision"], no["reason"]) == ("deny", "never")
    held = decide(api, "billing.refund", run_id="run_d1",
                  arguments={"amount": 40, "card_token": "tok_visa_4242"},
                  tags=["irreversible"])  # fmt: skip
    assert held["decision"] == "approval_required" and held["approval_id"].startswith("apr_")
    got = api.client.get(f"/api/v1/approvals/{held['approval_id']}", headers=api.triage).json()
    assert (got["tool"], got["status"]) == ("billing.refund", "pending")
    assert got["arguments"] == {"amount": 40, "card_token": "[REDACTED]"}  # settings.redact_fields
    assert decide(api, "billing.lookup")["decision"] == "allow"
    limited = decide(api, "billing.lookup")
    assert limited["decision"] == "rate_limited" and limited["retry_after_s"] > 0
    assert decide(api, "unknown.tool")["decision"] == "deny"
    outcomes = [e.data["outcome"] for e in audit.list_entries(
        api.db, action="policy.decision", newest_first=False)[0]]  # fmt: skip
    assert outcomes == ["allow", "deny", "approval_required", "allow", "rate_limited", "deny"]


def test_unknown_tools_are_registered_as_sdk_tools_with_their_tags(api: Api) -> None:
    decide(api, "billing.refund", tags=["irreversible", "egress"])
    tool = registry.get_tool(api.db, "billing.refund")
    assert tool is not None and tool.kind == "sdk" and set(tool.tags) == {"irreversible", "egress"}
    listed = api.client.get("/api/v1/tools", headers=api.read).json()["items"]
    assert [t["name"] for t in listed] == ["billing.refund"]


def test_untrusted_sdk_tool_taints_the_run(api: Api) -> None:
    assert decide(api, "web.fetch", run_id="run_t", tags=["untrusted"])["decision"] == "allow"
    assert registry.run_tags(api.db, "run_t") == {"untrusted"}
    held = decide(api, "mail.send", run_id="run_t", tags=["egress"])
    assert held["decision"] == "approval_required" and held["rule"].startswith("data_flow[0]")
    assert decide(api, "mail.send", run_id="run_clean", tags=["egress"])["decision"] == "allow"


def test_bad_input_and_scopes(api: Api) -> None:
    c = api.client
    assert c.post("/api/v1/decide", json={"tool": "x"}).status_code == 401
    assert c.post("/api/v1/decide", json={"tool": "x"}, headers=api.read).status_code == 403
    r = c.post("/api/v1/decide", json={"tool": "x", "tags": ["sneaky"]}, headers=api.triage)
    assert r.status_code == 400 and "unknown tool tag" in r.json()["error"]["message"]
    r = c.post("/api/v1/decide", json={"tool": "x", "run_id": "bad id!"}, headers=api.triage)
    assert r.status_code == 400
    r = c.post("/api/v1/decide", json={"tool": ""}, headers=api.triage)
    assert r.status_code == 400
    r = c.post("/api/v1/decide", json={"tool": "x"}, headers=api.admin)
    assert r.status_code == 400 and "agent" in r.json()["error"]["message"]
    r = c.post("/api/v1/decide", json={"tool": "x", "agent": "other"}, headers=api.triage)
    assert r.status_code == 403
    as_admin = decide(api, "billing.lookup", headers=api.admin, agent="triage")
    assert as_admin["decision"] == "allow"


def test_calls_of_an_ended_run_are_denied(api: Api) -> None:
    assert decide(api, "billing.lookup", run_id="run_k")["decision"] == "allow"
    with api.db.begin() as conn:
        ensure_run(
            conn,
            "run_k",
            trace_id=None,
            attribution=RunAttribution(agent="triage"),
            started_at=datetime.now(UTC),
            source="sdk",
            now=datetime.now(UTC),
        )
        set_run_status(conn, "run_k", "killed", now=datetime.now(UTC), reason="budget")
    denied = decide(api, "billing.lookup", run_id="run_k")
    assert (denied["decision"], denied["rule"]) == ("deny", "run killed")
    assert "killed" in denied["reason"]


def test_an_agent_cannot_hold_or_taint_another_agents_run(api: Api) -> None:
    now = datetime.now(UTC)
    with api.db.begin() as conn:
        ensure_run(conn, "run_bob", trace_id=None, attribution=RunAttribution(agent="bob"),
                   started_at=now, source="sdk", now=now)  # fmt: skip
    r = api.client.post("/api/v1/decide", json={"tool": "billing.refund", "run_id": "run_bob"},
                        headers=api.triage)  # fmt: skip
    assert r.status_code == 403 and "belongs to agent bob" in r.json()["error"]["message"]
    assert api.client.get("/api/v1/runs/run_bob", headers=api.admin).json()["status"] == "running"
    assert registry.run_tags(api.db, "run_bob") == frozenset()


def test_a_server_with_redis_keeps_its_rate_windows_there_in_its_database_namespace(
    settings: Settings, db: Engine, tmp_path: Path
) -> None:
    """The MCP guard (and /decide) count rate limits in Redis when the server has one, so
    replicas share windows at Redis speed; two databases sharing that Redis never share one."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        with_redis = settings.model_copy(update={"redis_url": REDIS_URL})
        api = make_api(with_redis, db)
        policies.apply_policy(db, POLICY, "test", datetime.now(UTC))
        assert [decide(api, "billing.lookup")["decision"] for _ in range(3)] == [
            "allow", "allow", "rate_limited"]  # fmt: skip
        keys = [k.decode() for k in client.scan_iter("tether:*:rl:tool:triage:billing.lookup")]
        mine = f"tether:{ledger_id(db, candidate=1)}:rl:tool:triage:billing.lookup"
        assert mine in keys and client.zcard(mine) == 2
        # another database on the same Redis starts with its own, empty window
        other_db = make_engine(f"sqlite:///{tmp_path / 'other.db'}")
        upgrade(other_db)
        other = make_api(with_redis, other_db)
        policies.apply_policy(other_db, POLICY, "test", datetime.now(UTC))
        assert decide(other, "billing.lookup")["decision"] == "allow"
        other_db.dispose()
    finally:
        client.close()
