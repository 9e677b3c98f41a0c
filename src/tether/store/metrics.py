"""The store-derived figures behind `/metrics`: runs, cost and tokens, refusals, kills,
approvals, policy decisions and key ages, read from the tables every replica shares (so they
agree across replicas and survive restarts; nothing here is counted in process memory)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, func, or_, select

from tether.store.costs import grouped, success_at_target
from tether.store.engine import reading
from tether.store.tables import api_keys, approvals, audit_log, budget_counters, runs, spans

# decision latency buckets (seconds): people answer in seconds to hours
APPROVAL_BUCKETS = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0)


@dataclass
class DecisionTally:
    """Policy decisions counted from the append-only audit log, read on from `seq` each time."""

    seq: int = 0
    counts: Counter[tuple[str, str]] = field(default_factory=Counter)


@dataclass
class Ledger:
    """One snapshot of everything `/metrics` derives from the store."""

    runs: list[dict[str, Any]]
    usage: list[dict[str, Any]]
    kpi: list[dict[str, Any]]
    refusals: dict[str, int]
    kills: dict[str, int]
    approvals_waiting: dict[str, int]
    oldest_waiting_s: float
    decisions: dict[str, tuple[list[int], float, int]]
    policy: dict[tuple[str, str], int]
    key_ages: list[tuple[str, str, str, float, float | None]]
    # today's capped day scopes: (kind, subject, spent_nusd, cap_nusd)
    budgets: list[tuple[str, str, int, int]] = field(default_factory=list)


def _label(value: Any) -> str:
    return "" if value is None else str(value)


def _runs(conn: Connection) -> list[dict[str, Any]]:
    r = runs.c
    agent, version, status = grouped(conn, r.agent), grouped(conn, r.version), r.status
    q = select(agent.label("agent"), version.label("version"), status.label("status"),
               func.count().label("n")).group_by(agent, version, status)  # fmt: skip
    return [{"agent": _label(x.agent), "version": _label(x.version), "status": x.status,
             "n": int(x.n)} for x in conn.execute(q)]  # fmt: skip


def _usage(conn: Connection) -> list[dict[str, Any]]:
    """Cost and tokens by agent, version, user and model: the spans' sums, which are exactly
    what the runs' totals are recomputed from."""
    s, r = spans.c, runs.c
    q = (
        select(
            r.agent, r.version, r.user, s.model,
            func.coalesce(func.sum(s.cost_nusd), 0).label("cost_nusd"),
            func.coalesce(func.sum(s.input_tokens), 0).label("input_tokens"),
            func.coalesce(func.sum(s.output_tokens), 0).label("output_tokens"),
        )
        .select_from(spans.join(runs, runs.c.id == s.run_id))
        .where((s.cost_nusd.is_not(None)) | (s.input_tokens.is_not(None)))
        .group_by(r.agent, r.version, r.user, s.model)
    )  # fmt: skip
    return [{"agent": _label(x.agent), "version": _label(x.version), "user": _label(x.user),
             "model": _label(x.model), "cost_nusd": int(x.cost_nusd),
             "input_tokens": int(x.input_tokens), "output_tokens": int(x.output_tokens)}
            for x in conn.execute(q)]  # fmt: skip


def _refusals(conn: Connection) -> dict[str, int]:
    """Budget refusals by kind of scope (`run`, `agent_day`, `user_day`, `key_day`, ...): the
    gateway records each refused call as a span carrying the scope that had no room."""
    s = spans.c
    outcome = s.attributes["tether.outcome"].as_string()
    scope = s.attributes["tether.scope"].as_string()
    q = (
        select(scope.label("scope"), func.count().label("n"))
        .where(s.kind == "other", outcome == "budget_exceeded")
        .group_by(scope)
    )
    out: Counter[str] = Counter()
    for row in conn.execute(q):
        out[_label(row.scope).split(":", 1)[0] or "unknown"] += int(row.n)
    return dict(out)


def _kills(conn: Connection) -> dict[str, int]:
    r = runs.c
    q = select(r.agent, func.count().label("n")).where(r.status == "killed").group_by(r.agent)
    return {_label(x.agent): int(x.n) for x in conn.execute(q)}


def _approvals(
    conn: Connection, now: datetime
) -> tuple[dict[str, int], float, dict[str, tuple[list[int], float, int]]]:
    a = approvals.c
    waiting = {_label(x.agent): int(x.n) for x in conn.execute(
        select(a.agent, func.count().label("n")).where(a.status == "pending").group_by(a.agent)
    )}  # fmt: skip
    oldest = conn.execute(select(func.min(a.created_at)).where(a.status == "pending")).scalar()
    oldest_s = 0.0
    if oldest is not None:
        # SQLite hands func.min back as text, not through the column's type
        at = oldest if isinstance(oldest, datetime) else datetime.fromisoformat(str(oldest))
        oldest_s = max(0.0, (now - at).total_seconds())
    decisions: dict[str, tuple[list[int], float, int]] = {}
    rows = conn.execute(
        select(a.status, a.created_at, a.decided_at).where(a.decided_at.is_not(None))
    )
    for row in rows:
        secs = max(0.0, (row.decided_at - row.created_at).total_seconds())
        buckets, total, n = decisions.get(row.status, ([0] * len(APPROVAL_BUCKETS), 0.0, 0))
        for i, bound in enumerate(APPROVAL_BUCKETS):
            if secs <= bound:
                buckets[i] += 1
        decisions[row.status] = (buckets, total + secs, n + 1)
    return waiting, oldest_s, decisions


def tally_decisions(conn: Connection, tally: DecisionTally) -> None:
    """Adds the policy decisions appended since `tally.seq` (the log is append-only)."""
    al = audit_log.c
    rows = conn.execute(
        select(al.seq, al.data).where(al.action == "policy.decision", al.seq > tally.seq)
        .order_by(al.seq)
    ).all()  # fmt: skip
    for row in rows:
        data = row.data if isinstance(row.data, dict) else {}
        tally.counts[(_label(data.get("outcome")), _label(data.get("agent")))] += 1
        tally.seq = int(row.seq)


def _key_ages(conn: Connection, now: datetime) -> list[tuple[str, str, str, float, float | None]]:
    """Per usable key (not revoked, not expired): id, name, agent, age in seconds and seconds
    until its expiry (None without one)."""
    k = api_keys.c
    rows = conn.execute(
        select(k.id, k.name, k.agent, k.created_at, k.expires_at).where(
            k.revoked_at.is_(None), or_(k.expires_at.is_(None), k.expires_at > now)
        )
    )
    return [(x.id, _label(x.name), _label(x.agent), (now - x.created_at).total_seconds(),
             (x.expires_at - now).total_seconds() if x.expires_at is not None else None)
            for x in rows]  # fmt: skip


def _day_budgets(conn: Connection, now: datetime) -> list[tuple[str, str, int, int]]:
    """Today's (UTC) capped day scopes, e.g. `agent_day:triage:2026-12-01`."""
    b = budget_counters.c
    today = now.date().isoformat()
    rows = conn.execute(
        select(b.scope, b.spent_nusd, b.cap_nusd)
        .where(b.scope.like(f"%:{today}"), b.cap_nusd.is_not(None))
        .order_by(b.scope)
    )
    out = []
    for row in rows:
        parts = str(row.scope).split(":")
        subject = ":".join(parts[1:-1])
        out.append((parts[0], subject, int(row.spent_nusd), int(row.cap_nusd)))
    return out


def read_ledger(engine: Engine, tally: DecisionTally, *, now: datetime) -> Ledger:
    """Everything the metrics derive from the store, in a few grouped reads."""
    with reading(engine) as conn:
        run_rows, usage = _runs(conn), _usage(conn)
        refusals, kills = _refusals(conn), _kills(conn)
        waiting, oldest, decisions = _approvals(conn, now)
        tally_decisions(conn, tally)
        ages = _key_ages(conn, now)
        day_budgets = _day_budgets(conn, now)
    kpi = success_at_target(engine)
    return Ledger(
        runs=run_rows, usage=usage, kpi=kpi, refusals=refusals, kills=kills,
        approvals_waiting=waiting, oldest_waiting_s=oldest, decisions=decisions,
        policy=dict(tally.counts), key_ages=ages, budgets=day_budgets,
    )  # fmt: skip


def ledger_cost_nusd(engine: Engine) -> int:
    """The whole spend the runs table records (what the cost metric must add up to)."""
    with reading(engine) as conn:
        return int(conn.execute(select(func.coalesce(func.sum(runs.c.cost_nusd), 0))).scalar_one())


__all__ = ["APPROVAL_BUCKETS", "DecisionTally", "Ledger", "ledger_cost_nusd", "read_ledger"]
