"""Who is calling: the identity an API key stands for, as every layer above core sees it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Principal:
    """Who is calling: a key's id, its scopes and the agent it speaks for."""

    key_id: str
    scopes: frozenset[str]
    agent: str | None

    def has(self, scope: str) -> bool:
        # admin may do everything; read is implied by admin only
        return scope in self.scopes or "admin" in self.scopes

    @property
    def actor(self) -> str:
        return f"key:{self.key_id}" + (f"({self.agent})" if self.agent else "")
