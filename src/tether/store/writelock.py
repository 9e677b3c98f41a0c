"""One span writer at a time on a SQLite file, across threads and processes, woken promptly.

SQLite lets one connection write; the others wait in its busy handler, which polls with sleeps
of up to 100 ms. Queuing span writers on a mutex (threads) and an flock (processes, as with
`tether serve --workers N`) hands the lock over as soon as it is free instead.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from sqlalchemy import Engine

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: the thread mutex alone
    fcntl = None  # type: ignore[assignment]


class _Writer:
    def __init__(self, lock_path: str | None) -> None:
        self.mutex = threading.Lock()
        self.fd: int | None = None
        if lock_path is not None and fcntl is not None:
            self.fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            weakref.finalize(self, os.close, self.fd)

    @contextmanager
    def held(self) -> Iterator[None]:
        with self.mutex:
            if self.fd is None:
                yield
                return
            fcntl.flock(self.fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self.fd, fcntl.LOCK_UN)


_WRITERS: weakref.WeakKeyDictionary[Engine, _Writer] = weakref.WeakKeyDictionary()
_GUARD = threading.Lock()


def span_writer(engine: Engine) -> AbstractContextManager[Any]:
    """Serialises span writes on a SQLite file; a no-op on PostgreSQL."""
    if engine.dialect.name != "sqlite":
        return nullcontext()
    with _GUARD:
        writer = _WRITERS.get(engine)
        if writer is None:
            database = engine.url.database
            path = None if not database or database == ":memory:" else f"{database}.writelock"
            writer = _WRITERS[engine] = _Writer(path)
    return writer.held()
