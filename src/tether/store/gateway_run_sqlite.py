"""A named run's first call through the gateway on SQLite, in plain SQL given to the driver: the
run created if new (ingest.ensure_run's rows: its agent, its version, the run), then read back
with its kill state and the caps it set for itself, in one transaction.

Through SQLAlchemy Core the same transaction (two upserts built as constructs, two selects)
cost more than the reserve of the call it admits (issue 9: a new run every 10 calls on the
budgeted path). The values bound and read are those of the column types, so rows are alike.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.engine import Dialect

from tether.core.records import RunAttribution
from tether.store.budget_sql import Busy, immediate
from tether.store.sqlite_rows import timestamp
from tether.store.tables import runs
from tether.store.writelock import span_writer, try_span_writer

_AGENT = (
    "INSERT INTO agents (name, created_at, last_seen_at) VALUES (?, ?, ?) "
    "ON CONFLICT (name) DO UPDATE SET last_seen_at = excluded.last_seen_at"
)
_VERSION = (
    "INSERT INTO agent_versions (agent, version, created_at, last_seen_at) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (agent, version) DO UPDATE SET last_seen_at = excluded.last_seen_at"
)
# ingest._new_run_row: a running run with nothing counted yet; never overwrites one
_RUN = (
    'INSERT INTO runs (id, trace_id, agent, version, task_id, "user", status, started_at, '
    "input_tokens, output_tokens, cached_tokens, cost_nusd, cost_unknown, llm_calls, "
    "tool_calls, span_count, source, updated_at) "
    "VALUES (?, ?, ?, ?, ?, ?, 'running', ?, 0, 0, 0, 0, 0, 0, 0, 0, ?, ?) "
    "ON CONFLICT (id) DO NOTHING"
)
_READ = (
    "SELECT r.started_at, r.agent, r.status, r.kill_reason, r.attributes, c.run_id, "
    "c.max_cost_nusd, c.max_tokens, c.max_llm_calls FROM runs r "
    "LEFT JOIN run_caps c ON c.run_id = r.id WHERE r.id = ?"
)


@dataclass(frozen=True)
class RunState:
    """What the gateway needs of a run at its first call here."""

    started_at: datetime
    agent: str | None
    status: str
    kill_reason: str | None
    attributes: Any
    caps: dict[str, int | None] | None  # the caps it set for itself (threads.caps_in)


@cache
def _readers(dialect: Dialect) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    """How SQLAlchemy reads the runs' timestamps and JSON attributes back."""
    ts = runs.c.started_at.type.dialect_impl(dialect).result_processor(dialect, None)
    js = runs.c.attributes.type.dialect_impl(dialect).result_processor(dialect, None)
    assert ts is not None and js is not None
    return ts, js


def ensure_run_sqlite(
    engine: Engine, run_id: str, *, trace_id: str | None, attribution: RunAttribution,
    started_at: datetime, source: str, now: datetime, nowait: bool,
) -> RunState | None:  # fmt: skip
    """Creates the run if it does not exist yet and reads it back, under this process's writer
    lock; with `nowait`, None at once (nothing written) when another writer holds the lock or
    the database."""
    ts_now = timestamp(now)
    with try_span_writer(engine) if nowait else span_writer(engine) as held:
        if held is False:
            return None
        try:
            with immediate(engine, nowait=nowait) as cur:
                if attribution.agent:  # the agent's row before the run's (ingest.ensure_run)
                    cur.execute(_AGENT, (attribution.agent, ts_now, ts_now))
                    if attribution.version:
                        cur.execute(_VERSION, (attribution.agent, attribution.version, ts_now,
                                               ts_now))  # fmt: skip
                cur.execute(_RUN, (run_id, trace_id, attribution.agent, attribution.version,
                                   attribution.task_id, attribution.user, timestamp(started_at),
                                   source, ts_now))  # fmt: skip
                cur.execute(_READ, (run_id,))
                row = cur.fetchone()
        except Busy:
            return None
    ts, js = _readers(engine.dialect)
    caps = None
    if row[5] is not None:
        caps = {"max_cost_nusd": row[6], "max_tokens": row[7], "max_llm_calls": row[8]}
    return RunState(ts(row[0]), row[1], row[2], row[3], js(row[4]), caps)


__all__ = ["RunState", "ensure_run_sqlite"]
