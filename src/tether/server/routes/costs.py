"""`/api/v1/costs` (cost by day, agent, version, user or task) and `/api/v1/kpi` (task success
rate at target cost per agent and version, with a Wilson 95 % interval)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel

from tether.core.errors import BadRequestError
from tether.core.money import nusd_to_float
from tether.server.auth import Principal, require
from tether.server.deps import State, get_state
from tether.server.serialize import as_utc, cost_row_resource, kpi_resource
from tether.store import aggregates
from tether.store import costs as cost_store

router = APIRouter(tags=["costs"])
DEFAULT_WINDOW = timedelta(days=30)


class CostRow(BaseModel):
    key: str | None
    agent: str | None = None
    version: str | None = None
    cost_usd: float
    input_tokens: int
    output_tokens: int
    runs: int


class CostReport(BaseModel):
    group_by: str
    start: str
    end: str
    total_cost_usd: float
    # how many groups there are in all (with `limit`, items holds the costliest of them)
    groups: int
    items: list[CostRow]


class KpiRow(BaseModel):
    agent: str
    version: str | None
    target_cost_usd: float | None
    target_source: Literal["query", "policy"] | None
    finished_runs: int
    succeeded_runs: int
    avg_cost_usd: float
    successes: int
    total: int
    rate: float | None
    low: float | None
    high: float | None


class KpiReport(BaseModel):
    start: str
    end: str
    items: list[KpiRow]


def _window(start: datetime | None, end: datetime | None) -> tuple[datetime, datetime]:
    """[from, to): `to` defaults to now, `from` to 30 days before `to` (or the earliest time)."""
    end_utc = as_utc(end, "to") or datetime.now(UTC)
    start_utc = as_utc(start, "from")
    if start_utc is None:
        earliest = datetime.min.replace(tzinfo=UTC)
        start_utc = max(end_utc, earliest + DEFAULT_WINDOW) - DEFAULT_WINDOW
    return start_utc, end_utc


@router.get(
    "/costs",
    response_model=CostReport,
    summary="Cost over a time range, grouped",
    description="Runs are counted on the day they started (UTC). The range defaults to the last "
    "30 days; `from` is inclusive, `to` exclusive. With `group_by=task` or `user`, `limit=N` "
    "returns the N costliest (ties by key); `groups` and `total_cost_usd` still count them all.",
)
def costs(
    state: State = Depends(get_state),
    _: Principal = Depends(require("read")),
    group_by: Literal["day", "agent", "version", "user", "task"] = "day",
    start: datetime | None = Query(None, alias="from", description="ISO 8601; UTC if no offset"),
    end: datetime | None = Query(None, alias="to"),
    agent: str | None = None,
    limit: int | None = Query(
        None, ge=1, le=1000, description="top N by cost; only with group_by=task or user"
    ),
) -> dict[str, Any]:
    lo, hi = _window(start, end)
    if limit is not None:
        if group_by not in ("task", "user"):
            raise BadRequestError("limit: top N is by task or by user; use group_by=task or user")
        # the console's query: ranks tens of thousands of groups without materialising them
        rows, groups, total = aggregates.top_costs(state.engine, group_by, start=lo, end=hi,
                                                   agent=agent, limit=limit)  # fmt: skip
    else:
        if group_by == "day":
            # the console's function: whole UTC days come from the app's day cache
            rows = aggregates.cost_by_day_range(
                state.engine, start=lo, end=hi, now=datetime.now(UTC), agent=agent,
                cache=state.console_cache,
            )  # fmt: skip
        else:
            rows = cost_store.cost_breakdown(state.engine, group_by, start=lo, end=hi,
                                             agent=agent)  # fmt: skip
        groups, total = len(rows), sum(r["cost_nusd"] for r in rows)
    return {
        "group_by": group_by,
        "start": lo.isoformat(),
        "end": hi.isoformat(),
        "total_cost_usd": nusd_to_float(total),
        "groups": groups,
        "items": [cost_row_resource(r) for r in rows],
    }


@router.get(
    "/kpi",
    response_model=KpiReport,
    summary="Task success rate at target cost, per agent and version",
    description="Of the finished runs (succeeded, failed, killed) started in the range, the "
    "share that succeeded at a cost at or under the target. The target is `target_cost_usd`, "
    "else the agent's policy run budget (`budgets.run.max_cost_usd`), else none (plain success "
    "rate). `low`/`high` bound the rate with a Wilson 95 % interval.",
)
def kpi(
    state: State = Depends(get_state),
    _: Principal = Depends(require("read")),
    target_cost_usd: Decimal | None = Query(None, ge=0, le=1_000_000_000),
    start: datetime | None = Query(None, alias="from"),
    end: datetime | None = Query(None, alias="to"),
    agent: str | None = None,
) -> dict[str, Any]:
    lo, hi = _window(start, end)
    rows = cost_store.success_at_target(
        state.engine, target_cost_usd=target_cost_usd, start=lo, end=hi, agent=agent
    )
    return {"start": lo.isoformat(), "end": hi.isoformat(),
            "items": [kpi_resource(r) for r in rows]}  # fmt: skip
