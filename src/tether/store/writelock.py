"""One span writer at a time on a SQLite file, across threads and processes, woken promptly.

SQLite lets one connection write; the others wait in its busy handler, which polls with sleeps
of up to 100 ms. Queuing span writers on a mutex (threads) and an flock (processes, as with
`tether serve --workers N`) hands the lock over as soon as it is free instead.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from sqlalchemy import Engine

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: the thread mutex alone
    fcntl = None  # type: ignore[assignment]


log = logging.getLogger(__name__)


class _Writer:
    def __init__(self, lock_path: str | None) -> None:
        # re-entrant: the gateway's loop thread takes it without waiting (`try_span_writer`),
        # then runs a writer that takes it again
        self.mutex = threading.RLock()
        self.depth = 0  # guarded by the mutex
        # called once, from whichever thread, when the lock is next let go (on_release)
        self.hooks: list[Callable[[], object]] = []
        self.fd: int | None = None
        if lock_path is not None and fcntl is not None:
            self.fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            weakref.finalize(self, os.close, self.fd)

    @contextmanager
    def held(self, wait: bool = True) -> Iterator[bool]:
        """Holds the lock (True); without `wait`, False at once if another holder has it."""
        if not self.mutex.acquire(blocking=wait):
            yield False
            return
        try:
            if self.depth == 0 and self.fd is not None:
                try:
                    fcntl.flock(self.fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:  # another process writes
                    yield False
                    return
            self.depth += 1
            try:
                yield True
            finally:
                self.depth -= 1
                if self.depth == 0 and self.fd is not None:
                    fcntl.flock(self.fd, fcntl.LOCK_UN)
        finally:
            self.mutex.release()
        if self.hooks and self.depth == 0:
            hooks, self.hooks = self.hooks, []
            for hook in hooks:
                try:
                    hook()
                except Exception:  # a waiter gone (its loop closed) must not fail this writer
                    log.debug("a writer-lock release hook failed", exc_info=True)


_WRITERS: weakref.WeakKeyDictionary[Engine, _Writer] = weakref.WeakKeyDictionary()
_GUARD = threading.Lock()


def span_writer(engine: Engine) -> AbstractContextManager[Any]:
    """Serialises span writes on a SQLite file; a no-op on PostgreSQL."""
    if engine.dialect.name != "sqlite":
        return nullcontext()
    return _writer(engine).held()


def try_span_writer(engine: Engine) -> AbstractContextManager[bool]:
    """The SQLite writer lock if no other writer holds it (True), else False at once; always
    False on PostgreSQL (nothing to take)."""
    if engine.dialect.name != "sqlite":
        return nullcontext(False)
    return _writer(engine).held(wait=False)


def on_release(engine: Engine, hook: Callable[[], object]) -> bool:
    """Calls `hook` once, from the releasing thread, when this process next lets the SQLite
    writer lock go (a `try_span_writer` that failed may then succeed); False on PostgreSQL.
    A release elsewhere (another process) calls nothing: waiters need a timeout."""
    if engine.dialect.name != "sqlite":
        return False
    _writer(engine).hooks.append(hook)
    return True


def _writer(engine: Engine) -> _Writer:
    writer = _WRITERS.get(engine)
    if writer is not None:
        return writer
    with _GUARD:
        writer = _WRITERS.get(engine)
        if writer is None:
            database = engine.url.database
            path = None if not database or database == ":memory:" else f"{database}.writelock"
            writer = _WRITERS[engine] = _Writer(path)
    return writer
