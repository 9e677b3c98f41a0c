"""`run_db(state, fn, *args)`: a short store call from an async route, on the event loop when
SQLite's write lock is free right now (no thread hop), else on a worker thread as usual.

On a loaded machine a hop to the thread pool and back costs milliseconds of scheduling, more
than the query; the checkpoint routes (LangGraph's saver calls them every super-step) take this
path. PostgreSQL calls go to a thread (their I/O must not block the loop), except the single
statements of store/checkpoints_pg.py: `run_pg` awaits them on the loop (store/pg_async.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi.concurrency import run_in_threadpool
from sqlalchemy import Engine

from tether.server.deps import State
from tether.store import checkpoints_pg
from tether.store.inline import Busy, passive_checkpoint

T = TypeVar("T")
log = logging.getLogger("tether.server")


def _checkpoint(engine: Engine) -> None:
    try:
        passive_checkpoint(engine)
    except Exception:  # a background chore: the next one tries again
        log.warning("passive WAL checkpoint failed", exc_info=True)


async def run_db(state: State, fn: Callable[..., T], *args: Any) -> T:
    """`fn(engine, *args)`: inline on SQLite unless another writer holds the lock."""
    inline = state.inline_db
    if inline is not None:
        try:
            out = inline.run(fn, *args)
        except Busy:
            pass  # nothing was written; the thread below waits for the lock
        else:
            if inline.checkpoint_due():
                asyncio.get_running_loop().run_in_executor(None, _checkpoint, state.engine)
            return out
    return await run_in_threadpool(fn, state.engine, *args)


async def run_pg(state: State, stmt: checkpoints_pg.Statement) -> Any:
    """One of checkpoints_pg's statements; its first row (None: no row)."""
    pg = state.pg_async
    if pg is None or not pg.ready:  # no lifespan ran: the pool is not open
        return await run_in_threadpool(checkpoints_pg.first, state.engine, stmt)
    return await pg.first(*stmt)
