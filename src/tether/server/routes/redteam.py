"""`/api/v1/redteam/reports`: store a red-team report (`tether redteam run` posts it), list an
agent's reports, read one, and see how old each agent's last red team is."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from tether.server.auth import Principal, require
from tether.server.deps import State, get_state
from tether.store import redteam

router = APIRouter(tags=["redteam"])


class PackIn(BaseModel):
    # what the store summarises of each pack: a pack without them was a KeyError (500)
    model_config = ConfigDict(extra="allow")
    attempts: int = Field(ge=0)
    outcomes: dict[str, Any]
    attack_success_rate: dict[str, Any]  # {k, n, rate, ci95}


class ReportIn(BaseModel):
    model_config = ConfigDict(extra="allow")
    agent: str = Field(min_length=1, max_length=200)
    attempts: int = Field(ge=0)
    packs: dict[str, PackIn]


@router.post("/redteam/reports", status_code=201, summary="Store a red-team report")
async def post_report(
    body: ReportIn,
    state: State = Depends(get_state),
    principal: Principal = Depends(require("admin")),
) -> dict[str, Any]:
    rid = await run_in_threadpool(lambda: redteam.save(
        state.engine, body.model_dump(), actor=principal.actor, now=datetime.now(UTC)))  # fmt: skip
    return {"id": rid, "agent": body.agent}


@router.get("/redteam/reports", summary="Red-team reports, newest first")
async def list_reports(
    agent: str | None = Query(None, max_length=200),
    limit: int = Query(50, ge=1, le=500),
    state: State = Depends(get_state),
    _: Principal = Depends(require("read")),
) -> dict[str, Any]:
    items = await run_in_threadpool(lambda: redteam.list_reports(state.engine, agent=agent,
                                                                 limit=limit))  # fmt: skip
    return {"items": items, "next_cursor": None}


@router.get("/redteam/reports/{report_id}", summary="One red-team report, in full")
async def get_report(
    report_id: str, state: State = Depends(get_state), _: Principal = Depends(require("read"))
) -> dict[str, Any]:
    return await run_in_threadpool(redteam.get_report, state.engine, report_id)
