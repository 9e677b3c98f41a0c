"""InlineSQLite: a short transaction runs at once when SQLite's write lock is free, raises Busy
(having written nothing) when another writer holds it, and asks for a WAL checkpoint elsewhere
every CHECKPOINT_EVERY calls; PostgreSQL and in-memory SQLite get none."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, create_engine, select

from tether.store import inline
from tether.store.engine import reading
from tether.store.inline import Busy, inline_for, passive_checkpoint
from tether.store.tables import checkpoint_threads


def _insert(engine: Engine, thread_id: str) -> str:
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(
            checkpoint_threads.insert().values(
                thread_id=thread_id, agent="a", run_id="run_x", steps=0, created_at=now,
                updated_at=now,
            )
        )  # fmt: skip
    return thread_id


def _ids(engine: Engine) -> list[str]:
    with reading(engine) as conn:
        return list(conn.execute(select(checkpoint_threads.c.thread_id)).scalars())


def test_runs_now_when_the_lock_is_free_and_is_busy_when_it_is_not(sqlite_db: Engine) -> None:
    fast = inline_for(sqlite_db)
    assert fast is not None
    try:
        assert fast.run(_insert, "t1") == "t1"
        with sqlite_db.begin():  # another writer holds the write lock (BEGIN IMMEDIATE)
            with pytest.raises(Busy):
                fast.run(_insert, "t2")
            # reads never wait in WAL mode, even with the lock held
            assert fast.run(_ids) == ["t1"]
        assert _ids(sqlite_db) == ["t1"]  # the refused call wrote nothing
        assert fast.run(_insert, "t2") == "t2"
    finally:
        fast.dispose()


def test_other_errors_are_not_mistaken_for_a_busy_lock(sqlite_db: Engine) -> None:
    fast = inline_for(sqlite_db)
    assert fast is not None
    try:
        fast.run(_insert, "dup")
        with pytest.raises(Exception) as err:
            fast.run(_insert, "dup")
        assert not isinstance(err.value, Busy)
    finally:
        fast.dispose()


def test_a_checkpoint_is_due_every_so_many_calls(
    sqlite_db: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inline, "CHECKPOINT_EVERY", 3)
    fast = inline_for(sqlite_db)
    assert fast is not None
    try:
        due = []
        for _ in range(6):
            fast.run(_ids)
            due.append(fast.checkpoint_due())
        assert due == [False, False, True, False, False, True]
        passive_checkpoint(sqlite_db)  # runs outside a transaction without error
    finally:
        fast.dispose()


def test_no_inline_connection_for_postgresql_or_memory() -> None:
    assert inline_for(create_engine("sqlite://")) is None
    pg = create_engine("postgresql+psycopg://u@127.0.0.1/x")
    assert inline_for(pg) is None
    pg.dispose()
