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
from functools import cache
from typing import Any

from sqlalchemy import Engine

from tether.core.budget import CounterState, ScopeCap, fits
from tether.store.budget_sql import Refused, bind_processors, settle_deltas
from tether.store.pg_async import AsyncPG, NotCommitted


def reserve_pg(
    engine: Engine, ordered: Sequence[ScopeCap], fresh: Sequence[ScopeCap], *,
    reservation_id: str, amount_nusd: int, tokens: int, run_id: str | None, now: datetime,
    expires: datetime,
) -> Refused | None:  # fmt: skip
    """Holds `amount_nusd` and `tokens` (and one call) on every scope of `ordered` (merged,
    sorted: the lock order) or on none, saying then which scope had no room; `fresh` caps are
    written with the take. From a worker thread: the statement and its COMMIT in one round trip
    (psycopg's pipeline mode), on a connection of the engine's pool."""
    pre, stmt, values = _params(engine, ordered, fresh, reservation_id=reservation_id,
                                amount_nusd=amount_nusd, tokens=tokens, run_id=run_id,
                                now=now, expires=expires)  # fmt: skip
    raw = engine.raw_connection()
    try:
        conn: Any = raw.driver_connection
        try:
            with conn.pipeline():
                if pre is not None:
                    conn.cursor().execute(pre, values)
                cur = conn.cursor()
                cur.execute(stmt, values)
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
    pre, stmt, values = _params(engine, ordered, fresh, reservation_id=reservation_id,
                                amount_nusd=amount_nusd, tokens=tokens, run_id=run_id,
                                now=now, expires=expires)  # fmt: skip

    async def work(conn: Any, resent: bool) -> Refused | None:
        return await _send(conn, pre, stmt, values, ordered, resent=resent)

    return await pg.resendable(work)


async def _send(
    conn: Any, pre: str | None, stmt: str, values: dict[str, Any], ordered: Sequence[ScopeCap],
    *, resent: bool,
) -> Refused | None:  # fmt: skip
    """The reserve on an autocommitted connection (one statement, or the insert of fresh
    counter rows and the reserve pipelined in one implicit transaction). Sent again after a
    first try whose connection died (`resent`), it recognises a hold that first try committed:
    its INSERT fails on the hold's primary key (the whole statement with it, the second take
    too), or, when the first took the last of the room, it finds no room and then the hold."""
    import psycopg  # here, not at the top: a SQLite server never loads it

    try:
        if pre is None:
            cur = await conn.execute(stmt, values, prepare=True)
        else:
            async with conn.pipeline():
                await conn.cursor().execute(pre, values, prepare=True)
                cur = conn.cursor()
                await cur.execute(stmt, values, prepare=True)
        rows = await cur.fetchall()
    except psycopg.errors.UniqueViolation:
        if resent:
            return None
        raise
    refused = _outcome(ordered, rows, values["a"], values["t"])
    if refused is not None and resent:
        held = await conn.execute(_HELD, {"id": values["id"]}, prepare=True)
        if await held.fetchone() is not None:
            return None
    return refused


_HELD = "SELECT 1 FROM reservations WHERE id = %(id)s"


# The reserve. It locks every counter row in scope order (the lock order of settle and release
# too), checks every cap against the newest rows (a row locked after a wait is read again), and
# only if all of them hold takes the room on each and inserts the hold; when refused, it returns
# the counters it read. A fresh cap (the policy changed, or this process has not written it) is
# written with the take; a counter row that does not exist yet is inserted just before, in the
# same transaction, by _INSERT: a separate statement, so that a row another transaction
# is inserting at the same time is waited for there and then visible to the reserve (which
# would otherwise not see it and refuse). The commit does not wait for the WAL flush: see
# budgets.hold_commit for why that loses no acknowledged settle.
_RESERVE = """\
WITH w AS (
  SELECT * FROM (VALUES {scopes}) AS w(scope, fresh, cap_nusd, cap_tokens, cap_calls, ord)
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
  SELECT count(*) = {n} AND bool_and(
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
_INSERT = (
    "INSERT INTO budget_counters (scope, cap_nusd, cap_tokens, cap_calls, spent_nusd, "
    "reserved_nusd, spent_tokens, reserved_tokens, calls, updated_at) VALUES {rows} "
    "ON CONFLICT (scope) DO NOTHING"
)


@cache
def _reserve_sql(n: int) -> str:
    """_RESERVE for `n` scopes: each scope's values bound one by one (psycopg dumps a few
    scalars for less than one array, and the reserve runs on every budgeted call)."""
    rows = ", ".join(
        f"(%(s{i})s::text, %(f{i})s::bool, %(n{i})s::int8, %(t{i})s::int8, %(c{i})s::int8, {i})"
        for i in range(n)
    )
    return _RESERVE.format(scopes=rows, n=n)


@cache
def _insert_sql(picked: tuple[int, ...]) -> str:
    """_INSERT for the fresh scopes among the reserve's (their indexes, in scope order)."""
    rows = ", ".join(f"(%(s{i})s, %(n{i})s, %(t{i})s, %(c{i})s, 0, 0, 0, 0, 0, %(now)s)"
                     for i in picked)  # fmt: skip
    return _INSERT.format(rows=rows)


def _params(
    engine: Engine, ordered: Sequence[ScopeCap], fresh: Sequence[ScopeCap], *,
    reservation_id: str, amount_nusd: int, tokens: int, run_id: str | None, now: datetime,
    expires: datetime,
) -> tuple[str | None, str, dict[str, Any]]:  # fmt: skip
    """The statements (the insert of fresh counter rows, None without fresh caps; the reserve)
    and their parameters, bound as SQLAlchemy would bind them (its type processors)."""
    ts, json = bind_processors(engine.dialect)
    values: dict[str, Any] = {
        "a": amount_nusd, "t": tokens, "now": ts(now), "id": reservation_id, "run_id": run_id,
        "scopes_json": json([c.scope for c in ordered]), "expires_at": ts(expires),
    }  # fmt: skip
    picked = []
    for i, c in enumerate(ordered):
        is_fresh = c in fresh
        values[f"s{i}"], values[f"f{i}"] = c.scope, is_fresh
        values[f"n{i}"], values[f"t{i}"], values[f"c{i}"] = c.cap_nusd, c.cap_tokens, c.cap_calls
        if is_fresh:
            picked.append(i)
    pre = _insert_sql(tuple(picked)) if picked else None
    return pre, _reserve_sql(len(ordered)), values


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


# The settle writer's batch (budgets.settle_many's common case: every hold still held) awaited
# on the event loop: the holds marked settled, then the counters charged one UPDATE per scope in
# scope order (the reserve's lock order), pipelined in one transaction whose commit does not
# wait for the WAL flush (its counter locks go at once, budgets.hold_commit); then a lock-free
# synchronous commit waits for the flush (budgets._flush_wal) before the batch counts as done.
_MARK_HELD = (
    "UPDATE reservations SET status = 'settled' WHERE status = 'held' AND id = ANY(%(ids)s) "
    "RETURNING id"
)
_CHARGE_HELD = (
    "UPDATE budget_counters SET spent_nusd = spent_nusd + %(spent)s, "
    "reserved_nusd = reserved_nusd - %(held)s, spent_tokens = spent_tokens + %(stokens)s, "
    "reserved_tokens = reserved_tokens - %(htokens)s, updated_at = %(now)s WHERE scope = %(s)s"
)
_FLUSH = "SELECT pg_current_xact_id()"


async def settle_held_pg(pg: AsyncPG, items: Sequence[tuple[Any, int, int]], now: datetime) -> bool:
    """Settles (reservation, actual_nusd, actual_tokens) items if every one is still held
    (True, on disk); else writes nothing (False: budgets.settle_many's general path decides)."""
    ids = [r.id for r, _, _ in items]
    if len(set(ids)) != len(ids):
        return False
    deltas = settle_deltas(items)
    charges = [{"spent": d[0], "held": d[1], "stokens": d[2], "htokens": d[3], "now": now,
                "s": s} for s, d in sorted(deltas.items())]  # fmt: skip

    async def work(conn: Any) -> bool:
        import psycopg  # here, not at the top: a SQLite server never loads it

        try:
            async with conn.pipeline():
                await conn.execute("SET LOCAL synchronous_commit = off")
                marked = await conn.execute(_MARK_HELD, {"ids": ids}, prepare=True)
                await conn.cursor().executemany(_CHARGE_HELD, charges)
            if len(await marked.fetchall()) != len(ids):
                await conn.rollback()
                return False
        except psycopg.OperationalError as exc:
            raise NotCommitted from exc  # before the COMMIT: nothing of it can have committed
        except psycopg.Error:
            await conn.rollback()
            raise
        # a connection lost during the COMMIT is raised as it is: the settle writer sends the
        # batch again, and holds found settled then go to the general path, which skips them
        await conn.commit()
        return True

    if not await pg.transaction(work):
        return False
    await pg.first(_FLUSH, {})
    return True
