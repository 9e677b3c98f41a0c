"""Run profiles: one narrow row per finished run (its tool sequence, cost, tokens, LLM calls,
latency and served model), materialised behind a high-water mark so that a drift check reads
these rows and never the spans; and the model change points found on the way.

A pass reads runs whose `updated_at` passed the mark (minus an overlap, because a transaction
that started earlier may commit a smaller `updated_at` after a later one), so a run that gets
late spans is profiled again. Profiling is idempotent: re-reading the overlap costs nothing
but the reading.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, and_, func, or_, select, text

from tether.core.drift import RunSample, WindowStats
from tether.core.records import TERMINAL_STATUSES
from tether.store.drift_hist import apply_profiles, read_window
from tether.store.engine import reading
from tether.store.tables import agent_models, run_profiles, runs, spans, watch_marks
from tether.store.upsert import insert_on_conflict

MARK = "profiles"
OVERLAP = timedelta(seconds=60)
SEP = "\x1f"
TASK_TYPE_ATTR = "tether.task_type"
_CHUNK = 900  # ids per IN (...) list: well under every SQLite build's parameter limit
# Any constant will do; it only has to differ from the other advisory locks tether takes.
_LOCK_KEY = 7337_0011


@dataclass(frozen=True)
class ModelChange:
    """An agent was served `model` from `changed_at` on, after `previous`."""

    agent: str
    previous: str
    model: str
    changed_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {"agent": self.agent, "previous": self.previous, "model": self.model,
                "changed_at": self.changed_at.isoformat()}  # fmt: skip


@dataclass(frozen=True)
class ProfilePass:
    profiled: int
    mark_at: datetime | None
    model_changes: tuple[ModelChange, ...]


def read_mark(conn: Connection, name: str) -> datetime | None:
    row = conn.execute(select(watch_marks.c.mark_at).where(watch_marks.c.name == name)).first()
    return None if row is None else row[0]


def write_mark(conn: Connection, name: str, at: datetime, *, now: datetime) -> None:
    insert_on_conflict(conn, watch_marks, [{"name": name, "mark_at": at, "updated_at": now}],
                       ("name",), ("mark_at", "updated_at"))  # fmt: skip


def chunks(ids: Sequence[str]) -> Iterator[list[str]]:
    for i in range(0, len(ids), _CHUNK):
        yield list(ids[i : i + _CHUNK])


def profile_runs(engine: Engine, *, now: datetime, batch: int = 2000) -> ProfilePass:
    """Profiles every finished run changed since the mark, `batch` runs per transaction (so
    span writers never wait long), and moves the mark."""
    with reading(engine) as conn:
        mark = read_mark(conn, MARK)
    cursor: tuple[datetime, str] | None = None
    total, changes = 0, list[ModelChange]()
    new_mark = mark
    while True:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # replicas profile one batch at a time: each applies the difference between a
                # run's stored profile and its new one to the histograms, which two replicas
                # reading the same old profile at once would count twice
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
            rows = _page(conn, mark, cursor, batch)
            if not rows:
                break
            profiles = _profiles(conn, rows, now)
            old = _stored(conn, [row.id for row in rows])
            update = [c.name for c in run_profiles.columns if c.name != "run_id"]
            insert_on_conflict(conn, run_profiles, profiles, ("run_id",), update)
            apply_profiles(conn, old, profiles)
            changes += _note_models(conn, profiles)
            cursor = (rows[-1].updated_at, rows[-1].id)
            if new_mark is None or cursor[0] > new_mark:
                new_mark = cursor[0]
                write_mark(conn, MARK, new_mark, now=now)
        total += len(rows)
        if len(rows) < batch:
            break
    return ProfilePass(total, new_mark, tuple(changes))


def _stored(conn: Connection, ids: list[str]) -> list[dict[str, Any]]:
    out = []
    for chunk in chunks(ids):
        q = select(run_profiles).where(run_profiles.c.run_id.in_(chunk))
        out += [dict(r._mapping) for r in conn.execute(q)]
    return out


def _page(
    conn: Connection, mark: datetime | None, cursor: tuple[datetime, str] | None, batch: int
) -> list[Any]:
    r = runs.c
    q = select(r.id, r.agent, r.version, r.user, r.status, r.started_at, r.ended_at,
               r.cost_nusd, r.input_tokens, r.output_tokens, r.llm_calls, r.updated_at)  # fmt: skip
    q = q.where(r.status.in_(sorted(TERMINAL_STATUSES)), r.agent.is_not(None))
    if cursor is not None:
        q = q.where(
            or_(r.updated_at > cursor[0], and_(r.updated_at == cursor[0], r.id > cursor[1]))
        )
    elif mark is not None:
        q = q.where(r.updated_at > mark - OVERLAP)
    return list(conn.execute(q.order_by(r.updated_at, r.id).limit(batch)).all())


def _profiles(conn: Connection, rows: list[Any], now: datetime) -> list[dict[str, Any]]:
    tools, models, task_types = _span_facts(conn, [row.id for row in rows])
    return [
        {
            "run_id": row.id, "agent": row.agent, "version": row.version, "user": row.user,
            "task_type": task_types.get(row.id), "status": row.status,
            "started_at": row.started_at, "ended_at": row.ended_at,
            "cost_nusd": int(row.cost_nusd), "tokens": int(row.input_tokens + row.output_tokens),
            "llm_calls": int(row.llm_calls), "latency_ms": _latency(row.started_at, row.ended_at),
            "tools": SEP.join(tools.get(row.id, ())), "model_served": models.get(row.id),
            "profiled_at": now,
        }
        for row in rows
    ]  # fmt: skip


def _latency(started: datetime, ended: datetime | None) -> float | None:
    return None if ended is None else (ended - started).total_seconds() * 1000.0


def _span_facts(
    conn: Connection, ids: list[str]
) -> tuple[dict[str, list[str]], dict[str, str], dict[str, str]]:
    """Per run: tool names in call order, the most used served model, the root's task type."""
    s = spans.c
    tools: dict[str, list[str]] = defaultdict(list)
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    task_types: dict[str, str] = {}
    for chunk in chunks(ids):
        q = (
            select(s.run_id, s.name)
            .where(s.run_id.in_(chunk), s.kind == "tool")
            .order_by(s.run_id, s.started_at, s.span_id)
        )
        for run_id, name in conn.execute(q):
            tools[run_id].append(name)
        q2 = (
            select(s.run_id, s.model_served, func.count())
            .where(s.run_id.in_(chunk), s.kind == "llm", s.model_served.is_not(None))
            .group_by(s.run_id, s.model_served)
        )
        for run_id, model, n in conn.execute(q2):
            counts[run_id][model] += int(n)
        q3 = select(s.run_id, s.attributes).where(s.run_id.in_(chunk), s.parent_id.is_(None))
        for run_id, attrs in conn.execute(q3):
            value = (attrs or {}).get(TASK_TYPE_ATTR)
            if isinstance(value, str) and value:
                task_types[run_id] = value[:200]
    # ties go to the alphabetically first name, so the answer does not depend on row order
    models = {rid: min(c.items(), key=lambda kv: (-kv[1], kv[0]))[0] for rid, c in counts.items()}
    return tools, models, task_types


def _note_models(conn: Connection, profiles: list[dict[str, Any]]) -> tuple[ModelChange, ...]:
    """Records each (agent, served model) first and last run; a model new to an agent that
    had another one before is a change point."""
    seen: dict[tuple[str, str], tuple[datetime, datetime]] = {}
    for p in profiles:
        if p["model_served"] is None:
            continue
        key = (p["agent"], p["model_served"])
        lo, hi = seen.get(key, (p["started_at"], p["started_at"]))
        seen[key] = (min(lo, p["started_at"]), max(hi, p["started_at"]))
    if not seen:
        return ()
    agents = sorted({a for a, _ in seen})
    known: dict[str, dict[str, tuple[datetime, datetime]]] = defaultdict(dict)
    m = agent_models.c
    for agent, model, first, last in conn.execute(
        select(m.agent, m.model, m.first_run_at, m.last_run_at).where(m.agent.in_(agents))
    ):
        known[agent][model] = (first, last)
    changes = []
    for (agent, model), (lo, hi) in sorted(seen.items(), key=lambda kv: kv[1][0]):
        before = known[agent]
        if model in before:
            first, last = before[model]
            before[model] = (min(first, lo), max(last, hi))
            continue
        older = [(last, name) for name, (first, last) in before.items() if first < lo]
        if older:
            changes.append(ModelChange(agent, max(older)[1], model, lo))
        before[model] = (lo, hi)
    rows = [{"agent": a, "model": mo, "first_run_at": f, "last_run_at": la}
            for a, models in known.items() for mo, (f, la) in models.items()
            if (a, mo) in seen]  # fmt: skip
    insert_on_conflict(
        conn, agent_models, rows, ("agent", "model"), ("first_run_at", "last_run_at")
    )
    return tuple(changes)


def model_history(engine: Engine, agent: str) -> list[dict[str, Any]]:
    """The models an agent was served, oldest first, with their first and last run."""
    m = agent_models.c
    with reading(engine) as conn:
        rows = conn.execute(
            select(m.model, m.first_run_at, m.last_run_at)
            .where(m.agent == agent)
            .order_by(m.first_run_at, m.model)
        ).all()
    return [{"model": r.model, "first_run_at": r.first_run_at, "last_run_at": r.last_run_at}
            for r in rows]  # fmt: skip


def samples(
    engine: Engine,
    agent: str,
    start: datetime,
    end: datetime,
    *,
    version: str | None = None,
    model: str | None = None,
) -> list[RunSample]:
    """The profiled runs of `agent` started in [start, end), as drift's input."""
    p = run_profiles.c
    q = select(p.run_id, p.status, p.tools, p.cost_nusd, p.tokens, p.llm_calls, p.latency_ms)
    q = q.where(p.agent == agent, p.started_at >= start, p.started_at < end)
    if version is not None:
        q = q.where(p.version == version)
    if model is not None:
        q = q.where(p.model_served == model)
    with reading(engine) as conn:
        rows = conn.execute(q).all()
    return [
        RunSample(
            r[0],
            r[1],
            tuple(r[2].split(SEP)) if r[2] else (),
            int(r[3]),
            int(r[4]),
            int(r[5]),
            r[6],
        )
        for r in rows
    ]


def window_stats(
    engine: Engine,
    agent: str,
    baseline_from: datetime,
    window_from: datetime,
    end: datetime,
    *,
    version: str | None = None,
    model: str | None = None,
    target_cost_nusd: int | None = None,
) -> tuple[WindowStats, WindowStats]:
    """The baseline [baseline_from, window_from) and window [window_from, end) of `agent`,
    from the drift histograms (store/drift_hist.py): values compared by their bins."""
    kw: dict[str, Any] = {"version": version, "model": model, "target_cost_nusd": target_cost_nusd}
    with reading(engine) as conn:
        base = read_window(conn, agent, baseline_from, window_from, **kw)
        win = read_window(conn, agent, window_from, end, **kw)
    return base, win


def latest_version(engine: Engine, agent: str, model: str) -> str | None:
    """The version of the agent's newest profiled run served by `model`."""
    p = run_profiles.c
    q = (
        select(p.version)
        .where(p.agent == agent, p.model_served == model, p.version.is_not(None))
        .order_by(p.started_at.desc())
        .limit(1)
    )
    with reading(engine) as conn:
        return conn.execute(q).scalar()


def profiled_agents(engine: Engine, since: datetime) -> list[str]:
    p = run_profiles.c
    with reading(engine) as conn:
        q = select(p.agent).where(p.started_at >= since).distinct().order_by(p.agent)
        return [a for (a,) in conn.execute(q)]
