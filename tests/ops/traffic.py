"""Demo-like traffic against a running tether (the LLM test environment): agents and users
calling the gateway, a run refused by its budget, a day budget burning, held and decided
approvals, policy decisions, a kill, and OTLP spans ingested."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx

from tests.gateway.llm_env import LLMEnv, new_run_id
from tether.store import approvals, audit
from tether.store.keys import create_key
from tether.store.policies import apply_policy

DAILY = "agent: daily\nbudgets:\n  day: {max_cost_usd: 5}\n"


def prepare(env: LLMEnv) -> None:
    apply_policy(env.engine, DAILY, "test", datetime.now(UTC))
    env.keys["daily"] = create_key(env.engine, scopes="agent", agent="daily")[1]


def chat(client: httpx.Client, env: LLMEnv, agent: str, *, user: str, run_id: str | None = None,
         model: str = "mock-small", max_tokens: int = 20) -> httpx.Response:  # fmt: skip
    return client.post(f"{env.llm_url}/chat/completions", headers={
        "authorization": f"Bearer {env.keys[agent]}", "x-tether-user": user,
        "x-tether-run-id": run_id or new_run_id(), "x-tether-agent-version": "v1",
    }, json={"model": model, "max_tokens": max_tokens,
             "messages": [{"role": "user", "content": f"work for {user}"}]})  # fmt: skip


def otlp_body() -> dict[str, object]:
    trace, root, llm = uuid.uuid4().hex, uuid.uuid4().hex[:16], uuid.uuid4().hex[:16]
    t0 = int(datetime.now(UTC).timestamp() * 1e9)

    def attr(k: str, v: object) -> dict[str, object]:
        if isinstance(v, int):
            return {"key": k, "value": {"intValue": str(v)}}
        return {"key": k, "value": {"stringValue": v}}

    return {"resourceSpans": [{
        "resource": {"attributes": [attr("tether.agent", "otlp-agent")]},
        "scopeSpans": [{"scope": {"name": "t"}, "spans": [
            {"traceId": trace, "spanId": root, "name": "root", "kind": 1,
             "startTimeUnixNano": str(t0), "endTimeUnixNano": str(t0 + 10**9),
             "status": {"code": 1}},
            {"traceId": trace, "spanId": llm, "parentSpanId": root, "name": "llm",
             "startTimeUnixNano": str(t0), "endTimeUnixNano": str(t0 + 10**8),
             "attributes": [attr("llm.model_name", "mock-small"),
                            attr("openinference.span.kind", "LLM"),
                            attr("llm.token_count.prompt", 100),
                            attr("llm.token_count.completion", 50)]},
        ]}],
    }]}  # fmt: skip


def wave(env: LLMEnv, *, calls: int = 4) -> None:
    """One round of everything the dashboards show."""
    now = datetime.now(UTC)
    with httpx.Client(timeout=30) as client:
        for _ in range(calls):
            for agent, user in (("capped", "alice"), ("sdk-agent", "bob"), ("daily", "carol")):
                r = chat(client, env, agent, user=user)
                assert r.status_code == 200, r.text
        refused = chat(client, env, "tight", user="dave", model="mock-large", max_tokens=4000)
        assert refused.status_code == 402, refused.text
        doomed = new_run_id()
        assert chat(client, env, "capped", user="alice", run_id=doomed).status_code == 200
        assert env.kill(doomed).status_code == 200
        r = client.post(
            f"{env.server.url}/v1/traces",
            json=otlp_body(),
            headers={"authorization": f"Bearer {env.keys['ingest-only']}"},
        )
        assert r.status_code == 200, r.text
    held = approvals.create(env.engine, tool="mail.send", arguments={}, run_id=None,
                            agent="capped", rule=None, reason=None, timeout_s=3600,
                            now=now - timedelta(seconds=90))  # fmt: skip
    approvals.decide(env.engine, held.id, approve=True, actor="alice", reason=None, now=now)
    approvals.create(env.engine, tool="mail.send", arguments={}, run_id=None, agent="capped",
                     rule=None, reason=None, timeout_s=3600, now=now)  # fmt: skip
    for outcome in ("allow", "deny", "approval_required"):
        audit.append(env.engine, "agent:capped", "policy.decision", "crm.lookup",
                     {"agent": "capped", "outcome": outcome}, now)  # fmt: skip
