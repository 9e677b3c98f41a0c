"""Budget counters and reservations in the database: reserve, settle, release, sweep — atomically,
on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, delete, select, text, update

from tether.core.budget import (
    CounterState,
    ScopeCap,
    fits,
    merge_caps,
    refusal_message,
    remaining,
)
from tether.core.errors import BadRequestError, BudgetExceededError
from tether.core.ids import make_id
from tether.core.money import nusd_to_float
from tether.store.budget_pg import reserve_pg, reserve_pg_async
from tether.store.budget_sql import Busy, Refused, Want, reserve_raw
from tether.store.engine import reading
from tether.store.pg_async import AsyncPG
from tether.store.reserve_sqlite import reserve_many
from tether.store.settle_sql import settle_held
from tether.store.tables import TS
from tether.store.tables import budget_counters as bc
from tether.store.tables import reservations as rs
from tether.store.upsert import insert_on_conflict
from tether.store.writelock import span_writer, try_span_writer

KEEP_FINISHED = timedelta(days=1)
# how long a hold lives without being renewed (settings: budgets.reservation_ttl_s)
DEFAULT_TTL_S = 900


@dataclass(frozen=True)
class Reservation:
    """A hold on every scope of one call, until it is settled or released."""

    id: str
    run_id: str | None
    scopes: tuple[str, ...]
    amount_nusd: int
    tokens: int
    expires_at: datetime


@dataclass(frozen=True)
class Settlement:
    """`overrun`: the call cost more than its reservation (the estimate was not a bound)."""

    charged_nusd: int
    released_nusd: int
    overrun: bool
    # False when the reservation had already been settled, released or swept
    was_held: bool


def new_reservation_id() -> str:
    return make_id("rsv", os.urandom(12))


def unbound(run_id: str | None, amount_nusd: int, tokens: int, now: datetime) -> Reservation:
    """A reservation on no scope (nothing is capped): costs no database round trip."""
    return Reservation(new_reservation_id(), run_id, (), amount_nusd, tokens, now)


def unbound_settlement(r: Reservation, actual_nusd: int, actual_tokens: int) -> Settlement:
    overrun = actual_nusd > r.amount_nusd or actual_tokens > r.tokens
    return Settlement(actual_nusd, max(0, r.amount_nusd - actual_nusd), overrun, True)


def _state(row: Any) -> CounterState:
    return CounterState(
        row.spent_nusd, row.reserved_nusd, row.spent_tokens, row.reserved_tokens, row.calls
    )


def _cap(row: Any) -> ScopeCap:
    return ScopeCap(row.scope, row.cap_nusd, row.cap_tokens, row.cap_calls)


def _check(amount_nusd: int, tokens: int) -> None:
    if amount_nusd < 0 or tokens < 0:
        raise BadRequestError("a reservation amount cannot be negative")


# Reserve is one transaction of conditional UPDATEs in scope order. SQLite serialises writers
# (BEGIN IMMEDIATE, see engine.py). On PostgreSQL in READ COMMITTED a conditional UPDATE takes
# the row lock and re-evaluates its WHERE against the newest committed row after waiting, so two
# reservations can never both see the same headroom; the fixed order keeps them deadlock-free.
def reserve(
    engine: Engine,
    caps: Sequence[ScopeCap],
    *,
    reservation_id: str,
    amount_nusd: int,
    tokens: int,
    run_id: str | None,
    now: datetime,
    ttl_s: int,
    nowait: bool = False,
) -> Reservation | None:
    """Holds `amount_nusd` and `tokens` (and one call) on every scope, or on none.

    Raises BudgetExceededError naming the first scope that has no room and what it has left.
    With `nowait` (SQLite), None at once when another writer holds the database: the gateway's
    event loop thread reserves this way and, when it cannot, waits on a worker thread.
    """
    # caps come from the current policy: written when this process has not written these very
    # caps yet (a counter row exists from then on; counters are never deleted): want's `fresh`
    w = want(engine, caps, reservation_id=reservation_id, amount_nusd=amount_nusd, tokens=tokens,
             run_id=run_id, now=now, ttl_s=ttl_s)  # fmt: skip
    if engine.dialect.name == "postgresql":
        refused = reserve_pg(
            engine, w.ordered, w.fresh, reservation_id=reservation_id, amount_nusd=amount_nusd,
            tokens=tokens, run_id=run_id, now=now, expires=w.expires,
        )  # fmt: skip
    else:
        with try_span_writer(engine) if nowait else span_writer(engine) as held:
            if held is False:
                return None
            try:
                refused = reserve_raw(engine, w, nowait=nowait)
            except Busy:
                return None
    return _outcome(engine, refused, w.ordered, w.fresh, reservation_id, amount_nusd, tokens,
                    run_id, w.expires)  # fmt: skip


def want(
    engine: Engine, caps: Sequence[ScopeCap], *, reservation_id: str, amount_nusd: int,
    tokens: int, run_id: str | None, now: datetime, ttl_s: int,
) -> Want:  # fmt: skip
    """One reserve for reserve_batch (its caps merged and put in lock order)."""
    _check(amount_nusd, tokens)
    ordered = merge_caps(caps)
    known = _known_caps(engine)
    fresh = tuple(c for c in ordered if known.get(c.scope) != c)
    return Want(tuple(ordered), fresh, reservation_id, amount_nusd, tokens, run_id, now,
                now + timedelta(seconds=ttl_s))  # fmt: skip


def reserve_batch(
    engine: Engine, wants: Sequence[Want], *, nowait: bool = False
) -> list[Reservation | Exception] | None:
    """SQLite: the reserves of `wants` in one transaction (reserve_sqlite), each held or
    refused as if alone, in order: for each its Reservation, or the BudgetExceededError (or
    other error) it got. With `nowait`, None at once when another writer holds the database."""
    with try_span_writer(engine) if nowait else span_writer(engine) as held:
        if held is False:
            return None
        try:
            outs = reserve_many(engine, wants, nowait=nowait)
        except Busy:
            return None
    results: list[Reservation | Exception] = []
    for w, out in zip(wants, outs, strict=True):
        if isinstance(out, Exception):
            results.append(out)
            continue
        try:
            results.append(_outcome(engine, out, w.ordered, w.fresh, w.reservation_id,
                                    w.amount_nusd, w.tokens, w.run_id, w.expires))  # fmt: skip
        except BudgetExceededError as exc:
            results.append(exc)
    return results


async def reserve_async(
    pg: AsyncPG,
    engine: Engine,
    caps: Sequence[ScopeCap],
    *,
    reservation_id: str,
    amount_nusd: int,
    tokens: int,
    run_id: str | None,
    now: datetime,
    ttl_s: int,
) -> Reservation:
    """reserve() on PostgreSQL, awaited on the event loop (budget_sql.reserve_pg_async)."""
    _check(amount_nusd, tokens)
    ordered = merge_caps(caps)
    expires = now + timedelta(seconds=ttl_s)
    known = _known_caps(engine)
    fresh = [c for c in ordered if known.get(c.scope) != c]
    refused = await reserve_pg_async(
        pg, engine, ordered, fresh, reservation_id=reservation_id, amount_nusd=amount_nusd,
        tokens=tokens, run_id=run_id, now=now, expires=expires,
    )  # fmt: skip
    return _outcome(engine, refused, ordered, fresh, reservation_id, amount_nusd, tokens,
                    run_id, expires)  # fmt: skip


def _outcome(
    engine: Engine, refused: Refused | None, ordered: Sequence[ScopeCap],
    fresh: Sequence[ScopeCap], reservation_id: str, amount_nusd: int, tokens: int,
    run_id: str | None, expires: datetime,
) -> Reservation:  # fmt: skip
    if refused is not None:
        rem = remaining(refused.state, refused.cap)
        raise BudgetExceededError(
            refusal_message(rem, amount_nusd, tokens),
            scope=refused.cap.scope,
            remaining_usd=nusd_to_float(rem.nusd),
            remaining_tokens=rem.tokens,
            remaining_calls=rem.calls,
            needed_usd=nusd_to_float(amount_nusd),
        )
    known = _known_caps(engine)
    for c in fresh:  # only once committed: a rolled-back insert left no row behind
        known[c.scope] = c
    if len(known) > _KNOWN_CAPS_MAX:
        known.clear()
    return Reservation(
        reservation_id, run_id, tuple(c.scope for c in ordered), amount_nusd, tokens, expires
    )


def hold_commit(conn: Connection) -> None:
    """On PostgreSQL, this transaction's commit does not wait for its WAL flush (4-5 ms of the
    gateway's 5-8 ms budgeted overhead, issue 9). Only for transactions that write holds (and
    the gateway's run rows), and for settle_many, which then waits for the flush itself
    (_flush_wal); settle, release and the audit keep synchronous commits.

    Why a crash cannot lose an acknowledged settle or let a cap overshoot: an asynchronous
    commit is visible to every other transaction at once, so admission is exactly as strict;
    only its durability is deferred (by at most 3 x wal_writer_delay). A database crash in that
    window loses the hold row and its counter increments together (one transaction), which is
    what the expiry sweep would do to a hold anyway. A settle is always on disk before it is
    reported done, and a synchronous commit flushes every WAL record before its own, including
    the hold it settles (a settle only runs after its hold committed): so a durable settle never
    refers to a lost hold. If the tether process outlives the database crash, the settle of a
    hold that was lost finds no row and is charged in full as a swept hold is (`_settle_in`):
    spend is never dropped. SQLite is unchanged (WAL with synchronous=NORMAL, see engine.py)."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SET LOCAL synchronous_commit = off")


# Statements built once: building a SQLAlchemy construct costs more than running it (issue 9:
# 0.45 ms to build a conditional UPDATE, 0.16 ms to run it). Plain SQL with typed parameters.
_TS_PARAMS = (bindparam("now", type_=TS),)
# settle (or a swept hold's late settle): spend the real cost, free the hold
_CHARGE = text(
    "UPDATE budget_counters SET spent_nusd = spent_nusd + :spent, "
    "reserved_nusd = reserved_nusd - :held, spent_tokens = spent_tokens + :stokens, "
    "reserved_tokens = reserved_tokens - :htokens, calls = calls + :calls, updated_at = :now "
    "WHERE scope = :s"
).bindparams(*_TS_PARAMS)
_MARK_SETTLED = text(
    "UPDATE reservations SET status = 'settled' WHERE id = :id AND status = 'held'"
)
_MARK_SWEPT_SETTLED = text(
    "UPDATE reservations SET status = 'settled' WHERE id = :id AND status = 'released'"
)
_HOLD_EXISTS = text("SELECT 1 FROM reservations WHERE id = :id")
_INSERT_HOLD = rs.insert()
_KNOWN_CAPS_MAX = 50_000
_KNOWN: weakref.WeakKeyDictionary[Engine, dict[str, ScopeCap]] = weakref.WeakKeyDictionary()


def _known_caps(engine: Engine) -> dict[str, ScopeCap]:
    """Scopes whose counter row this process wrote with these caps (per engine)."""
    known = _KNOWN.get(engine)
    if known is None:
        known = _KNOWN[engine] = {}
    return known


def _mark(conn: Connection, reservation_id: str, status: str) -> Any | None:
    """Moves a held reservation to `status`; its row, or None if it was not held."""
    row = conn.execute(
        select(rs.c.scopes, rs.c.amount_nusd, rs.c.tokens).where(
            rs.c.id == reservation_id, rs.c.status == "held"
        )
    ).one_or_none()
    if row is None:
        return None
    done = conn.execute(
        update(rs).where(rs.c.id == reservation_id, rs.c.status == "held").values(status=status)
    ).rowcount
    return row if done == 1 else None


def settle(
    engine: Engine,
    reservation: Reservation,
    *,
    actual_nusd: int,
    actual_tokens: int,
    now: datetime,
) -> Settlement:
    """Charges what the call really cost and frees the rest of its hold, on every scope.

    The real usage is the truth and is always charged; since a reservation is a proven upper
    bound, `overrun` (actual above the hold) signals an estimate bug, not a normal path.
    A reservation already swept (expired) is still charged, without freeing it twice.
    """
    _check(actual_nusd, actual_tokens)
    with span_writer(engine), engine.begin() as conn:
        held = _settle_in(conn, reservation, actual_nusd, actual_tokens, now)
    if held is None:
        return Settlement(0, 0, False, False)
    amount = reservation.amount_nusd if held else 0
    overrun = actual_nusd > reservation.amount_nusd or actual_tokens > reservation.tokens
    return Settlement(actual_nusd, max(0, amount - actual_nusd), overrun, held)


def settle_many(
    engine: Engine, items: Sequence[tuple[Reservation, int, int]], *, now: datetime,
    nowait: bool = False,
) -> list[bool | None] | None:  # fmt: skip
    """Settles a batch (reservation, actual_nusd, actual_tokens) in one transaction, with one
    UPDATE per scope for the whole batch. For each: True (settled its hold), False (its hold
    had been swept: charged anyway), None (already settled). The gateway's settle writer.

    On SQLite a batch whose holds are all still held goes through settle_sql (plain SQL). With
    `nowait` (SQLite only), None at once when that cannot be done without waiting (another
    writer holds the database) or when the batch needs the general path: the caller's event
    loop then hands the batch to a worker thread."""
    for _, nusd, tokens in items:
        _check(nusd, tokens)
    if engine.dialect.name == "sqlite":
        with try_span_writer(engine) if nowait else span_writer(engine) as free:
            try:
                done = free is not False and settle_held(engine, items, now, nowait=nowait)
            except Busy:
                done = False
        if done:
            return [True] * len(items)
        if nowait:
            return None
    out: list[bool | None] = []
    deltas: dict[str, list[int]] = {}
    with span_writer(engine), engine.begin() as conn:
        pg = conn.dialect.name == "postgresql"
        if pg:
            hold_commit(conn)
        for r, nusd, tokens in items:
            held = _settle_in(conn, r, nusd, tokens, now, deltas=deltas)
            out.append(held)
        _apply(conn, deltas, now)
    if pg:
        _flush_wal(engine)
    return out


def _flush_wal(engine: Engine) -> None:
    """Waits until every commit so far is on disk, holding no lock: a transaction with an id
    and nothing else, committed synchronously, flushes the WAL up to its own commit record.

    Why settle_many commits in two steps on PostgreSQL: a synchronous commit keeps its row
    locks until the WAL is flushed (4-5 ms here), and the counter rows a settle updates are the
    ones the next reservation of the same run and agent must lock, so every reserve waited out
    the previous settle's flush. The settle's own commit is asynchronous (its locks go at once);
    this flush then makes it exactly as durable as before before settle_many returns. If the
    database crashes in between, the batch is lost whole (one transaction) and not reported
    settled: the settle writer retries it, and holds still held are settled again, while any
    that did reach the disk are found settled and not charged twice."""
    with engine.begin() as conn:
        conn.exec_driver_sql("SELECT pg_current_xact_id()")


def _settle_in(
    conn: Connection, r: Reservation, actual_nusd: int, actual_tokens: int, now: datetime,
    deltas: dict[str, list[int]] | None = None,
) -> bool | None:  # fmt: skip
    """Settles one hold inside `conn`'s transaction: True if it was held, False if it had been
    swept (the call is still charged, without freeing the hold twice), None if settled before.
    With `deltas`, the counter updates are summed there for the caller to apply."""
    own = deltas is None
    deltas = {} if deltas is None else deltas
    if conn.execute(_MARK_SETTLED, {"id": r.id}).rowcount == 1:
        held, amount, tokens = True, r.amount_nusd, r.tokens
    else:
        # not held: already settled (nothing to do), or released by the expiry sweep, in which
        # case the call did happen and is charged (the sweep gave its call back), or lost with
        # the database's last asynchronous commits (see hold_commit): charged as if swept, and
        # its row written settled so that a second settle finds it
        if conn.execute(_MARK_SWEPT_SETTLED, {"id": r.id}).rowcount != 1:
            if conn.execute(_HOLD_EXISTS, {"id": r.id}).first() is not None:
                return None
            conn.execute(_INSERT_HOLD, {
                "id": r.id, "run_id": r.run_id, "scopes": list(r.scopes),
                "amount_nusd": r.amount_nusd, "tokens": r.tokens, "status": "settled",
                "created_at": now, "expires_at": max(r.expires_at, now),
            })  # fmt: skip
        held, amount, tokens = False, 0, 0
    for scope in r.scopes:
        d = deltas.setdefault(scope, [0, 0, 0, 0, 0])
        d[0] += actual_nusd
        d[1] += amount
        d[2] += actual_tokens
        d[3] += tokens
        d[4] += 0 if held else 1
    if own:
        _apply(conn, deltas, now)
    return held


def _apply(conn: Connection, deltas: dict[str, list[int]], now: datetime) -> None:
    # in scope order, as reserve takes its row locks (no deadlock on PostgreSQL)
    for scope in sorted(deltas):
        spent, held, stokens, htokens, calls = deltas[scope]
        conn.execute(_CHARGE, {"s": scope, "spent": spent, "held": held, "stokens": stokens,
                               "htokens": htokens, "calls": calls, "now": now})  # fmt: skip


def release(engine: Engine, reservation: Reservation, *, now: datetime) -> bool:
    """Frees a whole hold (the call never reached the provider); False if it was not held."""
    with span_writer(engine), engine.begin() as conn:
        row = _mark(conn, reservation.id, "released")
        if row is None:
            return False
        _unhold(conn, row.scopes, row.amount_nusd, row.tokens, now)
    return True


def _unhold(
    conn: Connection, scopes: Sequence[str], amount: int, tokens: int, now: datetime
) -> None:
    # a released call did not happen, so it gives its call back too
    for scope in sorted(scopes):
        conn.execute(
            update(bc)
            .where(bc.c.scope == scope)
            .values(
                reserved_nusd=bc.c.reserved_nusd - amount,
                reserved_tokens=bc.c.reserved_tokens - tokens,
                calls=bc.c.calls - 1,
                updated_at=now,
            )
        )


def sweep_expired(engine: Engine, now: datetime, *, limit: int = 500) -> int:
    """Releases holds past their expiry (their process died mid-call); how many it released."""
    with reading(engine) as conn:
        ids = list(
            conn.execute(
                select(rs.c.id)
                .where(rs.c.status == "held", rs.c.expires_at < now)
                .order_by(rs.c.expires_at)
                .limit(limit)
            ).scalars()
        )
    count = 0
    for rid in ids:
        with engine.begin() as conn:
            row = _mark(conn, rid, "released")
            if row is not None:
                _unhold(conn, row.scopes, row.amount_nusd, row.tokens, now)
                count += 1
    # finished holds are kept a day (a late settle must still find them), then dropped
    with engine.begin() as conn:
        conn.execute(delete(rs).where(rs.c.status != "held", rs.c.expires_at < now - KEEP_FINISHED))
    return count


def renew(engine: Engine, reservation_ids: Sequence[str], expires_at: datetime) -> int:
    """Pushes the expiry of the held reservations among `reservation_ids` to `expires_at` (a
    call still in flight, such as a long stream, keeps its hold); how many were renewed."""
    count = 0
    ids = list(reservation_ids)
    with engine.begin() as conn:
        for i in range(0, len(ids), 500):
            count += conn.execute(
                update(rs)
                .where(rs.c.id.in_(ids[i : i + 500]), rs.c.status == "held")
                .values(expires_at=expires_at)
            ).rowcount
    return count


def snapshot(engine: Engine, scope: str) -> tuple[ScopeCap, CounterState] | None:
    """A scope's caps and counters, or None if nothing was ever reserved on it."""
    with reading(engine) as conn:
        row = conn.execute(select(bc).where(bc.c.scope == scope)).one_or_none()
    return None if row is None else (_cap(row), _state(row))


def add_spent_many(
    engine: Engine,
    scopes: Sequence[str],
    nusd: int,
    tokens: int,
    calls: int,
    *,
    now: datetime,
) -> None:
    """Records settled spend on `scopes` without a hold (the Redis ledger's durable copy)."""
    ordered = sorted(scopes)
    with engine.begin() as conn:
        insert_on_conflict(
            conn, bc,
            [{"scope": s, "spent_nusd": 0, "reserved_nusd": 0, "spent_tokens": 0,
              "reserved_tokens": 0, "calls": 0, "updated_at": now} for s in ordered],
            ("scope",),
        )  # fmt: skip
        for scope in ordered:
            conn.execute(
                update(bc)
                .where(bc.c.scope == scope)
                .values(
                    spent_nusd=bc.c.spent_nusd + nusd,
                    spent_tokens=bc.c.spent_tokens + tokens,
                    calls=bc.c.calls + calls,
                    updated_at=now,
                )
            )


def add_spent_by_scope(engine: Engine, spent: dict[str, list[int]], *, now: datetime) -> None:
    """Records settled spend per scope ({scope: [nusd, tokens, calls]}) without holds, in one
    transaction (the Redis ledger's durable copy of a batch)."""
    ordered = sorted(spent)
    with span_writer(engine), engine.begin() as conn:
        insert_on_conflict(
            conn, bc,
            [{"scope": s, "spent_nusd": 0, "reserved_nusd": 0, "spent_tokens": 0,
              "reserved_tokens": 0, "calls": 0, "updated_at": now} for s in ordered],
            ("scope",),
        )  # fmt: skip
        for scope in ordered:
            nusd, tokens, calls = spent[scope]
            conn.execute(_CHARGE, {"s": scope, "spent": nusd, "held": 0, "stokens": tokens,
                                   "htokens": 0, "calls": calls, "now": now})  # fmt: skip


_LEDGER_ID_SCOPE = "meta:ledger_id"


def ledger_id(engine: Engine, *, candidate: int) -> str:
    """A random id fixed at the database's first use (kept in the `cap_nusd` of a meta row),
    so that every process on this database, whatever URL it uses, shares Redis counters, and
    two databases sharing one Redis (staging and production, tests) never mix theirs."""
    with engine.begin() as conn:
        insert_on_conflict(
            conn, bc,
            [{"scope": _LEDGER_ID_SCOPE, "cap_nusd": candidate, "spent_nusd": 0,
              "reserved_nusd": 0, "spent_tokens": 0, "reserved_tokens": 0, "calls": 0,
              "updated_at": datetime.now(UTC)}],
            ("scope",),
        )  # fmt: skip
        value = conn.execute(
            select(bc.c.cap_nusd).where(bc.c.scope == _LEDGER_ID_SCOPE)
        ).scalar_one()
    return f"{int(value):016x}"


def fits_now(engine: Engine, cap: ScopeCap, amount_nusd: int, tokens: int) -> bool:
    """A read-only check (for messages and dry runs); reserve() is the only binding check."""
    snap = snapshot(engine, cap.scope)
    return fits(snap[1] if snap else CounterState(), cap, amount_nusd, tokens)


__all__ = [
    "DEFAULT_TTL_S",
    "Reservation",
    "Settlement",
    "add_spent_by_scope",
    "add_spent_many",
    "fits_now",
    "hold_commit",
    "ledger_id",
    "release",
    "renew",
    "reserve",
    "reserve_async",
    "reserve_batch",
    "settle",
    "settle_many",
    "snapshot",
    "sweep_expired",
    "unbound",
    "unbound_settlement",
]
