"""Agents and their policies (current YAML, history, diff), the tool registry (pinned and
changed tools, re-approval), API keys (age, expiry, rotation status) and the audit log with its
hash-chain verification."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from tether.core.errors import NotFoundError, TetherError
from tether.server.console.render import page
from tether.server.console.session import Viewer, admin_viewer, viewer
from tether.server.deps import State, get_state
from tether.store import agents as agent_store
from tether.store import audit as audit_store
from tether.store import keys as key_store
from tether.store import policies as policy_store
from tether.store import tools as tool_store

router = APIRouter()
AUDIT_PAGE = 100
# beyond this the chain is verified on request, not on every visit
AUTO_VERIFY_MAX = 50_000


def _agents(state: State) -> dict[str, Any]:
    agents = agent_store.list_agents(state.engine)
    latest = {p.agent: p for p in policy_store.list_latest(state.engine)}
    # agents with a policy but no runs yet are listed too
    known = {a["name"] for a in agents}
    policy_only = [name for name in latest if name not in known]
    return {"agents": agents, "latest": latest, "policy_only": policy_only}


@router.get("/agents", response_class=HTMLResponse)
async def agents_page(
    request: Request, who: Viewer = Depends(viewer), state: State = Depends(get_state)
) -> HTMLResponse:
    ctx = await run_in_threadpool(_agents, state)
    return page(request, "agents.html", title="Agents & policies", **ctx)


def _agent(state: State, name: str, diff_from: int | None, diff_to: int | None) -> dict[str, Any]:
    try:
        agent: dict[str, Any] | None = agent_store.get_agent(state.engine, name)
    except NotFoundError:
        agent = None
    history = policy_store.history(state.engine, name)
    if agent is None and not history:
        raise NotFoundError(f"no agent or policy named {name}")
    policy = policy_store.get(state.engine, name) if history else None
    diff = None
    if len(history) >= 2 or (diff_from and diff_to):
        v2 = diff_to or history[0].version
        v1 = diff_from or (history[1].version if len(history) >= 2 else v2)
        diff = {"from": v1, "to": v2, "text": policy_store.diff(state.engine, name, v1, v2)}
    return {"name": name, "agent": agent, "history": history, "policy": policy, "diff": diff}


def _int(value: str | None) -> int | None:
    # ASCII digits only (str.isdigit accepts '²'), and no more than a 64-bit column holds
    if value and value.isascii() and value.isdigit() and len(value) <= 18:
        return int(value)
    return None


@router.get("/agents/{name}", response_class=HTMLResponse)
async def agent_page(
    name: str, request: Request, who: Viewer = Depends(viewer), state: State = Depends(get_state)
) -> HTMLResponse:
    qp = request.query_params
    try:
        ctx = await run_in_threadpool(_agent, state, name, _int(qp.get("from")), _int(qp.get("to")))
    except TetherError as exc:
        return page(request, "error.html", status_code=exc.http_status, title=name,
                    message=exc.message)  # fmt: skip
    return page(request, "agent.html", title=name, **ctx)


@router.get("/tools", response_class=HTMLResponse)
async def tools_page(
    request: Request, who: Viewer = Depends(viewer), state: State = Depends(get_state)
) -> HTMLResponse:
    tools = await run_in_threadpool(tool_store.list_tools, state.engine)
    counts = {s: sum(1 for t in tools if t.status == s) for s in ("approved", "changed", "new")}
    return page(request, "tools.html", title="Tools", tools=tools, counts=counts)


@router.post("/tools/{name}/approve")
async def approve_tool(
    name: str,
    request: Request,
    who: Viewer = Depends(admin_viewer),
    state: State = Depends(get_state),
) -> Response:
    """Re-pins a changed tool to its current description (as `tether tools approve`)."""
    try:
        await run_in_threadpool(
            lambda: tool_store.approve_tool(
                state.engine, name, actor=who.actor, now=datetime.now(UTC)
            )
        )
    except TetherError as exc:
        return page(request, "error.html", status_code=exc.http_status, title="Tools",
                    message=exc.message)  # fmt: skip
    return RedirectResponse("/tools", status_code=303)


def _keys(state: State) -> dict[str, Any]:
    policy = state.settings.keys
    now = datetime.now(UTC)
    keys = [key_store.view(k, now=now, max_age_days=policy.max_age_days,
                           warn_days=policy.warn_days)
            for k in key_store.list_keys(state.engine, include_revoked=True)]  # fmt: skip
    keys.sort(key=lambda k: (k["status"] == "revoked", str(k["created_at"])))
    flagged = sum(k["status"] in ("rotate_soon", "expired", "too_old") for k in keys)
    return {"keys": keys, "policy": policy, "flagged": flagged}


@router.get("/keys", response_class=HTMLResponse)
async def keys_page(
    request: Request, who: Viewer = Depends(viewer), state: State = Depends(get_state)
) -> HTMLResponse:
    if not who.is_admin:
        return page(request, "error.html", status_code=403, title="API keys",
                    message="API keys are shown to admin keys only")  # fmt: skip
    ctx = await run_in_threadpool(_keys, state)
    return page(request, "keys.html", title="API keys", **ctx)


@router.get("/audit", response_class=HTMLResponse)
async def audit_page(
    request: Request, who: Viewer = Depends(viewer), state: State = Depends(get_state)
) -> HTMLResponse:
    qp = request.query_params
    before = _int(qp.get("before"))
    action = qp.get("action") or None
    entries, next_seq = await run_in_threadpool(
        lambda: audit_store.list_entries(state.engine, after_seq=before, limit=AUDIT_PAGE,
                                         action=action)
    )  # fmt: skip
    total = await run_in_threadpool(audit_store.count, state.engine)
    return page(request, "audit.html", title="Audit log", entries=entries, next_seq=next_seq,
                action=action, total=total, auto_verify=total <= AUTO_VERIFY_MAX)  # fmt: skip


@router.get("/audit/verify", response_class=HTMLResponse)
async def audit_verify(
    request: Request, who: Viewer = Depends(viewer), state: State = Depends(get_state)
) -> HTMLResponse:
    """Walks the whole chain; loaded after the page so the page itself stays fast."""
    report = await run_in_threadpool(audit_store.verify, state.engine)
    return page(request, "fragments/audit_verify.html", report=report)
