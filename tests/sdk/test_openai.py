"""instrument_openai: LLM spans for sync/async, streamed/not, and the run's headers on the wire."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

import tether
from tether.sdk import _config
from tether.testing import capture

COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-4o-mini-2024-07-18",
    "choices": [
        {
            "index": 0,
            "finish_reason": "stop",
            "message": {"role": "assistant", "content": "It is 4."},
        }
    ],
    "usage": {"prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15},
}


def _chunk(content: str | None, usage: dict[str, int] | None = None) -> str:
    choices = [] if content is None else [{"index": 0, "delta": {"content": content}}]
    body = {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": choices,
        "usage": usage,
    }
    return f"data: {json.dumps(body)}\n\n"


STREAM = (
    _chunk("It ")
    + _chunk("is 4.")
    + _chunk(None, {"prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15})
    + "data: [DONE]\n\n"
)


class Upstream:
    """An OpenAI-compatible endpoint as an httpx MockTransport; remembers request headers."""

    def __init__(self, status: int = 200) -> None:
        self.headers: list[httpx.Headers] = []
        self.status = status

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.headers.append(request.headers)
        if self.status != 200:
            return httpx.Response(self.status, json={"error": {"message": "boom", "type": "x"}})
        if json.loads(request.content).get("stream"):
            return httpx.Response(200, text=STREAM, headers={"content-type": "text/event-stream"})
        return httpx.Response(200, json=COMPLETION)


def _client(upstream: Upstream, base_url: str = "http://llm.test/v1") -> openai.OpenAI:
    return openai.OpenAI(
        api_key="sk-test",
        base_url=base_url,
        max_retries=0,
        http_client=httpx.Client(transport=httpx.MockTransport(upstream)),
    )


def _aclient(upstream: Upstream) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        api_key="sk-test",
        base_url="http://llm.test/v1",
        max_retries=0,
        http_client=httpx.AsyncClient(transport=httpx.MockTransport(upstream)),
    )


MESSAGES: list[Any] = [{"role": "user", "content": "2+2?"}]


def test_sync_call_is_recorded_and_carries_the_run_headers() -> None:
    upstream = Upstream()
    client = tether.instrument_openai(_client(upstream))
    assert tether.instrument_openai(client) is client  # idempotent
    with capture() as cap, tether.run(agent="math", task_id="T-9", user="ann") as run:
        reply = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert reply.choices[0].message.content == "It is 4."
    (call,) = cap.llm_calls
    assert call.model == "gpt-4o-mini-2024-07-18"
    assert call.attributes["gen_ai.request.model"] == "gpt-4o-mini"
    assert (call.input_tokens, call.output_tokens, call.output) == (11, 4, "It is 4.")
    assert call.input == MESSAGES
    assert call.run_id == run.id
    sent = upstream.headers[0]
    assert sent["x-tether-run-id"] == run.id
    assert sent["x-tether-task-id"] == "T-9"
    assert sent["x-tether-user"] == "ann"
    assert sent["traceparent"].split("-")[1] == run.trace_id
    assert sent["traceparent"].split("-")[2] == call.span_id


def test_sync_stream_is_recorded_when_consumed() -> None:
    client = tether.instrument_openai(_client(Upstream()))
    with capture() as cap, tether.run(agent="math"):
        stream = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "It is 4."
    (call,) = cap.llm_calls
    assert (call.output, call.input_tokens, call.output_tokens) == ("It is 4.", 11, 4)


async def test_async_call_and_stream() -> None:
    client = tether.instrument_openai(_aclient(Upstream()))
    with capture() as cap:
        async with tether.run(agent="math"):
            reply = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
            stream = await client.chat.completions.create(
                model="gpt-4o-mini", messages=MESSAGES, stream=True
            )
            parts = [c.choices[0].delta.content async for c in stream if c.choices]
    assert reply.usage is not None and reply.usage.total_tokens == 15
    assert "".join(p or "" for p in parts) == "It is 4."
    assert [c.output for c in cap.llm_calls] == ["It is 4.", "It is 4."]


def test_provider_error_marks_the_span_and_propagates() -> None:
    client = tether.instrument_openai(_client(Upstream(status=400)))
    with capture() as cap, tether.run(agent="math"), pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert cap.llm_calls[0].status == "error"
    assert "BadRequestError" in (cap.llm_calls[0].error or "")


def test_calls_through_tethers_gateway_only_get_headers() -> None:
    with capture() as cap:
        upstream = Upstream()
        gateway = _config.active().url + "/llm/v1"
        client = tether.instrument_openai(_client(upstream, base_url=gateway))
        with tether.run(agent="math") as run:
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert cap.llm_calls == []  # the gateway records the call itself: no double counting
    assert upstream.headers[0]["x-tether-run-id"] == run.id
