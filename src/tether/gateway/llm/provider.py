"""Upstream providers behind one small Protocol, and the routing of a requested model to them.

Each `kind` (openai, anthropic) has a module implementing `Provider`; `Registry` turns the
`providers:` of tether.yaml into targets: the upstream model for a requested name or alias,
then its fallbacks. Provider keys are read here and sent upstream only, never to agents.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

from tether.config import ProviderConfig
from tether.core.errors import ConfigError, NotFoundError

Kind = Literal["openai", "anthropic"]


@dataclass
class Usage:
    """Tokens of one call. `reported` is False when they were counted by tether instead."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
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


def make_provider(config: ProviderConfig) -> Provider:
    if config.kind == "anthropic":
        from tether.gateway.llm.anthropic import AnthropicProvider

        return AnthropicProvider(config)
    from tether.gateway.llm.openai import OpenAIProvider

    return OpenAIProvider(config)


class Registry:
    """Maps a requested model (a name or an alias) to the targets that may serve it."""

    def __init__(self, configs: list[ProviderConfig]) -> None:
        names = [c.name for c in configs]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ConfigError(f"providers: the name(s) {', '.join(sorted(dupes))} appear twice")
        self.providers: list[Provider] = [make_provider(c) for c in configs]

    def _find(self, model: str, kind: Kind) -> Target | None:
        of_kind = [p for p in self.providers if p.kind == kind]
        for p in of_kind:
            if model in p.config.aliases:
                return Target(p, p.config.aliases[model])
            if model in p.config.models:
                return Target(p, model)
        # a provider that lists no models accepts any name of its kind
        for p in of_kind:
            if not p.config.models and not p.config.aliases:
                return Target(p, model)
        return None

    def targets(self, model: str, kind: Kind) -> list[Target]:
        """The first target serves `model`; the rest are its provider's fallbacks, in order."""
        first = self._find(model, kind)
        if first is None:
            known = ", ".join(self.model_names(kind)) or "none configured"
            raise NotFoundError(
                f"model {model!r} is not served by any {kind} provider (known: {known}); "
                "add it to `models:` of a provider in tether.yaml",
                code="model_not_found",
            )
        out = [first]
        for name in first.provider.config.fallbacks:
            fb = self._find(name, kind)
            if fb is not None and fb not in out:
                out.append(fb)
        return out

    def model_names(self, kind: Kind | None = None) -> list[str]:
        names: list[str] = []
        for p in self.providers:
            if kind is None or p.kind == kind:
                names += [m for m in [*p.config.models, *p.config.aliases] if m not in names]
        return names

    def owner_of(self, model: str) -> str:
        for p in self.providers:
            if model in p.config.models or model in p.config.aliases:
                return p.config.name
        return "tether"


def provider_key(config: ProviderConfig) -> str | None:
    """The provider's API key from its env var or file; a clear error when it is missing."""
    try:
        key = config.api_key()
    except OSError as exc:
        raise ConfigError(
            f"provider {config.name}: cannot read api_key_file {config.api_key_file}: {exc}"
        ) from None
    if key is None and config.api_key_env:
        raise ConfigError(
            f"provider {config.name}: the environment variable {config.api_key_env} is not set"
        )
    return key
