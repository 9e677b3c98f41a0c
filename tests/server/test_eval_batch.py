"""Eval attempt writes batched into one SQLite transaction (server.eval_batch): the writes that
wait while one is written go together in the next transaction, a failing one rolls back alone,
and on PostgreSQL each write is a transaction of its own."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, event, insert, select

from tether.config import Settings
from tether.server.deps import State
from tether.server.eval_batch import write_attempt
from tether.store.tables import agents

NOW = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def _add(conn: Connection, name: str, gate: threading.Event | None = None) -> str:
    if gate is not None:
        gate.wait(5)  # the first write holds the transaction while the others arrive
    if name.startswith("bad"):
        conn.execute(insert(agents).values(name=name, created_at=NOW))
        raise ValueError(f"{name} refused")
    conn.execute(insert(agents).values(name=name, created_at=NOW))
    return name


def test_waiting_writes_share_a_transaction_and_a_failure_rolls_back_alone(db: Engine) -> None:
    state = State(settings=Settings(database_url=str(db.url)), engine=db)
    commits: list[Any] = []
    event.listen(db, "commit", lambda conn: commits.append(conn))
    gate = threading.Event()

    async def run() -> list[Any]:
        first = asyncio.create_task(write_attempt(state, _add, "first", gate))
        await asyncio.sleep(0.05)  # the first is being written: these wait together
        rest = [asyncio.create_task(write_attempt(state, _add, n)) for n in ("a", "bad1", "b")]
        await asyncio.sleep(0.05)
        gate.set()
        return await asyncio.gather(first, *rest, return_exceptions=True)

    outs = asyncio.run(run())
    assert outs[0] == "first" and outs[1] == "a" and outs[3] == "b"
    assert isinstance(outs[2], ValueError) and "bad1 refused" in str(outs[2])
    with db.connect() as conn:
        names = sorted(conn.execute(select(agents.c.name)).scalars())
    assert names == ["a", "b", "first"]  # bad1's row rolled back with its savepoint
    if db.dialect.name == "sqlite":
        assert len(commits) == 2  # the first alone, then the three that waited
    else:
        assert len(commits) == 3  # each its own transaction (bad1 rolled back)


def test_a_lone_write_that_fails_leaves_nothing(db: Engine) -> None:
    state = State(settings=Settings(database_url=str(db.url)), engine=db)
    with pytest.raises(ValueError, match="bad2 refused"):
        asyncio.run(write_attempt(state, _add, "bad2"))
    with db.connect() as conn:
        assert conn.execute(select(agents.c.name)).all() == []
