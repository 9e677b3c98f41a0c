"""The kill switch: ends a killed run's in-flight streams in every process within one poll of
the database (25 ms), refuses its later calls, and enforces `max_duration_s`."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

import anyio
from sqlalchemy import Engine, select
from sqlalchemy.exc import SQLAlchemyError

from tether.core.errors import NotFoundError, RunKilledError
from tether.store import audit
from tether.store.engine import reading
from tether.store.ingest import set_run_status
from tether.store.tables import runs

log = logging.getLogger(__name__)
# A kill made in another process reaches this one's streams within one poll; 25 ms keeps
# the whole path (kill request, poll, stream end) under the 100 ms target.
POLL_S = 0.025
# a run used in the last WATCH_S is re-checked by every poll, so its calls need no query
WATCH_S = 10.0
DURATION_REASON = "max_duration_s exceeded"


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
        # killed is terminal, so a known kill is cached for good; "alive" only until the next
        # poll, which re-checks every run used in the last WATCH_S (so a call needs no query)
        self._killed: dict[str, str] = {}
        self._alive_until: dict[str, float] = {}
        self._watched: dict[str, float] = {}
        self._limiter: anyio.CapacityLimiter | None = None

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
        """Kills `run_id` everywhere; False if it was unknown or had already ended."""
        changed = await anyio.to_thread.run_sync(self._kill_in_store, run_id, reason, now, actor)
        if changed:
            self._fire(run_id, reason)
        return changed

    def _kill_in_store(self, run_id: str, reason: str, now: datetime, actor: str) -> bool:
        with self.engine.begin() as conn:
            changed = set_run_status(conn, run_id, "killed", now=now, reason=reason)
            if changed:
                audit.append_in(conn, actor, "run.killed", run_id, {"reason": reason}, now)
        return changed

    def _fire(self, run_id: str, reason: str) -> None:
        self._killed[run_id] = reason
        self._alive_until.pop(run_id, None)
        for handle in list(self._inflight.get(run_id, ())):
            handle.fire(reason)

    def killed_reason(self, run_id: str) -> str | None:
        """The kill reason if `run_id` is killed (a kill here is seen at once, elsewhere within
        one poll interval); None if it is alive or unknown. Blocking: run it in a thread."""
        known, reason = self._cached(run_id)
        if known:
            return reason
        started = time.monotonic()
        found = self._lookup([run_id])
        if run_id in found:
            self._killed[run_id] = found[run_id]
            return found[run_id]
        self._alive_until[run_id] = started + self.poll_s
        return None

    def _cached(self, run_id: str) -> tuple[bool, str | None]:
        """(known, reason) without I/O: a kill seen, or "alive" as of the last poll."""
        if run_id in self._killed:
            return True, self._killed[run_id]
        now = time.monotonic()
        self._watched[run_id] = now
        return self._alive_until.get(run_id, 0.0) > now, None

    def is_killed(self, run_id: str) -> bool:
        return self.killed_reason(run_id) is not None

    async def ensure_alive(
        self, run_id: str, *, now: datetime, deadline: datetime | None = None
    ) -> None:
        """Raises RunKilledError (409) if the run is killed; kills it first if past `deadline`."""
        if deadline is not None and now >= deadline:
            await self.kill(run_id, DURATION_REASON, now=now)
        known, reason = self._cached(run_id)
        if not known:
            reason = await anyio.to_thread.run_sync(self.killed_reason, run_id)
        if reason is not None:
            raise RunKilledError(
                f"run {run_id} was killed ({reason}); start a new run to go on", run_id=run_id
            )

    def _lookup(self, run_ids: list[str]) -> dict[str, str]:
        """Which of `run_ids` are killed, with their reasons."""
        found: dict[str, str] = {}
        with reading(self.engine) as conn:
            for i in range(0, len(run_ids), 500):
                rows = conn.execute(
                    select(runs.c.id, runs.c.kill_reason).where(
                        runs.c.id.in_(run_ids[i : i + 500]), runs.c.status == "killed"
                    )
                ).all()
                found.update({r.id: r.kill_reason or "killed" for r in rows})
        return found

    # ------------------------------------------------------------ background loop

    async def poll_once(self) -> None:
        """One pass: fire kills made elsewhere, kill in-flight runs past their deadline, and
        vouch until the next pass for the runs in use that are still alive."""
        started = time.monotonic()
        for run_id, used in list(self._watched.items()):
            if started - used > WATCH_S:
                self._watched.pop(run_id, None)
                self._alive_until.pop(run_id, None)
        ids = sorted(set(self._inflight) | set(self._watched))
        if not ids:
            return
        now = self.clock()
        for run_id in self.inflight():
            handles = self._inflight.get(run_id, set())
            overdue = any(h.deadline is not None and now >= h.deadline for h in handles)
            if overdue and not await self.kill(run_id, DURATION_REASON, now=now):
                self._fire(run_id, DURATION_REASON)  # not in the store (or ended): end it here
        # a thread of its own: the poll must not queue behind the gateway's busy worker threads
        found = await anyio.to_thread.run_sync(self._lookup, ids, limiter=self._poll_limiter())
        for run_id, reason in found.items():
            self._fire(run_id, reason)
        # two intervals: the next pass starts one interval later and takes a moment
        alive_until = started + 2 * self.poll_s
        for run_id in ids:
            if run_id not in found:
                self._alive_until[run_id] = alive_until

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
            await anyio.sleep(self.poll_s)

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[KillSwitch]:
        """For `state.lifespans.append(killswitch.lifespan)`: runs the poll loop while serving."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.run_loop)
            try:
                yield self
            finally:
                tg.cancel_scope.cancel()


async def kill_run(ks: KillSwitch, run_id: str, *, actor: str, reason: str, now: datetime) -> bool:
    """The kill of POST /api/v1/runs/{id}/kill, the CLI and the console: True if this call
    killed the run, False if it had already ended; NotFoundError if there is no such run."""
    if await ks.kill(run_id, reason, now=now, actor=actor):
        return True
    exists = await anyio.to_thread.run_sync(_run_exists, ks.engine, run_id)
    if not exists:
        raise NotFoundError(f"run {run_id} not found")
    return False


def _run_exists(engine: Engine, run_id: str) -> bool:
    with reading(engine) as conn:
        return conn.execute(select(runs.c.id).where(runs.c.id == run_id)).first() is not None
