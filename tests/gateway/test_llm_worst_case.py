"""The worst case bounds what the provider bills, and says so when it does not, on each ledger:
provider prompt overheads (tools, message framing) and the operator's per-model margin in the
hold; a settle above its hold is an overshoot event (span attribute, audit entry, metric,
webhook); a 402 says which max_tokens would fit, and an injected max_tokens is lowered to it.
"""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import select

from tests.gateway.llm_env import LLMEnv, new_run_id, poll
from tether.core.budget import MESSAGE_FRAMING_TOKENS, TOOL_FRAMING_TOKENS
from tether.core.budget import TOOL_SYSTEM_PROMPT_TOKENS as TOOL_PROMPT
from tether.store.tables import audit_log

SMALL_IN_NUSD = 1000  # mock-small: $1e-6 per input token, $2e-6 per output token
TOOLS = [{"type": "function", "function": {"name": f"t{i}", "parameters": {"type": "object"}}}
         for i in range(3)]  # fmt: skip


def call(env: LLMEnv, run_id: str, content: str, agent: str = "worst", **kw: Any) -> httpx.Response:
    body = {"model": "mock-small", "messages": [{"role": "user", "content": content}], **kw}
    headers = {"authorization": f"Bearer {env.keys[agent]}", "x-tether-run-id": run_id}
    return httpx.post(f"{env.llm_url}/chat/completions", json=body, headers=headers, timeout=30)


def reserved_nusd(env: LLMEnv, run_id: str, n: int) -> list[int]:
    spans = poll(lambda: len(s := [x for x in env.spans_of(run_id) if x.kind == "llm"]) >= n
                 and s)  # fmt: skip
    ordered = sorted(spans, key=lambda s: s.started_at)
    return [round(s.attributes["tether.reserved_usd"] * 1e9) for s in ordered]


def test_an_upstream_billing_more_than_the_hold_is_an_overshoot_event(ledger_env: LLMEnv) -> None:
    env, run_id = ledger_env, new_run_id()
    r = call(env, run_id, "[[padded]] hi", max_tokens=5)  # billed 1,000 prompt tokens
    assert r.status_code == 200, r.text
    [span] = env.wait_spans(run_id)
    held = round(span.attributes["tether.reserved_usd"] * 1e9)
    assert span.cost_nusd == 1000 * SMALL_IN_NUSD + 5 * 2000 > held
    assert round(span.attributes["tether.overshoot_usd"] * 1e9) == span.cost_nusd - held
    # the real cost is charged all the same
    # settles are written off the response path (and on Redis the database copy after it)
    assert poll(lambda: (c := env.counter(f"run:{run_id}")) and c.reserved_nusd == 0
                and c.spent_nusd == span.cost_nusd)  # fmt: skip
    q = select(audit_log).where(audit_log.c.action == "budget.overshoot",
                                audit_log.c.subject == run_id)  # fmt: skip
    with env.engine.connect() as conn:
        entries = poll(lambda: conn.execute(q).all())
    assert entries[0].data["overshoot_usd"] == span.attributes["tether.overshoot_usd"]
    hook = poll(lambda: [b for b in env.extra[1].received if b.get("run_id") == run_id])
    assert hook[0]["event"] == "budget.overshoot" and hook[0]["model"] == "mock-small"

    def overshoots() -> float:
        text = httpx.get(f"{env.server.url}/metrics", timeout=30,
                         headers={"authorization": f"Bearer {env.admin}"}).text  # fmt: skip
        line = next(x for x in text.splitlines()
                    if x.startswith("tether_budget_overshoots_total "))  # fmt: skip
        return float(line.split()[1])

    assert poll(lambda: overshoots() >= 1, timeout=20)


def test_tools_and_messages_add_the_providers_hidden_prompt_to_the_hold(
    ledger_env: LLMEnv,
) -> None:
    env, run_id = ledger_env, new_run_id()
    plain = {"model": "mock-small", "messages": [{"role": "user", "content": "x"}],
             "max_tokens": 10}  # fmt: skip
    with_tools = {**plain, "tools": TOOLS}
    headers = {"authorization": f"Bearer {env.keys['worst']}", "x-tether-run-id": run_id}
    for body in (plain, with_tools):
        r = httpx.post(f"{env.llm_url}/chat/completions", json=body, headers=headers, timeout=30)
        assert r.status_code == 200, r.text
    a, b = reserved_nusd(env, run_id, 2)
    body_growth = len(httpx.Request("POST", "/", json=with_tools).content) - len(
        httpx.Request("POST", "/", json=plain).content
    )
    hidden = TOOL_PROMPT["openai"] + 3 * TOOL_FRAMING_TOKENS
    assert b - a == (body_growth + hidden) * SMALL_IN_NUSD
    assert a >= (MESSAGE_FRAMING_TOKENS + 10) * SMALL_IN_NUSD


def test_a_per_model_margin_grows_the_hold(ledger_env: LLMEnv) -> None:
    """tether.yaml `budgets.margins: {fast: {input_tokens: 2000, percent: 50}}`."""
    env, run_id = ledger_env, new_run_id()
    headers = {"authorization": f"Bearer {env.keys['worst']}", "x-tether-run-id": run_id}
    for model in ("mock-small", "fast"):  # `fast` is an alias of mock-small
        body = {"model": model, "messages": [{"role": "user", "content": "x"}], "max_tokens": 10}
        r = httpx.post(f"{env.llm_url}/chat/completions", json=body, headers=headers, timeout=30)
        assert r.status_code == 200, r.text
    plain, margined = reserved_nusd(env, run_id, 2)
    body_growth = len("fast") - len("mock-small")  # the request names the alias
    base = plain + body_growth * SMALL_IN_NUSD
    assert margined == -(-(base + 2000 * SMALL_IN_NUSD) * 3 // 2)


def test_a_402_says_which_max_tokens_fits_and_that_one_is_admitted(ledger_env: LLMEnv) -> None:
    env, run_id = ledger_env, new_run_id()
    # $0.05 cap; 30,000 output tokens at $2e-6 = $0.06 is too much
    refused = call(env, run_id, "hello", max_tokens=30_000)
    assert refused.status_code == 402
    err = refused.json()["error"]
    fit = err["max_tokens_that_fit"]
    assert 20_000 < fit < 25_000 and f"max_tokens of at most {fit} would fit" in err["message"]
    assert call(env, run_id, "hello", max_tokens=fit + 1).status_code == 402
    assert call(env, run_id, "hello", max_tokens=fit).status_code == 200


def test_an_injected_max_tokens_is_lowered_to_what_fits(ledger_env: LLMEnv) -> None:
    """No max_tokens from the client: tether injects default_max_tokens (4,096), lowered to what
    the run has left instead of refusing a call that could still be answered; a max_tokens the
    client chose is never changed."""
    env, run_id = ledger_env, new_run_id()
    # policy `tiny`: $0.005 a run; 4,096 output tokens at $2e-6 would need $0.0082
    chosen = call(env, run_id, "hello", agent="tiny", max_tokens=4096)
    assert chosen.status_code == 402
    fit = chosen.json()["error"]["max_tokens_that_fit"]
    assert 2000 < fit < 2500
    r = call(env, run_id, "hello", agent="tiny")
    assert r.status_code == 200, r.text
    [span] = [s for s in env.wait_spans(run_id, 2) if s.kind == "llm"]
    injected = span.attributes["tether.injected_max_tokens"]
    # the same, give or take the bytes of `"max_tokens": 4096` this body does not carry
    assert fit <= injected <= fit + 10
    seen = [q for q in env.mock.requests if q["body"].get("max_tokens") == injected]
    assert seen, "the upstream did not receive the lowered max_tokens"
