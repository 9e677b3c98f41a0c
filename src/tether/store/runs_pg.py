"""The gateway's first look at a named run on PostgreSQL (ingest.ensure_run, then the run's row
and its own caps read back) as plain SQL in one pipelined transaction, awaited on the event loop
on AsyncPG's connections: one round trip, no SQLAlchemy statement, no worker thread (5.8% of
the server's time on the budgeted path when it ran through SQLAlchemy on a thread, issue 9).

The agent's row is taken before the run's, the order of every writer of both (ingest.ensure_run,
write_spans_in, gateway_spans), else PostgreSQL aborts one of two as a deadlock. Each statement
is idempotent (an upsert of last_seen_at, an insert that does nothing when the run exists, two
reads), so the transaction may be sent again after a lost connection.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg

from tether.core.records import RunAttribution
from tether.store.gateway_spans import AGENTS_SQL, VERSIONS_SQL
from tether.store.pg_async import AsyncPG, NotCommitted

# the row ingest._new_run_row makes: a running run with no totals yet
_NEW_RUN = (
    'INSERT INTO runs (id, trace_id, agent, version, task_id, "user", status, started_at, '
    "input_tokens, output_tokens, cached_tokens, cost_nusd, cost_unknown, llm_calls, tool_calls, "
    "span_count, source, updated_at) VALUES (%(id)s, %(trace_id)s, %(agent)s, %(version)s, "
    "%(task_id)s, %(user)s, 'running', %(started_at)s, 0, 0, 0, 0, false, 0, 0, 0, %(source)s, "
    "%(now)s) ON CONFLICT (id) DO NOTHING"
)
_RUN = "SELECT started_at, agent, status, kill_reason, attributes FROM runs WHERE id = %(id)s"
_CAPS = "SELECT max_cost_nusd, max_tokens, max_llm_calls FROM run_caps WHERE run_id = %(id)s"


@dataclass(frozen=True)
class RunSeen:
    """A run as the gateway reads it with its creation: its start, agent, status, kill reason,
    attributes and own caps (None: it set none)."""

    started_at: datetime
    agent: str | None
    status: str
    kill_reason: str | None
    attributes: Any
    caps: dict[str, int | None] | None


async def ensure_run_pg(
    pg: AsyncPG, run_id: str, *, trace_id: str | None, attribution: RunAttribution,
    started_at: datetime, source: str, now: datetime,
) -> RunSeen:  # fmt: skip
    """Creates the run if it does not exist yet (ingest.ensure_run) and reads it back. The
    commit does not wait for the WAL flush (budgets.hold_commit): a run row lost with a
    database crash is written again with the call's span."""
    a = attribution
    run = {"id": run_id, "trace_id": trace_id, "agent": a.agent, "version": a.version,
           "task_id": a.task_id, "user": a.user, "started_at": started_at, "source": source,
           "now": now}  # fmt: skip

    async def work(conn: Any) -> RunSeen:
        try:
            async with conn.pipeline():
                await conn.execute("SET LOCAL synchronous_commit = off")
                if a.agent:
                    await conn.execute(AGENTS_SQL, {"a": a.agent, "now": now}, prepare=True)
                    if a.version:
                        await conn.execute(VERSIONS_SQL, {"a": a.agent, "v": a.version,
                                                          "now": now}, prepare=True)  # fmt: skip
                await conn.execute(_NEW_RUN, run, prepare=True)
                row_cur = await conn.execute(_RUN, {"id": run_id}, prepare=True)
                caps_cur = await conn.execute(_CAPS, {"id": run_id}, prepare=True)
                await conn.commit()
            row = await row_cur.fetchone()
            caps = await caps_cur.fetchone()
        except psycopg.OperationalError as exc:
            raise NotCommitted from exc  # idempotent: sent again whether or not it committed
        except psycopg.Error:
            await conn.rollback()
            raise
        assert row is not None  # inserted, or there already
        return RunSeen(
            row[0].astimezone(UTC), row[1], row[2], row[3], row[4],
            None if caps is None else
            {"max_cost_nusd": caps[0], "max_tokens": caps[1], "max_llm_calls": caps[2]},
        )  # fmt: skip

    return await pg.transaction(work)


__all__ = ["RunSeen", "ensure_run_pg"]
