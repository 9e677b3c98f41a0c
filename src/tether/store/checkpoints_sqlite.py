"""SQLite: `put`, `put_writes` and `get_tuple` of a checkpoint in plain SQL on the DB-API
connection (sqlite3), in one transaction each.

The routes call them every super-step on the event loop (store/inline.py); building, compiling
and processing SQLAlchemy Core statements, and SQLAlchemy's own connection and transaction
machinery, cost more than the lookups themselves. `get_tuple`: the same rows and ownership rule
as checkpoints.get_tuple_in. `put` and `put_writes`: write only when the caller owns the thread,
its run is not killed, no cap would tighten and no iteration cap is passed (the conditions of
checkpoints_pg.py); otherwise they write nothing and return None / False, and the caller takes
the general path (threads.claim), which raises the right error or does the rest.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine

from tether.store.checkpoints import SPECIAL_WRITES, NewCheckpoint, Write
from tether.store.threads import Caller, RunLink


@contextmanager
def driver_connection(engine: Engine) -> Iterator[sqlite3.Connection]:
    """The engine's pooled sqlite3 connection (its PRAGMAs set, autocommit: transactions are
    opened here explicitly), returned to the pool afterwards."""
    fairy = engine.raw_connection()
    try:
        conn = fairy.driver_connection
        assert isinstance(conn, sqlite3.Connection)
        yield conn
    finally:
        fairy.close()


@contextmanager
def _transaction(conn: sqlite3.Connection, begin: str) -> Iterator[sqlite3.Connection]:
    conn.execute(begin)
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


_CHECKPOINT = """
SELECT c.thread_id, c.checkpoint_ns, c.checkpoint_id, c.parent_id, c.run_id, c.type,
       c.checkpoint, c.metadata, c.versions
FROM checkpoints c
WHERE c.thread_id = :thread_id AND c.checkpoint_ns = :ns {by_id}
  AND (:admin OR EXISTS (SELECT 1 FROM checkpoint_threads t
                         WHERE t.thread_id = c.thread_id AND t.agent IS :agent))
{latest}"""
_BY_ID = _CHECKPOINT.format(by_id="AND c.checkpoint_id = :cid", latest="")
# LangGraph's checkpoint ids are uuid6: their text order is their time order
_LATEST = _CHECKPOINT.format(by_id="", latest="ORDER BY c.checkpoint_id DESC LIMIT 1")
_BLOBS = """
SELECT channel, version, type, blob FROM checkpoint_blobs
WHERE thread_id = :thread_id AND checkpoint_ns = :ns
  AND (channel, version) IN (SELECT key, value FROM json_each(:versions))"""
_WRITES = """
SELECT task_id, channel, type, blob, task_path, idx FROM checkpoint_writes
WHERE thread_id = :thread_id AND checkpoint_ns = :ns AND checkpoint_id = :cid
ORDER BY task_path, task_id, idx"""


def get_tuple(
    conn: sqlite3.Connection,
    *,
    thread_id: str,
    checkpoint_ns: str,
    checkpoint_id: str | None,
    admin: bool,
    agent: str | None,
) -> dict[str, Any] | None:
    """One checkpoint (the newest of the namespace without an id) with its blobs and pending
    writes, if the caller (admin, or the thread's agent) may see it; None otherwise. One read
    transaction (one snapshot; it never takes the write lock)."""
    params: dict[str, Any] = {
        "thread_id": thread_id,
        "ns": checkpoint_ns,
        "cid": checkpoint_id,
        "admin": admin,
        "agent": agent,
    }
    with _transaction(conn, "BEGIN"):
        row = conn.execute(_BY_ID if checkpoint_id else _LATEST, params).fetchone()
        if row is None:
            return None
        tid, ns, cid, parent, run_id, type_, data, metadata, versions = row
        blobs: list[dict[str, Any]] = []
        if versions and json.loads(versions):
            blobs = [
                {"channel": ch, "version": v, "type": t, "data": b}
                for ch, v, t, b in conn.execute(
                    _BLOBS, {"thread_id": tid, "ns": ns, "versions": versions}
                )
            ]
        writes = [
            {"task_id": task, "channel": ch, "type": t, "data": b, "task_path": path, "idx": idx}
            for task, ch, t, b, path, idx in conn.execute(
                _WRITES, {"thread_id": tid, "ns": ns, "cid": cid}
            )
        ]
    return {
        "thread_id": tid,
        "checkpoint_ns": ns,
        "checkpoint_id": cid,
        "parent_id": parent,
        "run_id": run_id,
        "type": type_,
        "data": data,
        "metadata": json.loads(metadata) if metadata is not None else None,
        "blobs": blobs,
        "writes": writes,
    }


_CLAIMED = """
SELECT t.run_id FROM checkpoint_threads t
LEFT JOIN runs r ON r.id = t.run_id
LEFT JOIN run_caps c ON c.run_id = t.run_id
WHERE t.thread_id = :thread_id
  AND (:admin OR t.agent IS :agent)
  AND r.status IS NOT 'killed'
  AND (:l_iter IS NULL OR t.max_iterations <= :l_iter)
  AND (NOT :any_cap OR (c.run_id IS NOT NULL
    AND (:l_cost IS NULL OR c.max_cost_nusd <= :l_cost)
    AND (:l_tokens IS NULL OR c.max_tokens <= :l_tokens)
    AND (:l_iter IS NULL OR c.max_llm_calls <= :l_iter)))
  AND NOT (:loop_step IS NOT NULL AND t.max_iterations IS NOT NULL
           AND :loop_step > t.max_iterations)"""
_PUT = """
INSERT INTO checkpoints (thread_id, checkpoint_ns, checkpoint_id, parent_id, run_id, lg_run_id,
                         step, source, type, checkpoint, versions, metadata, created_at)
VALUES (:thread_id, :ns, :cid, :parent, :run_id, :lg_run, :step, :source, :type, :data,
        :versions, :metadata, :now)
ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id) DO UPDATE SET
  parent_id = excluded.parent_id, run_id = excluded.run_id, lg_run_id = excluded.lg_run_id,
  step = excluded.step, source = excluded.source, type = excluded.type,
  checkpoint = excluded.checkpoint, versions = excluded.versions,
  metadata = excluded.metadata, created_at = excluded.created_at"""
_BLOB = """
INSERT INTO checkpoint_blobs (thread_id, checkpoint_ns, channel, version, type, blob, view)
VALUES (:thread_id, :ns, :channel, :version, :type, :blob, :view)
ON CONFLICT (thread_id, checkpoint_ns, channel, version) DO NOTHING"""
_STEP = """
UPDATE checkpoint_threads SET steps = :step, updated_at = :now
WHERE thread_id = :thread_id AND steps < :step"""
_WRITE = """
INSERT INTO checkpoint_writes (thread_id, checkpoint_ns, checkpoint_id, task_id, idx, channel,
                               type, blob, task_path, view)
VALUES (:thread_id, :ns, :cid, :task_id, :idx, :channel, :type, :blob, :task_path, :view)
ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id, task_id, idx) {conflict}"""
_WRITE_KEEP = _WRITE.format(conflict="DO NOTHING")
_WRITE_REPLACE = _WRITE.format(
    conflict="DO UPDATE SET channel = excluded.channel, type = excluded.type, "
    "blob = excluded.blob, task_path = excluded.task_path, view = excluded.view"
)


def _claimed(conn: sqlite3.Connection, params: dict[str, Any]) -> str | None:
    found = conn.execute(_CLAIMED, params).fetchone()
    return None if found is None else str(found[0])


def put(
    conn: sqlite3.Connection, cp: NewCheckpoint, caller: Caller, link: RunLink, *, now: datetime
) -> str | None:
    """Stores the checkpoint and its blobs and counts its step in one transaction; the thread's
    run id, or None when the general path must run instead (nothing was written)."""
    from tether.store.checkpoints_pg import claim_params

    md = cp.metadata
    step = int(md["step"]) if isinstance(md.get("step"), int) else None
    source = str(md["source"])[:16] if md.get("source") is not None else None
    lg_run = md.get("run_id")
    params = claim_params(cp.thread_id, caller, link, step if source == "loop" else None)
    # as SQLAlchemy's DateTime stores it on SQLite (TS: UTC, text with microseconds)
    stamp = now.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    with _transaction(conn, "BEGIN IMMEDIATE"):
        run_id = _claimed(conn, params)
        if run_id is None:
            return None
        row = {
            "thread_id": cp.thread_id,
            "ns": cp.checkpoint_ns,
            "cid": cp.checkpoint_id,
            "parent": cp.parent_id,
            "run_id": run_id,
            "lg_run": str(lg_run)[:64] if lg_run is not None else None,
            "step": step,
            "source": source,
            "type": cp.type,
            "data": cp.data,
            "versions": json.dumps(cp.versions),
            "metadata": json.dumps(md),
            "now": stamp,
        }
        conn.execute(_PUT, row)
        if cp.blobs:
            blobs = [
                {
                    "thread_id": cp.thread_id,
                    "ns": cp.checkpoint_ns,
                    "channel": b.channel,
                    "version": b.version,
                    "type": b.type,
                    "blob": b.data,
                    "view": json.dumps(b.view),
                }
                for b in cp.blobs
            ]
            conn.executemany(_BLOB, blobs)
        if step is not None:
            conn.execute(_STEP, {"thread_id": cp.thread_id, "step": step, "now": stamp})
    return run_id


def put_writes(
    conn: sqlite3.Connection,
    *,
    thread_id: str,
    checkpoint_ns: str,
    checkpoint_id: str,
    task_id: str,
    task_path: str,
    writes: Sequence[Write],
    caller: Caller,
    link: RunLink,
) -> bool:
    """A task's pending writes (as checkpoints.put_writes: idempotent per (task_id, idx), the
    special channels replaced) in one transaction; False when the general path must run instead
    (nothing was written)."""
    from tether.store.checkpoints_pg import claim_params

    replace = bool(writes) and all(w.channel in SPECIAL_WRITES for w in writes)
    with _transaction(conn, "BEGIN IMMEDIATE"):
        if _claimed(conn, claim_params(thread_id, caller, link, None)) is None:
            return False
        rows = [
            {
                "thread_id": thread_id,
                "ns": checkpoint_ns,
                "cid": checkpoint_id,
                "task_id": task_id,
                "idx": SPECIAL_WRITES.get(w.channel, w.idx),
                "channel": w.channel,
                "type": w.type,
                "blob": w.data,
                "task_path": task_path,
                "view": json.dumps(w.view),
            }
            for w in writes
        ]
        if rows:
            conn.executemany(_WRITE_REPLACE if replace else _WRITE_KEEP, rows)
    return True


__all__ = ["driver_connection", "get_tuple", "put", "put_writes"]
