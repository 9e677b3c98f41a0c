"""Canary rollouts: their state, their append-only events (each also in the audit log), the
per-version figures the rule reads from the runs, and the HTTP endpoint of each agent version."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Engine, and_, case, func, insert, select, update
from sqlalchemy.engine import Connection

from tether.core.errors import BadRequestError, ConflictError, NotFoundError
from tether.core.rollout import ACTIVE, Arm
from tether.store import audit
from tether.store.engine import reading
from tether.store.tables import agent_endpoints, rollout_events, rollouts, runs, spans
from tether.store.upsert import insert_on_conflict

# kind -> (statuses it may start from, status it leads to); None keeps the status
TRANSITIONS: dict[str, tuple[frozenset[str], str | None]] = {
    "promoted": (ACTIVE, "promoted"),
    "rolled_back": (ACTIVE, "rolled_back"),
    "inconclusive": (ACTIVE, "inconclusive"),
    "paused": (frozenset({"running"}), "paused"),
    "resumed": (frozenset({"paused"}), "running"),
    "step_up": (frozenset({"running"}), None),
}


def start(
    engine: Engine,
    *,
    rollout_id: str,
    agent: str,
    baseline: str,
    candidate: str,
    percent: float,
    rule_source: str,
    rule_file: str | None,
    actor: str,
    now: datetime,
) -> dict[str, Any]:
    if baseline == candidate:
        raise BadRequestError("the baseline and the candidate are the same version; name two")
    if not 0 < percent <= 100:
        raise BadRequestError("percent must be in (0, 100], e.g. --percent 10")
    with engine.begin() as conn:
        running = _active(conn, agent)
        if running is not None:
            raise ConflictError(
                f"{agent} already has rollout {running['id']} ({running['status']}); promote, "
                "roll it back or wait for it to end first",
                code="rollout_active",
            )
        conn.execute(
            insert(rollouts).values(
                id=rollout_id,
                agent=agent,
                baseline=baseline,
                candidate=candidate,
                percent=percent,
                status="running",
                rule_source=rule_source,
                rule_file=rule_file,
                actor=actor,
                reason=f"started at {percent:g} %",
                started_at=now,
                step_started_at=now,
                updated_at=now,
            )
        )
        _event(
            conn,
            rollout_id,
            agent,
            "started",
            "running",
            percent,
            f"{candidate} at {percent:g} % against {baseline}",
            actor,
            now,
        )
    return get(engine, rollout_id)


def _event(
    conn: Connection,
    rollout_id: str,
    agent: str,
    kind: str,
    status: str,
    percent: float,
    reason: str,
    actor: str,
    now: datetime,
) -> None:
    conn.execute(
        insert(rollout_events).values(
            rollout_id=rollout_id,
            at=now,
            kind=kind,
            status=status,
            percent=percent,
            reason=reason,
            actor=actor,
        )
    )
    audit.append_in(
        conn,
        actor,
        f"rollout.{kind}",
        agent,
        {"rollout_id": rollout_id, "status": status, "percent": percent, "reason": reason},
        now,
    )


def transition(
    engine: Engine,
    rollout_id: str,
    kind: str,
    *,
    reason: str,
    actor: str,
    now: datetime,
    percent: float | None = None,
    decision: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Moves a rollout (promote, roll back, pause, resume, step up, stop); ConflictError when
    its current status does not allow it."""
    allowed, to = TRANSITIONS[kind]
    with engine.begin() as conn:
        row = conn.execute(select(rollouts).where(rollouts.c.id == rollout_id)).first()
        if row is None:
            raise NotFoundError(f"no rollout {rollout_id}; `tether rollout status` lists them")
        cur = row._mapping
        if cur["status"] not in allowed:
            raise ConflictError(
                f"rollout {rollout_id} is {cur['status']}; it cannot be {kind.replace('_', ' ')}",
                code="rollout_state",
            )
        status = to or cur["status"]
        new_percent = percent if percent is not None else cur["percent"]
        if status == "promoted":
            new_percent = 100.0
        elif status in ("rolled_back", "inconclusive"):
            new_percent = 0.0
        values: dict[str, Any] = {
            "status": status,
            "percent": new_percent,
            "reason": reason,
            "updated_at": now,
        }
        if decision is not None:
            values["decision"] = decision
            values["evaluated_at"] = now
        if kind == "step_up":
            values["step_started_at"] = now
        if status not in ACTIVE:
            values["ended_at"] = now
        conn.execute(update(rollouts).where(rollouts.c.id == rollout_id).values(**values))
        _event(conn, rollout_id, cur["agent"], kind, status, new_percent, reason, actor, now)
    return get(engine, rollout_id)


def note_evaluation(
    engine: Engine, rollout_id: str, decision: dict[str, Any], now: datetime
) -> None:
    """A 'keep collecting' evaluation: remembered on the rollout, not an event."""
    with engine.begin() as conn:
        conn.execute(
            update(rollouts)
            .where(rollouts.c.id == rollout_id)
            .values(decision=decision, evaluated_at=now, reason=decision.get("reason"))
        )


def _active(conn: Connection, agent: str) -> dict[str, Any] | None:
    q = select(rollouts).where(rollouts.c.agent == agent, rollouts.c.status.in_(ACTIVE))
    row = conn.execute(q.limit(1)).first()
    return dict(row._mapping) if row else None


def active_for(engine: Engine, agent: str) -> dict[str, Any] | None:
    with reading(engine) as conn:
        return _active(conn, agent)


def latest_for(engine: Engine, agent: str) -> dict[str, Any] | None:
    """The active rollout, else the newest ended one: what routing follows."""
    q = (
        select(rollouts)
        .where(rollouts.c.agent == agent)
        .order_by(case((rollouts.c.status.in_(ACTIVE), 0), else_=1), rollouts.c.started_at.desc())
        .limit(1)
    )
    with reading(engine) as conn:
        row = conn.execute(q).first()
    return dict(row._mapping) if row else None


def get(engine: Engine, rollout_id: str) -> dict[str, Any]:
    with reading(engine) as conn:
        row = conn.execute(select(rollouts).where(rollouts.c.id == rollout_id)).first()
    if row is None:
        raise NotFoundError(f"no rollout {rollout_id}; `tether rollout status` lists them")
    return dict(row._mapping)


def list_rollouts(
    engine: Engine, *, agent: str | None = None, active: bool = False, limit: int = 50
) -> list[dict[str, Any]]:
    q = select(rollouts).order_by(rollouts.c.started_at.desc(), rollouts.c.id).limit(limit)
    if agent:
        q = q.where(rollouts.c.agent == agent)
    if active:
        q = q.where(rollouts.c.status.in_(ACTIVE))
    with reading(engine) as conn:
        return [dict(r._mapping) for r in conn.execute(q)]


def events(engine: Engine, rollout_id: str) -> list[dict[str, Any]]:
    q = select(rollout_events).where(rollout_events.c.rollout_id == rollout_id)
    with reading(engine) as conn:
        return [dict(r._mapping) for r in conn.execute(q.order_by(rollout_events.c.id))]


def arms(
    engine: Engine, ro: dict[str, Any], target_nusd: int | None, since: datetime | None = None
) -> dict[str, Arm]:
    """Per version, the finished runs of the agent since the rollout started (or `since`):
    tasks, successes at target cost, errors, kills, runs with a policy denial, cost. One
    aggregate over the runs' covering index plus one over the denied tool spans."""
    start = since or ro["started_at"]
    versions = (ro["baseline"], ro["candidate"])
    scope = and_(
        runs.c.agent == ro["agent"],
        runs.c.version.in_(versions),
        runs.c.started_at >= start,
        runs.c.status.in_(("succeeded", "failed", "killed")),
    )
    ok = runs.c.status == "succeeded"
    if target_nusd is not None:
        ok = and_(ok, runs.c.cost_nusd <= target_nusd)
    q = (
        select(
            runs.c.version,
            func.count(),
            func.sum(case((ok, 1), else_=0)),
            func.sum(case((runs.c.status == "failed", 1), else_=0)),
            func.sum(case((runs.c.status == "killed", 1), else_=0)),
            func.coalesce(func.sum(runs.c.cost_nusd), 0),
        )
        .where(scope)
        .group_by(runs.c.version)
    )
    # The MCP gateway writes "tether denied ..." as the error of a tool call its policy denied.
    denied = (
        select(runs.c.version, func.count(func.distinct(spans.c.run_id)))
        .select_from(spans.join(runs, runs.c.id == spans.c.run_id))
        .where(scope, spans.c.kind == "tool", spans.c.error.like("tether denied %"))
        .group_by(runs.c.version)
    )
    with reading(engine) as conn:
        totals = {v: (n, s, e, k, c) for v, n, s, e, k, c in conn.execute(q)}
        violations = {v: n for v, n in conn.execute(denied)}
    out = {}
    for v in versions:
        n, s, e, k, c = totals.get(v, (0, 0, 0, 0, 0))
        out[v] = Arm(
            int(n), int(s or 0), int(e or 0), int(k or 0), int(violations.get(v, 0)), int(c or 0)
        )
    return out


def register_endpoint(engine: Engine, agent: str, version: str, url: str, now: datetime) -> None:
    if not url.startswith(("http://", "https://")):
        raise BadRequestError(f"endpoint {url!r} is not an http(s) URL")
    with engine.begin() as conn:
        row = {"agent": agent, "version": version, "url": url, "created_at": now}
        insert_on_conflict(conn, agent_endpoints, [row], ("agent", "version"), ("url",))


def endpoint_for(engine: Engine, agent: str, version: str) -> str | None:
    q = select(agent_endpoints.c.url).where(
        agent_endpoints.c.agent == agent, agent_endpoints.c.version == version
    )
    with reading(engine) as conn:
        url: str | None = conn.execute(q).scalar()
    return url
