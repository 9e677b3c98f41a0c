"""server.group_commit: writes that wait while one is written share the next transaction; without
savepoints (span ingest) a group whose transaction fails is written again one write at a time,
so that only the failing write fails. (With savepoints: tests/server/test_eval_batch.py.)"""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, event, insert, select

from tether.server.group_commit import GroupCommit, write_all
from tether.store.tables import agents

NOW = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def _add(name: str, gate: threading.Event | None = None) -> Any:
    def write(conn: Connection) -> str:
        if gate is not None:
            gate.wait(5)  # the first write holds the transaction while the others arrive
        conn.execute(insert(agents).values(name=name, created_at=NOW))
        if name.startswith("bad"):
            raise ValueError(f"{name} refused")
        return name

    return write


def test_without_savepoints_a_failed_group_is_written_again_one_by_one(sqlite_db: Engine) -> None:
    commits: list[Any] = []
    event.listen(sqlite_db, "commit", lambda conn: commits.append(conn))
    outs = write_all(sqlite_db, [_add("a"), _add("bad1"), _add("b")], savepoints=False)
    assert outs[0] == "a" and outs[2] == "b"
    assert isinstance(outs[1], ValueError)
    with sqlite_db.connect() as conn:
        names = sorted(conn.execute(select(agents.c.name)).scalars())
    assert names == ["a", "b"]  # bad1 left nothing
    assert len(commits) == 2  # the group rolled back, then a and b alone


def test_waiting_writes_share_one_commit_without_savepoints(sqlite_db: Engine) -> None:
    commits: list[Any] = []
    savepoints: list[str] = []
    event.listen(sqlite_db, "commit", lambda conn: commits.append(conn))
    event.listen(sqlite_db, "savepoint", lambda conn, name: savepoints.append(name))
    group = GroupCommit(sqlite_db, 4, savepoints=False)
    gate = threading.Event()

    async def run() -> list[Any]:
        first = asyncio.create_task(group.write(_add("first", gate)))
        await asyncio.sleep(0.05)  # the first is being written: these wait together
        rest = [asyncio.create_task(group.write(_add(n))) for n in ("a", "b", "c")]
        await asyncio.sleep(0.05)
        gate.set()
        return await asyncio.gather(first, *rest)

    assert asyncio.run(run()) == ["first", "a", "b", "c"]
    assert len(commits) == 2 and savepoints == []
