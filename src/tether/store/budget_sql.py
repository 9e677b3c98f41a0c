"""The reserve transaction (budgets.reserve) in plain SQL given to the driver, on SQLite and
PostgreSQL: the gateway runs it once per budgeted call.

Why not SQLAlchemy Core here: even with statements built once, executing one through a Core
connection (parameter processing, the execution context, events) cost more than the statement
itself, and upserting a new run's caps built an INSERT ... ON CONFLICT construct per call: on the
budgeted path this transaction was a quarter of the server's CPU (py-spy, issue 9). The values
bound are those SQLAlchemy would bind (the same type processors), so rows are stored alike.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

import psycopg
from sqlalchemy import Engine
from sqlalchemy.engine import Dialect

from tether.core.budget import CounterState, ScopeCap
from tether.store.pg_async import AsyncPG, NotCommitted
from tether.store.tables import TS
from tether.store.tables import reservations as rs

# a new counter row takes the caps of the current policy; an existing one is given them (caps
# can change with the policy), its counts untouched
_UPSERT_CAPS = (
    "INSERT INTO budget_counters (scope, cap_nusd, cap_tokens, cap_calls, spent_nusd, "
    "reserved_nusd, spent_tokens, reserved_tokens, calls, updated_at) "
    "VALUES (:scope, :cap_nusd, :cap_tokens, :cap_calls, 0, 0, 0, 0, 0, :now) "
    "ON CONFLICT (scope) DO UPDATE SET cap_nusd = excluded.cap_nusd, "
    "cap_tokens = excluded.cap_tokens, cap_calls = excluded.cap_calls, "
    "updated_at = excluded.updated_at"
)
# the conditional UPDATE: it takes the room only if every cap still holds after it
_TAKE = (
    "UPDATE budget_counters SET reserved_nusd = reserved_nusd + :a, "
    "reserved_tokens = reserved_tokens + :t, calls = calls + 1, updated_at = :now "
    "WHERE scope = :s "
    "AND (cap_nusd IS NULL OR spent_nusd + reserved_nusd + :a <= cap_nusd) "
    "AND (cap_tokens IS NULL OR spent_tokens + reserved_tokens + :t <= cap_tokens) "
    "AND (cap_calls IS NULL OR calls + 1 <= cap_calls)"
)
_COUNTER = (
    "SELECT cap_nusd, cap_tokens, cap_calls, spent_nusd, reserved_nusd, spent_tokens, "
    "reserved_tokens, calls FROM budget_counters WHERE scope = :s"
)
_HOLD = (
    "INSERT INTO reservations (id, run_id, scopes, amount_nusd, tokens, status, created_at, "
    "expires_at) {source}"
)
_HOLD_VALUES = "VALUES (:id, :run_id, :scopes, :amount_nusd, :tokens, 'held', :now, :expires_at)"
# PostgreSQL: the same INSERT also turns off this transaction's commit wait (see
# budgets.hold_commit for why no acknowledged settle can be lost), with no round trip of its own
_HOLD_ASYNC = (
    "SELECT :id, :run_id, :scopes, :amount_nusd, :tokens, 'held', :now, :expires_at "
    "FROM (SELECT set_config('synchronous_commit', 'off', true)) AS async_commit"
)


@dataclass(frozen=True)
class Refused:
    """The scope that had no room, as read inside the refused transaction."""

    cap: ScopeCap
    state: CounterState


@dataclass(frozen=True)
class _Sql:
    upsert_caps: str
    take: str
    counter: str
    hold: str
    begin: str | None
    ts: Callable[[datetime], Any]
    json: Callable[[list[str]], Any]


def _driver_style(sql: str, dialect: Dialect) -> str:
    if dialect.paramstyle in ("pyformat", "format"):
        return re.sub(r":(\w+)", r"%(\1)s", sql)
    return sql  # sqlite3 takes :name with a dict


def _identity(value: Any) -> Any:
    return value


@cache
def _sql(dialect_name: str, dialect: Dialect) -> _Sql:
    pg = dialect_name == "postgresql"
    hold = _HOLD.format(source=_HOLD_ASYNC if pg else _HOLD_VALUES)
    # hold_commit's set_config needs the typed columns spelled on PostgreSQL's SELECT
    if pg:
        hold = hold.replace(":scopes", "CAST(:scopes AS JSON)").replace(
            ":now", "CAST(:now AS TIMESTAMPTZ)").replace(
            ":expires_at", "CAST(:expires_at AS TIMESTAMPTZ)")  # fmt: skip
    ts = TS.bind_processor(dialect) or _identity
    json = rs.c.scopes.type.dialect_impl(dialect).bind_processor(dialect) or _identity
    return _Sql(
        upsert_caps=_driver_style(_UPSERT_CAPS, dialect), take=_driver_style(_TAKE, dialect),
        counter=_driver_style(_COUNTER, dialect), hold=_driver_style(hold, dialect),
        begin=None if pg else "BEGIN IMMEDIATE", ts=ts, json=json,
    )  # fmt: skip


class Busy(Exception):
    """Another connection holds SQLite's write lock (only with `nowait`)."""


# SQLite: one connection per engine for reserves that must not wait (the gateway's event loop
# thread runs them when the writer lock is free): a busy database fails at once, and the
# caller takes the waiting path on a worker thread instead
_NOWAIT: weakref.WeakKeyDictionary[Engine, Any] = weakref.WeakKeyDictionary()


def _nowait_connection(engine: Engine) -> Any:
    raw = _NOWAIT.get(engine)
    if raw is None:
        raw = engine.raw_connection()  # kept out of the pool for good
        cur = raw.cursor()
        cur.execute("PRAGMA busy_timeout=0")
        cur.close()
        _NOWAIT[engine] = raw
    return raw


def reserve_raw(
    engine: Engine,
    ordered: Sequence[ScopeCap],
    fresh: Sequence[ScopeCap],
    *,
    reservation_id: str,
    amount_nusd: int,
    tokens: int,
    run_id: str | None,
    now: datetime,
    expires: datetime,
    nowait: bool = False,
) -> Refused | None:
    """One transaction: takes the room on every scope of `ordered` (in that order: the lock
    order; a `fresh` cap is upserted just before its own take, so its row lock comes in the same
    order), and inserts the hold; or takes nothing and says which scope had no room. The caller
    serialises SQLite writers (writelock.span_writer). With `nowait` (SQLite only) raises Busy
    instead of waiting for another writer."""
    sql = _sql(engine.dialect.name, engine.dialect)
    ts_now = sql.ts(now)
    raw = _nowait_connection(engine) if nowait else engine.raw_connection()
    if sql.begin is None:  # PostgreSQL
        try:
            return _reserve_pipelined(raw, sql, ordered, fresh, reservation_id=reservation_id,
                                      amount_nusd=amount_nusd, tokens=tokens, run_id=run_id,
                                      now=ts_now, expires=sql.ts(expires))  # fmt: skip
        finally:
            raw.close()
    try:
        cur = raw.cursor()
        if sql.begin is not None:
            try:
                cur.execute(sql.begin)
            except engine.dialect.dbapi.OperationalError as exc:  # type: ignore[union-attr]
                if nowait and "locked" in str(exc):
                    raise Busy from None
                raise
        try:
            for cap in ordered:
                if cap in fresh:  # upserted just before its take: one lock order for both
                    cur.execute(sql.upsert_caps, _cap_params(cap, ts_now))
                cur.execute(sql.take, {"s": cap.scope, "a": amount_nusd, "t": tokens,
                                       "now": ts_now})  # fmt: skip
                if cur.rowcount != 1:
                    cur.execute(sql.counter, {"s": cap.scope})
                    r: Any = cur.fetchone()
                    refused = Refused(ScopeCap(cap.scope, r[0], r[1], r[2]),
                                      CounterState(r[3], r[4], r[5], r[6], r[7]))  # fmt: skip
                    _rollback(raw, cur, sql)
                    return refused
            cur.execute(sql.hold, {
                "id": reservation_id, "run_id": run_id,
                "scopes": sql.json([c.scope for c in ordered]), "amount_nusd": amount_nusd,
                "tokens": tokens, "now": ts_now, "expires_at": sql.ts(expires),
            })  # fmt: skip
            if sql.begin is not None:
                cur.execute("COMMIT")
            else:
                raw.commit()
        except BaseException:
            _rollback(raw, cur, sql)
            raise
        finally:
            cur.close()
    finally:
        if not nowait:
            raw.close()  # back to the pool
    return None


def _reserve_pipelined(
    raw: Any, sql: _Sql, ordered: Sequence[ScopeCap], fresh: Sequence[ScopeCap], *,
    reservation_id: str, amount_nusd: int, tokens: int, run_id: str | None, now: Any,
    expires: Any,
) -> Refused | None:  # fmt: skip
    """PostgreSQL: the whole transaction in one round trip (psycopg's pipeline mode), then its
    commit, or its rollback when a take found no room. Every take runs, in scope order (the lock
    order), before the outcome is known; a refusal rolls all of them back, the hold's INSERT
    with them, and the refusing counter is read after that."""
    conn = raw.driver_connection
    try:
        with conn.pipeline():
            takes = []
            for cap in ordered:
                if cap in fresh:  # upserted just before its take: one lock order for both
                    conn.cursor().execute(sql.upsert_caps, _cap_params(cap, now))
                cur = conn.cursor()
                cur.execute(sql.take, {"s": cap.scope, "a": amount_nusd, "t": tokens, "now": now})
                takes.append((cap, cur))
            conn.cursor().execute(sql.hold, {
                "id": reservation_id, "run_id": run_id,
                "scopes": sql.json([c.scope for c in ordered]), "amount_nusd": amount_nusd,
                "tokens": tokens, "now": now, "expires_at": expires,
            })  # fmt: skip
        failed = next((cap for cap, cur in takes if cur.rowcount != 1), None)
        if failed is None:
            conn.commit()
            return None
        conn.rollback()
    except BaseException:
        conn.rollback()
        raise
    cur = conn.cursor()
    cur.execute(sql.counter, {"s": failed.scope})
    r: Any = cur.fetchone()
    conn.rollback()
    return _refused(failed, fresh, r)


def _cap_params(cap: ScopeCap, now: Any) -> dict[str, Any]:
    return {"scope": cap.scope, "cap_nusd": cap.cap_nusd, "cap_tokens": cap.cap_tokens,
            "cap_calls": cap.cap_calls, "now": now}  # fmt: skip


def _refused(failed: ScopeCap, fresh: Sequence[ScopeCap], r: Any) -> Refused:
    # the caps the take was checked against: the ones upserted with it (rolled back since),
    # else the stored ones; no row: the counter was new in the refused transaction
    if r is None:
        return Refused(failed, CounterState())
    cap = failed if failed in fresh else ScopeCap(failed.scope, r[0], r[1], r[2])
    return Refused(cap, CounterState(r[3], r[4], r[5], r[6], r[7]))


async def reserve_pg_async(
    pg: AsyncPG, engine: Engine, ordered: Sequence[ScopeCap], fresh: Sequence[ScopeCap], *,
    reservation_id: str, amount_nusd: int, tokens: int, run_id: str | None, now: datetime,
    expires: datetime,
) -> Refused | None:  # fmt: skip
    """reserve_raw's PostgreSQL transaction awaited on the event loop, on one of `pg`'s kept
    connections (no thread hop, no pool ping): the same statements, prepared, in the same
    order, in one pipelined round trip, then COMMIT, or ROLLBACK when a take found no room.

    A connection error before the COMMIT is sent cannot have committed anything, so the pool
    may send it all again on a fresh connection (NotCommitted); an error during the COMMIT is
    raised as it is: the hold may exist, and the expiry sweep frees it if so."""
    sql = _sql(engine.dialect.name, engine.dialect)
    ts_now, ts_expires = sql.ts(now), sql.ts(expires)
    hold = {
        "id": reservation_id, "run_id": run_id, "scopes": sql.json([c.scope for c in ordered]),
        "amount_nusd": amount_nusd, "tokens": tokens, "now": ts_now, "expires_at": ts_expires,
    }  # fmt: skip

    async def work(conn: Any) -> Refused | None:
        committing = False
        try:
            async with conn.pipeline():
                takes = []
                for cap in ordered:
                    if cap in fresh:  # upserted just before its take: one lock order for both
                        await conn.cursor().execute(sql.upsert_caps, _cap_params(cap, ts_now),
                                                    prepare=True)  # fmt: skip
                    cur = conn.cursor()
                    take = {"s": cap.scope, "a": amount_nusd, "t": tokens, "now": ts_now}
                    await cur.execute(sql.take, take, prepare=True)
                    takes.append((cap, cur))
                await conn.cursor().execute(sql.hold, hold, prepare=True)
            failed = next((cap for cap, cur in takes if cur.rowcount != 1), None)
            if failed is None:
                committing = True
                await conn.commit()
                return None
            await conn.rollback()
            cur = await conn.execute(sql.counter, {"s": failed.scope}, prepare=True)
            r: Any = await cur.fetchone()
            await conn.rollback()
        except psycopg.OperationalError as exc:
            if committing:
                raise
            raise NotCommitted from exc
        except psycopg.Error:
            await conn.rollback()  # e.g. a refused statement: the connection stays usable
            raise
        return _refused(failed, fresh, r)

    return await pg.transaction(work)


def _rollback(raw: Any, cur: Any, sql: _Sql) -> None:
    if sql.begin is not None:
        if raw.driver_connection.in_transaction:
            cur.execute("ROLLBACK")
    else:
        raw.rollback()
