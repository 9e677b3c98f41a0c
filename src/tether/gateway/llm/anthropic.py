"""Anthropic Messages API providers: URLs, headers (x-api-key, anthropic-version) and usage from
replies and from stream events (message_start / message_delta, else counted from deltas)."""

from __future__ import annotations

from typing import Any

from tether.config import ProviderConfig
from tether.gateway.llm.provider import Kind, Usage
from tether.gateway.llm.provider_keys import KeySource

ANTHROPIC_VERSION = "2023-06-01"


class AnthropicProvider:
    kind: Kind = "anthropic"

    def __init__(self, config: ProviderConfig, keys: KeySource) -> None:
        self.config = config
        self.keys = keys
        base = config.base_url.rstrip("/")
        # accept both https://api.anthropic.com and https://api.anthropic.com/v1
        self._base = base[:-3] if base.endswith("/v1") else base
        self._headers = {
            "content-type": "application/json",
            "user-agent": "tether-gateway",
            "anthropic-version": ANTHROPIC_VERSION,
        }

    def url(self, endpoint: str) -> str:
        return f"{self._base}/v1/{endpoint}"

    def headers(self) -> dict[str, str]:
        key = self.keys.current()  # the key current now; a rotation never touches this call
        return {**self._headers, "x-api-key": key} if key else self._headers

    def usage(self, reply: dict[str, Any]) -> Usage:
        out = Usage(model_served=_str(reply.get("model")), finish_reason=_str(
            reply.get("stop_reason")))  # fmt: skip
        u = reply.get("usage")
        if isinstance(u, dict):
            _read_input(u, out)
            if isinstance(u.get("output_tokens"), int):
                out.output_tokens = u["output_tokens"]
        return out

    def output_text(self, reply: dict[str, Any]) -> str:
        parts = []
        for block in reply.get("content") or []:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "text":
                parts.append(str(block.get("text", "")))
            elif block.get("type") == "tool_use":
                parts.append(f"{block.get('name')}({block.get('input')})")
        return "\n".join(parts)

    def meter(self, hide_usage: bool) -> AnthropicMeter:
        return AnthropicMeter()


def _str(v: Any) -> str | None:
    return v if isinstance(v, str) else None


def _read_input(u: dict[str, Any], out: Usage) -> None:
    """Anthropic's input_tokens excludes cache reads and writes; tether's includes them."""
    if not isinstance(u.get("input_tokens"), int):
        return
    cache_read = u.get("cache_read_input_tokens") or 0
    cache_write = u.get("cache_creation_input_tokens") or 0
    out.input_tokens = u["input_tokens"] + int(cache_read) + int(cache_write)
    out.cached_tokens = int(cache_read)
    out.cache_write_tokens = int(cache_write)
    out.reported = True


class AnthropicMeter:
    """Counts a Messages stream: one text or tool-input delta is one token until message_delta
    reports the real output count."""

    def __init__(self) -> None:
        self.usage = Usage()
        self.text: list[str] = []
        self.chunks = 0
        self._counted = 0
        self._output_reported = False

    def feed(self, event: dict[str, Any]) -> bool:
        kind = event.get("type")
        if kind == "message_start":
            msg = event.get("message") or {}
            self.usage.model_served = _str(msg.get("model"))
            u = msg.get("usage")
            if isinstance(u, dict):
                _read_input(u, self.usage)
        elif kind == "content_block_start":
            block = event.get("content_block") or {}
            if block.get("type") == "tool_use":
                self.text.append(f"\n{block.get('name')}(")
        elif kind == "content_block_delta":
            self.chunks += 1
            delta = event.get("delta") or {}
            piece = delta.get("text") or delta.get("partial_json") or delta.get("thinking")
            if piece:
                self.text.append(str(piece))
                self._counted += 1
        elif kind == "message_delta":
            delta = event.get("delta") or {}
            self.usage.finish_reason = _str(delta.get("stop_reason")) or self.usage.finish_reason
            u = event.get("usage")
            if isinstance(u, dict) and isinstance(u.get("output_tokens"), int):
                self.usage.output_tokens = u["output_tokens"]
                self._output_reported = True
        if not self._output_reported:
            self.usage.output_tokens = self._counted
        return True
