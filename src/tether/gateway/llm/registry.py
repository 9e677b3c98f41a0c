"""The routing of a requested model to upstream providers: `Registry` turns the `providers:` of
tether.yaml into targets (the upstream model for a requested name or alias, then its fallbacks),
each provider holding the source of its key (gateway/llm/provider_keys.py).

It sits above the provider modules (openai.py, anthropic.py), which only know provider.py.
"""

from __future__ import annotations

from tether.config import ProviderConfig
from tether.core.errors import ConfigError, NotFoundError
from tether.gateway.llm.anthropic import AnthropicProvider
from tether.gateway.llm.openai import OpenAIProvider
from tether.gateway.llm.provider import Kind, Provider, Target
from tether.gateway.llm.provider_keys import VaultKey, key_source
from tether.gateway.llm.vault import VaultClient


def make_provider(config: ProviderConfig, vault: VaultClient | None = None) -> Provider:
    keys = key_source(config, vault)
    if config.kind == "anthropic":
        return AnthropicProvider(config, keys)
    return OpenAIProvider(config, keys)


class Registry:
    """Maps a requested model (a name or an alias) to the targets that may serve it."""

    def __init__(self, configs: list[ProviderConfig], vault: VaultClient | None = None) -> None:
        names = [c.name for c in configs]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ConfigError(f"providers: the name(s) {', '.join(sorted(dupes))} appear twice")
        self.providers: list[Provider] = [make_provider(c, vault) for c in configs]

    def vault_keys(self) -> list[VaultKey]:
        return [p.keys for p in self.providers if isinstance(p.keys, VaultKey)]

    def refresh_vault_keys(self) -> int:
        """Reads every Vault-held key again (blocking); how many changed."""
        return sum(k.refresh() for k in self.vault_keys())

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
