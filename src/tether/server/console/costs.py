"""Costs: spend per task, day, user, agent and version (store.costs, as the API), day budgets
and their burn, cost anomalies highlighted, and the same table as CSV."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool

from tether.core.errors import BadRequestError, TetherError
from tether.core.money import nusd_to_usd, usd_to_nusd
from tether.server.console import sources, watch
from tether.server.console.render import page
from tether.server.console.session import Viewer, viewer
from tether.server.deps import State, get_state
from tether.store import aggregates
from tether.store import budgets as budget_store
from tether.store import costs as cost_store

router = APIRouter()
WINDOWS = {"24h": 1, "7d": 7, "14d": 14, "30d": 30, "90d": 90}
GROUP_LABELS = {"day": "Day", "agent": "Agent", "version": "Agent version", "user": "User",
                "task": "Task"}  # fmt: skip
MAX_ROWS = 200


def _params(request: Request) -> tuple[str, str, str | None]:
    group = request.query_params.get("group", "agent")
    window = request.query_params.get("window", "7d")
    agent = request.query_params.get("agent") or None
    if group not in GROUP_LABELS:
        raise BadRequestError(f"group: one of {', '.join(GROUP_LABELS)}")
    if window not in WINDOWS:
        raise BadRequestError(f"window: one of {', '.join(WINDOWS)}")
    return group, window, agent


def _breakdown(state: State, group: str, window: str, agent: str | None,
               now: datetime) -> list[dict[str, Any]]:  # fmt: skip
    start = now - timedelta(days=WINDOWS[window])
    return cost_store.cost_breakdown(state.engine, group, start=start, agent=agent)


def _global_burn(state: State, now: datetime) -> sources.Burn | None:
    cap = state.settings.budgets.global_day_usd
    snap = budget_store.snapshot(state.engine, f"global_day:{now.date().isoformat()}")
    if cap is None and snap is None:
        return None
    cap_nusd = snap[0].cap_nusd if snap and snap[0].cap_nusd else None
    if cap_nusd is None and cap is not None:
        cap_nusd = usd_to_nusd(cap)
    return sources.Burn("global day", snap[1].spent_nusd if snap else 0, cap_nusd)


def _table(
    state: State, group: str, window: str, agent: str | None, now: datetime
) -> tuple[list[dict[str, Any]], int, int]:
    """Rows (at most MAX_ROWS), how many there are, and their total cost. Agents and versions
    come from store.costs.cost_breakdown as in the API; days from
    store.aggregates.cost_by_day_range as in the API (whole UTC days, so the first day is not
    cut, served from the day cache); tasks and users, which run to tens of thousands, from
    a top-N query that never materialises the rest (the CSV export has them all)."""
    cache = state.console_cache
    if group == "day":
        days = aggregates.day_list(now, WINDOWS[window])
        first = datetime.fromisoformat(days[0]).replace(tzinfo=UTC)
        rows = aggregates.cost_by_day_range(
            state.engine, start=first, end=first + timedelta(days=len(days)), now=now,
            agent=agent, cache=cache,
        )  # fmt: skip
    elif group in ("task", "user"):
        start = now - timedelta(days=WINDOWS[window])
        return aggregates.top_costs(state.engine, group, start=start, agent=agent, limit=MAX_ROWS)
    else:
        rows = _breakdown(state, group, window, agent, now)
    return rows[:MAX_ROWS], len(rows), sum(r["cost_nusd"] for r in rows)


def _context(state: State, group: str, window: str, agent: str | None) -> dict[str, Any]:
    now = datetime.now(UTC)
    rows, row_count, total = _table(state, group, window, agent, now)
    days = aggregates.day_list(now, aggregates.SPARK_DAYS)
    cache = state.console_cache
    by_agent = aggregates.daily_cost_by_agent(state.engine, days=days, agent=agent, cache=cache)
    anomalies = watch.cost_alerts(state, now - timedelta(days=aggregates.SPARK_DAYS))
    flagged_days = {a.bucket_at.date().isoformat() for a in anomalies if a.bucket_at}
    recent = now - timedelta(days=3)
    flagged_agents = {
        a.agent for a in anomalies if a.agent and a.bucket_at and a.bucket_at >= recent
    }
    top = sorted(by_agent, key=lambda a: -sum(by_agent[a]))[:8]
    return {
        "rows": rows,
        "row_count": row_count,
        "total": total,
        "max_cost": max((r["cost_nusd"] for r in rows), default=0),
        "anomalies": anomalies,
        "flagged_days": flagged_days,
        "flagged_agents": flagged_agents,
        "budgets": sources.day_budgets(state, {a: v[-1] for a, v in by_agent.items()}, now),
        "global_burn": _global_burn(state, now),
        "chart": {"days": days, "series": {a: by_agent[a] for a in top}},
    }


@router.get("/costs", response_class=HTMLResponse)
async def costs_page(
    request: Request, who: Viewer = Depends(viewer), state: State = Depends(get_state)
) -> HTMLResponse:
    try:
        group, window, agent = _params(request)
    except TetherError as exc:
        return page(request, "error.html", status_code=400, title="Costs", message=exc.message)
    ctx = await run_in_threadpool(_context, state, group, window, agent)
    return page(request, "costs.html", title="Costs", group=group, window=window, agent=agent,
                groups=GROUP_LABELS, windows=list(WINDOWS), **ctx)  # fmt: skip


@router.get("/costs.csv")
async def costs_csv(
    request: Request, who: Viewer = Depends(viewer), state: State = Depends(get_state)
) -> Response:
    try:
        group, window, agent = _params(request)
    except TetherError as exc:
        return Response(exc.message + "\n", status_code=400, media_type="text/plain")
    rows = await run_in_threadpool(_breakdown, state, group, window, agent, datetime.now(UTC))
    buf = io.StringIO()
    out = csv.writer(buf)
    out.writerow([group, "runs", "input_tokens", "output_tokens", "cost_usd"])
    for r in rows:
        out.writerow([r["key"] if r["key"] is not None else "", r["runs"], r["input_tokens"],
                      r["output_tokens"], str(nusd_to_usd(r["cost_nusd"]))])  # fmt: skip
    name = f"tether-costs-{group}-{window}.csv"
    return Response(buf.getvalue(), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})  # fmt: skip
