from __future__ import annotations

import threading
from pathlib import Path

from sqlalchemy import Engine

from tether.store.writelock import span_writer


def test_sqlite_span_writers_take_turns_across_threads(sqlite_db: Engine) -> None:
    database = sqlite_db.url.database
    assert database is not None
    order: list[str] = []
    entered = threading.Event()
    release = threading.Event()

    def first() -> None:
        with span_writer(sqlite_db):
            order.append("first in")
            entered.set()
            release.wait(5)
            order.append("first out")

    def second() -> None:
        entered.wait(5)
        with span_writer(sqlite_db):
            order.append("second in")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    entered.wait(5)
    release.set()
    for t in threads:
        t.join(5)
    assert order == ["first in", "first out", "second in"]
    # the cross-process half is an flock on a file next to the database
    assert Path(database + ".writelock").exists()
