"""The gateway's pure parts: model routing (aliases, fallbacks, catch-all), stream meters,
upstream error mapping, traceparent and run-trace ids."""

from __future__ import annotations

from datetime import date

import httpx
import pytest

from tether.config import ProviderConfig, load_settings
from tether.core.budget import scopes_for
from tether.core.errors import ConfigError, NotFoundError, UpstreamTimeoutError
from tether.core.pricing import load_price_table
from tether.gateway.llm.anthropic import AnthropicMeter
from tether.gateway.llm.errors import from_status, from_transport
from tether.gateway.llm.gateway import _trace_for, _traceparent
from tether.gateway.llm.guard import BudgetGuard
from tether.gateway.llm.openai import OpenAIMeter
from tether.gateway.llm.registry import Registry, make_provider


def registry() -> Registry:
    return Registry([
        ProviderConfig(name="a", base_url="http://a/v1", models=["m1"], aliases={"fast": "m1"},
                       fallbacks=["m2"]),
        ProviderConfig(name="b", base_url="http://b/v1", models=["m2"]),
        ProviderConfig(name="any", base_url="http://c/v1"),
        ProviderConfig(name="claude", kind="anthropic", base_url="http://d", models=["c1"]),
    ])  # fmt: skip


def test_routing_aliases_fallbacks_and_catch_all() -> None:
    r = registry()
    [first, fallback] = r.targets("fast", "openai")
    assert (first.provider.config.name, first.model) == ("a", "m1")
    assert (fallback.provider.config.name, fallback.model) == ("b", "m2")
    assert r.targets("whatever", "openai")[0].provider.config.name == "any"
    assert r.targets("c1", "anthropic")[0].provider.kind == "anthropic"
    with pytest.raises(NotFoundError, match="not served by any anthropic provider"):
        r.targets("m1", "anthropic")
    assert r.model_names("openai") == ["m1", "fast", "m2"]
    with pytest.raises(ConfigError, match="appear twice"):
        Registry([ProviderConfig(name="x", base_url="u"), ProviderConfig(name="x", base_url="v")])


def test_missing_provider_key_is_a_clear_error_at_call_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    p = make_provider(ProviderConfig(name="c", kind="anthropic", base_url="http://x/v1",
                                     api_key_env="NO_SUCH_KEY_VAR"))  # fmt: skip
    assert p.url("messages") == "http://x/v1/messages"
    with pytest.raises(ConfigError, match="NO_SUCH_KEY_VAR is not set"):
        p.headers()


def test_openai_meter_counts_deltas_until_usage_arrives() -> None:
    m = OpenAIMeter(hide_usage=True)
    assert m.feed({"model": "gpt-x", "choices": [{"index": 0, "delta": {"content": "Hi"}}]})
    m.feed({"choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "function": {"name": "f", "arguments": "{}"}}]}}]})  # fmt: skip
    assert (m.usage.output_tokens, m.usage.reported, m.usage.model_served) == (2, False, "gpt-x")
    usage_only = {
        "choices": [],
        "usage": {
            "prompt_tokens": 7,
            "completion_tokens": 3,
            "prompt_tokens_details": {"cached_tokens": 4},
        },
    }
    assert m.feed(usage_only) is False  # tether asked for it, the client did not
    assert (m.usage.input_tokens, m.usage.output_tokens, m.usage.cached_tokens) == (7, 3, 4)
    assert "".join(m.text) == "Hi\nf({}"


def test_anthropic_meter_includes_cache_tokens_in_input() -> None:
    m = AnthropicMeter()
    m.feed({"type": "message_start", "message": {"model": "c1", "usage": {
        "input_tokens": 10, "cache_read_input_tokens": 90, "output_tokens": 1}}})  # fmt: skip
    m.feed({"type": "content_block_delta", "delta": {"type": "text_delta", "text": "a"}})
    m.feed({"type": "content_block_delta", "delta": {"type": "text_delta", "text": "b"}})
    assert (m.usage.input_tokens, m.usage.cached_tokens, m.usage.output_tokens) == (100, 90, 2)
    m.feed({"type": "message_delta", "delta": {"stop_reason": "end_turn"},
            "usage": {"output_tokens": 5}})  # fmt: skip
    assert (m.usage.output_tokens, m.usage.finish_reason) == (5, "end_turn")


def test_upstream_errors_map_to_clear_statuses() -> None:
    assert from_status(500, b'{"error": {"message": "boom"}}', "p").http_status == 502
    assert "boom" in from_status(503, b'{"error": {"message": "boom"}}', "p").message
    bad = from_status(400, b'{"error": {"message": "bad tool schema"}}', "p")
    assert (bad.http_status, bad.type) == (400, "invalid_request_error")
    assert from_status(401, b"", "p").code == "upstream_auth"
    timeout = from_transport(httpx.ReadTimeout("slow"), "p", "http://x")
    assert isinstance(timeout, UpstreamTimeoutError) and timeout.http_status == 504
    assert from_transport(httpx.ConnectError("refused"), "p", "u").code == "upstream_unreachable"


def test_traceparent_and_run_traces() -> None:
    trace, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    assert _traceparent(f"00-{trace}-{parent}-01") == (trace, parent)
    assert _traceparent("00-" + "0" * 32 + f"-{parent}-01") == (None, None)
    assert _traceparent("garbage") == (None, None)
    assert _trace_for(f"run_{trace}") == trace
    assert _trace_for("my-run") == _trace_for("my-run") != _trace_for("other-run")
    assert len(_trace_for("my-run")) == 32


def test_configured_key_day_cap_applies_to_every_key() -> None:
    settings = load_settings(budgets={"key_day_usd": "2.5", "global_day_usd": "100"})
    guard = BudgetGuard(settings, None, None, load_price_table())  # type: ignore[arg-type]
    limits = guard.limits(None)
    scopes = scopes_for(limits, run_id="run_x", agent="a", user=None, key_id="key_1",
                        day=date(2026, 1, 1))  # fmt: skip
    assert [(s.scope, s.cap_nusd) for s in scopes] == [
        ("global_day:2026-01-01", 100_000_000_000),
        ("key_day:key_1:2026-01-01", 2_500_000_000),
    ]
