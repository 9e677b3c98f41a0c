"""The memory service: who may touch which namespace (from the agent's policy), embedding through
tether's own LLM gateway (the caller's key and run, so the agent's budget pays and the call is
traced), and the store calls. The REST routes and the MCP tools `memory.*` both go through it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import anyio
import httpx
from starlette.types import ASGIApp

from tether.config import Settings
from tether.core.errors import BadRequestError, ConfigError, TetherError, UpstreamError
from tether.core.memory import Access, access_from_policy
from tether.store import memory as store
from tether.store import policies
from tether.store.memory_index import VectorIndex, make_index

log = logging.getLogger("tether.memory")

EMBED_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Caller:
    """Who is asking, as the routes and the MCP gateway know it."""

    agent: str | None
    actor: str
    operator: bool
    # forwarded to /llm/v1/embeddings so the embedding is the caller's own LLM call
    authorization: str | None
    run_id: str | None = None
    user: str | None = None


def _local_encode(model: str, texts: list[str]) -> list[list[float]]:
    from tether.server import local_embed  # numpy BERT; loaded only when a namespace uses it

    return local_embed.encoder(model).encode(texts)


def _now() -> datetime:
    return datetime.now(UTC)


class MemoryService:
    def __init__(self, settings: Settings, engine: Any, app: ASGIApp) -> None:
        self.settings = settings
        self.engine = engine
        self.app = app
        self.index: VectorIndex | None = None
        self._index_ready = False
        self._index_lock = threading.Lock()

    # ------------------------------------------------------------ set-up

    def open_index(self) -> None:
        """Opens (and if it lags the store, rebuilds) the vector index; called at start-up."""
        with self._index_lock:
            if self._index_ready:
                return
            self.index = make_index(self.engine, self.settings.memory.index)
            self._index_ready = True
        if self.index is not None:
            log.info("memory index: %s", self.index.name)

    def open_index_at_start(self) -> bool:
        """Opens the index now unless the store says it can wait (store.index_needed_at_start:
        a SQLite store with no memory yet); then the first memory call opens it. True if it
        opened."""
        if not store.index_needed_at_start(self.engine):
            return False
        self.open_index()
        return True

    def _idx(self) -> VectorIndex | None:
        if not self._index_ready:
            self.open_index()
        return self.index

    # ------------------------------------------------------------ rights and config

    def access(self, caller: Caller) -> Access:
        if caller.operator and caller.agent is None:
            return Access(None, None)
        if caller.agent is None:
            raise BadRequestError("memory needs an agent's key or an admin key")
        policy = policies.get(self.engine, caller.agent)
        section = policy.document.get("memory") if policy is not None else None
        return access_from_policy(caller.agent, section)

    def _policy_memory(self, agent: str | None) -> Mapping[str, Any]:
        if agent is None:
            return {}
        policy = policies.get(self.engine, agent)
        return (policy.document.get("memory") or {}) if policy is not None else {}

    def embedder(self, namespace: str, access: Access) -> str | None:
        configured = self.settings.memory.namespaces.get(namespace)
        if configured is not None and configured.embedder:
            return configured.embedder
        if namespace == access.own:
            own = self._policy_memory(access.agent).get("embedder")
            if own:
                return str(own)
        return self.settings.memory.embedder

    def quota(self, namespace: str, access: Access) -> store.Quota:
        cfg = self.settings.memory.namespaces.get(namespace)
        items = cfg.quota_items if cfg else None
        size = cfg.quota_bytes if cfg else None
        if namespace == access.own:
            mine = self._policy_memory(access.agent)
            items = mine.get("quota_items") or items
            size = mine.get("quota_bytes") or size
        return store.Quota(items, size)

    # ------------------------------------------------------------ embeddings

    async def embed(
        self, texts: Sequence[str], embedder: str | None, caller: Caller
    ) -> list[list[float]]:
        if embedder is None or embedder == "client":
            raise BadRequestError(
                "this namespace has no embedder, so send `embedding` with the text. Fix: set "
                "memory.embedder (e.g. gateway:text-embedding-3-small) in tether.yaml or the policy"
            )
        kind, _, model = embedder.partition(":")
        if kind == "local" and model:
            return await anyio.to_thread.run_sync(_local_encode, model, list(texts))
        if kind != "gateway" or not model:
            raise ConfigError(
                f"memory embedder {embedder!r} is not one tether knows: use gateway:MODEL "
                "(through the LLM gateway), local:MODEL (a model on disk) or client (callers "
                "send vectors)"
            )
        headers = {"content-type": "application/json"}
        if caller.authorization:
            headers["authorization"] = caller.authorization
        if caller.run_id:
            headers["x-tether-run-id"] = caller.run_id
        if caller.user:
            headers["x-tether-user"] = caller.user
        transport = httpx.ASGITransport(app=self.app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://tether.internal", timeout=EMBED_TIMEOUT_S
        ) as client:
            response = await client.post(
                "/llm/v1/embeddings", json={"model": model, "input": list(texts)}, headers=headers
            )
        if response.status_code >= 400:
            raise _embedding_error(response)
        try:
            data = sorted(response.json()["data"], key=lambda d: d["index"])
            vectors = [[float(x) for x in d["embedding"]] for d in data]
        except (ValueError, KeyError, TypeError) as exc:
            raise UpstreamError(f"the embedding model {model} answered an unreadable body") from exc
        if len(vectors) != len(texts):
            raise UpstreamError(f"the embedding model {model} returned {len(vectors)} vectors "
                                f"for {len(texts)} texts")  # fmt: skip
        return vectors

    # ------------------------------------------------------------ operations

    async def write(
        self,
        caller: Caller,
        *,
        text: str,
        namespace: str | None = None,
        key: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        tags: Sequence[str] = (),
        embedding: Sequence[float] | None = None,
        span_id: str | None = None,
        embed: bool = True,
    ) -> store.Written:
        access = await anyio.to_thread.run_sync(self.access, caller)
        ns = namespace or access.own
        if ns is None:
            raise BadRequestError("namespace: required for an operator write")
        now = _now()
        access.check_write(ns, tags, now)  # refuse before paying for an embedding
        embedder = self.embedder(ns, access)
        if embedding is None and embed:
            embedding = (await self.embed([text], embedder, caller))[0]
        quota = self.quota(ns, access)
        index = self._idx()

        def run() -> store.Written:
            return store.write(
                self.engine, access, namespace=ns, text=text, embedding=embedding, now=now,
                actor=caller.actor, key=key, metadata=metadata, tags=tags, user=caller.user,
                run_id=caller.run_id, span_id=span_id, embedder=embedder, quota=quota,
                index=index,
            )  # fmt: skip

        return await anyio.to_thread.run_sync(run)

    async def search(
        self,
        caller: Caller,
        *,
        query: str | None = None,
        embedding: Sequence[float] | None = None,
        namespaces: Sequence[str] | None = None,
        k: int = 10,
        tags: Sequence[str] = (),
        key_prefix: str | None = None,
        as_of: datetime | None = None,
    ) -> list[store.Hit]:
        if (query is None) == (embedding is None):
            raise BadRequestError("search takes exactly one of `query` (text) or `embedding`")
        access = await anyio.to_thread.run_sync(self.access, caller)
        now = _now()
        scope = access.read_scope(now, namespaces, user=caller.user)  # refuse before embedding
        if embedding is None:
            assert query is not None
            embedders = {self.embedder(ns, access) for ns in scope.namespaces}
            if len(embedders) > 1:
                raise BadRequestError(
                    "these namespaces embed with different models; search them one at a time"
                )
            embedding = (await self.embed([query], embedders.pop() if embedders else None,
                                          caller))[0]  # fmt: skip
        index = self._idx()

        def run() -> list[store.Hit]:
            return store.search(
                self.engine, access, vector=embedding, now=now, actor=caller.actor,
                namespaces=namespaces, k=k, user=caller.user, tags=tags, key_prefix=key_prefix,
                as_of=as_of, run_id=caller.run_id, index=index,
            )  # fmt: skip

        return await anyio.to_thread.run_sync(run)

    async def forget(
        self,
        caller: Caller,
        *,
        memory_id: str | None = None,
        run_id: str | None = None,
        user: str | None = None,
        namespace: str | None = None,
    ) -> list[str]:
        access = await anyio.to_thread.run_sync(self.access, caller)
        index = self._idx()

        def run() -> list[str]:
            return store.forget(
                self.engine, access, now=_now(), actor=caller.actor, memory_id=memory_id,
                run_id=run_id, user=user, namespace=namespace, index=index,
            )  # fmt: skip

        return await anyio.to_thread.run_sync(run)

    def reindex(self) -> int:
        index = self._idx()
        return index.rebuild(self.engine) if index is not None else 0


def _embedding_error(response: httpx.Response) -> TetherError:
    """The gateway's own refusal (402 budget, 409 killed, ...) passed on as the same error."""
    from tether.core import errors

    try:
        body = response.json().get("error") or {}
    except ValueError:
        body = {}
    message = f"embedding failed: {body.get('message') or response.text[:200]}"
    for cls in (
        errors.BudgetExceededError,
        errors.RunKilledError,
        errors.AuthenticationError,
        errors.PermissionDeniedError,
        errors.RateLimitedError,
        errors.BadRequestError,
    ):
        if cls.http_status == response.status_code and (
            body.get("type") in (cls.type, None) or cls is errors.BadRequestError
        ):
            return cls(message, code=body.get("code") or cls.type)
    return UpstreamError(message)
