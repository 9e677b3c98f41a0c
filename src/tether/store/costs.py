"""Cost aggregates over runs (by day, agent, version, user or task) and the KPI: task success
rate at target cost per agent and version, with a Wilson 95 % interval."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, get_args

from sqlalchemy import (
    ColumnElement,
    Connection,
    Date,
    Engine,
    and_,
    case,
    cast,
    func,
    literal,
    select,
)
from sqlalchemy.sql.elements import UnaryExpression
from sqlalchemy.sql.operators import custom_op

from tether.core.errors import BadRequestError
from tether.core.money import nusd_to_usd, parse_usd, usd_to_nusd
from tether.core.records import TERMINAL_STATUSES
from tether.core.stats import success_rate
from tether.store.engine import reading
from tether.store.tables import policies, runs

GroupBy = Literal["day", "agent", "version", "user", "task"]
GROUP_BYS: tuple[str, ...] = get_args(GroupBy)


def day_of(conn: Connection, column: Any) -> ColumnElement[Any]:
    """The UTC day of a timestamp column: text `YYYY-MM-DD` on SQLite, a date on PostgreSQL."""
    if conn.dialect.name == "sqlite":
        # SQLite stores UTC timestamps as ISO text; date() reads its first ten characters.
        return func.date(column)
    return cast(func.timezone("UTC", column), Date)


def grouped(conn: Connection, column: Any) -> ColumnElement[Any]:
    """`column` for GROUP BY. On SQLite a unary `+` keeps the planner from walking
    `ix_runs_agent_started` (a row lookup per run) instead of the covering `ix_runs_rollup`."""
    if conn.dialect.name == "sqlite":
        return UnaryExpression(column, operator=custom_op("+"), type_=column.type)
    return column  # type: ignore[no-any-return]


def _range(start: datetime | None, end: datetime | None) -> list[ColumnElement[bool]]:
    if start is not None and end is not None and end <= start:
        raise BadRequestError("to: must be later than from")
    conds: list[ColumnElement[bool]] = []
    if start is not None:
        conds.append(runs.c.started_at >= start)
    if end is not None:
        conds.append(runs.c.started_at < end)
    return conds


def cost_breakdown(
    engine: Engine,
    group_by: str,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    agent: str | None = None,
) -> list[dict[str, Any]]:
    """Rows of `{key, cost_nusd, input_tokens, output_tokens, runs}` (plus `agent` and
    `version` when grouped by version), largest cost first; by day, in date order."""
    if group_by not in GROUP_BYS:
        raise BadRequestError(f"group_by: must be one of {', '.join(GROUP_BYS)}")
    r = runs.c
    conds = _range(start, end)
    if agent is not None:
        conds.append(r.agent == agent)
    with reading(engine) as conn:
        keys: list[ColumnElement[Any]]
        if group_by == "day":
            keys = [day_of(conn, r.started_at).label("key")]
        elif group_by == "version":
            keys = [
                grouped(conn, r.agent).label("agent"),
                grouped(conn, r.version).label("version"),
            ]
        elif group_by == "task":
            keys = [r.task_id.label("key")]
        else:
            keys = [grouped(conn, r.agent if group_by == "agent" else r.user).label("key")]
        cost = func.coalesce(func.sum(r.cost_nusd), 0).label("cost_nusd")
        q = (
            select(
                *keys,
                cost,
                func.coalesce(func.sum(r.input_tokens), 0).label("input_tokens"),
                func.coalesce(func.sum(r.output_tokens), 0).label("output_tokens"),
                func.count().label("runs"),
            )
            .where(*conds)
            .group_by(*keys)
        )
        q = q.order_by(keys[0]) if group_by == "day" else q.order_by(cost.desc(), *keys)
        rows = [dict(x._mapping) for x in conn.execute(q)]
    for row in rows:
        if group_by == "day" and not isinstance(row["key"], str):
            row["key"] = row["key"].isoformat()
        if group_by == "version":
            row["key"] = f"{row['agent']}@{row['version']}"
        for name in ("cost_nusd", "input_tokens", "output_tokens", "runs"):
            row[name] = int(row[name])
    return rows


def policy_run_budgets(conn: Connection) -> dict[str, int]:
    """Each agent's `budgets.run.max_cost_usd` from its newest policy version, in nano-dollars."""
    out: dict[str, int] = {}
    q = select(policies.c.agent, policies.c.document).order_by(policies.c.agent, policies.c.version)
    for agent, document in conn.execute(q):
        raw = ((document or {}).get("budgets") or {}).get("run") or {}
        value = raw.get("max_cost_usd") if isinstance(raw, dict) else None
        out.pop(agent, None)  # a newer version without a run budget drops the older one's
        if value is not None:
            try:
                out[agent] = usd_to_nusd(parse_usd(value))
            except (InvalidOperation, TypeError, ValueError):
                continue
    return out


def success_at_target(
    engine: Engine,
    *,
    target_cost_usd: Decimal | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    agent: str | None = None,
) -> list[dict[str, Any]]:
    """Per agent and version: of the finished runs (succeeded, failed, killed), the share that
    succeeded at a cost <= the target. The target is `target_cost_usd` if given, else the
    agent's policy run budget, else none (then it is the plain success rate)."""
    if target_cost_usd is not None and target_cost_usd < 0:
        raise BadRequestError("target_cost_usd: must not be negative")
    r = runs.c
    conds = [*_range(start, end), r.status.in_(sorted(TERMINAL_STATUSES)), r.agent.is_not(None)]
    if agent is not None:
        conds.append(r.agent == agent)
    with reading(engine) as conn:
        budgets = {} if target_cost_usd is not None else policy_run_budgets(conn)
        ok: ColumnElement[bool] = r.status == "succeeded"
        if target_cost_usd is not None:
            ok = and_(ok, r.cost_nusd <= literal(usd_to_nusd(target_cost_usd)))
        elif budgets:
            # agents without a run budget have no target: plain success
            cap = case(*((r.agent == a, t) for a, t in budgets.items()), else_=r.cost_nusd)
            ok = and_(ok, r.cost_nusd <= cap)
        agent_col, version_col = grouped(conn, r.agent), grouped(conn, r.version)
        q = (
            select(
                agent_col.label("agent"),
                version_col.label("version"),
                func.count().label("finished"),
                func.sum(case((r.status == "succeeded", 1), else_=0)).label("succeeded"),
                func.sum(case((ok, 1), else_=0)).label("at_target"),
                func.coalesce(func.sum(r.cost_nusd), 0).label("cost_nusd"),
            )
            .where(*conds)
            .group_by(agent_col, version_col)
            .order_by(agent_col, version_col)
        )
        rows = conn.execute(q).all()
    out = []
    for row in rows:
        if target_cost_usd is not None:
            tgt, source = usd_to_nusd(target_cost_usd), "query"
        elif row.agent in budgets:
            tgt, source = budgets[row.agent], "policy"
        else:
            tgt, source = None, None
        finished, at_target = int(row.finished), int(row.at_target or 0)
        out.append({
            "agent": row.agent,
            "version": row.version,
            "target_cost_nusd": tgt,
            "target_source": source,
            "finished_runs": finished,
            "succeeded_runs": int(row.succeeded or 0),
            "avg_cost_usd": float(nusd_to_usd(int(row.cost_nusd)) / finished),
            **success_rate(at_target, finished).to_dict(),
        })  # fmt: skip
    return out
