"""store/engine.py: the SQLite connection settings every connection gets."""

from __future__ import annotations

import ctypes
import ctypes.util
from pathlib import Path

import pytest

from tether.store.engine import SOFT_HEAP_LIMIT_BYTES, make_engine

ROW = "x" * 2000


def test_sqlite_connections_get_wal_and_the_process_wide_heap_limit(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'tether.db'}")
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA cache_size").scalar() == -65536
            assert conn.exec_driver_sql("PRAGMA soft_heap_limit").scalar() == SOFT_HEAP_LIMIT_BYTES
    finally:
        engine.dispose()


def test_page_caches_stop_growing_at_the_heap_limit(tmp_path: Path) -> None:
    """A connection that writes far more than the limit keeps about the limit in its cache."""
    name = ctypes.util.find_library("sqlite3")
    if name is None:
        pytest.skip("no shared libsqlite3 to read SQLite's memory counters from")
    lib = ctypes.CDLL(name)
    lib.sqlite3_memory_used.restype = ctypes.c_int64
    engine = make_engine(f"sqlite:///{tmp_path / 'tether.db'}")
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)")
        for _ in range(30):  # ~60 MB of rows, in transactions on one connection
            with engine.begin() as conn:
                conn.exec_driver_sql("INSERT INTO t (body) VALUES (?)", [(ROW,)] * 1000)
        used = lib.sqlite3_memory_used()
    finally:
        engine.dispose()
    assert used < 1.5 * SOFT_HEAP_LIMIT_BYTES, f"SQLite holds {used >> 20} MB"
