"""Runs: filter, search, sort and page through runs (store.runs.list_runs, as the API does); the
first page polls a fragment so new runs appear without a reload."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from tether.core.errors import BadRequestError, TetherError
from tether.server.console.render import page
from tether.server.console.session import Viewer, viewer
from tether.server.deps import State, get_state
from tether.store import aggregates
from tether.store import runs as run_store
from tether.store.engine import reading
from tether.store.tables import runs

router = APIRouter()

WINDOWS = {"1h": timedelta(hours=1), "24h": timedelta(days=1), "7d": timedelta(days=7),
           "30d": timedelta(days=30), "all": None}  # fmt: skip
SORT_LABELS = {
    "-started_at": "Newest first",
    "started_at": "Oldest first",
    "-cost": "Most expensive",
    "cost": "Cheapest",
    "-duration": "Longest",
    "duration": "Shortest",
}
FILTER_KEYS = (
    "q", "agent", "version", "status", "user", "task_id", "min_cost", "window", "sort", "limit",
    "substring",
)  # fmt: skip
PAGE_SIZE = 50
PAGE_SIZES = (10, 25, 50, 100, 200)


@dataclass(frozen=True)
class RunQuery:
    """The run list's query string, parsed; `params` rebuilds links that keep the filters."""

    params: dict[str, str]
    filters: run_store.RunFilters
    sort: str
    cursor: str | None
    limit: int = PAGE_SIZE
    exact_id: str | None = None

    def link(self, base: str, **changes: str | None) -> str:
        merged = {**self.params, **changes}
        kept = {k: v for k, v in merged.items() if v}
        return base + ("?" + urlencode(kept) if kept else "")


DEFAULTS = {"window": "all", "sort": "-started_at", "limit": str(PAGE_SIZE)}


def parse_query(raw: dict[str, str], now: datetime) -> RunQuery:
    """Defaults are dropped from `params`, so links stay short: /runs?q=T-4711."""
    params = {k: raw[k].strip() for k in FILTER_KEYS if raw.get(k, "").strip()}
    params = {k: v for k, v in params.items() if DEFAULTS.get(k) != v}
    min_cost = None
    if "min_cost" in params:
        try:
            min_cost = Decimal(params["min_cost"].lstrip("$"))
        except InvalidOperation:
            raise BadRequestError("min cost: a number of dollars, for example 0.50") from None
    window = params.get("window", "all")
    if window not in WINDOWS:
        raise BadRequestError(f"time: one of {', '.join(WINDOWS)}")
    span = WINDOWS[window]
    sort = params.get("sort", "-started_at")
    if sort not in SORT_LABELS:
        raise BadRequestError(f"sort: one of {', '.join(SORT_LABELS)}")
    filters = run_store.RunFilters(
        agent=params.get("agent"),
        version=params.get("version"),
        status=params.get("status"),
        user=params.get("user"),
        task_id=params.get("task_id"),
        q=params.get("q"),
        min_cost_usd=min_cost,
        started_after=now - span if span else None,
    )
    limit = params.get("limit", str(PAGE_SIZE))
    if not (limit.isascii() and limit.isdigit()) or int(limit) not in PAGE_SIZES:
        raise BadRequestError(f"page size: one of {', '.join(map(str, PAGE_SIZES))}")
    return RunQuery(params, filters, sort, raw.get("cursor") or None, int(limit))


def _load(state: State, query: RunQuery) -> tuple[list[dict[str, Any]], str | None]:
    return run_store.list_runs(
        state.engine, query.filters, sort=query.sort, limit=query.limit, cursor=query.cursor
    )


def exact_field(state: State, text: str) -> str | None:
    """The run field a pasted search text equals exactly (id, task, user, agent), if any.
    Each probe is an index lookup; a substring search has to read every run."""
    c = runs.c
    with reading(state.engine) as conn:
        for name, col in (("id", c.id), ("task_id", c.task_id), ("user", c.user),
                          ("agent", c.agent)):  # fmt: skip
            if conn.execute(select(c.id).where(col == text).limit(1)).first() is not None:
                return name
    return None


def narrow_search(state: State, query: RunQuery) -> tuple[RunQuery, str | None]:
    """A search text that is exactly a run id, task id, user or agent becomes that filter
    (unless `substring` is asked for): the common case of pasting an id stays fast."""
    q = query.filters.q
    if not q or query.params.get("substring"):
        return query, None
    field_name = exact_field(state, q.strip())
    if field_name is None:
        return query, None
    if field_name == "id":
        filters = replace(query.filters, q=None, started_after=None)
        return replace(query, filters=filters, exact_id=q.strip()), field_name
    current = getattr(query.filters, field_name)
    if current is not None and current != q.strip():
        return query, None  # the search contradicts a filter: let the substring search say so
    changes: dict[str, Any] = {"q": None, field_name: q.strip()}
    filters = replace(query.filters, **changes)
    return replace(query, filters=filters), field_name


def _rows_context(request: Request, state: State, seen: str | None) -> dict[str, Any]:
    now = datetime.now(UTC)
    try:
        query, exact = narrow_search(state, parse_query(dict(request.query_params), now))
        if query.exact_id:
            rows, next_cursor = [run_store.get_run(state.engine, query.exact_id)], None
        else:
            rows, next_cursor = _load(state, query)
        error = None
    except TetherError as exc:
        query = parse_query({}, now)
        rows, next_cursor, error, exact = [], None, exc.message, None
    seen_at = _parse_seen(seen)
    newest = max((r["started_at"] for r in rows), default=None)
    return {
        "rows": rows,
        "query": query,
        "next_link": query.link("/runs", cursor=next_cursor) if next_cursor else None,
        "poll_link": query.link("/runs/rows", seen=(newest or seen_at or now).isoformat()),
        "live": query.cursor is None and query.sort == "-started_at",
        "seen_at": seen_at,
        "filtered": any(k != "sort" for k in query.params),
        "error": error,
        "exact": exact,
        "substring_link": query.link("/runs", substring="1") if exact else None,
    }


def _parse_seen(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@router.get("/runs", response_class=HTMLResponse)
async def runs_page(
    request: Request, who: Viewer = Depends(viewer), state: State = Depends(get_state)
) -> HTMLResponse:
    ctx = await run_in_threadpool(_rows_context, request, state, None)
    agents = await run_in_threadpool(aggregates.agent_names, state.engine)
    return page(
        request,
        "runs.html",
        title="Runs",
        agents=agents,
        windows=list(WINDOWS),
        sorts=SORT_LABELS,
        statuses=run_store.RUN_STATUSES,
        page_sizes=PAGE_SIZES,
        **ctx,
    )


@router.get("/runs/rows", response_class=HTMLResponse)
async def runs_rows(
    request: Request, who: Viewer = Depends(viewer), state: State = Depends(get_state)
) -> HTMLResponse:
    """The table alone: polled by the first page, and swapped in when a filter changes."""
    ctx = await run_in_threadpool(_rows_context, request, state, request.query_params.get("seen"))
    resp = page(request, "fragments/runs_rows.html", **ctx)
    if request.headers.get("hx-request") and request.query_params.get("push"):
        resp.headers["HX-Push-Url"] = ctx["query"].link("/runs")
    return resp
