"""Background upkeep of the store: on SQLite, the query planner's statistics are refreshed a
minute after start-up and then every `store_stats_interval_s` (SQLite, unlike PostgreSQL, never
gathers them by itself, and its guesses without them pick the wrong index on large tables)."""

from __future__ import annotations

import logging

import anyio

from tether.server.background import background
from tether.server.deps import State
from tether.store.engine import refresh_planner_stats

log = logging.getLogger("tether.store")

FIRST_AFTER_S = 60.0


def install(state: State) -> None:
    if state.engine.dialect.name != "sqlite":
        return
    interval = float(state.settings.store_stats_interval_s)

    async def forever() -> None:
        delay = min(FIRST_AFTER_S, interval)
        while True:
            await anyio.sleep(delay)
            delay = interval
            try:
                await anyio.to_thread.run_sync(refresh_planner_stats, state.engine)
            # a busy or briefly unavailable database must not end the loop: the next pass
            # retries; logged with its traceback
            except Exception:
                log.exception("refreshing SQLite's planner statistics failed; retrying later")

    state.lifespans.append(background(forever))
