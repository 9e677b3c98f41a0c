"""An eval attempt's gateway spans before its check: the LLM gateway's writer hands over the
spans of the attempt's run (and its judges' runs) that it has not begun to write, and the finish
stores them in the transaction that checks the attempt, so its assertions see every call the
gateway recorded without waiting for the writer's next batch; spans a batch is already writing
are waited for (notified). If the finish fails, the spans go back to the writer. The store calls
of the eval routes queue for SQLite's write lock (`write_queued`).

Calls another worker or replica served are not in this process's writer: when the finish finds
admitted calls with no span stored (store.eval_spans), it waits for that process's batch
(`wait_stored`, polled, bounded by SPANS_WAIT_S), then checks with what is there and says so."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fastapi.concurrency import run_in_threadpool
from sqlalchemy import Engine

from tether.core.records import SpanRecord
from tether.gateway.llm.spans import Queued, SpanWriter
from tether.server.deps import State
from tether.store.eval_spans import gap
from tether.store.writelock import span_writer

T = TypeVar("T")
# how long a finish waits for the spans of calls another process served (its writer's batch
# window is 20 ms; a loaded or stalled one takes longer), and how often it looks
SPANS_WAIT_S = 3.0
SPANS_POLL_S = 0.005


@dataclass
class TakenSpans:
    writer: SpanWriter | None
    items: list[tuple[Queued, str | None]]
    records: list[SpanRecord] = field(default_factory=list)

    def build(self) -> list[SpanRecord]:
        """The records to store (off the event loop: building one redacts its prompt)."""
        self.records = SpanWriter.build([item for item, _ in self.items])
        return self.records

    def stored(self) -> None:
        if self.writer is not None:
            self.writer.stored(self.records)

    def add(self, more: TakenSpans) -> None:
        self.items.extend(more.items)

    def give_back(self) -> None:
        if self.writer is not None:
            for item, run_id in self.items:
                self.writer.submit(item, run_id)


async def take_spans(state: State, run_ids: list[str], timeout_s: float = 10.0) -> TakenSpans:
    gateway = state.llm_gateway
    if gateway is None:
        return TakenSpans(None, [])
    return TakenSpans(gateway.writer, await gateway.writer.take_runs(run_ids, timeout_s))


async def write_queued(state: State, fn: Callable[..., T], *args: Any) -> T:
    """`fn(engine, *args)` on a worker thread, queued for SQLite's lock behind the process's other
    writers (the span and settle writers, budget holds: store.writelock wakes the next at once)
    rather than in SQLite's busy handler, which sleeps up to 100 ms between tries. Not on the
    event loop: a finish is a dozen statements, and the agents' LLM calls would wait behind it."""
    return await run_in_threadpool(_queued, fn, state.engine, *args)


def _queued(fn: Callable[..., T], engine: Engine, *args: Any) -> T:
    with span_writer(engine):
        return fn(engine, *args)


async def wait_stored(state: State, run_ids: list[str], taken: TakenSpans, deadline: float) -> bool:
    """Waits until every admitted LLM call of `run_ids` has a span stored or in `taken` (which
    takes any this process queued meanwhile). True if so, False once `deadline` has passed."""
    while True:
        taken.add(await take_spans(state, run_ids))
        missing = await run_in_threadpool(gap, state.engine, run_ids, len(taken.items))
        if not missing:
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(SPANS_POLL_S)
