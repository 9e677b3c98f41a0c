"""`/api/v1/runs`: list (filters, sorts, cursor pages), create, one run with its span tree."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from fastapi import APIRouter, Depends, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from tether.core.errors import PermissionDeniedError
from tether.core.ids import make_id
from tether.core.records import RunAttribution
from tether.core.semtext import redact_text
from tether.server.auth import Principal, require
from tether.server.deps import State, get_state
from tether.server.openapi import errors
from tether.server.serialize import (
    RunDetail,
    RunPage,
    SpanPage,
    as_utc,
    page,
    run_detail,
    run_resource,
    span_resource,
)
from tether.store import runs as run_store

router = APIRouter(tags=["runs"])


class RunCreate(BaseModel):
    """A run started by an agent (or a harness) before its first LLM call."""

    model_config = ConfigDict(extra="forbid")
    id: str | None = Field(None, description="defaults to run_<random>", max_length=64)
    task_id: str | None = Field(None, max_length=200, examples=["INV-1042"])
    agent: str | None = Field(None, max_length=200, description="defaults to the key's agent")
    version: str | None = Field(None, max_length=200, examples=["v3"])
    user: str | None = Field(None, max_length=200, examples=["alice"])
    input: Any = Field(None, description="text, or any JSON (stored as its JSON text)")


@router.get(
    "/runs",
    response_model=RunPage,
    summary="List runs",
    description="Newest first by default. Filters combine with AND; `q` searches id, task, "
    "agent and user. Pages are keyset cursors: pass `next_cursor` back as `cursor`.",
)
def list_runs(
    state: State = Depends(get_state),
    _: Principal = Depends(require("read")),
    agent: str | None = None,
    version: str | None = None,
    status: str | None = Query(
        None, description="running | succeeded | failed | killed | awaiting_approval"
    ),
    user: str | None = None,
    task_id: str | None = None,
    started_after: datetime | None = Query(None, description="ISO 8601; UTC if no offset"),
    started_before: datetime | None = None,
    # le: beyond a billion dollars the nano-dollar column would overflow; no run costs that
    min_cost_usd: Decimal | None = Query(None, ge=0, le=1_000_000_000),
    max_cost_usd: Decimal | None = Query(None, ge=0, le=1_000_000_000),
    q: str | None = Query(None, max_length=200),
    sort: str = Query(
        "-started_at", description="started_at | cost | duration; a leading - is descending"
    ),
    limit: int = Query(50, ge=1, le=run_store.MAX_LIMIT),
    cursor: str | None = None,
) -> dict[str, Any]:
    filters = run_store.RunFilters(
        agent=agent, version=version, status=status, user=user, task_id=task_id,
        started_after=as_utc(started_after, "started_after"),
        started_before=as_utc(started_before, "started_before"),
        min_cost_usd=min_cost_usd, max_cost_usd=max_cost_usd, q=q,
    )  # fmt: skip
    rows, next_cursor = run_store.list_runs(state.engine, filters, sort, limit, cursor)
    return page([run_resource(r) for r in rows], next_cursor)


@router.post("/runs", status_code=201, response_model=RunDetail, summary="Create a run",
             responses=errors(409))  # fmt: skip
async def create_run(
    body: RunCreate,
    state: State = Depends(get_state),
    principal: Principal = Depends(require("agent", "ingest")),
) -> dict[str, Any]:
    agent = body.agent or principal.agent
    if principal.agent and not principal.has("admin") and agent != principal.agent:
        raise PermissionDeniedError(
            f"this key speaks for agent {principal.agent}, not {agent}", code="wrong_agent"
        )
    raw = body.input
    text = raw if raw is None or isinstance(raw, str) else json.dumps(raw)
    text = redact_text(text, tuple(state.settings.redact_fields))
    attribution = RunAttribution(agent=agent, version=body.version, task_id=body.task_id,
                                 user=body.user)  # fmt: skip
    run_id = body.id or make_id("run", os.urandom(12))
    row = await run_in_threadpool(
        run_store.create_run, state.engine, run_id=run_id, attribution=attribution, input=text,
        now=datetime.now(UTC),
    )  # fmt: skip
    return run_detail(row, [])


@router.get(
    "/runs/{run_id}",
    response_model=RunDetail,
    summary="One run with its span tree",
    description="`spans` holds the run's root spans; each has `children`, in start order.",
)
def get_run(
    run_id: str, state: State = Depends(get_state), _: Principal = Depends(require("read"))
) -> dict[str, Any]:
    row = run_store.get_run(state.engine, run_id)
    return run_detail(row, run_store.span_tree(state.engine, run_id))


@router.get("/runs/{run_id}/spans", response_model=SpanPage, summary="A run's spans, flat")
def run_spans(
    run_id: str,
    state: State = Depends(get_state),
    _: Principal = Depends(require("read")),
    kind: str | None = None,
    limit: int = Query(100, ge=1, le=run_store.MAX_LIMIT),
    cursor: str | None = None,
) -> dict[str, Any]:
    run_store.get_run(state.engine, run_id)  # 404 for an unknown run
    rows, next_cursor = run_store.list_spans(
        state.engine, run_id=run_id, kind=kind, limit=limit, cursor=cursor
    )
    return page([span_resource(r) for r in rows], next_cursor)
