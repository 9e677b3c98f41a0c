"""A named run's row, written by the gateway on the run's first call: on SQLite in the event
loop's own thread when the writer lock is free, on a worker thread when another writer has it;
the same row, kill state and caps either way."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event, select

from tether.config import load_settings
from tether.core.records import RunAttribution
from tether.gateway.llm.forward import Upstream
from tether.gateway.llm.gateway import Call, Gateway
from tether.gateway.llm.guard import Caller
from tether.gateway.llm.killswitch import KillSwitch
from tether.store import writelock
from tether.store.inline import inline_for
from tether.store.ledger import make_ledger
from tether.store.tables import runs


def _call(run_id: str) -> Call:
    return Call(api="openai", endpoint="chat/completions",
                caller=Caller("key_1", "bot", run_id, None, None), model="m", body={},
                stream=False, trace_id="ab" * 16, span_id="cd" * 8, parent_id=None,
                attribution=RunAttribution(agent="bot"), is_root=False,
                started_at=datetime.now(UTC))  # fmt: skip


async def _no_key(_: object) -> None:
    return None


async def test_a_named_runs_row_is_written_on_the_loop_unless_the_lock_is_busy(
    sqlite_db: Engine, tmp_path: Path
) -> None:
    db = sqlite_db
    inline = inline_for(db)
    assert inline is not None
    upstream = Upstream()
    gw = Gateway(load_settings(home=tmp_path / "home", database_url=str(db.url)), db,
                 authenticate=_no_key, ledger=make_ledger(db), killswitch=KillSwitch(db),
                 upstream=upstream, inline=inline)  # fmt: skip
    writers: list[int] = []

    def seen(statement: str) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO RUNS"):
            writers.append(threading.get_ident())

    def traced(dbapi_conn: Any, _record: object) -> None:
        dbapi_conn.set_trace_callback(seen)  # plain SQL on the driver's connections too

    locked, release = threading.Event(), threading.Event()

    def other_writer() -> None:
        with writelock.span_writer(db):
            locked.set()
            release.wait(5)

    db.dispose()  # every connection from now on is traced
    event.listen(db, "connect", traced)
    try:
        started, agent = await gw.run_started_at(_call("run_loop"))
        thread = threading.Thread(target=other_writer)
        thread.start()
        locked.wait(5)
        pending = asyncio.create_task(gw.run_started_at(_call("run_thread")))
        await asyncio.sleep(0.05)  # it found the lock busy: a worker thread waits for it
        assert not pending.done()
        release.set()
        await pending
        thread.join(5)
    finally:
        event.remove(db, "connect", traced)
        await upstream.aclose()
        inline.dispose()
    assert agent == "bot" and started.tzinfo is not None
    assert len(writers) == 2
    assert writers[0] == threading.get_ident()  # the loop's thread
    assert writers[1] != threading.get_ident()  # a worker thread, after the other writer
    with db.connect() as conn:
        rows = conn.execute(select(runs.c.id, runs.c.agent, runs.c.status)).all()
    assert sorted(tuple(r) for r in rows) == [("run_loop", "bot", "running"),
                                              ("run_thread", "bot", "running")]  # fmt: skip
