"""`/api/v1/spans`: spans across runs, filtered by run, trace or kind, newest first."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query

from tether.server.auth import Principal, require
from tether.server.deps import State, get_state
from tether.server.serialize import SpanPage, page, span_resource
from tether.store import runs as run_store

router = APIRouter(tags=["spans"])


@router.get(
    "/spans",
    response_model=SpanPage,
    summary="List spans",
    description="With `run_id`, the run's spans in start order; otherwise newest first.",
)
def list_spans(
    state: State = Depends(get_state),
    _: Principal = Depends(require("read")),
    run_id: str | None = None,
    trace_id: str | None = None,
    kind: str | None = Query(None, description="agent | llm | tool | retrieval | approval | ..."),
    limit: int = Query(100, ge=1, le=run_store.MAX_LIMIT),
    cursor: str | None = None,
) -> dict[str, Any]:
    rows, next_cursor = run_store.list_spans(
        state.engine, run_id=run_id, kind=kind, trace_id=trace_id, limit=limit, cursor=cursor
    )
    return page([span_resource(r) for r in rows], next_cursor)
