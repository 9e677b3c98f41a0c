"""Single PostgreSQL statements awaited on the event loop (psycopg's async connections, no
SQLAlchemy in between), for the checkpoint routes that LangGraph's saver calls every super-step.

A hop to the thread pool and back costs milliseconds of scheduling on a busy machine, more than
the statement; so does a pool's ping before each checkout, and SQLAlchemy's async layer (a
greenlet switch and its result machinery per call) costs more CPU than psycopg itself. Here each
statement runs autocommitted, prepared once per connection, on one of a few connections kept
open: a connection found dead is dropped and the statement sent once more on a fresh one (the
statements given here are idempotent: upserts of the same values, a monotonic step, reads).

`AsyncPG.lifespan` opens the pool on the server's own loop and closes it at shutdown; before
that (or without a lifespan, as in some tests) `ready` is False and callers use a thread.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from sqlalchemy import URL


class AsyncPG:
    def __init__(self, url: URL, *, pool_size: int = 4) -> None:
        # libpq's own URL (SQLAlchemy's names the driver: postgresql+psycopg://)
        self.conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self.pool_size = pool_size
        self.ready = False
        self._idle: list[psycopg.AsyncConnection[Any]] = []

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        self.ready = True
        try:
            yield
        finally:
            self.ready = False
            idle, self._idle = self._idle, []
            for conn in idle:
                await conn.close()

    async def first(self, sql: str, params: dict[str, Any]) -> Any:
        """The statement's first row (None: no row)."""
        for attempt in (1, 2):
            reused = bool(self._idle) and attempt == 1
            conn = self._idle.pop() if reused else await self._connect()
            try:
                cur = await conn.execute(sql, params, prepare=True)
                row = await cur.fetchone()
            except psycopg.OperationalError:
                await conn.close()
                if reused and conn.broken:
                    continue  # it died while idle (a restart, an idle timeout): once more
                raise
            except psycopg.Error:
                await self._keep(conn)  # a refused statement leaves it usable (autocommit)
                raise
            except BaseException:
                await conn.close()  # cancelled: it may be mid-reply
                raise
            await self._keep(conn)
            return None if row is None else tuple(row)
        raise AssertionError("unreachable")

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        return await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True)

    async def _keep(self, conn: psycopg.AsyncConnection[Any]) -> None:
        idle = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        if self.ready and idle and len(self._idle) < self.pool_size:
            self._idle.append(conn)
        else:  # more in flight than are kept, or shutting down
            await conn.close()


__all__ = ["AsyncPG"]
