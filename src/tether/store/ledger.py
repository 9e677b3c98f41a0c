"""The budget ledger the LLM gateway reserves against: the Protocol, the SQL ledger, and
`make_ledger(engine, redis)` (the Redis ledger when Redis is configured)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

import anyio
from sqlalchemy import Engine

from tether.core.budget import CounterState, ScopeCap
from tether.store import budgets, writelock
from tether.store.budget_pg import settle_held_pg
from tether.store.budget_sql import Want
from tether.store.budgets import (
    DEFAULT_TTL_S,
    Reservation,
    Settlement,
    new_reservation_id,
    unbound,
    unbound_settlement,
)
from tether.store.pg_async import AsyncPG

# SQLite: a reserve waits on the event loop for this process's writer lock this many times,
# this long at most each time, before it takes a worker thread
_INLINE_TRIES = 4
_INLINE_WAIT_S = 0.005
# at most this many reserves in one transaction
_BATCH = 64


class Ledger(Protocol):
    """Reserve the worst case before a call, settle to the real cost after it, or release.

    Every method is a coroutine for the server's event loop: each ledger does its own I/O in
    the cheapest way it has (SQLite: a reserve on the loop when the writer lock is free, else
    on a worker thread; PostgreSQL: psycopg's async connections once their pool is open;
    Redis: redis.asyncio, one script call per reserve and per settle batch). Callers never
    choose a path and never hop to a thread themselves.

    reserve() raises BudgetExceededError (402) naming the scope and `remaining_usd` in
    `details`; it holds every scope or none. The invariant: for every scope, settled spend
    never exceeds its cap when each call's real cost is within its reservation.
    """

    async def reserve(
        self,
        caps: Sequence[ScopeCap],
        *,
        amount_nusd: int,
        tokens: int,
        run_id: str | None,
        now: datetime,
    ) -> Reservation: ...

    async def settle(
        self, reservation: Reservation, *, actual_nusd: int, actual_tokens: int, now: datetime
    ) -> Settlement: ...

    async def settle_many(
        self, items: Sequence[tuple[Reservation, int, int]], *, now: datetime
    ) -> None:
        """Settles (reservation, actual_nusd, actual_tokens) items at once: the gateway's
        settle writer batches the calls that finished together."""
        ...

    async def release(self, reservation: Reservation, *, now: datetime) -> bool: ...

    async def renew(self, reservation_ids: Sequence[str], *, now: datetime) -> int:
        """Keeps the holds of calls still in flight: their expiry moves to now + the TTL."""
        ...

    async def snapshot(self, scope: str) -> tuple[ScopeCap, CounterState] | None: ...

    async def sweep_expired(self, now: datetime) -> int: ...


class SqlLedger:
    """Counters in `budget_counters`, holds in `reservations` (SQLite or PostgreSQL)."""

    def __init__(
        self, engine: Engine, *, ttl_s: int = DEFAULT_TTL_S, pg: AsyncPG | None = None
    ) -> None:
        self.engine = engine
        self.ttl_s = ttl_s
        self.sqlite = engine.dialect.name == "sqlite"
        # PostgreSQL: async connections for reserve (the server's, opened by its lifespan)
        self.pg = pg if engine.dialect.name == "postgresql" else None
        # settle batches on a thread of their own: never queued behind request work
        self._settle_limiter: anyio.CapacityLimiter | None = None
        # SQLite: reserves waiting for the writer lock, and the task that holds them in batches
        self._waiting: list[tuple[Want, asyncio.Future[Reservation]]] = []
        self._leader: asyncio.Task[None] | None = None
        # SQLite: holds made here and not yet settled or released (calls in flight)
        self._open = 0

    async def reserve(
        self,
        caps: Sequence[ScopeCap],
        *,
        amount_nusd: int,
        tokens: int,
        run_id: str | None,
        now: datetime,
    ) -> Reservation:
        """PostgreSQL: awaited on the event loop (once the pool is open), else on a worker
        thread. SQLite: on the loop's thread when it needs no waiting (nothing else in flight
        and the writer lock free: a fraction of a millisecond; a thread hop costs more than the
        reserve); else in line on the loop with the other reserves of this turn of the loop or
        waiting for the lock, held together in one transaction (reserve_sqlite.py), on a
        worker thread if the lock stays busy (another process writing)."""
        if not caps:
            return unbound(run_id, amount_nusd, tokens, now)
        rid = new_reservation_id()
        if self.pg is not None and self.pg.ready:
            return await budgets.reserve_async(
                self.pg, self.engine, caps, reservation_id=rid, amount_nusd=amount_nusd,
                tokens=tokens, run_id=run_id, now=now, ttl_s=self.ttl_s,
            )  # fmt: skip

        if self.sqlite:
            w = budgets.want(self.engine, caps, reservation_id=rid, amount_nusd=amount_nusd,
                             tokens=tokens, run_id=run_id, now=now, ttl_s=self.ttl_s)  # fmt: skip
            return await self._reserve_sqlite(w)
        held = await anyio.to_thread.run_sync(lambda: budgets.reserve(
            self.engine, caps, reservation_id=rid, amount_nusd=amount_nusd, tokens=tokens,
            run_id=run_id, now=now, ttl_s=self.ttl_s))  # fmt: skip
        assert held is not None  # only a `nowait` reserve gives up
        return held

    async def _reserve_sqlite(self, w: Want) -> Reservation:
        """Alone and at once when no other call is in flight here and the writer lock is free;
        else in line for the next batch (group commit), which one leader task holds in one
        transaction: with calls in flight, the reserves that arrive in the same turn of the
        event loop share one commit (a commit costs more than the reserve's statements)."""
        if not self._waiting and not self._open:
            done = budgets.reserve_batch(self.engine, [w], nowait=True)
            if done is not None:
                return self._opened(_result(done[0]))
        fut: asyncio.Future[Reservation] = asyncio.get_running_loop().create_future()
        self._waiting.append((w, fut))
        if self._leader is None:
            self._leader = asyncio.create_task(self._lead())
        # a caller cancelled while in line leaves it; once its batch is taken, its hold (if
        # made) is freed by the expiry sweep, as a hold of a process that died would be
        return await fut

    async def _lead(self) -> None:
        """Holds the waiting reserves in batches until none is left: on the loop's thread
        while the writer lock comes free within a few tries, else on a worker thread."""
        tries = 0
        try:
            while self._waiting:
                batch = [(w, f) for w, f in self._waiting[:_BATCH] if not f.done()]
                del self._waiting[:_BATCH]
                if not batch:
                    continue
                wants = [w for w, _ in batch]
                try:
                    if tries < _INLINE_TRIES:
                        done = budgets.reserve_batch(self.engine, wants, nowait=True)
                        if done is None:  # busy: wait for the lock, the batch first in line
                            self._waiting[:0] = batch
                            tries += 1
                            if not await self._writer_released():
                                tries = _INLINE_TRIES
                            continue
                    else:
                        done = await anyio.to_thread.run_sync(
                            budgets.reserve_batch, self.engine, wants
                        )
                    assert done is not None  # only a `nowait` batch gives up
                except Exception as exc:  # the batch failed as a whole (its transaction)
                    done = [exc] * len(batch)
                tries = 0
                for (_, fut), out in zip(batch, done, strict=True):
                    if not fut.done():
                        if isinstance(out, Exception):
                            fut.set_exception(out)
                        else:
                            fut.set_result(self._opened(out))
        finally:
            self._leader = None

    def _opened(self, held: Reservation) -> Reservation:
        if held.scopes:
            self._open += 1
        return held

    def _closed(self, n: int) -> None:
        self._open = max(0, self._open - n)

    async def _writer_released(self) -> bool:
        """Waits until this process lets SQLite's writer lock go (or a short timeout: a
        release in another process is not signalled); False when there is nothing to wait for."""
        loop = asyncio.get_running_loop()
        released = loop.create_future()

        def wake() -> None:
            loop.call_soon_threadsafe(_resolve, released)

        if not writelock.on_release(self.engine, wake):
            return False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_INLINE_WAIT_S):
                await released
        return True

    async def settle(
        self, reservation: Reservation, *, actual_nusd: int, actual_tokens: int, now: datetime
    ) -> Settlement:
        if not reservation.scopes:
            return unbound_settlement(reservation, actual_nusd, actual_tokens)
        self._closed(1)
        return await anyio.to_thread.run_sync(lambda: budgets.settle(
            self.engine, reservation, actual_nusd=actual_nusd, actual_tokens=actual_tokens,
            now=now))  # fmt: skip

    async def settle_many(
        self, items: Sequence[tuple[Reservation, int, int]], *, now: datetime
    ) -> None:
        bound = [i for i in items if i[0].scopes]
        if not bound:
            return
        # SQLite: on the loop's thread when the writer lock is free and every hold still held;
        # PostgreSQL: awaited on the loop when every hold is still held (budget_pg)
        if self.pg is not None and self.pg.ready:
            done = await settle_held_pg(self.pg, bound, now)
        else:
            done = self.sqlite and bool(
                budgets.settle_many(self.engine, bound, now=now, nowait=True)
            )
        if not done:
            if self._settle_limiter is None:
                self._settle_limiter = anyio.CapacityLimiter(1)
            await anyio.to_thread.run_sync(
                lambda: budgets.settle_many(self.engine, bound, now=now),
                limiter=self._settle_limiter,
            )
        self._closed(len(bound))

    async def release(self, reservation: Reservation, *, now: datetime) -> bool:
        if not reservation.scopes:
            return True
        self._closed(1)
        return await anyio.to_thread.run_sync(
            lambda: budgets.release(self.engine, reservation, now=now)
        )

    async def renew(self, reservation_ids: Sequence[str], *, now: datetime) -> int:
        if not reservation_ids:
            return 0
        ids = list(reservation_ids)
        return await anyio.to_thread.run_sync(budgets.renew, self.engine, ids,
                                              expiry(now, self.ttl_s))  # fmt: skip

    async def snapshot(self, scope: str) -> tuple[ScopeCap, CounterState] | None:
        return await anyio.to_thread.run_sync(budgets.snapshot, self.engine, scope)

    async def sweep_expired(self, now: datetime) -> int:
        return await anyio.to_thread.run_sync(budgets.sweep_expired, self.engine, now)


def _result(out: Reservation | Exception) -> Reservation:
    if isinstance(out, Exception):
        raise out
    return out


def _resolve(fut: asyncio.Future[Any]) -> None:
    if not fut.done():
        fut.set_result(None)


def make_ledger(
    engine: Engine,
    redis: Any | None = None,
    *,
    ttl_s: int = DEFAULT_TTL_S,
    pg: AsyncPG | None = None,
) -> Ledger:
    """The Redis ledger when a `redis.asyncio.Redis` client is given, else the SQL ledger (which
    reserves on the event loop through `pg` on PostgreSQL once its lifespan opened it)."""
    if redis is not None:
        from tether.store.redis_ledger import RedisLedger

        return RedisLedger(redis, engine, ttl_s=ttl_s, pg=pg)
    return SqlLedger(engine, ttl_s=ttl_s, pg=pg)


def expiry(now: datetime, ttl_s: int) -> datetime:
    return now + timedelta(seconds=ttl_s)


__all__ = ["Ledger", "Reservation", "Settlement", "SqlLedger", "make_ledger"]
