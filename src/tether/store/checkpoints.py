"""LangGraph checkpoints in tether's store: put, pending writes, get, list, delete, copy, prune.

The bytes are the saver's (LangGraph's serde, opaque here); tether keeps them apart per channel
version as LangGraph's own savers do, with a JSON `view` beside each for the timeline. Every
function takes the thread already claimed by its agent (store/threads.py checks ownership).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, delete, func, select, tuple_

from tether.store.engine import reading
from tether.store.tables import checkpoint_blobs, checkpoint_threads, checkpoint_writes, checkpoints
from tether.store.upsert import insert_on_conflict

# LangGraph's special write channels take fixed negative indexes (WRITES_IDX_MAP); a batch of
# only those replaces earlier ones, any other batch keeps the first copy (put_writes is retried).
SPECIAL_WRITES = {"__error__": -1, "__scheduled__": -2, "__interrupt__": -3, "__resume__": -4}


@dataclass(frozen=True)
class Blob:
    channel: str
    version: str
    type: str
    data: bytes | None
    view: Any = None


@dataclass(frozen=True)
class Write:
    idx: int
    channel: str
    type: str
    data: bytes | None
    view: Any = None


@dataclass(frozen=True)
class NewCheckpoint:
    thread_id: str
    checkpoint_ns: str
    checkpoint_id: str
    parent_id: str | None
    type: str
    data: bytes
    versions: dict[str, str]
    metadata: dict[str, Any]
    blobs: Sequence[Blob]


def put(conn: Connection, cp: NewCheckpoint, *, run_id: str, now: datetime) -> None:
    """Stores a checkpoint and the blobs of the channels it changed (an existing id is replaced,
    as LangGraph's savers do when a step is re-run)."""
    md = cp.metadata
    lg_run = md.get("run_id")
    row = {
        "thread_id": cp.thread_id,
        "checkpoint_ns": cp.checkpoint_ns,
        "checkpoint_id": cp.checkpoint_id,
        "parent_id": cp.parent_id,
        "run_id": run_id,
        "lg_run_id": str(lg_run)[:64] if lg_run is not None else None,
        "step": md.get("step") if isinstance(md.get("step"), int) else None,
        "source": str(md.get("source"))[:16] if md.get("source") is not None else None,
        "type": cp.type,
        "checkpoint": cp.data,
        "versions": cp.versions,
        "metadata": md,
        "created_at": now,
    }
    cols = [k for k in row if k not in ("thread_id", "checkpoint_ns", "checkpoint_id")]
    insert_on_conflict(
        conn, checkpoints, [row], ("thread_id", "checkpoint_ns", "checkpoint_id"), cols
    )
    blobs = [
        {
            "thread_id": cp.thread_id,
            "checkpoint_ns": cp.checkpoint_ns,
            "channel": b.channel,
            "version": b.version,
            "type": b.type,
            "blob": b.data,
            "view": b.view,
        }
        for b in cp.blobs
    ]
    insert_on_conflict(
        conn, checkpoint_blobs, blobs, ("thread_id", "checkpoint_ns", "channel", "version")
    )


def put_writes(
    conn: Connection,
    *,
    thread_id: str,
    checkpoint_ns: str,
    checkpoint_id: str,
    task_id: str,
    task_path: str,
    writes: Sequence[Write],
) -> None:
    """Pending writes of one task at a checkpoint; idempotent per (task_id, idx)."""
    rows = [
        {
            "thread_id": thread_id,
            "checkpoint_ns": checkpoint_ns,
            "checkpoint_id": checkpoint_id,
            "task_id": task_id,
            "idx": SPECIAL_WRITES.get(w.channel, w.idx),
            "channel": w.channel,
            "type": w.type,
            "blob": w.data,
            "task_path": task_path,
            "view": w.view,
        }
        for w in writes
    ]
    replace = bool(rows) and all(w.channel in SPECIAL_WRITES for w in writes)
    keys = ("thread_id", "checkpoint_ns", "checkpoint_id", "task_id", "idx")
    update = ("channel", "type", "blob", "task_path", "view") if replace else ()
    insert_on_conflict(conn, checkpoint_writes, rows, keys, update)


# ---------------------------------------------------------------- reads


def _tuple(conn: Connection, row: Any) -> dict[str, Any]:
    """A stored checkpoint with its channel blobs and pending writes, as the API returns it."""
    r = row._mapping
    versions: dict[str, str] = r["versions"] or {}
    b = checkpoint_blobs.c
    blobs: list[dict[str, Any]] = []
    if versions:
        pairs = list(versions.items())
        q = select(b.channel, b.version, b.type, b.blob).where(
            b.thread_id == r["thread_id"],
            b.checkpoint_ns == r["checkpoint_ns"],
            tuple_(b.channel, b.version).in_(pairs),
        )
        blobs = [
            {"channel": x.channel, "version": x.version, "type": x.type, "data": x.blob}
            for x in conn.execute(q)
        ]
    w = checkpoint_writes.c
    wq = (
        select(w.task_id, w.channel, w.type, w.blob, w.task_path, w.idx)
        .where(
            w.thread_id == r["thread_id"],
            w.checkpoint_ns == r["checkpoint_ns"],
            w.checkpoint_id == r["checkpoint_id"],
        )
        .order_by(w.task_path, w.task_id, w.idx)
    )
    writes = [
        {
            "task_id": x.task_id,
            "channel": x.channel,
            "type": x.type,
            "data": x.blob,
            "task_path": x.task_path,
            "idx": x.idx,
        }
        for x in conn.execute(wq)
    ]
    return {
        "thread_id": r["thread_id"],
        "checkpoint_ns": r["checkpoint_ns"],
        "checkpoint_id": r["checkpoint_id"],
        "parent_id": r["parent_id"],
        "run_id": r["run_id"],
        "type": r["type"],
        "data": r["checkpoint"],
        "metadata": r["metadata"],
        "blobs": blobs,
        "writes": writes,
    }


def get_tuple(
    engine: Engine, *, thread_id: str, checkpoint_ns: str, checkpoint_id: str | None
) -> dict[str, Any] | None:
    """One checkpoint, or the newest of the thread's namespace when no id is given."""
    with reading(engine) as conn:
        return get_tuple_in(
            conn, thread_id=thread_id, checkpoint_ns=checkpoint_ns, checkpoint_id=checkpoint_id
        )


def get_tuple_in(
    conn: Connection,
    *,
    thread_id: str,
    checkpoint_ns: str,
    checkpoint_id: str | None,
    owned_by: tuple[bool, str | None] | None = None,
) -> dict[str, Any] | None:
    """`get_tuple` on an open connection; with `owned_by=(admin, agent)` only when that caller
    owns the thread (None as if absent otherwise), checked in the same query."""
    c = checkpoints.c
    q = select(checkpoints).where(c.thread_id == thread_id, c.checkpoint_ns == checkpoint_ns)
    if owned_by is not None and not owned_by[0]:
        t = checkpoint_threads.c
        agent = owned_by[1]
        q = q.join(checkpoint_threads, t.thread_id == c.thread_id).where(
            t.agent == agent if agent is not None else t.agent.is_(None)
        )
    if checkpoint_id:
        q = q.where(c.checkpoint_id == checkpoint_id)
    else:
        # LangGraph's checkpoint ids are uuid6: their text order is their time order
        q = q.order_by(c.checkpoint_id.desc()).limit(1)
    row = conn.execute(q).first()
    return _tuple(conn, row) if row is not None else None


def _metadata_matches(md: dict[str, Any], wanted: dict[str, Any]) -> bool:
    return all(k in md and md[k] == v for k, v in wanted.items())


def search(
    engine: Engine,
    *,
    agent: str | None,
    admin: bool,
    thread_id: str | None,
    checkpoint_ns: str | None,
    before: str | None,
    filter: dict[str, Any] | None,
    limit: int | None,
) -> list[dict[str, Any]]:
    """Checkpoints newest first (LangGraph's `list`). Without a thread: every thread the caller
    owns. The metadata filter is applied here, not in SQL, so it means the same (JSON equality)
    on both databases."""
    c = checkpoints.c
    q = select(checkpoints).order_by(c.thread_id, c.checkpoint_ns, c.checkpoint_id.desc())
    if thread_id is not None:
        q = q.where(c.thread_id == thread_id)
    if not admin:
        t = checkpoint_threads.c
        owned = select(t.thread_id).where(
            t.agent == agent if agent is not None else t.agent.is_(None)
        )
        q = q.where(c.thread_id.in_(owned))
    if checkpoint_ns is not None:
        q = q.where(c.checkpoint_ns == checkpoint_ns)
    if before is not None:
        q = q.where(c.checkpoint_id < before)
    if thread_id is not None:
        q = q.order_by(None).order_by(c.checkpoint_id.desc())
    if limit is not None and not filter:
        q = q.limit(limit)
    out: list[dict[str, Any]] = []
    with reading(engine) as conn:
        for row in conn.execute(q):
            if filter and not _metadata_matches(row._mapping["metadata"] or {}, filter):
                continue
            out.append(_tuple(conn, row))
            if limit is not None and len(out) >= limit:
                break
    return out


# ---------------------------------------------------------------- deletes, copies, pruning


def delete_threads(conn: Connection, thread_ids: Iterable[str]) -> None:
    ids = list(thread_ids)
    for table in (checkpoints, checkpoint_blobs, checkpoint_writes):
        conn.execute(delete(table).where(table.c.thread_id.in_(ids)))


def delete_for_runs(conn: Connection, lg_run_ids: Sequence[str], owned: Any) -> None:
    """Deletes the checkpoints (and their writes) that LangGraph runs `lg_run_ids` wrote."""
    c = checkpoints.c
    doomed = conn.execute(
        select(c.thread_id, c.checkpoint_ns, c.checkpoint_id).where(
            c.lg_run_id.in_(list(lg_run_ids)), c.thread_id.in_(owned)
        )
    ).all()
    w = checkpoint_writes.c
    for tid, ns, cid in doomed:
        conn.execute(
            delete(checkpoint_writes).where(
                w.thread_id == tid, w.checkpoint_ns == ns, w.checkpoint_id == cid
            )
        )
        conn.execute(
            delete(checkpoints).where(
                c.thread_id == tid, c.checkpoint_ns == ns, c.checkpoint_id == cid
            )
        )
    _drop_orphan_blobs(conn, {d.thread_id for d in doomed})


def copy_thread(conn: Connection, source: str, target: str) -> None:
    """Copies every checkpoint, blob and write of `source` onto `target` (same ids)."""
    for table in (checkpoints, checkpoint_blobs, checkpoint_writes):
        rows = [
            dict(r._mapping) for r in conn.execute(select(table).where(table.c.thread_id == source))
        ]
        for r in rows:
            r["thread_id"] = target
        keys = [col.name for col in table.primary_key.columns]
        insert_on_conflict(conn, table, rows, keys)


def prune(conn: Connection, thread_ids: Sequence[str], *, keep: int) -> int:
    """Keeps the newest `keep` checkpoints of each (thread, namespace) with their writes and the
    blobs they read, so a resume from any kept checkpoint still works; returns how many went."""
    c = checkpoints.c
    removed = 0
    for tid in thread_ids:
        spaces = conn.execute(select(c.checkpoint_ns).where(c.thread_id == tid).distinct())
        for (ns,) in spaces.all():
            ids = (
                conn.execute(
                    select(c.checkpoint_id)
                    .where(c.thread_id == tid, c.checkpoint_ns == ns)
                    .order_by(c.checkpoint_id.desc())
                )
                .scalars()
                .all()
            )
            doomed = list(ids[keep:])
            if not doomed:
                continue
            w = checkpoint_writes.c
            conn.execute(
                delete(checkpoint_writes).where(
                    w.thread_id == tid, w.checkpoint_ns == ns, w.checkpoint_id.in_(doomed)
                )
            )
            conn.execute(
                delete(checkpoints).where(
                    c.thread_id == tid, c.checkpoint_ns == ns, c.checkpoint_id.in_(doomed)
                )
            )
            removed += len(doomed)
    _drop_orphan_blobs(conn, set(thread_ids))
    return removed


def _drop_orphan_blobs(conn: Connection, thread_ids: set[str]) -> None:
    """Removes the blobs no remaining checkpoint of their thread reads."""
    b = checkpoint_blobs.c
    for tid in thread_ids:
        needed: set[tuple[str, str, str]] = set()
        for ns, versions in conn.execute(
            select(checkpoints.c.checkpoint_ns, checkpoints.c.versions).where(
                checkpoints.c.thread_id == tid
            )
        ):
            needed.update((ns, ch, v) for ch, v in (versions or {}).items())
        have = conn.execute(
            select(b.checkpoint_ns, b.channel, b.version).where(b.thread_id == tid)
        ).all()
        gone = [tuple(h) for h in have if tuple(h) not in needed]
        for ns, ch, v in gone:
            conn.execute(
                delete(checkpoint_blobs).where(
                    b.thread_id == tid, b.checkpoint_ns == ns, b.channel == ch, b.version == v
                )
            )


# checkpoints that start a new lineage from an old one; LangGraph numbers the steps after each
# one higher than those of the lineage it replays
FORK_SOURCES = ("fork", "update")


def forks_before(engine: Engine, thread_id: str, checkpoint_ns: str, checkpoint_id: str) -> int:
    """How many fork or update checkpoints lie on the path from `checkpoint_id` back to the
    thread's first checkpoint (0 for an unknown id)."""
    c = checkpoints.c
    q = select(c.checkpoint_id, c.parent_id, c.source).where(
        c.thread_id == thread_id, c.checkpoint_ns == checkpoint_ns
    )
    with reading(engine) as conn:
        rows = {r.checkpoint_id: (r.parent_id, r.source) for r in conn.execute(q)}
    n, at, seen = 0, checkpoint_id, set()
    while at in rows and at not in seen:
        seen.add(at)
        parent, source = rows[at]
        n += source in FORK_SOURCES
        at = parent
    return n


def count(engine: Engine, thread_id: str) -> int:
    with reading(engine) as conn:
        n = conn.execute(
            select(func.count())
            .select_from(checkpoints)
            .where(checkpoints.c.thread_id == thread_id)
        ).scalar()
    return int(n or 0)


__all__ = [
    "Blob",
    "NewCheckpoint",
    "Write",
    "copy_thread",
    "count",
    "delete_for_runs",
    "delete_threads",
    "forks_before",
    "get_tuple",
    "get_tuple_in",
    "prune",
    "put",
    "put_writes",
    "search",
]
