"""`/api/v1/approvals`: list held calls, approve or deny them, and long-poll one until decided.
A decision wakes waiters in every server process within ~50 ms (they poll the store)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from tether.core.errors import NotFoundError
from tether.server.auth import Principal, require
from tether.server.deps import State, get_state
from tether.store import approvals, grants

router = APIRouter(tags=["approvals"])

MAX_WAIT_S = 60.0


class DecisionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str | None = Field(None, max_length=2000)
    scope: Literal["call", "run", "counterparty"] = Field(
        "call",
        description="call: this call only; run: this tool with these arguments for the rest of "
        "the run; counterparty: the value that caused the hold, for this tool and agent",
    )


class WaitOut(BaseModel):
    id: str
    status: str = Field(description="pending | approved | denied | expired")
    reason: str | None
    decided_by: str | None


def _visible(principal: Principal, approval: approvals.Approval) -> approvals.Approval:
    """Agent keys see only their own agent's holds; admin and read keys see all."""
    if principal.has("read") or approval.agent == principal.agent:
        return approval
    raise NotFoundError(f"no approval {approval.id!r}; see `tether approvals list`")


@router.get("/approvals", summary="List held calls")
async def list_approvals(
    status: str | None = Query(None, description="pending | approved | denied | expired"),
    run_id: str | None = Query(None, max_length=64),
    limit: int = Query(100, ge=1, le=1000),
    cursor: str | None = Query(None, max_length=500),
    state: State = Depends(get_state),
    principal: Principal = Depends(require("read", "agent")),
) -> dict[str, Any]:
    # agent keys see only their own agent's holds
    agent = None if principal.has("read") else (principal.agent or "")
    items, next_cursor = await run_in_threadpool(
        lambda: approvals.page_approvals(
            state.engine, status=status, run_id=run_id, agent=agent, limit=limit, cursor=cursor
        )
    )
    return {"items": [a.to_dict() for a in items], "next_cursor": next_cursor}


@router.get("/approvals/grants", summary="Live scoped approvals (run and counterparty grants)")
async def list_grants(
    agent: str | None = Query(None, max_length=200),
    state: State = Depends(get_state),
    _: Principal = Depends(require("read")),
) -> dict[str, Any]:
    items = await run_in_threadpool(lambda: grants.list_grants(state.engine, agent=agent))
    return {"items": [g.to_dict() for g in items], "next_cursor": None}


@router.post("/approvals/grants/{grant_id}/revoke", summary="Revoke a scoped approval")
async def revoke_grant(
    grant_id: str,
    state: State = Depends(get_state),
    principal: Principal = Depends(require("admin")),
) -> dict[str, Any]:
    done = await run_in_threadpool(lambda: grants.revoke(
        state.engine, grant_id, actor=principal.actor, now=datetime.now(UTC)))  # fmt: skip
    return done.to_dict()


@router.get("/approvals/{approval_id}", summary="One held call")
async def get_approval(
    approval_id: str,
    state: State = Depends(get_state),
    principal: Principal = Depends(require("read", "agent")),
) -> dict[str, Any]:
    found = await run_in_threadpool(approvals.get, state.engine, approval_id)
    return _visible(principal, found).to_dict()


async def _decide(state: State, approval_id: str, approve: bool, principal: Principal,
                  body: DecisionIn | None) -> dict[str, Any]:  # fmt: skip
    reason = body.reason if body else None
    scope = body.scope if body else "call"
    done = await run_in_threadpool(lambda: approvals.decide(
        state.engine, approval_id, approve=approve, actor=principal.actor, reason=reason,
        now=datetime.now(UTC), scope=scope,
    ))  # fmt: skip
    state.approval_wakers.wake(approval_id)
    return done.to_dict()


@router.post("/approvals/{approval_id}/approve", summary="Approve a held call")
async def approve(
    approval_id: str,
    body: DecisionIn | None = None,
    state: State = Depends(get_state),
    principal: Principal = Depends(require("admin")),
) -> dict[str, Any]:
    return await _decide(state, approval_id, True, principal, body)


@router.post("/approvals/{approval_id}/deny", summary="Deny a held call")
async def deny(
    approval_id: str,
    body: DecisionIn | None = None,
    state: State = Depends(get_state),
    principal: Principal = Depends(require("admin")),
) -> dict[str, Any]:
    return await _decide(state, approval_id, False, principal, body)


@router.get(
    "/approvals/{approval_id}/wait",
    response_model=WaitOut,
    summary="Long-poll until the call is decided (or timeout_s passes)",
)
async def wait(
    approval_id: str,
    timeout_s: float = Query(30.0, ge=0, le=MAX_WAIT_S),
    state: State = Depends(get_state),
    principal: Principal = Depends(require("read", "agent")),
) -> dict[str, Any]:
    _visible(principal, await run_in_threadpool(approvals.get, state.engine, approval_id))
    with state.approval_wakers.watch(approval_id) as event:
        done = await approvals.wait(state.engine, approval_id, timeout_s=timeout_s, wake=event)
    return {"id": done.id, "status": done.status, "reason": done.decision_reason,
            "decided_by": done.decided_by}  # fmt: skip
