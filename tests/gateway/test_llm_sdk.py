"""The official openai and anthropic SDKs, unchanged, against a running tether whose providers
are tether's mock LLM: streaming, not streaming, tool calls, embeddings, spans, attribution."""

from __future__ import annotations

import json

import anthropic
import httpx
import openai
import pytest

from tests.gateway.llm_env import UPSTREAM_KEY, LLMEnv, new_run_id, poll


@pytest.fixture
def env(llm_env: LLMEnv) -> LLMEnv:
    return llm_env


def oai(env: LLMEnv, agent: str = "sdk-agent", **headers: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=env.llm_url, api_key=env.keys[agent], max_retries=0,
                         default_headers=headers or None)  # fmt: skip


def test_chat_not_streaming_is_recorded_as_an_llm_span_with_cost(env: LLMEnv) -> None:
    run_id = new_run_id()
    client = oai(env, **{"X-Tether-Run-Id": run_id, "X-Tether-Task-Id": "task-7",
                         "X-Tether-User": "alice"})  # fmt: skip
    reply = client.chat.completions.create(
        model="fast", messages=[{"role": "user", "content": "summarise the quarterly report"}]
    )
    assert reply.choices[0].message.content == "mock reply: summarise the quarterly report"
    assert reply.usage is not None and reply.usage.prompt_tokens == 4
    [span] = env.wait_spans(run_id)
    assert span.kind == "llm" and span.status == "ok"
    assert span.model == "fast" and span.model_served == "mock-small"
    assert (span.input_tokens, span.output_tokens) == (4, reply.usage.completion_tokens)
    # mock-small: $1e-6 in, $2e-6 out per token, stored in nano-dollars
    assert span.cost_nusd == 4 * 1000 + reply.usage.completion_tokens * 2000
    assert span.latency_ms > 0 and span.ttft_ms is not None
    assert "summarise the quarterly report" in span.input
    run = poll(lambda: (r := env.run(run_id)) and r.llm_calls == 1 and r)
    assert (run.agent, run.task_id, run.user) == ("sdk-agent", "task-7", "alice")
    assert run.cost_nusd == span.cost_nusd


def test_chat_streaming_relays_chunks_and_counts_usage(env: LLMEnv) -> None:
    run_id = new_run_id()
    client = oai(env, **{"X-Tether-Run-Id": run_id})
    stream = client.chat.completions.create(
        model="mock-small", stream=True,
        messages=[{"role": "user", "content": "stream five words please"}],
    )  # fmt: skip
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "mock reply: stream five words please"
    # tether asked the upstream for usage but did not pass the usage-only chunk on
    assert all(c.choices for c in chunks)
    [span] = env.wait_spans(run_id)
    assert span.output_tokens == 6 and span.input_tokens == 4
    assert span.output == text
    assert span.attributes["tether.stream"] is True
    assert span.attributes["tether.usage_reported"] is True


def test_chat_stream_with_include_usage_keeps_the_usage_chunk(env: LLMEnv) -> None:
    stream = oai(env).chat.completions.create(
        model="mock-small", stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "count me"}],
    )  # fmt: skip
    usage = [c.usage for c in stream if c.usage]
    assert usage and usage[0].prompt_tokens == 2


def test_tool_calls_streaming_and_not(env: LLMEnv) -> None:
    client = oai(env)
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}]  # fmt: skip
    messages = [{"role": "user", "content": "[[tool]] weather in Paris?"}]
    reply = client.chat.completions.create(model="mock-small", messages=messages, tools=tools)
    call = reply.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    assert reply.choices[0].finish_reason == "tool_calls"
    args = ""
    with client.chat.completions.stream(model="mock-small", messages=messages,
                                        tools=tools) as stream:  # fmt: skip
        for event in stream:
            if event.type == "tool_calls.function.arguments.delta":
                args += event.arguments_delta
        final = stream.get_final_completion()
    assert json.loads(args) == {"city": "Paris"}
    assert final.choices[0].message.tool_calls[0].function.name == "get_weather"


def test_anthropic_messages_streaming_not_streaming_and_tool_use(env: LLMEnv) -> None:
    run_id = new_run_id()
    client = anthropic.Anthropic(
        base_url=env.anthropic_url,
        api_key=env.keys["sdk-agent"],
        max_retries=0,
        default_headers={"X-Tether-Run-Id": run_id},
    )
    msg = client.messages.create(
        model="mock-large", max_tokens=100, messages=[{"role": "user", "content": "hello claude"}]
    )
    assert msg.content[0].text == "mock reply: hello claude"
    assert msg.usage.input_tokens == 2
    with client.messages.stream(
        model="mock-large", max_tokens=100, messages=[{"role": "user", "content": "hello again"}]
    ) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == "mock reply: hello again"
    assert final.usage.output_tokens == 4
    tool = client.messages.create(
        model="mock-large", max_tokens=100,
        messages=[{"role": "user", "content": "[[tool]] weather?"}],
        tools=[{"name": "get_weather", "input_schema": {"type": "object"}}],
    )  # fmt: skip
    assert tool.stop_reason == "tool_use"
    assert tool.content[0].name == "get_weather" and tool.content[0].input == {"city": "Paris"}
    spans = env.wait_spans(run_id, 3)
    assert {s.model_served for s in spans} == {"mock-large"}
    streamed = next(s for s in spans if s.attributes["tether.stream"])
    # mock-large: $1e-5 in, $3e-5 out per token
    assert streamed.cost_nusd == 2 * 10_000 + 4 * 30_000
    assert streamed.attributes["gen_ai.system"] == "anthropic"


def test_embeddings_and_models(env: LLMEnv) -> None:
    client = oai(env)
    emb = client.embeddings.create(model="mock-small", input=["one two", "three"])
    assert len(emb.data) == 2 and len(emb.data[0].embedding) == 8
    assert emb.usage.prompt_tokens == 3
    ids = [m.id for m in client.models.list()]
    assert {"mock-small", "mock-large", "fast"} <= set(ids)


def test_provider_key_goes_upstream_and_the_tether_key_does_not(env: LLMEnv) -> None:
    oai(env).chat.completions.create(
        model="mock-small", messages=[{"role": "user", "content": "key check"}]
    )
    seen = [r for r in env.mock.requests if r["body"].get("messages", [{}])[0].get("content")
            == "key check"]  # fmt: skip
    assert seen[-1]["headers"]["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert env.keys["sdk-agent"] not in json.dumps(env.mock.requests)


def test_no_run_header_makes_a_run_per_request(env: LLMEnv) -> None:
    raw = oai(env).chat.completions.with_raw_response.create(
        model="mock-small", messages=[{"role": "user", "content": "on my own"}]
    )
    run_id = raw.headers["x-tether-run-id"]
    run = poll(lambda: (r := env.run(run_id)) and r.status == "succeeded" and r)
    assert run.agent == "sdk-agent" and run.llm_calls == 1 and run.source == "gateway"


def test_traceparent_joins_the_callers_trace(env: LLMEnv) -> None:
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    oai(env, traceparent=f"00-{trace}-00f067aa0ba902b7-01").chat.completions.create(
        model="mock-small", messages=[{"role": "user", "content": "inside a trace"}]
    )
    [span] = env.wait_spans(f"run_{trace}")
    assert span.trace_id == trace and span.parent_id == "00f067aa0ba902b7"


def test_bad_requests_get_openai_shaped_4xx(env: LLMEnv) -> None:
    url = env.llm_url + "/chat/completions"
    auth = {"authorization": f"Bearer {env.keys['sdk-agent']}"}
    msgs = [{"role": "user", "content": "x"}]
    cases = [
        ({}, {"model": "mock-small", "messages": msgs}, 401, "unauthenticated"),
        ({"authorization": f"Bearer {env.keys['ingest-only']}"},
         {"model": "mock-small", "messages": msgs}, 403, "permission_denied"),
        ({**auth, "x-tether-run-id": "bad id!"}, {"model": "mock-small", "messages": msgs}, 400,
         "invalid_request"),
        (auth, {"model": "mock-small"}, 400, "invalid_request"),
        (auth, {"model": "no-such-model", "messages": msgs}, 404, "not_found"),
        (auth, {"model": "mock-small", "messages": msgs, "max_tokens": -1}, 400,
         "invalid_request"),
    ]  # fmt: skip
    for headers, body, status, type_ in cases:
        r = httpx.post(url, headers=headers, json=body)
        assert r.status_code == status, r.text
        err = r.json()["error"]
        assert err["type"] == type_ and err["message"] and "param" in err
    r = httpx.post(url, headers=auth, content=b"{not json")
    assert r.status_code == 400
    r = httpx.post(env.anthropic_url + "/v1/messages", json={"model": "mock-small"},
                   headers={"x-api-key": env.keys["sdk-agent"]})  # fmt: skip
    assert r.status_code == 400 and r.json()["type"] == "error"


def test_policy_model_allow_list_is_enforced(env: LLMEnv) -> None:
    with pytest.raises(openai.PermissionDeniedError) as err:
        oai(env, "picky").chat.completions.create(
            model="mock-small", messages=[{"role": "user", "content": "hi"}]
        )
    assert "does not allow model 'mock-small'" in err.value.message
    ok = oai(env, "picky").chat.completions.create(
        model="mock-large", messages=[{"role": "user", "content": "hi"}]
    )
    assert ok.choices[0].message.content


def test_anthropic_protocol_headers_pass_and_keys_do_not(env: LLMEnv) -> None:
    client = anthropic.Anthropic(
        base_url=env.anthropic_url,
        api_key=env.keys["sdk-agent"],
        max_retries=0,
        default_headers={"anthropic-beta": "test-beta-1"},
    )
    client.messages.create(
        model="mock-small",
        max_tokens=10,
        messages=[{"role": "user", "content": "beta header check"}],
    )
    [seen] = [r for r in env.mock.requests if r["path"] == "/v1/messages"
              and "beta header check" in json.dumps(r["body"])]  # fmt: skip
    assert seen["headers"]["anthropic-beta"] == "test-beta-1"
    assert [m.id for m in client.models.list()] == ["mock-small", "mock-large"]
    assert seen["headers"]["x-api-key"] == UPSTREAM_KEY


def test_a_run_cannot_be_used_by_another_agents_key(env: LLMEnv) -> None:
    run_id = new_run_id()
    msgs = [{"role": "user", "content": "mine"}]
    oai(env, **{"X-Tether-Run-Id": run_id}).chat.completions.create(model="mock-small",
                                                                   messages=msgs)  # fmt: skip
    with pytest.raises(openai.PermissionDeniedError) as err:
        oai(env, "capped", **{"X-Tether-Run-Id": run_id}).chat.completions.create(
            model="mock-small", messages=msgs
        )
    assert err.value.body["code"] == "run_of_another_agent"  # type: ignore[index]
