"""`run_db(state, fn, *args)`: a short store call from an async route, on the event loop when
SQLite's write lock is free right now (no thread hop), else on a worker thread as usual.

On a loaded machine a hop to the thread pool and back costs milliseconds of scheduling, more
than the query; the checkpoint routes (LangGraph's saver calls them every super-step) take this
path. PostgreSQL calls always go to a thread: their I/O must not block the loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi.concurrency import run_in_threadpool
from sqlalchemy import Engine

from tether.server.deps import State
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
