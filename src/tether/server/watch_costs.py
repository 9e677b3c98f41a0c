"""Background loop: every `watch.interval_s`, profile finished runs, roll spend up and alert
on model change points and on spend outside its expected range."""

from __future__ import annotations

from datetime import datetime

from tether.server.deps import State
from tether.server.watch_loop import loop
from tether.store.alerts import Raised
from tether.store.watch import WatchConfig, cost_pass


def install(state: State, config: WatchConfig) -> None:
    def work(now: datetime) -> list[Raised]:
        return cost_pass(state.engine, now=now, config=config)

    state.lifespans.append(loop(state, "costs", work, state.settings.watch.interval_s))
