"""Exploits of the caps and the kill switch, end to end, on each budget ledger (SQLite;
PostgreSQL; PostgreSQL with Redis — the last two with two server processes):

- a run that ended (a root span with an end time arrived over OTLP) and is then killed, or
  passes max_duration_s, refuses every later LLM call (409 run_killed) and tool call;
- a stream that outlives reservation_ttl_s keeps its hold, so later calls cannot overshoot;
- every kind of key that reaches /llm is bound by the caps of the run it names and charged
  to its counter, however the run was created.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.gateway.llm_env import RESERVATION_TTL_S, LLMEnv, new_run_id, poll

BOUND_CAP_NUSD = 3_000_000  # policy `bound`: run max_cost_usd 0.003
STREAMY_CAP_NUSD = 5_000_000  # policy `streamy`: run max_cost_usd 0.005
BIG = [{"role": "user", "content": "[[big]] a long answer please"}]


def llm(env: LLMEnv, key: str, run_id: str, **kw: Any) -> httpx.Response:
    body = {"model": "mock-small", "messages": BIG, "max_tokens": 300, **kw}
    headers = {"authorization": f"Bearer {key}", "x-tether-run-id": run_id}
    return httpx.post(f"{env.llm_url}/chat/completions", json=body, timeout=30, headers=headers)


def anthropic_call(env: LLMEnv, key: str, run_id: str) -> httpx.Response:
    body = {"model": "mock-small", "max_tokens": 50, "messages": BIG}
    headers = {"x-api-key": key, "anthropic-version": "2023-06-01", "x-tether-run-id": run_id}
    return httpx.post(f"{env.anthropic_url}/v1/messages", json=body, timeout=30, headers=headers)


def tool_call(env: LLMEnv, key: str, run_id: str) -> dict[str, Any]:
    """The MCP gateway's enforcement path (the same Guard) through POST /api/v1/decide."""
    r = httpx.post(f"{env.server.url}/api/v1/decide", timeout=30,
                   json={"tool": "demo.lookup", "run_id": run_id},
                   headers={"authorization": f"Bearer {key}"})  # fmt: skip
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def otlp_root(env: LLMEnv, key: str, run_id: str, *, ended: bool) -> None:
    """A root span naming the run; with an end time it ends the run (status succeeded)."""
    start = time.time_ns() - 1_000_000_000
    span: dict[str, Any] = {
        "traceId": os.urandom(16).hex(), "spanId": os.urandom(8).hex(), "name": "task",
        "startTimeUnixNano": str(start),
        "attributes": [{"key": "tether.run_id", "value": {"stringValue": run_id}}],
    }  # fmt: skip
    if ended:
        span["endTimeUnixNano"] = str(start + 500_000_000)
    body = {"resourceSpans": [{"resource": {"attributes": []}, "scopeSpans": [{"spans": [span]}]}]}
    r = httpx.post(f"{env.server.url}/v1/traces", json=body, timeout=30,
                   headers={"authorization": f"Bearer {key}"})  # fmt: skip
    assert r.status_code == 200, r.text


def refused_killed(r: httpx.Response) -> bool:
    return r.status_code == 409 and r.json()["error"]["type"] == "run_killed"


def charged_once(env: LLMEnv, run_id: str, calls: int) -> tuple[int, int]:
    """(counter spent, sum of the run's LLM span costs) once the spans of its `calls` admitted
    calls are written and every hold has settled (settles are written off the response path,
    so both are waited for; a mismatch still fails, with both figures)."""
    spans = poll(lambda: len(s := [x for x in env.spans_of(run_id) if x.kind == "llm"]) >= calls
                 and s, timeout=15)  # fmt: skip
    assert len(spans) == calls
    cost = sum(s.cost_nusd or 0 for s in spans)

    def settled() -> Any:
        c = env.counter(f"run:{run_id}")
        return c is not None and c.reserved_nusd == 0 and c.spent_nusd == cost and c

    try:
        return poll(settled, timeout=15).spent_nusd, cost
    except AssertionError:
        counter = env.counter(f"run:{run_id}")
        return (counter.spent_nusd if counter else 0), cost


# ---------------------------------------------------------------- ended, then killed


def test_a_run_ended_over_otlp_and_then_killed_refuses_every_later_call(
    ledger_env: LLMEnv,
) -> None:
    env, key = ledger_env, ledger_env.keys["bound:agent,ingest"]
    run_id = new_run_id()
    assert llm(env, key, run_id, max_tokens=20).status_code == 200
    otlp_root(env, key, run_id, ended=True)
    poll(lambda: env.run(run_id).status == "succeeded")
    # "ended" closes nothing: the run is still served, under the same caps and counter
    assert llm(env, key, run_id, max_tokens=20).status_code == 200
    assert tool_call(env, key, run_id)["decision"] == "deny"  # the MCP guard: run ended
    r = env.kill(run_id, "caught after it ended")
    assert r.status_code == 200, r.text
    assert r.json() == {"id": run_id, "status": "killed", "kill_reason": "caught after it ended"}
    run = env.run(run_id)
    assert (run.status, run.kill_reason) == ("killed", "caught after it ended")
    # the other process learns of the kill within one poll; then nothing gets through
    poll(lambda: refused_killed(llm(env, key, run_id, max_tokens=20)), timeout=5)
    for _ in range(4):
        assert refused_killed(llm(env, key, run_id, max_tokens=20))
        assert refused_killed(anthropic_call(env, key, run_id))
    verdict = tool_call(env, key, run_id)
    assert (verdict["decision"], verdict["rule"]) == ("deny", "run killed")
    # a second root span (or a new end) cannot reopen it
    otlp_root(env, key, run_id, ended=True)
    assert env.run(run_id).status == "killed"
    assert refused_killed(llm(env, key, run_id, max_tokens=20))
    # a second kill is not an error: the run stays killed with its first reason
    again = env.kill(run_id, "twice")
    assert again.status_code == 200 and again.json()["kill_reason"] == "caught after it ended"


def test_an_ended_run_past_max_duration_is_killed_and_refused(ledger_env: LLMEnv) -> None:
    env, key = ledger_env, ledger_env.keys["hasty:agent,ingest"]  # max_duration_s: 1
    run_id = new_run_id()
    assert llm(env, key, run_id, max_tokens=20).status_code == 200
    otlp_root(env, key, run_id, ended=True)
    poll(lambda: env.run(run_id).status == "succeeded")
    refused = poll(lambda: (r := llm(env, key, run_id, max_tokens=20)).status_code != 200 and r,
                   timeout=15)  # fmt: skip
    assert refused_killed(refused), refused.text
    assert "max_duration_s" in refused.json()["error"]["message"]
    run = poll(lambda: (row := env.run(run_id)).status == "killed" and row)
    assert run.kill_reason == "max_duration_s exceeded"
    for _ in range(3):
        assert refused_killed(llm(env, key, run_id, max_tokens=20))
    assert tool_call(env, key, run_id)["rule"] == "run killed"


def test_a_tool_call_past_max_duration_kills_the_run(ledger_env: LLMEnv) -> None:
    """The MCP guard enforces max_duration_s itself, for an agent making only tool calls."""
    env, key = ledger_env, ledger_env.keys["hasty:agent,ingest"]
    run_id = new_run_id()
    otlp_root(env, key, run_id, ended=False)  # started 1 s ago (see otlp_root)
    verdict = poll(lambda: (v := tool_call(env, key, run_id))["decision"] == "deny" and v,
                   timeout=15)  # fmt: skip
    assert verdict["rule"] == "run killed" and "max_duration_s" in verdict["reason"]
    assert env.run(run_id).status == "killed"
    poll(lambda: refused_killed(llm(env, key, run_id, max_tokens=20)), timeout=5)


# ---------------------------------------------------------------- streams outliving the TTL


def test_streams_outliving_the_reservation_ttl_keep_their_holds(ledger_env: LLMEnv) -> None:
    """Four streams of ~8 s hold most of a $0.005 cap; past the 3 s TTL and a sweep, calls that
    would fit only if the sweep had freed those holds are refused, and nothing overshoots."""
    env, key = ledger_env, ledger_env.keys["streamy"]
    run_id = new_run_id()
    c = openai.OpenAI(base_url=env.llm_url, api_key=key, max_retries=0,
                      default_headers={"X-Tether-Run-Id": run_id})  # fmt: skip
    started: list[float] = []

    def stream() -> int:
        slow = [{"role": "user", "content": "[[slow]] go"}]
        s = c.chat.completions.create(
            model="mock-small", stream=True, max_tokens=400, messages=slow
        )
        started.append(time.monotonic())
        return sum(1 for ch in s if ch.choices and ch.choices[0].delta.content)

    with ThreadPoolExecutor(4) as pool:
        streams = [pool.submit(stream) for _ in range(4)]
        poll(lambda: len(started) == 4, timeout=15)
        # past the holds' first expiry and a sweep (every TTL/2) in each process
        deadline = max(started) + RESERVATION_TTL_S + RESERVATION_TTL_S / 2 + 0.5
        while time.monotonic() < deadline and not any(f.done() for f in streams):
            time.sleep(0.05)
        assert not any(f.done() for f in streams), "the streams ended before the TTL passed"
        late = [llm(env, key, run_id, max_tokens=400) for _ in range(4)]
        assert [r.status_code for r in late] == [402] * 4, [r.text for r in late]
        assert all(f.result(timeout=60) > 0 for f in streams)
    spent, spans = charged_once(env, run_id, 4)
    assert spent == spans and 0 < spent <= STREAMY_CAP_NUSD


# ---------------------------------------------------------------- every key bound by the run


CREATIONS = ["header", "api_admin", "api_agent", "otlp"]
KEYS = ["admin", "bound", "bound:admin,agent", "bound:agent,ingest", "bound:ingest,agent,admin"]


def _create(env: LLMEnv, how: str, run_id: str) -> None:
    agent_key = env.keys["bound"]
    if how == "header":  # the agent's own first call names it
        assert llm(env, agent_key, run_id, max_tokens=1).status_code == 200
    elif how in ("api_admin", "api_agent"):
        key = env.admin if how == "api_admin" else agent_key
        body = {"id": run_id, "agent": "bound"} if how == "api_admin" else {"id": run_id}
        r = httpx.post(f"{env.server.url}/api/v1/runs", json=body, timeout=30,
                       headers={"authorization": f"Bearer {key}"})  # fmt: skip
        assert r.status_code == 201, r.text
    else:  # the SDK's exporter: a root span from the agent's agent+ingest key
        otlp_root(env, env.keys["bound:agent,ingest"], run_id, ended=False)
    assert poll(lambda: env.run(run_id)).agent == "bound"


@pytest.mark.parametrize("how", CREATIONS)
def test_every_key_is_bound_by_the_caps_of_the_run_it_names(ledger_env: LLMEnv, how: str) -> None:
    env = ledger_env
    for key_name in KEYS:
        key = env.admin if key_name == "admin" else env.keys[key_name]
        run_id = new_run_id()
        _create(env, how, run_id)
        codes = []
        for _ in range(12):
            r = llm(env, key, run_id)
            codes.append(r.status_code)
            if r.status_code == 402:
                assert r.json()["error"]["type"] == "budget_exceeded"
                break
        assert codes[-1] == 402 and codes.count(200) >= 3, (key_name, codes)
        spent, spans = charged_once(env, run_id, codes.count(200) + (how == "header"))
        assert spent == spans, (key_name, spent, spans)
        assert 0 < spent <= BOUND_CAP_NUSD, (key_name, spent)


def test_an_admin_key_cannot_use_another_agents_identity_to_escape(ledger_env: LLMEnv) -> None:
    """An admin,agent key of agent `capped` naming `bound`'s run is refused, not uncapped."""
    env = ledger_env
    run_id = new_run_id()
    _create(env, "api_admin", run_id)
    c = openai.OpenAI(base_url=env.llm_url, api_key=env.keys["capped"], max_retries=0,
                      default_headers={"X-Tether-Run-Id": run_id})  # fmt: skip
    with pytest.raises(openai.PermissionDeniedError):
        c.chat.completions.create(model="mock-small", messages=BIG, max_tokens=10)
    a = anthropic.Anthropic(base_url=env.anthropic_url, api_key=env.admin, max_retries=0,
                            default_headers={"X-Tether-Run-Id": run_id})  # fmt: skip
    a.messages.create(model="mock-small", max_tokens=10, messages=BIG)
    spent, spans = charged_once(env, run_id, 1)
    assert spent == spans > 0
