"""The one-statement checkpoint put (checkpoints_pg on PostgreSQL, checkpoints_sqlite on SQLite)
writes only where threads.claim would pass the call through unchanged; everywhere else it writes
nothing and answers None, so the route takes the general path."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import Engine, select, update

from tether.store import checkpoints_pg, checkpoints_sqlite, threads
from tether.store.checkpoints import Blob, NewCheckpoint, get_tuple
from tether.store.tables import checkpoint_threads, checkpoints, runs

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
ME = threads.Caller(agent="agent-a", admin=False)
CAPS = threads.RunLink(max_tokens=1000, max_iterations=10, cost_limit_usd=Decimal("2"))


def _cp(cid: str, step: int = 1, source: str = "loop") -> NewCheckpoint:
    return NewCheckpoint(
        thread_id="t1",
        checkpoint_ns="",
        checkpoint_id=cid,
        parent_id=None,
        type="msgpack",
        data=b"cp",
        versions={"step": cid},
        metadata={"source": source, "step": step},
        blobs=[Blob("step", cid, "msgpack", b"v", {"view": 1})],
    )


def _fast(
    db: Engine, cp: NewCheckpoint, caller: threads.Caller, link: threads.RunLink
) -> str | None:
    if db.dialect.name == "postgresql":
        row = checkpoints_pg.first(db, checkpoints_pg.put(cp, caller, link, now=NOW))
        return None if row is None else str(row[0])
    return checkpoints_sqlite.put(db, cp, caller, link, now=NOW)


@pytest.fixture
def thread(db: Engine) -> threads.Thread:
    with db.begin() as conn:
        return threads.claim(conn, "t1", ME, CAPS, now=NOW)


def test_writes_through_an_owned_live_thread_under_its_caps(db: Engine, thread: threads.Thread):
    assert _fast(db, _cp("0001", step=3), ME, CAPS) == thread.run_id
    assert _fast(db, _cp("0002", step=2), ME, threads.RunLink()) == thread.run_id
    got = get_tuple(db, thread_id="t1", checkpoint_ns="", checkpoint_id="0001")
    assert got is not None and got["run_id"] == thread.run_id and got["data"] == b"cp"
    assert [b["data"] for b in got["blobs"]] == [b"v"]
    with db.connect() as conn:
        steps = conn.execute(select(checkpoint_threads.c.steps)).scalar()
    assert steps == 3  # counted, and never lowered by the earlier step


@pytest.mark.parametrize(
    "case",
    ["unknown thread", "other agent", "killed run", "tighter cap", "tighter iterations", "over"],
)
def test_leaves_everything_else_to_the_general_path(db: Engine, thread: threads.Thread, case: str):
    cp, caller, link = _cp("0001"), ME, CAPS
    if case == "unknown thread":
        cp = NewCheckpoint(**{**cp.__dict__, "thread_id": "t2"})
    elif case == "other agent":
        caller = threads.Caller(agent="agent-b", admin=False)
    elif case == "killed run":
        with db.begin() as conn:
            conn.execute(update(runs).where(runs.c.id == thread.run_id).values(status="killed"))
    elif case == "tighter cap":
        link = threads.RunLink(max_tokens=999)
    elif case == "tighter iterations":
        link = threads.RunLink(max_iterations=9)
    else:
        cp = _cp("0001", step=11)
    assert _fast(db, cp, caller, link) is None
    with db.connect() as conn:
        assert conn.execute(select(checkpoints.c.checkpoint_id)).all() == []
