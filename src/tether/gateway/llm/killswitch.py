"""The kill switch: ends a killed run's in-flight streams in every process, refuses its later
calls (at once here, within 100 ms elsewhere), and enforces `max_duration_s`.

On PostgreSQL each kill is pushed to every process by LISTEN/NOTIFY (store/kill_feed.py), so a
stream on another replica ends milliseconds after the kill commits; the kill log is still read
every second as a safety net. Without the push (SQLite, or while the listening connection is
down) the log is polled every 25 ms. Each poll reads the log by time, one indexed query whatever
the number of runs in use; a run's kill state before this process saw it comes with its first
call (the gateway reads it with the run). A kill is final and applies to ended runs too.

On SQLite the poll's read, and a call's own check when the last poll is too old, run on the
event loop's thread (a WAL reader never waits for a writer; a connection that cannot wait falls
back to a worker thread in the rare case the file is busy): under load a thread hop took so
long that polls fell behind their 100 ms window and every call hopped to a thread for its own
check (13% of the server's samples on the budgeted path at c=32, issue 9).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import anyio
from sqlalchemy import Engine, select
from sqlalchemy.exc import SQLAlchemyError

from tether.core.errors import NotFoundError, RunKilledError
from tether.store import audit, kill_feed, kills
from tether.store.engine import reading
from tether.store.inline import Busy, InlineSQLite, inline_for
from tether.store.kills import DURATION_REASON
from tether.store.tables import runs
from tether.store.writelock import span_writer

log = logging.getLogger(__name__)
T = TypeVar("T")
# A kill made in another process reaches this one's streams within one poll; 25 ms keeps
# the whole path (kill request, poll, stream end) under the 100 ms target.
POLL_S = 0.025
FRESH_POLLS = 4
# with the push connected the log is a safety net for a lost notification: read it each second,
# and trust the push (plus the last read) to vouch for a run for this long
PUSHED_POLL_S = 1.0
PUSHED_FRESH_S = 5.0
# after the listening connection fails, wait this long before connecting again (polling fast)
RELISTEN_S = 2.0
# polls stop when no run was used for this long (an idle server does not query 40 times a
# second); the first call after that checks its run directly
WATCH_S = 10.0
# Each poll re-reads the kills of the last minute: a kill committed late (a slow transaction, a
# replica's clock a little behind) is still seen. Replica clocks must agree within this margin.
LOG_MARGIN = timedelta(seconds=60)


@dataclass(eq=False)
class RunHandle:
    """One in-flight call of a run; a stream ends when `killed` is set and says `reason`."""

    run_id: str
    deadline: datetime | None = None
    killed: anyio.Event = field(default_factory=anyio.Event)
    reason: str | None = None

    def fire(self, reason: str) -> None:
        if not self.killed.is_set():
            self.reason = reason
            self.killed.set()


class KillSwitch:
    """Per-process registry of in-flight runs, shared by every stream of the LLM gateway."""

    def __init__(
        self,
        engine: Engine,
        *,
        poll_s: float = POLL_S,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.engine = engine
        self.poll_s = poll_s
        self.clock = clock
        self._inflight: dict[str, set[RunHandle]] = {}
        # killed is terminal, so a known kill is cached for good
        self._killed: dict[str, str] = {}
        # the log is complete from `_since` on as of the poll that started at `_synced_at`
        self._since: datetime | None = None
        self._synced_at = 0.0
        self._used_at = 0.0
        self._limiter: anyio.CapacityLimiter | None = None
        # SQLite: a no-wait connection for reads on the event loop (made on first use)
        self._inline: InlineSQLite | None = None
        self._inline_tried = False
        # True while the PostgreSQL LISTEN connection is up (kills arrive as they commit)
        self.pushed = False

    # ------------------------------------------------------------ in-flight registry

    def register(self, run_id: str, *, deadline: datetime | None = None) -> RunHandle:
        """A handle whose `killed` event fires on a kill of `run_id` (here or elsewhere)."""
        handle = RunHandle(run_id, deadline)
        self._inflight.setdefault(run_id, set()).add(handle)
        if run_id in self._killed:
            handle.fire(self._killed[run_id])
        return handle

    def unregister(self, handle: RunHandle) -> None:
        handles = self._inflight.get(handle.run_id)
        if handles is not None:
            handles.discard(handle)
            if not handles:
                del self._inflight[handle.run_id]

    @contextmanager
    def track(self, run_id: str, *, deadline: datetime | None = None) -> Iterator[RunHandle]:
        handle = self.register(run_id, deadline=deadline)
        try:
            yield handle
        finally:
            self.unregister(handle)

    def inflight(self) -> list[str]:
        return list(self._inflight)

    # ------------------------------------------------------------ kill and check

    async def kill(self, run_id: str, reason: str, *, now: datetime, actor: str = "system") -> bool:
        """Kills `run_id` everywhere; False if it was unknown or had already been killed."""
        changed = await anyio.to_thread.run_sync(self._kill_in_store, run_id, reason, now, actor)
        if changed:
            self._fire(run_id, reason)
        return changed

    def _kill_in_store(self, run_id: str, reason: str, now: datetime, actor: str) -> bool:
        # on SQLite, queue with this process's other writers (ledger, spans) instead of sleeping
        # in the busy handler: a kill should not wait out a back-off
        with span_writer(self.engine), self.engine.begin() as conn:
            changed = kills.kill(conn, run_id, reason=reason, now=now)
            if changed:
                audit.append_in(conn, actor, "run.killed", run_id, {"reason": reason}, now)
        return changed

    def note_killed(self, run_id: str, reason: str) -> None:
        """What the gateway read with the run: it was killed before this process saw it."""
        self._fire(run_id, reason)

    def _fire(self, run_id: str, reason: str) -> None:
        self._killed[run_id] = reason
        for handle in list(self._inflight.get(run_id, ())):
            handle.fire(reason)

    def _fresh(self) -> bool:
        """Whether the last poll is recent enough to vouch for every run: within FRESH_POLLS
        intervals, the 100 ms a kill may take to reach another process. A busy machine stretches
        the gaps between polls; a call then checks its run directly rather than trust it."""
        now = time.monotonic()
        self._used_at = now
        window = PUSHED_FRESH_S if self.pushed else FRESH_POLLS * self.poll_s
        return now - self._synced_at <= window

    def killed_reason(self, run_id: str) -> str | None:
        """The kill reason if `run_id` is killed (a kill here is seen at once, elsewhere within
        one poll interval); None if it is alive or unknown. Blocking: run it in a thread."""
        if run_id in self._killed:
            return self._killed[run_id]
        if self._fresh():
            return None
        return self._note(run_id, _kill_reason(self.engine, run_id))

    def _note(self, run_id: str, reason: str | None) -> str | None:
        if reason is not None:
            self._killed[run_id] = reason
        return reason

    def _inline_db(self) -> InlineSQLite | None:
        if not self._inline_tried:
            self._inline_tried = True
            self._inline = inline_for(self.engine)
        return self._inline

    async def _read(self, fn: Callable[..., T], *args: Any,
                    limiter: anyio.CapacityLimiter | None = None) -> T:  # fmt: skip
        """`fn(engine, *args)`, a short read: on the loop's thread on SQLite (unless the file is
        busy right now), else on a worker thread."""
        inline = self._inline_db()
        if inline is not None:
            try:
                return inline.run(fn, *args)
            except Busy:
                pass
        return await anyio.to_thread.run_sync(fn, self.engine, *args, limiter=limiter)

    def is_killed(self, run_id: str) -> bool:
        return self.killed_reason(run_id) is not None

    async def ensure_alive(
        self, run_id: str, *, now: datetime, deadline: datetime | None = None
    ) -> None:
        """Raises RunKilledError (409) if the run is killed; kills it first if past `deadline`."""
        overdue = deadline is not None and now >= deadline and run_id not in self._killed
        if overdue and not await self.kill(run_id, DURATION_REASON, now=now):
            # not in the store yet (or killed elsewhere a moment ago): refuse it here too
            self._killed.setdefault(run_id, DURATION_REASON)
        reason = self._killed.get(run_id)
        if reason is None and not self._fresh():
            reason = self._note(run_id, await self._read(_kill_reason, run_id))
        if reason is not None:
            raise RunKilledError(
                f"run {run_id} was killed ({reason}); start a new run to go on", run_id=run_id
            )

    # ------------------------------------------------------------ background loop

    async def poll_once(self) -> None:
        """One pass: fire kills made elsewhere and kill in-flight runs past their deadline."""
        started = time.monotonic()
        if not self._inflight and started - self._used_at > WATCH_S:
            return  # idle: the next call checks its run directly (see _fresh)
        now = self.clock()
        for run_id in self.inflight():
            handles = self._inflight.get(run_id, set())
            overdue = any(h.deadline is not None and now >= h.deadline for h in handles)
            if (
                overdue
                and run_id not in self._killed
                and not await self.kill(run_id, DURATION_REASON, now=now)
            ):
                self._fire(run_id, DURATION_REASON)  # not in the store: end it here
        # first pass: the whole margin; then from the previous pass's start, less the margin
        since = (self._since or now) - LOG_MARGIN
        # else a thread of its own: the poll must not queue behind the gateway's busy threads
        found = await self._read(_kills_since, since, limiter=self._poll_limiter())
        for run_id, reason in found.items():
            if self._killed.get(run_id) is None or run_id in self._inflight:
                self._fire(run_id, reason)
        self._since = now
        self._synced_at = started

    def _poll_limiter(self) -> anyio.CapacityLimiter:
        if self._limiter is None:  # created inside the event loop that uses it
            self._limiter = anyio.CapacityLimiter(1)
        return self._limiter

    async def run_loop(self) -> None:
        while True:
            try:
                await self.poll_once()
            except SQLAlchemyError:
                # the database is away for a moment: streams go on, the next pass retries
                log.warning("kill switch poll failed; retrying", exc_info=True)
                await anyio.sleep(1.0)
            await anyio.sleep(PUSHED_POLL_S if self.pushed else self.poll_s)

    async def _ready(self) -> None:
        # a kill committed before LISTEN took effect was not pushed: read the log once first
        await self.poll_once()
        self.pushed = True

    async def listen_loop(self) -> None:
        """Takes kills pushed by PostgreSQL as they commit; falls back to polling while down."""
        while True:
            try:
                await kill_feed.listen(self.engine, self._fire, self._ready)
            except (ConnectionError, SQLAlchemyError):  # poll fast meanwhile, then listen again
                log.warning("kill notifications lost; polling until they are back", exc_info=True)
            finally:
                self.pushed = False
            await anyio.sleep(RELISTEN_S)

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[KillSwitch]:
        """For `state.lifespans.append(killswitch.lifespan)`: runs the poll loop while serving."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.run_loop)
            if kill_feed.supported(self.engine):
                tg.start_soon(self.listen_loop)
            try:
                yield self
            finally:
                tg.cancel_scope.cancel()
                if self._inline is not None:
                    self._inline.dispose()
                self._inline, self._inline_tried = None, False


async def kill_run(ks: KillSwitch, run_id: str, *, actor: str, reason: str, now: datetime) -> bool:
    """The kill of POST /api/v1/runs/{id}/kill, the CLI and the console: True if this call
    killed the run (running or ended), False if it was already killed; NotFoundError if there
    is no such run."""
    if await ks.kill(run_id, reason, now=now, actor=actor):
        return True
    exists = await anyio.to_thread.run_sync(_run_exists, ks.engine, run_id)
    if not exists:
        raise NotFoundError(f"run {run_id} not found")
    return False


def _kill_reason(engine: Engine, run_id: str) -> str | None:
    if engine.dialect.name == "sqlite":
        return kills.kill_reason_sqlite(engine, run_id)
    with reading(engine) as conn:
        return kills.kill_reason(conn, run_id)


def _kills_since(engine: Engine, since: datetime) -> dict[str, str]:
    if engine.dialect.name == "sqlite":
        return kills.kills_since_sqlite(engine, since)
    with reading(engine) as conn:
        return kills.kills_since(conn, since)


def _run_exists(engine: Engine, run_id: str) -> bool:
    with reading(engine) as conn:
        return conn.execute(select(runs.c.id).where(runs.c.id == run_id)).first() is not None
