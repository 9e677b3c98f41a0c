"""Writes spans and the runs they belong to: idempotent by (trace_id, span_id), one transaction
per batch, and a run's totals recomputed from its spans so late children are counted."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, case, func, select, update

from tether.core.records import TERMINAL_STATUSES, RunAttribution, SpanRecord
from tether.store.tables import agent_versions, agents, runs, spans
from tether.store.upsert import insert_on_conflict

_SPAN_UPDATE = (
    "parent_id", "run_id", "kind", "name", "started_at", "ended_at", "latency_ms", "input",
    "output", "model", "model_served", "input_tokens", "output_tokens", "cached_tokens",
    "cost_nusd", "cost_unknown", "ttft_ms", "status", "error", "attributes",
)  # fmt: skip


@dataclass(frozen=True)
class IngestResult:
    spans: int
    runs: tuple[str, ...]


def span_row(rec: SpanRecord) -> dict[str, Any]:
    return {
        "trace_id": rec.trace_id,
        "span_id": rec.span_id,
        "parent_id": rec.parent_id,
        "run_id": rec.run_id,
        "kind": rec.kind,
        "name": rec.name[:500],
        "started_at": rec.started_at,
        "ended_at": rec.ended_at,
        "latency_ms": rec.latency_ms,
        "input": rec.input,
        "output": rec.output,
        "model": rec.model,
        "model_served": rec.model_served,
        "input_tokens": rec.input_tokens,
        "output_tokens": rec.output_tokens,
        "cached_tokens": rec.cached_tokens,
        "cost_nusd": rec.cost_nusd,
        "cost_unknown": rec.cost_unknown,
        "ttft_ms": rec.ttft_ms,
        "status": rec.status,
        "error": rec.error,
        "attributes": rec.attributes or None,
    }


def write_spans(
    engine: Engine, records: Sequence[SpanRecord], *, now: datetime, source: str
) -> IngestResult:
    """Stores `records` atomically: all of them or, on any error, none."""
    if not records:
        return IngestResult(0, ())
    with engine.begin() as conn:
        run_ids = write_spans_in(conn, records, now=now, source=source)
    return IngestResult(len(records), run_ids)


def write_spans_in(
    conn: Connection, records: Sequence[SpanRecord], *, now: datetime, source: str
) -> tuple[str, ...]:
    """The same, inside a transaction the caller holds."""
    by_key = {(r.trace_id, r.span_id): r for r in records}  # last write of a duplicate wins
    recs = list(by_key.values())
    insert_on_conflict(conn, spans, [span_row(r) for r in recs], ("trace_id", "span_id"),
                       _SPAN_UPDATE)
    grouped: dict[str, list[SpanRecord]] = {}
    for r in recs:
        grouped.setdefault(r.run_id, []).append(r)
    _note_agents(conn, (r.attribution for r in recs), now)
    _merge_runs(conn, grouped, now=now, source=source)
    recompute_totals(conn, list(grouped), now=now)
    return tuple(grouped)


def _note_agents(conn: Connection, attrs: Iterable[RunAttribution], now: datetime) -> None:
    seen = {(a.agent, a.version) for a in attrs if a.agent}
    if not seen:
        return
    insert_on_conflict(
        conn, agents, [{"name": a, "created_at": now, "last_seen_at": now} for a, _ in seen],
        ("name",), ("last_seen_at",),
    )
    insert_on_conflict(
        conn,
        agent_versions,
        [{"agent": a, "version": v, "created_at": now, "last_seen_at": now}
         for a, v in seen if v],
        ("agent", "version"), ("last_seen_at",),
    )  # fmt: skip


def ensure_run(
    conn: Connection,
    run_id: str,
    *,
    trace_id: str | None,
    attribution: RunAttribution,
    started_at: datetime,
    source: str,
    now: datetime,
) -> None:
    """Creates the run if it does not exist yet (status `running`); never overwrites one."""
    row = {
        "id": run_id,
        "trace_id": trace_id,
        "agent": attribution.agent,
        "version": attribution.version,
        "task_id": attribution.task_id,
        "user": attribution.user,
        "status": "running",
        "started_at": started_at,
        "input_tokens": 0,
        "output_tokens": 0,
        "cached_tokens": 0,
        "cost_nusd": 0,
        "cost_unknown": False,
        "llm_calls": 0,
        "tool_calls": 0,
        "span_count": 0,
        "source": source,
        "updated_at": now,
    }
    insert_on_conflict(conn, runs, [row], ("id",))
    if attribution.agent:
        _note_agents(conn, [attribution], now)


def _merge_runs(
    conn: Connection, grouped: dict[str, list[SpanRecord]], *, now: datetime, source: str
) -> None:
    for run_id, recs in grouped.items():
        first = min(recs, key=lambda r: r.started_at)
        attribution = _best_attribution(recs)
        ensure_run(conn, run_id, trace_id=first.trace_id, attribution=attribution,
                   started_at=first.started_at, source=source, now=now)  # fmt: skip
        q = select(runs).where(runs.c.id == run_id)
        if conn.dialect.name == "postgresql":
            q = q.with_for_update()
        current = conn.execute(q).one()._mapping
        values: dict[str, Any] = {}
        for name in ("agent", "version", "task_id", "user"):
            if current[name] is None and getattr(attribution, name):
                values[name] = getattr(attribution, name)
        if first.started_at < current["started_at"]:
            values["started_at"] = first.started_at
        if current["trace_id"] is None:
            values["trace_id"] = first.trace_id
        root = next((r for r in recs if r.is_root), None)
        if root is not None:
            values.update(_root_values(root, current["status"]))
        if values:
            conn.execute(update(runs).where(runs.c.id == run_id).values(**values))


def _best_attribution(recs: list[SpanRecord]) -> RunAttribution:
    """The root span's attribution, filled in from the other spans where it is silent."""
    ordered = sorted(recs, key=lambda r: not r.is_root)
    fields = {}
    for name in ("agent", "version", "task_id", "user"):
        fields[name] = next(
            (getattr(r.attribution, name) for r in ordered if getattr(r.attribution, name)), None
        )
    return RunAttribution(**fields)


def _root_values(root: SpanRecord, status_now: str) -> dict[str, Any]:
    values: dict[str, Any] = {"input": root.input, "output": root.output}
    if root.ended_at is not None:
        values["ended_at"] = root.ended_at
    if status_now not in TERMINAL_STATUSES and root.ended_at is not None:
        values["status"] = "failed" if root.status == "error" else "succeeded"
    if root.error:
        values["error"] = root.error
    return values


def recompute_totals(conn: Connection, run_ids: list[str], *, now: datetime) -> None:
    """Sets each run's tokens, cost and call counts to the sums over its stored spans."""
    if not run_ids:
        return
    s = spans.c
    is_llm = s.kind == "llm"
    agg = conn.execute(
        select(
            s.run_id,
            func.coalesce(func.sum(s.input_tokens), 0),
            func.coalesce(func.sum(s.output_tokens), 0),
            func.coalesce(func.sum(s.cached_tokens), 0),
            func.coalesce(func.sum(s.cost_nusd), 0),
            func.max(case((s.cost_unknown, 1), else_=0)),
            func.sum(case((is_llm, 1), else_=0)),
            func.sum(case((s.kind == "tool", 1), else_=0)),
            func.count(),
        )
        .where(s.run_id.in_(run_ids))
        .group_by(s.run_id)
    ).all()
    if not agg:
        return
    conn.execute(
        update(runs)
        .where(runs.c.id == bindparam("rid"))
        .values(
            input_tokens=bindparam("it"),
            output_tokens=bindparam("ot"),
            cached_tokens=bindparam("ct"),
            cost_nusd=bindparam("cost"),
            cost_unknown=bindparam("unk"),
            llm_calls=bindparam("llm"),
            tool_calls=bindparam("tool"),
            span_count=bindparam("n"),
            updated_at=bindparam("now"),
        ),
        [
            {"rid": r[0], "it": int(r[1]), "ot": int(r[2]), "ct": int(r[3]), "cost": int(r[4]),
             "unk": bool(r[5]), "llm": int(r[6] or 0), "tool": int(r[7] or 0), "n": int(r[8]),
             "now": now}
            for r in agg
        ],
    )  # fmt: skip


def set_run_status(
    conn: Connection,
    run_id: str,
    status: str,
    *,
    now: datetime,
    reason: str | None = None,
    only_if_not_terminal: bool = True,
) -> bool:
    """Moves a run to `status` (kill, approval hold/release, end); False if nothing changed."""
    values: dict[str, Any] = {"status": status, "updated_at": now}
    if status in TERMINAL_STATUSES:
        values["ended_at"] = now
    if status == "killed":
        values["kill_reason"] = reason
    elif reason and status == "failed":
        values["error"] = reason
    q = update(runs).where(runs.c.id == run_id)
    if only_if_not_terminal:
        q = q.where(runs.c.status.not_in(TERMINAL_STATUSES))
    return bool(conn.execute(q.values(**values)).rowcount)
