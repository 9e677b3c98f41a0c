"""The budget ledger the LLM gateway reserves against: the Protocol, the SQL ledger, and
`make_ledger(engine, redis)` (the Redis ledger when Redis is configured)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Engine

from tether.core.budget import CounterState, ScopeCap
from tether.store import budgets, writelock
from tether.store.budgets import (
    DEFAULT_TTL_S,
    Reservation,
    Settlement,
    new_reservation_id,
    unbound,
    unbound_settlement,
)
from tether.store.pg_async import AsyncPG


class Ledger(Protocol):
    """Reserve the worst case before a call, settle to the real cost after it, or release.

    reserve() raises BudgetExceededError (402) naming the scope and `remaining_usd` in
    `details`; it holds every scope or none. The invariant: for every scope, settled spend
    never exceeds its cap when each call's real cost is within its reservation.
    All methods are synchronous and short; async callers use `anyio.to_thread.run_sync`.
    """

    def reserve(
        self,
        caps: Sequence[ScopeCap],
        *,
        amount_nusd: int,
        tokens: int,
        run_id: str | None,
        now: datetime,
    ) -> Reservation: ...

    def reserve_nowait(
        self,
        caps: Sequence[ScopeCap],
        *,
        amount_nusd: int,
        tokens: int,
        run_id: str | None,
        now: datetime,
    ) -> Reservation | None:
        """reserve() if it can be done at once without waiting for a lock or the network
        (SQLite with its writer lock free), so that an event loop may call it; else None."""
        ...

    async def reserve_async(
        self,
        caps: Sequence[ScopeCap],
        *,
        amount_nusd: int,
        tokens: int,
        run_id: str | None,
        now: datetime,
    ) -> Reservation | None:
        """reserve() awaited on the event loop when the ledger can do so without blocking it
        (PostgreSQL with its async connections open); else None (reserve_nowait, or reserve on
        a worker thread)."""
        ...

    def on_release(self, hook: Callable[[], object]) -> bool:
        """Calls `hook` once (from any thread) when a reserve_nowait that gave up may succeed;
        False when waiting can never help (it always gives up)."""
        ...

    def settle(
        self, reservation: Reservation, *, actual_nusd: int, actual_tokens: int, now: datetime
    ) -> Settlement: ...

    def settle_many(self, items: Sequence[tuple[Reservation, int, int]], *, now: datetime) -> None:
        """Settles (reservation, actual_nusd, actual_tokens) items at once: the gateway's
        settle writer batches the calls that finished together."""
        ...

    def release(self, reservation: Reservation, *, now: datetime) -> bool: ...

    def renew(self, reservation_ids: Sequence[str], *, now: datetime) -> int:
        """Keeps the holds of calls still in flight: their expiry moves to now + the TTL."""
        ...

    def snapshot(self, scope: str) -> tuple[ScopeCap, CounterState] | None: ...

    def sweep_expired(self, now: datetime) -> int: ...


class SqlLedger:
    """Counters in `budget_counters`, holds in `reservations` (SQLite or PostgreSQL)."""

    def __init__(
        self, engine: Engine, *, ttl_s: int = DEFAULT_TTL_S, pg: AsyncPG | None = None
    ) -> None:
        self.engine = engine
        self.ttl_s = ttl_s
        # PostgreSQL: async connections for reserve_async (the server's, opened by its lifespan)
        self.pg = pg if engine.dialect.name == "postgresql" else None

    def reserve(
        self,
        caps: Sequence[ScopeCap],
        *,
        amount_nusd: int,
        tokens: int,
        run_id: str | None,
        now: datetime,
    ) -> Reservation:
        if not caps:
            return unbound(run_id, amount_nusd, tokens, now)
        held = budgets.reserve(
            self.engine, caps, reservation_id=new_reservation_id(), amount_nusd=amount_nusd,
            tokens=tokens, run_id=run_id, now=now, ttl_s=self.ttl_s,
        )  # fmt: skip
        assert held is not None  # only a `nowait` reserve gives up
        return held

    def reserve_nowait(
        self,
        caps: Sequence[ScopeCap],
        *,
        amount_nusd: int,
        tokens: int,
        run_id: str | None,
        now: datetime,
    ) -> Reservation | None:
        if not caps:
            return unbound(run_id, amount_nusd, tokens, now)
        if self.engine.dialect.name != "sqlite":
            return None
        return budgets.reserve(
            self.engine, caps, reservation_id=new_reservation_id(), amount_nusd=amount_nusd,
            tokens=tokens, run_id=run_id, now=now, ttl_s=self.ttl_s, nowait=True,
        )  # fmt: skip

    async def reserve_async(
        self,
        caps: Sequence[ScopeCap],
        *,
        amount_nusd: int,
        tokens: int,
        run_id: str | None,
        now: datetime,
    ) -> Reservation | None:
        if not caps:
            return unbound(run_id, amount_nusd, tokens, now)
        if self.pg is None or not self.pg.ready:
            return None
        return await budgets.reserve_async(
            self.pg, self.engine, caps, reservation_id=new_reservation_id(),
            amount_nusd=amount_nusd, tokens=tokens, run_id=run_id, now=now, ttl_s=self.ttl_s,
        )  # fmt: skip

    def on_release(self, hook: Callable[[], object]) -> bool:
        return writelock.on_release(self.engine, hook)

    def settle(
        self, reservation: Reservation, *, actual_nusd: int, actual_tokens: int, now: datetime
    ) -> Settlement:
        if not reservation.scopes:
            return unbound_settlement(reservation, actual_nusd, actual_tokens)
        return budgets.settle(
            self.engine, reservation, actual_nusd=actual_nusd, actual_tokens=actual_tokens, now=now
        )

    def settle_many(self, items: Sequence[tuple[Reservation, int, int]], *, now: datetime) -> None:
        bound = [i for i in items if i[0].scopes]
        if bound:
            budgets.settle_many(self.engine, bound, now=now)

    def release(self, reservation: Reservation, *, now: datetime) -> bool:
        if not reservation.scopes:
            return True
        return budgets.release(self.engine, reservation, now=now)

    def renew(self, reservation_ids: Sequence[str], *, now: datetime) -> int:
        if not reservation_ids:
            return 0
        return budgets.renew(self.engine, reservation_ids, expiry(now, self.ttl_s))

    def snapshot(self, scope: str) -> tuple[ScopeCap, CounterState] | None:
        return budgets.snapshot(self.engine, scope)

    def sweep_expired(self, now: datetime) -> int:
        return budgets.sweep_expired(self.engine, now)


def make_ledger(
    engine: Engine,
    redis: Any | None = None,
    *,
    ttl_s: int = DEFAULT_TTL_S,
    pg: AsyncPG | None = None,
) -> Ledger:
    """The Redis ledger when a (sync) `redis.Redis` client is given, else the SQL ledger (which
    reserves on the event loop through `pg` on PostgreSQL once its lifespan opened it)."""
    if redis is not None:
        from tether.store.redis_ledger import RedisLedger

        return RedisLedger(redis, engine, ttl_s=ttl_s)
    return SqlLedger(engine, ttl_s=ttl_s, pg=pg)


def expiry(now: datetime, ttl_s: int) -> datetime:
    return now + timedelta(seconds=ttl_s)


__all__ = ["Ledger", "Reservation", "Settlement", "SqlLedger", "make_ledger"]
