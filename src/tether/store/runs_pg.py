"""The gateway's first look at a named run on PostgreSQL (ingest.ensure_run, then the run's row
and its own caps read back) as one plain SQL statement awaited on the event loop on AsyncPG's
connections: one round trip, no SQLAlchemy statement, no worker thread (5.8% of the server's
time on the budgeted path when it ran through SQLAlchemy on a thread, issue 9; five statements
pipelined in a transaction cost psycopg about as much CPU as that).

The agent's row is taken before the run's, the order of every writer of both (ingest.ensure_run,
write_spans_in, gateway_spans), else PostgreSQL aborts one of two as a deadlock. Each statement
is idempotent (an upsert of last_seen_at, an insert that does nothing when the run exists, two
reads), so the statement may be sent again after a lost connection.
"""

from __future__ import annotations

from datetime import UTC, datetime

from tether.core.records import RunAttribution
from tether.store.gateway_run_sqlite import RunState
from tether.store.pg_async import AsyncPG

# One statement, autocommitted: the agent's row is upserted first (the run's insert reads from
# it, so it cannot run before), then its version's, then the run's row is inserted if new; the
# run (new or not) and its caps come back. Its commit does not wait for the WAL flush
# (budgets.hold_commit): a run row lost with a database crash is written again with the span.
# A run committed by another transaction after this statement's snapshot was taken is waited
# for by the insert but not visible to the read below it: no row then, and _READ reads it.
_ENSURE = """\
WITH cfg AS (SELECT set_config('synchronous_commit', 'off', true) AS on_commit),
a AS (
  INSERT INTO agents (name, created_at, last_seen_at)
  SELECT %(agent)s::text, %(now)s::timestamptz, %(now)s::timestamptz FROM cfg
  WHERE %(agent)s::text IS NOT NULL
  ON CONFLICT (name) DO UPDATE SET last_seen_at = excluded.last_seen_at RETURNING 1 AS one
), v AS (
  INSERT INTO agent_versions (agent, version, created_at, last_seen_at)
  SELECT %(agent)s::text, %(version)s::text, %(now)s::timestamptz, %(now)s::timestamptz
  FROM (SELECT count(*) FROM a) AS after_agent
  WHERE %(agent)s::text IS NOT NULL AND %(version)s::text IS NOT NULL
  ON CONFLICT (agent, version) DO UPDATE SET last_seen_at = excluded.last_seen_at
  RETURNING 1 AS one
), n AS (
  INSERT INTO runs (id, trace_id, agent, version, task_id, "user", status, started_at,
    input_tokens, output_tokens, cached_tokens, cost_nusd, cost_unknown, llm_calls, tool_calls,
    span_count, source, updated_at)
  SELECT %(id)s::text, %(trace_id)s, %(agent)s::text, %(version)s::text, %(task_id)s,
    %(user)s, 'running', %(started_at)s, 0, 0, 0, 0, false, 0, 0, 0, %(source)s,
    %(now)s::timestamptz
  FROM cfg, (SELECT count(*) FROM a) AS after_agent, (SELECT count(*) FROM v) AS after_version
  ON CONFLICT (id) DO NOTHING
  RETURNING started_at, agent, status, kill_reason, attributes
)
SELECT n.started_at, n.agent, n.status, n.kill_reason, n.attributes, c.max_cost_nusd,
  c.max_tokens, c.max_llm_calls
FROM n LEFT JOIN run_caps c ON c.run_id = %(id)s::text
UNION ALL
SELECT r.started_at, r.agent, r.status, r.kill_reason, r.attributes, c.max_cost_nusd,
  c.max_tokens, c.max_llm_calls
FROM runs r LEFT JOIN run_caps c ON c.run_id = r.id
WHERE r.id = %(id)s::text AND NOT EXISTS (SELECT 1 FROM n)"""
_READ = (
    "SELECT r.started_at, r.agent, r.status, r.kill_reason, r.attributes, c.max_cost_nusd, "
    "c.max_tokens, c.max_llm_calls FROM runs r LEFT JOIN run_caps c ON c.run_id = r.id "
    "WHERE r.id = %(id)s"
)


async def ensure_run_pg(
    pg: AsyncPG, run_id: str, *, trace_id: str | None, attribution: RunAttribution,
    started_at: datetime, source: str, now: datetime,
) -> RunState:  # fmt: skip
    """Creates the run if it does not exist yet (ingest.ensure_run) and reads it back. The
    commit does not wait for the WAL flush (budgets.hold_commit): a run row lost with a
    database crash is written again with the call's span."""
    a = attribution
    params = {"id": run_id, "trace_id": trace_id, "agent": a.agent or None,
              "version": a.version or None, "task_id": a.task_id, "user": a.user,
              "started_at": started_at, "source": source, "now": now}  # fmt: skip
    row = await pg.first(_ENSURE, params)
    if row is None:  # created meanwhile by a transaction this statement could not see
        row = await pg.first(_READ, {"id": run_id})
    assert row is not None  # inserted, or there already
    caps = None if row[5:] == (None, None, None) else {
        "max_cost_nusd": row[5], "max_tokens": row[6], "max_llm_calls": row[7]}  # fmt: skip
    return RunState(row[0].astimezone(UTC), row[1], row[2], row[3], row[4], caps)


__all__ = ["ensure_run_pg"]
