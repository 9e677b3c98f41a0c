from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.core.errors import BadRequestError
from tether.core.money import usd_to_nusd
from tether.core.pricing import load_price_table
from tether.core.records import run_id_for_trace
from tether.core.semconv import (
    STATUS_ERROR,
    STATUS_OK,
    MapOptions,
    OtlpSpan,
    SpanEvent,
    map_span,
    map_spans,
)
from tether.core.semtext import MAX_TEXT_BYTES, REDACTED

OPTS = MapOptions(load_price_table({}), ("api_key", "authorization", "password", "secret", "token"))
TRACE = "0af7651916cd43dd8448eb211c80319c"
T0_NS = 1_764_072_000_000_000_000  # 2025-11-25T12:00:00Z


def span(attrs: dict[str, Any], *, parent: str | None = "b" * 16, res: dict | None = None,
         **kw: Any) -> OtlpSpan:  # fmt: skip
    return OtlpSpan(trace_id=TRACE, span_id="c" * 16, name=kw.pop("name", "op"), start_ns=T0_NS,
                    end_ns=T0_NS + 1_500_000_000, parent_id=parent, attributes=attrs,
                    resource=res or {}, **kw)  # fmt: skip


def nusd(usd: str) -> int:
    return usd_to_nusd(Decimal(usd))


# (convention, attributes, expected fields)
CASES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("genai chat", {
        "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
        "gen_ai.response.model": "gpt-4o-2024-08-06", "gen_ai.usage.input_tokens": 1000,
        "gen_ai.usage.output_tokens": 100, "gen_ai.usage.cache_read_input_tokens": 400,
        "gen_ai.input.messages": '[{"role":"user","content":"hi"}]',
        "gen_ai.output.messages": '[{"role":"assistant","content":"hello"}]',
    }, {"kind": "llm", "model": "gpt-4o", "model_served": "gpt-4o-2024-08-06",
        "input_tokens": 1000, "output_tokens": 100, "cached_tokens": 400,
        "cost_nusd": nusd("0.003"), "cost_unknown": False,
        "input": '[{"role":"user","content":"hi"}]'}),
    ("genai legacy tokens", {
        "gen_ai.request.model": "gpt-4o-mini", "gen_ai.usage.prompt_tokens": 10,
        "gen_ai.usage.completion_tokens": 5, "gen_ai.prompt.0.role": "user",
        "gen_ai.prompt.0.content": "q", "gen_ai.completion.0.content": "a",
    }, {"kind": "llm", "input_tokens": 10, "output_tokens": 5,
        "cost_nusd": nusd("0.0000045"), "input": '[{"role":"user","content":"q"}]',
        "output": '[{"content":"a"}]'}),
    ("genai embeddings", {
        "gen_ai.operation.name": "embeddings", "gen_ai.request.model": "text-embedding-3-small",
        "gen_ai.usage.input_tokens": 1000,
    }, {"kind": "embedding", "cost_nusd": 20000, "output_tokens": None}),
    ("genai tool", {
        "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "get_weather",
        "gen_ai.tool.call.arguments": '{"city":"Paris"}', "gen_ai.tool.call.result": "sunny",
    }, {"kind": "tool", "name": "get_weather", "input": '{"city":"Paris"}', "output": "sunny",
        "cost_nusd": None, "cost_unknown": False}),
    ("genai agent", {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "triage"},
     {"kind": "agent", "agent": "triage"}),
    ("openinference llm", {
        "openinference.span.kind": "LLM", "llm.model_name": "claude-sonnet-4-5",
        "llm.token_count.prompt": 2000, "llm.token_count.completion": 1000,
        "llm.token_count.prompt_details.cache_read": 1000, "input.value": "question",
        "output.value": "answer", "session.id": "T-9", "user.id": "bob",
    }, {"kind": "llm", "model": "claude-sonnet-4-5", "cached_tokens": 1000,
        "cost_nusd": nusd("0.0033") + nusd("0.015"), "input": "question", "output": "answer",
        "task_id": "T-9", "user": "bob"}),
    ("openinference total only", {
        "openinference.span.kind": "LLM", "llm.model_name": "mock-small",
        "llm.token_count.total": 30, "llm.token_count.completion": 10,
    }, {"input_tokens": 20, "cost_nusd": 40_000}),
    ("openinference tool", {
        "openinference.span.kind": "TOOL", "tool.name": "search",
        "tool.parameters": '{"q": "x"}',
    }, {"kind": "tool", "name": "search", "input": '{"q": "x"}'}),
    ("openinference kinds", {"openinference.span.kind": "RETRIEVER"}, {"kind": "retrieval"}),
    ("openinference chain", {"openinference.span.kind": "chain"}, {"kind": "chain"}),
    ("openinference messages", {
        "openinference.span.kind": "LLM", "llm.input_messages.0.message.role": "system",
        "llm.input_messages.0.message.content": "be nice",
        "llm.input_messages.1.message.role": "user", "llm.input_messages.1.message.content": "hi",
    }, {"input": '[{"role":"system","content":"be nice"},{"role":"user","content":"hi"}]',
        "cost_unknown": True, "cost_nusd": None}),
    ("langfuse generation", {
        "langfuse.observation.type": "generation", "langfuse.observation.model.name": "gpt-4o",
        "langfuse.observation.usage_details": json.dumps(
            {"input": 600, "input_cached_tokens": 400, "output": 100}),
        "langfuse.observation.input": "in", "langfuse.observation.output": "out",
        "langfuse.user.id": "carol", "langfuse.session.id": "S-1",
        "langfuse.trace.name": "lf-agent",
    }, {"kind": "llm", "input_tokens": 1000, "cached_tokens": 400, "output_tokens": 100,
        "cost_nusd": nusd("0.003"), "user": "carol", "task_id": "S-1", "agent": "lf-agent",
        "input": "in", "output": "out"}),
    ("langfuse metadata", {
        "langfuse.observation.type": "span", "langfuse.trace.metadata.agent": "meta-agent",
        "langfuse.trace.metadata.version": "9",
    }, {"kind": "other", "agent": "meta-agent", "version": "9"}),
    ("explicit cost wins", {
        "gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 1000,
        "gen_ai.usage.output_tokens": 100, "llm.cost.total": 0.5,
    }, {"cost_nusd": 500_000_000, "cost_unknown": False}),
    ("langfuse cost details", {
        "langfuse.observation.type": "generation",
        "langfuse.observation.cost_details": '{"total": 0.25}',
    }, {"cost_nusd": 250_000_000}),
    ("unknown model", {
        "gen_ai.request.model": "my-private-llm", "gen_ai.usage.input_tokens": 5,
    }, {"kind": "llm", "cost_nusd": None, "cost_unknown": True, "input_tokens": 5}),
    ("tether attribution wins", {
        "tether.agent": "billing", "tether.agent_version": "v2", "tether.task_id": "T-1",
        "tether.user": "alice", "gen_ai.agent.name": "other", "user.id": "bob",
        "tether.span.kind": "approval",
    }, {"agent": "billing", "version": "v2", "task_id": "T-1", "user": "alice",
        "kind": "approval"}),
]  # fmt: skip


@pytest.mark.parametrize(("convention", "attrs", "expected"), CASES, ids=[c[0] for c in CASES])
def test_conventions(convention: str, attrs: dict, expected: dict) -> None:
    rec = map_span(span(attrs), OPTS)
    got = {**rec.__dict__, **rec.attribution.__dict__}
    for key, value in expected.items():
        assert got[key] == value, (convention, key)


def test_resource_attribution_and_root() -> None:
    res = {"service.name": "support-bot", "service.version": "1.4", "tether.task_id": "T-7"}
    rec = map_span(span({}, parent=None, res=res, name="handle"), OPTS)
    assert rec.is_root and rec.kind == "agent"
    assert rec.run_id == run_id_for_trace(TRACE)
    a = rec.attribution
    assert (a.agent, a.version, a.task_id) == ("support-bot", "1.4", "T-7")
    assert rec.attributes["resource"]["service.name"] == "support-bot"
    assert rec.started_at == datetime(2025, 11, 25, 12, 0, tzinfo=UTC)
    assert rec.latency_ms == 1500.0
    # the SDK's default service name is not an agent
    rec = map_span(span({}, res={"service.name": "unknown_service:python"}), OPTS)
    assert rec.attribution.agent is None


def test_explicit_run_id_spreads_to_its_trace_in_the_batch() -> None:
    root = span({"tether.run_id": "run_abc", "tether.run.root": True}, name="r")
    child = OtlpSpan(trace_id=TRACE, span_id="d" * 16, name="c", start_ns=T0_NS, parent_id="c" * 16)
    other = OtlpSpan(trace_id="f" * 32, span_id="e" * 16, name="o", start_ns=T0_NS)
    recs = map_spans([child, root, other], OPTS)
    assert [r.run_id for r in recs] == ["run_abc", "run_abc", run_id_for_trace("f" * 32)]
    assert recs[1].is_root and not recs[0].is_root
    bad = map_span(span({"tether.run_id": "not a valid id!"}), OPTS)
    assert bad.run_id == run_id_for_trace(TRACE)


def test_error_status_and_exception_event() -> None:
    rec = map_span(span({}, status_code=STATUS_ERROR, status_message="rate limited"), OPTS)
    assert (rec.status, rec.error) == ("error", "rate limited")
    ev = SpanEvent("exception", 0, {"exception.type": "ValueError", "exception.message": "bad"})
    rec = map_span(span({"tool.name": "t"}, status_code=STATUS_ERROR, events=[ev]), OPTS)
    assert (rec.kind, rec.status, rec.error) == ("tool", "error", "ValueError: bad")
    assert map_span(span({}, status_code=STATUS_OK), OPTS).status == "ok"


def test_legacy_content_events() -> None:
    events = [
        SpanEvent("gen_ai.content.prompt", 0, {"gen_ai.prompt": "Q?"}),
        SpanEvent("gen_ai.content.completion", 0, {"gen_ai.completion": "A."}),
    ]
    rec = map_span(span({"gen_ai.request.model": "gpt-4o"}, events=events), OPTS)
    assert (rec.input, rec.output) == ("Q?", "A.")


def test_redaction_keeps_numbers_and_redacts_nested_json() -> None:
    attrs = {
        "http.request.header.authorization": "Bearer sk-123",
        "db.password": "hunter2",
        "gen_ai.usage.input_tokens": 3,
        "gen_ai.request.model": "gpt-4o",
        "openinference.span.kind": "TOOL",
        "input.value": json.dumps({"to": "a@b.c", "api_key": "sk-xyz", "max_tokens": 5}),
        "tool.args": json.dumps({"auth": {"password": "pw-1"}}),
    }
    rec = map_span(span(attrs), OPTS)
    assert rec.attributes["http.request.header.authorization"] == REDACTED
    assert rec.attributes["db.password"] == REDACTED
    assert rec.attributes["gen_ai.usage.input_tokens"] == 3
    assert json.loads(rec.input or "") == {"to": "a@b.c", "api_key": REDACTED, "max_tokens": 5}
    dumped = json.dumps(rec.attributes)
    assert "sk-123" not in dumped and "pw-1" not in dumped and "hunter2" not in dumped


def test_huge_text_is_truncated_with_a_marker_and_nul_removed() -> None:
    rec = map_span(span({"input.value": "é" * 100_000, "output.value": "a\x00b"}), OPTS)
    assert rec.input is not None and len(rec.input.encode()) <= MAX_TEXT_BYTES
    assert rec.input.endswith("bytes in all]") and "200000" in rec.input
    assert rec.output == "ab"
    assert "input.value" not in rec.attributes  # stored once, as the span's input
    rec = map_span(span({"big": "x" * 100_000}), OPTS)
    assert len(rec.attributes["big"].encode()) <= MAX_TEXT_BYTES


def test_impossible_times_are_a_bad_request() -> None:
    with pytest.raises(BadRequestError, match="start time"):
        map_span(OtlpSpan(trace_id=TRACE, span_id="c" * 16, name="x", start_ns=0), OPTS)
    with pytest.raises(BadRequestError, match="end time"):
        map_span(OtlpSpan(trace_id=TRACE, span_id="c" * 16, name="x", start_ns=1,
                          end_ns=-5), OPTS)  # fmt: skip
    with pytest.raises(BadRequestError, match="end time"):
        map_span(OtlpSpan(trace_id=TRACE, span_id="c" * 16, name="x", start_ns=T0_NS,
                          end_ns=2**64 - 1), OPTS)  # fmt: skip
    with pytest.raises(BadRequestError, match="start time"):
        map_span(OtlpSpan(trace_id=TRACE, span_id="c" * 16, name="x", start_ns=2**64 - 1), OPTS)
    with pytest.raises(BadRequestError, match="is before its start time"):
        map_span(OtlpSpan(trace_id=TRACE, span_id="c" * 16, name="x", start_ns=T0_NS,
                          end_ns=T0_NS - 10**9), OPTS)  # fmt: skip


KNOWN_KEYS = [k for _, attrs, _ in CASES for k in attrs] + [
    "tether.run_id", "tether.run.root", "tether.ttft_ms", "llm.token_count.total",
    "gen_ai.prompt.0.content", "gen_ai.completion.x.role", "llm.input_messages.1.message.role",
]  # fmt: skip
values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                  max_size=3),
    max_leaves=8,
)  # fmt: skip
keys = st.sampled_from(KNOWN_KEYS) | st.text(max_size=20)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(keys, values, max_size=12), st.dictionaries(keys, values, max_size=4),
       st.booleans(), st.integers(0, 2), st.text(max_size=20))  # fmt: skip
def test_mapping_never_raises_on_arbitrary_attributes(
    attrs: dict, res: dict, has_parent: bool, code: int, msg: str
) -> None:
    events = [SpanEvent("gen_ai.choice", 0, attrs), SpanEvent("exception", 0, attrs)]
    s = span(attrs, parent="b" * 16 if has_parent else None, res=res, status_code=code,
             status_message=msg, events=events)  # fmt: skip
    rec = map_spans([s], OPTS)[0]
    json.dumps(rec.attributes, allow_nan=False)
    assert rec.kind in {"agent", "llm", "tool", "retrieval", "embedding", "approval", "chain",
                        "other"}  # fmt: skip
    assert rec.cost_nusd is None or rec.cost_nusd >= 0
    for text in (rec.input, rec.output, rec.name, rec.error, rec.model):
        assert text is None or ("\x00" not in text and len(text.encode()) <= MAX_TEXT_BYTES)


def test_spans_sharing_attribute_names_are_each_mapped_from_their_own_values() -> None:
    """The mapping plans its lookups once per set of names; the values stay each span's own."""
    llm = {"openinference.span.kind": "LLM", "llm.model_name": "gpt-4o-mini", "input.value": "q1",
           "gen_ai.usage.input_tokens": 1000, "api_key": "sk-never-stored-at-all"}  # fmt: skip
    tool = {"openinference.span.kind": "TOOL", "llm.model_name": "", "input.value": "",
            "gen_ai.usage.input_tokens": "n/a", "api_key": ""}  # fmt: skip
    reordered = dict(reversed(llm.items()))
    a, b, c = map_spans([span(llm), span(tool), span(reordered)], OPTS)
    assert (a.kind, a.model, a.input, a.input_tokens) == ("llm", "gpt-4o-mini", "q1", 1000)
    assert a.attributes["api_key"] == REDACTED and "input.value" not in a.attributes
    assert (b.kind, b.model, b.input, b.input_tokens) == ("tool", None, None, None)
    assert b.attributes["api_key"] == "" and b.attributes["input.value"] == ""
    assert c == a


def test_a_new_set_of_attribute_names_every_span_still_maps_each_span() -> None:
    batch = [span({f"custom.{i}": i, "llm.model_name": f"m-{i}"}) for i in range(1500)]
    records = map_spans(batch, OPTS)
    assert [r.model for r in records] == [f"m-{i}" for i in range(1500)]
    assert records[1499].attributes["custom.1499"] == 1499
