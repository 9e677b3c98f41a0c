"""Eval attempt writes in one SQLite transaction together (group commit): the starts and finishes
that arrive while another is being written wait on the event loop, and one leader task writes
all of them in the next transaction, on a worker thread, each in a savepoint of its own
(server.group_commit).

SQLite has one writer at a time anyway: under `tether eval run --concurrency N` the finishes
queue for its lock. Written one by one, each costs a thread hop, BEGIN IMMEDIATE, the WAL frames
of the pages it changed and a COMMIT; a batch shares all of those (the eval's row, its agent's
rows and the attempts' pages are the same for every finish of an eval). A write that fails (its
own error, or SpansMissing while another process's spans are awaited) rolls back its savepoint
only; the others commit. On PostgreSQL every write is a transaction of its own, written
concurrently (server.evals_flush.write_queued): a batch would serialise their round trips.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Engine

from tether.server import group_commit
from tether.server.deps import State
from tether.server.evals_flush import write_queued

T = TypeVar("T")
# at most this many writes a transaction (each a savepoint): a long batch holds the lock longer
_BATCH = 16


async def write_attempt(state: State, fn: Callable[..., T], *args: Any) -> T:
    """`fn(conn, *args)` in a transaction: on SQLite batched with the eval writes that wait
    beside it, on PostgreSQL a transaction of its own on a worker thread."""
    engine = state.engine
    if engine.dialect.name != "sqlite":
        return await write_queued(state, _in_transaction, fn, *args)
    out: T = await group_commit.queue(engine, "evals", _BATCH).write(lambda conn: fn(conn, *args))
    return out


def _in_transaction(engine: Engine, fn: Callable[..., T], *args: Any) -> T:
    with engine.begin() as conn:
        return fn(conn, *args)
