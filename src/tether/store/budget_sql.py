"""The reserve transaction (budgets.reserve) in plain SQL given to the driver, on SQLite (on
PostgreSQL: budget_pg.py): the gateway runs it once per budgeted call.

Why not SQLAlchemy Core here: even with statements built once, executing one through a Core
connection (parameter processing, the execution context, events) cost more than the statement
itself, and upserting a new run's caps built an INSERT ... ON CONFLICT construct per call: on the
budgeted path this transaction was a quarter of the server's CPU (py-spy, issue 9). The values
bound are those SQLAlchemy would bind (the same type processors), so rows are stored alike.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.engine import Dialect

from tether.core.budget import CounterState, ScopeCap
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
    "expires_at) VALUES (:id, :run_id, :scopes, :amount_nusd, :tokens, 'held', :now, "
    ":expires_at)"
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
    ts: Callable[[datetime], Any]
    json: Callable[[list[str]], Any]


def _driver_style(sql: str, dialect: Dialect) -> str:
    if dialect.paramstyle in ("pyformat", "format"):
        return re.sub(r":(\w+)", r"%(\1)s", sql)
    return sql  # sqlite3 takes :name with a dict


def _identity(value: Any) -> Any:
    return value


def bind_processors(dialect: Dialect) -> tuple[Callable[[datetime], Any], Callable[[Any], Any]]:
    """What SQLAlchemy binds for a timestamp and for the reservations' JSON scopes."""
    # the dialect's own DATETIME: on SQLite the text SQLAlchemy stores (a bare datetime would be
    # left to sqlite3's default adapter, "...+00:00", deprecated since Python 3.12)
    ts = TS.dialect_impl(dialect).bind_processor(dialect) or _identity
    json = rs.c.scopes.type.dialect_impl(dialect).bind_processor(dialect) or _identity
    return ts, json


@cache
def _sql(dialect_name: str, dialect: Dialect) -> _Sql:
    ts, json = bind_processors(dialect)
    return _Sql(
        upsert_caps=_driver_style(_UPSERT_CAPS, dialect), take=_driver_style(_TAKE, dialect),
        counter=_driver_style(_COUNTER, dialect), hold=_driver_style(_HOLD, dialect), ts=ts,
        json=json,
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


@dataclass(frozen=True)
class Want:
    """One reserve: its caps in lock order, the ones to upsert first, its hold."""

    ordered: tuple[ScopeCap, ...]
    fresh: tuple[ScopeCap, ...]
    reservation_id: str
    amount_nusd: int
    tokens: int
    run_id: str | None
    now: datetime
    expires: datetime


@contextmanager
def immediate(engine: Engine, *, nowait: bool) -> Iterator[Any]:
    """A DBAPI cursor in a BEGIN IMMEDIATE transaction on SQLite, committed when the block ends
    (unless the block rolled it back itself) and rolled back if it raises. The caller holds the
    writer lock (writelock); with `nowait` the engine's no-wait connection, and Busy at once
    when another process's writer holds the database."""
    raw: Any = _nowait_connection(engine) if nowait else engine.raw_connection()
    try:
        cur = raw.cursor()
        try:
            try:
                cur.execute("BEGIN IMMEDIATE")
            except engine.dialect.dbapi.OperationalError as exc:  # type: ignore[union-attr]
                if nowait and "locked" in str(exc):
                    raise Busy from None
                raise
            try:
                yield cur
                if raw.driver_connection.in_transaction:
                    cur.execute("COMMIT")
            except BaseException:
                if raw.driver_connection.in_transaction:
                    cur.execute("ROLLBACK")
                raise
        finally:
            cur.close()
    finally:
        if not nowait:
            raw.close()  # back to the pool


def take_and_hold(cur: Any, sql: _Sql, w: Want) -> Refused | None:
    """In the caller's transaction: takes the room on every scope of `w.ordered` (in that order;
    a `fresh` cap is upserted just before its own take) and inserts the hold (None); or stops at
    the first scope with no room (Refused: the caller rolls back what was taken)."""
    ts_now = sql.ts(w.now)
    for cap in w.ordered:
        if cap in w.fresh:  # upserted just before its take: one lock order for both
            cur.execute(sql.upsert_caps, _cap_params(cap, ts_now))
        cur.execute(sql.take, {"s": cap.scope, "a": w.amount_nusd, "t": w.tokens, "now": ts_now})
        if cur.rowcount != 1:
            cur.execute(sql.counter, {"s": cap.scope})
            r: Any = cur.fetchone()
            return Refused(ScopeCap(cap.scope, r[0], r[1], r[2]),
                           CounterState(r[3], r[4], r[5], r[6], r[7]))  # fmt: skip
    cur.execute(sql.hold, {
        "id": w.reservation_id, "run_id": w.run_id,
        "scopes": sql.json([c.scope for c in w.ordered]), "amount_nusd": w.amount_nusd,
        "tokens": w.tokens, "now": ts_now, "expires_at": sql.ts(w.expires),
    })  # fmt: skip
    return None


def reserve_raw(engine: Engine, w: Want, *, nowait: bool = False) -> Refused | None:
    """SQLite, one transaction: take_and_hold, or nothing taken and the scope that had no room.
    The caller serialises SQLite writers (writelock.span_writer). With `nowait` raises Busy
    instead of waiting for another writer."""
    with immediate(engine, nowait=nowait) as cur:
        refused = take_and_hold(cur, _sql(engine.dialect.name, engine.dialect), w)
        if refused is not None:
            cur.execute("ROLLBACK")
        return refused


def _cap_params(cap: ScopeCap, now: Any) -> dict[str, Any]:
    return {"scope": cap.scope, "cap_nusd": cap.cap_nusd, "cap_tokens": cap.cap_tokens,
            "cap_calls": cap.cap_calls, "now": now}  # fmt: skip


def settle_deltas(items: Sequence[tuple[Any, int, int]]) -> dict[str, list[int]]:
    """Per scope, what a batch of (reservation, actual_nusd, actual_tokens) settles moves:
    [spent nusd, held nusd released, spent tokens, held tokens released]."""
    deltas: dict[str, list[int]] = {}
    for r, nusd, tokens in items:
        for scope in r.scopes:
            d = deltas.setdefault(scope, [0, 0, 0, 0])
            d[0] += nusd
            d[1] += r.amount_nusd
            d[2] += tokens
            d[3] += r.tokens
    return deltas
