"""The reserve transaction (budgets.reserve) on PostgreSQL as one statement: the gateway runs it
once per budgeted call, awaited on the event loop (reserve_pg_async) or, before the server's
async connections are open, from a worker thread (reserve_pg).

Why one statement: the counter rows every call of an agent shares (its day row, the global day
row) are locked by each reserve, so how long a reserve holds them bounds the throughput of the
whole agent. As separate statements (even pipelined) the locks were held from the first take
until the COMMIT came back to the server after a round trip to the client; as one statement in
its own transaction they are held only while the server runs it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg
from sqlalchemy import Engine

from tether.core.budget import CounterState, ScopeCap, fits
from tether.store.budget_sql import Refused, bind_processors
from tether.store.pg_async import AsyncPG


def reserve_pg(
    engine: Engine, ordered: Sequence[ScopeCap], fresh: Sequence[ScopeCap], *,
    reservation_id: str, amount_nusd: int, tokens: int, run_id: str | None, now: datetime,
    expires: datetime,
) -> Refused | None:  # fmt: skip
    """Holds `amount_nusd` and `tokens` (and one call) on every scope of `ordered` (merged,
    sorted: the lock order) or on none, saying then which scope had no room; `fresh` caps are
    written with the take. From a worker thread: the statement and its COMMIT in one round trip
    (psycopg's pipeline mode), on a connection of the engine's pool."""
    pre, main = _params(engine, ordered, fresh, reservation_id=reservation_id,
                        amount_nusd=amount_nusd, tokens=tokens, run_id=run_id, now=now,
                        expires=expires)  # fmt: skip
    raw = engine.raw_connection()
    try:
        conn: Any = raw.driver_connection
        try:
            with conn.pipeline():
                if pre is not None:
                    conn.cursor().execute(_INSERT_FRESH, pre)
                cur = conn.cursor()
                cur.execute(_RESERVE_PG, main)
                conn.commit()
            rows = cur.fetchall()
        except BaseException:
            conn.rollback()
            raise
    finally:
        raw.close()  # back to the pool
    return _outcome(ordered, rows, amount_nusd, tokens)


async def reserve_pg_async(
    pg: AsyncPG, engine: Engine, ordered: Sequence[ScopeCap], fresh: Sequence[ScopeCap], *,
    reservation_id: str, amount_nusd: int, tokens: int, run_id: str | None, now: datetime,
    expires: datetime,
) -> Refused | None:  # fmt: skip
    """reserve_pg awaited on the event loop, on one of `pg`'s kept connections (no thread hop,
    no pool ping): the statement, prepared, in one round trip and a transaction of its own.

    It may be sent twice (pg.resendable: a kept connection found dead), and the first may have
    committed: see _send."""
    pre, main = _params(engine, ordered, fresh, reservation_id=reservation_id,
                        amount_nusd=amount_nusd, tokens=tokens, run_id=run_id, now=now,
                        expires=expires)  # fmt: skip

    async def work(conn: Any, resent: bool) -> Refused | None:
        return await _send(conn, pre, main, ordered, resent=resent)

    return await pg.resendable(work)


async def _send(
    conn: Any, pre: dict[str, Any] | None, main: dict[str, Any], ordered: Sequence[ScopeCap], *,
    resent: bool,
) -> Refused | None:  # fmt: skip
    """The reserve on an autocommitted connection. Sent again after a first try whose
    connection died (`resent`), it recognises a hold that first try committed: its INSERT fails
    on the hold's primary key (the whole statement with it, the second take too), or, when the
    first took the last of the room, it finds no room and then the hold, committed."""
    try:
        async with conn.pipeline():
            if pre is not None:
                await conn.cursor().execute(_INSERT_FRESH, pre, prepare=True)
            cur = conn.cursor()
            await cur.execute(_RESERVE_PG, main, prepare=True)
        rows = await cur.fetchall()
    except psycopg.errors.UniqueViolation:
        if resent:
            return None
        raise
    refused = _outcome(ordered, rows, main["a"], main["t"])
    if refused is not None and resent:
        held = await conn.execute(_HELD, {"id": main["id"]}, prepare=True)
        if await held.fetchone() is not None:
            return None
    return refused


_HELD = "SELECT 1 FROM reservations WHERE id = %(id)s"


# The reserve. It locks every counter row in scope order (the lock order of settle and release
# too), checks every cap against the newest rows (a row locked after a wait is read again), and
# only if all of them hold takes the room on each and inserts the hold; when refused, it returns
# the counters it read. A fresh cap (the policy changed, or this process has not written it) is
# written with the take; a counter row that does not exist yet is inserted just before, in the
# same transaction, by _INSERT_FRESH: a separate statement, so that a row another transaction
# is inserting at the same time is waited for there and then visible to the reserve (which
# would otherwise not see it and refuse). The commit does not wait for the WAL flush: see
# budgets.hold_commit for why that loses no acknowledged settle.
_RESERVE_PG = """\
WITH w AS (
  SELECT * FROM unnest(%(scopes)s::text[], %(fresh)s::bool[], %(cap_nusd)s::int8[],
    %(cap_tokens)s::int8[], %(cap_calls)s::int8[]) WITH ORDINALITY
    AS w(scope, fresh, cap_nusd, cap_tokens, cap_calls, ord)
  CROSS JOIN (SELECT set_config('synchronous_commit', 'off', true)) AS async_commit
), l AS (
  SELECT c.scope, w.ord, w.fresh, w.cap_nusd AS new_nusd, w.cap_tokens AS new_tokens,
    w.cap_calls AS new_calls, c.cap_nusd, c.cap_tokens, c.cap_calls, c.spent_nusd,
    c.reserved_nusd, c.spent_tokens, c.reserved_tokens, c.calls
  FROM budget_counters c JOIN w ON c.scope = w.scope
  ORDER BY w.ord FOR UPDATE OF c
), r AS (
  SELECT ord, scope, spent_nusd, reserved_nusd, spent_tokens, reserved_tokens, calls,
    CASE WHEN fresh THEN new_nusd ELSE cap_nusd END AS cap_nusd,
    CASE WHEN fresh THEN new_tokens ELSE cap_tokens END AS cap_tokens,
    CASE WHEN fresh THEN new_calls ELSE cap_calls END AS cap_calls
  FROM l
), ok AS (
  SELECT count(*) = %(n)s AND bool_and(
    (cap_nusd IS NULL OR spent_nusd + reserved_nusd + %(a)s::int8 <= cap_nusd)
    AND (cap_tokens IS NULL OR spent_tokens + reserved_tokens + %(t)s::int8 <= cap_tokens)
    AND (cap_calls IS NULL OR calls + 1 <= cap_calls)) AS fits
  FROM r
), take AS (
  UPDATE budget_counters c SET reserved_nusd = c.reserved_nusd + %(a)s::int8,
    reserved_tokens = c.reserved_tokens + %(t)s::int8, calls = c.calls + 1,
    cap_nusd = CASE WHEN w.fresh THEN w.cap_nusd ELSE c.cap_nusd END,
    cap_tokens = CASE WHEN w.fresh THEN w.cap_tokens ELSE c.cap_tokens END,
    cap_calls = CASE WHEN w.fresh THEN w.cap_calls ELSE c.cap_calls END,
    updated_at = %(now)s
  FROM w WHERE c.scope = w.scope AND (SELECT fits FROM ok)
), hold AS (
  INSERT INTO reservations (id, run_id, scopes, amount_nusd, tokens, status, created_at,
    expires_at)
  SELECT %(id)s, %(run_id)s, %(scopes_json)s::json, %(a)s::int8, %(t)s::int8, 'held',
    %(now)s, %(expires_at)s
  WHERE (SELECT fits FROM ok)
)
SELECT ok.fits, r.scope, r.cap_nusd, r.cap_tokens, r.cap_calls, r.spent_nusd,
  r.reserved_nusd, r.spent_tokens, r.reserved_tokens, r.calls
FROM ok LEFT JOIN r ON ok.fits IS NOT TRUE ORDER BY r.ord"""
# the counter rows of fresh caps that do not exist yet, in scope order, counts at zero
_INSERT_FRESH = (
    "INSERT INTO budget_counters (scope, cap_nusd, cap_tokens, cap_calls, spent_nusd, "
    "reserved_nusd, spent_tokens, reserved_tokens, calls, updated_at) "
    "SELECT scope, cap_nusd, cap_tokens, cap_calls, 0, 0, 0, 0, 0, %(now)s "
    "FROM unnest(%(scopes)s::text[], %(cap_nusd)s::int8[], %(cap_tokens)s::int8[], "
    "%(cap_calls)s::int8[]) AS f(scope, cap_nusd, cap_tokens, cap_calls) "
    "ON CONFLICT (scope) DO NOTHING"
)


def _params(
    engine: Engine, ordered: Sequence[ScopeCap], fresh: Sequence[ScopeCap], *,
    reservation_id: str, amount_nusd: int, tokens: int, run_id: str | None, now: datetime,
    expires: datetime,
) -> tuple[dict[str, Any] | None, dict[str, Any]]:  # fmt: skip
    """The parameters of _INSERT_FRESH (None: no fresh cap) and of _RESERVE_PG, bound as
    SQLAlchemy would bind them (its type processors)."""
    ts, json = bind_processors(engine.dialect)
    now, expires = ts(now), ts(expires)
    scopes = [c.scope for c in ordered]
    main = {
        "scopes": scopes, "fresh": [c in fresh for c in ordered],
        "cap_nusd": [c.cap_nusd for c in ordered], "cap_tokens": [c.cap_tokens for c in ordered],
        "cap_calls": [c.cap_calls for c in ordered], "n": len(ordered), "a": amount_nusd,
        "t": tokens, "now": now, "id": reservation_id, "run_id": run_id,
        "scopes_json": json(scopes), "expires_at": expires,
    }  # fmt: skip
    if not fresh:
        return None, main
    new = [c for c in ordered if c in fresh]  # in scope order
    pre = {"scopes": [c.scope for c in new], "cap_nusd": [c.cap_nusd for c in new],
           "cap_tokens": [c.cap_tokens for c in new], "cap_calls": [c.cap_calls for c in new],
           "now": now}  # fmt: skip
    return pre, main


def _outcome(
    ordered: Sequence[ScopeCap], rows: list[Any], amount_nusd: int, tokens: int
) -> Refused | None:
    """None if the reserve held; else the first scope (in order) without room, as read."""
    if rows and rows[0][0] is True:
        return None
    read = {r[1]: r for r in rows if r[1] is not None}
    for cap in ordered:
        r = read.get(cap.scope)
        if r is None:  # no counter row: nothing was ever allowed on it
            return Refused(cap, CounterState())
        state = CounterState(r[5], r[6], r[7], r[8], r[9])
        seen = ScopeCap(cap.scope, r[2], r[3], r[4])
        if not fits(state, seen, amount_nusd, tokens):
            return Refused(seen, state)
    raise AssertionError("a refused reserve with room on every scope")
