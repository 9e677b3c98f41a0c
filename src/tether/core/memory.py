"""Memory rules: which namespaces an agent may read and write (its own, plus what its policy
grants, optionally expiring and filtered by tag), and the pure parts of a memory record
(content hash, vector encoding). The store enforces these on every query.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from tether.core.errors import BadRequestError, PermissionDeniedError

Mode = Literal["read", "write"]

NAMESPACE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$")
MAX_TEXT = 64 * 1024
MAX_DIM = 8192


def check_namespace(name: str) -> str:
    if not isinstance(name, str) or not NAMESPACE_RE.match(name):
        raise BadRequestError(
            f"namespace {name!r}: use 1-200 letters, digits, '.', '_', '/', '-' "
            "(starting with a letter or digit)"
        )
    return name


def check_embedder(value: str | None) -> str | None:
    """An embedder setting: `gateway:MODEL`, `local:MODEL` (a name or a directory) or `client`."""
    if value is None or value == "client":
        return value
    kind, sep, model = value.partition(":")
    if kind in ("gateway", "local") and sep and model.strip():
        return value
    raise ValueError(
        f"embedder {value!r} is not one tether knows: use gateway:MODEL (through tether's LLM "
        "gateway), local:MODEL (e.g. local:all-MiniLM-L6-v2 or local:/path/to/model) or client "
        "(callers send vectors)"
    )


@dataclass(frozen=True)
class Grant:
    """A namespace beyond its own that an agent may read or write."""

    namespace: str
    mode: Mode
    expires_at: datetime | None = None
    # empty: every memory of the namespace; otherwise only memories carrying one of these tags
    tags: frozenset[str] = frozenset()

    def live(self, now: datetime) -> bool:
        return self.expires_at is None or now < self.expires_at


@dataclass(frozen=True)
class Scope:
    """What one query may see: namespace -> tag filter (None: every memory in it)."""

    namespaces: Mapping[str, frozenset[str] | None]
    # the run's user: memories written for another user are never visible (a partition, not a hint)
    user: str | None = None
    # operators (admin keys) see every user's memories of the namespaces they name
    all_users: bool = False

    def allows(self, namespace: str, tags: Iterable[str], user: str | None) -> bool:
        """The same rule the store's SQL applies, for checking a row after the fact."""
        if namespace not in self.namespaces:
            return False
        wanted = self.namespaces[namespace]
        if wanted is not None and not (wanted & set(tags)):
            return False
        return self.all_users or user is None or user == self.user


@dataclass(frozen=True)
class Access:
    """An agent's memory rights: its own namespace plus grants. `agent=None` is an operator."""

    agent: str | None
    own: str | None
    grants: tuple[Grant, ...] = ()

    @property
    def operator(self) -> bool:
        return self.agent is None

    def read_scope(
        self, now: datetime, requested: Sequence[str] | None = None, *, user: str | None = None
    ) -> Scope:
        """The namespaces a search may look in. Asking for one it may not read is an error,
        never a silently narrower result."""
        if self.operator:
            if not requested:
                raise BadRequestError("namespace: an operator search names the namespaces")
            return Scope({check_namespace(n): None for n in requested}, user, all_users=True)
        allowed: dict[str, frozenset[str] | None] = {}
        if self.own is not None:
            allowed[self.own] = None
        for g in self.grants:
            if g.mode == "read" and g.live(now):
                prev = allowed.get(g.namespace, frozenset())
                if g.namespace in allowed and prev is None:
                    continue
                allowed[g.namespace] = None if not g.tags else (prev or frozenset()) | g.tags
        if not requested:
            return Scope(allowed, user)
        out: dict[str, frozenset[str] | None] = {}
        for name in requested:
            check_namespace(name)
            if name not in allowed:
                raise not_granted(self.agent, name, "read")
            out[name] = allowed[name]
        return Scope(out, user)

    def check_write(self, namespace: str, tags: Iterable[str], now: datetime) -> None:
        check_namespace(namespace)
        if self.operator or namespace == self.own:
            return
        tagset = set(tags)
        for g in self.grants:
            live = g.mode == "write" and g.namespace == namespace and g.live(now)
            if live and (not g.tags or tagset & g.tags):
                return
        raise not_granted(self.agent, namespace, "write")


def not_granted(agent: str | None, namespace: str, mode: Mode) -> PermissionDeniedError:
    return PermissionDeniedError(
        f"agent {agent} may not {mode} memory namespace {namespace!r}. Fix: add it to "
        f"memory.{mode}_grants in the agent's policy",
        code="memory_not_granted",
        namespace=namespace,
        mode=mode,
    )


def access_from_policy(agent: str, memory: Mapping[str, Any] | None) -> Access:
    """The `memory:` section of a boundary policy (already validated) as an Access."""
    memory = memory or {}
    own = memory.get("namespace") or agent
    grants: list[Grant] = []
    modes: tuple[Mode, Mode] = ("read", "write")
    for mode in modes:
        for item in memory.get(f"{mode}_grants") or []:
            if isinstance(item, str):
                grants.append(Grant(item, mode))
            else:
                expires = item.get("expires_at")
                if isinstance(expires, str):  # the stored document is JSON
                    expires = datetime.fromisoformat(expires)
                grants.append(
                    Grant(item["namespace"], mode, expires, frozenset(item.get("tags") or ()))
                )
    return Access(agent, own, tuple(grants))


# ---------------------------------------------------------------- records


def content_hash(namespace: str, text: str, metadata: Mapping[str, Any] | None) -> str:
    """Identifies the same fact written twice (the write is then a no-op)."""
    body = json.dumps([namespace, text, metadata or {}], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


def check_text(text: Any) -> str:
    if not isinstance(text, str) or not text.strip():
        raise BadRequestError("text: a non-empty string")
    if len(text) > MAX_TEXT:
        raise BadRequestError(f"text: longer than {MAX_TEXT} characters; store a summary")
    return text


def encode_vector(values: Sequence[float]) -> bytes:
    """float32, little-endian: the layout sqlite-vec and numpy read without a copy."""
    if not values or len(values) > MAX_DIM:
        raise BadRequestError(f"embedding: 1-{MAX_DIM} numbers")
    if not all(isinstance(v, int | float) and math.isfinite(v) for v in values):
        raise BadRequestError("embedding: every value must be a finite number")
    norm = math.sqrt(sum(float(v) * float(v) for v in values))
    if norm == 0:
        raise BadRequestError("embedding: the zero vector has no direction")
    out = array("f", (float(v) / norm for v in values))
    if out.itemsize != 4:  # pragma: no cover - every platform tether runs on has 4-byte floats
        raise RuntimeError("float32 arrays are not 4 bytes here")
    return out.tobytes()


def decode_vector(blob: bytes) -> list[float]:
    out = array("f")
    out.frombytes(blob)
    return out.tolist()


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    """Cosine similarity of two vectors (tether stores unit vectors, so this is their dot)."""
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(y * y for y in b))
    return dot / (na * nb) if na and nb else 0.0
