"""The small Protocol every upstream provider implements (`Provider`, `StreamMeter`), what a
call used (`Usage`) and where one attempt goes (`Target`).

Each `kind` (openai, anthropic) has a module implementing `Provider`; gateway/llm/registry.py
routes a requested model to them. Provider keys come from gateway/llm/provider_keys.py and are
sent upstream only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

from tether.config import ProviderConfig
from tether.gateway.llm.provider_keys import KeySource

Kind = Literal["openai", "anthropic"]


@dataclass
class Usage:
    """Tokens of one call. `reported` is False when they were counted by tether instead."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    # prompt-cache writes (part of input_tokens), billed above the input price by Anthropic
    cache_write_tokens: int = 0
    reported: bool = False
    model_served: str | None = None
    finish_reason: str | None = None


class StreamMeter(Protocol):
    """Reads a provider's SSE events as they pass and keeps what tether must know about them."""

    usage: Usage
    text: list[str]
    chunks: int

    def feed(self, event: dict[str, Any]) -> bool:
        """Takes one parsed `data:` payload; False when the event must not reach the client."""
        ...


class Provider(Protocol):
    """One upstream API of a given kind."""

    config: ProviderConfig
    kind: Kind
    keys: KeySource

    def url(self, endpoint: str) -> str: ...

    def headers(self) -> dict[str, str]: ...

    def usage(self, reply: dict[str, Any]) -> Usage: ...

    def output_text(self, reply: dict[str, Any]) -> str: ...

    def meter(self, hide_usage: bool) -> StreamMeter: ...


@dataclass(frozen=True)
class Target:
    """Where one attempt goes: a provider and the model name it knows."""

    provider: Provider
    model: str
