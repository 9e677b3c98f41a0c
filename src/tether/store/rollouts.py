"""Canary rollouts: their state, their append-only events (each also in the audit log), the
per-version figures the rule reads from the runs, and the HTTP endpoint of each agent version."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, and_, case, func, insert, or_, select, update
from sqlalchemy.engine import Connection

from tether.core.errors import BadRequestError, ConflictError, NotFoundError, PolicyDeniedError
from tether.core.rollout import ACTIVE, Arm
from tether.store import audit
from tether.store.engine import reading
from tether.store.tables import agent_endpoints, rollout_events, rollouts, runs, spans
from tether.store.upsert import insert_on_conflict

POLICY_DENIED = PolicyDeniedError.type
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


FINISHED = ("succeeded", "failed", "killed")
# A run is written with its own clock's `now` and committed a little later; anything updated
# within this margin of a cached count is read again.
COMMIT_LAG = timedelta(seconds=60)
STUCK = timedelta(hours=1)
Totals = dict[str, tuple[int, int, int, int, int, int]]  # tasks, ok, errors, kills, cost, denials


def _count(conn: Connection, ro: dict[str, Any], target: int | None, lo: datetime,
           hi: datetime | None = None, open_since: datetime | None = None,
           ) -> tuple[Totals, datetime | None]:  # fmt: skip
    """Per version, the finished runs started in [lo, hi), and the start of the earliest run
    since `open_since` not finished yet: one pass over the covering index. A run has a policy
    violation when one of its error spans (a partial index) carries a gateway's structured
    denial: an MCP `deny` decision or an LLM `policy_denied` outcome, whatever the error text
    says."""
    scope = and_(
        runs.c.agent == ro["agent"],
        runs.c.version.in_((ro["baseline"], ro["candidate"])),
        runs.c.started_at >= lo,
    )
    if hi is not None:
        scope = and_(scope, runs.c.started_at < hi)
    done = runs.c.status.in_(FINISHED)
    ok = runs.c.status == "succeeded"
    if target is not None:
        ok = and_(ok, runs.c.cost_nusd <= target)
    decision = spans.c.attributes[("tether.decision", "decision")].as_string()
    outcome = spans.c.attributes["tether.outcome"].as_string()
    denied = select(spans.c.run_id).where(
        spans.c.status == "error", or_(decision == "deny", outcome == POLICY_DENIED)
    )
    q = (
        select(
            runs.c.version,
            func.sum(case((done, 1), else_=0)),
            func.sum(case((ok, 1), else_=0)),
            func.sum(case((runs.c.status == "failed", 1), else_=0)),
            func.sum(case((runs.c.status == "killed", 1), else_=0)),
            func.coalesce(func.sum(case((done, runs.c.cost_nusd), else_=0)), 0),
            func.sum(case((and_(done, runs.c.id.in_(denied)), 1), else_=0)),
            func.min(
                case(
                    (or_(done, runs.c.started_at < (open_since or lo)), None),
                    else_=runs.c.started_at,
                )
            ),
        )
        .where(scope)
        .group_by(runs.c.version)
    )
    out: Totals = {}
    first_open: datetime | None = None
    for v, n, k, e, kills, cost, bad, opened in conn.execute(q):
        out[v] = (int(n or 0), int(k or 0), int(e or 0), int(kills or 0), int(cost or 0),
                  int(bad or 0))  # fmt: skip
        if opened is not None:
            opened = opened if opened.tzinfo else opened.replace(tzinfo=UTC)
            first_open = opened if first_open is None else min(first_open, opened)
    return out, first_open


_NONE = (0, 0, 0, 0, 0, 0)


def _add(a: Totals, b: Totals, sign: int = 1) -> Totals:
    out: Totals = {}
    for v in {*a, *b}:
        x, y = a.get(v, _NONE), b.get(v, _NONE)
        out[v] = tuple(p + sign * q for p, q in zip(x, y, strict=True))  # type: ignore[assignment]
    return out


@dataclass
class _Counted:
    upto: datetime  # every finished run that started before this is in `totals`
    as_of: datetime  # when they were read
    totals: Totals


@dataclass
class ArmsCache:
    """Incremental rollout figures: per rollout, the counts of the runs that had all finished
    when last read, so that the next evaluation reads only the runs since. A cached count is
    dropped when any run it covers was written since (a late span's cost, a kill, a run
    ingested with an old start), so it is never stale."""

    entries: dict[tuple[str, datetime, int | None], _Counted] = field(default_factory=dict)

    def arms(
        self, engine: Engine, ro: dict[str, Any], target_nusd: int | None, now: datetime,
        since: datetime | None = None,
    ) -> dict[str, Arm]:  # fmt: skip
        start = since or ro["started_at"]
        key = (ro["id"], start, target_nusd)
        with reading(engine) as conn:
            cached = self.entries.get(key)
            if cached is None or _changed(conn, ro, start, cached):
                cached = _Counted(start, now, {})
            # everything since the count; its finished part (older than the commit lag and
            # than any recent run still open) joins the count. A run left open for longer
            # than STUCK does not hold the count back: if it ends, the check above sees it.
            fresh, first_open = _count(conn, ro, target_nusd, cached.upto, None, now - STUCK)
            frontier = min(now - COMMIT_LAG, first_open or now)
            kept = _Counted(cached.upto, now, cached.totals)
            if frontier > cached.upto:
                recent, _ = _count(conn, ro, target_nusd, frontier)
                kept = _Counted(frontier, now, _add(cached.totals, _add(fresh, recent, -1)))
        if len(self.entries) > 1000:
            self.entries.clear()
        self.entries[key] = kept
        return _arms(ro, _add(cached.totals, fresh))


def _changed(conn: Connection, ro: dict[str, Any], start: datetime, c: _Counted) -> bool:
    """Was any run the cached count covers written since it was read? Read off the index of
    recently updated runs: the agent and version are wrapped so that no planner walks the
    rollout's whole history by the agent's index instead."""
    q = select(runs.c.started_at).where(
        runs.c.updated_at >= c.as_of - COMMIT_LAG,
        func.coalesce(runs.c.agent, "") == ro["agent"],
        func.coalesce(runs.c.version, "").in_((ro["baseline"], ro["candidate"])),
    )
    return any(start <= at < c.upto for (at,) in conn.execute(q))


def _arms(ro: dict[str, Any], totals: Totals) -> dict[str, Arm]:
    out = {}
    for v in (ro["baseline"], ro["candidate"]):
        n, k, e, kills, cost, denied = totals.get(v, _NONE)
        out[v] = Arm(n, k, e, kills, denied, cost)
    return out


def arms(
    engine: Engine, ro: dict[str, Any], target_nusd: int | None, since: datetime | None = None
) -> dict[str, Arm]:
    """Per version, the finished runs of the agent since the rollout started (or `since`):
    tasks, successes at target cost, errors, kills, runs with a policy violation, cost. Read
    whole; `ArmsCache.arms` is the same figures read incrementally."""
    with reading(engine) as conn:
        totals, _ = _count(conn, ro, target_nusd, since or ro["started_at"])
    return _arms(ro, totals)


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
