"""Upstream faults through the gateway: 5xx, timeout, refused connection, malformed replies and a
dropped stream give the agent a clear error, a failed span, and release the reservation;
safe retries and fallbacks recover."""

from __future__ import annotations

import openai
import pytest

from tests.gateway.llm_env import LLMEnv, new_run_id, poll


def client(env: LLMEnv, run_id: str, agent: str = "capped") -> openai.OpenAI:
    return openai.OpenAI(base_url=env.llm_url, api_key=env.keys[agent], max_retries=0,
                         default_headers={"X-Tether-Run-Id": run_id})  # fmt: skip


def ask(env: LLMEnv, run_id: str, model: str, text: str) -> object:
    return client(env, run_id).chat.completions.create(
        model=model, messages=[{"role": "user", "content": text}]
    )


def assert_failed_and_released(env: LLMEnv, run_id: str, fragment: str) -> None:
    [span] = env.wait_spans(run_id)
    assert span.status == "error" and fragment in span.error
    counter = poll(lambda: (c := env.counter(f"run:{run_id}")) and c.reserved_nusd == 0 and c)
    assert counter.spent_nusd == 0 and counter.calls == 0


@pytest.mark.parametrize(
    ("model", "text", "status", "code", "fragment"),
    [
        ("mock-small", "[[500]] boom", 502, "upstream_500", "HTTP 500"),
        ("slow-model", "[[timeout]] wait", 504, "upstream_timeout", "timed out"),
        ("gone-model", "anyone there?", 502, "upstream_unreachable", "cannot connect"),
        ("mock-small", "[[malformed]] garbage", 502, "upstream_malformed", "malformed"),
    ],
)
def test_upstream_faults_are_clear_errors_and_release_the_hold(
    llm_env: LLMEnv, model: str, text: str, status: int, code: str, fragment: str
) -> None:
    run_id = new_run_id()
    with pytest.raises(openai.APIStatusError) as err:
        ask(llm_env, run_id, model, text)
    assert err.value.status_code == status
    body = err.value.body
    assert isinstance(body, dict) and body["code"] == code and fragment in body["message"]
    assert_failed_and_released(llm_env, run_id, fragment)


def test_stream_dropped_by_the_upstream_is_charged_for_the_chunks_relayed(
    llm_env: LLMEnv,
) -> None:
    run_id = new_run_id()
    got = ""
    with pytest.raises(openai.APIError) as err:
        for chunk in client(llm_env, run_id).chat.completions.create(
            model="mock-small", stream=True,
            messages=[{"role": "user", "content": "[[cut]] go"}],
        ):  # fmt: skip
            got += (chunk.choices[0].delta.content or "") if chunk.choices else ""
    assert "broke off" in err.value.message
    assert got == "w0 w1 w2 w3"
    [span] = llm_env.wait_spans(run_id)
    assert span.status == "error" and span.attributes["tether.outcome"] == "upstream_error"
    assert span.output_tokens == 4 and span.attributes["tether.usage_reported"] is False
    counter = poll(lambda: (c := llm_env.counter(f"run:{run_id}")) and c.reserved_nusd == 0 and c)
    assert counter.spent_nusd == span.cost_nusd > 0


def test_malformed_stream_ends_with_an_error_event(llm_env: LLMEnv) -> None:
    with pytest.raises(openai.APIError) as err:
        list(client(llm_env, new_run_id()).chat.completions.create(
            model="mock-small", stream=True,
            messages=[{"role": "user", "content": "[[malformed]] stream"}]))  # fmt: skip
    assert "malformed" in err.value.message


def test_503_is_retried_once(llm_env: LLMEnv) -> None:
    run_id = new_run_id()
    reply = ask(llm_env, run_id, "flaky-model", "hello")
    assert reply.choices[0].message.content == "recovered after a retry"  # type: ignore[attr-defined]
    [span] = llm_env.wait_spans(run_id)
    assert span.status == "ok" and span.attributes["tether.attempts"] == 2


def test_refused_connection_falls_back_to_the_next_model(llm_env: LLMEnv) -> None:
    run_id = new_run_id()
    reply = ask(llm_env, run_id, "dead-model", "fallback please")
    assert reply.model == "mock-small"  # type: ignore[attr-defined]
    [span] = llm_env.wait_spans(run_id)
    assert span.attributes["tether.provider"] == "mock"
    assert span.model == "dead-model" and span.model_served == "mock-small"
    assert span.attributes["tether.attempts"] == 3  # two tries on the dead one, then the fallback
