"""Short SQLite transactions run on the caller's own thread when they cannot wait: the checkpoint
routes use it to skip the thread-pool hop that costs more than the query on a busy machine.

`InlineSQLite.run(fn, *args)` calls `fn(engine, *args)` on a connection that never waits for a
lock (busy_timeout 0); when the file is locked by another writer right now it raises `Busy`
and the caller hands the same call to a worker thread, which waits as usual. It never
checkpoints the WAL itself (that can take a while); every `CHECKPOINT_EVERY` commits it asks
the caller to run a passive checkpoint elsewhere (`checkpoint_due`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Engine, event
from sqlalchemy.exc import OperationalError

from tether.store.engine import make_engine

T = TypeVar("T")

CHECKPOINT_EVERY = 256


class Busy(Exception):
    """The database is locked by another writer at this moment; run the call on a thread."""


def _no_wait(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # fail at once instead of waiting: the caller is an event loop and has a thread to fall
    # back on
    cur.execute("PRAGMA busy_timeout=0")
    # never copy the WAL into the database on a commit made here (tens of ms for a big WAL);
    # `checkpoint_due` has another connection do it
    cur.execute("PRAGMA wal_autocheckpoint=0")
    cur.close()


def _locked(exc: object) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


class InlineSQLite:
    """One no-wait connection to the same SQLite file as the app's engine."""

    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)
        # after make_engine's own pragmas (listeners run in the order they were added)
        event.listen(self.engine, "connect", _no_wait)
        self.commits = 0

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(engine, *args)` here and now, or `Busy` (nothing was changed)."""
        try:
            out = fn(self.engine, *args)
        except OperationalError as exc:  # through SQLAlchemy
            if _locked(exc.orig):
                raise Busy(str(exc.orig)) from None
            raise
        except sqlite3.OperationalError as exc:  # on the driver's connection
            if _locked(exc):
                raise Busy(str(exc)) from None
            raise
        self.commits += 1
        return out

    def checkpoint_due(self) -> bool:
        """True once per CHECKPOINT_EVERY calls: time for a passive WAL checkpoint elsewhere."""
        if self.commits >= CHECKPOINT_EVERY:
            self.commits = 0
            return True
        return False

    def dispose(self) -> None:
        self.engine.dispose()


def passive_checkpoint(engine: Engine) -> None:
    """Copies what it can of the WAL into the database without waiting for readers."""
    # on the DB-API connection: SQLAlchemy would open a transaction first, and a checkpoint
    # cannot run inside one
    raw = engine.raw_connection()
    try:
        raw.cursor().execute("PRAGMA wal_checkpoint(PASSIVE)")
    finally:
        raw.close()


def inline_for(engine: Engine) -> InlineSQLite | None:
    """An InlineSQLite for a SQLite file engine; None for PostgreSQL and in-memory SQLite."""
    url = engine.url
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return InlineSQLite(url.render_as_string(hide_password=False))


__all__ = ["Busy", "InlineSQLite", "inline_for", "passive_checkpoint"]
