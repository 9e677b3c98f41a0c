"""Budget counters and reservations in the database: reserve, settle, release, sweep — atomically,
on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, delete, or_, select, update

from tether.core.budget import (
    CounterState,
    ScopeCap,
    fits,
    merge_caps,
    refusal_message,
    remaining,
)
from tether.core.errors import BadRequestError, BudgetExceededError
from tether.core.money import nusd_to_float
from tether.store.engine import reading
from tether.store.tables import budget_counters as bc
from tether.store.tables import reservations as rs
from tether.store.upsert import insert_on_conflict

KEEP_FINISHED = timedelta(days=1)


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
) -> Reservation:
    """Holds `amount_nusd` and `tokens` (and one call) on every scope, or on none.

    Raises BudgetExceededError naming the first scope that has no room and what it has left.
    """
    _check(amount_nusd, tokens)
    ordered = merge_caps(caps)
    expires = now + timedelta(seconds=ttl_s)
    with engine.begin() as conn:
        _upsert_caps(conn, ordered, now)
        for cap in ordered:
            if not _take(conn, cap.scope, amount_nusd, tokens, now):
                row = conn.execute(select(bc).where(bc.c.scope == cap.scope)).one()
                rem = remaining(_state(row), _cap(row))
                # leaving the block by exception rolls back the scopes already taken
                raise BudgetExceededError(
                    refusal_message(rem, amount_nusd, tokens),
                    scope=cap.scope,
                    remaining_usd=nusd_to_float(rem.nusd),
                    remaining_tokens=rem.tokens,
                    remaining_calls=rem.calls,
                    needed_usd=nusd_to_float(amount_nusd),
                )
        conn.execute(
            rs.insert().values(
                id=reservation_id, run_id=run_id, scopes=[c.scope for c in ordered],
                amount_nusd=amount_nusd, tokens=tokens, status="held", created_at=now,
                expires_at=expires,
            )
        )  # fmt: skip
    return Reservation(
        reservation_id, run_id, tuple(c.scope for c in ordered), amount_nusd, tokens, expires
    )


def _upsert_caps(conn: Connection, caps: Sequence[ScopeCap], now: datetime) -> None:
    rows = [
        {"scope": c.scope, "cap_nusd": c.cap_nusd, "cap_tokens": c.cap_tokens,
         "cap_calls": c.cap_calls, "spent_nusd": 0, "reserved_nusd": 0, "spent_tokens": 0,
         "reserved_tokens": 0, "calls": 0, "updated_at": now}
        for c in caps
    ]  # fmt: skip
    # caps come from the current policy, so they are refreshed on every reservation
    insert_on_conflict(
        conn, bc, rows, ("scope",), ("cap_nusd", "cap_tokens", "cap_calls", "updated_at")
    )


def _take(conn: Connection, scope: str, amount: int, tokens: int, now: datetime) -> bool:
    q = (
        update(bc)
        .where(
            bc.c.scope == scope,
            or_(
                bc.c.cap_nusd.is_(None),
                bc.c.spent_nusd + bc.c.reserved_nusd + amount <= bc.c.cap_nusd,
            ),
            or_(
                bc.c.cap_tokens.is_(None),
                bc.c.spent_tokens + bc.c.reserved_tokens + tokens <= bc.c.cap_tokens,
            ),
            or_(bc.c.cap_calls.is_(None), bc.c.calls + 1 <= bc.c.cap_calls),
        )
        .values(
            reserved_nusd=bc.c.reserved_nusd + amount,
            reserved_tokens=bc.c.reserved_tokens + tokens,
            calls=bc.c.calls + 1,
            updated_at=now,
        )
    )
    return conn.execute(q).rowcount == 1


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
    with engine.begin() as conn:
        status = conn.execute(
            select(rs.c.status).where(rs.c.id == reservation.id)
        ).scalar_one_or_none()
        if status == "settled":
            return Settlement(0, 0, False, False)
        row = _mark(conn, reservation.id, "settled") if status == "held" else None
        held = row is not None
        if status == "held" and not held:
            # another transaction changed the hold between our read and our update: a settle
            # (nothing to do) or the expiry sweep (then the call is still charged, below)
            status = conn.execute(
                select(rs.c.status).where(rs.c.id == reservation.id)
            ).scalar_one_or_none()
            if status != "released":
                return Settlement(0, 0, False, False)
        if status == "released":
            swept = update(rs).where(rs.c.id == reservation.id, rs.c.status == "released")
            if conn.execute(swept.values(status="settled")).rowcount != 1:
                return Settlement(0, 0, False, False)
        amount, tokens = (row.amount_nusd, row.tokens) if row is not None else (0, 0)
        scopes = sorted(row.scopes if row is not None else reservation.scopes)
        for scope in scopes:
            conn.execute(
                update(bc)
                .where(bc.c.scope == scope)
                .values(
                    spent_nusd=bc.c.spent_nusd + actual_nusd,
                    reserved_nusd=bc.c.reserved_nusd - amount,
                    spent_tokens=bc.c.spent_tokens + actual_tokens,
                    reserved_tokens=bc.c.reserved_tokens - tokens,
                    # a swept hold gave its call back; the call did happen
                    calls=bc.c.calls + (0 if held else 1),
                    updated_at=now,
                )
            )
    overrun = actual_nusd > reservation.amount_nusd or actual_tokens > reservation.tokens
    return Settlement(actual_nusd, max(0, amount - actual_nusd), overrun, held)


def release(engine: Engine, reservation: Reservation, *, now: datetime) -> bool:
    """Frees a whole hold (the call never reached the provider); False if it was not held."""
    with engine.begin() as conn:
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
    "Reservation",
    "Settlement",
    "add_spent_many",
    "fits_now",
    "ledger_id",
    "release",
    "renew",
    "reserve",
    "settle",
    "snapshot",
    "sweep_expired",
]
