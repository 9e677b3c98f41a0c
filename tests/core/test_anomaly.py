"""Cost anomaly baselines: properties of the band, and a seeded simulation of 30 days of
traffic with weekly seasonality (false alerts) and a 3x spike of one user's spend (caught)."""

from __future__ import annotations

import math
import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from tether.core.anomaly import (
    AnomalyConfig,
    Granularity,
    band_for,
    bucket_of,
    detect,
    step,
)

T0 = datetime(2026, 11, 2, tzinfo=UTC)  # a Monday
USD = 1_000_000_000


def test_bucket_of_floors_to_the_hour_and_day() -> None:
    at = datetime(2026, 11, 3, 14, 37, 12, tzinfo=UTC)
    assert bucket_of(at, "hour") == datetime(2026, 11, 3, 14, tzinfo=UTC)
    assert bucket_of(at, "day") == datetime(2026, 11, 3, tzinfo=UTC)


def test_a_young_series_has_no_band() -> None:
    values = {T0: USD, T0 + timedelta(days=1): USD}
    assert band_for(values, T0 + timedelta(days=2), "day") is None
    assert (
        detect(values | {T0 + timedelta(days=2): 50 * USD}, T0 + timedelta(days=2), "day") is None
    )


@given(st.integers(1, 10_000), st.integers(18, 40))
def test_a_flat_series_expects_its_level_with_the_narrowest_band(
    level_cents: int, days: int
) -> None:
    level = level_cents * 10_000_000
    values = {T0 + timedelta(days=i): level for i in range(days)}
    bucket = T0 + timedelta(days=days)
    band = band_for(values, bucket, "day")
    assert band is not None
    assert band.expected_nusd == level
    assert band.low_nusd <= level <= band.high_nusd
    # a flat history has no noise: the band is the narrowest allowed, +25 %
    assert math.isclose(band.high_nusd, level * (1 + AnomalyConfig().min_relative), rel_tol=1e-6)
    assert detect(values | {bucket: level}, bucket, "day") is None


@given(st.integers(2, 60), st.integers(18, 40))
def test_a_past_spike_neither_moves_the_expected_value_nor_hides_the_next(
    factor: int, days: int
) -> None:
    level = 5 * USD
    values = {T0 + timedelta(days=i): level for i in range(days)}
    values[T0 + timedelta(days=days - 3)] = level * factor
    bucket = T0 + timedelta(days=days)
    band = band_for(values, bucket, "day")
    assert band is not None and band.expected_nusd == level
    spike = detect(values | {bucket: 3 * level}, bucket, "day")
    assert spike is not None and spike.direction == "above"
    assert spike.factor == 3.0


def test_spend_below_the_band_alerts_only_when_asked() -> None:
    values = {T0 + timedelta(days=i): 10 * USD for i in range(21)}
    bucket = T0 + timedelta(days=21)
    assert detect(values | {bucket: 0}, bucket, "day") is None
    low = detect(values | {bucket: 0}, bucket, "day", AnomalyConfig(alert_below=True))
    assert low is not None and low.direction == "below"


def test_the_weekly_season_sets_the_expected_value() -> None:
    # weekdays cost 10, weekends 2: a Saturday's 2 is normal, a Saturday's 10 is not
    values = {T0 + timedelta(days=i): (2 if (T0 + timedelta(days=i)).weekday() >= 5 else 10) * USD
              for i in range(26)}  # fmt: skip
    saturday = T0 + timedelta(days=26)
    assert saturday.weekday() == 5
    band = band_for(values, saturday, "day")
    assert band is not None and band.basis == "day_of_week" and band.expected_nusd == 2 * USD
    assert detect(values | {saturday: 2 * USD}, saturday, "day") is None
    assert detect(values | {saturday: 10 * USD}, saturday, "day") is not None


# ---------------------------------------------------------------- 30 days of traffic

USERS = {"u1": 0.3, "u2": 0.25, "u3": 0.2, "u4": 0.15, "u5": 0.1}


def _rate(at: datetime) -> float:
    """Runs per hour: a diurnal curve, weekends at 40 %."""
    diurnal = 0.3 + 0.7 * math.exp(-(((at.hour - 14) / 4.0) ** 2))
    weekly = 0.4 if at.weekday() >= 5 else 1.0
    return 120.0 * diurnal * weekly


def _poisson(rng: random.Random, lam: float) -> int:
    # Knuth's method is slow for large lambda; a normal approximation is plenty above 30
    if lam > 30:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def traffic(seed: int, days: int = 30, spike: tuple[datetime, timedelta] | None = None
            ) -> list[tuple[datetime, str, int]]:  # fmt: skip
    """(started_at, user, cost_nusd) of every run; during `spike` (start, length) user u1
    spends three times as much."""
    rng = random.Random(seed)
    out = []
    for h in range(days * 24):
        at = T0 + timedelta(hours=h)
        for user, share in USERS.items():
            for _ in range(_poisson(rng, _rate(at) * share)):
                cost = int(rng.lognormvariate(math.log(0.02), 0.5) * USD)
                if spike and user == "u1" and spike[0] <= at < spike[0] + spike[1]:
                    cost *= 3
                out.append((at + timedelta(minutes=rng.random() * 59), user, cost))
    return out


def series(runs: list[tuple[datetime, str, int]], granularity: Granularity
           ) -> dict[str, dict[datetime, int]]:  # fmt: skip
    out: dict[str, dict[datetime, int]] = defaultdict(lambda: defaultdict(int))
    for at, user, cost in runs:
        b = bucket_of(at, granularity)
        out["agent"][b] += cost
        out[f"user:{user}"][b] += cost
    return {k: dict(v) for k, v in out.items()}


def alerts(runs: list[tuple[datetime, str, int]], granularity: Granularity, days: int = 30
           ) -> list[tuple[str, datetime]]:  # fmt: skip
    found = []
    for key, values in series(runs, granularity).items():
        b = T0
        while b < T0 + timedelta(days=days):
            if detect(values, b, granularity) is not None:
                found.append((key, b))
            b += step(granularity)
    return found


def test_30_normal_days_raise_at_most_one_false_alert() -> None:
    runs = traffic(seed=11)
    found = alerts(runs, "day") + alerts(runs, "hour")
    print(f"false alerts over 30 days (6 series x hour and day): {len(found)} {found}")
    assert len(found) <= 1


def test_a_3x_spike_in_one_users_spend_is_alerted_in_its_own_interval() -> None:
    day = T0 + timedelta(days=24)  # a Wednesday, four weeks of history behind it
    runs = traffic(seed=11, spike=(day, timedelta(days=1)))
    daily = series(runs, "day")["user:u1"]
    hit = detect(daily, day, "day")
    assert hit is not None and hit.direction == "above"
    assert hit.factor is not None and 2.5 < hit.factor < 3.5
    assert hit.band.low_nusd <= hit.band.expected_nusd <= hit.band.high_nusd < hit.value_nusd
    # the spike is the user's only alert by day; the agent's total moved too, but less
    assert [b for k, b in alerts(runs, "day") if k == "user:u1"] == [day]


def test_a_3x_spike_in_one_hour_is_alerted_in_that_hour() -> None:
    hour = T0 + timedelta(days=23, hours=14)
    runs = traffic(seed=5, spike=(hour, timedelta(hours=1)))
    hourly = series(runs, "hour")["user:u1"]
    hit = detect(hourly, hour, "hour")
    assert hit is not None and hit.band.basis == "hour_of_week"
    assert detect(hourly, hour - timedelta(hours=1), "hour") is None
