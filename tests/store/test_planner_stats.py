"""SQLite's planner statistics: without them, a memory search's re-check of a few ids by primary
key is planned as a scan of the whole namespace (SQLite guesses 10 rows for any index
equality); `refresh_planner_stats` gives it the real shape, and `tether serve` runs it in the
background on SQLite."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import anyio
import pytest
from sqlalchemy import Engine, insert, select

from tether.config import load_settings
from tether.core.memory import Access
from tether.server.app import create_app
from tether.store import memory as mem
from tether.store.engine import refresh_planner_stats
from tether.store.tables import memories, memory_namespaces

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def _fill(db: Engine, n: int) -> None:
    with db.begin() as conn:
        conn.execute(insert(memory_namespaces).values(name="big", embedder="client", dim=4,
                                                      created_at=NOW))  # fmt: skip
        conn.execute(insert(memories), [
            {"id": f"mem_{i:019d}", "namespace": "big", "text": f"m{i}", "tags": [],
             "content_hash": f"{i:064x}", "embedding": bytes(16), "created_at": NOW}
            for i in range(n)
        ])  # fmt: skip


def _recheck_plan(db: Engine) -> str:
    scope = Access(None, None).read_scope(NOW, ["big"], user=None)
    cond = mem.and_(mem._scoped(scope), mem._live(None), memories.c.embedding.is_not(None))
    ids = [f"mem_{i:019d}" for i in range(0, 3600, 100)]  # what an index hands back for k=10
    q = select(memories.c.id).where(cond, memories.c.id.in_(ids))
    sql = str(q.compile(db, compile_kwargs={"literal_binds": True}))
    with db.connect() as conn:
        return " | ".join(str(r[-1]) for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql))


def test_stats_turn_a_namespace_scan_into_primary_key_lookups(sqlite_db: Engine) -> None:
    _fill(sqlite_db, 5000)
    assert "ix_memories_ns" in _recheck_plan(sqlite_db)  # the guess without statistics
    refresh_planner_stats(sqlite_db)
    plan = _recheck_plan(sqlite_db)
    assert "sqlite_autoindex_memories_1 (id=?)" in plan, plan


def test_serve_refreshes_them_in_the_background(
    sqlite_db: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tether.server import store_upkeep

    monkeypatch.setattr(store_upkeep, "FIRST_AFTER_S", 0.0)
    _fill(sqlite_db, 2000)
    settings = load_settings(database_url=str(sqlite_db.url), store_stats_interval_s=0.05)
    app = create_app(settings, engine=sqlite_db)

    async def main() -> None:
        async with app.router.lifespan_context(app):
            deadline = time.monotonic() + 60
            while "sqlite_autoindex_memories_1 (id=?)" not in _recheck_plan(sqlite_db):
                assert time.monotonic() < deadline, "statistics were never refreshed"
                await anyio.sleep(0.05)

    anyio.run(main)


def test_postgresql_needs_nothing(db: Engine) -> None:
    refresh_planner_stats(db)  # a no-op there (autovacuum analyses); must not fail on either
