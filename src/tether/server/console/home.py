"""Home: per agent and version the KPI (task success rate at target cost), runs per day, cost
today against the day budget, p95 duration, approvals waiting and cost anomaly alerts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import func, select
from starlette.concurrency import run_in_threadpool

from tether.server.console import evals, sources, watch
from tether.server.console.render import page
from tether.server.console.session import Viewer, viewer
from tether.server.deps import State, get_state
from tether.store import aggregates
from tether.store import costs as cost_store
from tether.store import policies as policy_store
from tether.store import redteam as redteam_store
from tether.store.engine import reading
from tether.store.tables import runs

router = APIRouter()


def _home_data(state: State, now: datetime) -> dict[str, Any]:
    engine = state.engine
    cache = state.console_cache
    stats = aggregates.agent_overview(engine, now=now, cache=cache)
    since = now - timedelta(days=aggregates.KPI_DAYS)
    # a 7-day rate moves slowly: recomputed at most once a minute (as the p95 durations)
    rates = aggregates.cached(cache, ("kpi", since.date().isoformat()), aggregates.P95_TTL_S,
                           lambda: cost_store.success_at_target(engine, start=since))  # fmt: skip
    kpis = {(k["agent"], k["version"]): k for k in rates}
    for s in stats:
        s.kpi = kpis.get((s.agent, s.version))
    days = aggregates.day_list(now, aggregates.SPARK_DAYS)
    by_agent = aggregates.merge_by_agent(stats)
    anomalies = watch.cost_alerts(state, now - timedelta(days=7))
    pending = sources.pending_approvals(state)
    budgets = sources.day_budgets(state, {a: v[-1] for a, v in by_agent.items()}, now)
    with reading(engine) as conn:
        any_run = conn.execute(select(runs.c.id).limit(1)).first() is not None
        running = conn.execute(
            select(func.count()).where(runs.c.status.in_(("running", "awaiting_approval")))
        ).scalar_one()
    totals: dict[str, Any] = {
        "runs_today": sum(s.runs_per_day[-1] for s in stats),
        "cost_today": sum(s.cost_today_nusd for s in stats),
        "running": int(running),
        "pending": sum(pending.values()),
    }
    finished = sum(k["finished_runs"] for k in kpis.values())
    hits = sum(k["successes"] for k in kpis.values())
    totals["kpi"] = hits / finished if finished else None
    chart = {"days": days, "series": {a: v for a, v in sorted(by_agent.items())}}
    return {
        # days since each agent's last red team (None: never); flagged past STALE_DAYS
        "redteam_age": redteam_store.age_days(engine, sorted({s.agent for s in stats}), now=now),
        "redteam_stale_days": redteam_store.STALE_DAYS,
        **evals.home_summary(state),
        "no_policies": not policy_store.list_latest(engine),
        "stats": stats,
        "days": days,
        "anomalies": anomalies,
        "anomaly_agents": {
            a.agent
            for a in anomalies
            if a.status == "open" and a.bucket_at and a.bucket_at >= now - timedelta(days=1)
        },
        "pending": pending,
        "budgets": budgets,
        "any_run": any_run,
        "totals": totals,
        "chart": chart,
    }


@router.get("/", response_class=HTMLResponse)
async def home(
    request: Request, who: Viewer = Depends(viewer), state: State = Depends(get_state)
) -> HTMLResponse:
    now = datetime.now(UTC)
    data = await run_in_threadpool(_home_data, state, now)
    base = str(state.settings.public_url or request.base_url).rstrip("/")
    return page(request, "home.html", title="Home", base_url=base, **data)
