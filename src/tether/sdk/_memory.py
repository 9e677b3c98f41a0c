"""`tether.memory`: the agent's long-term memory in tether (its own namespace and what its
policy grants), over the REST API with the SDK's key; calls inside `tether.run` carry the run.

Unlike the recording calls, these return data, so a refusal raises `MemoryRequestError` with
tether's error type and message (a namespace not granted, a budget refusal for the embedding).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import httpx

from tether.sdk._config import active
from tether.sdk._run import current_run


class MemoryRequestError(Exception):
    """tether refused a memory call: `status`, `type` and `code` as in its JSON error."""

    def __init__(self, status: int, type_: str, code: str, message: str) -> None:
        super().__init__(f"{status} {type_}: {message}")
        self.status = status
        self.type = type_
        self.code = code
        self.message = message


def _call(path: str, body: dict[str, Any] | None, *, method: str = "POST") -> Any:
    sdk = active()
    headers: dict[str, str] = {}
    run = current_run()
    if run is not None:
        headers["X-Tether-Run-Id"] = run.id
        if run.user:
            headers["X-Tether-User"] = run.user
    try:
        response = sdk.http.request(method, path, json=body, headers=headers, timeout_s=60.0)
    except httpx.HTTPError as exc:
        raise MemoryRequestError(0, "unreachable", "unreachable", str(exc)) from None
    if response.status_code >= 400:
        try:
            err = response.json().get("error") or {}
        except ValueError:
            err = {}
        message = err.get("message", response.text[:200])
        raise MemoryRequestError(
            response.status_code, err.get("type", "error"), err.get("code", "error"), message
        )
    return response.json()


def remember(
    text: str,
    *,
    key: str | None = None,
    tags: Sequence[str] = (),
    metadata: Mapping[str, Any] | None = None,
    namespace: str | None = None,
    embedding: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Stores a memory; returns `{"status": created|superseded|unchanged, "memory": {...}}`.

    tether.memory.remember("customer 42 prefers email", key="contact:42", tags=["crm"])
    """
    body: dict[str, Any] = {"text": text, "key": key, "tags": list(tags), "metadata": metadata,
                            "namespace": namespace}  # fmt: skip
    if embedding is not None:
        body["embedding"] = list(embedding)
    result: dict[str, Any] = _call("/api/v1/memory/memories", body)
    return result


def recall(
    query: str,
    *,
    k: int = 5,
    namespaces: Sequence[str] | None = None,
    tags: Sequence[str] = (),
    as_of: datetime | None = None,
) -> list[dict[str, Any]]:
    """The `k` memories most like `query` this agent may read: `[{"score", "memory"}]`.

    for hit in tether.memory.recall("how does customer 42 like to be contacted?"):
        print(hit["score"], hit["memory"]["text"])
    """
    body: dict[str, Any] = {"query": query, "k": k, "tags": list(tags)}
    if namespaces is not None:
        body["namespaces"] = list(namespaces)
    if as_of is not None:
        body["as_of"] = as_of.isoformat()
    items: list[dict[str, Any]] = _call("/api/v1/memory/search", body)["items"]
    return items


def forget(memory_id: str) -> list[str]:
    """Erases one memory (and its superseded versions); returns the ids erased.

    tether.memory.forget("mem_...")
    """
    gone: list[str] = _call("/api/v1/memory/forget", {"id": memory_id})["forgotten"]
    return gone
