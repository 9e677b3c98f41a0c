"""Group commit on SQLite: writes that arrive while another is being written wait on the event
loop, and one leader task writes all of them in the next transaction, on a worker thread, each
in a savepoint of its own. Each waiter is answered after the COMMIT that holds its write.

SQLite has one writer at a time anyway: concurrent writers queue for its lock. Written one by
one, each costs a thread hop, BEGIN IMMEDIATE, the WAL frames of the pages it changed and a
COMMIT; a group shares all of those (index pages that several writes touch go to the WAL once).
A write that fails rolls back its savepoint only; the others commit. Without savepoints (span
ingest: a savepoint keeps a copy of every page it changes that an earlier write of the group had
changed already, tens of MB of memory for a few span batches), a group whose transaction fails
is written again one write a transaction, so that only the failing one fails; its writes must
then be idempotent. Used by eval attempt writes (server.eval_batch) and OTLP span ingest
(server.otlp), each with a queue of its own per engine.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import Any

from fastapi.concurrency import run_in_threadpool
from sqlalchemy import Connection, Engine

from tether.store.writelock import span_writer

Write = Callable[[Connection], Any]


class GroupCommit:
    """One engine's queue of writes for one purpose; at most `max_writes` a transaction (each a
    savepoint: a long group holds the writer lock longer)."""

    def __init__(self, engine: Engine, max_writes: int, *, savepoints: bool = True) -> None:
        self.engine = engine
        self.max_writes = max_writes
        self.savepoints = savepoints
        self.waiting: list[tuple[Write, asyncio.Future[Any]]] = []
        self.leader: asyncio.Task[None] | None = None

    async def write(self, fn: Write) -> Any:
        """`fn(conn)` in the next transaction; its result (or its exception) once committed."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.waiting.append((fn, fut))
        if self.leader is None:
            self.leader = asyncio.create_task(self._lead())
        return await fut

    async def _lead(self) -> None:
        try:
            while self.waiting:
                n = self.max_writes
                batch = [(fn, f) for fn, f in self.waiting[:n] if not f.done()]
                del self.waiting[:n]
                if not batch:
                    continue
                try:
                    fns = [fn for fn, _ in batch]
                    outs = await run_in_threadpool(write_all, self.engine, fns, self.savepoints)
                except Exception as exc:  # the transaction failed as a whole (its COMMIT)
                    outs = [exc] * len(batch)
                for (_, fut), out in zip(batch, outs, strict=True):
                    if fut.done():  # its request was cancelled: what it wrote stays written
                        continue
                    if isinstance(out, BaseException):
                        fut.set_exception(out)
                    else:
                        fut.set_result(out)
        finally:
            self.leader = None


def write_all(engine: Engine, fns: list[Write], savepoints: bool = True) -> list[Any]:
    """One transaction under the process's SQLite writer lock; each write in a savepoint (one
    alone needs none); a write's exception is its outcome and rolls back only its own. Without
    `savepoints`, a failed transaction is tried again one write at a time."""
    if len(fns) == 1:
        try:
            with span_writer(engine), engine.begin() as conn:
                return [fns[0](conn)]
        except Exception as exc:
            return [exc]
    if not savepoints:
        try:
            with span_writer(engine), engine.begin() as conn:
                return [fn(conn) for fn in fns]
        except Exception:  # one of them failed: which, a transaction each tells
            return [write_all(engine, [fn])[0] for fn in fns]
    outs: list[Any] = []
    with span_writer(engine), engine.begin() as conn:
        for fn in fns:
            savepoint = conn.begin_nested()
            try:
                outs.append(fn(conn))
            except Exception as exc:
                savepoint.rollback()
                outs.append(exc)
            else:
                savepoint.commit()
    return outs


_QUEUES: weakref.WeakKeyDictionary[Engine, dict[str, GroupCommit]] = weakref.WeakKeyDictionary()


def queue(engine: Engine, purpose: str, max_writes: int, *, savepoints: bool = True) -> GroupCommit:
    """The engine's queue for `purpose` (made on first use, in the event loop's thread)."""
    queues = _QUEUES.get(engine)
    if queues is None:
        queues = _QUEUES[engine] = {}
    q = queues.get(purpose)
    if q is None:
        q = queues[purpose] = GroupCommit(engine, max_writes, savepoints=savepoints)
    return q


__all__ = ["GroupCommit", "Write", "queue", "write_all"]
