"""The gateway's LLM spans written on SQLite in plain SQL given to the driver, as
store.gateway_spans writes them on PostgreSQL: the spans inserted by multi-row statements, and
each run's totals moved by what the batch adds (one UPDATE per run), instead of
ingest.write_spans_in's reconcile, upsert, run merge and totals recomputed from every stored
span through SQLAlchemy (on the no-policy path, where every call is a run of its own, that was
the most expensive part of a call).

The same checks as on PostgreSQL make it equivalent to write_spans_in, in the same transaction:
no span of the batch is stored yet, every run of the batch exists (the gateway created it)
unless the batch brings its root span (a run of its own, created whole), and no stored span of
the batch's traces belongs to another run. When any fails, nothing is written and the caller
takes write_spans. SQLite has one writer at a time (writelock), so adding a batch's sums to the
run rows cannot race another writer's recompute.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import cache
from itertools import chain
from typing import Any

from sqlalchemy import Engine

from tether.core.records import SpanRecord
from tether.store.budget_sql import Busy, immediate
from tether.store.gateway_spans import _Run
from tether.store.ingest import _json
from tether.store.sqlite_rows import ROWS_PER_STATEMENT, timestamp
from tether.store.writelock import span_writer, try_span_writer

_COLS = (
    "trace_id", "span_id", "parent_id", "run_id", "kind", "name", "started_at", "ended_at",
    "latency_ms", "input", "output", "model", "model_served", "input_tokens", "output_tokens",
    "cached_tokens", "cost_nusd", "cost_unknown", "ttft_ms", "status", "error", "attributes",
)  # fmt: skip
_ROW = "(" + ", ".join("?" * len(_COLS)) + ")"
# what write_spans_in's recompute would change on a run that gains these spans (no root)
_RUN = (
    "UPDATE runs SET input_tokens = input_tokens + :it, output_tokens = output_tokens + :ot, "
    "cached_tokens = cached_tokens + :ct, cost_nusd = cost_nusd + :cost, "
    "cost_unknown = (cost_unknown OR :unknown), llm_calls = llm_calls + :llm, "
    "tool_calls = tool_calls + :tool, span_count = span_count + :n, "
    "agent = COALESCE(agent, :agent), version = COALESCE(version, :version), "
    'task_id = COALESCE(task_id, :task_id), "user" = COALESCE("user", :user), '
    "started_at = MIN(started_at, :started_at), trace_id = COALESCE(trace_id, :trace_id), "
    "updated_at = :now WHERE id = :id"
)
# a run of its own (the gateway's root span names it), created whole as write_spans_in creates
# a run that comes with its root; a conflict means it exists: write_spans_in decides then
_NEW_RUN = (
    'INSERT INTO runs (id, trace_id, agent, version, task_id, "user", status, started_at, '
    "ended_at, input, output, input_tokens, output_tokens, cached_tokens, cost_nusd, "
    "cost_unknown, llm_calls, tool_calls, span_count, error, source, updated_at) VALUES "
    "(:id, :trace_id, :agent, :version, :task_id, :user, :status, :started_at, :ended_at, "
    ":input, :output, :it, :ot, :ct, :cost, :unknown, :llm, :tool, :n, :error, 'gateway', :now) "
    "ON CONFLICT (id) DO NOTHING"
)
_AGENTS = (
    "INSERT INTO agents (name, created_at, last_seen_at) VALUES (?, ?, ?) "
    "ON CONFLICT (name) DO UPDATE SET last_seen_at = excluded.last_seen_at"
)
_VERSIONS = (
    "INSERT INTO agent_versions (agent, version, created_at, last_seen_at) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (agent, version) DO UPDATE SET last_seen_at = excluded.last_seen_at"
)


def _shape(n: int) -> int:
    """The next power of two: a few statement shapes, each prepared once by sqlite3."""
    return 1 << (n - 1).bit_length()


@cache
def _insert_sql(n: int) -> str:
    return (f"INSERT INTO spans ({', '.join(_COLS)}) VALUES {', '.join([_ROW] * n)} "
            "ON CONFLICT (trace_id, span_id) DO NOTHING")  # fmt: skip


@cache
def _foreign_sql(n: int) -> str:
    """A stored span that write_spans_in's reconcile would move or adopt: a named run's trace
    has spans of the trace's own default run, or a default run's trace has spans of another."""
    return (
        f"WITH b(trace_id, run_id) AS (VALUES {', '.join(['(?, ?)'] * n)}) "
        "SELECT 1 FROM spans s JOIN b ON s.trace_id = b.trace_id WHERE CASE WHEN "
        "b.run_id = 'run_' || b.trace_id THEN s.run_id <> b.run_id "
        "ELSE s.run_id = 'run_' || b.trace_id END LIMIT 1"
    )


def _span_row(r: SpanRecord) -> tuple[Any, ...]:
    """The values ingest._insert_spans binds on SQLite."""
    return (
        r.trace_id, r.span_id, r.parent_id, r.run_id, r.kind, r.name[:500],
        timestamp(r.started_at), timestamp(r.ended_at), r.latency_ms, r.input, r.output,
        r.model, r.model_served, r.input_tokens, r.output_tokens, r.cached_tokens, r.cost_nusd,
        int(r.cost_unknown), r.ttft_ms, r.status, r.error,
        _json(r.attributes) if r.attributes else None,
    )  # fmt: skip


def _bound(values: dict[str, Any], ts_now: str | None) -> dict[str, Any]:
    """_Run's parameters as SQLite's column types bind them."""
    values["started_at"] = timestamp(values["started_at"])
    if "ended_at" in values:
        values["ended_at"] = timestamp(values["ended_at"])
    values["now"] = ts_now
    values["unknown"] = int(values["unknown"])
    return values


def write_gateway_spans_sqlite(
    engine: Engine, records: Sequence[SpanRecord], now: datetime, *, nowait: bool
) -> bool:
    """Stores `records` in one transaction; False, with nothing stored, when the batch needs
    write_spans (a span stored already; a run missing, or the run of a root span existing;
    spans of its traces in other runs). The caller holds the writer lock (writelock); with
    `nowait` raises budget_sql.Busy instead of waiting for another process's writer."""
    if not records:
        return True
    by_key = {(r.trace_id, r.span_id): r for r in records}  # the last of a duplicate wins
    recs = [by_key[k] for k in sorted(by_key)]
    grouped: dict[str, _Run] = {}
    for r in recs:
        grouped.setdefault(r.run_id, _Run()).add(r)
    if any(len(g.roots) > 1 for g in grouped.values()):
        return False  # which root speaks for the run: write_spans_in's choice
    run_ids = sorted(grouped)
    ts = timestamp(now)
    new_runs = [_bound(grouped[rid].new_run(rid, now), ts) for rid in run_ids
                if grouped[rid].roots]  # fmt: skip
    totals = [_bound(grouped[rid].params(rid, now), ts) for rid in run_ids
              if not grouped[rid].roots]  # fmt: skip
    traces = sorted({(r.trace_id, r.run_id) for r in recs})
    traces += traces[-1:] * (_shape(len(traces)) - len(traces))  # repeats change nothing
    rows = [_span_row(r) for r in recs]
    seen = sorted({(r.attribution.agent, r.attribution.version or "") for r in recs
                   if r.attribution.agent})  # fmt: skip
    agents = [(a, ts, ts) for a in sorted({a for a, _ in seen})]
    versions = [(a, v, ts, ts) for a, v in seen if v]
    with immediate(engine, nowait=nowait) as cur:
        cur.execute(_foreign_sql(len(traces)), tuple(chain.from_iterable(traces)))
        clean = cur.fetchone() is None
        stored = 0
        done = 0
        while clean and done < len(rows):
            n = ROWS_PER_STATEMENT  # statements of 2^k rows: a few shapes, each prepared once
            while n > len(rows) - done:
                n //= 2
            cur.execute(_insert_sql(n), tuple(chain.from_iterable(rows[done : done + n])))
            stored += cur.rowcount
            done += n
        clean = clean and stored == len(rows)
        if clean and agents:  # the agent's row before the run's, as every writer takes them
            cur.executemany(_AGENTS, agents)
            if versions:
                cur.executemany(_VERSIONS, versions)
        if clean and new_runs:
            cur.executemany(_NEW_RUN, new_runs)
            clean = cur.rowcount == len(new_runs)
        if clean and totals:
            cur.executemany(_RUN, totals)
            clean = cur.rowcount == len(totals)
        if not clean:
            cur.execute("ROLLBACK")
    return clean


def store_gateway_spans(
    engine: Engine, records: Sequence[SpanRecord], now: datetime, *, nowait: bool
) -> bool | None:
    """write_gateway_spans_sqlite under this process's writer lock: True (stored), False
    (declined: the caller takes write_spans); with `nowait`, None at once when another writer
    holds the lock or the database (nothing written: the caller waits on a worker thread)."""
    with try_span_writer(engine) if nowait else span_writer(engine) as held:
        if held is False:
            return None
        try:
            return write_gateway_spans_sqlite(engine, records, now, nowait=nowait)
        except Busy:
            return None


__all__ = ["store_gateway_spans", "write_gateway_spans_sqlite"]
