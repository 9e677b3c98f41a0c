"""The one-statement checkpoint put and put_writes (checkpoints_pg on PostgreSQL,
checkpoints_sqlite on SQLite) write only where threads.claim would pass the call through
unchanged; everywhere else they write nothing and answer None / False, so the route takes the
general path."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import Engine, select, update

from tether.store import checkpoints_pg, checkpoints_sqlite, threads
from tether.store.checkpoints import Blob, NewCheckpoint, Write, get_tuple
from tether.store.tables import checkpoint_threads, checkpoint_writes, checkpoints, runs

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
    with checkpoints_sqlite.driver_connection(db) as raw:
        return checkpoints_sqlite.put(raw, cp, caller, link, now=NOW)


def _fast_writes(
    db: Engine,
    writes: list[Write],
    caller: threads.Caller = ME,
    link: threads.RunLink = CAPS,
    thread_id: str = "t1",
) -> bool:
    at = {"thread_id": thread_id, "checkpoint_ns": "", "checkpoint_id": "0001", "task_id": "task"}
    if db.dialect.name == "postgresql":
        stmt = checkpoints_pg.put_writes(
            **at, task_path="~plan", writes=writes, caller=caller, link=link
        )
        row = checkpoints_pg.first(db, stmt)
        return row is not None and bool(row[0])
    with checkpoints_sqlite.driver_connection(db) as raw:
        return checkpoints_sqlite.put_writes(
            raw, **at, task_path="~plan", writes=writes, caller=caller, link=link
        )


def _stored_writes(db: Engine) -> list[tuple[object, ...]]:
    w = checkpoint_writes.c
    with db.connect() as conn:
        q = select(w.idx, w.channel, w.blob, w.view).order_by(w.idx)
        return [tuple(r) for r in conn.execute(q)]


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


def test_writes_pending_writes_through_an_owned_live_thread(db: Engine, thread: threads.Thread):
    assert _fast_writes(db, [Write(0, "findings", "msgpack", b"a", {"v": 1})])
    # idempotent per (task, idx): a repeat keeps the first
    assert _fast_writes(db, [Write(0, "findings", "msgpack", b"b", None)], link=threads.RunLink())
    assert _stored_writes(db) == [(0, "findings", b"a", {"v": 1})]
    # the special channels are replaced, at their fixed index
    assert _fast_writes(db, [Write(0, "__error__", "msgpack", b"e1", None)])
    assert _fast_writes(db, [Write(0, "__error__", "msgpack", b"e2", None)])
    assert _stored_writes(db) == [(-1, "__error__", b"e2", None), (0, "findings", b"a", {"v": 1})]


@pytest.mark.parametrize("case", ["unknown thread", "other agent", "killed run", "tighter cap"])
def test_pending_writes_leave_everything_else_to_the_general_path(
    db: Engine, thread: threads.Thread, case: str
):
    caller, link, thread_id = ME, CAPS, "t1"
    if case == "unknown thread":
        thread_id = "t2"
    elif case == "other agent":
        caller = threads.Caller(agent="agent-b", admin=False)
    elif case == "killed run":
        with db.begin() as conn:
            conn.execute(update(runs).where(runs.c.id == thread.run_id).values(status="killed"))
    else:
        link = threads.RunLink(cost_limit_usd=Decimal("1"))
    writes = [Write(0, "findings", "msgpack", b"a", None)]
    assert not _fast_writes(db, writes, caller, link, thread_id)
    assert _stored_writes(db) == []
