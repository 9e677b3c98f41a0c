"""`TetherStore`: LangGraph's long-term memory API (`BaseStore`) on tether's memory, over the REST
API with the agent's key, so LangGraph memories are isolated per agent, granted by policy,
embedded through tether's gateway (the run's budget pays) and audited.

    from tether.integrations.langgraph_store import TetherStore
    store = TetherStore("http://127.0.0.1:7337", api_key=AGENT_KEY)
    graph = builder.compile(checkpointer=saver, store=store)

LangGraph's namespace tuple and key become a tether memory key (`users/42//prefs`) inside the
agent's own tether namespace (or `namespace=`); the value is kept as the memory's metadata and
its indexed text is what gets embedded. `index=False` stores without a vector.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import quote, unquote

import httpx
from langgraph.store.base import (
    BaseStore,
    GetOp,
    Item,
    ListNamespacesOp,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
)

_SEP = "//"
_PAGE = 500


class TetherStoreError(Exception):
    """tether refused a store call: `status`, `type`, `code` as in its JSON error."""

    def __init__(self, status: int, type_: str, code: str, message: str) -> None:
        super().__init__(f"{status} {type_}: {message}")
        self.status, self.type, self.code, self.message = status, type_, code, message


def _path(namespace: tuple[str, ...]) -> str:
    return "/".join(quote(p, safe="") for p in namespace)


def memory_key(namespace: tuple[str, ...], key: str) -> str:
    return f"{_path(namespace)}{_SEP}{quote(key, safe='')}"


def _split(memory_key_: str) -> tuple[tuple[str, ...], str]:
    ns, _, key = memory_key_.rpartition(_SEP)
    return tuple(unquote(p) for p in ns.split("/") if p), unquote(key)


def _text(value: Mapping[str, Any], fields: list[str] | None) -> str:
    """What gets embedded: the named fields (LangGraph's `index`), else the whole value."""
    if fields and fields != ["$"]:
        parts = [value.get(f) for f in fields if value.get(f) is not None]
        return "\n".join(p if isinstance(p, str) else json.dumps(p, sort_keys=True) for p in parts)
    return json.dumps(value, sort_keys=True, default=str)


def _matches(value: Mapping[str, Any], flt: Mapping[str, Any] | None) -> bool:
    return not flt or all(value.get(k) == v for k, v in flt.items())


class TetherStore(BaseStore):
    """A LangGraph `BaseStore` backed by tether memory (sync and async)."""

    supports_ttl = False

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        namespace: str | None = None,
        run_id: str | None = None,
        index_fields: list[str] | None = None,
        timeout_s: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.namespace = namespace
        self.index_fields = index_fields
        self.headers = {"Authorization": f"Bearer {api_key}"}
        if run_id:
            self.headers["X-Tether-Run-Id"] = run_id
        self._client = httpx.Client(base_url=self.url, headers=self.headers, timeout=timeout_s,
                                    transport=transport)  # fmt: skip
        self._timeout_s = timeout_s

    # ------------------------------------------------------------ HTTP

    def _check(self, r: httpx.Response) -> Any:
        if r.status_code >= 400:
            try:
                err = r.json().get("error") or {}
            except ValueError:
                err = {}
            message = err.get("message", r.text[:200])
            raise TetherStoreError(
                r.status_code, err.get("type", "error"), err.get("code", "error"), message
            )
        return r.json()

    def _ns(self) -> str:
        if self.namespace:
            return self.namespace
        own = self._check(self._client.get("/api/v1/memory/namespaces")).get("own")
        if not own:
            why = "this key has no own namespace (an operator key): pass namespace="
            raise TetherStoreError(400, "invalid_request", "no_namespace", why)
        self.namespace = str(own)
        return self.namespace

    def _list(self, key_prefix: str) -> list[dict[str, Any]]:
        ns = self._ns()
        params: dict[str, str | int] = {"key_prefix": key_prefix, "limit": _PAGE}
        items: list[dict[str, Any]] = self._check(
            self._client.get(
                f"/api/v1/memory/namespaces/{quote(ns, safe='')}/memories", params=params
            )
        )["items"]
        return items

    # ------------------------------------------------------------ ops

    def _item(self, m: Mapping[str, Any], score: float | None = None) -> SearchItem:
        ns, key = _split(m["key"])
        meta = m.get("metadata") or {}
        at = datetime.fromisoformat(m["created_at"])
        return SearchItem(namespace=ns, key=key, value=meta.get("lg_value") or {},
                          created_at=at, updated_at=at, score=score)  # fmt: skip

    def _get(self, op: GetOp) -> Item | None:
        wanted = memory_key(op.namespace, op.key)
        for m in self._list(wanted):
            if m["key"] == wanted:
                s = self._item(m)
                return Item(value=s.value, key=s.key, namespace=s.namespace,
                            created_at=s.created_at, updated_at=s.updated_at)  # fmt: skip
        return None

    def _put(self, op: PutOp) -> None:
        key = memory_key(op.namespace, op.key)
        if op.value is None:
            for m in self._list(key):
                if m["key"] == key:
                    self._check(self._client.post("/api/v1/memory/forget", json={"id": m["id"]}))
            return
        fields = op.index if isinstance(op.index, list) else self.index_fields
        body: dict[str, Any] = {
            "text": _text(op.value, fields) or key, "key": key,
            "metadata": {"lg_value": dict(op.value), "lg_namespace": list(op.namespace)},
            "embed": op.index is not False,
        }  # fmt: skip
        body["namespace"] = self._ns()
        self._check(self._client.post("/api/v1/memory/memories", json=body))

    def _search(self, op: SearchOp) -> list[SearchItem]:
        prefix = _path(op.namespace_prefix)
        prefix = prefix + ("/" if prefix else "")
        want = op.offset + op.limit
        if op.query is None:
            rows = [m for m in self._list(prefix) if m["key"] and m["key"].startswith(prefix)]
            items = [self._item(m) for m in rows]
        else:
            body: dict[str, Any] = {"query": op.query, "k": min(100, max(want * 3, 10)),
                                    "key_prefix": prefix}  # fmt: skip
            body["namespaces"] = [self._ns()]
            hits = self._check(self._client.post("/api/v1/memory/search", json=body))["items"]
            items = [self._item(h["memory"], h["score"]) for h in hits]
        items = [i for i in items if _matches(i.value, op.filter)]
        return items[op.offset : want]

    def _namespaces(self, op: ListNamespacesOp) -> list[tuple[str, ...]]:
        seen: dict[tuple[str, ...], None] = {}
        for m in self._list(""):
            if not m.get("key") or _SEP not in m["key"]:
                continue
            ns, _ = _split(m["key"])
            if op.match_conditions and not all(_match(ns, c) for c in op.match_conditions):
                continue
            seen[ns[: op.max_depth] if op.max_depth else ns] = None
        return sorted(seen)[op.offset : op.offset + op.limit]

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        out: list[Result] = []
        for op in ops:
            self._ns()
            if isinstance(op, GetOp):
                out.append(self._get(op))
            elif isinstance(op, PutOp):
                self._put(op)
                out.append(None)
            elif isinstance(op, SearchOp):
                out.append(self._search(op))
            elif isinstance(op, ListNamespacesOp):
                out.append(self._namespaces(op))
            else:  # pragma: no cover - LangGraph has no other op today
                raise TypeError(f"unknown store op {type(op).__name__}")
        return out

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        # The HTTP calls are short; one worker thread keeps the sync client's single code path.
        import anyio

        ops = list(ops)
        return await anyio.to_thread.run_sync(self.batch, ops)

    def close(self) -> None:
        self._client.close()


def _match(ns: tuple[str, ...], cond: Any) -> bool:
    path = tuple(cond.path)
    tail = ns[-len(path) :] if path else ()
    part = ns[: len(path)] if cond.match_type == "prefix" else tail
    return len(part) == len(path) and all(
        p == "*" or p == n for p, n in zip(path, part, strict=True)
    )
