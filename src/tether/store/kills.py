"""Kills in the database: marking a run killed (whatever it had reported before), the kill log
the kill switch of every process polls (and, on PostgreSQL, the notification each kill sends:
store/kill_feed.py), and one run's kill state.

A kill is final. It applies to a run that is running, awaiting approval, or has already ended
(its root span arrived with an end time, or it reported succeeded/failed): "ended" is what the
agent says about its work and closes nothing, so ending a run can never be used to dodge a kill.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, Engine, select, update

from tether.store import kill_feed
from tether.store.sqlite_rows import timestamp
from tether.store.tables import run_kills, runs
from tether.store.upsert import insert_on_conflict

# the reason of a kill by `max_duration_s` (the LLM gateway's kill switch and the MCP guard)
DURATION_REASON = "max_duration_s exceeded"


def kill(conn: Connection, run_id: str, *, reason: str, now: datetime) -> bool:
    """Marks `run_id` killed and logs the kill; False if it is unknown or was already killed."""
    changed = conn.execute(
        update(runs)
        .where(runs.c.id == run_id, runs.c.status != "killed")
        .values(status="killed", kill_reason=reason, ended_at=now, updated_at=now)
    ).rowcount
    if not changed:
        return False
    insert_on_conflict(conn, run_kills, [{"run_id": run_id, "reason": reason, "killed_at": now}],
                       ("run_id",))  # fmt: skip
    kill_feed.notify_in(conn, run_id, reason)  # every replica's streams hear of it on commit
    return True


def kills_since(conn: Connection, since: datetime) -> dict[str, str]:
    """Every kill logged at or after `since`: run id -> reason (an indexed range read)."""
    rows = conn.execute(
        select(run_kills.c.run_id, run_kills.c.reason).where(run_kills.c.killed_at >= since)
    ).all()
    return {r.run_id: r.reason or "killed" for r in rows}


def kill_reason(conn: Connection, run_id: str) -> str | None:
    """Why `run_id` was killed, or None if it was not."""
    row = conn.execute(select(run_kills.c.reason).where(run_kills.c.run_id == run_id)).one_or_none()
    return None if row is None else (row.reason or "killed")


# SQLite, in plain SQL on the driver's connection: the kill switch reads these on the event
# loop's thread (a poll every 25 ms, and a call's own check when the last poll is too old),
# where SQLAlchemy's connection, statement and result cost several times the indexed read
_SINCE_SQLITE = "SELECT run_id, reason FROM run_kills WHERE killed_at >= ?"
_REASON_SQLITE = "SELECT reason FROM run_kills WHERE run_id = ?"


def kills_since_sqlite(engine: Engine, since: datetime) -> dict[str, str]:
    """kills_since on a SQLite engine, outside any transaction."""
    raw = engine.raw_connection()
    try:
        rows = raw.cursor().execute(_SINCE_SQLITE, (timestamp(since),)).fetchall()
    finally:
        raw.close()
    return {run_id: reason or "killed" for run_id, reason in rows}


def kill_reason_sqlite(engine: Engine, run_id: str) -> str | None:
    """kill_reason on a SQLite engine, outside any transaction."""
    raw = engine.raw_connection()
    try:
        row = raw.cursor().execute(_REASON_SQLITE, (run_id,)).fetchone()
    finally:
        raw.close()
    return None if row is None else (row[0] or "killed")
