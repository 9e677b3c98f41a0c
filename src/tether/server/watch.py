"""Installs the watch area: the drift and alert routes under /api/v1 and, unless
`watch.enabled` is false, the two background loops (costs, drift)."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, FastAPI

from tether.config import WatchSettings
from tether.core.anomaly import AnomalyConfig
from tether.core.drift import DriftConfig
from tether.core.money import usd_to_nusd
from tether.server import watch_costs, watch_drift
from tether.server.deps import State
from tether.server.routes import watch as watch_routes
from tether.store.drift import parse_span
from tether.store.watch import WatchConfig

PREFIX = "/api/v1"


def watch_config(settings: WatchSettings) -> WatchConfig:
    """The passes' configuration from `watch:` in tether.yaml (a bad duration is a 400-style
    error naming the key, raised at start-up)."""
    return WatchConfig(
        cooldown=timedelta(seconds=settings.cooldown_s),
        anomaly=AnomalyConfig(k=settings.band_k, alert_below=settings.alert_below,
                              min_excess_nusd=usd_to_nusd(settings.min_excess_usd)),
        drift=DriftConfig(alpha=settings.alpha),
        drift_baseline=parse_span(settings.baseline, "watch.baseline"),
        drift_window=parse_span(settings.window, "watch.window"),
    )  # fmt: skip


def install(app: FastAPI, state: State) -> None:
    api = APIRouter(prefix=PREFIX)
    api.include_router(watch_routes.router)
    app.include_router(api)
    if state.settings.watch.enabled:
        config = watch_config(state.settings.watch)
        watch_costs.install(state, config)
        watch_drift.install(state, config)
