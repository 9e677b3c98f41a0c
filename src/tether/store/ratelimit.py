"""Sliding-window rate limits, correct across server processes: in Redis (a sorted set per key,
one Lua script) when configured, else in the database (`rate_events`, one transaction).
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Engine, delete, func, insert, select, text

from tether.core.policy import Decision, rate_key, with_rate_result
from tether.store.budgets import ledger_id
from tether.store.tables import rate_events

# Removes what left the window, counts, and records the call only if it fits; returns
# {1, 0} or {0, milliseconds until the oldest counted call leaves the window}.
_LUA = """
local key = KEYS[1]
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
local n = redis.call('ZCARD', key)
if n < limit then
  redis.call('ZADD', key, now, ARGV[4])
  redis.call('PEXPIRE', key, window)
  return {1, 0}
end
local oldest = redis.call('ZRANGE', key, n - limit, n - limit, 'WITHSCORES')
return {0, tonumber(oldest[2]) + window - now}
"""


class RateLimiter(Protocol):
    def check_and_record(
        self, key: str, limit: int, window_s: float, now: datetime
    ) -> tuple[bool, float | None]:
        """(True, None) and the call counted, or (False, seconds until a slot frees)."""
        ...


class StoreRateLimiter:
    """Windows in the `rate_events` table; one write transaction per check."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def check_and_record(
        self, key: str, limit: int, window_s: float, now: datetime
    ) -> tuple[bool, float | None]:
        start = now - timedelta(seconds=window_s)
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # One writer per key at a time; SQLite's BEGIN IMMEDIATE already serialises.
                conn.execute(
                    text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 6))"), {"k": key}
                )
            conn.execute(
                delete(rate_events).where(rate_events.c.key == key, rate_events.c.at <= start)
            )
            n = conn.execute(
                select(func.count()).select_from(rate_events).where(rate_events.c.key == key)
            ).scalar_one()
            if n < limit:
                conn.execute(insert(rate_events).values(key=key, at=now))
                return True, None
            oldest = conn.execute(
                select(rate_events.c.at)
                .where(rate_events.c.key == key)
                .order_by(rate_events.c.at)
                .offset(n - limit)
                .limit(1)
            ).scalar_one()
        return False, max(0.0, (oldest - start).total_seconds())


class RedisRateLimiter:
    """Windows in Redis sorted sets (scores in milliseconds), one Lua script per check."""

    def __init__(
        self, redis: Any, *, engine: Engine | None = None, prefix: str | None = None
    ) -> None:
        if prefix is None and engine is None:
            raise ValueError("RedisRateLimiter needs a prefix or the engine to take one from")
        self.redis = redis
        self.engine = engine
        self._prefix = prefix
        self._script = redis.register_script(_LUA)

    @property
    def prefix(self) -> str:
        """`tether:<ledger id>:rl:`: the database's namespace, as the Redis budget ledger's, so
        two deployments (or test databases) sharing one Redis never share a window."""
        if self._prefix is None:
            assert self.engine is not None
            candidate = int.from_bytes(os.urandom(8), "big") >> 2
            self._prefix = f"tether:{ledger_id(self.engine, candidate=candidate)}:rl:"
        return self._prefix

    def check_and_record(
        self, key: str, limit: int, window_s: float, now: datetime
    ) -> tuple[bool, float | None]:
        now_ms = int(now.timestamp() * 1000)
        member = f"{now_ms}:{os.urandom(6).hex()}"
        ok, wait_ms = self._script(
            keys=[self.prefix + key], args=[now_ms, int(window_s * 1000), limit, member]
        )
        return (True, None) if int(ok) == 1 else (False, max(0.0, int(wait_ms) / 1000))


def make_limiter(engine: Engine, redis: Any | None = None) -> RateLimiter:
    """Redis when the server has one (shared by every replica), else the database."""
    return RedisRateLimiter(redis, engine=engine) if redis is not None else StoreRateLimiter(engine)


def enforce(
    limiter: RateLimiter, decision: Decision, agent: str, tool: str, now: datetime
) -> Decision:
    """Counts an allowed (or held) call against its rule's rate limit; rate_limited when full."""
    limit = decision.rate_limit
    if limit is None or decision.outcome not in ("allow", "approval_required"):
        return decision
    allowed, retry = limiter.check_and_record(
        rate_key(agent, tool), limit.count, limit.window_s, now
    )
    return with_rate_result(decision, allowed, retry)
