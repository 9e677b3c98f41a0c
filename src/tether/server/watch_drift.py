"""Background loop: every `watch.drift_interval_s`, a drift check of every agent with runs in
the current window, alerting on those that drifted."""

from __future__ import annotations

from datetime import datetime

from tether.server.deps import State
from tether.server.watch_loop import loop
from tether.store.alerts import Raised
from tether.store.watch import WatchConfig, drift_pass


def install(state: State, config: WatchConfig) -> None:
    def work(now: datetime) -> list[Raised]:
        return drift_pass(state.engine, now=now, config=config)

    state.lifespans.append(loop(state, "drift", work, state.settings.watch.drift_interval_s))
