"""Approvals: held tool calls with their arguments, run context and the policy's reason;
approve or deny with a reason (admin); the list refreshes itself while nobody is typing."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from tether.core.errors import BadRequestError, TetherError
from tether.server.console.login import safe_next
from tether.server.console.render import page
from tether.server.console.session import Viewer, admin_viewer, viewer
from tether.server.deps import State, get_state
from tether.store import approvals as approval_store
from tether.store import tools as registry
from tether.store.engine import reading
from tether.store.tables import runs

router = APIRouter()
RECENT = 25


def _runs_by_id(state: State, ids: set[str]) -> dict[str, dict[str, Any]]:
    if not ids:
        return {}
    c = runs.c
    q = select(c.id, c.agent, c.version, c.task_id, c.user, c.status, c.cost_nusd, c.llm_calls,
               c.tool_calls, c.started_at, c.input).where(c.id.in_(sorted(ids)))  # fmt: skip
    with reading(state.engine) as conn:
        return {r.id: dict(r._mapping) for r in conn.execute(q)}


def _context(state: State) -> dict[str, Any]:
    pending = approval_store.list_approvals(state.engine, status="pending", limit=200)
    recent = [a for a in approval_store.list_approvals(state.engine, limit=RECENT + len(pending))
              if not a.pending][:RECENT]  # fmt: skip
    context = _runs_by_id(state, {a.run_id for a in pending + recent if a.run_id})
    # each pending hold's run taint, so the reviewer sees what the run has read
    taint = {a.run_id: sorted(registry.run_tags(state.engine, a.run_id))
             for a in pending if a.run_id}  # fmt: skip
    return {"pending": pending, "recent": recent, "runs": context, "taint": taint}


@router.get("/approvals", response_class=HTMLResponse)
async def approvals_page(
    request: Request, who: Viewer = Depends(viewer), state: State = Depends(get_state)
) -> HTMLResponse:
    ctx = await run_in_threadpool(_context, state)
    return page(request, "approvals.html", title="Approvals", **ctx)


@router.get("/approvals/list", response_class=HTMLResponse)
async def approvals_list(
    request: Request, who: Viewer = Depends(viewer), state: State = Depends(get_state)
) -> HTMLResponse:
    ctx = await run_in_threadpool(_context, state)
    return page(request, "fragments/approvals_list.html", **ctx)


@router.post("/approvals/{approval_id}/decide")
async def decide(
    approval_id: str,
    request: Request,
    decision: str = Form(""),
    reason: str = Form(""),
    scope: str = Form("call"),
    next: str = Form("/approvals"),
    who: Viewer = Depends(admin_viewer),
    state: State = Depends(get_state),
) -> Response:
    """Approve or deny a pending hold, as `tether approvals approve|deny` and the API do."""
    message, ok = "", True
    try:
        if decision not in ("approve", "deny"):
            raise BadRequestError("choose approve or deny")
        done = await run_in_threadpool(
            lambda: approval_store.decide(state.engine, approval_id, approve=decision == "approve",
                                          actor=who.actor, reason=reason.strip() or None,
                                          now=datetime.now(UTC), scope=scope)
        )  # fmt: skip
        # as the API does: wake this process's waiters now rather than at their next poll
        state.approval_wakers.wake(approval_id)
        message = f"{done.tool}: {done.status}."
    except TetherError as exc:
        message, ok = exc.message, False
    if not request.headers.get("hx-request"):
        # a plain form (the run page's inline buttons) goes back where it came from
        return RedirectResponse(safe_next(next, "/approvals"), status_code=303)
    ctx = await run_in_threadpool(_context, state)
    return page(request, "fragments/approvals_list.html", message=message, ok=ok, **ctx)


@router.get("/approvals/badge", response_class=HTMLResponse)
async def approvals_badge(
    request: Request, who: Viewer = Depends(viewer), state: State = Depends(get_state)
) -> HTMLResponse:
    """The count of waiting holds next to "Approvals" in the navigation."""
    pending = await run_in_threadpool(
        lambda: approval_store.list_approvals(state.engine, status="pending", limit=100)
    )
    n = len(pending)
    body = f'<span class="count" aria-label="{n} waiting">{n}</span>' if n else ""
    return HTMLResponse(body, headers={"Cache-Control": "no-store"})
