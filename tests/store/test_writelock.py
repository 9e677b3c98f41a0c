from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path

from sqlalchemy import Engine

from tether.store.writelock import span_writer, try_span_writer


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


def test_try_span_writer_never_waits_and_nesting_keeps_the_file_lock(sqlite_db: Engine) -> None:
    database = sqlite_db.url.database
    assert database is not None
    held = threading.Event()
    release = threading.Event()

    def other_thread() -> None:
        with span_writer(sqlite_db):
            held.set()
            release.wait(5)

    t = threading.Thread(target=other_thread)
    t.start()
    held.wait(5)
    with try_span_writer(sqlite_db) as got:
        assert got is False  # another thread writes: no waiting
    release.set()
    t.join(5)
    probe = os.open(database + ".writelock", os.O_RDWR)
    try:
        with try_span_writer(sqlite_db) as got:
            assert got is True
            with span_writer(sqlite_db):  # the reserve it runs takes the lock again
                pass
            # still held across processes after the inner writer left
            try:
                fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
                raise AssertionError("the file lock was released by the nested writer")
            except BlockingIOError:
                pass
        fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free once the outer one left
        fcntl.flock(probe, fcntl.LOCK_UN)
    finally:
        os.close(probe)
