"""The gateway's settle writer: a finished call's hold becomes its real cost off the response
path, in batches (one transaction, one counter UPDATE per scope for all the calls that finished
together), flushed at shutdown.

It cannot overshoot: until its settle is written a call keeps its whole hold, which is at least
its cost, so a later call sees less room, never more. It loses nothing a synchronous settle
would keep: a failed batch is retried, then settled call by call; a call whose settle could not
be written at all keeps its hold until the expiry sweep, exactly as before.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime

import anyio

from tether.store.ledger import Ledger, Reservation

log = logging.getLogger("tether.gateway")
MAX_BATCH = 256
Item = tuple[Reservation, int, int]


class SettleWriter:
    """`submit()` never blocks; `run()` writes what is queued; `flush()` waits for all of it."""

    def __init__(self, ledger: Ledger, *, done: Callable[[Reservation], object]) -> None:
        self.ledger = ledger
        self.done = done
        self._queue: asyncio.Queue[Item] = asyncio.Queue()
        self._pending = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.settled = 0
        self.failed = 0

    def submit(self, reservation: Reservation, actual_nusd: int, actual_tokens: int) -> None:
        self._pending += 1
        self._idle.clear()
        self._queue.put_nowait((reservation, actual_nusd, actual_tokens))

    async def flush(self, timeout: float = 10.0) -> None:
        with anyio.move_on_after(timeout):
            await self._idle.wait()

    async def run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            # no waiting window: what finished while the last batch was written goes together
            while len(batch) < MAX_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            await self._write(batch)

    async def _write(self, batch: list[Item]) -> None:
        now = datetime.now(UTC)
        try:
            for attempt in range(3):
                try:
                    with anyio.CancelScope(shield=True):
                        await self.ledger.settle_many(batch, now=now)
                    self.settled += len(batch)
                    return
                except Exception:  # retried, then call by call: never the request's fault
                    if attempt < 2:
                        await asyncio.sleep(0.05 * (attempt + 1))
            await self._one_by_one(batch, now)
        finally:
            for r, _, _ in batch:
                self.done(r)
            self._pending -= len(batch)
            if self._pending == 0:
                self._idle.set()

    async def _one_by_one(self, batch: list[Item], now: datetime) -> None:
        for r, nusd, tokens in batch:
            try:
                with anyio.CancelScope(shield=True):
                    await self.ledger.settle(r, actual_nusd=nusd, actual_tokens=tokens, now=now)
                self.settled += 1
            except Exception:
                self.failed += 1
                log.exception("could not settle hold %s of run %s; it stays held until swept",
                              r.id, r.run_id)  # fmt: skip

    @asynccontextmanager
    async def running(self) -> AsyncIterator[SettleWriter]:
        """Runs the writer for the app's lifetime; at shutdown settles what is still queued."""
        task = asyncio.create_task(self.run())
        try:
            yield self
        finally:
            await self.flush()
            task.cancel()
            with anyio.CancelScope(shield=True), suppress(asyncio.CancelledError):
                await task
