"""Several budget reserves in one SQLite transaction (group commit): the gateway's reserves that
found the writer lock busy wait on the event loop together, and the first to get the lock
holds all of them at once, each in a savepoint of its own.

One reserve alone costs a transaction (BEGIN IMMEDIATE, its takes, its hold, COMMIT, the WAL
frames of the pages it changed); a batch shares the commit and the counter pages (the agent's
day counter is the same row for every call of the agent). Each reserve is checked against what
the ones before it in the batch took, exactly as if they had committed one after the other: a
refused reserve rolls back its own savepoint only. The statements are budget_sql's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine

from tether.core.budget import CounterState, ScopeCap
from tether.store.budget_sql import Busy, Refused, _cap_params, _nowait_connection, _sql


@dataclass(frozen=True)
class Want:
    """One reserve of a batch: its caps in lock order, the ones to upsert first, its hold."""

    ordered: tuple[ScopeCap, ...]
    fresh: tuple[ScopeCap, ...]
    reservation_id: str
    amount_nusd: int
    tokens: int
    run_id: str | None
    now: datetime
    expires: datetime


Outcome = Refused | Exception | None


def reserve_many(engine: Engine, wants: Sequence[Want], *, nowait: bool) -> list[Outcome]:
    """One transaction for every reserve of `wants`, in order: for each, None (held), Refused
    (no room: it took nothing), or the exception its statements raised (it took nothing). The
    caller holds the writer lock (writelock); with `nowait` raises Busy instead of waiting for
    another process's writer."""
    sql = _sql(engine.dialect.name, engine.dialect)
    raw: Any = _nowait_connection(engine) if nowait else engine.raw_connection()
    out: list[Outcome] = []
    try:
        cur = raw.cursor()
        try:
            cur.execute("BEGIN IMMEDIATE")
        except engine.dialect.dbapi.OperationalError as exc:  # type: ignore[union-attr]
            if nowait and "locked" in str(exc):
                raise Busy from None
            raise
        try:
            for w in wants:
                cur.execute("SAVEPOINT hold")
                outcome: Outcome
                try:
                    outcome = _one(cur, sql, w)
                except Exception as exc:  # this reserve's own failure: the others go on
                    outcome = exc
                if outcome is not None:
                    cur.execute("ROLLBACK TO hold")
                cur.execute("RELEASE hold")
                out.append(outcome)
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
    return out


def _one(cur: Any, sql: Any, w: Want) -> Refused | None:
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


__all__ = ["Want", "reserve_many"]
