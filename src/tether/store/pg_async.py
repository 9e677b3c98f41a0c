"""Single PostgreSQL statements awaited on the event loop (psycopg's async connections, no
SQLAlchemy in between), for the checkpoint routes that LangGraph's saver calls every super-step.

A hop to the thread pool and back costs milliseconds of scheduling on a busy machine, more than
the statement; so does a pool's ping before each checkout, and SQLAlchemy's async layer (a
greenlet switch and its result machinery per call) costs more CPU than psycopg itself. Here each
statement runs autocommitted, prepared once per connection, on one of a few connections kept
open: a connection found dead is dropped and the statement sent once more on a fresh one (the
statements given here are idempotent: upserts of the same values, a monotonic step, reads).

`transaction(work)` runs a short transaction (the gateway's span batches) on a second set of
connections, not autocommitted. A transaction is not idempotent: it is sent again on a fresh
connection only when `work` says, by raising NotCommitted, that its connection failed before any
COMMIT was sent (the server rolls back an open transaction with its connection), and only when
that connection was a kept one found broken. `resendable(work)` runs statements that commit on
their own (the gateway's budget reserve) on a third set, autocommitted: sent again after a kept
connection was found broken, even though the first try may have committed, so `work` is told it
is the second try and must recognise what a first one did.

`AsyncPG.lifespan` opens the pool on the server's own loop and closes it at shutdown; before
that (or without a lifespan, as in some tests) `ready` is False and callers use a thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

from sqlalchemy import URL

if TYPE_CHECKING:
    import psycopg

T = TypeVar("T")
# psycopg is imported where a connection is used: a SQLite server never loads it (~8 MB of RSS)
Conn: TypeAlias = "psycopg.AsyncConnection[Any]"


class NotCommitted(Exception):
    """Raised by a transaction's `work` (from the connection error, its __cause__) when the
    connection failed before a COMMIT was sent: nothing of it can have committed."""


class AsyncPG:
    def __init__(self, url: URL, *, pool_size: int = 4, tx_size: int = 8) -> None:
        # libpq's own URL (SQLAlchemy's names the driver: postgresql+psycopg://)
        self.conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self.pool_size = pool_size
        self.tx_size = tx_size
        self.ready = False
        self._idle: list[Conn] = []
        # transactions: at most tx_size connections at once (more would only queue on the same
        # counter rows' locks), kept open while idle
        self._idle_tx: list[Conn] = []
        self._idle_auto: list[Conn] = []  # resendable(): autocommitted, same slots
        self._tx_slots: asyncio.Semaphore | None = None

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        self.ready = True
        self._tx_slots = asyncio.Semaphore(self.tx_size)  # on the serving loop
        try:
            yield
        finally:
            self.ready = False
            idle = self._idle + self._idle_tx + self._idle_auto
            self._idle, self._idle_tx, self._idle_auto = [], [], []
            for conn in idle:
                await conn.close()

    async def transaction(self, work: Callable[[Conn], Awaitable[T]]) -> T:
        """`work(conn)` on a kept connection (not autocommitted): it begins, commits or rolls
        back its own transaction, leaving none open when it returns or raises a psycopg.Error
        (else the connection is dropped)."""
        import psycopg

        assert self._tx_slots is not None, "transaction() before lifespan()"
        async with self._tx_slots:
            for attempt in (1, 2):
                reused = bool(self._idle_tx) and attempt == 1
                conn = self._idle_tx.pop() if reused else await self._connect(autocommit=False)
                try:
                    out = await work(conn)
                except NotCommitted as exc:
                    await conn.close()
                    if reused and conn.broken:
                        continue  # it died while idle, and nothing was committed: once more
                    raise exc.__cause__ or exc from None
                except psycopg.OperationalError:
                    await conn.close()  # maybe committed: never sent again
                    raise
                except psycopg.Error:
                    await self._keep_tx(conn)  # work rolled back: the connection is usable
                    raise
                except BaseException:
                    await conn.close()  # cancelled: it may be mid-reply or mid-transaction
                    raise
                await self._keep_tx(conn)
                return out
        raise AssertionError("unreachable")

    async def resendable(self, work: Callable[[Conn, bool], Awaitable[T]]) -> T:
        """`work(conn, resent)` on a kept autocommitted connection, as many at once as
        transactions. A kept connection found dead (a restart, an idle timeout) is dropped and
        work run once more on a fresh one with `resent` True: the first try may have committed
        before the connection died, so work must then recognise its own effect."""
        import psycopg

        assert self._tx_slots is not None, "resendable() before lifespan()"
        async with self._tx_slots:
            for attempt in (1, 2):
                reused = bool(self._idle_auto) and attempt == 1
                conn = self._idle_auto.pop() if reused else await self._connect()
                try:
                    out = await work(conn, attempt == 2)
                except psycopg.OperationalError:
                    await conn.close()
                    if reused and conn.broken:
                        continue
                    raise
                except psycopg.Error:
                    await self._keep_auto(conn)  # a refused statement leaves it usable
                    raise
                except BaseException:
                    await conn.close()  # cancelled: it may be mid-reply
                    raise
                await self._keep_auto(conn)
                return out
        raise AssertionError("unreachable")

    async def _keep_auto(self, conn: Conn) -> None:
        idle = _idle(conn)
        if self.ready and idle and len(self._idle_auto) < self.tx_size:
            self._idle_auto.append(conn)
        else:
            await conn.close()

    async def _keep_tx(self, conn: Conn) -> None:
        idle = _idle(conn)
        if self.ready and idle and len(self._idle_tx) < self.tx_size:
            self._idle_tx.append(conn)
        else:  # a transaction left open, or shutting down: closing it rolls that back
            await conn.close()

    async def first(self, sql: str, params: dict[str, Any]) -> Any:
        """The statement's first row (None: no row)."""
        import psycopg

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

    async def _connect(self, *, autocommit: bool = True) -> Conn:
        import psycopg

        return await psycopg.AsyncConnection.connect(self.conninfo, autocommit=autocommit)

    async def _keep(self, conn: Conn) -> None:
        idle = _idle(conn)
        if self.ready and idle and len(self._idle) < self.pool_size:
            self._idle.append(conn)
        else:  # more in flight than are kept, or shutting down
            await conn.close()


def _idle(conn: Conn) -> bool:
    """No transaction open on `conn`: it can be kept for the next statement."""
    from psycopg.pq import TransactionStatus

    return conn.info.transaction_status == TransactionStatus.IDLE


__all__ = ["AsyncPG", "NotCommitted"]
