"""Kill switch through the gateway: a killed run's stream ends at once with an error event and is
charged for what was streamed; later calls are refused; max_duration_s kills; a client that
leaves mid-stream is charged for what it got."""

from __future__ import annotations

import time

import anthropic
import httpx
import openai
import pytest

from tests.gateway.llm_env import LLMEnv, new_run_id, poll

LONG = [{"role": "user", "content": "[[long]] tell me everything"}]


def client(env: LLMEnv, agent: str, run_id: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=env.llm_url, api_key=env.keys[agent], max_retries=0,
                         default_headers={"X-Tether-Run-Id": run_id})  # fmt: skip


def test_kill_ends_an_openai_stream_and_charges_what_was_streamed(llm_env: LLMEnv) -> None:
    run_id = new_run_id()
    stream = client(llm_env, "capped", run_id).chat.completions.create(
        model="mock-small", messages=LONG, stream=True, max_tokens=1000
    )
    it = iter(stream)
    got = 0
    for chunk in it:
        if chunk.choices and chunk.choices[0].delta.content:
            got += 1
        if got == 10:
            break
    t0 = time.monotonic()
    r = llm_env.kill(run_id, "runaway loop")
    assert r.status_code == 200 and r.json()["status"] == "killed"
    with pytest.raises(openai.APIError) as err:
        for chunk in it:
            got += bool(chunk.choices and chunk.choices[0].delta.content)
    ended = time.monotonic() - t0
    # the rest of the stream would take ~3.9 s (390 chunks at 10 ms); a kill in this process
    # fires at once, so ending well before that proves the cut without a tight wall-clock bound
    # (the latency target is bench/budget_stress.py's)
    assert ended < 2.0, f"stream ended {ended:.3f}s after the kill"
    assert "killed" in str(err.value.message)
    assert got < 400
    [span] = llm_env.wait_spans(run_id)
    assert span.attributes["tether.outcome"] == "killed" and span.status == "error"
    assert got <= span.output_tokens <= got + 2
    assert span.cost_nusd == span.input_tokens * 1000 + span.output_tokens * 2000
    counter = poll(lambda: (c := llm_env.counter(f"run:{run_id}")) and c.reserved_nusd == 0 and c)
    assert counter.spent_nusd == span.cost_nusd
    run = llm_env.run(run_id)
    assert run.status == "killed" and run.kill_reason == "runaway loop"
    with pytest.raises(openai.ConflictError) as later:
        client(llm_env, "capped", run_id).chat.completions.create(
            model="mock-small", messages=[{"role": "user", "content": "one more"}]
        )
    assert later.value.body["type"] == "run_killed"  # type: ignore[index]


def test_kill_ends_an_anthropic_stream(llm_env: LLMEnv) -> None:
    run_id = new_run_id()
    c = anthropic.Anthropic(
        base_url=llm_env.anthropic_url,
        api_key=llm_env.keys["sdk-agent"],
        max_retries=0,
        default_headers={"X-Tether-Run-Id": run_id},
    )
    pieces = 0
    with (
        pytest.raises(anthropic.APIError) as err,
        c.messages.stream(model="mock-small", max_tokens=1000, messages=LONG) as s,
    ):
        for _ in s.text_stream:
            pieces += 1
            if pieces == 5:
                assert llm_env.kill(run_id).status_code == 200
    assert "killed" in str(err.value)
    [span] = llm_env.wait_spans(run_id)
    assert span.attributes["tether.outcome"] == "killed"
    assert 5 <= span.output_tokens < 400 and span.input_tokens > 0


def test_kill_of_unknown_and_of_already_killed_runs(llm_env: LLMEnv) -> None:
    assert llm_env.kill("run_never_seen").status_code == 404
    run_id = new_run_id()
    client(llm_env, "sdk-agent", run_id).chat.completions.create(
        model="mock-small", messages=[{"role": "user", "content": "hi"}]
    )
    assert llm_env.run(run_id).status == "running"  # a named run goes on until it is ended
    assert llm_env.kill(run_id).status_code == 200
    again = llm_env.kill(run_id)
    assert again.status_code == 200 and again.json()["status"] == "killed"  # idempotent


def test_a_fresh_run_that_finished_can_still_be_killed(llm_env: LLMEnv) -> None:
    """A run of its own ends with its one call; a kill still closes it for good (ending a run
    must never be a way around a kill), and a call naming its id is refused."""
    raw = openai.OpenAI(base_url=llm_env.llm_url, api_key=llm_env.keys["sdk-agent"],
                        max_retries=0).chat.completions.with_raw_response.create(
        model="mock-small", messages=[{"role": "user", "content": "hi"}])  # fmt: skip
    run_id = raw.headers["x-tether-run-id"]
    poll(lambda: (r := llm_env.run(run_id)) and r.status == "succeeded")
    r = llm_env.kill(run_id)
    assert r.status_code == 200 and r.json()["status"] == "killed"
    with pytest.raises(openai.ConflictError) as later:
        client(llm_env, "sdk-agent", run_id).chat.completions.create(
            model="mock-small", messages=[{"role": "user", "content": "again"}]
        )
    assert later.value.body["type"] == "run_killed"  # type: ignore[index]


def test_max_duration_kills_the_run_mid_stream(llm_env: LLMEnv) -> None:
    run_id = new_run_id()
    t0 = time.monotonic()
    with pytest.raises(openai.APIError):
        for _ in client(llm_env, "brief", run_id).chat.completions.create(
            model="mock-small", messages=LONG, stream=True
        ):
            pass
    assert time.monotonic() - t0 < 3.0  # 1 s allowed; the full stream would take 4 s
    run = poll(lambda: (r := llm_env.run(run_id)) and r.status == "killed" and r)
    assert run.kill_reason == "max_duration_s exceeded"
    with pytest.raises(openai.ConflictError):
        client(llm_env, "brief", run_id).chat.completions.create(
            model="mock-small", messages=[{"role": "user", "content": "still there?"}]
        )


def test_client_leaving_mid_stream_is_charged_for_what_it_got(llm_env: LLMEnv) -> None:
    run_id = new_run_id()
    body = {"model": "mock-small", "messages": LONG, "stream": True}
    headers = {"authorization": f"Bearer {llm_env.keys['capped']}", "x-tether-run-id": run_id}
    with httpx.stream("POST", llm_env.llm_url + "/chat/completions", json=body,
                      headers=headers) as r:  # fmt: skip
        events = 0
        for line in r.iter_lines():
            events += line.startswith("data:")
            if events == 8:
                break
    [span] = llm_env.wait_spans(run_id)
    assert span.attributes["tether.outcome"] == "client_disconnected"
    assert 7 <= span.output_tokens < 400
    counter = poll(lambda: (c := llm_env.counter(f"run:{run_id}")) and c.reserved_nusd == 0 and c)
    assert counter.spent_nusd == span.cost_nusd > 0
