"""The shape both watch loops share: run a blocking pass in a worker thread every
`interval_s`, send what it raised, and keep going when one pass fails."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime

import anyio

from tether.server.alert_notify import notify
from tether.server.background import background
from tether.server.deps import State
from tether.store.alerts import Raised

log = logging.getLogger("tether.watch")

Pass = Callable[[datetime], list[Raised]]


async def run_once(state: State, name: str, work: Pass) -> int:
    """One pass and its notifications; returns the number of alerts sent."""
    now = datetime.now(UTC)
    raised = await anyio.to_thread.run_sync(work, now)
    return await notify(state, raised, now=now)


def loop(
    state: State, name: str, work: Pass, interval_s: float
) -> Callable[[], AbstractAsyncContextManager[None]]:
    """A lifespan that runs `work` every `interval_s` seconds until shutdown."""

    async def forever() -> None:
        while True:
            # the first pass waits one interval too: start-up stays fast and short-lived apps
            # (tests, one-off commands) never run a pass at all
            await anyio.sleep(interval_s)
            try:
                await run_once(state, name, work)
            # A failed pass (database away, a bug on odd data) must not end the loop for
            # good: the next pass retries. It is logged with its traceback, never hidden.
            except Exception:
                log.exception("watch pass %s failed; retrying in %.0f s", name, interval_s)

    return background(forever)
