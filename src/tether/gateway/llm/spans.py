"""The gateway's span writer: LLM spans leave the request path through a queue and are written in
batches by one background task (store.ingest.write_spans), within ~50 ms, flushed at shutdown."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime

import anyio
from sqlalchemy import Engine

from tether.core.records import SpanRecord
from tether.store.ingest import write_spans

log = logging.getLogger("tether.gateway")

BATCH_WINDOW_S = 0.02
MAX_BATCH = 500


class SpanWriter:
    """`submit()` never blocks; `run()` drains the queue; `flush()` waits until all is written."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._queue: asyncio.Queue[SpanRecord | Callable[[], SpanRecord]] = asyncio.Queue()
        self._pending = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.written = 0
        self.failed = 0
        # called with each stored batch (metrics); an observer must not raise
        self.observers: list[Callable[[list[SpanRecord]], None]] = []

    def submit(self, record: SpanRecord | Callable[[], SpanRecord]) -> None:
        """Queues a span, or a function that builds it (called later, off the request path)."""
        self._pending += 1
        self._idle.clear()
        self._queue.put_nowait(record)

    async def flush(self, timeout: float = 10.0) -> None:
        with anyio.move_on_after(timeout):
            await self._idle.wait()

    async def run(self) -> None:
        while True:
            first = await self._queue.get()
            batch: list[SpanRecord | Callable[[], SpanRecord]] = [first]
            deadline = time.monotonic() + BATCH_WINDOW_S
            while len(batch) < MAX_BATCH:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), left))
                except TimeoutError:
                    break
            await self._write(batch)

    async def _write(self, queued: list[SpanRecord | Callable[[], SpanRecord]]) -> None:
        batch = []
        for q in queued:
            try:
                batch.append(q if isinstance(q, SpanRecord) else q())
            except Exception:  # a bug in one span must not lose the others
                log.exception("could not build a gateway span")
        for attempt in range(3):
            try:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(self._write_sync, batch)
                self.written += len(batch)
                self._observe(batch)
                break
            except Exception:  # a failed write is retried, then logged: never the request's fault
                if attempt == 2:
                    await self._one_by_one(batch)
                else:
                    await asyncio.sleep(0.05 * (attempt + 1))
        self._pending -= len(queued)
        if self._pending == 0:
            self._idle.set()

    async def _one_by_one(self, batch: list[SpanRecord]) -> None:
        """The batch keeps failing: store every span that can be stored on its own."""
        for record in batch:
            try:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(self._write_sync, [record])
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
