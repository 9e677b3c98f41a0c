from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from tests.gateway.llm_env import LLMEnv, new_run_id, poll, start_env, stop_env
from tests.ops.promtext import total, value
from tests.store.test_runs import T0, make_run
from tether.config import load_settings
from tether.core.records import RunAttribution, SpanRecord
from tether.server.app import create_app
from tether.store import approvals, audit
from tether.store.ingest import set_run_status, write_spans
from tether.store.keys import create_key
from tether.store.metrics import ledger_cost_nusd

USD = 1_000_000_000


def _replica(tmp: Path, db_url: str, db: Engine, name: str) -> TestClient:
    settings = load_settings(home=tmp / name, database_url=db_url, replica_id=name,
                             metrics_cache_s=0)  # fmt: skip
    return TestClient(create_app(settings, engine=db))


def _seed(db: Engine) -> str:
    """Runs with costs, a budget refusal, a kill, approvals and policy decisions."""
    make_run(db, 1, agent="triage", version="v1", user="alice", cost=USD // 2)
    make_run(db, 2, agent="triage", version="v2", user="bob", cost=3 * USD)
    killed = make_run(db, 3, agent="writer", version="v1", cost=USD // 4, seconds=None)
    now = datetime.now(UTC)
    with db.begin() as conn:
        set_run_status(conn, killed, "killed", now=now, reason="test")
    refusal = SpanRecord(
        trace_id="ab" * 16, span_id="cd" * 8, run_id=killed, kind="other",
        name="refused gpt-4o-mini", started_at=T0, ended_at=T0, status="error", error="402",
        attributes={"tether.outcome": "budget_exceeded", "tether.scope": "agent_day:writer:x"},
        attribution=RunAttribution(agent="writer"),
    )  # fmt: skip
    write_spans(db, [refusal], now=T0, source="gateway")
    held = approvals.create(db, tool="mail.send", arguments={}, run_id=None, agent="triage",
                            rule=None, reason=None, timeout_s=3600,
                            now=now - timedelta(seconds=120))  # fmt: skip
    quick = approvals.create(db, tool="mail.send", arguments={}, run_id=None, agent="triage",
                             rule=None, reason=None, timeout_s=3600,
                             now=now - timedelta(seconds=30))  # fmt: skip
    approvals.decide(db, quick.id, approve=True, actor="alice", reason=None, now=now)
    for outcome in ("allow", "allow", "deny"):
        audit.append(db, "agent:triage", "policy.decision", "crm.lookup",
                     {"agent": "triage", "outcome": outcome}, now)  # fmt: skip
    return held.id


def test_one_replica_exports_the_ledger_and_sums_equal_it(
    tmp_path: Path, db_url: str, db: Engine
) -> None:
    _seed(db)
    _, secret = create_key(db, scopes="read", name="prometheus")
    auth = {"authorization": f"Bearer {secret}"}
    with _replica(tmp_path, db_url, db, "a") as a:
        b = _replica(tmp_path, db_url, db, "b")
        with b:
            text_a = a.get("/metrics", headers=auth).text
            text_b = b.get("/metrics", headers=auth).text
            assert value(text_a, "tether_ledger_exporter", replica="a") == 1
            assert value(text_b, "tether_ledger_exporter", replica="b") == 0
            assert "tether_cost_usd_total" not in text_b
            both = total(text_a, "tether_cost_usd_total") + total(text_b, "tether_cost_usd_total")
            assert both == pytest.approx(ledger_cost_nusd(db) / USD) == 3.75

            triage = {"agent": "triage", "model": "gpt-4o-mini"}
            assert value(text_a, "tether_cost_usd_total", **triage, version="v2", user="bob") == 3
            assert total(text_a, "tether_tokens_total", direction="input") == 300
            assert value(text_a, "tether_runs", agent="writer", version="v1", status="killed") == 1
            assert value(text_a, "tether_kills_total", agent="writer") == 1
            assert value(text_a, "tether_budget_refusals_total", scope="agent_day") == 1
            assert value(text_a, "tether_approvals_waiting", agent="triage") == 1
            assert value(text_a, "tether_approvals_oldest_waiting_seconds") >= 119  # type: ignore[operator]
            assert value(text_a, "tether_approval_decision_seconds_count", decision="approved") == 1
            assert value(text_a, "tether_approval_decision_seconds_bucket", decision="approved",
                         le="15.0") == 0  # fmt: skip
            assert value(text_a, "tether_approval_decision_seconds_bucket", decision="approved",
                         le="60.0") == 1  # fmt: skip
            assert value(text_a, "tether_policy_decisions_total", outcome="allow",
                         agent="triage") == 2  # fmt: skip
            assert value(text_a, "tether_success_at_target_cost_ratio", agent="triage",
                         version="v1") == 1  # fmt: skip
            assert value(text_a, "tether_api_key_age_seconds", key_id=_key_id(text_a),
                         name="prometheus", agent="") is not None  # fmt: skip
            # new decisions are read on from the last audit seq, not recounted
            audit.append(db, "agent:triage", "policy.decision", "crm.lookup",
                         {"agent": "triage", "outcome": "allow"}, datetime.now(UTC))  # fmt: skip
            again = a.get("/metrics", headers=auth).text
            assert value(again, "tether_policy_decisions_total", outcome="allow",
                         agent="triage") == 3  # fmt: skip
        # b has shut down; a still leads. Now a goes too, and b (restarted) takes over at once.
    with _replica(tmp_path, db_url, db, "b") as b2:
        text = b2.get("/metrics", headers=auth).text
        assert value(text, "tether_ledger_exporter", replica="b") == 1
        assert total(text, "tether_cost_usd_total") == pytest.approx(3.75)


def _key_id(text: str) -> str:
    for line in text.splitlines():
        if line.startswith("tether_api_key_age_seconds{") and 'name="prometheus"' in line:
            return line.split('key_id="', 1)[1].split('"', 1)[0]
    raise AssertionError("no key age for the prometheus key")


@pytest.fixture
def workers_env(tmp_path: Path) -> Iterator[LLMEnv]:
    env = start_env(tmp_path, f"sqlite:///{tmp_path / 'tether.db'}", workers=2,
                    env={"TETHER_METRICS_CACHE_S": "0"})  # fmt: skip
    yield env
    stop_env(env)


def test_workers_report_the_whole_replica_whichever_answers(workers_env: LLMEnv) -> None:
    env = workers_env
    url = env.server.url
    calls = 6
    with httpx.Client(timeout=30) as client:
        for i in range(calls):
            r = client.post(
                f"{url}/llm/v1/chat/completions",
                headers={
                    "authorization": f"Bearer {env.keys['capped']}",
                    "x-tether-run-id": new_run_id(),
                },
                json={
                    "model": "mock-small",
                    "max_tokens": 20,
                    "messages": [{"role": "user", "content": f"hello {i}"}],
                },
            )
            assert r.status_code == 200, r.text
        refused = client.post(
            f"{url}/llm/v1/chat/completions",
            headers={"authorization": f"Bearer {env.keys['tight']}"},
            json={
                "model": "mock-large",
                "max_tokens": 4000,
                "messages": [{"role": "user", "content": "too much"}],
            },
        )
        assert refused.status_code == 402
        auth = {"authorization": f"Bearer {env.admin}"}

        def settled() -> str | None:
            text = client.get(f"{url}/metrics", headers=auth).text
            n = value(text, "tether_gateway_request_duration_seconds_count", api="openai",
                      model="mock-small", outcome="ok")  # fmt: skip
            leader = total(text, "tether_ledger_exporter") == 1
            return text if n == calls and leader else None

        poll(settled, timeout=15)
        # every scrape, whichever worker answers it, reports all calls of the replica
        for _ in range(8):
            text = client.get(f"{url}/metrics", headers=auth).text
            assert value(text, "tether_gateway_request_duration_seconds_count", api="openai",
                         model="mock-small", outcome="ok") == calls  # fmt: skip
            assert value(text, "tether_gateway_ttft_seconds_count", model="mock-small") == calls
            assert value(text, "tether_budget_refusals_total", scope="run") == 1
            assert total(text, "tether_cost_usd_total") == pytest.approx(
                ledger_cost_nusd(env.engine) / USD
            )
            assert total(text, "tether_ledger_exporter") == 1


def test_drift_and_cost_alerts_are_exported_once_across_replicas(
    tmp_path: Path, db_url: str, db: Engine
) -> None:
    from tether.store.alerts import AlertDraft, acknowledge, raise_alert

    now = datetime.now(UTC)
    hour = timedelta(hours=1)
    drift = raise_alert(db, AlertDraft(
        kind="drift", dedup_key="drift:support", subject="agent support", message="drifted",
        agent="support", bucket_at=now, detail={"moved": ["sequences", "cost"]}),
        now=now, cooldown=hour)  # fmt: skip
    assert drift.new
    raise_alert(db, AlertDraft(
        kind="drift", dedup_key="drift:support", subject="agent support", message="again",
        agent="support", bucket_at=now + hour, detail={"moved": ["sequences"]}),
        now=now + timedelta(minutes=5), cooldown=hour)  # fmt: skip
    cost = raise_alert(db, AlertDraft(
        kind="cost_anomaly", dedup_key="cost:hour:user:alice", subject="user alice",
        message="spike", bucket_at=now, value_nusd=3 * USD, expected_nusd=USD,
        high_nusd=2 * USD, detail={"granularity": "hour", "dimension": "user", "key": "alice"}),
        now=now, cooldown=hour)  # fmt: skip
    old = raise_alert(db, AlertDraft(
        kind="cost_anomaly", dedup_key="cost:day:user:bob", subject="user bob",
        message="spike", bucket_at=now, value_nusd=USD, expected_nusd=USD // 10,
        high_nusd=USD // 5, detail={"granularity": "day", "dimension": "user", "key": "bob"}),
        now=now, cooldown=hour)  # fmt: skip
    acknowledge(db, old.alert.id, by="ops", note=None, now=now)
    _, secret = create_key(db, scopes="read", name="prometheus")
    auth = {"authorization": f"Bearer {secret}"}
    with _replica(tmp_path, db_url, db, "a") as a, _replica(tmp_path, db_url, db, "b") as b:
        text_a = a.get("/metrics", headers=auth).text
        text_b = b.get("/metrics", headers=auth).text
    assert "tether_alerts{" not in text_b and "tether_drift_moved" not in text_b
    assert value(text_a, "tether_alerts", kind="drift", agent="support", status="open") == 1
    assert value(text_a, "tether_alerts", kind="cost_anomaly", agent="",
                 status="acknowledged") == 1  # fmt: skip
    assert value(text_a, "tether_alert_occurrences_total", kind="drift", agent="support") == 2
    assert value(text_a, "tether_drift_moved", agent="support", metric="sequences") == 1
    assert value(text_a, "tether_drift_moved", agent="support", metric="cost") == 1
    alice = {"granularity": "hour", "dimension": "user", "key": "alice"}
    assert value(text_a, "tether_cost_anomaly_spend_usd", **alice) == 3
    assert value(text_a, "tether_cost_anomaly_expected_usd", **alice) == 1
    assert value(text_a, "tether_cost_anomaly_high_usd", **alice) == 2
    # an acknowledged anomaly is no longer exported as open
    assert value(text_a, "tether_cost_anomaly_spend_usd", granularity="day", dimension="user",
                 key="bob") is None  # fmt: skip
    assert cost.notify


def test_key_age_and_expiry_are_exported_for_usable_keys(
    tmp_path: Path, db_url: str, db: Engine
) -> None:
    now = datetime.now(UTC)
    _, secret = create_key(db, scopes="read", name="scraper")
    create_key(db, scopes="read", name="monthly", expires_in=timedelta(days=30))
    create_key(db, scopes="read", name="lapsed", now=now - timedelta(days=2),
               expires_in=timedelta(days=1))  # fmt: skip
    with _replica(tmp_path, db_url, db, "a") as a:
        text = a.get("/metrics", headers={"authorization": f"Bearer {secret}"}).text
    ages = [line for line in text.splitlines() if line.startswith("tether_api_key_age_seconds{")]
    left = [line for line in text.splitlines()
            if line.startswith("tether_api_key_expires_in_seconds{")]  # fmt: skip
    assert any('name="monthly"' in x for x in ages) and any('name="scraper"' in x for x in ages)
    assert not any('name="lapsed"' in x for x in ages)  # expired: no longer a usable key
    [monthly] = left
    assert 'name="monthly"' in monthly
    assert 29 * 86400 < float(monthly.rsplit(" ", 1)[1]) <= 30 * 86400
