"""PostgreSQL: `put`, `put_writes` and `get_tuple` of a checkpoint in one statement each.

LangGraph's saver calls these every super-step. The general path (checkpoints.py with
threads.claim) costs seven round trips a put on PostgreSQL (pool ping, BEGIN, the thread read,
two inserts, the step update, COMMIT) and six a get_tuple; on a busy machine each one waits to
be scheduled on both sides. Here each call is one autocommitted statement: a CTE reads the thread
with its run and caps, checks what `claim` checks, and writes only when the caller owns the
thread, its run is not killed, no cap would tighten and no iteration cap is passed. Otherwise
nothing is written and `None` tells the caller to take the general path, which raises the
right error or does the rest (new thread, tighter caps, killed run, a reopening input). The
statements are plain SQL given to the driver: no SQLAlchemy compilation per call.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Engine

from tether.core.money import usd_to_nusd
from tether.store.checkpoints import SPECIAL_WRITES, NewCheckpoint, Write
from tether.store.threads import Caller, RunLink

# the thread with its run's status and caps, and whether the caller may write through it as is
_CLAIMED = """
t AS (
  SELECT t.run_id, t.max_iterations, r.status AS run_status, c.run_id AS caps_run_id,
         c.max_cost_nusd, c.max_tokens, c.max_llm_calls
  FROM checkpoint_threads t
  LEFT JOIN runs r ON r.id = t.run_id
  LEFT JOIN run_caps c ON c.run_id = t.run_id
  WHERE t.thread_id = %(thread_id)s
    AND (%(admin)s OR t.agent IS NOT DISTINCT FROM %(agent)s::text)
), ok AS (
  SELECT run_id FROM t
  WHERE t.run_status IS DISTINCT FROM 'killed'
    AND (%(l_iter)s::int IS NULL OR t.max_iterations <= %(l_iter)s::int)
    AND (NOT %(any_cap)s OR (t.caps_run_id IS NOT NULL
      AND (%(l_cost)s::bigint IS NULL OR t.max_cost_nusd <= %(l_cost)s::bigint)
      AND (%(l_tokens)s::bigint IS NULL OR t.max_tokens <= %(l_tokens)s::bigint)
      AND (%(l_iter)s::int IS NULL OR t.max_llm_calls <= %(l_iter)s::int)))
    AND NOT (%(loop_step)s::int IS NOT NULL AND t.max_iterations IS NOT NULL
             AND %(loop_step)s::int > t.max_iterations)
)"""

_PUT = (
    "WITH"
    + _CLAIMED
    + """, cp AS (
  INSERT INTO checkpoints (thread_id, checkpoint_ns, checkpoint_id, parent_id, run_id, lg_run_id,
                           step, source, type, checkpoint, versions, metadata, created_at)
  SELECT %(thread_id)s, %(ns)s, %(cid)s, %(parent)s, ok.run_id, %(lg_run)s, %(step)s::int,
         %(source)s, %(type)s, %(data)s, %(versions)s::json, %(metadata)s::json, %(now)s
  FROM ok
  ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id) DO UPDATE SET
    parent_id = excluded.parent_id, run_id = excluded.run_id, lg_run_id = excluded.lg_run_id,
    step = excluded.step, source = excluded.source, type = excluded.type,
    checkpoint = excluded.checkpoint, versions = excluded.versions,
    metadata = excluded.metadata, created_at = excluded.created_at
  RETURNING run_id
), bl AS (
  INSERT INTO checkpoint_blobs (thread_id, checkpoint_ns, channel, version, type, blob, view)
  SELECT %(thread_id)s, %(ns)s, u.channel, u.version, u.type, u.blob, u.view::json
  FROM unnest(%(b_channel)s::text[], %(b_version)s::text[], %(b_type)s::text[],
              %(b_blob)s::bytea[], %(b_view)s::text[]) AS u(channel, version, type, blob, view)
  WHERE EXISTS (SELECT 1 FROM ok)
  ON CONFLICT (thread_id, checkpoint_ns, channel, version) DO NOTHING
), st AS (
  UPDATE checkpoint_threads SET steps = %(step)s::int, updated_at = %(now)s
  WHERE thread_id = %(thread_id)s AND steps < %(step)s::int AND EXISTS (SELECT 1 FROM ok)
)
SELECT run_id FROM cp"""
)

_WRITES = (
    "WITH"
    + _CLAIMED
    + """, w AS (
  INSERT INTO checkpoint_writes (thread_id, checkpoint_ns, checkpoint_id, task_id, idx, channel,
                                 type, blob, task_path, view)
  SELECT %(thread_id)s, %(ns)s, %(cid)s, %(task_id)s, u.idx, u.channel, u.type, u.blob,
         %(task_path)s, u.view::json
  FROM unnest(%(w_idx)s::int[], %(w_channel)s::text[], %(w_type)s::text[],
              %(w_blob)s::bytea[], %(w_view)s::text[]) AS u(idx, channel, type, blob, view)
  WHERE EXISTS (SELECT 1 FROM ok)
  ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id, task_id, idx) {conflict}
)
SELECT count(*) FROM ok"""
)
_WRITES_KEEP = _WRITES.replace("{conflict}", "DO NOTHING")
_WRITES_REPLACE = _WRITES.replace(
    "{conflict}",
    "DO UPDATE SET channel = excluded.channel, type = excluded.type, blob = excluded.blob, "
    "task_path = excluded.task_path, view = excluded.view",
)

_B64 = "translate(encode({}, 'base64'), E'\\n', '')"  # encode() breaks lines every 76 chars
_TUPLE = f"""
SELECT json_build_object(
  'thread_id', c.thread_id, 'checkpoint_ns', c.checkpoint_ns, 'checkpoint_id', c.checkpoint_id,
  'parent_id', c.parent_id, 'run_id', c.run_id, 'type', c.type,
  'data', {_B64.format("c.checkpoint")}, 'metadata', c.metadata,
  'blobs', coalesce((
    SELECT json_agg(json_build_object('channel', b.channel, 'version', b.version,
                                      'type', b.type, 'data', {_B64.format("b.blob")}))
    FROM checkpoint_blobs b
    WHERE b.thread_id = c.thread_id AND b.checkpoint_ns = c.checkpoint_ns
      AND (b.channel, b.version) IN (SELECT key, value FROM json_each_text(c.versions))
  ), '[]'::json),
  'writes', coalesce((
    SELECT json_agg(json_build_object('task_id', w.task_id, 'channel', w.channel,
                                      'type', w.type, 'data', {_B64.format("w.blob")},
                                      'task_path', w.task_path, 'idx', w.idx)
                    ORDER BY w.task_path, w.task_id, w.idx)
    FROM checkpoint_writes w
    WHERE w.thread_id = c.thread_id AND w.checkpoint_ns = c.checkpoint_ns
      AND w.checkpoint_id = c.checkpoint_id
  ), '[]'::json)
)::text
FROM checkpoints c
WHERE c.thread_id = %(thread_id)s AND c.checkpoint_ns = %(ns)s
  AND (%(admin)s OR EXISTS (
    SELECT 1 FROM checkpoint_threads t
    WHERE t.thread_id = c.thread_id AND t.agent IS NOT DISTINCT FROM %(agent)s::text))
"""
_TUPLE_BY_ID = _TUPLE + "  AND c.checkpoint_id = %(cid)s"
_TUPLE_LATEST = _TUPLE + "ORDER BY c.checkpoint_id DESC LIMIT 1"


def claim_params(
    thread_id: str, caller: Caller, link: RunLink, loop_step: int | None
) -> dict[str, Any]:
    cost = usd_to_nusd(link.cost_limit_usd) if link.cost_limit_usd is not None else None
    return {
        "thread_id": thread_id,
        "admin": caller.admin,
        "agent": caller.agent,
        "l_iter": link.max_iterations,
        "l_cost": cost,
        "l_tokens": link.max_tokens,
        "any_cap": cost is not None
        or link.max_tokens is not None
        or link.max_iterations is not None,
        "loop_step": loop_step,
    }


Statement = tuple[str, dict[str, Any]]


def first(engine: Engine, stmt: Statement) -> tuple[Any, ...] | None:
    """Runs one of the statements below on its own (autocommitted: no BEGIN and COMMIT round
    trips around it); its first row."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        row = conn.exec_driver_sql(*stmt).first()
    return None if row is None else tuple(row)


def put(cp: NewCheckpoint, caller: Caller, link: RunLink, *, now: datetime) -> Statement:
    """Stores the checkpoint and its blobs and counts its step. Its row: the thread's run id;
    no row when the general path must run instead (nothing was written)."""
    md = cp.metadata
    step = int(md["step"]) if isinstance(md.get("step"), int) else None
    source = str(md["source"])[:16] if md.get("source") is not None else None
    lg_run = md.get("run_id")
    blobs: dict[tuple[str, str], Any] = {}
    for b in cp.blobs:  # the first of a repeated (channel, version) is kept, as row by row
        blobs.setdefault((b.channel, b.version), b)
    params = claim_params(cp.thread_id, caller, link, step if source == "loop" else None)
    params.update(
        ns=cp.checkpoint_ns,
        cid=cp.checkpoint_id,
        parent=cp.parent_id,
        lg_run=str(lg_run)[:64] if lg_run is not None else None,
        step=step,
        source=source,
        type=cp.type,
        data=cp.data,
        versions=json.dumps(cp.versions),
        metadata=json.dumps(md),
        now=now,
        b_channel=[b.channel for b in blobs.values()],
        b_version=[b.version for b in blobs.values()],
        b_type=[b.type for b in blobs.values()],
        b_blob=[b.data for b in blobs.values()],
        b_view=[json.dumps(b.view) for b in blobs.values()],
    )
    return _PUT, params


def put_writes(
    *,
    thread_id: str,
    checkpoint_ns: str,
    checkpoint_id: str,
    task_id: str,
    task_path: str,
    writes: Sequence[Write],
    caller: Caller,
    link: RunLink,
) -> Statement:
    """A task's pending writes (as checkpoints.put_writes). Its row: a count, 0 when the general
    path must run instead (nothing was written)."""
    replace = bool(writes) and all(w.channel in SPECIAL_WRITES for w in writes)
    rows: dict[int, Write] = {}
    for w in writes:
        idx = SPECIAL_WRITES.get(w.channel, w.idx)
        # row by row, a later copy of an index replaced the first one or was dropped
        if replace or idx not in rows:
            rows[idx] = w
    params = claim_params(thread_id, caller, link, None)
    params.update(
        ns=checkpoint_ns,
        cid=checkpoint_id,
        task_id=task_id,
        task_path=task_path,
        w_idx=list(rows),
        w_channel=[w.channel for w in rows.values()],
        w_type=[w.type for w in rows.values()],
        w_blob=[w.data for w in rows.values()],
        w_view=[json.dumps(w.view) for w in rows.values()],
    )
    return (_WRITES_REPLACE if replace else _WRITES_KEEP), params


def get_tuple(
    *, thread_id: str, checkpoint_ns: str, checkpoint_id: str | None, caller: Caller
) -> Statement:
    """The API's tuple as JSON text, bytes in base64, built by the database. No row when absent
    or not the caller's."""
    params = {
        "thread_id": thread_id,
        "ns": checkpoint_ns,
        "cid": checkpoint_id,
        "admin": caller.admin,
        "agent": caller.agent,
    }
    return (_TUPLE_BY_ID if checkpoint_id else _TUPLE_LATEST), params


__all__ = ["Statement", "claim_params", "first", "get_tuple", "put", "put_writes"]
