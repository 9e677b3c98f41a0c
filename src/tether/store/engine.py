"""Engines for the two supported databases: SQLite (embedded default) and PostgreSQL."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool, QueuePool


def make_engine(url: str, *, pool_size: int = 10) -> Engine:
    """An Engine for `url`; SQLite files get their folder created and WAL settings."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(url, parsed.database)
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size * 2,
        pool_pre_ping=True,
        pool_recycle=1800,
    )


def refresh_planner_stats(engine: Engine) -> None:
    """SQLite: sample every index into sqlite_stat1 (`ANALYZE` bounded by `analysis_limit`, a few
    ms on a large file). Without statistics SQLite guesses that an equality on any index finds
    10 rows, so a memory search's re-check of 36 ids by primary key lost to a scan of the
    namespace's 100,000 rows (bench/memory.py: 52 ms of 59). PostgreSQL analyses by itself."""
    if engine.dialect.name != "sqlite":
        return
    with engine.begin() as conn:
        conn.exec_driver_sql("PRAGMA analysis_limit=400")
        conn.exec_driver_sql("ANALYZE")


# sqlite3 passes every parameter that is not an exact int, float or str through its adapter
# registry, and when none is registered it probes `__adapt__` on its protocol type, which raises
# and formats an AttributeError it then clears: ~3,000 instructions per NULL (CPython 3.11), five
# to ten of them in a span row. An adapter for None that returns it makes NULL a dict lookup.
# (A C callable: dict.get of an empty dict answers None for any key.)
_NONE_ADAPTER: dict[object, None] = {}

# What SQLite may hold in this process before its page caches stop growing (see _sqlite_pragmas).
SOFT_HEAP_LIMIT_BYTES = 24 << 20


def _sqlite_engine(url: str, database: str | None) -> Engine:
    sqlite3.register_adapter(type(None), _NONE_ADAPTER.get)
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    pool: dict[str, Any] = {"poolclass": NullPool}
    if database and database != ":memory:":
        # Each checkout is still a connection of its own (no half-done transaction is shared), but
        # a few stay open: closing the last connection of a WAL database checkpoints and fsyncs,
        # which cost span ingest 40 % (bench/ingest.py). No upper bound, as with NullPool.
        pool = {"poolclass": QueuePool, "pool_size": 8, "max_overflow": -1}
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": 30},
        **pool,
    )
    event.listen(engine, "connect", _sqlite_pragmas)
    event.listen(engine, "begin", _sqlite_begin_immediate)
    return engine


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # Hand transaction control to SQLAlchemy's events (pysqlite otherwise opens them lazily
    # and late, which breaks BEGIN IMMEDIATE below).
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    # 8 KiB pages (before WAL, so a new database gets them; an old one keeps its own): a span
    # row is ~2 KB, and 4 KiB pages held one row each with the rest of the page wasted
    # (bench/ingest.py: 2.39 -> 2.03 KB stored per span).
    cur.execute("PRAGMA page_size=8192")
    # WAL: readers never block the writer and a crash never leaves a torn page.
    cur.execute("PRAGMA journal_mode=WAL")
    # NORMAL is durable across application crashes in WAL mode and much faster than FULL.
    cur.execute("PRAGMA synchronous=NORMAL")
    # Wait for a lock instead of failing at once when another process writes.
    cur.execute("PRAGMA busy_timeout=30000")
    # Checkpoint every 64 MB of WAL (8192 pages of 8 KiB) rather than 4 MB: pages rewritten by
    # consecutive batches are copied to the database once, not once per batch (span ingest
    # writes ~1 MB a batch).
    cur.execute("PRAGMA wal_autocheckpoint=8192")
    # Foreign keys are off by default in SQLite.
    cur.execute("PRAGMA foreign_keys=ON")
    # A larger page cache keeps the run list and aggregates in memory.
    cur.execute("PRAGMA cache_size=-65536")
    # ...but all connections of the process together stop growing their caches (they recycle
    # their oldest pages) once SQLite holds this much: each of the pool's connections could
    # otherwise keep its own 64 MB, and one that wrote 60 span batches in a row held 61 MB of
    # them (with this limit, 23 MB). Misses are reads from the OS page cache: the run
    # list and cost by day at 1,000,000 spans took the same time with it (1.4 / 45 ms p50).
    cur.execute(f"PRAGMA soft_heap_limit={SOFT_HEAP_LIMIT_BYTES}")
    cur.execute("PRAGMA temp_store=MEMORY")
    cur.close()


def _sqlite_begin_immediate(conn: Any) -> None:
    # Take the write lock at BEGIN: a read-then-write transaction (budget reservation) can then
    # never fail with SQLITE_BUSY half-way or interleave with another writer. Reads opened with
    # `reading(engine)` use a plain BEGIN so that they never wait for a writer.
    if conn.get_execution_options().get("tether_read"):
        conn.exec_driver_sql("BEGIN")
    else:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


@contextmanager
def reading(engine: Engine) -> Iterator[Connection]:
    """A connection for queries only: on SQLite it does not take the write lock."""
    with engine.connect().execution_options(tether_read=True) as conn:
        yield conn


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"
