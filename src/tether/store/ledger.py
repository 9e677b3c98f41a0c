"""The budget ledger the LLM gateway reserves against: the Protocol, the SQL ledger, and
`make_ledger(engine, redis)` (the Redis ledger when Redis is configured)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Engine

from tether.core.budget import CounterState, ScopeCap
from tether.core.ids import make_id
from tether.store import budgets
from tether.store.budgets import Reservation, Settlement

DEFAULT_TTL_S = 900


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

    def settle(
        self, reservation: Reservation, *, actual_nusd: int, actual_tokens: int, now: datetime
    ) -> Settlement: ...

    def release(self, reservation: Reservation, *, now: datetime) -> bool: ...

    def snapshot(self, scope: str) -> tuple[ScopeCap, CounterState] | None: ...

    def sweep_expired(self, now: datetime) -> int: ...


def new_reservation_id() -> str:
    return make_id("rsv", os.urandom(12))


def unbound(run_id: str | None, amount_nusd: int, tokens: int, now: datetime) -> Reservation:
    """A reservation on no scope (nothing is capped): costs no database round trip."""
    return Reservation(new_reservation_id(), run_id, (), amount_nusd, tokens, now)


class SqlLedger:
    """Counters in `budget_counters`, holds in `reservations` (SQLite or PostgreSQL)."""

    def __init__(self, engine: Engine, *, ttl_s: int = DEFAULT_TTL_S) -> None:
        self.engine = engine
        self.ttl_s = ttl_s

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
        return budgets.reserve(
            self.engine, caps, reservation_id=new_reservation_id(), amount_nusd=amount_nusd,
            tokens=tokens, run_id=run_id, now=now, ttl_s=self.ttl_s,
        )  # fmt: skip

    def settle(
        self, reservation: Reservation, *, actual_nusd: int, actual_tokens: int, now: datetime
    ) -> Settlement:
        if not reservation.scopes:
            return _unbound_settlement(reservation, actual_nusd, actual_tokens)
        return budgets.settle(
            self.engine, reservation, actual_nusd=actual_nusd, actual_tokens=actual_tokens, now=now
        )

    def release(self, reservation: Reservation, *, now: datetime) -> bool:
        if not reservation.scopes:
            return True
        return budgets.release(self.engine, reservation, now=now)

    def snapshot(self, scope: str) -> tuple[ScopeCap, CounterState] | None:
        return budgets.snapshot(self.engine, scope)

    def sweep_expired(self, now: datetime) -> int:
        return budgets.sweep_expired(self.engine, now)


def _unbound_settlement(r: Reservation, actual_nusd: int, actual_tokens: int) -> Settlement:
    overrun = actual_nusd > r.amount_nusd or actual_tokens > r.tokens
    return Settlement(actual_nusd, max(0, r.amount_nusd - actual_nusd), overrun, True)


def make_ledger(engine: Engine, redis: Any | None = None, *, ttl_s: int = DEFAULT_TTL_S) -> Ledger:
    """The Redis ledger when a (sync) `redis.Redis` client is given, else the SQL ledger."""
    if redis is not None:
        from tether.store.redis_ledger import RedisLedger

        return RedisLedger(redis, engine, ttl_s=ttl_s)
    return SqlLedger(engine, ttl_s=ttl_s)


def expiry(now: datetime, ttl_s: int) -> datetime:
    return now + timedelta(seconds=ttl_s)


__all__ = ["Ledger", "Reservation", "Settlement", "SqlLedger", "make_ledger"]
