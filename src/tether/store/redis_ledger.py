"""The budget ledger on Redis: one Lua script checks and holds every scope atomically; settled
spend is also written to the database, the durable truth that re-seeds lost counters."""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import anyio
from sqlalchemy import Engine

from tether.core.budget import CounterState, ScopeCap, merge_caps, refusal_message, remaining
from tether.core.errors import BadRequestError, BudgetExceededError
from tether.core.money import nusd_to_float
from tether.store import budgets
from tether.store.budgets import (
    DEFAULT_TTL_S,
    Reservation,
    Settlement,
    new_reservation_id,
    unbound,
    unbound_settlement,
)
from tether.store.pg_async import AsyncPG, NotCommitted
from tether.store.redis_wire import LeanRedis

# Counters outlive a day so that day scopes are still visible the next morning; a counter that
# expired is re-seeded from the database, which has every settled cost.
COUNTER_TTL_S = 3 * 86400

_RESERVE = """
local n = tonumber(ARGV[1])
-- a second delivery of a reserve that held (its connection was lost before the reply)
if redis.call('EXISTS', KEYS[n + 1]) == 1 then return {1} end
local amount, tokens = tonumber(ARGV[2]), tonumber(ARGV[3])
local missing = {}
for i = 1, n do
  if redis.call('EXISTS', KEYS[i]) == 0 then
    local s = 8 + (i - 1) * 6
    if ARGV[s + 3] == '' then
      table.insert(missing, i)
    else
      redis.call('HSET', KEYS[i], 'spent_nusd', ARGV[s + 3], 'spent_tokens', ARGV[s + 4],
        'calls', ARGV[s + 5], 'reserved_nusd', 0, 'reserved_tokens', 0)
    end
  end
end
if #missing > 0 then return {-1, unpack(missing)} end
local names = {'cap_nusd', 'cap_tokens', 'cap_calls'}
for i = 1, n do
  local s = 8 + (i - 1) * 6
  for j = 1, 3 do
    if ARGV[s + j - 1] == '' then redis.call('HDEL', KEYS[i], names[j])
    else redis.call('HSET', KEYS[i], names[j], ARGV[s + j - 1]) end
  end
end
for i = 1, n do
  local h = redis.call('HMGET', KEYS[i], 'spent_nusd', 'reserved_nusd', 'spent_tokens',
    'reserved_tokens', 'calls', 'cap_nusd', 'cap_tokens', 'cap_calls')
  if h[6] and tonumber(h[1]) + tonumber(h[2]) + amount > tonumber(h[6]) then return {0, i} end
  if h[7] and tonumber(h[3]) + tonumber(h[4]) + tokens > tonumber(h[7]) then return {0, i} end
  if h[8] and tonumber(h[5]) + 1 > tonumber(h[8]) then return {0, i} end
end
for i = 1, n do
  redis.call('HINCRBY', KEYS[i], 'reserved_nusd', amount)
  redis.call('HINCRBY', KEYS[i], 'reserved_tokens', tokens)
  redis.call('HINCRBY', KEYS[i], 'calls', 1)
  redis.call('EXPIRE', KEYS[i], ARGV[7])
end
local rk, zk = KEYS[n + 1], KEYS[n + 2]
redis.call('HSET', rk, 'amount', amount, 'tokens', tokens, 'status', 'held', 'scopes', ARGV[6])
redis.call('EXPIRE', rk, ARGV[7])
redis.call('ZADD', zk, ARGV[5], ARGV[4])
return {1}
"""

# Settles or releases a batch of holds in one call. ARGV: m (the number of holds), then per
# hold: its number of scopes n, actual_nusd, actual_tokens, id, mode ('settle' | 'release').
# KEYS: per hold its n counter keys then its hold key, and last the expiry index. Returns
# per hold: done (1 | 0), the amount it had held.
_FINISH = """
local m = tonumber(ARGV[1])
local zk = KEYS[#KEYS]
local out = {}
local k = 0
for j = 1, m do
  local a = 2 + (j - 1) * 5
  local n = tonumber(ARGV[a])
  local actual, atokens, id, mode = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), ARGV[a + 3],
    ARGV[a + 4]
  local rk = KEYS[k + n + 1]
  local st = redis.call('HGET', rk, 'status')
  if st == 'settled' or (mode == 'release' and st ~= 'held') then
    out[#out + 1] = 0
    out[#out + 1] = 0
  else
    local amount, tokens, calls = 0, 0, 0
    if st == 'held' then
      amount = tonumber(redis.call('HGET', rk, 'amount'))
      tokens = tonumber(redis.call('HGET', rk, 'tokens'))
    elseif st == 'released' then
      calls = 1  -- a swept hold gave its call back; the call did happen
    end
    if mode == 'release' then actual, atokens, calls = 0, 0, -1 end
    for i = k + 1, k + n do
      -- a counter gone from Redis is re-seeded from the database, which gets this spend too
      if redis.call('EXISTS', KEYS[i]) == 1 then
        redis.call('HINCRBY', KEYS[i], 'spent_nusd', actual)
        redis.call('HINCRBY', KEYS[i], 'reserved_nusd', 0 - amount)  -- never -0 (HINCRBY)
        redis.call('HINCRBY', KEYS[i], 'spent_tokens', atokens)
        redis.call('HINCRBY', KEYS[i], 'reserved_tokens', 0 - tokens)
        redis.call('HINCRBY', KEYS[i], 'calls', calls)
      end
    end
    redis.call('HSET', rk, 'status', mode == 'release' and 'released' or 'settled')
    redis.call('ZREM', zk, id)
    out[#out + 1] = 1
    out[#out + 1] = amount
  end
  k = k + n + 1
end
return out
"""
# a settle batch larger than this is sent as several script calls (each one blocks Redis)
_FINISH_BATCH = 128


# Counters are hashes `<prefix>b:<scope>`, holds `<prefix>r:<id>` with an expiry index; the
# prefix is `tether:<ledger id of the database>:`. Lua numbers are doubles, so amounts and caps
# are exact up to 2^53 nano-dollars (about $9M per scope). The database write of a settle is
# done before the settle returns (a worker thread: the durable copy of the spend): a crash
# loses no settled spend.
class RedisLedger:
    """Ledger on Redis (shared by every tether process), with durable spend in the database.

    `redis` is a `redis.asyncio.Redis` client; every Redis call is awaited on the event loop
    (one EVALSHA per reserve, one per settle batch: those two through redis_wire's lean client
    to the same server when it can reach it, everything else through `redis`), the database's
    on psycopg's async connections on PostgreSQL, else on a worker thread. `aclose()` closes
    the lean client's connection (the caller closes `redis`)."""

    def __init__(
        self, redis: Any, engine: Engine, *, ttl_s: int = DEFAULT_TTL_S, prefix: str | None = None,
        pg: AsyncPG | None = None,
    ) -> None:  # fmt: skip
        self.redis = redis
        self.engine = engine
        self.ttl_s = ttl_s
        # PostgreSQL: the durable side (seeds, the spend of settle batches) awaited on the loop
        self.pg = pg if engine.dialect.name == "postgresql" else None
        if prefix is None:
            # one namespace per database: processes sharing it share counters, nobody else
            candidate = int.from_bytes(os.urandom(8), "big") >> 2
            prefix = f"tether:{budgets.ledger_id(engine, candidate=candidate)}:"
        self.prefix = prefix
        self._reserve = redis.register_script(_RESERVE)
        self._finish = redis.register_script(_FINISH)
        self._lean = LeanRedis.of(redis)

    async def _script(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        if self._lean is not None:
            return await self._lean.evalsha(script.sha, script.script, keys, args)
        return await script(keys=keys, args=args)

    async def aclose(self) -> None:
        if self._lean is not None:
            await self._lean.aclose()

    def _ckey(self, scope: str) -> str:
        return f"{self.prefix}b:{scope}"

    def _rkey(self, rid: str) -> str:
        return f"{self.prefix}r:{rid}"

    @property
    def _zkey(self) -> str:
        return f"{self.prefix}r:expiry"

    async def reserve(
        self,
        caps: Sequence[ScopeCap],
        *,
        amount_nusd: int,
        tokens: int,
        run_id: str | None,
        now: datetime,
    ) -> Reservation:
        if amount_nusd < 0 or tokens < 0:
            raise BadRequestError("a reservation amount cannot be negative")
        if not caps:
            return unbound(run_id, amount_nusd, tokens, now)
        ordered = merge_caps(caps)
        rid = new_reservation_id()
        expires = now + timedelta(seconds=self.ttl_s)
        keys = [self._ckey(c.scope) for c in ordered] + [self._rkey(rid), self._zkey]
        seeds: dict[int, CounterState] = {}
        for _ in range(3):
            args: list[Any] = [len(ordered), amount_nusd, tokens, rid,
                               int(expires.timestamp() * 1000), "\n".join(c.scope for c in ordered),
                               COUNTER_TTL_S]  # fmt: skip
            for i, c in enumerate(ordered, start=1):
                seed = seeds.get(i)
                args += [_opt(c.cap_nusd), _opt(c.cap_tokens), _opt(c.cap_calls)]
                args += ["", "", ""] if seed is None else [
                    seed.spent_nusd, seed.spent_tokens, seed.calls]  # fmt: skip
            out = await self._script(self._reserve, keys, args)
            if int(out[0]) == 1:
                return Reservation(
                    rid, run_id, tuple(c.scope for c in ordered), amount_nusd, tokens, expires
                )
            if int(out[0]) == 0:
                await self._refuse(ordered[int(out[1]) - 1], amount_nusd, tokens)
            for i in out[1:]:
                seeds[int(i)] = await self._durable(ordered[int(i) - 1].scope)
        raise RuntimeError("budget counters kept disappearing from Redis while being seeded")

    async def _durable(self, scope: str) -> CounterState:
        """The scope's settled spend in the database (a counter lost from Redis, or new)."""
        if self.pg is not None and self.pg.ready:
            row = await self.pg.first(_SEED, {"s": scope})
            return CounterState() if row is None else CounterState(row[0], 0, row[1], 0, row[2])
        snap = await anyio.to_thread.run_sync(budgets.snapshot, self.engine, scope)
        return snap[1] if snap else CounterState()

    async def _refuse(self, cap: ScopeCap, amount_nusd: int, tokens: int) -> None:
        state = await self._state(cap.scope) or CounterState()
        rem = remaining(state, cap)
        raise BudgetExceededError(
            refusal_message(rem, amount_nusd, tokens),
            scope=cap.scope,
            remaining_usd=nusd_to_float(rem.nusd),
            remaining_tokens=rem.tokens,
            remaining_calls=rem.calls,
            needed_usd=nusd_to_float(amount_nusd),
        )

    async def _finish_calls(
        self, items: Sequence[tuple[Reservation, int, int]], mode: str
    ) -> list[tuple[int, int]]:
        """Settles (or releases) the holds in one script call per _FINISH_BATCH; for each, whether
        it was done and the amount it had held."""
        done: list[tuple[int, int]] = []
        for at in range(0, len(items), _FINISH_BATCH):
            keys: list[str] = []
            args: list[Any] = [0]
            for r, actual, atokens in items[at : at + _FINISH_BATCH]:
                keys += [self._ckey(s) for s in sorted(r.scopes)] + [self._rkey(r.id)]
                args += [len(r.scopes), actual, atokens, r.id, mode]
                args[0] += 1
            out = await self._script(self._finish, [*keys, self._zkey], args)
            done += [(int(out[i]), int(out[i + 1])) for i in range(0, len(out), 2)]
        return done

    async def settle(
        self, reservation: Reservation, *, actual_nusd: int, actual_tokens: int, now: datetime
    ) -> Settlement:
        if actual_nusd < 0 or actual_tokens < 0:
            raise BadRequestError("a settled amount cannot be negative")
        if not reservation.scopes:
            return unbound_settlement(reservation, actual_nusd, actual_tokens)
        [(done, held_amount)] = await self._finish_calls(
            [(reservation, actual_nusd, actual_tokens)], "settle"
        )
        if not done:
            return Settlement(0, 0, False, False)
        await anyio.to_thread.run_sync(lambda: budgets.add_spent_many(
            self.engine, reservation.scopes, actual_nusd, actual_tokens, 1, now=now))  # fmt: skip
        overrun = actual_nusd > reservation.amount_nusd or actual_tokens > reservation.tokens
        return Settlement(actual_nusd, max(0, held_amount - actual_nusd), overrun, held_amount > 0)

    async def settle_many(
        self, items: Sequence[tuple[Reservation, int, int]], *, now: datetime
    ) -> None:
        """The holds settle in Redis in one script call; the durable copy of their spend is one
        database transaction for the batch."""
        for _, nusd, tokens in items:
            if nusd < 0 or tokens < 0:
                raise BadRequestError("a settled amount cannot be negative")
        bound = [i for i in items if i[0].scopes]
        spent: dict[str, list[int]] = {}
        for (r, nusd, tokens), (done, _) in zip(
            bound, await self._finish_calls(bound, "settle"), strict=True
        ):
            if not done:
                continue
            for scope in r.scopes:
                d = spent.setdefault(scope, [0, 0, 0])
                d[0] += nusd
                d[1] += tokens
                d[2] += 1
        if not spent:
            return
        if self.pg is not None and self.pg.ready:
            await self.pg.transaction(lambda conn: _add_spent_pg(conn, spent, now))
        else:
            await anyio.to_thread.run_sync(
                lambda: budgets.add_spent_by_scope(self.engine, spent, now=now)
            )

    async def release(self, reservation: Reservation, *, now: datetime) -> bool:
        if not reservation.scopes:
            return True
        [(done, _)] = await self._finish_calls([(reservation, 0, 0)], "release")
        return done == 1

    async def renew(self, reservation_ids: Sequence[str], *, now: datetime) -> int:
        """Moves each live hold's place in the expiry index (XX: never re-adds a finished one)."""
        if not reservation_ids:
            return 0
        score = int((now + timedelta(seconds=self.ttl_s)).timestamp() * 1000)
        pipe = self.redis.pipeline(transaction=False)
        for rid in reservation_ids:
            pipe.zadd(self._zkey, {rid: score}, xx=True, ch=True)
        return sum(int(v) for v in await pipe.execute())

    async def _hash(self, scope: str) -> dict[str, int]:
        h = await self.redis.hgetall(self._ckey(scope))
        return {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in h.items()}

    async def _state(self, scope: str) -> CounterState | None:
        g = await self._hash(scope)
        return _counter(g) if g else None

    async def snapshot(self, scope: str) -> tuple[ScopeCap, CounterState] | None:
        g = await self._hash(scope)
        if not g:
            return await anyio.to_thread.run_sync(budgets.snapshot, self.engine, scope)
        cap = ScopeCap(scope, g.get("cap_nusd"), g.get("cap_tokens"), g.get("cap_calls"))
        return cap, _counter(g)

    async def sweep_expired(self, now: datetime) -> int:
        """Releases holds whose process died; their scopes are kept by the caller's record."""
        ids = await self.redis.zrangebyscore(self._zkey, "-inf", int(now.timestamp() * 1000),
                                             0, 500)  # fmt: skip
        holds: list[tuple[Reservation, int, int]] = []
        for raw in ids:
            rid = raw.decode() if isinstance(raw, bytes) else raw
            scopes = await self.redis.hget(self._rkey(rid), "scopes")
            if scopes is None:
                await self.redis.zrem(self._zkey, rid)
                continue
            names = tuple((scopes.decode() if isinstance(scopes, bytes) else scopes).split("\n"))
            holds.append((Reservation(rid, None, names, 0, 0, now), 0, 0))
        return sum(done for done, _ in await self._finish_calls(holds, "release"))


_SEED = "SELECT spent_nusd, spent_tokens, calls FROM budget_counters WHERE scope = %(s)s"
# the batch's spend per scope in one statement, rows taken in scope order (as reserve locks them)
_ADD_SPENT = (
    "INSERT INTO budget_counters (scope, spent_nusd, reserved_nusd, spent_tokens, "
    "reserved_tokens, calls, updated_at) "
    "SELECT v.s, v.n, 0, v.t, 0, v.c, %(now)s FROM unnest(%(s)s::varchar[], %(n)s::bigint[], "
    "%(t)s::bigint[], %(c)s::int[]) AS v(s, n, t, c) ORDER BY v.s "
    "ON CONFLICT (scope) DO UPDATE SET spent_nusd = budget_counters.spent_nusd + "
    "excluded.spent_nusd, spent_tokens = budget_counters.spent_tokens + excluded.spent_tokens, "
    "calls = budget_counters.calls + excluded.calls, updated_at = excluded.updated_at"
)


async def _add_spent_pg(conn: Any, spent: dict[str, list[int]], now: datetime) -> None:
    """add_spent_by_scope on one of AsyncPG's transaction connections: not idempotent, so it is
    sent again only when its connection failed before the COMMIT (NotCommitted)."""
    import psycopg  # here, not at the top: a SQLite server with Redis never loads it

    scopes = sorted(spent)
    params = {"s": scopes, "n": [spent[x][0] for x in scopes], "t": [spent[x][1] for x in scopes],
              "c": [spent[x][2] for x in scopes], "now": now}  # fmt: skip
    committing = False
    try:
        await conn.execute(_ADD_SPENT, params, prepare=True)
        committing = True
        await conn.commit()
    except psycopg.OperationalError as exc:
        if committing:
            raise
        raise NotCommitted from exc
    except psycopg.Error:
        await conn.rollback()
        raise


def _counter(g: dict[str, int]) -> CounterState:
    return CounterState(
        g.get("spent_nusd", 0), g.get("reserved_nusd", 0), g.get("spent_tokens", 0),
        g.get("reserved_tokens", 0), g.get("calls", 0),
    )  # fmt: skip


def _opt(v: int | None) -> int | str:
    return "" if v is None else v
