"""Manual LLM recording: tether.record_llm and tether.llm_span."""

from __future__ import annotations

import pytest

import tether
from tests.sdk.conftest import FakeTether
from tether.testing import capture


def test_record_llm_sets_model_tokens_io_and_latency() -> None:
    with capture() as cap, tether.run(agent="research") as run:
        tether.record_llm(
            model="gpt-4o-mini",
            input=[{"role": "user", "content": "hi"}],
            output="hello",
            input_tokens=812,
            output_tokens=64,
            latency_ms=930,
            response_model="gpt-4o-mini-2024-07-18",
            provider="openai",
        )
    (call,) = cap.llm_calls
    assert call.run_id == run.id
    assert call.model == "gpt-4o-mini-2024-07-18"
    assert call.attributes["gen_ai.request.model"] == "gpt-4o-mini"
    assert call.attributes["gen_ai.system"] == "openai"
    assert (call.input_tokens, call.output_tokens) == (812, 64)
    assert call.input == [{"role": "user", "content": "hi"}]
    assert call.output == "hello"
    assert call.latency_ms == pytest.approx(930, abs=1)
    assert call.status == "ok"


def test_record_llm_error() -> None:
    with capture() as cap, tether.run(agent="research"):
        tether.record_llm(model="gpt-4o", input="x", error="upstream 500")
    assert cap.llm_calls[0].status == "error"
    assert cap.llm_calls[0].error == "upstream 500"


def test_llm_span_context_manager() -> None:
    with capture() as cap, tether.run(agent="research"):
        with tether.llm_span(model="claude-3-5-sonnet", input="plan", provider="anthropic") as c:
            c.set_output("the plan", input_tokens=10, output_tokens=20)
        with pytest.raises(TimeoutError), tether.llm_span(model="gpt-4o", input="again"):
            raise TimeoutError("provider slow")
    ok, failed = cap.llm_calls
    assert (ok.output, ok.input_tokens, ok.output_tokens) == ("the plan", 10, 20)
    assert ok.model == "claude-3-5-sonnet"
    assert failed.status == "error" and failed.error == "TimeoutError: provider slow"
    assert cap.run().status == "succeeded"


def test_llm_span_reaches_tether_with_genai_attributes(sdk: FakeTether) -> None:
    with tether.run(agent="research"):
        tether.record_llm(
            model="gpt-4o-mini", input="q", output="a", input_tokens=5, output_tokens=7
        )
    tether.flush()
    attrs = sdk.span("chat gpt-4o-mini")["attributes"]
    assert attrs["openinference.span.kind"] == "LLM"
    assert attrs["gen_ai.usage.input_tokens"] == 5
    assert attrs["gen_ai.usage.output_tokens"] == 7
