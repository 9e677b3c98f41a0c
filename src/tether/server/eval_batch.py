"""Eval attempt writes in one SQLite transaction together (group commit): the starts and finishes
that arrive while another is being written wait on the event loop, and one leader task writes
all of them in the next transaction, on a worker thread, each in a savepoint of its own.

SQLite has one writer at a time anyway: under `tether eval run --concurrency N` the finishes
queue for its lock. Written one by one, each costs a thread hop, BEGIN IMMEDIATE, the WAL frames
of the pages it changed and a COMMIT; a batch shares all of those (the eval's row, its agent's
rows and the attempts' pages are the same for every finish of an eval). A write that fails (its
own error, or SpansMissing while another process's spans are awaited) rolls back its savepoint
only; the others commit. On PostgreSQL every write is a transaction of its own, written
concurrently (server.evals_flush.write_queued): a batch would serialise their round trips.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi.concurrency import run_in_threadpool
from sqlalchemy import Connection, Engine

from tether.server.deps import State
from tether.server.evals_flush import write_queued
from tether.store.writelock import span_writer

T = TypeVar("T")
Write = Callable[[Connection], Any]
# at most this many writes a transaction (each a savepoint): a long batch holds the lock longer
_BATCH = 16


class _Batcher:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.waiting: list[tuple[Write, asyncio.Future[Any]]] = []
        self.leader: asyncio.Task[None] | None = None

    async def write(self, fn: Write) -> Any:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.waiting.append((fn, fut))
        if self.leader is None:
            self.leader = asyncio.create_task(self._lead())
        return await fut

    async def _lead(self) -> None:
        try:
            while self.waiting:
                batch = [(fn, f) for fn, f in self.waiting[:_BATCH] if not f.done()]
                del self.waiting[:_BATCH]
                if not batch:
                    continue
                try:
                    outs = await run_in_threadpool(_write_all, self.engine, [fn for fn, _ in batch])
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


def _write_all(engine: Engine, fns: list[Write]) -> list[Any]:
    """One transaction under the process's SQLite writer lock; each write in a savepoint (one
    alone needs none); a write's exception is its outcome and rolls back only its own."""
    if len(fns) == 1:
        try:
            with span_writer(engine), engine.begin() as conn:
                return [fns[0](conn)]
        except Exception as exc:
            return [exc]
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


_BATCHERS: weakref.WeakKeyDictionary[Engine, _Batcher] = weakref.WeakKeyDictionary()


async def write_attempt(state: State, fn: Callable[..., T], *args: Any) -> T:
    """`fn(conn, *args)` in a transaction: on SQLite batched with the eval writes that wait
    beside it, on PostgreSQL a transaction of its own on a worker thread."""
    engine = state.engine
    if engine.dialect.name != "sqlite":
        return await write_queued(state, _in_transaction, fn, *args)
    batcher = _BATCHERS.get(engine)
    if batcher is None:
        batcher = _BATCHERS[engine] = _Batcher(engine)
    out: T = await batcher.write(lambda conn: fn(conn, *args))
    return out


def _in_transaction(engine: Engine, fn: Callable[..., T], *args: Any) -> T:
    with engine.begin() as conn:
        return fn(conn, *args)
