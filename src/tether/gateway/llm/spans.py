"""The gateway's span writer: LLM spans leave the request path through a queue and are written in
batches by one background task, within ~50 ms, flushed at shutdown: on PostgreSQL through
store.gateway_spans on the event loop, on SQLite through store.gateway_spans_sqlite (on the loop
when the writer lock is free), and store.ingest.write_spans when a batch needs it.
`take_runs()` hands the spans of a few runs not yet being written to a caller that stores them in
its own transaction (an eval finishing its attempt), and waits (notified) for any already being
written; `flush_run()` waits for one run's spans only and cuts the batch window short."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime
from typing import TypeAlias

import anyio
from sqlalchemy import Engine

from tether.core.records import SpanRecord
from tether.store.gateway_spans import write_gateway_spans
from tether.store.gateway_spans_sqlite import store_gateway_spans
from tether.store.ingest import write_spans
from tether.store.pg_async import AsyncPG

log = logging.getLogger("tether.gateway")

BATCH_WINDOW_S = 0.02
MAX_BATCH = 500
# put in the queue by flush_run(): write the batch being gathered now, do not wait out the window
_HURRY = object()
Queued: TypeAlias = SpanRecord | Callable[[], SpanRecord]


class _Entry:
    """A queued span; `taken` once a batch write starts with it or a caller took it."""

    __slots__ = ("item", "run_id", "taken")

    def __init__(self, item: Queued, run_id: str | None) -> None:
        self.item = item
        self.run_id = run_id
        self.taken = False


class SpanWriter:
    """`submit()` never blocks; `run()` drains the queue; `flush()` waits until all is written."""

    def __init__(self, engine: Engine, pg: AsyncPG | None = None) -> None:
        self.engine = engine
        self.pg = pg  # PostgreSQL: the server's async connections (ready once its lifespan runs)
        self.sqlite = engine.dialect.name == "sqlite"
        self._queue: asyncio.Queue[_Entry | object] = asyncio.Queue()
        self._pending = 0
        self._idle = asyncio.Event()
        self._idle.set()
        # run id -> spans of it not yet written, and the events of those waiting for them
        self._by_run: dict[str, int] = {}
        self._run_waiters: dict[str, list[asyncio.Event]] = {}
        # run id -> its entries that no write has taken yet (what take_runs() can hand out)
        self._untaken: dict[str, list[_Entry]] = {}
        self.written = 0
        self.written_fast = 0  # of which by store.gateway_spans
        self.failed = 0
        # called with each stored batch (metrics); an observer must not raise
        self.observers: list[Callable[[list[SpanRecord]], None]] = []

    def submit(self, record: Queued, run_id: str | None = None) -> None:
        """Queues a span, or a function that builds it (called later, off the request path);
        `run_id` names the run of a function's span so that `flush_run` can wait for it."""
        if isinstance(record, SpanRecord):
            run_id = record.run_id
        self._pending += 1
        self._idle.clear()
        entry = _Entry(record, run_id)
        if run_id is not None:
            self._by_run[run_id] = self._by_run.get(run_id, 0) + 1
            self._untaken.setdefault(run_id, []).append(entry)
        self._queue.put_nowait(entry)

    async def take_runs(
        self, run_ids: list[str], timeout: float = 10.0
    ) -> list[tuple[Queued, str | None]]:
        """The spans of `run_ids` that no batch write has started on, taken out of the queue for
        the caller to store in its own transaction (`build()`, then `stored()`; or `submit()`
        each back if that transaction fails); waits for those a batch write has already taken."""
        taken: list[_Entry] = []
        for run_id in run_ids:
            taken += self._untaken.pop(run_id, [])
        for entry in taken:
            entry.taken = True
        self._done(taken)
        try:
            for run_id in run_ids:
                await self.flush_run(run_id, timeout)
        except BaseException:  # cancelled while waiting: the taken spans go back to the queue
            for entry in taken:
                self.submit(entry.item, entry.run_id)
            raise
        return [(e.item, e.run_id) for e in taken]

    @staticmethod
    def build(items: list[Queued]) -> list[SpanRecord]:
        """The records of taken spans (a span that cannot be built is logged and left out)."""
        out = []
        for q in items:
            try:
                out.append(q if isinstance(q, SpanRecord) else q())
            except Exception:  # a bug in one span must not lose the others
                log.exception("could not build a gateway span")
        return out

    def stored(self, batch: list[SpanRecord]) -> None:
        """Taken spans were stored by their taker: counted and observed as the writer's own."""
        self.written += len(batch)
        self._observe(batch)

    async def flush(self, timeout: float = 10.0) -> None:
        with anyio.move_on_after(timeout):
            await self._idle.wait()

    async def flush_run(self, run_id: str, timeout: float = 10.0) -> bool:
        """Waits until every span queued for `run_id` is written (or taken by take_runs());
        False on timeout."""
        if not self._by_run.get(run_id):
            return True
        event = asyncio.Event()
        self._run_waiters.setdefault(run_id, []).append(event)
        self._queue.put_nowait(_HURRY)
        with anyio.move_on_after(timeout):
            await event.wait()
        return event.is_set()

    async def run(self) -> None:
        while True:
            first = await self._queue.get()
            if not isinstance(first, _Entry) or first.taken:
                continue
            batch = [first]
            deadline = time.monotonic() + BATCH_WINDOW_S
            while len(batch) < MAX_BATCH:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), left)
                except TimeoutError:
                    break
                if item is _HURRY:
                    break
                if isinstance(item, _Entry) and not item.taken:
                    batch.append(item)
            await self._write(self._take(batch))

    def _take(self, batch: list[_Entry]) -> list[_Entry]:
        """The batch less what take_runs() handed out while it gathered, now the writer's."""
        mine = [e for e in batch if not e.taken]
        for e in mine:
            e.taken = True
        for run_id in {e.run_id for e in mine if e.run_id is not None}:
            left = [x for x in self._untaken.get(run_id, ()) if not x.taken]
            if left:
                self._untaken[run_id] = left
            else:
                self._untaken.pop(run_id, None)
        return mine

    def _done(self, queued: list[_Entry]) -> None:
        self._pending -= len(queued)
        if self._pending == 0:
            self._idle.set()
        for e in queued:
            run_id = e.run_id
            if run_id is None:
                continue
            left = self._by_run.get(run_id, 1) - 1
            if left > 0:
                self._by_run[run_id] = left
                continue
            self._by_run.pop(run_id, None)
            for event in self._run_waiters.pop(run_id, []):
                event.set()

    async def _write(self, queued: list[_Entry]) -> None:
        if not queued:
            return
        batch = self.build([e.item for e in queued])
        for attempt in range(3):
            try:
                with anyio.CancelScope(shield=True):
                    await self._store(batch)
                self.written += len(batch)
                self._observe(batch)
                break
            except Exception:  # a failed write is retried, then logged: never the request's fault
                if attempt == 2:
                    await self._one_by_one(batch)
                else:
                    await asyncio.sleep(0.05 * (attempt + 1))
        self._done(queued)

    async def _one_by_one(self, batch: list[SpanRecord]) -> None:
        """The batch keeps failing: store every span that can be stored on its own."""
        for record in batch:
            try:
                with anyio.CancelScope(shield=True):
                    await self._store([record])
                self.written += 1
            except Exception:
                self.failed += 1
                log.exception("could not store gateway span %s of run %s", record.span_id,
                              record.run_id)  # fmt: skip

    def _observe(self, batch: list[SpanRecord]) -> None:
        for observer in self.observers:
            try:
                observer(batch)
            except Exception:  # metrics are never worth losing the writer loop over
                log.exception("a span observer failed")

    async def _store(self, batch: list[SpanRecord]) -> None:
        """The batch in one transaction; a batch sent again after an error finds what was stored
        and takes the general path."""
        pg = self.pg
        if pg is not None and pg.ready and await write_gateway_spans(pg, batch, datetime.now(UTC)):
            self.written_fast += len(batch)
            return
        if self.sqlite:
            # on the loop's thread when the writer lock is free (a thread hop costs more than
            # the transaction), else on a worker thread that waits for it
            fast = store_gateway_spans(self.engine, batch, datetime.now(UTC), nowait=True)
            if fast is None:
                fast = await anyio.to_thread.run_sync(self._write_sqlite, batch)
            elif not fast:
                await anyio.to_thread.run_sync(self._write_sync, batch)
            if fast:
                self.written_fast += len(batch)
            return
        await anyio.to_thread.run_sync(self._write_sync, batch)

    def _write_sqlite(self, batch: list[SpanRecord]) -> bool:
        """SQLite's fast path, waiting for the writer lock; else write_spans (False)."""
        if store_gateway_spans(self.engine, batch, datetime.now(UTC), nowait=False):
            return True
        self._write_sync(batch)
        return False

    def _write_sync(self, batch: list[SpanRecord]) -> None:
        write_spans(self.engine, batch, now=datetime.now(UTC), source="gateway")

    @asynccontextmanager
    async def running(self) -> AsyncIterator[SpanWriter]:
        """Runs the writer for the app's lifetime; at shutdown writes what is still queued."""
        task = asyncio.create_task(self.run())
        try:
            yield self
        finally:
            await self.flush()
            task.cancel()
            with anyio.CancelScope(shield=True):
                with suppress(asyncio.CancelledError):
                    await task
