"""Writes spans and the runs they belong to: idempotent by (trace_id, span_id), one transaction
per batch, and a run's totals recomputed from its spans so late children are counted."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from functools import lru_cache
from typing import Any

import orjson
from sqlalchemy import (
    Connection,
    Engine,
    Table,
    bindparam,
    case,
    func,
    literal,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect

from tether.core.records import TERMINAL_STATUSES, RunAttribution, SpanRecord, run_id_for_trace
from tether.store import sqlite_rows
from tether.store.tables import agent_versions, agents, runs, spans
from tether.store.writelock import span_writer

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
    with span_writer(engine), engine.begin() as conn:
        run_ids = write_spans_in(conn, records, now=now, source=source)
    return IngestResult(len(records), run_ids)


def write_spans_in(
    conn: Connection, records: Sequence[SpanRecord], *, now: datetime, source: str
) -> tuple[str, ...]:
    """The same, inside a transaction the caller holds. A batch costs a fixed number of
    statements (spans, agents, runs insert, runs read, totals, runs update), whatever its size."""
    by_key = {(r.trace_id, r.span_id): r for r in records}  # last write of a duplicate wins
    # rows in key order, so concurrent batches take PostgreSQL row locks in the same order
    recs = [by_key[k] for k in sorted(by_key)]
    recs, moved_to = _reconcile_run_ids(conn, recs)
    _insert_spans(conn, recs)
    grouped: dict[str, list[SpanRecord]] = {}
    for r in recs:
        grouped.setdefault(r.run_id, []).append(r)
    _note_agents(conn, (r.attribution for r in recs), now)
    _merge_runs(conn, grouped, now=now, source=source, recompute=moved_to)
    return tuple(grouped)


def upsert_spans(conn: Connection, records: Sequence[SpanRecord]) -> None:
    """The spans alone, in key order, without their runs' bookkeeping (which the caller does:
    store.eval_attempts ends the runs of an eval attempt and sums their totals itself)."""
    _insert_spans(conn, records)


def _reconcile_run_ids(
    conn: Connection, recs: list[SpanRecord]
) -> tuple[list[SpanRecord], set[str]]:
    """Keeps a trace in one run when only its root names the run (`tether.run_id`) and the
    children travel in another batch: children that come first are moved to the named run
    when it arrives; children that come later join it. Returns the records and the runs that
    received moved spans (their totals must be recomputed)."""
    named: dict[str, set[str]] = {}
    rootless: set[str] = set()
    with_root = {r.trace_id for r in recs if r.is_root}
    for r in recs:
        if r.run_id != run_id_for_trace(r.trace_id):
            named.setdefault(r.trace_id, set()).add(r.run_id)
        elif r.trace_id not in with_root:
            rootless.add(r.trace_id)
    moved_to: set[str] = set()
    single = {t: next(iter(ids)) for t, ids in named.items() if len(ids) == 1}
    if single:
        # one indexed probe for the whole batch; the moves themselves are rare
        has_default = spans.c.run_id == literal("run_").concat(spans.c.trace_id)
        q = select(spans.c.trace_id).distinct().where(spans.c.trace_id.in_(sorted(single)))
        for trace_id in sorted(conn.execute(q.where(has_default)).scalars()):
            default, run_id = run_id_for_trace(trace_id), single[trace_id]
            conn.execute(
                update(spans)
                .where(spans.c.trace_id == trace_id, spans.c.run_id == default)
                .values(run_id=run_id)
            )
            moved_to.add(run_id)
            conn.execute(runs.delete().where(runs.c.id == default, runs.c.source == "otlp"))
    lookup = sorted(rootless - set(named))
    if not lookup:
        return recs, moved_to
    stored: dict[str, set[str]] = {}
    q = select(spans.c.trace_id, spans.c.run_id).distinct().where(spans.c.trace_id.in_(lookup))
    for trace_id, run_id in conn.execute(q):
        if run_id != run_id_for_trace(trace_id):
            stored.setdefault(trace_id, set()).add(run_id)
    adopt = {t: next(iter(ids)) for t, ids in stored.items() if len(ids) == 1}
    if not adopt:
        return recs, moved_to
    return [
        replace(r, run_id=adopt[r.trace_id])
        if r.trace_id in adopt and r.run_id == run_id_for_trace(r.trace_id)
        else r
        for r in recs
    ], moved_to


_SPAN_COLS = ("trace_id", "span_id", *_SPAN_UPDATE)


@lru_cache(maxsize=8)
def _span_upsert_sql(dialect: Dialect) -> tuple[str, bool]:
    """The spans upsert compiled once: (SQL text, positional parameters?)."""
    stmt = _upsert(dialect.name, spans, ("trace_id", "span_id"), _SPAN_UPDATE)
    compiled = stmt.compile(dialect=dialect, column_keys=list(_SPAN_COLS))
    if compiled.positional and list(compiled.positiontup or ()) != list(_SPAN_COLS):
        raise RuntimeError("spans upsert parameters are not in column order")
    return compiled.string, bool(compiled.positional)


def _insert_spans(conn: Connection, recs: Sequence[SpanRecord]) -> None:
    """Rows built here, not by SQLAlchemy (its per-row parameter processing costs more than the
    database's own work, and span ingest is the hot path). Values are exactly what the column
    types would bind (tests/store/test_ingest.py reads them back through them)."""
    sql, positional = _span_upsert_sql(conn.dialect)
    is_sqlite = conn.dialect.name == "sqlite"
    ts: Any = sqlite_rows.timestamp if is_sqlite else _pg_ts
    rows: list[Any] = []
    for r in recs:
        values = (
            r.trace_id, r.span_id, r.parent_id, r.run_id, r.kind, r.name[:500],
            ts(r.started_at), ts(r.ended_at), r.latency_ms, r.input, r.output, r.model,
            r.model_served, r.input_tokens, r.output_tokens, r.cached_tokens, r.cost_nusd,
            int(r.cost_unknown) if is_sqlite else bool(r.cost_unknown), r.ttft_ms, r.status,
            r.error, _json(r.attributes) if r.attributes else None,
        )  # fmt: skip
        rows.append(values if positional else dict(zip(_SPAN_COLS, values, strict=True)))
    if not is_sqlite:
        conn.exec_driver_sql(sql, rows)  # psycopg pipelines an executemany
        return
    sqlite_rows.execute(conn, sql, rows)


def _pg_ts(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise ValueError("naive datetime given; tether stores UTC-aware timestamps")
    return value


_encode_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _json(value: dict[str, Any]) -> str:
    """Compact JSON, as the stdlib writes it, in a tenth of its time (orjson); the stdlib for
    what orjson refuses (integers beyond 64 bits)."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return _encode_json(value)


@lru_cache(maxsize=64)
def _upsert(dialect: str, table: Table, keys: tuple[str, ...], update_cols: tuple[str, ...]) -> Any:
    """INSERT … ON CONFLICT built once per shape: building it costs more than running it."""
    mod: Any = postgresql if dialect == "postgresql" else sqlite
    stmt = mod.insert(table)
    if update_cols:
        return stmt.on_conflict_do_update(
            index_elements=list(keys), set_={c: stmt.excluded[c] for c in update_cols}
        )
    return stmt.on_conflict_do_nothing(index_elements=list(keys))


_AGENT_COLS = ("name", "created_at", "last_seen_at")
_VERSION_COLS = ("agent", "version", "created_at", "last_seen_at")


def _note_agents(conn: Connection, attrs: Iterable[RunAttribution], now: datetime) -> None:
    seen = sorted({(a.agent, a.version or "") for a in attrs if a.agent})
    if not seen:
        return
    dialect = conn.dialect.name
    names = sorted({a for a, _ in seen})
    if dialect == "sqlite":
        ts = sqlite_rows.timestamp(now)
        named = [(a, ts, ts) for a in names]
        sqlite_rows.upsert(conn, agents, ("name",), ("last_seen_at",), _AGENT_COLS, named)
        versions_rows = [(a, v, ts, ts) for a, v in seen if v]
        if versions_rows:
            keys = ("agent", "version")
            sqlite_rows.upsert(conn, agent_versions, keys, ("last_seen_at",), _VERSION_COLS,
                           versions_rows)  # fmt: skip
        return
    conn.execute(
        _upsert(dialect, agents, ("name",), ("last_seen_at",)),
        [{"name": a, "created_at": now, "last_seen_at": now} for a in names],
    )
    versions = [{"agent": a, "version": v, "created_at": now, "last_seen_at": now}
                for a, v in seen if v]  # fmt: skip
    if versions:
        conn.execute(
            _upsert(dialect, agent_versions, ("agent", "version"), ("last_seen_at",)), versions
        )


def _new_run_row(
    run_id: str, trace_id: str | None, attribution: RunAttribution, started_at: datetime,
    source: str, now: datetime,
) -> dict[str, Any]:  # fmt: skip
    return {
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
    """Creates the run if it does not exist yet (status `running`); never overwrites one.
    The agent's row first, then the run's: every writer of both takes them in that order
    (write_spans_in, gateway_spans), else PostgreSQL aborts one of two as a deadlock."""
    if attribution.agent:
        _note_agents(conn, [attribution], now)
    row = _new_run_row(run_id, trace_id, attribution, started_at, source, now)
    conn.execute(_upsert(conn.dialect.name, runs, ("id",), ()), [row])


_MERGED = ("agent", "version", "task_id", "user", "started_at", "trace_id", "status", "input",
           "output", "ended_at", "error")  # fmt: skip
_TOTALS = ("input_tokens", "output_tokens", "cached_tokens", "cost_nusd", "cost_unknown",
           "llm_calls", "tool_calls", "span_count")  # fmt: skip


def _merge_runs(
    conn: Connection,
    grouped: dict[str, list[SpanRecord]],
    *,
    now: datetime,
    source: str,
    recompute: set[str] | frozenset[str] = frozenset(),
) -> None:
    """Creates each new run complete (totals from the batch) in one INSERT … RETURNING; runs
    that already existed get their fields filled in and totals recomputed from stored spans.

    A run created by this transaction has no spans but this batch's: every span write goes
    through here and creates its run in the same transaction (on PostgreSQL a concurrent
    writer of the same run waits on the new row, then takes the recompute path)."""
    run_ids = sorted(grouped)
    firsts = {rid: min(grouped[rid], key=lambda r: r.started_at) for rid in run_ids}
    attributions = {rid: _best_attribution(grouped[rid]) for rid in run_ids}
    rows = []
    for rid in run_ids:
        first = firsts[rid]
        row = _new_run_row(rid, first.trace_id, attributions[rid], first.started_at, source, now)
        row.update(input=None, output=None, ended_at=None, error=None)
        root = next((r for r in grouped[rid] if r.is_root), None)
        if root is not None:
            row.update(_root_values(root, "running"))
        row.update(_batch_totals(grouped[rid]))
        rows.append(row)
    if conn.dialect.name == "sqlite":
        values = [tuple(sqlite_rows.bound(row[c]) for c in _RUN_COLS) for row in rows]
        created = set(sqlite_rows.upsert(conn, runs, ("id",), (), _RUN_COLS, values, "id"))
    else:
        created = set(conn.execute(_insert_runs_returning(conn.dialect.name), rows).scalars())
    existing = [rid for rid in run_ids if rid not in created or rid in recompute]
    if existing:
        _update_existing(conn, existing, grouped, firsts, attributions, now)


# the columns of a new run's row (_new_run_row and the root span's fields), in table order
_RUN_COLS = tuple(c.name for c in runs.c if c.name in {
    "id", "trace_id", "agent", "version", "task_id", "user", "status", "started_at",
    "input_tokens", "output_tokens", "cached_tokens", "cost_nusd", "cost_unknown", "llm_calls",
    "tool_calls", "span_count", "source", "updated_at", "input", "output", "ended_at", "error",
})  # fmt: skip


@lru_cache(maxsize=4)
def _insert_runs_returning(dialect: str) -> Any:
    return _upsert(dialect, runs, ("id",), ()).returning(runs.c.id)


def _batch_totals(recs: list[SpanRecord]) -> dict[str, Any]:
    """What `_totals` would compute if these were the run's only spans."""
    it = ot = ct = cost = llm = tool = 0
    unknown = False
    for r in recs:
        it += r.input_tokens or 0
        ot += r.output_tokens or 0
        ct += r.cached_tokens or 0
        cost += r.cost_nusd or 0
        unknown = unknown or r.cost_unknown
        if r.kind == "llm":
            llm += 1
        elif r.kind == "tool":
            tool += 1
    return {"input_tokens": it, "output_tokens": ot, "cached_tokens": ct, "cost_nusd": cost,
            "cost_unknown": unknown, "llm_calls": llm, "tool_calls": tool,
            "span_count": len(recs)}  # fmt: skip


def _update_existing(
    conn: Connection, run_ids: list[str], grouped: dict[str, list[SpanRecord]],
    firsts: dict[str, SpanRecord], attributions: dict[str, RunAttribution], now: datetime,
) -> None:  # fmt: skip
    q = select(runs.c.id, *(runs.c[c] for c in _MERGED)).where(runs.c.id.in_(run_ids))
    q = q.order_by(runs.c.id)
    if conn.dialect.name == "postgresql":
        q = q.with_for_update()
    current = {row.id: dict(row._mapping) for row in conn.execute(q)}
    totals = _totals(conn, run_ids)
    params = []
    for rid in run_ids:
        values = current[rid]
        first, attribution = firsts[rid], attributions[rid]
        root = next((r for r in grouped[rid] if r.is_root), None)
        for name in ("agent", "version", "task_id", "user"):
            # The root span speaks for the run: what it says replaces what earlier children
            # implied (a child may only carry a fallback such as the resource's service.name).
            said = getattr(root.attribution, name) if root is not None else None
            if said:
                values[name] = said
            elif values[name] is None and getattr(attribution, name):
                values[name] = getattr(attribution, name)
        if first.started_at < values["started_at"]:
            values["started_at"] = first.started_at
        if values["trace_id"] is None:
            values["trace_id"] = first.trace_id
        if root is not None:
            values.update(_root_values(root, values["status"]))
        values.update(totals.get(rid, {}))
        params.append({"rid": rid, "now": now, **{f"v_{k}": values[k] for k in _MERGED + _TOTALS}})
    conn.execute(_run_update(), params)


@lru_cache(maxsize=1)
def _run_update() -> Any:
    return (
        update(runs)
        .where(runs.c.id == bindparam("rid"))
        .values(updated_at=bindparam("now"), **{c: bindparam(f"v_{c}") for c in _MERGED + _TOTALS})
    )


def _best_attribution(recs: list[SpanRecord]) -> RunAttribution:
    """The root span's attribution, filled in from the other spans where it is silent."""
    root = next((r.attribution for r in recs if r.is_root), None)
    if root is not None and root.agent and root.version and root.task_id and root.user:
        return root
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


def _totals(conn: Connection, run_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Each run's tokens, cost and call counts summed over its stored spans."""
    s = spans.c
    agg = conn.execute(
        select(
            s.run_id,
            func.coalesce(func.sum(s.input_tokens), 0),
            func.coalesce(func.sum(s.output_tokens), 0),
            func.coalesce(func.sum(s.cached_tokens), 0),
            func.coalesce(func.sum(s.cost_nusd), 0),
            func.max(case((s.cost_unknown, 1), else_=0)),
            func.sum(case((s.kind == "llm", 1), else_=0)),
            func.sum(case((s.kind == "tool", 1), else_=0)),
            func.count(),
        )
        .where(s.run_id.in_(run_ids))
        .group_by(s.run_id)
    ).all()
    return {
        r[0]: {"input_tokens": int(r[1]), "output_tokens": int(r[2]), "cached_tokens": int(r[3]),
               "cost_nusd": int(r[4]), "cost_unknown": bool(r[5]), "llm_calls": int(r[6] or 0),
               "tool_calls": int(r[7] or 0), "span_count": int(r[8])}
        for r in agg
    }  # fmt: skip


def recompute_totals(conn: Connection, run_ids: list[str], *, now: datetime) -> None:
    """Sets each run's tokens, cost and call counts to the sums over its stored spans."""
    if not run_ids:
        return
    totals = _totals(conn, run_ids)
    if not totals:
        return
    conn.execute(
        update(runs)
        .where(runs.c.id == bindparam("rid"))
        .values(updated_at=bindparam("now"), **{c: bindparam(f"v_{c}") for c in _TOTALS}),
        [{"rid": rid, "now": now, **{f"v_{k}": v for k, v in t.items()}}
         for rid, t in sorted(totals.items())],
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
