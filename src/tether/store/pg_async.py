"""Single PostgreSQL statements awaited on the event loop (psycopg's async driver), for the
checkpoint routes that LangGraph's saver calls every super-step.

A hop to the thread pool and back costs milliseconds of scheduling on a busy machine, more than
the statement; so does the pool's ping before each checkout. Here each statement runs
autocommitted on a connection of a small async pool without a ping: a connection found dead is
dropped by the pool and the statement is sent once more on a fresh one (the statements given
here are idempotent: upserts of the same values, a monotonic step, reads).

`AsyncPG.lifespan` opens the pool on the server's own loop and closes it at shutdown; before
that (or without a lifespan, as in some tests) `engine` is None and callers use a thread.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import URL
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine


class AsyncPG:
    def __init__(self, url: URL, *, pool_size: int = 4) -> None:
        self.url = url
        self.pool_size = pool_size
        self.engine: AsyncEngine | None = None

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        self.engine = create_async_engine(
            self.url,
            pool_size=self.pool_size,
            max_overflow=self.pool_size * 2,
            pool_recycle=1800,
            isolation_level="AUTOCOMMIT",
        )
        try:
            yield
        finally:
            engine, self.engine = self.engine, None
            await engine.dispose()

    async def first(self, engine: AsyncEngine, sql: str, params: dict[str, Any]) -> Any:
        """The statement's first row (None: no row)."""
        for attempt in (1, 2):
            try:
                async with engine.connect() as conn:
                    result = await conn.exec_driver_sql(sql, params)
                    row = result.first()
                return None if row is None else tuple(row)
            except DBAPIError as exc:
                if attempt == 2 or not exc.connection_invalidated:
                    raise
        raise AssertionError("unreachable")


__all__ = ["AsyncPG"]
