"""The memory pages: every namespace with its size and index, and one namespace's recent writes
(with links to the runs they came from), the agents granted it, and who read what."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from tether.core.errors import TetherError
from tether.core.memory import Access, check_namespace
from tether.server.console.render import page
from tether.server.console.session import Viewer, viewer
from tether.server.deps import State, get_state
from tether.store import memory as memory_store
from tether.store import policies as policy_store

router = APIRouter()
RECENT = 50


def grants_of(state: State) -> dict[str, list[dict[str, Any]]]:
    """namespace -> [{agent, mode, tags, expires_at}] from every agent's current policy."""
    out: dict[str, list[dict[str, Any]]] = {}
    for p in policy_store.list_latest(state.engine):
        policy = policy_store.get(state.engine, p.agent)
        section = (policy.document.get("memory") or {}) if policy is not None else {}
        for mode in ("read", "write"):
            for g in section.get(f"{mode}_grants") or []:
                g = {"namespace": g} if isinstance(g, str) else g
                out.setdefault(g["namespace"], []).append({
                    "agent": p.agent, "mode": mode, "tags": g.get("tags") or [],
                    "expires_at": g.get("expires_at"),
                })  # fmt: skip
    return out


def _overview(state: State) -> dict[str, Any]:
    index = state.memory.index.name if state.memory and state.memory.index else "exact"
    return {
        "namespaces": memory_store.namespace_stats(state.engine),
        "grants": grants_of(state),
        "index": index,
    }


@router.get("/memory", response_class=HTMLResponse)
async def memory_page(
    request: Request, who: Viewer = Depends(viewer), state: State = Depends(get_state)
) -> HTMLResponse:
    ctx = await run_in_threadpool(_overview, state)
    return page(request, "memory.html", title="Memory", **ctx)


def _namespace(state: State, name: str) -> dict[str, Any]:
    check_namespace(name)
    stats = memory_store.namespace_stats(state.engine, [name])
    recent = memory_store.list_memories(
        state.engine, Access(None, None), namespace=name, now=datetime.now(UTC), limit=RECENT
    )
    return {
        "name": name,
        "stats": stats[0] if stats else None,
        "recent": recent,
        "grants": grants_of(state).get(name, []),
        "reads": memory_store.reads_of(state.engine, name, limit=RECENT),
    }


@router.get("/memory/{name:path}", response_class=HTMLResponse)
async def namespace_page(
    name: str, request: Request, who: Viewer = Depends(viewer), state: State = Depends(get_state)
) -> HTMLResponse:
    try:
        ctx = await run_in_threadpool(_namespace, state, name)
    except TetherError as exc:
        return page(request, "error.html", status_code=exc.http_status, title=name,
                    message=exc.message)  # fmt: skip
    if ctx["stats"] is None:
        return page(request, "error.html", status_code=404, title=name,
                    message=f"no memory namespace {name}")  # fmt: skip
    return page(request, "memory_namespace.html", title=f"Memory · {name}", **ctx)
