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

from sqlalchemy import Engine

from tether.store.budget_sql import Refused, Want, _sql, immediate, take_and_hold

Outcome = Refused | Exception | None


def reserve_many(engine: Engine, wants: Sequence[Want], *, nowait: bool) -> list[Outcome]:
    """One transaction for every reserve of `wants`, in order: for each, None (held), Refused
    (no room: it took nothing), or the exception its statements raised (it took nothing). The
    caller holds the writer lock (writelock); with `nowait` raises Busy instead of waiting for
    another process's writer."""
    sql = _sql(engine.dialect.name, engine.dialect)
    out: list[Outcome] = []
    with immediate(engine, nowait=nowait) as cur:
        for w in wants:
            cur.execute("SAVEPOINT hold")
            outcome: Outcome
            try:
                outcome = take_and_hold(cur, sql, w)
            except Exception as exc:  # this reserve's own failure: the others go on
                outcome = exc
            if outcome is not None:
                cur.execute("ROLLBACK TO hold")
            cur.execute("RELEASE hold")
            out.append(outcome)
    return out


__all__ = ["reserve_many"]
