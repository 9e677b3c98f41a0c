"""Budgets end to end through the openai SDK: HTTP 402 `budget_exceeded` naming the scope and
what remains, the default max_tokens injected under a cap, and no overshoot under concurrency."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import anthropic
import httpx
import openai
import pytest

from tests.gateway.llm_env import LLMEnv, new_run_id, poll

CAP_NUSD = 1_000_000  # the `tight` agent's run cap: $0.001
BIG = [{"role": "user", "content": "[[big]] write a lot"}]


def client(env: LLMEnv, run_id: str, agent: str = "tight") -> openai.OpenAI:
    return openai.OpenAI(base_url=env.llm_url, api_key=env.keys[agent], max_retries=0,
                         default_headers={"X-Tether-Run-Id": run_id})  # fmt: skip


def test_refusal_is_402_budget_exceeded_naming_scope_and_remaining(llm_env: LLMEnv) -> None:
    run_id = new_run_id()
    # 4096 tokens ($0.0082 at mock-small's price), chosen by the client: never lowered
    r = httpx.post(llm_env.llm_url + "/chat/completions",
                   headers={"authorization": f"Bearer {llm_env.keys['tight']}",
                            "x-tether-run-id": run_id},
                   json={"model": "mock-small", "messages": BIG, "max_tokens": 4096})  # fmt: skip
    assert r.status_code == 402
    err = r.json()["error"]
    assert err["type"] == "budget_exceeded" and err["code"] == "budget_exceeded"
    assert f"run:{run_id}" in err["message"] and "left" in err["message"]
    assert err["scope"] == f"run:{run_id}" and err["remaining_usd"] == pytest.approx(0.001)
    assert err["param"] is None
    with pytest.raises(openai.APIStatusError) as sdk:
        client(llm_env, run_id).chat.completions.create(model="mock-small", messages=BIG,
                                                        max_tokens=4096)  # fmt: skip
    assert sdk.value.status_code == 402
    a = anthropic.Anthropic(
        base_url=llm_env.anthropic_url,
        api_key=llm_env.keys["tight"],
        max_retries=0,
        default_headers={"X-Tether-Run-Id": run_id},
    )
    with pytest.raises(anthropic.APIStatusError) as an:
        a.messages.create(model="mock-small", max_tokens=4096, messages=BIG)
    assert an.value.status_code == 402
    assert an.value.body["error"]["type"] == "budget_exceeded"  # type: ignore[index]
    refused = llm_env.wait_spans(run_id, 3)
    assert {s.kind for s in refused} == {"other"}
    assert all(s.attributes["tether.outcome"] == "budget_exceeded" for s in refused)


def test_a_run_is_stopped_at_its_cap_and_never_overshoots(llm_env: LLMEnv) -> None:
    run_id = new_run_id()
    c = client(llm_env, run_id)
    admitted = 0
    with pytest.raises(openai.APIStatusError) as err:
        for _ in range(50):
            c.chat.completions.create(model="mock-small", messages=BIG, max_tokens=50)
            admitted += 1
    assert err.value.status_code == 402 and admitted >= 4
    spans = llm_env.wait_spans(run_id, admitted + 1)
    charged = sum(s.cost_nusd for s in spans if s.kind == "llm")
    counter = poll(lambda: (x := llm_env.counter(f"run:{run_id}")) and x.reserved_nusd == 0 and x)
    assert counter.spent_nusd == charged <= CAP_NUSD
    assert counter.calls == admitted
    # what remained was less than one more worst case: the refusal was not premature
    assert CAP_NUSD - charged < 2 * max(s.cost_nusd for s in spans if s.kind == "llm") + 400_000


def test_concurrent_calls_never_overshoot_the_run_cap(llm_env: LLMEnv) -> None:
    run_id = new_run_id()

    def one(_: int) -> int:
        try:
            client(llm_env, run_id).chat.completions.create(
                model="mock-small", messages=BIG, max_tokens=50
            )
            return 200
        except openai.APIStatusError as exc:
            return exc.status_code

    with ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(one, range(32)))
    assert set(codes) == {200, 402} and codes.count(200) >= 1
    spans = poll(lambda: (s := llm_env.spans_of(run_id)) and len(s) == 32 and s)
    charged = sum(s.cost_nusd for s in spans if s.kind == "llm")
    counter = poll(lambda: (x := llm_env.counter(f"run:{run_id}")) and x.reserved_nusd == 0 and x)
    assert counter.spent_nusd == charged <= CAP_NUSD
    assert counter.calls == codes.count(200)
    run = poll(lambda: (r := llm_env.run(run_id)) and r.llm_calls == codes.count(200) and r)
    assert Decimal(run.cost_nusd) == Decimal(charged)


def test_default_max_tokens_is_injected_only_under_a_cap(llm_env: LLMEnv) -> None:
    for agent, marker in (("capped", "inject-check-capped"), ("sdk-agent", "inject-check-free")):
        client(llm_env, new_run_id(), agent).chat.completions.create(
            model="mock-small", messages=[{"role": "user", "content": marker}]
        )
    sent = {r["body"]["messages"][0]["content"]: r["body"] for r in llm_env.mock.requests
            if r["path"] == "/v1/chat/completions"}  # fmt: skip
    assert sent["inject-check-capped"]["max_tokens"] == 4096
    assert "max_tokens" not in sent["inject-check-free"]
    # OpenAI's reasoning models take the cap as max_completion_tokens
    client(llm_env, new_run_id(), "capped").chat.completions.create(
        model="reasoner", messages=[{"role": "user", "content": "inject-check-reasoner"}]
    )
    [body] = [
        r["body"]
        for r in llm_env.mock.requests
        if r["body"].get("messages", [{}])[0].get("content") == "inject-check-reasoner"
    ]
    assert body["model"] == "o3-mini" and "max_tokens" not in body
    assert body["max_completion_tokens"] > 0


def test_the_worst_case_covers_every_choice_and_the_larger_token_field(llm_env: LLMEnv) -> None:
    def needed(**extra: object) -> float:
        r = httpx.post(llm_env.llm_url + "/chat/completions",
                       headers={"authorization": f"Bearer {llm_env.keys['tight']}",
                                "x-tether-run-id": new_run_id()},
                       json={"model": "mock-small", "messages": BIG, **extra})  # fmt: skip
        assert r.status_code == 402, r.text
        return float(r.json()["error"]["needed_usd"])

    one = needed(max_tokens=2000)
    three = needed(max_tokens=2000, n=3)
    # mock-small: $2e-6 an output token (the few extra bytes of `n` cost ~$1e-6 each)
    assert three - one == pytest.approx(2 * 2000 * 2e-6, abs=1e-4)
    assert needed(max_tokens=2000, max_completion_tokens=10) == pytest.approx(one, abs=1e-4)
    bad = httpx.post(llm_env.llm_url + "/chat/completions",
                     headers={"authorization": f"Bearer {llm_env.keys['tight']}"},
                     json={"model": "mock-small", "messages": BIG, "n": 0})  # fmt: skip
    assert (
        bad.status_code == 400 and "n must be a positive integer" in bad.json()["error"]["message"]
    )
