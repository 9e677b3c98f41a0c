"""Agents and their versions as seen in runs: run counts, cost, last seen."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, case, func, select

from tether.core.errors import NotFoundError
from tether.store.engine import reading
from tether.store.tables import agent_versions, agents, runs


def _run_stats(group: tuple[Any, ...]) -> Any:
    r = runs.c
    return select(
        *group,
        func.count().label("runs"),
        func.sum(case((r.status == "running", 1), else_=0)).label("running"),
        func.sum(case((r.status == "succeeded", 1), else_=0)).label("succeeded"),
        func.sum(case((r.status == "failed", 1), else_=0)).label("failed"),
        func.sum(case((r.status == "killed", 1), else_=0)).label("killed"),
        func.coalesce(func.sum(r.cost_nusd), 0).label("cost_nusd"),
        func.max(r.started_at).label("last_run_at"),
    ).group_by(*group)


def _stats(row: Any) -> dict[str, Any]:
    if row is None:
        return {"runs": 0, "running": 0, "succeeded": 0, "failed": 0, "killed": 0,
                "cost_nusd": 0, "last_run_at": None}  # fmt: skip
    return {
        "runs": int(row.runs),
        "running": int(row.running or 0),
        "succeeded": int(row.succeeded or 0),
        "failed": int(row.failed or 0),
        "killed": int(row.killed or 0),
        "cost_nusd": int(row.cost_nusd or 0),
        "last_run_at": row.last_run_at,
    }


def list_agents(engine: Engine) -> list[dict[str, Any]]:
    """Every known agent with its versions (names), run counts, total cost and last seen."""
    with reading(engine) as conn:
        base = [dict(r._mapping) for r in conn.execute(select(agents).order_by(agents.c.name))]
        stats = {r.agent: r for r in conn.execute(_run_stats((runs.c.agent,)))}
        versions: dict[str, list[str]] = {}
        q = select(agent_versions.c.agent, agent_versions.c.version).order_by(
            agent_versions.c.agent, agent_versions.c.created_at, agent_versions.c.version
        )
        for a, v in conn.execute(q):
            versions.setdefault(a, []).append(v)
    out = []
    for agent in base:
        out.append({**agent, "versions": versions.get(agent["name"], []),
                    **_stats(stats.get(agent["name"]))})  # fmt: skip
    return out


def get_agent(engine: Engine, name: str) -> dict[str, Any]:
    """One agent with per-version statistics, or NotFoundError."""
    with reading(engine) as conn:
        row = conn.execute(select(agents).where(agents.c.name == name)).first()
        if row is None:
            raise NotFoundError(f"no agent {name}; `GET /api/v1/agents` lists them")
        agent = dict(row._mapping)
        total = conn.execute(_run_stats(()).where(runs.c.agent == name)).first()
        per_version = {
            r.version: r
            for r in conn.execute(_run_stats((runs.c.version,)).where(runs.c.agent == name))
        }
        vrows = conn.execute(
            select(agent_versions)
            .where(agent_versions.c.agent == name)
            .order_by(agent_versions.c.created_at, agent_versions.c.version)
        ).all()
    versions = [
        {"version": v.version, "created_at": v.created_at, "last_seen_at": v.last_seen_at,
         **_stats(per_version.get(v.version))}
        for v in vrows
    ]  # fmt: skip
    return {**agent, **_stats(total), "versions": versions}
