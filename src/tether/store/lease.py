"""Leases: a named job that exactly one replica does at a time (exporting the store-derived
metrics, shipping spans over OTLP). A lease is held until `expires_at`; its holder renews it,
anyone takes it over once it has expired. One conditional UPDATE (or INSERT) per attempt, so
it is atomic on SQLite and PostgreSQL alike."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from tether.store.engine import reading
from tether.store.tables import leases


def acquire(engine: Engine, name: str, holder: str, *, ttl_s: float, now: datetime) -> bool:
    """Takes or renews lease `name` for `holder` until now + ttl_s; False if someone else
    holds it and it has not expired."""
    expires = now + timedelta(seconds=ttl_s)
    lc = leases.c
    with engine.begin() as conn:
        taken = conn.execute(
            update(leases)
            .where(lc.name == name, or_(lc.holder == holder, lc.expires_at < now))
            .values(holder=holder, expires_at=expires)
        ).rowcount
        if taken:
            return True
    try:
        with engine.begin() as conn:
            conn.execute(insert(leases).values(name=name, holder=holder, expires_at=expires))
        return True
    except IntegrityError:  # the row exists and is held by another replica (or it won a race)
        return False


def release(engine: Engine, name: str, holder: str) -> None:
    """Gives the lease up at shutdown, so another replica takes over at once."""
    lc = leases.c
    with engine.begin() as conn:
        conn.execute(update(leases).where(lc.name == name, lc.holder == holder).values(
            expires_at=datetime(1970, 1, 1, tzinfo=UTC)
        ))  # fmt: skip


def holder_of(engine: Engine, name: str, *, now: datetime) -> str | None:
    """Who holds lease `name` now (None when nobody does)."""
    lc = leases.c
    with reading(engine) as conn:
        row = conn.execute(
            select(lc.holder).where(lc.name == name, lc.expires_at >= now)
        ).one_or_none()
    return None if row is None else str(row.holder)
