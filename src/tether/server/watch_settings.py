"""The watch passes' configuration (store/watch.py's WatchConfig) from `watch:` in
tether.yaml, shared by the background loops, the evaluate route and `tether alerts check`."""

from __future__ import annotations

from datetime import timedelta

from tether.config import WatchSettings
from tether.core.anomaly import AnomalyConfig
from tether.core.drift import DriftConfig
from tether.core.money import usd_to_nusd
from tether.store.drift import parse_span
from tether.store.watch import WatchConfig


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
        eval_agents=frozenset(settings.eval_on_model_change),
    )  # fmt: skip
